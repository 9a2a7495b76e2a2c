"""wavegen serve --archive: what else a restart falls back from, and what it says of rotated parts after a fallback.

Something else than a file at the snapshot's name (a folder, a FIFO: never opened) and a readable snapshot whose
state does not fit the engine (a label that is not its blend) are fallen back from as a damaged snapshot, named;
where no snapshot is before it, refused naming the path. After a fallback that moved ``first_part`` up past the
parts an --archive-keep-parts rotation removed, the parts are not said gone again: not at the restart after a server
killed before its next snapshot, nor at restarts without --archive-keep-parts. Real files, a real engine, a real
SIGKILL.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import save_tiny_model
from test_serve import ENV, SR
from test_serve_archive import _archive, _archived, _contents
from test_serve_archive_fallback import PARAMS, PCM, _snap, _two_snapshots

LABELS = ["rain", "bells"]


def _put(path: Path, what: str) -> None:
    """A folder (holding a file of the user's) or a FIFO at ``path``, where the snapshot file was."""
    if path.exists():
        path.unlink()
    if what == "folder":
        path.mkdir()
        (path / "note.txt").write_text("kept")
    else:
        os.mkfifo(path)


def _open_in_time(archive, seconds: float = 20.0):
    """archive.open() in a thread → what it returned or raised; fails the test where it blocks (a FIFO opened for
    reading waits for a writer forever)."""
    got: list = []

    def run():
        try:
            got.append(archive.open())
        except BaseException as err:  # noqa: BLE001 - handed to the test
            got.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert got, "open() blocked"
    return got[0]


@pytest.mark.parametrize("what", ["folder", "FIFO"])
def test_a_snapshot_path_holding_no_file_falls_back_to_the_one_before(tmp_path, what, caplog):
    """Was: refused ("is damaged (a folder, not a file)"), though snapshot.prev.npz could go on. Now the restart
    goes on from it, says so in one line naming the path and what it held, moves that aside (the user's folder and
    its file kept) and puts the good one in its place; nothing blocks on the FIFO."""
    from wavegen.serve.archive import Archive

    _two_snapshots(tmp_path)
    snap = _snap(tmp_path)
    _put(snap, what)
    a = Archive(tmp_path, SR, PARAMS, part_seconds=3.0)
    with caplog.at_level(logging.WARNING, logger="wavegen.serve.archive"):
        got = _open_in_time(a)
    assert isinstance(got, tuple), repr(got)
    state, position, _ = got
    assert position == 2 * SR and state["t"][0] == 0.0
    said = [r.getMessage() for r in caplog.records if "snapshot before it" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0], caplog.text
    assert f"{snap} is a {what}, not a snapshot file (moved to snapshot.npz.damaged)" in said[0], said[0]
    aside = snap.with_name("snapshot.npz.damaged")
    assert (aside / "note.txt").read_text() == "kept" if what == "folder" else aside.is_fifo()
    assert snap.is_file() and not snap.with_name("snapshot.prev.npz").exists()
    a.write(PCM[2 * SR:7 * SR])
    a.snapshot({"t": np.full(1, 2.0)}, {})
    a.close()
    assert np.array_equal(_archived(tmp_path), PCM[:7 * SR])


@pytest.mark.parametrize("what", ["folder", "FIFO"])
def test_a_snapshot_path_holding_no_file_and_none_before_is_refused_naming_it(tmp_path, what):
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    _archive(tmp_path, 5.0, 1.0)  # one snapshot: none before it
    snap = _snap(tmp_path)
    _put(snap, what)
    before = _contents(tmp_path)
    err = _open_in_time(Archive(tmp_path, SR, PARAMS, part_seconds=3.0))
    assert isinstance(err, ServeError), repr(err)
    assert f"{snap} is a {what}, not a snapshot file, and there is no snapshot before it (snapshot.prev.npz)" \
        in str(err) and "choose another --archive" in str(err) and "\n" not in str(err), str(err)
    assert _contents(tmp_path) == before and snap.exists() and len(_archived(tmp_path)) == 6 * SR


@pytest.mark.parametrize("what", ["folder", "FIFO"])
def test_a_previous_snapshot_path_holding_no_file_is_moved_aside_at_the_start(tmp_path, what, caplog):
    """The newest snapshot good, a folder where it moves the one it replaces: the server played on, and its first
    snapshot stopped it ("cannot write .../snapshot.npz: Is a directory; ... free space"), at every restart. Now
    the restart moves it aside (kept), says so naming it, and snapshots go on."""
    from wavegen.serve.archive import Archive

    _two_snapshots(tmp_path)
    prev = _snap(tmp_path).with_name("snapshot.prev.npz")
    _put(prev, what)
    a = Archive(tmp_path, SR, PARAMS, part_seconds=3.0)
    with caplog.at_level(logging.WARNING, logger="wavegen.serve.archive"):
        got = _open_in_time(a)
    assert isinstance(got, tuple) and got[1] == 5 * SR, repr(got)
    assert f"{prev} is a {what}, not a snapshot file (moved to snapshot.prev.npz.damaged)" in caplog.text
    a.write(PCM[5 * SR:6 * SR])
    a.snapshot({"t": np.full(1, 2.0)}, {})
    a.close()
    aside = prev.with_name("snapshot.prev.npz.damaged")
    assert (aside / "note.txt").read_text() == "kept" if what == "folder" else aside.is_fifo()
    assert prev.is_file() and np.array_equal(_archived(tmp_path), PCM[:6 * SR])


def test_a_damaged_snapshot_with_a_folder_before_it_is_refused_naming_both(tmp_path):
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    _two_snapshots(tmp_path)
    snap = _snap(tmp_path)
    snap.write_bytes(snap.read_bytes()[:100])
    _put(snap.with_name("snapshot.prev.npz"), "folder")
    before = _contents(tmp_path)
    err = _open_in_time(Archive(tmp_path, SR, PARAMS, part_seconds=3.0))
    assert isinstance(err, ServeError) and f"{snap} is damaged (BadZipFile" in str(err) and \
        "the snapshot before it, snapshot.prev.npz, is a folder, not a snapshot file" in str(err), repr(err)
    assert _contents(tmp_path) == before


@pytest.fixture(scope="module")
def conditioned(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("archive_fit") / "cond", sample_rate=SR, dim=32, emb_size=8,
                           labels=LABELS)


def _engine_and_labels(model: Path, label: str):
    from wavegen.generate import make_engine
    from wavegen.render import parse_label
    from wavegen.resolve import resolve_model
    from wavegen.serve.control import LabelState

    engine = make_engine(resolve_model(str(model)).load("cpu"), 1, "torch", "cpu")
    weights = parse_label(label, LABELS)
    engine.reset(label_weights=weights)
    return engine, LabelState(LABELS, label, weights)


@pytest.mark.parametrize("misfit", ["label not its blend", "blend of three labels"])
def test_a_snapshot_whose_label_state_does_not_fit_falls_back(conditioned, tmp_path, misfit, caplog):
    """A readable newest snapshot whose label does not fit the engine (its recorded label is not the blend its
    state holds; a blend of another number of labels) was taken as it was, and the station refused it after the
    archive opened ("is damaged (its label ...)"), though the snapshot before it fits. Now it is fallen back
    from as a damaged snapshot, named; the LabelState and engine take the one gone on from."""
    from wavegen.serve.archive import Archive
    from wavegen.serve.archive_resume import engine_fit

    engine, labels = _engine_and_labels(conditioned, "rain")
    good = {k: np.array(v, copy=True) for k, v in engine.state_dict().items()}
    bad = {**good, "label_weights": np.array([[0, 1]], np.float32)} if misfit == "label not its blend" else \
        {**good, "label_weights": np.array([[1, 0, 0]], np.float32)}
    a = Archive(tmp_path, SR, PARAMS, part_seconds=3.0)
    a.open()
    a.write(PCM[:2 * SR])
    a.snapshot(good, {"label": "rain"})
    a.write(PCM[2 * SR:5 * SR])
    a.snapshot(bad, {"label": "rain"})
    a.close()
    b = Archive(tmp_path, SR, PARAMS, part_seconds=3.0, state_fits=engine_fit(engine, labels, tmp_path))
    with caplog.at_level(logging.WARNING, logger="wavegen.serve.archive"):
        state, position, meta = b.open()
    assert position == 2 * SR and np.array_equal(state["label_weights"], good["label_weights"])
    said = [r.getMessage() for r in caplog.records if "snapshot before it" in r.getMessage()]
    why = "its label 'rain' is not the blend its engine state holds" if misfit == "label not its blend" else \
        "its engine state does not fit this model's engine"
    assert len(said) == 1 and f"{_snap(tmp_path)} is damaged ({why}" in said[0], caplog.text
    engine.load_state_dict(state)
    assert labels.misfit(meta, state) is None  # the one gone on from fits: the station adopts it
    b.close()


def test_a_station_goes_on_from_the_snapshot_before_one_whose_label_does_not_fit(conditioned, tmp_path):
    """Through the station (its engine and LabelState): was ServeError "snapshot.npz is damaged (its label
    'rain' is not the blend its engine state holds)" with snapshot.prev.npz fitting."""
    from wavegen.serve.archive import Archive
    from wavegen.serve.settings import ServeSettings
    from wavegen.serve.station import Station

    settings = ServeSettings(label="rain", archive=str(tmp_path / "archive"), archive_part_seconds=3.0,
                             snapshot_seconds=1.0, guard=False, allow_slow=True, backend="torch")
    station = Station(str(conditioned), settings)
    station.engine.reset(label_weights=station.label_weights)
    good = {k: np.array(v, copy=True) for k, v in station.engine.state_dict().items()}
    a = Archive(settings.archive, SR, station.params, part_seconds=3.0)
    a.open()
    a.write(PCM[:SR])
    a.snapshot(good, {"label": "rain"})
    a.write(PCM[SR:2 * SR])
    a.snapshot({**good, "label_weights": np.array([[0, 1]], np.float32)}, {"label": "rain"})
    a.close()
    assert station.open()
    assert station.position == SR and station.label_state.text == "rain"
    station.archive.close()


def test_an_older_snapshot_holding_another_blend_than_label_plays_the_label_it_reports(conditioned, tmp_path,
                                                                                        caplog):
    """An older wavegen's snapshots record no label (no switch could be made then): their engine state holds --label's
    blend as that wavegen read it, which the label reads as another now (one holding ',' or ':' was read as a blend
    then; here 'rain' as rain 0.5, bells 0.5). The station reported 'rain' and played the old blend, and its
    snapshots recorded 'rain' with that blend: the restart after refused both as damaged. Now the engine gets
    'rain', said once, and the restart after goes on without a word of damage."""
    from wavegen.serve.archive import Archive
    from wavegen.serve.settings import ServeSettings
    from wavegen.serve.station import Station

    settings = ServeSettings(label="rain", archive=str(tmp_path / "archive"), archive_part_seconds=3.0,
                             snapshot_seconds=1.0, guard=False, allow_slow=True, backend="torch")
    station = Station(str(conditioned), settings)
    station.engine.reset(label_weights=np.array([0.5, 0.5], np.float32))
    older = {k: np.array(v, copy=True) for k, v in station.engine.state_dict().items()}
    a = Archive(settings.archive, SR, station.params, part_seconds=3.0)
    a.open()
    for seconds in (1, 2):
        a.write(PCM[a.position:seconds * SR])
        a.snapshot(older, {})  # meta without "label", "label_since", "label_switches"
    a.close()
    for restart in range(2):
        station = Station(str(conditioned), settings)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert station.open()
        said = [r.getMessage() for r in caplog.records if "older wavegen" in r.getMessage()]
        assert all(line.startswith(f"archive {settings.archive}: its snapshot, of an older wavegen") for line in said), \
            said
        played = station.engine.state_dict()["label_weights"].reshape(-1)
        assert station.label_state.text == "rain" and np.array_equal(played, station.label_state.weights), played
        assert "damaged" not in caplog.text and len(said) == (1 if restart == 0 else 0), caplog.text
        for _ in range(2):  # the snapshot and the one before it, both this station's
            station.archive.write(PCM[station.position:station.position + SR])
            station.position += SR
            station.archive.snapshot(station._engine_state(), station._meta())
        station.archive.close()
    assert station.position == 6 * SR


def _rotated_then_fallen_back(folder: Path, keep_parts: int) -> None:
    """Parts of 1 s rotated by --archive-keep-parts 1 (parts 0 and 1 removed at the snapshot at 5 s), that
    snapshot damaged; a server with ``keep_parts`` falls back to the one at 2 s and is SIGKILLed before its next
    snapshot."""
    _two_snapshots(folder, keep_parts=1, part_seconds=1.0)
    snap = _snap(folder)
    snap.write_bytes(snap.read_bytes()[:100])
    code = ("import os, signal, numpy as np\n"
            "from wavegen.serve.archive import Archive\n"
            f"a = Archive({str(folder)!r}, {SR}, {PARAMS!r}, part_seconds=1.0, keep_parts={keep_parts})\n"
            f"assert a.open()[1] == {2 * SR}\n"
            f"a.write(np.arange({SR // 2}, dtype=np.int16))\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "snapshot before it" in proc.stderr and " gone " not in proc.stderr, proc.stderr


@pytest.mark.parametrize("keep_parts", [1, 0])
def test_rotated_parts_are_not_said_gone_after_a_fallback(tmp_path, keep_parts, caplog):
    """keep_parts 1: a server killed after a fallback, before its next snapshot, left the snapshot recording
    first_part 0, so the restart after said parts 0 and 1 (removed by the rotation) gone. keep_parts 0 (a restart
    without --archive-keep-parts after a rotation): the fallback took them for gone, and every restart after
    said so again. Now the snapshot put in place records first_part 2, nothing is said gone, and no part is
    removed or written over."""
    from wavegen.serve.archive import Archive

    _rotated_then_fallen_back(tmp_path, keep_parts)
    for _ in range(2):  # the restart after the killed one, and one more after a snapshot
        a = Archive(tmp_path, SR, PARAMS, part_seconds=1.0, keep_parts=keep_parts)
        with caplog.at_level(logging.WARNING, logger="wavegen.serve.archive"):
            assert a.open()[1] == 2 * SR
        assert "gone" not in caplog.text, caplog.text
        assert a.first_part == 2
        a.write(PCM[2 * SR:3 * SR])
        a.snapshot({"t": np.zeros(1)}, {})
        a.close()
        snap = _snap(tmp_path)
        snap.write_bytes(snap.read_bytes()[:100])  # back to the one at 2 s again
    assert [p.name for p in sorted(tmp_path.glob("broadcast_*.wav"))] == ["broadcast_00002.wav", "broadcast_00003.wav"]
    assert np.array_equal(sf.read(str(tmp_path / "broadcast_00002.wav"), dtype="int16")[0], PCM[2 * SR:3 * SR])


def test_a_label_longer_than_a_switch_may_be_fits(conditioned, tmp_path, caplog):
    """A --label longer than a POST /label may be (LABEL_MAX_CHARS: a bound on requests; --label has none) is
    recorded by every snapshot: was judged "is damaged (its label: a label of 1018 characters: at most 1000)",
    newest and the one before it alike, and the archive refused. Now it fits: the newest is gone on from."""
    from wavegen.serve.archive import Archive
    from wavegen.serve.archive_resume import engine_fit
    from wavegen.serve.control import LABEL_MAX_CHARS

    label = "rain:0.5" + "0" * LABEL_MAX_CHARS + ",bells:0.5"
    engine, labels = _engine_and_labels(conditioned, label)
    state = engine.state_dict()
    a = Archive(tmp_path, SR, PARAMS, part_seconds=3.0)
    a.open()
    for seconds in (2, 5):
        a.write(PCM[a.position:seconds * SR])
        a.snapshot(state, {"label": label})
    a.close()
    b = Archive(tmp_path, SR, PARAMS, part_seconds=3.0, state_fits=engine_fit(engine, labels, tmp_path))
    with caplog.at_level(logging.WARNING, logger="wavegen.serve.archive"):
        _, position, meta = b.open()
    b.close()
    assert position == 5 * SR and "damaged" not in caplog.text, caplog.text
    assert labels.misfit(meta, state) is None
    labels.adopt(meta, state)
    assert labels.text == label and np.array_equal(labels.weights, [0.5, 0.5])


def _without_read_override() -> list[str]:
    """The command prefix that takes away root's right to read any file (a run as root reads a file of mode 000)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a file cannot be made unreadable")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]


def test_an_unreadable_snapshot_is_refused_not_written_over(tmp_path):
    """The newest snapshot unreadable by this user (its permissions: written by a server run as another): was "is
    damaged (PermissionError ...)", the one before it renamed over it and the audio after that cut back. Now
    refused naming it and what to do, as an unreadable params.json is; nothing changed."""
    prefix = _without_read_override()
    _two_snapshots(tmp_path)
    snap = _snap(tmp_path)
    before = _contents(tmp_path)
    code = ("from wavegen.serve.archive import Archive\n"
            f"Archive({str(tmp_path)!r}, {SR}, {PARAMS!r}, part_seconds=3.0).open()\n")
    snap.chmod(0)
    try:
        proc = subprocess.run([*prefix, sys.executable, "-c", code], env=ENV, capture_output=True, text=True,
                              timeout=60)
    finally:
        snap.chmod(0o644)
    assert proc.returncode != 0, proc.stderr
    assert f"cannot read {snap}: Permission denied; make it readable, or choose another --archive" in proc.stderr, \
        proc.stderr
    assert "snapshot before it" not in proc.stderr and _contents(tmp_path) == before


@pytest.mark.parametrize("keep_parts", [0, 10])
def test_a_part_moved_away_that_no_rotation_removed_is_kept_when_brought_back(tmp_path, keep_parts, caplog):
    """--archive-keep-parts 10 over parts of 1 s: nothing rotated by 4.5 s. Part 0 moved away (a full disk), the
    newest snapshot damaged: the fallback took part 0 for removed by the rotation (said so), recorded first_part 1,
    and the restart after it was brought back removed it. Now it is said gone, and kept when brought back."""
    from wavegen.serve.archive import Archive

    a = Archive(tmp_path, SR, PARAMS, part_seconds=1.0, keep_parts=10)
    a.open()
    for seconds in (2.5, 4.5):
        a.write(PCM[a.position:int(seconds * SR)])
        a.snapshot({"t": np.zeros(1)}, {})
    a.close()
    part0 = tmp_path / "broadcast_00000.wav"
    held = part0.read_bytes()
    part0.rename(tmp_path.parent / f"{tmp_path.name}_part0.wav")
    snap = _snap(tmp_path)
    snap.write_bytes(snap.read_bytes()[:100])
    b = Archive(tmp_path, SR, PARAMS, part_seconds=1.0, keep_parts=keep_parts)
    with caplog.at_level(logging.INFO, logger="wavegen.serve.archive"):
        assert b.open()[1] == int(2.5 * SR)
    b.close()
    assert "broadcast_00000.wav, archived before, is gone" in caplog.text and "rotation" not in caplog.text, \
        caplog.text
    (tmp_path.parent / f"{tmp_path.name}_part0.wav").rename(part0)
    c = Archive(tmp_path, SR, PARAMS, part_seconds=1.0, keep_parts=keep_parts)
    c.open()
    c.close()
    assert part0.read_bytes() == held


def _gone_said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "gone (moved away or removed)" in r.getMessage()]


@pytest.mark.parametrize("after_the_fallback", ["a snapshot", "killed before one"])
def test_parts_said_gone_after_a_fallback_on_an_older_snapshot_are_said_once(tmp_path, after_the_fallback, caplog):
    """An older wavegen's snapshots (no keep_parts recorded) of parts rotated by --archive-keep-parts 1 (parts 0 and 1
    removed at 5 s), the newest damaged, restarted without the option: the fallback cannot tell the rotation's doing
    from parts moved away, and says parts 0 and 1 gone; every restart after said so again. Now once, whether the
    server after the fallback took a snapshot or was killed before one; a part brought back is kept and drops out
    of the record: gone again, it is said again."""
    from test_serve_snapshot_keep_parts import _as_an_older_wavegen_wrote_them
    from wavegen.serve.archive import Archive

    _two_snapshots(tmp_path, keep_parts=1, part_seconds=1.0)
    _as_an_older_wavegen_wrote_them(tmp_path)
    snap = _snap(tmp_path)
    snap.write_bytes(snap.read_bytes()[:100])
    said = []
    for restart in range(4):
        if restart == 2:  # part 0 brought back (a copy of its audio)
            sf.write(str(tmp_path / "broadcast_00000.wav"), PCM[:SR], SR, subtype="PCM_16")
        if restart == 3:  # and moved away again
            (tmp_path / "broadcast_00000.wav").unlink()
        caplog.clear()
        a = Archive(tmp_path, SR, PARAMS, part_seconds=1.0)
        with caplog.at_level(logging.WARNING, logger="wavegen.serve.archive"):
            position = a.open()[1]
        said.append(_gone_said(caplog))
        assert a.first_part == 0  # gone parts are not taken for rotated ones: one brought back is kept
        if restart == 0 and after_the_fallback == "killed before one":
            a.write(PCM[position:position + SR // 2])
            a.abandon()  # what a SIGKILL leaves: no snapshot after the one the fallback put in place
            continue
        a.write(PCM[position:position + SR])
        a.snapshot({"t": np.zeros(1)}, {})
        a.close()
    assert len(said[0]) == 1 and "2 parts archived before (broadcast_00000.wav, broadcast_00001.wav) are gone" \
        in said[0][0], said
    assert said[1] == [] and said[2] == [], said
    assert len(said[3]) == 1 and "broadcast_00000.wav, archived before, is gone" in said[3][0], said
