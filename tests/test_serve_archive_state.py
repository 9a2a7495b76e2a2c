"""wavegen serve --archive with its state damaged or gone while its audio remains: a params.json damaged or
removed is written again from the snapshot (which records the same parameters) and the archive goes on; a
snapshot removed while a part's header counts audio a snapshot counted is refused, untouched (it started over
and wrote part 0 over); a part replaced by another file is named as what it is. Real servers (the CLI in
subprocesses, test_serve's helpers), real files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_serve import Server, make_model, reference_pcm
from test_serve_archive import _archived, _contents

ARGS = ("--no-guard", "--archive-part-seconds", "3", "--snapshot-seconds", "1", "--buffer-seconds", "8")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("serve_archive_state") / "tiny")


def _served(model: Path, archive: Path, seconds: float) -> Server:
    server = Server(model, "--archive", str(archive), *ARGS)
    server.wait_for(lambda s: s["archive"]["snapshot_seconds"] >= seconds)
    return server


def _refusal(model: Path, archive: Path) -> str:
    """The one error line of a server that refuses to start on ``archive``; the archive left as it was."""
    before = _contents(archive)
    try:
        server = Server(model, "--archive", str(archive), *ARGS)
    except AssertionError as err:  # it did not start: its stderr follows
        log = str(err)
    else:
        server.stop()
        raise AssertionError(f"it started on {archive}, over the archive:\n{''.join(server.stderr)}")
    assert "Traceback" not in log
    errors = [line for line in log.splitlines() if line.startswith("wavegen serve: error:")]
    assert len(errors) == 1, log
    assert _contents(archive) == before, "a refused archive is left as it was"
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("lost", ["damaged", "removed"])
def test_a_lost_params_file_is_written_again_from_the_snapshot_and_the_archive_goes_on(model, tmp_path, lost):
    archive = tmp_path / "archive"
    first = _served(model, archive, 2.0)
    assert first.stop() == 130
    params = archive / ".state" / "params.json"
    recorded = json.loads(params.read_text())
    if lost == "damaged":
        params.write_text('{"seed": ')  # cut short
    else:
        params.unlink()
    kept = _archived(archive)

    second = Server(model, "--archive", str(archive), *ARGS)
    began = second.status()["archive"]["snapshot_seconds"]
    assert began * 16000 == len(kept) > 0  # went on from the snapshot, not from zero
    second.wait_for(lambda s: s["archive"]["snapshot_seconds"] >= began + 2.0)
    assert second.stop() == 130
    log = "".join(second.stderr)
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
    """2 s archived (less than the 2 s a server stopped before its first snapshot may leave, so the
    bound on the audio let it through): the part's header, counted at the snapshot, says it was lost."""
    archive = tmp_path / "archive"
    first = _served(model, archive, 1.0)
    assert first.stop() == 130
    (archive / ".state" / "snapshot.npz").unlink()
    error = _refusal(model, archive)
    assert "broadcast_00000.wav" in error and "no .state/snapshot.npz" in error, error
    assert "Bring the snapshot back to continue it" in error


@pytest.mark.slow
def test_a_part_replaced_by_another_file_is_named_as_what_it_is(model, tmp_path):
    archive = tmp_path / "archive"
    first = _served(model, archive, 1.0)
    assert first.stop() == 130
    part = max(archive.glob("broadcast_*.wav"))
    part.write_bytes(b"x" * part.stat().st_size)  # as long, but no WAV
    error = _refusal(model, archive)
    assert f"{part} is not a WAV, where the archive wrote a mono 16000 Hz 16-bit WAV part" in error, error
    assert "choose another --archive" in error


@pytest.mark.slow
def test_a_snapshot_replaced_by_another_file_is_said_plainly_with_what_to_do(model, tmp_path):
    """A file that is no .npz at the snapshot's name: numpy's guess ("contains pickled (object) data ... load it
    unsafely") was passed on as the reason; said as what it is, with the way to go on."""
    archive = tmp_path / "archive"
    first = _served(model, archive, 1.0)
    assert first.stop() == 130
    snap = archive / ".state" / "snapshot.npz"
    snap.write_bytes(b"junk")
    error = _refusal(model, archive)
    assert f"{snap} is damaged (not a snapshot wavegen serve wrote)" in error, error
    assert "pickle" not in error and "put a good copy back to continue it" in error
