"""wavegen serve --archive when its state or an earlier part is damaged: each snapshot keeps the one it replaces
(``snapshot.prev.npz``, as a render keeps ``rank{r}.prev.npz``), and a restart whose newest snapshot is damaged
or missing goes on from the one before it, said in one line naming the damaged file, the audio after it written
again; an earlier part cut short is said, naming it and what it holds, and kept; the model an archive began with,
gone since, is found from the snapshot's record where params.json is damaged too. Real files; the restart
through the CLI in subprocesses (test_serve's helpers).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from test_serve import SR, make_model, reference_pcm, serve_here
from test_serve_archive import _archived, _contents

from wavegen.render.writers import load_snapshot

PARAMS = {"model": "a", "model_sha256": "0" * 64, "sample_rate": SR, "seed": 0}
PCM = np.arange(8 * SR, dtype=np.int16)


def _two_snapshots(folder: Path, keep_parts: int = 0, part_seconds: float = 3.0) -> None:
    """Snapshots at 2 s (state t=0) and 5 s (t=1), then 1 s more, unsnapshot; parts of ``part_seconds``."""
    from wavegen.serve.archive import Archive

    a = Archive(folder, SR, PARAMS, part_seconds=part_seconds, keep_parts=keep_parts)
    a.open()
    a.write(PCM[:2 * SR])
    a.snapshot({"t": np.zeros(1)}, {})
    a.write(PCM[2 * SR:5 * SR])
    a.snapshot({"t": np.ones(1)}, {})
    a.write(PCM[5 * SR:6 * SR])
    a.close()


def _snap(folder: Path) -> Path:
    return folder / ".state" / "snapshot.npz"


@pytest.mark.parametrize("newest", ["cut short", "missing"])
def test_a_damaged_snapshot_falls_back_to_the_one_before_it(tmp_path, newest, caplog):
    """Its newest snapshot cut short (a crash, a bad sector), or missing (a kill between save_snapshot's two
    renames): the restart goes on from the snapshot before it (was: refused, no snapshot to fall back to), says
    so in one line naming the damaged file, cuts the parts back to it, and the archive continues as written."""
    from wavegen.serve.archive import Archive

    _two_snapshots(tmp_path)
    snap, prev = _snap(tmp_path), _snap(tmp_path).with_name("snapshot.prev.npz")
    assert prev.is_file()  # the snapshot at 2 s, kept when the one at 5 s replaced it
    if newest == "cut short":
        snap.write_bytes(snap.read_bytes()[:100])
    else:
        snap.unlink()
    a = Archive(tmp_path, SR, PARAMS, part_seconds=3.0)
    with caplog.at_level(logging.WARNING, logger="wavegen.serve.archive"):
        state, position, _ = a.open()
    assert position == 2 * SR and state["t"][0] == 0.0
    said = [r.getMessage() for r in caplog.records if "snapshot before it" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0], caplog.text
    what = "is damaged (BadZipFile" if newest == "cut short" else "is missing"
    assert f"{snap} {what}" in said[0] and "snapshot.prev.npz, at 2.0 s" in said[0], said[0]
    # cut back to it: the part it ends in holds (and its header counts) 2 s; the part begun after it is gone
    assert [p.name for p in sorted(tmp_path.glob("broadcast_*.wav"))] == ["broadcast_00000.wav"]
    assert sf.info(str(tmp_path / "broadcast_00000.wav")).frames == 2 * SR
    assert snap.is_file() and not prev.exists()  # the good one in the newest's place, as a render does
    a.write(PCM[2 * SR:7 * SR])
    a.snapshot({"t": np.full(1, 2.0)}, {})
    a.close()
    assert np.array_equal(_archived(tmp_path), PCM[:7 * SR])
    again = Archive(tmp_path, SR, PARAMS, part_seconds=3.0)
    assert again.open()[1] == 7 * SR
    again.close()


def test_both_snapshots_damaged_are_refused_naming_both_untouched(tmp_path):
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    _two_snapshots(tmp_path)
    snap, prev = _snap(tmp_path), _snap(tmp_path).with_name("snapshot.prev.npz")
    for path in (snap, prev):
        path.write_bytes(path.read_bytes()[:100])
    before = _contents(tmp_path)
    with pytest.raises(ServeError) as err:
        Archive(tmp_path, SR, PARAMS, part_seconds=3.0).open()
    message = str(err.value)
    assert f"{snap} is damaged (BadZipFile" in message and "the snapshot before it, snapshot.prev.npz, is damaged" \
        in message and "choose another --archive" in message and "\n" not in message, message
    assert _contents(tmp_path) == before


def test_a_refusal_after_reading_the_snapshot_before_leaves_the_folder_as_it_was(tmp_path):
    """Another command on an archive whose newest snapshot is damaged: refused, naming the snapshot its values
    came from; the damaged file and the one before it are left as they were (nothing is put in place)."""
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    _two_snapshots(tmp_path)
    (tmp_path / ".state" / "params.json").unlink()  # the values come from the snapshot before it
    snap = _snap(tmp_path)
    snap.write_bytes(snap.read_bytes()[:100])
    before = _contents(tmp_path)
    with pytest.raises(ServeError, match=r"seed=0, but this command asks for seed=1 \(.*snapshot\.prev\.npz\)"):
        Archive(tmp_path, SR, {**PARAMS, "seed": 1}, part_seconds=3.0).open()
    assert _contents(tmp_path) == before


def test_rotation_keeps_the_part_the_snapshot_before_ends_in(tmp_path, caplog):
    """--archive-keep-parts 1, parts of 1 s: the part the previous snapshot ends in stays until the next one,
    so a restart can fall back to it (the rotation at 5 s would have removed part 1, where the snapshot at 2 s
    ends)."""
    from wavegen.serve.archive import Archive

    names = lambda: [p.name for p in sorted(tmp_path.glob("broadcast_*.wav"))]  # noqa: E731
    _two_snapshots(tmp_path, keep_parts=1, part_seconds=1.0)
    assert names() == [f"broadcast_0000{k}.wav" for k in range(2, 7)]  # from the part the one at 2 s ends in
    snap = _snap(tmp_path)
    snap.write_bytes(snap.read_bytes()[:100])
    a = Archive(tmp_path, SR, PARAMS, part_seconds=1.0, keep_parts=1)
    assert a.open()[1] == 2 * SR
    for end in (6, 7):  # snapshots at 6 s and 7 s: the newest part and the one the snapshot before ends in
        a.write(PCM[(end - 4 if end == 6 else 6) * SR:end * SR])
        a.snapshot({"t": np.zeros(1)}, {})
    a.close()
    assert names() == ["broadcast_00006.wav", "broadcast_00007.wav"]
    assert np.array_equal(sf.read(str(tmp_path / "broadcast_00006.wav"), dtype="int16")[0], PCM[6 * SR:7 * SR])


def test_an_earlier_part_cut_short_is_said_and_kept(tmp_path, caplog):
    """Parts are WAV files of their own, not needed to continue (one moved away is said, and the archive goes
    on): one cut short since (a crash, a disk problem) is said at the restart, in one line naming it and what it
    holds (was: not looked at), and kept byte for byte; the archive goes on."""
    from wavegen.serve.archive import Archive

    a = Archive(tmp_path, SR, PARAMS, part_seconds=2.0)
    a.open()
    a.write(PCM[:7 * SR])
    a.snapshot({"t": np.zeros(1)}, {})
    a.close()
    part0, part1 = tmp_path / "broadcast_00000.wav", tmp_path / "broadcast_00001.wav"
    part0.write_bytes(part0.read_bytes()[:44 + 2 * SR])  # 1 s of its 2 s
    part1.write_bytes(part1.read_bytes()[:30])  # less than a header
    cut = {p.name: p.read_bytes() for p in (part0, part1)}
    b = Archive(tmp_path, SR, PARAMS, part_seconds=2.0)
    with caplog.at_level(logging.WARNING, logger="wavegen.serve.archive"):
        assert b.open()[1] == 7 * SR
    said = [r.getMessage() for r in caplog.records if "cut short" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0], caplog.text
    assert "broadcast_00000.wav holds 1.0 s, broadcast_00001.wav holds 0.0 s of the 2.0 s of a part" in said[0]
    assert "broadcast_00002.wav" not in said[0]  # whole
    b.write(PCM[7 * SR:8 * SR])
    b.snapshot({"t": np.zeros(1)}, {})
    b.close()
    assert {p.name: p.read_bytes() for p in (part0, part1)} == cut  # nothing of them deleted or written over
    assert np.array_equal(sf.read(str(tmp_path / "broadcast_00003.wav"), dtype="int16")[0], PCM[6 * SR:8 * SR])


def test_the_model_gone_is_found_from_the_snapshot_when_params_json_is_damaged(tmp_path, caplog):
    """An archive begun from a run's best/, deleted since, and its params.json damaged: the kept checkpoint
    holding the same tensors is found from the parameters the snapshot recorded (was: none, as params.json was
    all that was read: "this run has no best/ model"), and the archive continues with it (params.json written
    again from the snapshot)."""
    from test_render_model_gone import make_run
    from wavegen.render.model_change import TENSORS_KEY
    from wavegen.resolve import resolve_model
    from wavegen.serve.archive import MODEL_FOLDER_KEY, Archive
    from wavegen.serve.archive_model import model_folder, played_model

    run = make_run(make_model(tmp_path / "model"), tmp_path / "run")
    ref = resolve_model(str(run))
    params = {**PARAMS, "model": ref.source, "model_sha256": "1" * 64, TENSORS_KEY: ref.weights_tensors_sha256(),
              MODEL_FOLDER_KEY: model_folder(ref)}
    archive = tmp_path / "archive"
    a = Archive(archive, SR, params, part_seconds=3.0)
    a.open()
    a.write(PCM[:SR])
    a.snapshot({"t": np.zeros(1)}, {})
    a.close()
    shutil.rmtree(run / "best")
    (archive / ".state" / "params.json").write_text('{"seed": ')
    with caplog.at_level(logging.WARNING):
        found = played_model(str(run), None, str(archive))
    assert found.folder.resolve() == (run / "checkpoints" / "step_5").resolve()
    assert "holds the weights it began with" in caplog.text
    b = Archive(archive, SR, {**params, "model": found.source, "model_sha256": "2" * 64}, part_seconds=3.0)
    assert b.open()[1] == SR
    b.close()
    assert json.loads((archive / ".state" / "params.json").read_text())["seed"] == 0  # written again


@pytest.mark.slow
def test_a_server_restarted_on_a_damaged_snapshot_goes_on_byte_for_byte(tmp_path, caplog):
    """A real server (played in this process: test_serve.serve_here), stopped; its newest snapshot cut short: the
    same command goes on from the one before it, saying so, and the archive comes out as a server that never
    stopped writes it."""
    model = make_model(tmp_path / "model")
    archive = tmp_path / "archive"
    settings = {"guard": False, "archive": str(archive), "archive_part_seconds": 3.0, "snapshot_seconds": 1.0,
                "buffer_seconds": 8.0}  # --no-guard --archive-part-seconds 3 --snapshot-seconds 1 --buffer-seconds 8
    serve_here(model, lambda s: s["archive"]["snapshot_seconds"] >= 3.0, **settings)
    snap = _snap(archive)
    damaged, before = (load_snapshot(path)[1] for path in (snap, snap.with_name("snapshot.prev.npz")))
    snap.write_bytes(snap.read_bytes()[:200])
    caplog.set_level(logging.INFO)
    caplog.clear()
    serve_here(model, lambda s: s["archive"]["snapshot_seconds"] >= before / SR + 2.0, **settings)
    said = [line for line in caplog.messages if "snapshot before it" in line]
    assert len(said) == 1 and f"{snap} is damaged" in said[0], caplog.text
    assert f"going on from the snapshot before it, snapshot.prev.npz, at {before / SR:.1f} s" in said[0], said
    assert 2 * SR <= before <= damaged, (before / SR, damaged / SR)  # (the stop's snapshot may add no audio to it)
    pcm = _archived(archive)
    assert np.array_equal(pcm, reference_pcm(model, len(pcm)))
