"""wavegen.progress: a bar on a terminal, plain lines (no carriage returns) in a file or pipe."""

from __future__ import annotations

import io
import logging
import os
import pty

import pytest

from wavegen.progress import PlainProgress, counted, move_to, number_said, progress_bar, restart_clock


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


def test_the_last_line_is_not_said_twice_at_close(caplog):
    """An update on a log interval said the last line; close said it again (eval's "eval test: 5/5 s (100%), 0.238
    s/s, 0:20 elapsed" twice). Close says it only if something moved since: the count, or the postfix."""
    caplog.set_level(logging.INFO, logger="wavegen")
    bar = PlainProgress(total=5, desc="eval test", unit="s", interval_seconds=0.0)
    for _ in range(5):
        bar.update(1)
    bar.close()
    lines = [r.getMessage().split(",")[0] for r in caplog.records]
    assert lines == [f"eval test: {n}/5 s ({20 * n}%)" for n in range(1, 6)], lines
    caplog.clear()
    bar = PlainProgress(total=5, desc="train", unit="step", interval_seconds=0.0)
    bar.update(5)
    bar.set_postfix(loss_bits="4.20")  # set after the line was said: close says the line with it
    bar.close()
    assert [r.getMessage() for r in caplog.records][-1].endswith("loss_bits=4.20") and len(caplog.records) == 2


def test_a_terminal_gets_tqdm():
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        bar = progress_bar(total=3, desc="x", stream=tty)
        assert type(bar).__name__ == "tqdm"
        bar.update(3)
        bar.close()
    os.close(master)


def test_after_a_slow_first_update_the_rate_counts_from_the_restart_on_both_kinds(caplog):
    """A first update that took long (a warm-up) would set the rate and ETA for many updates after it
    (tqdm's moving average): restart_clock counts them from then, on a terminal and in a log alike."""
    import time

    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        bar = progress_bar(total=100.0, desc="rendered", unit="s", stream=tty)
        bar.start_t -= 50  # the first 0.1 s took 50 s ...
        bar.update(0.1)
        assert "<" in str(bar) and "?" not in str(bar).split("<")[1]  # ... and the ETA says hours
        restart_clock(bar)
        assert str(bar).split("<")[1].startswith("?")  # nothing measured yet
        time.sleep(0.2)
        bar.update(20.0)  # 20 s of audio in 0.2 s: 99.9 s to go at that rate is about a second
        remaining = str(bar).split("<")[1].split("]")[0].split(",")[0]
        assert remaining in ("00:00", "00:01", "00:02"), str(bar)
        move_to(bar, 10.0)  # a rewind: back to what is kept, the rate counts it too
        assert bar.n == 10.0 and str(bar).startswith("rendered:  10%|"), str(bar)
        bar.close()
    os.close(master)
    caplog.set_level(logging.INFO, logger="wavegen")
    plain = PlainProgress(total=100.0, desc="rendered", unit="s", interval_seconds=3600)
    plain._t0 -= 50
    plain.update(0.1)
    restart_clock(plain)
    assert "ETA" not in plain.line()
    plain.update(20.0)
    move_to(plain, 10.0)
    line = plain.line(now=plain._t0 + 1.0)
    assert line.startswith("rendered: 10/100 s (10%), 9.9 s/s, 0:01 elapsed, ETA 0:09"), line
    move_to(plain, 0.0)  # below where the clock restarted: no progress, not a negative rate
    assert plain.line(now=plain._t0 + 1.0).startswith("rendered: 0/100 s (0%), 0 s/s, 0:01 elapsed"), plain.line()


def test_a_long_renders_line_says_plain_numbers():
    """A 300-hour render (1080000 s) and thousands of streams: %g said "1.23457e+06/1.08e+06 s" and "2e+04 s/s" in
    the line of a log; now the numbers as a person writes them, as many significant digits at least."""
    plain = PlainProgress(total=1080000.0, desc="rendered", unit="s", initial=1000000.0, interval_seconds=3600)
    plain.update(23456.75)
    line = plain.line(now=plain._t0 + 1.0)
    assert line.startswith("rendered: 1023457/1080000 s (95%), 23457 s/s, 0:01 elapsed, ETA 0:02"), line
    plain = PlainProgress(total=12.0, desc="eval test", unit="s", interval_seconds=3600)
    plain.update(2.5625)
    assert plain.line(now=plain._t0 + 100.0).startswith("eval test: 2.5625/12 s (21%), 0.0256 s/s"), plain.line()


def test_an_absurd_number_says_itself_in_a_short_line():
    """train.max_steps at its most (2**63 - 1): its progress line said the total in 19 digits and its ETA as a clock of
    16 digits of hours; 1e300 seconds, 301 digits. A count or rate from 1e15 on or under 1e-6 in size is now in
    exponent form, an ETA of 100000 hours or more in hours."""
    plain = PlainProgress(total=2**63 - 1, desc="train", unit="step", interval_seconds=3600)
    plain.update(5)
    line = plain.line(now=plain._t0 + 1.0)
    assert line == "train: 5/9.22337e+18 step (0%), 5 step/s, 0:01 elapsed, ETA 512409557603043 h", line
    plain = PlainProgress(total=1e300, desc="rendered", unit="s", interval_seconds=3600)
    plain.update(1.0)
    line = plain.line(now=plain._t0 + 1.0)
    assert line == "rendered: 1/1e+300 s (0%), 1 s/s, 0:01 elapsed, ETA 2.78e+296 h", line
    plain = PlainProgress(total=12.0, desc="eval test", unit="s", interval_seconds=3600)
    plain.update(1e-300)
    line = plain.line(now=plain._t0 + 1.0)
    assert line == "eval test: 1e-300/12 s (0%), 1e-300 s/s, 0:01 elapsed, ETA 3.33e+297 h", line


@pytest.mark.parametrize("x, said", [
    (1e300, "1e+300"), (-1e300, "-1e+300"), (1e-300, "1e-300"), (-1.234567e-7, "-1.23457e-07"), (10**30, "1e+30"),
    (1e15, "1e+15"), (999999999999999.0, "999999999999999"), (1e-6, "0.000001"), (-2.5, "-2.5"),
    (-1234567.891, "-1234568"), (0.0, "0"), (float("inf"), "inf"), (float("-inf"), "-inf"), (float("nan"), "nan")])
def test_a_number_is_plain_between_a_millionth_and_1e15_and_exponent_form_beyond(x, said):
    assert number_said(x) == said


@pytest.mark.parametrize("args, said", [
    ((1, "sample"), "1 sample"), ((2, "sample"), "2 samples"), ((0, "sample"), "0 samples"),
    ((2, "process", "processes"), "2 processes"), ((16000, "sample"), "16000 samples"),
    ((16000, "sample", None, True), "16,000 samples"), ((1, "frame", None, True), "1 frame")])
def test_a_count_agrees_with_its_noun_and_groups_its_thousands_where_asked(args, said):
    assert counted(*args) == said
