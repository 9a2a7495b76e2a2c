"""Progress for long work: a tqdm bar on a terminal, a plain line every few seconds elsewhere.

A bar written to a file or a pipe (a log, ``| tee``, a job scheduler) fills it with carriage
returns; there :func:`progress_bar` logs one line every ``interval_seconds`` instead::

    with progress_bar(total=300, desc="train", unit="step") as bar:
        bar.update(1); bar.set_postfix(loss_bits="4.21")

Both kinds take the tqdm calls wavegen uses: ``update``, ``set_postfix``, ``set_postfix_str``,
``refresh``, ``close``, and ``n`` / ``total``; and two of this module's, for work that is not a
steady count: :func:`move_to` (back to what is kept after a rewind) and :func:`restart_clock` (the
rate and ETA counted from now, after a warm-up whose time would make them absurd). Their rate is
the average since the start (or the restart), not tqdm's moving average, which a slow first
update keeps absurd for many updates.
"""

from __future__ import annotations

import logging
import math
import sys
import time

logger = logging.getLogger("wavegen")

PLAIN_INTERVAL_SECONDS = 10.0


def progress_bar(total: float | None = None, desc: str = "", unit: str = "it", initial: float = 0,
                 stream=None, interval_seconds: float = PLAIN_INTERVAL_SECONDS, **tqdm_kwargs):
    """A tqdm bar when ``stream`` (default stderr) is a terminal, else a :class:`PlainProgress`."""
    stream = sys.stderr if stream is None else stream
    if getattr(stream, "isatty", lambda: False)():
        from tqdm import tqdm

        tqdm_kwargs.setdefault("smoothing", 0)  # the average since the start: see the module's doc
        return tqdm(total=total, desc=desc or None, unit=unit, initial=initial, file=stream,
                    dynamic_ncols=True, **tqdm_kwargs)
    return PlainProgress(total, desc, unit, initial, interval_seconds)


class PlainProgress:
    """Logs ``desc: n/total unit (p%), rate, elapsed, ETA [postfix]`` at most every ``interval_seconds``."""

    def __init__(self, total=None, desc="", unit="it", initial=0, interval_seconds=PLAIN_INTERVAL_SECONDS):
        self.total, self.desc, self.unit, self.n = total, desc or "progress", unit, initial
        self.interval = interval_seconds
        self.postfix = ""
        self._start_n = initial
        self._t0 = self._last = time.monotonic()
        self._said = None  # (n, postfix) of the last line logged

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._say(now)

    def _say(self, now: float | None = None) -> None:
        self._said = (self.n, self.postfix)
        logger.info(self.line(now))

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh=True) -> None:
        self.postfix = str(s)

    def refresh(self) -> None:
        """tqdm redraws its bar; a plain line waits for the next update."""

    def restart_clock(self) -> None:
        self._t0 = time.monotonic()
        self._start_n = self.n

    def line(self, now: float | None = None) -> str:
        elapsed = (time.monotonic() if now is None else now) - self._t0
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {number_said(self.n)}" + (f"/{number_said(self.total)}" if self.total else "")
                 + f" {self.unit}"]
        if self.total:
            parts[0] += f" ({100.0 * self.n / self.total:.0f}%)"
        parts.append(f"{number_said(rate, 3)} {self.unit}/s, {_clock(elapsed)} elapsed")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {_clock((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def close(self) -> None:
        """The last line, unless nothing moved since the one logged last (an update on an interval had said it:
        eval's "5/5 s (100%)" was logged twice)."""
        if self.n != self._start_n and (self.n, self.postfix) != self._said:
            self._say()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def move_to(bar, n: float) -> None:
    """Set ``bar`` (either kind) at ``n`` (back, after work was undone), shown at once on a terminal."""
    bar.n = n
    if isinstance(bar, PlainProgress):
        bar._start_n = min(bar._start_n, n)  # its rate is (n - start) / elapsed: never below zero
    else:
        bar.last_print_n = min(bar.last_print_n, n)  # tqdm prints only after this much more progress
        bar.initial = min(bar.initial, n)  # its rate is (n - initial) / elapsed
    bar.refresh()


def restart_clock(bar) -> None:
    """Count ``bar``'s (either kind) rate and ETA from now and from where it is: after a warm-up (a
    first call that compiles, fills caches) whose time is no measure of the rest. tqdm's elapsed
    time restarts with them."""
    if isinstance(bar, PlainProgress):
        bar.restart_clock()
        return
    bar.start_t = bar.last_print_t = bar._time()
    bar.initial = bar.last_print_n = bar.n
    bar.refresh()


def plain_seconds(seconds: float, decimals: int = 6) -> str:
    """A number (a render's length, a count of seconds) as a person types it: "0.25", "1080000" (%g wrote
    "1.08e+06" from a million on: a --hours 300 render's), ``decimals`` at most."""
    text = f"{seconds:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


# a number of a line outside these sizes is said in exponent form (1e+300 was its 301 digits, 1e-300 its 300 zeros)
PLAIN_LARGEST, PLAIN_SMALLEST = 1e15, 1e-6
CLOCK_MOST_HOURS = 100_000  # a time longer is said in hours (an absurd total's ETA was a clock of hundreds of digits)


def number_said(x: float, significant: int = 6) -> str:
    """A count or a rate for a line: a plain number (:func:`plain_seconds`) of ``significant`` digits (%g's, without
    its exponent: a 300-hour render's "1.23457e+06/1080000 s", "2e+04 s/s" with thousands of streams); %g's own
    (``significant`` digits) at or above PLAIN_LARGEST or below PLAIN_SMALLEST in size, and for inf and nan."""
    if not math.isfinite(x) or (x and not PLAIN_SMALLEST <= abs(x) < PLAIN_LARGEST):
        return f"{x:.{significant}g}"
    if not isinstance(x, float) or x.is_integer():
        return f"{int(x)}"
    return plain_seconds(x, max(0, significant - 1 - math.floor(math.log10(abs(x)))))


def counted(n: int, word: str, words: str | None = None, grouped: bool = False) -> str:
    """A count and its noun, agreeing: "1 sample", "2 samples", "1 logical CPU" (``words``: a plural other than
    ``word`` + "s"); ``grouped``: the count's thousands separated ("16,000 samples"). Lines of counts said "1 samples
    per stream" and "1 run(s)"."""
    return (f"{n:,}" if grouped else f"{n}") + " " + (word if n == 1 else words or word + "s")


def _clock(seconds: float) -> str:
    """Elapsed time or an ETA: "m:ss", "h:mm:ss"; in hours (:func:`number_said`) from CLOCK_MOST_HOURS on."""
    if seconds >= CLOCK_MOST_HOURS * 3600:
        return f"{number_said(seconds / 3600, 3)} h"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"
