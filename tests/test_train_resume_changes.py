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
