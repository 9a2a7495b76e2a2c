"""wavegen serve: what the log says of the guard's events (guard_lines.GuardLines).

A stream the guard redraws window after window (a briefly trained model) made a line per event, about
five every 2 s: days of them buried whatever else the server said. The first few of each kind are said
as they happen, then one line a minute at most with the counts since the last; -v says every one. The
policy is driven here by a clock of the test's own, then a real station on a model stuck in silence.
"""

from __future__ import annotations

import logging
import re
import threading
import time

import pytest

from test_serve import silent_model
from wavegen.serve.guard_lines import SAID_EACH, SUMMARY_SECONDS, GuardLines

LOGGER = "wavegen.serve.station"
SUMMARY = re.compile(r"guard: in the last (\d+) s: (.*)")


class Clock:
    """Seconds the test moves on by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def said_counts(messages: list[str]) -> tuple[dict[str, int], int, list[int]]:
    """Guard lines → (redraws said of each verdict, one by one or in summaries; windows given up, likewise;
    each summary's "in the last N s")."""
    redraws: dict[str, int] = {}
    gave_up, spans = 0, []
    for line in messages:
        if m := re.fullmatch(r"guard: at [\d.]+ s: (\w+); redraw \d+", line):
            redraws[m[1]] = redraws.get(m[1], 0) + 1
        elif re.fullmatch(r"guard: at [\d.]+ s still \w+ after (?:1 redraw|\d+ redraws); playing it", line):
            gave_up += 1
        elif m := SUMMARY.fullmatch(line):
            spans.append(int(m[1]))
            for n, kind in re.findall(r"(\d+) (?:redraws? )?for (\w+)", m[2]):
                redraws[kind] = redraws.get(kind, 0) + int(n)
            if g := re.search(r"(\d+) windows? given up", m[2]):
                gave_up += int(g[1])
    return redraws, gave_up, spans


def guard_messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.getMessage().startswith("guard:")]


def a_day_of_windows(lines: GuardLines, clock: Clock, minutes: int) -> tuple[dict[str, int], int]:
    """A window every 2 s, each redrawn 4 times for rumble (every tenth for silence) and given up on, as a
    briefly trained model does → (redraws fed of each verdict, windows given up)."""
    fed: dict[str, int] = {}
    for w in range(minutes * 30):
        kind = "silence" if w % 10 == 3 else "rumble"
        for redraw in range(1, 5):
            lines.redraw(2.0 * w, kind, redraw)
            fed[kind] = fed.get(kind, 0) + 1
        lines.gave_up(2.0 * w, kind, 4)
        clock.now += 2.0
        lines.tick()
    return fed, minutes * 30


def test_the_first_events_of_each_kind_are_said_then_a_line_a_minute_counts_the_rest(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = Clock()
    lines = GuardLines(clock)
    fed, windows = a_day_of_windows(lines, clock, minutes=30)
    lines.flush()  # the stream stops
    said = guard_messages(caplog)
    # 30 minutes: 1,800 events were 1,800 lines; now a few as they happen, a sentence per kind, ~30 summaries
    assert len(said) <= 3 * SAID_EACH + 3 + 30 * 60 / SUMMARY_SECONDS + 1, said
    assert said[:4] == [f"guard: at 0.0 s: rumble; redraw {k}" for k in (1, 2, 3, 4)]
    assert said[4] == "guard: at 0.0 s still rumble after 4 redraws; playing it"
    further = [line for line in said if line.startswith("guard: further")]
    assert further == [  # once for each kind, when it is first held back, naming where every count is
        "guard: further redraws for rumble are summarised, in one line every 60 s at most; /status and /metrics "
        "count every one (-v logs each)",
        "guard: further windows given up are summarised, in one line every 60 s at most; /status and /metrics "
        "count every one (-v logs each)",
        "guard: further redraws for silence are summarised, in one line every 60 s at most; /status and /metrics "
        "count every one (-v logs each)"]
    assert sum(line.startswith("guard: at") and "silence; redraw" in line for line in said) == SAID_EACH
    # nothing lost: the lines said one by one and the summaries account for every event
    redraws, gave_up, spans = said_counts(said)
    assert redraws == fed and gave_up == windows
    assert all(span >= SUMMARY_SECONDS for span in spans[:-1]) and len(spans) >= 29  # one a minute, no more
    summaries = [r for r in caplog.records if SUMMARY.fullmatch(r.getMessage())]
    assert all(r.levelno == logging.WARNING for r in summaries)  # they count windows given up, a warning each
    assert summaries[1].getMessage() == \
        "guard: in the last 60 s: 108 redraws for rumble, 12 for silence, 30 windows given up (played as drawn last)"


def test_a_summary_of_redraws_alone_is_info_and_the_last_events_are_said_within_a_minute(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = Clock()
    lines = GuardLines(clock)
    for k in range(SAID_EACH + 2):  # two past those said one by one
        lines.redraw(k, "clipping", 1)
    clock.now += SUMMARY_SECONDS - 1
    lines.tick()
    assert not any(SUMMARY.fullmatch(line) for line in guard_messages(caplog))  # not yet: under a minute
    clock.now += 1
    lines.tick()  # after a window without events: the two held back are said now
    summaries = [r for r in caplog.records if SUMMARY.fullmatch(r.getMessage())]
    assert [r.getMessage() for r in summaries] == ["guard: in the last 60 s: 2 redraws for clipping"]
    assert summaries[0].levelno == logging.INFO  # as the redraws' own lines
    lines.flush()
    assert len(guard_messages(caplog)) == SAID_EACH + 2  # nothing more to say: no empty summary


def test_verbose_says_every_event_as_it_happens(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)  # -v
    clock = Clock()
    lines = GuardLines(clock)
    fed, windows = a_day_of_windows(lines, clock, minutes=3)
    lines.flush()
    said = guard_messages(caplog)
    assert len(said) == sum(fed.values()) + windows  # a line each, nothing summarised
    assert not any(line.startswith("guard: further") or SUMMARY.fullmatch(line) for line in said)


@pytest.fixture(scope="module")
def silent(tmp_path_factory):
    return silent_model(tmp_path_factory.mktemp("guard_log") / "silent")


@pytest.mark.parametrize("verbose", [False, True])
def test_a_station_stuck_in_silence_says_its_first_events_then_counts_the_rest(silent, caplog, verbose):
    """A real station on a model the guard rejects every window: the log says a few events and, as it stops,
    the count of the rest (under a minute here); the counts add up to those /status gives. -v: every one."""
    from wavegen.serve import ServeSettings, Station

    caplog.set_level(logging.DEBUG if verbose else logging.INFO, logger=LOGGER)
    station = Station(str(silent), ServeSettings(guard_seconds=0.25, guard_attempts=2, allow_slow=True))
    assert station.open()
    published, done = [], threading.Event()
    station.start(lambda pages: published.append(pages) if pages is not None else done.set(), lambda: 1e9)
    deadline = time.monotonic() + 60
    while station.event_counts.get("gave up", 0) < 30 and station.running and time.monotonic() < deadline:
        time.sleep(0.05)
    station.stop()
    assert done.is_set() and station.error is None and station.event_counts["gave up"] >= 30
    said = guard_messages(caplog)
    redraws, gave_up, spans = said_counts(said)
    assert redraws == {"silence": station.redraws} and gave_up == station.event_counts["gave up"]
    # every window: two redraws, then given up; the stop may come in a window's redraws
    assert 2 * gave_up <= station.redraws <= 2 * gave_up + 2
    if verbose:
        assert len(said) == station.redraws + gave_up and not spans
    else:
        assert said[0] == "guard: at 0.0 s: silence; redraw 1" and said[2] == \
            "guard: at 0.0 s still silence after 2 redraws; playing it"
        # a line a minute at most past those said one by one: this ran for seconds, so one at the stop (more on a
        # machine so busy that it took minutes, each of them a minute apart)
        assert len(said) == 2 * SAID_EACH + 2 + len(spans) and all(s >= SUMMARY_SECONDS for s in spans[:-1]), said
        assert len(spans) >= 1


@pytest.mark.slow
def test_a_stop_in_a_window_the_guard_redraws_does_not_count_its_events_twice_at_a_restart(silent, tmp_path):
    """Stopped (as by SIGTERM) in the redraws of a window: the snapshot resumes at that window's start, so the
    restarted server draws and guards it again. Its events were recorded at the stop as well, and counted twice
    in /status, /metrics and the snapshot (two "silence, attempt 0" at the same second)."""
    from collections import Counter

    from test_serve import serve_here

    settings = {"archive": str(tmp_path / "archive"), "guard_seconds": 4.0, "guard_attempts": 4}

    def in_redraws(status) -> bool:  # some of a window's five silences seen, not yet all
        counts = status["guard"]["counts"]
        return 0 < counts.get("silence", 0) - 5 * counts.get("gave up", 0) < 4

    _, stopped = serve_here(silent, in_redraws, timeout=120, **settings)
    assert in_redraws(stopped)
    done = stopped["guard"]["counts"].get("gave up", 0)
    _, later = serve_here(silent, lambda s: s["guard"]["counts"].get("gave up", 0) > done, timeout=120, **settings)
    events = later["guard"]["events"]
    drawn = Counter((e["seconds"], e["kind"], e["attempt"]) for e in events)
    assert max(drawn.values()) == 1, [key for key, n in drawn.items() if n > 1]
    assert Counter(e["kind"] for e in events) == later["guard"]["counts"]  # all of them listed (under 200)


def test_a_summary_of_one_redraw_and_one_window_given_up_counts_them_in_the_singular(caplog):
    """The summary's counts are said with progress.counted (they were written by hand): one of each is
    "1 redraw", "1 window"."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = Clock()
    lines = GuardLines(clock)
    for k in range(SAID_EACH + 1):  # one past those said one by one, of each kind
        lines.redraw(k, "clipping", 1)
        lines.gave_up(k, "clipping", 2)
    clock.now += 5
    lines.flush()
    assert [line for line in guard_messages(caplog) if SUMMARY.fullmatch(line)] == [
        "guard: in the last 5 s: 1 redraw for clipping, 1 window given up (played as drawn last)"]
