"""wavegen.progress: a bar on a terminal, plain lines (no carriage returns) in a file or pipe."""

from __future__ import annotations

import io
import logging
import os
import pty

from wavegen.progress import PlainProgress, progress_bar


def test_plain_lines_when_not_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="wavegen")
    bar = progress_bar(total=10, desc="train", unit="step", stream=io.StringIO(), interval_seconds=0.0)
    assert isinstance(bar, PlainProgress)
    for _ in range(4):
        bar.update(1)
    bar.set_postfix(loss_bits="4.20")
    bar.update(1)
    bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("train: 1/10 step (10%)")
    assert "train: 5/10 step (50%)" in lines[4] and "loss_bits=4.20" in lines[4] and "ETA" in lines[4]
    assert not any("\r" in line for line in lines)


def test_plain_lines_are_rate_limited(caplog):
    caplog.set_level(logging.INFO, logger="wavegen")
    bar = PlainProgress(total=1000, desc="render", unit="s", interval_seconds=3600)
    for _ in range(1000):
        bar.update(1)
    assert caplog.records == []  # nothing within the interval ...
    bar.close()
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["render: 1000/1000 s (100%)"]  # ... one at the end


def test_a_terminal_gets_tqdm():
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        bar = progress_bar(total=3, desc="x", stream=tty)
        assert type(bar).__name__ == "tqdm"
        bar.update(3)
        bar.close()
    os.close(master)
