"""The run's logs for people: each step once in TensorBoard after a resume."""

import pytest
from conftest import tiny_run_config as config_for

import wavegen.train
from wavegen.train import read_metrics, train


class Crash(Exception):
    """Stands for a kill -9: the process ends after logging, before the step's checkpoint."""


def tensorboard_steps(run, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run / "tb"))
    board.Reload()
    return [event.step for event in board.Scalars(tag)]


def test_a_resumed_run_shows_each_step_once_in_tensorboard(tiny_corpus, tmp_path, monkeypatch):
    """Steps logged after the last checkpoint were logged again on resume, and TensorBoard showed
    both (..., 4, 5, 5, 6) where metrics.jsonl, truncated to the checkpoint, showed each once."""
    run = tmp_path / "run"
    settings = ["train.checkpoint_interval=2", "train.val_interval=5", "train.log_interval=1"]
    real = wavegen.train._validate

    def crash_at_5(state):
        if state.step == 5:
            raise Crash()
        return real(state)

    with monkeypatch.context() as patch:
        patch.setattr(wavegen.train, "_validate", crash_at_5)
        with pytest.raises(Crash):
            train(config_for(tiny_corpus, "train.max_steps=8", *settings), run, progress=False)
    assert tensorboard_steps(run, "train/loss_bits") == [1, 2, 3, 4, 5]
    train(config_for(tiny_corpus, "train.max_steps=8", *settings), run, progress=False)
    assert [r["step"] for r in read_metrics(run) if "loss_bits" in r] == list(range(1, 9))
    assert tensorboard_steps(run, "train/loss_bits") == list(range(1, 9))
    assert tensorboard_steps(run, "val/nll_bits") == [5, 8]
