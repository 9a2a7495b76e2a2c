"""wavegen serve --archive with its state damaged or gone while its audio remains: a params.json damaged or
removed is written again from the snapshot (which records the same parameters) and the archive goes on; a
snapshot removed while a part's header counts audio a snapshot counted is refused, untouched (it started over
and wrote part 0 over); a server killed in its first snapshot, or as its first part is closed, leaves no header
counting audio no snapshot holds, and the same command begins anew; a part replaced by another file is named as
what it is. Real servers (the CLI in subprocesses, one killed with a real SIGKILL at the moment a hook picks;
where what counts is what the archive keeps or a refusal says, the server played in this process: test_serve's
serve_here), real files.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from test_serve import ENV, make_model, reference_pcm, refused_here, serve_here
from test_serve_archive import _archived, _contents

ARGS = ("--no-guard", "--archive-part-seconds", "3", "--snapshot-seconds", "1", "--buffer-seconds", "8")
# the same, for a server played in this process (test_serve.serve_here), where what is checked is what the archive
# keeps or the refusal says, not the server's process
PLAYED = {"guard": False, "archive_part_seconds": 3.0, "snapshot_seconds": 1.0, "buffer_seconds": 8.0}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("serve_archive_state") / "tiny")


def _served(model: Path, archive: Path, seconds: float, **settings) -> dict:
    """The server played (in this process) on ``archive`` until its snapshot is ``seconds`` in, then stopped as a
    SIGTERM stops it; → its first /status."""
    return serve_here(model, lambda s: s["archive"]["snapshot_seconds"] >= seconds,
                      **{**PLAYED, "archive": str(archive), **settings})[0]


def _refusal(model: Path, archive: Path, **settings) -> str:
    """What a server (played in this process) that refuses to start on ``archive`` says: its error, one line, a
    user's to fix (the CLI's "wavegen serve: error: ..."); the archive left as it was."""
    before = _contents(archive)
    error = refused_here(model, **{**PLAYED, "archive": str(archive), **settings})  # before it listens
    assert "\n" not in error, error
    assert _contents(archive) == before, "a refused archive is left as it was"
    return error


@pytest.mark.slow
@pytest.mark.parametrize("lost", ["damaged", "removed"])
def test_a_lost_params_file_is_written_again_from_the_snapshot_and_the_archive_goes_on(model, tmp_path, lost,
                                                                                       caplog):
    archive = tmp_path / "archive"
    _served(model, archive, 2.0)
    params = archive / ".state" / "params.json"
    recorded = json.loads(params.read_text())
    if lost == "damaged":
        params.write_text('{"seed": ')  # cut short
    else:
        params.unlink()
    kept = _archived(archive)
    # another command is refused, naming the file the archive's values were read from (not the lost params.json)
    error = _refusal(model, archive, seed=7)
    snap = archive / ".state" / "snapshot.npz"
    assert f"with seed=0, but this command asks for seed=7 ({snap})" in error and "params.json" not in error, error

    caplog.set_level(logging.INFO)
    caplog.clear()
    status = _served(model, archive, len(kept) / 16000 + 2.0)
    assert status["archive"]["snapshot_seconds"] * 16000 == len(kept) > 0  # went on from the snapshot, not from zero
    log = caplog.text
    assert f"{params} is {'damaged' if lost == 'damaged' else 'gone'}" in log, log
    assert "written again" in log
    again = json.loads(params.read_text())
    assert {k: v for k, v in again.items() if k != "unsnapshot_seconds"} == \
        {k: v for k, v in recorded.items() if k != "unsnapshot_seconds"}
    pcm = _archived(archive)
    assert np.array_equal(pcm[:len(kept)], kept)  # nothing archived before was lost or written over
    assert np.array_equal(pcm, reference_pcm(model, len(pcm)))  # and it goes on as if never stopped


@pytest.mark.slow
def test_parts_a_snapshot_counted_are_not_written_over_when_it_is_removed(model, tmp_path):
    """A snapshot counted part of the newest part in its header, then was removed: that header says it was lost,
    whether the audio is within the bound a server stopped before its first snapshot may leave (2 s) or not."""
    archive = tmp_path / "archive"
    # parts longer than any stop here reaches: a stop at a part's end (3.0 s of 3 s parts, met under load) leaves
    # the newest part a new one, counting nothing, and the refusal is the bound's instead (test_serve_archive_disk's
    # test_parts_without_a_snapshot_are_judged_by_the_bound_of_the_server_that_wrote_them)
    longer = {"archive_part_seconds": 100.0}
    _served(model, archive, 1.0, **longer)
    # both: with the one before it left, the archive goes on from that one (test_serve_archive_fallback)
    for name in ("snapshot.npz", "snapshot.prev.npz"):
        (archive / ".state" / name).unlink(missing_ok=True)
    error = _refusal(model, archive, **longer)
    assert "broadcast_00000.wav" in error and "no .state/snapshot.npz" in error, error
    assert "Bring the snapshot back to continue it" in error


@pytest.mark.slow
def test_a_part_replaced_by_another_file_is_named_as_what_it_is(model, tmp_path):
    archive = tmp_path / "archive"
    _served(model, archive, 1.0)
    part = max(archive.glob("broadcast_*.wav"))  # the one the snapshot ends in (a new, empty one where it ends a part)
    part.write_bytes(b"x" * max(part.stat().st_size, 100))  # as long, but no WAV
    error = _refusal(model, archive)
    assert f"{part} is not a WAV, where the archive wrote a mono 16000 Hz 16-bit WAV part" in error, error
    assert "choose another --archive" in error


@pytest.mark.slow
def test_a_snapshot_replaced_by_another_file_is_said_plainly_with_what_to_do(model, tmp_path):
    """A file that is no .npz at the snapshot's name: numpy's guess ("contains pickled (object) data ... load it
    unsafely") was passed on as the reason; said as what it is, with the way to go on."""
    archive = tmp_path / "archive"
    _served(model, archive, 1.0)
    snap = archive / ".state" / "snapshot.npz"
    snap.write_bytes(b"junk")
    # the one before it gone too: with it, the archive goes on from that one (test_serve_archive_fallback)
    (archive / ".state" / "snapshot.prev.npz").unlink(missing_ok=True)
    error = _refusal(model, archive)
    assert f"{snap} is damaged (not a snapshot wavegen serve wrote)" in error, error
    assert "pickle" not in error and "put a good copy back to continue it" in error


KILLED = """
import os, signal, sys
{moment}
from wavegen.cli import main
sys.exit(main(sys.argv[1:]))
"""


# the moment a full first part was closed (its header counting all of it) and part 1 begun: SIGKILL
KILLED_AT_THE_FIRST_CLOSE = """
import os, signal
from wavegen.serve.archive import Archive
made = Archive._writer
def writer(self, index, frames):
    if index >= 1 and not frames:  # part 1 begun: part 0 was closed, full
        os.kill(os.getpid(), signal.SIGKILL)
    return made(self, index, frames)
Archive._writer = writer
"""


def _killed(model: Path, archive: Path, moment: str, *args: str) -> None:
    """A real server (the CLI in a subprocess) on ``archive``, killed by a real SIGKILL at the moment the code
    ``moment`` picks (it only sends the signal: what reached the disk is what a kill -9 there leaves)."""
    done = subprocess.run([sys.executable, "-c", KILLED.format(moment=textwrap.dedent(moment)), "serve", str(model),
                           "--port", "0", "--allow-slow", "--archive", str(archive), *args],
                          env=ENV, capture_output=True, text=True, timeout=180)
    assert done.returncode == -signal.SIGKILL, done.stderr


@pytest.mark.slow
def test_a_server_killed_in_its_first_snapshot_is_begun_anew_by_the_same_command(model, tmp_path):
    """Killed as its first snapshot was to be written: the part's samples are on disk, but its header counted
    them before the snapshot (was: then refused for good, "the snapshot was removed"). Now the header counts
    them only after a snapshot, as render's, so the same command begins anew and plays on as if never stopped."""
    from wavegen.render.writers import flushed_samples

    archive = tmp_path / "archive"
    _killed(model, archive, """
        import wavegen.serve.archive as archive
        archive.save_snapshot = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    """, *ARGS)
    part = archive / "broadcast_00000.wav"
    assert not (archive / ".state" / "snapshot.npz").exists() and part.stat().st_size >= 44 + 2 * 16000
    assert flushed_samples(part, 16000) == (0, None)  # no snapshot holds them: the header counts none

    assert _served(model, archive, 2.0)["archive"]["snapshot_seconds"] == 0.0
    pcm = _archived(archive)
    assert len(pcm) >= 2 * 16000 and np.array_equal(pcm, reference_pcm(model, len(pcm)))


@pytest.mark.slow
def test_a_server_killed_as_its_first_part_closed_is_begun_anew_with_longer_parts(model, tmp_path):
    """Killed after its full first part was closed (its header counts all of it, as a full part's does, snapshot
    or not) and before the next part or any snapshot: the archive's part length is in params.json, so a
    restart with a longer --archive-part-seconds does not take that header for a snapshot's (was: refused)."""
    archive = tmp_path / "archive"
    first = ("--no-guard", "--archive-part-seconds", "1", "--snapshot-seconds", "100", "--buffer-seconds", "8")
    _killed(model, archive, KILLED_AT_THE_FIRST_CLOSE, *first)
    assert [p.name for p in archive.glob("broadcast_*.wav")] == ["broadcast_00000.wav"]
    assert not (archive / ".state" / "snapshot.npz").exists()

    _served(model, archive, 4.0)  # 3 s parts
    assert json.loads((archive / ".state" / "params.json").read_text())["part_frames"] == 3 * 16000
    pcm = _archived(archive)
    assert sf.info(str(archive / "broadcast_00000.wav")).frames == 3 * 16000  # begun anew, in its own parts
    assert np.array_equal(pcm, reference_pcm(model, len(pcm)))
