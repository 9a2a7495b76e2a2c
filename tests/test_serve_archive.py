"""wavegen serve --archive: a restart continues the broadcast byte for byte; an archive of another
broadcast, or one changed or damaged since, is refused in one line before anything in it is touched.

The servers are the CLI in subprocesses (test_serve's helpers); the refusals that need no model
are checked on :class:`~wavegen.serve.archive.Archive` itself.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from process_helpers import error_lines
from test_serve import ENV, SR, Server, make_model, reference_pcm, serve_here

PARAMS = {"model": "a", "model_sha256": "0" * 64, "sample_rate": SR, "seed": 0}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("serve_archive") / "tiny")


def _archived(folder: Path) -> np.ndarray:
    parts = sorted(folder.glob("broadcast_*.wav"))
    return np.concatenate([sf.read(str(p), dtype="int16")[0] for p in parts])


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != ".lock"}


def _archive(folder: Path, seconds_before: float, seconds_after: float, part_seconds: float = 3.0) -> None:
    """An archive of ``seconds_before`` s with a snapshot there, then ``seconds_after`` s more (not
    snapshot: a restart cuts them back), left as a stopped server leaves it."""
    from wavegen.serve.archive import Archive

    a = Archive(folder, SR, PARAMS, part_seconds=part_seconds)
    a.open()
    a.write(np.arange(int(seconds_before * SR), dtype=np.int16))
    a.snapshot({"t": np.zeros(1)}, {})
    a.write(np.ones(int(seconds_after * SR), dtype=np.int16))
    a.close()


def _refused(folder: Path, match: str) -> str:
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    before = _contents(folder)
    with pytest.raises(ServeError, match=match) as err:
        Archive(folder, SR, PARAMS, part_seconds=3.0).open()
    assert _contents(folder) == before, "a refused archive is left as it was"
    assert "--restart" not in str(err.value)  # render's advice: serve has no such option
    return str(err.value)


@pytest.mark.slow
def test_archive_restart_continues_byte_exact(model, tmp_path):
    archive = tmp_path / "archive"
    args = ("--no-guard", "--archive", str(archive), "--archive-part-seconds", "3", "--snapshot-seconds", "1",
            "--buffer-seconds", "8")  # rendered at full speed up to 8 s ahead: little waiting for real time
    first = Server(model, *args)
    s = first.wait_for(lambda s: s["archive"]["snapshot_seconds"] >= 3.0)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL  # no goodbye: the snapshot is all there is
    written = s["archive"]["seconds"]

    # the same command again, played in this process (test_serve.serve_here): what counts is what it archives
    goal = max(written + 2.0, 7.0)  # past where the first one got, into a third part
    s, _ = serve_here(model, lambda s: s["archive"]["seconds"] >= goal, guard=False, archive=str(archive),
                      archive_part_seconds=3.0, snapshot_seconds=1.0, buffer_seconds=8.0)
    assert 3.0 <= s["archive"]["snapshot_seconds"] <= written  # it went on from the snapshot, not from zero
    pcm = _archived(archive)
    assert len(pcm) >= goal * SR
    assert len(list(archive.glob("broadcast_*.wav"))) >= 3  # parts of 3 s
    assert np.array_equal(pcm, reference_pcm(model, len(pcm)))


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_after_the_final_snapshot(model, tmp_path):
    """Ctrl-C twice in quick succession: the server's loop closes while the station takes its final
    snapshot; the snapshot is taken all the same, and the exit is the plain interrupt, no traceback."""
    from wavegen.render import load_snapshot

    archive = tmp_path / "archive"
    server = Server(model, "--no-guard", "--archive", str(archive), "--snapshot-seconds", "100")
    server.wait_for(lambda s: s["archive"]["seconds"] >= 2.0)
    server.proc.send_signal(signal.SIGINT)
    time.sleep(0.05)  # the first one handled: the second stops at once
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(30) == 130
    time.sleep(0.5)  # the rest of its stderr
    log = "".join(server.stderr)
    assert "Traceback" not in log and "Exception in thread" not in log, log
    assert log.rstrip().endswith("wavegen serve: interrupted"), log
    _, position, _ = load_snapshot(archive / ".state" / "snapshot.npz")  # the final one: none came before
    assert position == len(_archived(archive)) > 0


def test_an_archive_folder_that_cannot_be_made_or_used_is_refused_in_one_line(tmp_path):
    from wavegen.errors import WavegenError
    from wavegen.serve.archive import Archive

    long_name = tmp_path / ("x" * 300)  # longer than a file name can be
    with pytest.raises(WavegenError, match=r"archive .*x{300}: (cannot create or use it: )?File name too long"):
        Archive(long_name, SR, PARAMS, part_seconds=3.0).open()
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / ".state").write_text("")  # a file where the state folder goes
    # named as no folder (was "--archive .../blocked: cannot create or use it (.../.state): File exists")
    with pytest.raises(WavegenError, match=r"blocked/\.state is a file, not a folder: the archive keeps its params"):
        Archive(blocked, SR, PARAMS, part_seconds=3.0).open()
    (blocked / ".state").unlink()
    Archive(blocked, SR, PARAMS, part_seconds=3.0).open()  # the refusal let go of the folder's lock
    if Path("/proc/self").is_dir():  # Linux: a folder that takes no new folders
        with pytest.raises(WavegenError, match="/proc/wavegen-archive"):
            Archive("/proc/wavegen-archive", SR, PARAMS, part_seconds=3.0).open()


def test_archive_of_another_broadcast_is_refused_untouched(tmp_path):
    from wavegen.errors import FolderBusyError
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    first = Archive(tmp_path, SR, PARAMS, part_seconds=3.0)
    first.open()
    first.write(np.arange(5 * SR, dtype=np.int16))
    first.snapshot({"t": np.zeros(1)}, {})
    with pytest.raises(FolderBusyError, match="another wavegen serve archive is writing here"):  # one at a time
        Archive(tmp_path, SR, PARAMS, part_seconds=3.0).open()
    first.close()
    before = {p.name: p.read_bytes() for p in tmp_path.glob("broadcast_*.wav")}
    with pytest.raises(ServeError, match=r"seed=0.*seed=1"):
        Archive(tmp_path, SR, {**PARAMS, "seed": 1}, part_seconds=3.0).open()
    assert {p.name: p.read_bytes() for p in tmp_path.glob("broadcast_*.wav")} == before
    moved = Archive(tmp_path, SR, {**PARAMS, "model": "b"}, part_seconds=3.0)  # same weights, moved folder
    state, position, _ = moved.open()
    assert position == 5 * SR and state["t"].shape == (1,)
    moved.close()


def test_a_damaged_state_file_is_refused_in_one_line_by_the_cli(model, tmp_path):
    """A params.json cut short: one line naming it, exit code 2, advice that works for serve."""
    archive = tmp_path / "archive"
    (archive / ".state").mkdir(parents=True)
    (archive / ".state" / "params.json").write_text('{"seed": ')
    result = subprocess.run([sys.executable, "-m", "wavegen", "serve", str(model), "--port", "0", "--allow-slow",
                             "--archive", str(archive)], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "listening" not in result.stdout
    error = error_lines(result.stderr, "serve")
    assert len(error) == 1 and "params.json is damaged" in error[0] and "choose another --archive" in error[0]
    assert str(archive / ".state" / "params.json") in error[0]
    assert (archive / ".state" / "params.json").read_text() == '{"seed": '


def test_damaged_state_files_are_refused_with_advice_for_serve(tmp_path):
    (tmp_path / "params").mkdir()
    _archive(tmp_path / "params", 5.0, 1.0)
    (tmp_path / "params" / ".state" / "params.json").write_text("[1, 2]")  # JSON, but not what serve wrote
    # its snapshot, which records the same parameters, damaged too (with it, params.json is written again)
    (tmp_path / "params" / ".state" / "snapshot.npz").write_bytes(b"PK")
    _refused(tmp_path / "params", r"params\.json is damaged .*choose another --archive")

    (tmp_path / "snap").mkdir()
    _archive(tmp_path / "snap", 5.0, 1.0)
    snap = tmp_path / "snap" / ".state" / "snapshot.npz"
    snap.write_bytes(snap.read_bytes()[:100])
    message = _refused(tmp_path / "snap", r"snapshot\.npz is damaged \(.+\).*choose another --archive")
    assert str(snap) in message


@pytest.mark.parametrize("changed", ["current part missing", "current part cut short"])
def test_an_archive_changed_since_its_snapshot_is_refused_untouched(tmp_path, changed):
    """The snapshot at 5 s, inside the second part of 3 s; a third part written after it (a restart
    would cut it back and write it again; a refused one keeps it)."""
    _archive(tmp_path, 5.0, 2.0)
    assert sorted(p.name for p in tmp_path.glob("broadcast_*.wav")) == [
        "broadcast_00000.wav", "broadcast_00001.wav", "broadcast_00002.wav"]
    if changed == "current part missing":
        (tmp_path / "broadcast_00001.wav").unlink()
        _refused(tmp_path, r"broadcast_00001\.wav is missing.*the archive was changed since; choose another --archive")
    else:
        part = tmp_path / "broadcast_00001.wav"
        part.write_bytes(part.read_bytes()[:44 + 2 * SR])  # 1 s of the 2 s the snapshot counts
        _refused(tmp_path, r"broadcast_00001\.wav holds fewer than the 32000 samples.*the archive was changed "
                           r"since; choose another --archive")


def _open_within(folder: Path, seconds: float = 10.0):
    """Archive(folder).open() in a thread → what it raised (None: it opened); fails the test where it does
    not return (a FIFO opened for reading waits for a writer forever)."""
    import threading

    from wavegen.serve.archive import Archive

    box = []

    def attempt():
        try:
            Archive(folder, SR, PARAMS, part_seconds=3.0).open()
            box.append(None)
        except Exception as err:  # noqa: BLE001 - handed to the test
            box.append(err)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"Archive.open() of {folder} did not return in {seconds} s"
    return box[0]


def _put(path: Path, what: str) -> None:
    import os

    path.unlink()
    if what == "a folder":
        path.mkdir()
    elif what == "a FIFO":
        os.mkfifo(path)
    elif what == "a link to nothing":
        path.symlink_to(path.with_name("nowhere"))
    elif what == "a link to itself":
        path.symlink_to(path)
    else:
        path.write_bytes({"latin-1": b'{"label": "caf\xe9"}', "a list": b"[1, 2]", "null": b"null", "empty": b"",
                          "nested too deep": b"[" * 100_000 + b"]" * 100_000}[what])


PARAMS_REFUSALS = {  # what is at .state/params.json → what serve says of it
    "latin-1": r"params\.json is damaged \(not JSON \('utf-8' codec can't decode byte 0xe9",
    "a list": r"params\.json is damaged \(a JSON (list|array), not an object\)",
    "null": r"params\.json is damaged \(a JSON \w+, not an object\)",
    "empty": r"params\.json is damaged \(not JSON \(Expecting value",
    "nested too deep": r"params\.json is damaged \(not JSON \(nested too deep to read\)\)",  # json's parser: a RecursionError
    "a folder": r"params\.json is damaged \(a folder, not a file\)",
    "a FIFO": r"params\.json is damaged \(a FIFO, not a file\)",  # not opened: that waits for a writer
    # named as a link with its target (was "cannot read ...: No such file or directory; make it readable")
    "a link to nothing": r"params\.json is a link to \S*/nowhere, which does not exist: point it at",
    # named as a loop of links (was "cannot read ...: Too many levels of symbolic links; make it readable")
    "a link to itself": r"params\.json is a link to \S*params\.json, which leads back to itself \(a loop of links\)",
}


@pytest.mark.parametrize("bad", list(PARAMS_REFUSALS))
def test_a_params_file_serve_cannot_read_is_refused_in_one_line_untouched(tmp_path, bad):
    """Whatever is at .state/params.json, serve says in one line (a ServeError naming it) why it cannot
    continue the archive, and leaves the archive as it was. (Its snapshot damaged too: with a readable one,
    a damaged params.json is written again from it, test_serve_archive_state.)"""
    from wavegen.serve import ServeError

    _archive(tmp_path, 5.0, 1.0)
    (tmp_path / ".state" / "snapshot.npz").write_bytes(b"PK")
    params = tmp_path / ".state" / "params.json"
    _put(params, bad)
    before = _contents(tmp_path)
    err = _open_within(tmp_path)
    assert isinstance(err, ServeError), repr(err)
    assert re.search(PARAMS_REFUSALS[bad], str(err)) and str(params) in str(err) and "\n" not in str(err), str(err)
    assert "choose another --archive" in str(err)
    assert _contents(tmp_path) == before


@pytest.mark.parametrize("bad", ["a folder", "a FIFO"])
def test_a_snapshot_that_is_not_a_file_is_refused_not_taken_for_none(tmp_path, bad):
    """No snapshot means the archive starts again at 0 (over its parts); something else at its name is
    refused, and the 6 s of parts stay."""
    from wavegen.serve import ServeError

    _archive(tmp_path, 5.0, 1.0)
    _put(tmp_path / ".state" / "snapshot.npz", bad)
    before = _contents(tmp_path)
    err = _open_within(tmp_path)
    assert isinstance(err, ServeError) and f"snapshot.npz is {bad}, not a snapshot file" in str(err), repr(err)
    assert _contents(tmp_path) == before and len(_archived(tmp_path)) == 6 * SR


def test_every_part_is_a_readable_wav_when_the_server_is_killed(tmp_path):
    """A part begun when the one before filled is a valid WAV at once: killed before the next snapshot
    (SIGKILL: Python's buffers never reach the disk), the archive holds no unreadable 0-byte part."""
    archive = tmp_path / "archive"
    code = ("import os, signal, numpy as np\n"
            "from wavegen.serve.archive import Archive\n"
            f"a = Archive({str(archive)!r}, {SR}, {PARAMS!r}, part_seconds=1.0)\n"
            "a.open()\n"
            f"a.write(np.arange({2 * SR}, dtype=np.int16))\n"  # two parts full: the third begun, empty
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    parts = sorted(archive.glob("broadcast_*.wav"))
    assert [p.name for p in parts] == [f"broadcast_0000{k}.wav" for k in range(3)]
    assert [sf.info(str(p)).frames for p in parts] == [SR, SR, 0]
    assert np.array_equal(_archived(archive), np.arange(2 * SR, dtype=np.int16))


# "first part": a snapshot from before the record; "part 0 moved": that too, its first part moved away since
@pytest.mark.parametrize("record", ["snapshot", "first part", "part 0 moved"])
def test_a_restart_with_another_part_length_loses_no_audio(tmp_path, record, caplog):
    """The parts go on with the length they were begun with: a restart with another
    --archive-part-seconds cut them where they do not end and wrote over archived audio."""
    from wavegen.render import load_snapshot, save_snapshot
    from wavegen.serve.archive import Archive

    first = Archive(tmp_path, SR, PARAMS, part_seconds=2.0)
    first.open()
    first.write(np.arange(5 * SR, dtype=np.int16))
    first.snapshot({"t": np.zeros(1)}, {})
    first.close()
    if record != "snapshot":
        snap = tmp_path / ".state" / "snapshot.npz"
        state, position, meta = load_snapshot(snap)
        del meta["part_frames"]
        save_snapshot(snap, state, position, meta)
    if record == "part 0 moved":
        (tmp_path / "broadcast_00000.wav").rename(tmp_path.parent / f"{tmp_path.name}_part0.wav")
    second = Archive(tmp_path, SR, PARAMS, part_seconds=4.0)
    with caplog.at_level(logging.WARNING, logger="wavegen.serve.archive"):
        assert second.open()[1] == 5 * SR
    assert "its parts are 2 s each" in caplog.text
    second.write(np.full(SR, -1, dtype=np.int16))
    second.close()
    kept = 2 * SR if record == "part 0 moved" else 0
    expected = np.concatenate([np.arange(kept, 5 * SR), np.full(SR, -1)]).astype(np.int16)
    assert np.array_equal(_archived(tmp_path), expected)
    assert [sf.info(str(p)).frames for p in sorted(tmp_path.glob("broadcast_*.wav"))] == \
        [2 * SR] * (3 - kept // (2 * SR)) + [0]


def test_keep_parts_bounds_the_archive_and_a_restart_goes_on(tmp_path):
    """--archive-keep-parts N: at each snapshot the parts older than the newest N go; a restart (with
    any N, 0 too) continues without taking the removed ones for parts lost, and removes what a stop
    between the snapshot and the removal left."""
    from wavegen.render import load_snapshot
    from wavegen.serve.archive import Archive

    pcm = np.arange(8 * SR, dtype=np.int16)
    names = lambda: [p.name for p in sorted(tmp_path.glob("broadcast_*.wav"))]  # noqa: E731
    a = Archive(tmp_path, SR, PARAMS, part_seconds=1.0, keep_parts=2)
    a.open()
    for k in range(5):  # a second at a time, a snapshot after each
        a.write(pcm[k * SR:(k + 1) * SR])
        a.snapshot({"t": np.zeros(1)}, {})
        assert len(names()) <= 2
    a.close()
    assert names() == ["broadcast_00004.wav", "broadcast_00005.wav"]  # the last full one and the one begun
    assert np.array_equal(sf.read(str(tmp_path / "broadcast_00004.wav"), dtype="int16")[0], pcm[4 * SR:5 * SR])
    assert load_snapshot(tmp_path / ".state" / "snapshot.npz")[2]["first_part"] == 4
    stale = tmp_path / "broadcast_00003.wav"  # as if stopped after the snapshot, before the removal
    stale.write_bytes(b"RIFF")
    b = Archive(tmp_path, SR, PARAMS, part_seconds=1.0)  # keep all from here on
    assert b.open()[1] == 5 * SR
    assert not stale.exists()
    b.write(pcm[5 * SR:8 * SR])
    b.snapshot({"t": np.zeros(1)}, {})
    b.close()
    assert names() == [f"broadcast_0000{k}.wav" for k in range(4, 9)]
    assert np.array_equal(_archived(tmp_path), pcm[4 * SR:])


@pytest.mark.parametrize("label, same", [("rain:1", True), ("bells:0,rain:2", True), ("bells", False),
                                         ("rain:0.5,bells:0.5", False)])
def test_an_archive_binds_the_label_blend_not_its_spelling(tmp_path, label, same):
    """A restart with the same blend written another way ("rain" is "rain:1") continues the archive;
    another blend is refused, untouched."""
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive
    from wavegen.serve.station import _blend

    def archive(text: str) -> Archive:
        return Archive(tmp_path, SR, {**PARAMS, "label": text}, part_seconds=3.0,
                       label_blend=lambda t: _blend(t, ["rain", "bells"]))

    first = archive("rain")
    first.open()
    first.write(np.arange(SR, dtype=np.int16))
    first.snapshot({"t": np.zeros(1)}, {})
    first.close()
    before = _contents(tmp_path)
    again = archive(label)
    if same:
        assert again.open()[1] == SR
        again.close()
    else:
        with pytest.raises(ServeError, match=f"label='rain', but this command asks for label='{label}'"):
            again.open()
        assert _contents(tmp_path) == before
