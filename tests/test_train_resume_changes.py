"""Resuming a run with the settings its own errors tell the user to change."""

import math

import pytest
import torch
from conftest import tiny_run_config as config_for
from safetensors.torch import load_file

from wavegen.train import read_metrics, train
from wavegen.trainstate import NonFiniteError


def test_a_run_stopped_by_a_non_finite_step_resumes_with_the_lower_lr_and_clipping_it_was_told_to_use(
        tiny_corpus, tmp_path):
    """The NonFiniteError says "the last good checkpoint is kept; a rerun resumes from it: lower train.lr or clip
    the gradient": that rerun resumes from the checkpoint (it was refused as a different config)."""
    run = tmp_path / "run"
    common = ["train.val_interval=2", "train.checkpoint_interval=2", "train.max_steps=6"]
    assert train(config_for(tiny_corpus, *common, "train.max_steps=2", "train.lr=3e-3"), run,
                 progress=False)["step"] == 2
    with pytest.raises(NonFiniteError, match="checkpoints/step_2, is kept; a rerun resumes from it"):
        train(config_for(tiny_corpus, *common, "train.lr=1e30", "train.grad_clip=0"), run, progress=False)
    result = train(config_for(tiny_corpus, *common, "train.lr=1e-3", "train.grad_clip=1"), run, progress=False)
    assert result["status"] == "finished" and result["step"] == 6 and math.isfinite(result["best_val_bits"])
    rows = [r for r in read_metrics(run) if "loss_bits" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(r["loss_bits"]) for r in rows)
    assert [r["lr"] for r in rows] == [3e-3, 3e-3, 1e-3, 1e-3, 1e-3, 1e-3]  # the lower rate from the resume on
    weights = load_file(str(run / "best" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_the_checkpoint_whose_weights_gave_the_non_finite_step_is_not_resumed_from(tiny_corpus, tmp_path):
    """lr 1e30 checkpointed at every step: the checkpoint before the first non-finite step holds weights of ~1e30
    (finite), which give that step's NaN whatever the learning rate. It is moved aside (kept, as step_N.diverged),
    the line says so and what a rerun resumes from, and that rerun, with the lower lr the line advises, trains to
    the end with finite weights; best/ never holds the wrecked ones."""
    run = tmp_path / "run"
    common = ["train.val_interval=4", "train.checkpoint_interval=1", "train.keep_checkpoints=2", "train.max_steps=6"]
    assert train(config_for(tiny_corpus, *common, "train.max_steps=2", "train.lr=3e-3"), run,
                 progress=False)["step"] == 2
    with pytest.raises(NonFiniteError) as stopped:
        train(config_for(tiny_corpus, *common, "train.lr=1e30", "train.grad_clip=0"), run, progress=False)
    bad = int(str(stopped.value).split("step ")[1].split(":")[0])
    assert bad >= 4  # step 3 trained (its loss and gradient of step 2's good weights were finite) and was saved
    wrecked = run / "checkpoints" / f"step_{bad - 1}.diverged"
    assert f"moved aside to {wrecked.name}; a rerun resumes from {run / 'checkpoints' / f'step_{bad - 2}'}" in str(
        stopped.value)
    assert max(w.abs().max() for w in load_file(str(wrecked / "model.safetensors")).values()) > 1e20
    result = train(config_for(tiny_corpus, *common, "train.lr=1e-3", "train.grad_clip=1"), run, progress=False)
    assert result["status"] == "finished" and result["step"] == 6 and math.isfinite(result["best_val_bits"])
    for folder in (run / "best", run / "checkpoints" / "step_6"):
        weights = load_file(str(folder / "model.safetensors"))
        assert all(torch.isfinite(w).all() and w.abs().max() < 1e3 for w in weights.values()), folder
    assert wrecked.is_dir()  # kept for the user
