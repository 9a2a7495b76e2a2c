"""What serve's log says of the guard's events (:class:`GuardLines`), readable over days of a stream: a few lines of
each kind, then a line a minute counting the rest. /status and /metrics count every event whatever the log says."""

from __future__ import annotations

import logging
import time

from wavegen.progress import counted

logger = logging.getLogger("wavegen.serve.station")  # the station's words, whichever module says them

SAID_EACH = 5  # guard events of each kind the log says as they happen (all of them with -v)
SUMMARY_SECONDS = 60.0  # past those: one line at most this often, with the counts since the last


class GuardLines:
    """What the log says of the guard's events, readable over days of a stream the guard redraws every few
    seconds: the first SAID_EACH lines of each kind (redraws for one verdict; windows given up) as they happen,
    then a sentence saying the rest are summarised, then at most one line each SUMMARY_SECONDS with the counts
    since the last (a warning where it counts windows given up, as their own lines are). With -v (the log at
    DEBUG) every line as it happens. ``clock``: seconds, monotonic (a test passes its own). /status and
    /metrics count every event whatever the log says."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.said: dict[str, int] = {}  # lines said (or summarised from then on: SAID_EACH + 1) of each kind
        self.unsaid: dict[str, int] = {}  # of each kind since the last summary
        self.since: float | None = None  # when the last summary (or the first sentence) was said

    def redraw(self, at: float, kind: str, redraw: int) -> None:
        self._say(kind, logging.INFO, "guard: at %.1f s: %s; redraw %d", at, kind, redraw)

    def gave_up(self, at: float, detected: str, redraws: int) -> None:
        self._say("gave up", logging.WARNING, "guard: at %.1f s still %s after %s; playing it", at,
                  detected, counted(redraws, "redraw"))

    def _say(self, kind: str, level: int, *line) -> None:
        said = self.said.get(kind, 0)
        if said < SAID_EACH or logger.isEnabledFor(logging.DEBUG):
            self.said[kind] = said + 1
            logger.log(level, *line)
            return
        if said == SAID_EACH:
            self.said[kind] = said + 1
            what = "windows given up" if kind == "gave up" else f"redraws for {kind}"
            logger.log(level, "guard: further %s are summarised, in one line every %.0f s at most; /status and "
                       "/metrics count every one (-v logs each)", what, SUMMARY_SECONDS)
            self.since = self.clock() if self.since is None else self.since
        self.unsaid[kind] = self.unsaid.get(kind, 0) + 1
        self.tick()

    def tick(self) -> None:
        """The summary, where one is due (called after each window too: a last event is said within a minute)."""
        if self.unsaid and self.clock() - self.since >= SUMMARY_SECONDS:
            self.flush()

    def flush(self) -> None:
        """The counts not yet said, whenever it was said last (the stream stops)."""
        if not self.unsaid:
            return
        now, unsaid = self.clock(), self.unsaid
        gave_up = unsaid.pop("gave up", 0)
        most_first = sorted(unsaid.items(), key=lambda item: -item[1])  # "12 redraws for rumble, 3 for silence"
        parts = [f"{counted(n, 'redraw')} for {kind}" if not i else f"{n} for {kind}"
                 for i, (kind, n) in enumerate(most_first)]
        if gave_up:
            parts.append(f"{counted(gave_up, 'window')} given up (played as drawn last)")
        logger.log(logging.WARNING if gave_up else logging.INFO, "guard: in the last %.0f s: %s", now - self.since,
                   ", ".join(parts))
        self.unsaid, self.since = {}, now
