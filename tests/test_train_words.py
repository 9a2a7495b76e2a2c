"""Training's log lines count processes with their noun agreeing: '1 process on cpu', 'written by 2 processes'
(they said '1 process(es)')."""

import json
import logging

from conftest import tiny_run_config as config_for

from wavegen.train import train


def test_the_processes_are_counted_at_the_start_and_on_a_resume_from_another_count(tiny_corpus, tmp_path, caplog):
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="wavegen"):
        train(config_for(tiny_corpus, "train.max_steps=1", "train.checkpoint_interval=1"), run, progress=False)
    (started,) = [m for m in caplog.messages if m.startswith("model samplernn-tiny")]
    assert "parameters; 1 process on cpu; batch 4 x 64 samples" in started, started
    # the checkpoint as two processes would have written it (the ranks' count is all the line reads of it)
    state_file = run / "checkpoints" / "step_1" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    assert state["processes"] == 1
    state_file.write_text(json.dumps({**state, "processes": 2}))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wavegen"):
        train(config_for(tiny_corpus, "train.max_steps=2", "train.checkpoint_interval=1"), run, progress=False)
    assert f"resuming {run} from step 1 (checkpoint written by 2 processes, now 1)" in caplog.messages, caplog.text


def test_a_batch_that_does_not_split_is_refused_as_such_before_the_memory_is_weighed(tiny_corpus, tmp_path,
                                                                                      monkeypatch):
    """A batch smaller than its accumulation steps on a machine short of memory was refused for memory, advised
    to "lower train.batch_size" (which makes it worse): the split is checked first, and its own refusal names it."""
    import pytest

    from wavegen import memory
    from wavegen.config import ConfigError

    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": (1, "free here"))
    with pytest.raises(ConfigError) as caught:
        train(config_for(tiny_corpus, "train.max_steps=1", "train.batch_size=1", "train.grad_accum=2"),
              tmp_path / "run", progress=False)
    assert str(caught.value) == ("train.batch_size=1 does not split into 1 process x 2 accumulation steps "
                                 "(train.grad_accum=2); use a multiple of 2")
