"""wavegen serve --archive: what a restart says, and that it says it once and truly.

Parts gone in runs are said as those runs, not as "first ... last" (which read as every part between gone); the
parts said gone are recorded at the restart that says them, so a server killed before its first snapshot does not
leave them to be said again; an older wavegen's snapshot holding another blend than --label names the labels it
holds, not every label of the model. Real files, a real engine.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import save_tiny_model
from test_serve import SR
from test_serve_archive import PARAMS, _contents

GONE = "are gone (moved away or removed)"


def _archive_with_parts_gone(tmp_path: Path, gone: list[int], parts: int = 24) -> Path:
    """An archive of 1 s parts holding ``parts`` and a half seconds, snapshot taken, the parts ``gone`` moved away."""
    from wavegen.serve.archive import Archive

    archive, elsewhere = tmp_path / "archive", tmp_path / "elsewhere"
    elsewhere.mkdir(parents=True)
    a = Archive(archive, SR, PARAMS, part_seconds=1.0)
    a.open()
    a.write(np.arange(parts * SR + SR // 2, dtype=np.int16))
    a.snapshot({"t": np.zeros(1)}, {})
    a.close()
    for k in gone:
        shutil.move(archive / f"broadcast_{k:05d}.wav", elsewhere)
    return archive


def _restart_killed_before_its_snapshot(archive: Path, caplog) -> list[str]:
    """A restart that plays a quarter second and is killed before its first snapshot → what it warned."""
    from wavegen.serve.archive import Archive

    caplog.clear()
    b = Archive(archive, SR, PARAMS, part_seconds=1.0)
    with caplog.at_level(logging.WARNING, logger="wavegen.serve.archive"):
        b.open()
    b.write(np.zeros(SR // 4, dtype=np.int16))
    b.abandon()  # what a kill leaves: no snapshot taken
    return [r.getMessage() for r in caplog.records]


def test_parts_gone_here_and_there_are_said_as_the_runs_they_are(tmp_path, caplog):
    """Six parts gone (0-2, 5-6, 9) were said "6 parts archived before (broadcast_00000.wav ... broadcast_00009.wav)",
    which reads as the ten parts 0 to 9 gone, four of them there. Now each run is said as such; past four runs, how
    many more parts are gone."""
    archive = _archive_with_parts_gone(tmp_path, [0, 1, 2, 5, 6, 9])
    said = _restart_killed_before_its_snapshot(archive, caplog)
    assert len(said) == 1 and ("6 parts archived before (broadcast_00000.wav to broadcast_00002.wav, "
                               "broadcast_00005.wav to broadcast_00006.wav, broadcast_00009.wav) "
                               + GONE) in said[0], said

    many = _archive_with_parts_gone(tmp_path / "many", [1, 3, 5, 7, 9, 10, 11, 20])
    said = _restart_killed_before_its_snapshot(many, caplog)
    assert len(said) == 1 and ("8 parts archived before (broadcast_00001.wav, broadcast_00003.wav, "
                               "broadcast_00005.wav, broadcast_00007.wav and 4 more) " + GONE) in said[0], said
    assert "broadcast_00020.wav" not in said[0]


def test_parts_said_gone_are_not_said_again_after_a_server_killed_before_its_first_snapshot(tmp_path, caplog):
    """The parts said gone were recorded only by the restarted server's next snapshot: killed before it (30 s by
    default), the restart after said them again, and again at every such restart. Now the restart that says them
    records them in the snapshot it goes on from; one brought back and moved away again is said again."""
    archive = _archive_with_parts_gone(tmp_path, [2, 3])
    first = _restart_killed_before_its_snapshot(archive, caplog)
    assert len(first) == 1 and "2 parts archived before (broadcast_00002.wav, broadcast_00003.wav) " + GONE in first[0]
    assert _restart_killed_before_its_snapshot(archive, caplog) == []
    shutil.move(tmp_path / "elsewhere" / "broadcast_00003.wav", archive)
    assert _restart_killed_before_its_snapshot(archive, caplog) == []  # brought back: kept, nothing to say
    shutil.move(archive / "broadcast_00003.wav", tmp_path / "elsewhere")
    again = _restart_killed_before_its_snapshot(archive, caplog)
    assert len(again) == 1 and "broadcast_00003.wav, archived before, is gone" in again[0], again


def test_an_older_snapshots_other_blend_names_the_labels_it_holds_not_every_label(tmp_path, caplog):
    """A model of 42 labels, an older wavegen's snapshot (no label recorded) holding 'Earth' 0.5 and ' Wind & Fire'
    0.5 where --label 'Earth, Wind & Fire' is one label now: the warning listed all 42 labels with their weights, 40
    of them 0, in a line of a thousand characters. Now it names the two it holds, quoted (a name may hold spaces
    and commas)."""
    from wavegen.serve.archive import Archive
    from wavegen.serve.settings import ServeSettings
    from wavegen.serve.station import Station

    labels = [f"artist {k:02d}" for k in range(39)] + ["Earth", " Wind & Fire", "Earth, Wind & Fire"]
    model = save_tiny_model(tmp_path / "cond", sample_rate=SR, dim=32, emb_size=8, labels=labels)
    settings = ServeSettings(label="Earth, Wind & Fire", archive=str(tmp_path / "archive"), archive_part_seconds=3.0,
                             snapshot_seconds=1.0, guard=False, allow_slow=True, backend="torch")
    station = Station(str(model), settings)
    held = np.zeros(len(labels), np.float32)
    held[39:41] = 0.5
    station.engine.reset(label_weights=held)
    older = {k: np.array(v, copy=True) for k, v in station.engine.state_dict().items()}
    a = Archive(settings.archive, SR, station.params, part_seconds=3.0)
    a.open()
    a.write(np.zeros(SR, np.int16))
    a.snapshot(older, {})  # meta without "label"
    a.close()
    station = Station(str(model), settings)
    with caplog.at_level(logging.WARNING):
        assert station.open()
    station.archive.close()
    said = [r.getMessage() for r in caplog.records if "older wavegen" in r.getMessage()]
    assert len(said) == 1 and "holds another blend of the labels ('Earth' 0.5, ' Wind & Fire' 0.5) than --label " \
        "'Earth, Wind & Fire' reads as now" in said[0], said
    assert "artist" not in said[0] and len(said[0]) < 300, said


def test_an_archive_of_other_settings_is_refused_naming_them_as_typed(tmp_path):
    """A restart with another --temperature was refused as "asks for temperature=0.8999999761581421" (the float32 the
    engine takes, not the 0.9 typed); one without --no-guard as "with guard=False, but this command asks for guard=
    {'seconds': 2.0, 'attempts': 4, 'silence_db': ...}" (eleven thresholds, and no word of --no-guard). Now both are
    said as a render says them: the value typed, --no-guard by its name; the folder is left as it was."""
    from wavegen.serve import ServeError
    from wavegen.serve.settings import ServeSettings
    from wavegen.serve.station import Station

    model = save_tiny_model(tmp_path / "tiny", sample_rate=SR, dim=32)
    archive = tmp_path / "archive"
    began = dict(archive=str(archive), archive_part_seconds=3.0, snapshot_seconds=1.0, allow_slow=True,
                 backend="torch")
    station = Station(str(model), ServeSettings(guard=False, **began))
    assert station.open()
    station.archive.write(np.zeros(SR, np.int16))
    station.archive.snapshot(station._engine_state(), station._meta())
    station.archive.close()
    before = _contents(archive)
    for asked, said in [(dict(guard=False, temperature=0.9), "with temperature=1, but this command asks for "
                                                             "temperature=0.9 ("),
                        (dict(), "made with --no-guard, but this command runs the guard (")]:
        with pytest.raises(ServeError) as err:
            Station(str(model), ServeSettings(**asked, **began)).open()
        assert f"{archive} archives a broadcast {said}" in str(err.value), err.value
        assert "silence_db" not in str(err.value)
    assert _contents(archive) == before
