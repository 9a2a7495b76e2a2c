"""wavegen.divergence's loss guard: a training whose loss stays far above a uniform guess over its q_levels
(train.lr=1e6: finite, useless weights) is warned of once, in one line naming the loss, the uniform figure and
train.lr; judged on every step's loss (a run shorter than its log interval too); an honest tiny training, which starts
above the uniform guess (~8.6 bits for 256 levels), or whose large lr spikes the loss for a few steps, never is."""

from __future__ import annotations

import logging
import math

import torch
from conftest import TINY_WAVENET
from conftest import tiny_run_config as config_for

from wavegen.divergence import LOSS_STEPS, AboveUniform
from wavegen.models import resolve_preset
from wavegen.train import resolve_run_config, train

GUARD = "the model is learning nothing"


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and GUARD in r.getMessage()]


def test_a_huge_learning_rate_is_warned_of_once_and_the_training_goes_on(tiny_corpus, tmp_path, caplog):
    """train.lr=1e6: the loss jumps to ~1e24 bits/sample after the first step and stays there; the run went to
    "finished" without a word. One warning now, once LOSS_STEPS steps were above the limit, naming the loss, 8.00 bits
    and train.lr."""
    caplog.set_level(logging.WARNING)
    result = train(config_for(tiny_corpus, "train.lr=1e6", "train.max_steps=10", "train.val_interval=10",
                              "train.checkpoint_interval=100"), tmp_path / "run", progress=False)
    assert result["status"] == "finished" and result["step"] == 10
    said = _warnings(caplog)
    assert len(said) == 1, said
    assert LOSS_STEPS == 6  # the first step's loss is the initial weights' (~8.6 bits): steps 2..7 make the stretch
    assert said[0].startswith("step 7: the training loss has stayed above 12.0 bits/sample for 6 steps in a row"), said
    assert "the 8.00 bits/sample of a uniform guess over the 256 q_levels (ln(256) nats)" in said[0], said
    assert "train.lr=1e+06 is likely too large: stop, and train again with a lower one" in said[0], said


def test_a_run_shorter_than_its_log_interval_is_judged_at_its_last_step(tiny_corpus, tmp_path, caplog):
    """train.lr=1e6 for 8 steps with train.log_interval=100: the only log row is the last step's, and the guard,
    which wanted three rows, said nothing. The steps' losses are judged there: 7 in a row above the limit, and the run,
    which has ended, is not told to stop."""
    caplog.set_level(logging.WARNING)
    result = train(config_for(tiny_corpus, "train.lr=1e6", "train.max_steps=8", "train.val_interval=8",
                              "train.checkpoint_interval=100", "train.log_interval=100"), tmp_path / "run",
                   progress=False)
    assert result["status"] == "finished" and result["step"] == 8
    said = _warnings(caplog)
    assert len(said) == 1, said
    assert said[0].startswith("step 8: the training loss has stayed above 12.0 bits/sample for 7 steps in a row"), said
    assert "train.lr=1e+06 is likely too large: train again with a lower one" in said[0], said  # it has ended


def test_honest_tiny_trainings_are_never_warned_of(tiny_corpus, tmp_path, caplog):
    """The test presets' trainings, at the default lr, at a large but working one, and wavenet-tiny at lr=1, whose
    loss spikes above the limit (9 bits for its 64 levels) for three steps (~239, 32, 17 bits) and then falls below
    the uniform guess, with a log row each step: the three rows of that spike were warned of; they stay quiet."""
    caplog.set_level(logging.WARNING)
    for lr in ("1e-3", "1e-1"):
        train(config_for(tiny_corpus, f"train.lr={lr}", "train.max_steps=12", "train.val_interval=12",
                         "train.checkpoint_interval=100"), tmp_path / f"run{lr}", progress=False)
    spiky = resolve_run_config(resolve_preset("wavenet-tiny"), tiny_corpus, TINY_WAVENET + [
        "train.lr=1", "train.max_steps=12", "train.val_interval=12", "train.checkpoint_interval=100"])
    train(spiky, tmp_path / "spiky", progress=False)
    losses = [row["loss_bits"] for row in _rows(tmp_path / "spiky")]
    assert sum(bits > 9 for bits in losses[:6]) >= 3 and losses[-1] < 9, losses  # the spike the test is about
    assert _warnings(caplog) == []


def _rows(run) -> list[dict]:
    import json

    return [row for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss_bits" in row]


def _steps(guard: AboveUniform, bits: float, count: int) -> None:
    for _ in range(count):
        guard.step(torch.tensor(bits * math.log(2)))


def test_the_stretch_is_counted_per_step_past_warm_up_in_a_row_and_said_once():
    guard = AboveUniform(q_levels=256, lr=0.5, warmup_steps=3)
    assert guard.uniform_bits == 8 and guard.limit_bits == 12
    assert guard.note(0, 8.0) is None  # no step yet
    _steps(guard, 1e9, 8)  # steps 1-8, three of them warm-up (the lr still rising): 5 past it
    assert guard.note(8, 1e9) is None
    _steps(guard, 11.9, 1)  # step 9 below the limit: the stretch begins again
    _steps(guard, 30.0, 5)
    assert guard.note(14, 30.0) is None  # a row's mean alone is not judged: 5 steps
    _steps(guard, 30.0, 1)
    said = guard.note(15, 30.0)
    assert said is not None and said.startswith("step 15: ") and "for 6 steps in a row" in said, said
    assert "(this log row's mean: 30)" in said and "train.lr=0.5" in said, said
    _steps(guard, 30.0, 3)
    assert guard.note(18, 30.0) is None  # once
    assert AboveUniform(q_levels=4, lr=1).limit_bits == 4  # few levels: 2 bits above log2(4), more than 1.5x
    spiky = AboveUniform(q_levels=256, lr=1)
    for bits in (8.6, 400.0, 40.0, 20.0, 9.0, 8.0) + (1e9,) * 5 + (8.0,):  # a row's mean far above, no stretch
        spiky.step(torch.tensor(bits * math.log(2)))
    assert spiky.note(12, 1e8) is None


def test_a_resume_from_ruined_weights_blames_them_not_the_new_lr(tiny_corpus, tmp_path, caplog):
    """Weights ruined by train.lr=1e6, resumed with train.lr=1e-3: the loss is ~1e23 from the first step on. The
    warning blamed the new lr and suggested the value in use ("train.lr=0.001 is likely too large ... e.g. --set
    train.lr=1e-3"). It names the weights resumed from step 4 as far from any useful model, says to start again in
    a new --run folder, and suggests a tenth of the lr in use."""
    caplog.set_level(logging.WARNING)
    run = tmp_path / "run"
    train(config_for(tiny_corpus, "train.lr=1e6", "train.max_steps=4", "train.val_interval=4",
                     "train.checkpoint_interval=4"), run, progress=False)
    caplog.clear()
    result = train(config_for(tiny_corpus, "train.lr=1e-3", "train.max_steps=12", "train.val_interval=12",
                              "train.checkpoint_interval=100"), run, progress=False)
    assert result["status"] == "finished" and result["step"] == 12
    said = _warnings(caplog)
    assert len(said) == 1, said
    assert said[0].startswith("step 10: the training loss has stayed above 12.0 bits/sample for 6 steps"), said
    assert ("the weights resumed from step 4 are already far from any useful model, whatever train.lr (now 0.001)"
            in said[0]), said
    assert "in a new --run folder with a lower learning rate than the one that ruined them" in said[0], said
    assert said[0].endswith("(e.g. --set train.lr=0.0001, a tenth of this one)"), said
    assert "is likely too large" not in said[0], said


def test_a_resume_whose_loss_was_below_the_limit_at_first_blames_the_lr():
    """A resumed session whose first steps were below the limit (the weights resumed from were fine) and whose loss
    then rose: the lr in use is blamed, and a tenth of it suggested (not a fixed 1e-3)."""
    guard = AboveUniform(q_levels=256, lr=1e-3, warmup_steps=0, start_step=100)
    _steps(guard, 8.0, 1)
    _steps(guard, 30.0, 6)
    said = guard.note(107, 30.0)
    assert said is not None and "train.lr=0.001 is likely too large" in said and "resumed from" not in said, said
    assert "(e.g. --set train.lr=0.0001)" in said, said
    ruined = AboveUniform(q_levels=256, lr=0.5, start_step=100)
    _steps(ruined, 1e20, 5)
    assert ruined.note(105, 1e20) is None
    _steps(ruined, 1e20, 1)
    assert "the weights resumed from step 100 are already far" in ruined.note(106, 1e20)
    fresh = AboveUniform(q_levels=256, lr=0.5)  # a new training: the lr is blamed, whatever the first step
    _steps(fresh, 1e20, 6)
    assert "train.lr=0.5 is likely too large" in fresh.note(6, 1e20)
