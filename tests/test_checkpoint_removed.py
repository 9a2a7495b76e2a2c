"""wavegen.checkpoint: a checkpoint removed while another process reads it (a training pruning its checkpoints,
train.keep_checkpoints) is seen whole or not at all, and a file of it that goes while it is checked is missing,
not an OSError.

Both are races between real processes; the tests run the real prune (or a real process removing a file) against a
real reader, many times, and count what the reader saw."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time

from wavegen.checkpoint import checkpoints, file_damage, prune_checkpoints, tidy_run_folder


def write_checkpoint(run, step, files=40):
    """A checkpoint step_<step> of ``files`` small files, listed in its trainer_state.json, written as training
    writes one (a temporary folder renamed into place). Many files: removing it in place takes a while."""
    tmp = run / "checkpoints" / f".tmp_step_{step}"
    tmp.mkdir(parents=True)
    listed = {}
    for i in range(files):
        data = f"{step}-{i}".encode() * 100
        (tmp / f"part_{i}.bin").write_bytes(data)
        listed[f"part_{i}.bin"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "files": listed}))
    tmp.rename(run / "checkpoints" / f"step_{step}")
    return run / "checkpoints" / f"step_{step}"


def half_removed(folder) -> bool:
    """Whether ``folder`` (a listed checkpoint) lacks its record or a file its record lists, and is still there
    afterwards: removed in part, seen under its step_N name."""
    try:
        listed = json.loads((folder / "trainer_state.json").read_text())["files"]
        whole = all((folder / name).is_file() for name in listed)
    except (OSError, ValueError):
        whole = False
    return not whole and folder.is_dir()


def test_a_listing_made_while_a_training_prunes_never_holds_a_half_removed_checkpoint(tmp_path):
    """A training saves a checkpoint and prunes to the newest one, again and again (train.checkpoint_interval=1,
    train.keep_checkpoints=1), while a reader (info/render/eval --checkpoint last) lists the run's checkpoints:
    every checkpoint listed is whole or already gone. (The prune removed step_N in place with shutil.rmtree, its
    files one by one: a reader saw step_N without its weights, about one look in ten.)"""
    run = tmp_path / "run"
    write_checkpoint(run, 1)
    stop, errors, pruned = threading.Event(), [], []

    def training():
        step = 2
        try:
            while not stop.is_set():
                newest = write_checkpoint(run, step)
                prune_checkpoints(run, 1, set(), (newest,))
                pruned.append(step - 1)
                step += 1
        except Exception as err:  # noqa: BLE001 - said by the test below
            errors.append(err)

    thread = threading.Thread(target=training)
    thread.start()
    looks, seen, began = 0, [], time.monotonic()
    try:
        while len(pruned) < 60 and not errors and time.monotonic() - began < 20:
            for _, folder in checkpoints(run):
                looks += 1
                if half_removed(folder):
                    seen.append(folder.name)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert len(pruned) >= 30 and looks >= 30, (len(pruned), looks)  # the reader met the prunes
    assert not seen, f"{len(seen)} of {looks} looks saw a half-removed checkpoint: {seen[:5]}"
    left = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(left) == 1 and left[0].startswith("step_"), left  # nothing left behind the renames


def test_a_prune_cut_short_is_finished_by_the_next(tmp_path, caplog):
    """A pruned checkpoint is deleted under .tmp_step_N.pruned: one a killed training left there is removed when
    the run starts again (tidy_run_folder), and does not stop a later prune of the same step."""
    run = tmp_path / "run"
    for step in (1, 2):
        write_checkpoint(run, step, files=2)
    leftover = run / "checkpoints" / ".tmp_step_1.pruned"
    leftover.mkdir()
    (leftover / "part_0.bin").write_bytes(b"left by a prune cut short")
    prune_checkpoints(run, 1, set())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_2"]
    leftover.mkdir()
    with caplog.at_level(logging.INFO, logger="wavegen.checkpoint"):
        tidy_run_folder(run, None, [])
    assert not leftover.exists()
    assert f"removed {leftover}, left unfinished by a process that stopped while removing it" in caplog.text


def test_a_file_removed_while_it_is_checked_is_missing(tmp_path):
    """file_damage against another process that removes the file and puts it back (a training pruning and
    saving): every answer is "missing" or intact, never FileNotFoundError. (It looked twice, is_file() then
    stat(), then opened the file to hash it: a file removed in between raised, within a second or two.)"""
    data = os.urandom(4096)
    want = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    whole, path = tmp_path / "whole", tmp_path / "model.safetensors"
    whole.write_bytes(data)
    os.link(whole, path)
    churn = subprocess.Popen([sys.executable, "-c", (
        "import os, sys\n"
        "path, whole = sys.argv[1:]\n"
        "while True:\n"
        "    os.unlink(path)\n"
        "    os.link(whole, path)\n"), str(path), str(whole)])
    answers, began = {}, time.monotonic()
    try:
        while time.monotonic() - began < 4 and churn.poll() is None:
            why, digest = file_damage(path, want)
            answers[(why, digest)] = answers.get((why, digest), 0) + 1
    finally:
        churn.kill()
        churn.wait()
    assert set(answers) <= {(None, want["sha256"]), (f"{path}: missing", None)}, answers
    assert len(answers) == 2, answers  # both met: the file was removed and put back while it was checked
