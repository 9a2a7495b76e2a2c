"""The guard: each window of each stream is checked before it is written; failing streams are redrawn.

:class:`GuardCriteria` holds what counts as a failure (fixed thresholds today; a profile of
the corpus's feature ranges could fill the same object). :func:`guard_verdict` judges one
window. :class:`Guard` rewinds the failing streams of a batch to the window's start and
redraws them with ``attempt + 1`` (fresh, still seed-determined random numbers), leaving the
other streams as they were; after ``attempts`` redraws the last one is kept ("gave up").
:class:`GuardLog` records every event for the report and logs the first few.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields
from typing import Callable

import numpy as np

logger = logging.getLogger("wavegen.render")

LOGGED_EVENTS = 50  # guard events logged per session; every one goes to the report


@dataclass(frozen=True)
class GuardCriteria:
    """What :func:`guard_verdict` calls a failed window. Field names are RenderSettings' without ``guard_``."""

    silence_db: float = -60.0  # every 50 ms frame's RMS (mean removed) below this → silence
    noise_flatness: float = 0.85  # spectral flatness above this ...
    noise_db: float = -30.0  # ... with the window's RMS above this → noise
    clip_level: float = 0.95  # |x| at or above this counts as clipped ...
    clip_fraction: float = 0.1  # ... in more than this fraction of the window → clipping

    @classmethod
    def of(cls, source) -> "GuardCriteria":
        """GuardCriteria itself, or anything with ``guard_*`` attributes (RenderSettings)."""
        if isinstance(source, cls):
            return source
        return cls(**{f.name: getattr(source, "guard_" + f.name) for f in fields(cls)})

    def as_dict(self) -> dict:
        return asdict(self)


def _db(x: float) -> float:
    return 20.0 * math.log10(max(float(x), 1e-12))


def spectral_flatness(x: np.ndarray, n_fft: int = 256) -> float | None:
    """Geometric / arithmetic mean of the Welch-averaged power spectrum of x [n] (Hann frames of
    ``n_fft``, each frame's mean removed, DC bin dropped); None for fewer than 8 frames."""
    if len(x) < 8 * n_fft:
        return None
    seg = x[: len(x) // n_fft * n_fft].reshape(-1, n_fft)
    seg = (seg - seg.mean(axis=1, keepdims=True)) * np.hanning(n_fft)
    power = (np.abs(np.fft.rfft(seg, axis=1)) ** 2).mean(axis=0)[1:] + 1e-20
    return math.exp(np.mean(np.log(power))) / np.mean(power)


def guard_verdict(audio: np.ndarray, sample_rate: int, criteria) -> str | None:
    """One window of one stream, audio [n] float in [-1, 1] → "clipping" | "silence" | "noise" | None.

    ``criteria``: a :class:`GuardCriteria` or a RenderSettings (its ``guard_*`` fields).

    - clipping: more than ``clip_fraction`` of the samples at ``|x| >= clip_level`` (a model
      stuck at the rails).
    - silence: every 50 ms frame has an RMS, mean removed, below ``silence_db`` dBFS (a model
      stuck on one code, whatever DC value that code has).
    - noise: spectral flatness (:func:`spectral_flatness`) above ``noise_flatness`` while the
      RMS is above ``noise_db`` dBFS. White noise scores 0.98-1 over a 2 s window at 16 kHz
      (0.92 at worst over 2400 samples), pink noise ~0.5, tones under 0.01. Windows shorter than
      8 frames (2048 samples) are not checked for noise: too few frames to average.
    """
    c = GuardCriteria.of(criteria)
    x = np.asarray(audio, dtype=np.float64)
    n = len(x)
    if n == 0:
        return None
    if np.mean(np.abs(x) >= c.clip_level) > c.clip_fraction:
        return "clipping"
    frame = max(1, min(n, int(round(0.05 * sample_rate))))
    frames = x[: n // frame * frame].reshape(-1, frame)
    if _db(frames.std(axis=1).max()) < c.silence_db:
        return "silence"
    flatness = spectral_flatness(x)
    if flatness is not None and flatness > c.noise_flatness and _db(x.std()) > c.noise_db:
        return "noise"
    return None


class GuardLog:
    """Every guard event ``{stream, seconds, kind, attempt[, detected]}`` in order; the first
    LOGGED_EVENTS of a session are logged too (the report holds them all)."""

    def __init__(self, sample_rate: int, events: list | None = None, report_name: str = "the report"):
        self.sample_rate, self.report_name = sample_rate, report_name
        self.events: list[dict] = list(events or [])
        self.logged = 0

    def mark(self) -> int:
        """A position in the log, to :meth:`rewind` to."""
        return len(self.events)

    def rewind(self, mark: int) -> None:
        """Forget the events after ``mark`` (a window that is generated again after an interrupt)."""
        del self.events[mark:]

    def add(self, stream: int, pos: int, kind: str, attempt: int, last: bool = False, **extra) -> None:
        at = pos / self.sample_rate
        self.events.append({"stream": stream, "seconds": round(at, 6), "kind": kind, "attempt": attempt, **extra})
        self.logged += 1
        if self.logged > LOGGED_EVENTS:
            return
        if self.logged == LOGGED_EVENTS:
            logger.warning("guard: %d events so far; the rest go to %s only", LOGGED_EVENTS, self.report_name)
        elif kind == "gave up":
            logger.warning("guard: stream %d at %.1f s still %s after %d redraws; keeping it", stream, at,
                           extra.get("detected"), attempt)
        elif not last:
            logger.info("guard: stream %d at %.1f s: %s; rewinding, redraw %d", stream, at, kind, attempt + 1)


class Guard:
    """Checks a window of a batch and redraws its failing streams in place.

    ``ids`` [B] are the global stream ids (for the events); ``to_audio(codes) -> float audio``;
    ``attempts`` is how many redraws a window gets before the last one is kept.
    """

    def __init__(self, criteria: GuardCriteria, attempts: int, sample_rate: int, ids, to_audio: Callable,
                 log: GuardLog):
        self.criteria, self.attempts, self.sample_rate = criteria, attempts, sample_rate
        self.ids = [int(i) for i in ids]
        self.to_audio, self.log = to_audio, log

    def verdicts(self, codes: np.ndarray, rows) -> dict[int, str | None]:
        """codes [len(rows), n] of the batch rows ``rows`` → row → verdict."""
        audio = self.to_audio(codes)
        return {b: guard_verdict(a, self.sample_rate, self.criteria) for b, a in zip(rows, audio)}

    def check(self, engine, pos: int, codes: np.ndarray, start, generate: Callable) -> None:
        """Judge the window ``codes [B, n]`` just generated from snapshot ``start`` at ``pos``.

        A failing stream is redrawn: the whole batch goes back to ``start``, runs the window
        again with ``generate(attempts [B]) -> codes [B, n]`` (failing streams at attempt + 1),
        and the streams not redrawn get their end-of-window state back. ``codes`` is updated in
        place; the engine ends at the window's end for every stream.
        """
        rows = list(range(len(self.ids)))
        verdicts = self.verdicts(codes, rows)
        attempts = np.zeros(len(rows), dtype=np.int64)
        bad = [b for b in rows if verdicts[b]]
        while bad:
            retry = [b for b in bad if attempts[b] < self.attempts]
            for b in bad:
                last = b not in retry
                self.log.add(self.ids[b], pos, verdicts[b], int(attempts[b]), last=last)
                if last:
                    self.log.add(self.ids[b], pos, "gave up", int(attempts[b]), detected=verdicts[b])
            if not retry:
                return
            end = engine.snapshot()
            engine.restore(start)  # the whole batch back to the window start ...
            attempts[retry] += 1
            redrawn = generate(attempts)
            engine.restore(end, streams=[b for b in rows if b not in retry])  # ... the others forward again
            codes[retry] = redrawn[retry]
            verdicts = self.verdicts(codes[retry], retry)
            bad = [b for b in retry if verdicts[b]]
