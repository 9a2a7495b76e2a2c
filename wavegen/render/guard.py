"""The guard: each window of each stream is checked before it is written; failing streams are redrawn.

:class:`GuardCriteria` holds what counts as a failure: fixed thresholds, or (when the model
carries an album profile, :mod:`wavegen.render.album`) margins around what its album does
(:func:`criteria_for`). :func:`guard_verdict` judges one window. :class:`Guard` rewinds the
failing streams of a batch to the window's start and redraws them with ``attempt + 1`` (fresh,
still seed-determined random numbers), leaving the other streams as they were; after
``attempts`` redraws the last one is kept ("gave up"). :class:`GuardLog` records every event
for the report and logs the first few.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields
from typing import Callable

import numpy as np

from wavegen.progress import counted
from wavegen.render import album
from wavegen.render.album import spectral_flatness  # noqa: F401  (re-exported: wavegen.render.spectral_flatness)

logger = logging.getLogger("wavegen.render")

LOGGED_EVENTS = 50  # guard events logged per session; every one goes to the report


@dataclass(frozen=True)
class GuardCriteria:
    """What :func:`guard_verdict` calls a failed window. The first five fields are RenderSettings'
    without ``guard_``; ``dc_offset``, ``stuck_change`` and the centroid bounds are checked only
    where set (an album profile sets them), ``album_profile`` names the profile file the values
    came from."""

    silence_db: float = -60.0  # every 50 ms frame's RMS (mean removed) below this → silence
    noise_flatness: float = 0.85  # spectral flatness above this ...
    noise_db: float = -30.0  # ... with the window's RMS above this → noise
    clip_level: float = 0.95  # |x| at or above this counts as clipped ...
    clip_fraction: float = 0.1  # ... in more than this fraction of the window → clipping
    dc_offset: float | None = None  # |window mean| above this → dc
    stuck_change: float | None = None  # spectral change (album.spectral_change) below this → stuck tone
    centroid_low: float | None = None  # spectral centroid (Hz) below this → rumble ...
    centroid_high: float | None = None  # ... above this → shrill (both with the RMS above noise_db)
    album_profile: str | None = None

    @classmethod
    def of(cls, source) -> "GuardCriteria":
        """GuardCriteria itself, or anything with ``guard_*`` attributes (RenderSettings)."""
        if isinstance(source, cls):
            return source
        return cls(**{f.name: getattr(source, "guard_" + f.name) for f in fields(cls)
                      if hasattr(source, "guard_" + f.name)})

    def as_dict(self) -> dict:
        """The criteria that are set (unset optional ones left out, so fixed criteria read as before)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def album_criteria(profile: dict, clip_level: float = 0.95, source: str = "album profile") -> GuardCriteria:
    """An album profile (wavegen.render.album) → criteria flagging windows far outside it:

    - noise: flatness above p99 ** (1 - FLATNESS_TOWARD_WHITE) (p99: the album's 99th percentile
      over sounding windows; 3/4 of the way to white noise on a log scale), in a window no
      quieter than the album's median level minus NOISE_GATE_DB;
    - silence: the loudest 50 ms frame SILENCE_MARGIN_DB under the album's 1st percentile;
    - stuck tone: spectral change under the album's 1st percentile / STUCK_DIVISOR (never for
      an album that itself holds still);
    - dc: |mean| above the album's 99th percentile + DC_MARGIN;
    - clipping: a clipped fraction above the album's 99th percentile + CLIP_MARGIN;
    - rumble / shrill: a spectral centroid below the album's 1st percentile / CENTROID_FACTOR or
      above its 99th * CENTROID_FACTOR (sounding windows; a profile written before centroids
      were measured has none, and these two stay unchecked).
    """
    f = profile["features"]

    def pick(name, key, default=None):
        values = f.get(name) or {}
        return values.get(key, default)

    flat = pick("flatness", "p99")
    change = pick("change", "p1")
    low, high = pick("centroid", "p1"), pick("centroid", "p99")
    return GuardCriteria(
        silence_db=pick("peak_frame_db", "p1") - album.SILENCE_MARGIN_DB,
        noise_flatness=min(1.0, max(flat, 1e-12)) ** (1.0 - album.FLATNESS_TOWARD_WHITE) if flat is not None else 1.0,
        noise_db=pick("rms_db", "p50") - album.NOISE_GATE_DB,
        clip_level=clip_level, clip_fraction=pick("clip_fraction", "p99") + album.CLIP_MARGIN,
        dc_offset=pick("dc", "p99") + album.DC_MARGIN,
        stuck_change=change / album.STUCK_DIVISOR if change else None,
        centroid_low=low / album.CENTROID_FACTOR if low else None,
        centroid_high=high * album.CENTROID_FACTOR if high else None, album_profile=source)


def criteria_for(settings, ref=None) -> GuardCriteria:
    """The criteria a render of the model ``ref`` (a wavegen.resolve.ModelRef) uses: its album
    profile's (:func:`album_criteria`) where it has one and ``settings.guard_album`` is on, else
    the fixed thresholds of ``settings`` (a RenderSettings or GuardCriteria)."""
    path, profile = album.find_profile(ref) if ref is not None and getattr(settings, "guard_album", True) \
        else (None, None)
    if profile is None:
        return GuardCriteria.of(settings)
    return album_criteria(profile, GuardCriteria.of(settings).clip_level, str(path))


def _db(x: float) -> float:
    return 20.0 * math.log10(max(float(x), 1e-12))


def guard_verdict(audio: np.ndarray, sample_rate: int, criteria) -> str | None:
    """One window of one stream, audio [n] float in [-1, 1] → "clipping" | "silence" | "dc" | "noise" |
    "rumble" | "shrill" | "stuck tone" | None.

    ``criteria``: a :class:`GuardCriteria` or a RenderSettings (its ``guard_*`` fields).

    - clipping: more than ``clip_fraction`` of the samples at ``|x| >= clip_level`` (a model
      stuck at the rails).
    - silence: every 50 ms frame has an RMS, mean removed, below ``silence_db`` dBFS (a model
      stuck on one code, whatever DC value that code has). A window of one sample (a render's
      last, where its length is one more than whole windows) is never silence: its RMS about its
      own mean is 0 whatever it holds.
    - dc (``dc_offset`` set): the window's mean is further from 0 than ``dc_offset``.
    - noise: spectral flatness (:func:`spectral_flatness`) above ``noise_flatness`` while the
      RMS is above ``noise_db`` dBFS. White noise scores 0.98-1 over a 2 s window at 16 kHz
      (0.92 at worst over 2400 samples), pink noise ~0.5, tones under 0.01. Windows shorter than
      8 frames (2048 samples) are not checked for noise: too few frames to average.
    - rumble / shrill (``centroid_low`` / ``centroid_high`` set): the spectral centroid
      (:func:`wavegen.render.album.spectral_centroid`) below / above them while the RMS is above
      ``noise_db`` dBFS (a model drifted into a low drone, or up into a whistle).
    - stuck tone (``stuck_change`` set): the spectrum of consecutive 50 ms frames hardly moves
      (:func:`wavegen.render.album.spectral_change` below ``stuck_change``).
    """
    c = GuardCriteria.of(criteria)
    x = np.asarray(audio, dtype=np.float64)
    n = len(x)
    if n == 0:
        return None
    if np.mean(np.abs(x) >= c.clip_level) > c.clip_fraction:
        return "clipping"
    if n > 1 and album.frame_levels(x, sample_rate).max() < c.silence_db:  # one sample has no level about its mean
        return "silence"
    if c.dc_offset is not None and abs(float(x.mean())) > c.dc_offset:
        return "dc"
    flatness = spectral_flatness(x)
    sounding = _db(x.std()) > c.noise_db
    if flatness is not None and flatness > c.noise_flatness and sounding:
        return "noise"
    if sounding and (c.centroid_low is not None or c.centroid_high is not None):
        centroid = album.spectral_centroid(x, sample_rate)
        if centroid is not None and c.centroid_low is not None and centroid < c.centroid_low:
            return "rumble"
        if centroid is not None and c.centroid_high is not None and centroid > c.centroid_high:
            return "shrill"
    if c.stuck_change is not None:
        change = album.spectral_change(x, sample_rate)
        if change is not None and change < c.stuck_change:
            return "stuck tone"
    return None


def counts_in_words(counts: dict | None) -> str:
    """A render's guard events by kind ({"silence": 16, "gave up": 5}, the report's) for people: "16 silence, 5
    windows given up", the most frequent kind first and the windows given up last; "none" where there were none."""
    counts = dict(counts or {})
    gave_up = counts.pop("gave up", 0)
    parts = [f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda item: -item[1])]
    if gave_up:
        parts.append(f"{counted(gave_up, 'window')} given up")
    return ", ".join(parts) or "none"


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
            logger.warning("guard: stream %d at %.1f s still %s after %s; keeping it", stream, at,
                           extra.get("detected"), counted(attempt, "redraw"))
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
        """codes [B, n] → the verdict of each of its rows ``rows`` (row → verdict)."""
        # a row at a time: the judging's float64 temporaries are one stream's, not the batch's
        return {b: guard_verdict(self.to_audio(codes[b]), self.sample_rate, self.criteria) for b in rows}

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
            for b in retry:  # row by row: redrawn[retry] would be a third window of codes
                codes[b] = redrawn[b]
            del redrawn  # judged from codes: no second window of codes held while judging
            verdicts = self.verdicts(codes, retry)
            bad = [b for b in retry if verdicts[b]]
