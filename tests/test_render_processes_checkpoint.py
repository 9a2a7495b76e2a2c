"""A torchrun render of a run's ``--checkpoint last`` while a training saves a newer checkpoint: every process
renders the one checkpoint the first process resolved, and the render folder's record names it."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from process_helpers import run_launch
from render_helpers import ENV, SR, direct_pcm, make_model, read_pcm

# The CLI, its first process resolving the model as it would, then a newer checkpoint (NEWER, held aside) moved into
# the run, as a training saves one (PRUNE: and the older removed, as it prunes them); the second process resolves only
# once that is done (the widest gap there is)
_CLI_SAVING_AFTER_THE_FIRST_RESOLVES = """import os, pathlib, shutil, sys, time
from wavegen.render import loop
newer, saved = pathlib.Path(os.environ["NEWER"]), pathlib.Path(os.environ["SAVED"])
real = loop.resolve_render_model

def resolving(*args, **kwargs):
    if os.environ["RANK"] != "0":
        deadline = time.monotonic() + 60
        while not saved.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    ref = real(*args, **kwargs)
    if os.environ["RANK"] == "0" and not saved.exists():
        newer.rename(pathlib.Path(os.environ["RUN"]) / "checkpoints" / newer.name)
        if os.environ["PRUNE"] == "1":
            shutil.rmtree(ref.folder)
        saved.write_text("saved")
    return ref

loop.resolve_render_model = resolving
from wavegen.cli import run
raise SystemExit(run())
"""


def kept_checkpoint(run, step: int, model_dir) -> None:
    kept = run / "checkpoints" / f"step_{step}"
    kept.mkdir(parents=True)
    shutil.copy(model_dir / "model.safetensors", kept)
    (kept / "trainer_state.json").write_text(json.dumps({"step": step}))


@pytest.mark.slow
@pytest.mark.parametrize("pruned", [False, True], ids=["a newer saved", "a newer saved, the older pruned"])
def test_checkpoint_last_under_torchrun_renders_the_step_the_first_process_resolved(tmp_path, pruned):
    """Each process resolved ``last`` on its own: a checkpoint saved between two of them had the second render
    other weights than the first (here refused mid-start as "a render of another model"). Now the first
    resolves it and the others take its step: the audio is step_2's throughout, and the record names step_2.
    Where step_2 is pruned before the processes have read it, the first resolves ``last`` again, for all: step_3."""
    older, newer = make_model(tmp_path / "older", seed=1), make_model(tmp_path / "newer", seed=2)
    run = tmp_path / "run"
    shutil.copytree(older, run / "best")
    shutil.copy(older / "config.json", run / "config.json")
    kept_checkpoint(run, 2, older)
    kept_checkpoint(tmp_path / "aside", 3, newer)
    script, out = tmp_path / "cli_saving.py", tmp_path / "r"
    script.write_text(_CLI_SAVING_AFTER_THE_FIRST_RESOLVES)
    env = {**ENV, "NEWER": str(tmp_path / "aside" / "checkpoints" / "step_3"), "SAVED": str(tmp_path / "saved"),
           "RUN": str(run), "PRUNE": str(int(pruned))}
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
            "-q", "render", str(run), "--checkpoint", "last", "--seconds", "0.125", "--streams", "2", "--out",
            str(out), "--backend", "torch", "--no-guard", "--no-spectrogram"]
    launch = run_launch(args, timeout=240, env=env)
    assert launch.returncode == 0, launch.stderr[-3000:]
    assert (run / "checkpoints" / "step_3").is_dir()  # the newer one was saved while the render started
    expected = direct_pcm(newer if pruned else older, 2, SR // 8)
    for stream in range(2):  # stream 1 is the second process's
        assert np.array_equal(read_pcm(out / f"stream_{stream:03d}.wav"), expected[stream]), stream
    report = json.loads((out / "render_report.json").read_text())
    assert report["params"]["model"] == str((run / "checkpoints" / f"step_{3 if pruned else 2}").resolve())


def test_a_users_error_is_said_at_once_though_the_checkpoint_it_read_is_pruned(tmp_path, monkeypatch, capsys):
    """A render's preparation read its checkpoint again whenever it met any error with the checkpoint folder gone
    (a training pruning it just after it was read): a bad --label cost ten model loads before it was said. Only a
    checkpoint removed while it was read is looked for again; a user's error is said after the one load."""
    import wavegen.checkpoint as checkpoint
    from wavegen.cli import main

    model = make_model(tmp_path / "model", seed=1)
    run = tmp_path / "run"
    shutil.copytree(model, run / "best")
    shutil.copy(model / "config.json", run / "config.json")
    kept_checkpoint(run, 1, model)
    real, loads = checkpoint.load_weights, []

    def read_then_pruned(path, *args, **kwargs):  # a training saving a newer checkpoint and pruning the one read
        weights = real(path, *args, **kwargs)
        loads.append(path.parent.name)
        kept_checkpoint(run, len(loads) + 1, model)
        shutil.rmtree(path.parent)
        return weights

    monkeypatch.setattr(checkpoint, "load_weights", read_then_pruned)
    code = main(["render", str(run), "--checkpoint", "last", "--label", "nosuchlabel", "--out", str(tmp_path / "r"),
                 "--seconds", "0.125", "--backend", "torch", "--no-guard", "--no-spectrogram", "-q"])
    assert code == 2 and loads == ["step_1"], loads
    assert "--label 'nosuchlabel'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
