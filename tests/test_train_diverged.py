"""A training that diverges: what it keeps of the weights that gave its first non-finite step."""

import json

import pytest
import torch
from conftest import prepared_corpus
from conftest import tiny_run_config as config_for
from safetensors.torch import load_file

from wavegen.train import train
from wavegen.trainstate import NonFiniteError


def test_best_of_a_run_without_validation_audio_never_keeps_the_weights_that_gave_the_non_finite_step(tmp_path):
    """Without validation audio best/ holds the latest model, written at each validation step: lr 1e30 writes
    weights of ~1e30 (finite) there at step 1, which give step 2's NaN. They are moved aside (best.diverged, kept),
    said in the line, so render and eval never take them; the rerun the line advises writes best/ anew."""
    corpus = prepared_corpus(tmp_path, val_fraction=0, test_fraction=0.25)
    run = tmp_path / "run"
    common = ["train.val_interval=1", "train.checkpoint_interval=100", "train.max_steps=3"]
    with pytest.raises(NonFiniteError, match=r"best held the weights that gave it: moved aside to best.diverged; "
                                             r"no checkpoint had been saved") as stopped:
        train(config_for(corpus, *common, "train.lr=1e30", "train.grad_clip=0"), run, progress=False)
    assert str(stopped.value).startswith("step 2: ")
    assert not (run / "best").exists()
    wrecked = load_file(str(run / "best.diverged" / "model.safetensors"))
    assert max(w.abs().max() for w in wrecked.values()) > 1e20
    assert train(config_for(corpus, *common, "train.lr=1e-3", "train.grad_clip=1"), run, progress=False)["step"] == 3
    weights = load_file(str(run / "best" / "model.safetensors"))
    assert all(torch.isfinite(w).all() and w.abs().max() < 1e3 for w in weights.values())


def test_a_checkpoint_holding_a_non_finite_optimizer_state_is_moved_aside_and_the_one_before_resumes(tiny_corpus,
                                                                                                      tmp_path):
    """A checkpoint whose Adam state holds an inf (a gradient past 1.8e19 squared, kept by a training that did not
    check it): a run resumed from it would carry the inf into every later checkpoint. The resume says so in one
    line and moves it aside (kept, step_N.diverged); the same command then resumes from the one before it, and
    what it saves is finite."""
    from wavegen.fileio import sha256_file

    run = tmp_path / "run"
    common = ["train.val_interval=2", "train.checkpoint_interval=1", "train.max_steps=4"]
    assert train(config_for(tiny_corpus, *common, "train.max_steps=2"), run, progress=False)["step"] == 2
    newest = run / "checkpoints" / "step_2"
    optimizer = torch.load(newest / "optimizer.bin", weights_only=True)
    next(iter(optimizer["state"].values()))["exp_avg_sq"].view(-1)[0] = float("inf")
    torch.save(optimizer, newest / "optimizer.bin")
    listing = json.loads((newest / "trainer_state.json").read_text())  # as the training that wrote it listed it
    listing["files"]["optimizer.bin"] = {"bytes": (newest / "optimizer.bin").stat().st_size,
                                         "sha256": sha256_file(newest / "optimizer.bin")}
    (newest / "trainer_state.json").write_text(json.dumps(listing))
    with pytest.raises(NonFiniteError, match=r"step_2 holds NaN or inf in the optimizer's state, so a run cannot go "
                                             r"on from it: moved aside to step_2.diverged; a rerun resumes from "
                                             r".*step_1, the checkpoint before it: rerun the same command$"):
        train(config_for(tiny_corpus, *common), run, progress=False)
    assert (run / "checkpoints" / "step_2.diverged" / "optimizer.bin").is_file()
    assert train(config_for(tiny_corpus, *common), run, progress=False)["step"] == 4
    saved = torch.load(run / "checkpoints" / "step_4" / "optimizer.bin", weights_only=True)
    assert all(torch.isfinite(t).all() for state in saved["state"].values() for t in state.values())
