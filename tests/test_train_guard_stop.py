"""wavegen.divergence's loss guard at a stop between log rows: a training stopped by a signal (Ctrl-C, SIGTERM) judges
the steps it trained since its last log row, as a row would (they were never judged: a resume's guard starts anew)."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time

from conftest import tiny_run_config as config_for

from wavegen.train import train

GUARD = "the model is learning nothing"


def _stop_after_checkpoint(run, step: int, seconds: float = 120.0) -> threading.Thread:
    """A thread that sends this process a SIGTERM (train's StopSignals take it: finish the step, save, stop) once a
    checkpoint of step ``step`` or later is there (any: an older one may be pruned between two looks)."""
    def watch():
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            folder = run / "checkpoints"
            names = [child.name for child in folder.iterdir()] if folder.is_dir() else []
            if any(int(m.group(1)) >= step for m in map(re.compile(r"^step_(\d+)$").match, names) if m):
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_run_stopped_between_log_rows_is_judged_on_the_steps_since_the_last_row(tiny_corpus, tmp_path, caplog):
    """train.lr=1e6 (the loss ~1e24 bits from step 2 on) with a log row every 1000 steps, stopped by a SIGTERM after its
    step-8 checkpoint: it stopped at step 8 (the signal met while the batches of step 9 were built) or later,
    interrupted, without a word of the loss (the guard judged at log rows only). The stop judges those steps: one
    warning, naming the stop's step and the stretch before it (every step but the first, the initial weights'), which
    does not tell the run that is stopping to stop."""
    caplog.set_level(logging.WARNING)
    run = tmp_path / "run"
    watcher = _stop_after_checkpoint(run, 8)
    result = train(config_for(tiny_corpus, "train.lr=1e6", "train.max_steps=1000", "train.log_interval=1000",
                              "train.val_interval=1000", "train.checkpoint_interval=4"), run, progress=False)
    watcher.join()
    step = result["step"]
    assert result["status"] == "interrupted" and 8 <= step < 1000, result
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and GUARD in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(f"step {step}: the training loss has stayed above 12.0 bits/sample for {step - 1} steps "
                              "in a row (the mean since the last log row, judged at the stop: "), said
    assert "train.lr=1e+06 is likely too large: train again with a lower one" in said[0], said  # not told to stop
    assert not (run / "metrics.jsonl").is_file() or "loss_bits" not in (run / "metrics.jsonl").read_text()
