"""wavegen.divergence's loss guard: a training whose loss stays far above a uniform guess over its q_levels
(train.lr=1e6: finite, useless weights) is warned of once, in one line naming the loss, the uniform figure and
train.lr; an honest tiny training, which starts above the uniform guess (~8.6 bits for 256 levels), never is."""

from __future__ import annotations

import logging

from conftest import tiny_run_config as config_for

from wavegen.train import train

GUARD = "the model is learning nothing"


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and GUARD in r.getMessage()]


def test_a_huge_learning_rate_is_warned_of_once_and_the_training_goes_on(tiny_corpus, tmp_path, caplog):
    """train.lr=1e6: the loss jumps to ~1e24 bits/sample at once and stays there; the run went to "finished"
    without a word. One warning now, after three such log rows, naming the loss, 8.00 bits and train.lr."""
    caplog.set_level(logging.WARNING)
    result = train(config_for(tiny_corpus, "train.lr=1e6", "train.max_steps=8", "train.val_interval=8",
                              "train.checkpoint_interval=100"), tmp_path / "run", progress=False)
    assert result["status"] == "finished" and result["step"] == 8
    said = _warnings(caplog)
    assert len(said) == 1, said
    assert said[0].startswith("step 4: the training loss has stayed above 12.0 bits/sample for 3 log rows"), said
    assert "the 8.00 bits/sample of a uniform guess over the 256 q_levels (ln(256) nats)" in said[0], said
    assert "train.lr=1e+06 is likely too large" in said[0], said


def test_honest_tiny_trainings_are_never_warned_of(tiny_corpus, tmp_path, caplog):
    """The test presets' trainings, at the default lr and at a large but working one, with a log row each step:
    they begin above the uniform guess and stay quiet."""
    caplog.set_level(logging.WARNING)
    for lr in ("1e-3", "1e-1"):
        train(config_for(tiny_corpus, f"train.lr={lr}", "train.max_steps=12", "train.val_interval=12",
                         "train.checkpoint_interval=100"), tmp_path / f"run{lr}", progress=False)
    assert _warnings(caplog) == []


def test_the_stretch_is_counted_past_warm_up_in_a_row_and_said_once():
    from wavegen.divergence import AboveUniform

    guard = AboveUniform(q_levels=256, lr=0.5, warmup_steps=3)
    assert guard.uniform_bits == 8 and guard.limit_bits == 12
    assert [guard.note(step, 1e9) for step in (1, 2, 3)] == [None] * 3  # warm-up: the lr still rising
    assert guard.note(4, 20.0) is None and guard.note(5, 20.0) is None
    assert guard.note(6, 11.9) is None  # below the limit: the stretch begins again
    assert guard.note(7, 30.0) is None and guard.note(8, 30.0) is None
    said = guard.note(9, 30.0)
    assert said is not None and said.startswith("step 9: ") and "now 30" in said and "train.lr=0.5" in said
    assert guard.note(10, 30.0) is None  # once
    assert AboveUniform(q_levels=4, lr=1).limit_bits == 4  # few levels: 2 bits above log2(4), more than 1.5x


def test_a_resume_from_ruined_weights_blames_them_not_the_new_lr(tiny_corpus, tmp_path, caplog):
    """Weights ruined by train.lr=1e6, resumed with train.lr=1e-3: the loss is ~1e23 from the first row on. The
    warning blamed the new lr and suggested the value in use ("train.lr=0.001 is likely too large ... e.g. --set
    train.lr=1e-3"). It names the weights resumed from step 4 as far from any useful model, says to start again in
    a new --run folder, and suggests a tenth of the lr in use."""
    caplog.set_level(logging.WARNING)
    run = tmp_path / "run"
    train(config_for(tiny_corpus, "train.lr=1e6", "train.max_steps=4", "train.val_interval=4",
                     "train.checkpoint_interval=4"), run, progress=False)
    caplog.clear()
    result = train(config_for(tiny_corpus, "train.lr=1e-3", "train.max_steps=10", "train.val_interval=10",
                              "train.checkpoint_interval=100"), run, progress=False)
    assert result["status"] == "finished" and result["step"] == 10
    said = _warnings(caplog)
    assert len(said) == 1, said
    assert said[0].startswith("step 7: the training loss has stayed above 12.0 bits/sample for 3 log rows"), said
    assert ("the weights resumed from step 4 are already far from any useful model, whatever train.lr (now 0.001)"
            in said[0]), said
    assert "in a new --run folder with a lower learning rate than the one that ruined them" in said[0], said
    assert said[0].endswith("(e.g. --set train.lr=0.0001, a tenth of this one)"), said
    assert "is likely too large" not in said[0], said


def test_a_resume_whose_loss_was_below_the_limit_at_first_blames_the_lr():
    """A resumed session whose first rows were below the limit (the weights resumed from were fine) and whose loss
    then rose: the lr in use is blamed, and a tenth of it suggested (not a fixed 1e-3)."""
    from wavegen.divergence import AboveUniform

    guard = AboveUniform(q_levels=256, lr=1e-3, warmup_steps=0, start_step=100)
    assert [guard.note(step, bits) for step, bits in ((101, 8.0), (102, 30.0), (103, 30.0))] == [None] * 3
    said = guard.note(104, 30.0)
    assert said is not None and "train.lr=0.001 is likely too large" in said and "resumed from" not in said, said
    assert "(e.g. --set train.lr=0.0001)" in said, said
    ruined = AboveUniform(q_levels=256, lr=0.5, start_step=100)
    assert [ruined.note(step, 1e20) for step in (101, 102)] == [None, None]
    assert "the weights resumed from step 100 are already far" in ruined.note(103, 1e20)
    fresh = AboveUniform(q_levels=256, lr=0.5)  # a new training: the lr is blamed, whatever the first row
    assert "train.lr=0.5 is likely too large" in [fresh.note(step, 1e20) for step in (1, 2, 3)][-1]
