"""A render resumed from the snapshot before a damaged one keeps a good fallback (wavegen.render.writers):
the next snapshot's save does not make the damaged file the fallback, so a crash or a full disk in that save
still leaves a snapshot to resume from."""

from __future__ import annotations

import os

import numpy as np
import pytest

from wavegen.render import RenderStateError, load_snapshot, save_snapshot
from wavegen.render.writers import previous_snapshot


def _save(path, written: int) -> None:
    save_snapshot(path, {"h": np.full(3, written, dtype=np.float32)}, written, {"at": written}, keep_previous=True)


def test_a_resume_from_the_snapshot_before_a_damaged_one_keeps_it_as_the_fallback(tmp_path, caplog):
    path = tmp_path / "rank0.npz"
    _save(path, 100)
    _save(path, 200)
    path.write_bytes(path.read_bytes()[:50])  # the newest damaged (a bad sector, a copy cut short)
    with caplog.at_level("WARNING", logger="wavegen.render"):
        state, written, meta = load_snapshot(path, fallback=True)
    assert written == 100 and meta == {"at": 100} and state["h"].tolist() == [100.0] * 3
    assert "rank0.npz is damaged" in caplog.text and "resuming from the snapshot before it" in caplog.text
    # the resumed render's next save: what it replaces, kept as the fallback, is the good snapshot
    _save(path, 300)
    assert load_snapshot(previous_snapshot(path))[1] == 100
    assert load_snapshot(path)[1] == 300


def test_a_save_that_dies_after_keeping_the_fallback_still_resumes_after_a_damaged_snapshot(tmp_path):
    """The save's first step (the newest kept as rank0.prev.npz) done, its write not (kill -9, a full disk): the
    resume after it finds the snapshot it resumed from, not the damaged one, nor nothing."""
    path = tmp_path / "rank0.npz"
    _save(path, 100)
    _save(path, 200)
    path.write_bytes(b"PK\x03\x04 not a whole zip")
    assert load_snapshot(path, fallback=True)[1] == 100
    os.replace(path, previous_snapshot(path))  # what save_snapshot(keep_previous=True) does before writing
    assert load_snapshot(path, fallback=True)[1] == 100


def test_both_snapshots_damaged_is_still_refused_naming_them(tmp_path):
    path = tmp_path / "rank0.npz"
    _save(path, 100)
    _save(path, 200)
    for damaged in (path, previous_snapshot(path)):
        damaged.write_bytes(b"damaged")
    with pytest.raises(RenderStateError, match=r"rank0\.npz is damaged .* so is the snapshot before it, "
                                               r"rank0\.prev\.npz; rerun with --restart"):
        load_snapshot(path, fallback=True)
    assert path.read_bytes() == b"damaged" and previous_snapshot(path).read_bytes() == b"damaged"  # left as they were


def test_a_finished_renders_state_left_by_a_kill_while_it_was_removed_goes_at_the_rerun(tmp_path, caplog):
    """Killed after render_report.json was written, while .state/ was removed: the rerun says the render is complete
    and removes what is left of .state/ (a FLAC render's raw PCM: as large as its audio), its files untouched."""
    from render_helpers import make_model, render_cli

    model, out = make_model(tmp_path / "model"), tmp_path / "out"
    assert render_cli(model, out, "--format", "flac") == 0
    flac = (out / "stream_000.flac").read_bytes()
    state = out / ".state"
    state.mkdir()  # what a kill in the middle of write_report's removal leaves
    (state / "stream_000.pcm").write_bytes(b"\0" * 1000)
    (state / "rank0.npz").write_bytes(b"PK")
    with caplog.at_level("INFO", logger="wavegen.render"):
        assert render_cli(model, out, "--format", "flac") == 0
    assert "already complete" in caplog.text and "removed .state" in caplog.text
    assert not state.exists()
    assert (out / "stream_000.flac").read_bytes() == flac


@pytest.mark.slow
def test_a_render_whose_folder_is_moved_while_it_runs_says_so_and_resumes_at_the_new_place(tmp_path):
    """`mv OUT OUT2` while the render runs: its next snapshot cannot be written. The line names the folder as gone
    (not a disk to free: "rerun the same command" would begin a new render at the old name); rerun at the new
    place, the render resumes there, byte for byte an uninterrupted one."""
    import subprocess

    import psutil

    from render_helpers import ENV, SR, cli, direct_pcm, file_bytes, make_model, wait_for_snapshot, write_streams

    model, out, moved = make_model(tmp_path / "model"), tmp_path / "out", tmp_path / "moved"
    seconds = 0.5
    flags = ["--seconds", seconds, "--streams", 2, "--backend", "torch", "--no-guard", "--no-spectrogram",
             "--snapshot-seconds", 0.05, "--block-seconds", 0.01]
    proc = subprocess.Popen(cli(model, "--out", out, *flags), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_snapshot(proc, out / ".state" / "rank0.npz", min_written=SR // 20)
    render = psutil.Process(proc.pid)
    render.suspend()  # held (SIGSTOP) while the folder moves: it runs on mid-render, however fast it renders
    try:
        assert not (out / "render_report.json").exists()
        os.rename(out, moved)
    finally:  # where either fails too: the render is not left stopped for good
        render.resume()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    line = stderr.strip().splitlines()[-1]
    assert f"the render's folder {out} is gone (moved, renamed or removed while the render ran)" in line, line
    assert "intact in it, wherever it went; rerun the command with --out naming its new place" in line, line
    assert not out.exists()
    assert subprocess.run(cli(model, "--out", moved, *flags), env=ENV, capture_output=True).returncode == 0
    ref = write_streams(tmp_path / "ref", direct_pcm(model, 2, int(seconds * SR)), "wav")  # an uninterrupted render's
    assert file_bytes(moved, 2) == file_bytes(ref, 2)
