"""The station: one engine rendering the broadcast ahead of real time, guarded, archived, encoded.

:class:`Station` runs in its own thread. It renders the stream a guard window at a time
(``guard_seconds``), checks the window with the render guard (:func:`wavegen.render.guard_verdict`)
and redraws a failing one with fresh, still seed-determined uniforms, as ``wavegen render``
does; then it writes the window to the archive, encodes it once (:class:`OggOpusEncoder`) and
hands the pages to the broadcast. It stays at most ``buffer_seconds`` ahead of the live
edge, so memory and latency stay bounded however long it plays.

Uniforms come from :func:`wavegen.generate.uniforms` keyed by (seed, stream 0, position,
attempt), so the broadcast is the same every time for the same arguments (and label switches,
:mod:`wavegen.serve.control`, taken between two windows), and a restart from an archive's
snapshot continues it byte for byte. With ``--pitch-sync RHO`` they pass through render's
pitch-synchronous copula (:mod:`wavegen.serve.pitch`), whose state is kept and rewound with the engine's.
With ``--postfilter G`` each accepted window's audio passes through render's pitch postfilter
(:mod:`wavegen.serve.postfilter`) before it is archived and encoded; its state is kept with the engine's too.

The engine is called in chunks of at most ``CHUNK_WALL_SECONDS`` of work: the numba engines
hold the GIL while they run, and the web server's thread must not wait long for it.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from wavegen.audio import dequantize
from wavegen.generate import make_engine, temperatures, uniforms
from wavegen.render import guard_verdict, parse_label
from wavegen.render.guard import criteria_for
from wavegen.render.model_change import TENSORS_KEY
from wavegen.render.shard import kept_entries
from wavegen.serve.archive import MODEL_FOLDER_KEY, Archive, ServeError
from wavegen.serve.archive_folder import check_archive_folder
from wavegen.serve.archive_model import model_folder, played_model, weights_finder
from wavegen.serve.archive_resume import engine_fit
from wavegen.serve.control import LabelState
from wavegen.serve.encoder import OggOpusEncoder, Page
from wavegen.serve.guard_lines import GuardLines
from wavegen.serve.pitch import pitch_sync, pitched_codes
from wavegen.serve.postfilter import filtered_pcm, postfilter
from wavegen.serve.settings import ServeSettings

logger = logging.getLogger(__name__)

MIN_REALTIME = 1.2  # a stream needs this x real time: the guard's redraws and the server take the rest
MEASURE_TRIES = 5  # engine timings at start; the best counts (see Station.measure)
MEASURE_TRY_SECONDS = 0.25  # of engine work each
BUSY_SPREAD = 1.5  # timings this far apart (worst = best / this): the machine was busy meanwhile
MIN_CPU_SHARE = 0.1  # of a CPU: a timing that had less says too little of the engine's own speed
CHUNK_WALL_SECONDS = 0.01  # most engine work between two chances for the web server to run (numba holds the GIL)
MIN_CHUNK = 32  # samples
RECENT_WINDOWS = 10  # windows the realtime factor is measured over
KEPT_EVENTS = 200  # guard events kept for /status and the snapshot (counts are kept for all)
INIT_SEED = 0  # random weights (a preset or config file) are drawn with this torch seed


class _Stopped(Exception):
    pass


def speed(factor: float) -> str:
    """x real time for people: "1.83x"; two significant digits below 0.1 ("0.0042x", not "0.00x")."""
    return f"{factor:.2f}x" if factor >= 0.1 else f"{factor:.2g}x"


def load_text() -> str:
    """How busy this machine is, in words: its load average, where the system says."""
    try:
        return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    except (AttributeError, OSError):  # Windows
        return "other work on this machine"


def _load_model(ref):
    """The model of a ModelRef; random weights (a preset or config file) drawn from INIT_SEED, so a
    restarted server plays the same model."""
    import torch

    if ref.trained:
        return ref.load("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        return ref.load("cpu")


def _blend(label: str, labels: list[str]) -> tuple[float, ...] | None:
    """A --label as the engine gets it (the same float32 weights: the same audio); ValueError where this
    model does not read it."""
    weights = parse_label(label, labels)
    return None if weights is None else tuple(weights.tolist())


def _model_digest(ref) -> str:
    if ref.trained:
        return ref.weights_sha256()  # hashed once, with the check of the folder's record
    text = json.dumps({"config": ref.config, "init_seed": INIT_SEED}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class Station:
    """Model + settings → the broadcast's audio. ``open()`` (measure, restore), then ``start(...)``."""

    def __init__(self, target: str, settings: ServeSettings, checkpoint: str | None = None):
        settings.validate()
        self.settings = settings
        self.ref = played_model(target, checkpoint, settings.archive)
        if settings.archive:  # a folder that cannot be made or written: found before the model loads
            check_archive_folder(settings.archive)
        self.sample_rate = self.ref.sample_rate
        self.engine = make_engine(_load_model(self.ref), 1, settings.backend, settings.device)
        self.q_levels, self.quantization = self.engine.q_levels, self.engine.spec["quantization"]
        try:
            self.label_weights = parse_label(settings.label, list(self.engine.labels))
        except ValueError as err:
            raise ServeError(str(err)) from None
        if settings.control_token is not None and not self.engine.labels:
            raise ServeError(f"--control-token: {self.ref.source} is not conditioned on labels, so there is no label "
                             "to switch; start it without --control-token")
        self._wake = threading.Event()  # set by a stop or a label switch asked for
        self.label_state = LabelState(self.engine.labels, settings.label, self.label_weights, self._wake.set)
        self.temperature = temperatures(settings.temperature, 1)
        # --pitch-sync: the draws' state (None: off), beside the engine's in every state the station keeps
        self.pitch = pitch_sync(settings.pitch_sync,
                                lambda codes: dequantize(codes, self.q_levels, self.quantization))
        self.post = postfilter(settings.postfilter)  # --postfilter: the handed-on audio's filter (None: off)
        self.guard_settings = settings.render_settings()
        # the model's album profile (album.json beside it) where it has one, as a render does
        self.guard_criteria = criteria_for(self.guard_settings, self.ref)
        self.params = {
            "model": self.ref.source, "model_sha256": _model_digest(self.ref),
            # the tensors alone: the same for best/ and the checkpoint it came from (None: random weights)
            TENSORS_KEY: self.ref.weights_tensors_sha256(), MODEL_FOLDER_KEY: model_folder(self.ref),
            "sample_rate": self.sample_rate,
            "seed": settings.seed, "temperature": float(self.temperature[0]), "label": settings.label,
            "backend": self.engine.backend, "device": settings.device, "pitch_sync": float(settings.pitch_sync),
            "postfilter": float(settings.postfilter),
            "guard": {"seconds": settings.guard_seconds, "attempts": settings.guard_attempts,
                      **self.guard_criteria.as_dict()} if settings.guard else False,
        }
        self.archive = None
        window_seconds = settings.guard_seconds if settings.guard else 1.0
        if settings.archive:
            labels = list(self.engine.labels)
            self.archive = Archive(settings.archive, self.sample_rate, self.params, settings.archive_part_seconds,
                                   settings.archive_keep_parts, lambda text: _blend(text, labels),
                                   weights_finder(self.ref), settings.snapshot_seconds + window_seconds,
                                   engine_fit(self.engine, self.label_state, settings.archive, self))
        self.window = max(1, int(round(window_seconds * self.sample_rate)))
        self.position = 0  # samples rendered (and archived, and encoded)
        self.events: list[dict] = []
        self.event_counts: dict[str, int] = {}
        self.guard_lines = GuardLines()  # what the log says of the events
        self.measured_realtime = None
        self.measured_tries: list[float] = []  # x real time of each start-up timing
        self.measured_alone = None  # x real time with a CPU to itself (see measure)
        self.cpu_seconds = 0.0  # this thread's CPU time: engine, guard, archive and encoder
        self.encoded_bytes = 0
        self._recent = collections.deque(maxlen=RECENT_WINDOWS)  # (audio s, busy s, redraws) of the last windows
        self._chunk = MIN_CHUNK
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._published = False  # any pages handed to the broadcast yet
        self._label_taken_at = None  # the position the last label switch was taken at (see _take_label)
        self.error: BaseException | None = None
        self.encoder: OggOpusEncoder | None = None

    # ----- start: measure, restore -----

    def measure(self) -> float:
        """x real time of this engine here: the best of MEASURE_TRIES timings of MEASURE_TRY_SECONDS of
        generation each, in the chunks the station will use, after a warm-up (numba compiles on a cold
        cache). Other work on the machine only ever slows a timing down, so the best one is the nearest
        to the engine's own speed (``measured_tries``: all of them). ``measured_alone``: the best timing
        scaled by the share of a CPU this process had meanwhile (on the CPU; at most 1): what the engine
        would do with a CPU to itself, on a machine busy throughout. Leaves the engine (and --pitch-sync's draws,
        timed with it) reset."""
        self.engine.reset(label_weights=self.label_weights)
        fresh = None if self.pitch is None else self.pitch.state_dict()
        self._draw(0, MIN_CHUNK, 0)  # the warm-up
        done, tries, alone = MIN_CHUNK, [], []
        for _ in range(MEASURE_TRIES):
            samples, tick, cpu = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - tick < MEASURE_TRY_SECONDS:
                samples += len(self._draw(done + samples, self._chunk, 0))
            wall = time.perf_counter() - tick
            share = (time.process_time() - cpu) / wall if self.settings.device == "cpu" else 1.0
            tries.append(samples / self.sample_rate / wall)
            alone.append(tries[-1] / min(max(share, MIN_CPU_SHARE), 1.0))
            done += samples
        self.engine.reset(label_weights=self.label_weights)
        if fresh is not None:
            self.pitch.load_state_dict(fresh)
        self.measured_tries, self.measured_alone = tries, max(alone)
        return max(tries)

    def open(self, stopped=None) -> bool:
        """Measure the engine (refuse a model too slow for real time), restore the archive's snapshot. The
        archive's lock and params are checked first: another broadcast's archive is refused untimed. False where
        ``stopped()`` says a stop came during the timing: the archive is let go unopened, nothing written."""
        if self.archive is not None:
            self.archive.check()
        try:
            self._check_speed()
            if stopped is not None and stopped():
                raise _Stopped  # before the archive opens: nothing of it written
            if self.archive is not None:
                state, self.position, meta = self.archive.open()
                self.events = meta.get("events", [])
                self.event_counts = meta.get("event_counts", {})
                if state is not None:  # judged by engine_fit as it opened: the engine holds it, its label fits
                    self.label_state.adopt(meta, state)
            title = f"wavegen: {self.name}, seed {self.settings.seed}"
            self.encoder = OggOpusEncoder(self.sample_rate, self.position / self.sample_rate, title)
        except BaseException as err:
            if self.archive is not None:  # let go: a caller in this process may open it again
                self.archive.abandon()
            if isinstance(err, _Stopped):
                return False
            raise
        return True

    def _check_speed(self) -> None:
        """Measure the engine. Too slow for MIN_REALTIME even with a CPU to itself: ServeError (a warning
        with allow_slow). Too slow only because the machine is busy, or kept up in some timings only: it
        plays, with a warning that it may fall behind while the machine is as busy."""
        self.measured_realtime = rate = self.measure()
        low, alone, backend = min(self.measured_tries), self.measured_alone, self.engine.backend
        best_of = f"the best of {len(self.measured_tries)} timings"
        spread = f"; the worst {speed(low)}, {load_text()}" if low < rate / BUSY_SPREAD else ""
        logger.info("%s: %s real time on the %s backend (%s%s)", self.ref.source, speed(rate), backend, best_of,
                    spread)
        if alone < MIN_REALTIME:
            if not self.settings.allow_slow:
                alone_too = f", {speed(alone)} with a CPU to itself" if alone > rate * BUSY_SPREAD else ""
                raise ServeError(f"{self.ref.source} generates {speed(rate)} real time here ({backend} backend, "
                                 f"{best_of}{alone_too}); a live stream needs at least {MIN_REALTIME}x. Use a smaller "
                                 "model or a faster backend, or pass --allow-slow to play it with a growing delay")
            logger.warning("--allow-slow: %s real time; the broadcast will fall behind and listeners will wait for "
                           "it", speed(rate))
        elif low < MIN_REALTIME:
            why = f"{speed(rate)} at best, {speed(alone)} with a CPU to itself" if rate < MIN_REALTIME else \
                f"{speed(rate)} at best, {speed(low)} at worst"
            logger.warning("%s did not keep up with real time throughout the start-up check (%s): this machine is "
                           "busy (%s); while it is, the broadcast may fall behind (delay_seconds in /status)",
                           self.ref.source, why, load_text())

    @property
    def name(self) -> str:
        """A short name for people (no local path): the preset, or the run's or model's folder name."""
        ref = self.ref
        if ref.kind == "preset":
            return ref.config.get("preset", ref.source)
        if ref.kind == "run" and ref.folder is not None:
            return ref.folder.parent.name
        if ref.kind == "checkpoint" and ref.folder is not None:
            return f"{ref.folder.parent.parent.name} ({ref.folder.name})"
        return Path(ref.folder or ref.source).name

    @property
    def realtime_factor(self) -> float | None:
        """x real time over the last windows (redraws included), or the start-up measure before any."""
        recent = list(self._recent)  # a copy: the station's thread appends to it
        busy = sum(b for _, b, _ in recent)
        return sum(a for a, _, _ in recent) / busy if busy > 0 else self.measured_realtime

    @property
    def recent(self) -> tuple[int, int]:
        """(windows, the guard's redraws in them) that realtime_factor is measured over."""
        recent = list(self._recent)
        return len(recent), sum(r for _, _, r in recent)

    @property
    def redraws(self) -> int:
        """Windows the guard drew again, in all: every rejection but the last of a window it gave up on."""
        counts = dict(self.event_counts)
        return sum(n for kind, n in counts.items() if kind != "gave up") - counts.get("gave up", 0)

    @property
    def slow(self) -> bool:
        return self.measured_realtime is not None and self.measured_realtime < MIN_REALTIME

    # ----- the thread -----

    def start(self, publish, live_seconds) -> None:
        """Render in a thread: ``publish(pages)`` is called with each window's pages (from that
        thread); ``live_seconds()`` is where the listeners are, which the station stays ahead of."""
        self._thread = threading.Thread(target=self._run, args=(publish, live_seconds), name="wavegen-station",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop at the next chunk and wait for the final snapshot (or close an archive never played into)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        elif self.archive is not None:
            self.archive.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self, publish, live_seconds) -> None:
        resume_state = None
        try:
            while not self._stop.is_set():
                if not self._wait_for_room(live_seconds):
                    break
                resume_state = self._engine_state()
                # the guard's events before this window: a stop in it snapshots its start, so a restart draws and
                # guards it again, and those of its unfinished draws are not recorded to be counted twice
                guard_counts = {"events": self.events, "event_counts": dict(self.event_counts)}
                try:
                    pages = self._next_window(resume_state)
                except _Stopped:
                    break
                resume_state = None
                if pages:
                    publish(pages)
                    self._published = True
            self.guard_lines.flush()  # before the archive's last line; in finally too, for an error
            if self.archive is not None:
                meta = self._meta() if resume_state is None else {**self._meta(), **guard_counts}
                self.archive.snapshot(resume_state or self._engine_state(), meta)
                self.archive.close()
                logger.info("archive %s: %.1f s, snapshot saved", self.archive.folder,
                            self.position / self.sample_rate)
        except BaseException as err:  # the server stops and re-raises it
            self.error = err
            if self.archive is not None:
                self.archive.abandon()
        finally:
            self.guard_lines.flush()
            self.label_state.fail_pending("the stream stopped before the label switch")
            publish(None)  # tells the broadcast the station has stopped

    def _wait_for_room(self, live_seconds) -> bool:
        """Wait while the rendered audio is buffer_seconds ahead of the live edge; False once stopped.
        Not before a first page is out: the live edge starts with it (the encoder holds ~1 s). A label
        switch asked for meanwhile is taken at once (one a window: _take_label): it starts at the next window."""
        while True:
            self._take_label()
            ahead = self.position / self.sample_rate - live_seconds()
            if ahead < self.settings.buffer_seconds or not self._published:
                return True
            if self._stop.is_set():
                return False
            self._wake.wait(min(ahead - self.settings.buffer_seconds + 0.01, 0.5))
            self._wake.clear()

    def _take_label(self) -> None:
        """Switch to the label asked for (POST /label) from this position on; with an archive, a snapshot
        here records it, so a restart continues with it; its fallback (snapshot.prev.npz) too, not the old label's.
        One switch a window: one taken here is answered as starting here, so a later one waits for the next window
        (taken at the same position, it would replace the first before a sample of it played); a request for the
        label in force switches nothing and holds no window."""
        if self._label_taken_at == self.position:
            return
        snapshot = None if self.archive is None else \
            lambda: self.archive.snapshot(self._engine_state(), self._meta(), fallback_too=True)
        if self.label_state.apply_pending(self.engine, self.position, self.sample_rate, snapshot):
            self._label_taken_at = self.position

    def _engine_state(self) -> dict[str, np.ndarray]:
        # copied: an engine's state_dict may hand out views of buffers it updates in place; --pitch-sync's and
        # --postfilter's beside it
        state = {k: np.array(v, copy=True) for k, v in self.engine.state_dict().items()}
        return {**state, **kept_entries(self)}

    def _next_window(self, start_state: dict) -> list[Page]:
        """Render, guard, archive and encode the next window; → its pages."""
        wall, cpu, redraws = time.perf_counter(), time.thread_time(), self.redraws
        n = self.window - self.position % self.window
        codes = self._guarded(self.position, n, start_state)
        self.guard_lines.tick()
        # --postfilter's state taken once the window is handed on: an error before leaves it at the window's start
        pcm, after = filtered_pcm(self.post, dequantize(codes, self.q_levels, self.quantization))
        if self.archive is not None:
            self.archive.write(pcm)
        pages = self.encoder.encode(pcm)
        if after is not None:
            self.post.load_state_dict(after)
        self.position += n
        if self.archive is not None and self.position - self.archive.snapshot_position >= \
                self.settings.snapshot_seconds * self.sample_rate:
            self.archive.snapshot(self._engine_state(), self._meta())
        self.encoded_bytes += sum(len(p.data) for p in pages)
        self._recent.append((n / self.sample_rate, time.perf_counter() - wall, self.redraws - redraws))
        self.cpu_seconds += time.thread_time() - cpu
        return pages

    def _generate(self, start: int, n: int, attempt: int) -> np.ndarray:
        """codes [n] for positions start.. in chunks of at most CHUNK_WALL_SECONDS of work. --pitch-sync's state
        is kept at the window's start, or put back there for the guard's redraw of it (as render's Generator does)."""
        codes = np.empty(n, dtype=np.int64)
        if self.pitch is not None:
            self.pitch.begin(start)
        i = 0
        while i < n:
            if self._stop.is_set():
                raise _Stopped
            m = min(self._chunk, n - i)
            codes[i:i + m] = self._draw(start + i, m, attempt)
            i += m
        return codes

    def _draw(self, start: int, n: int, attempt: int) -> np.ndarray:
        """codes [n] for positions start.. in one engine call (with --pitch-sync, one per block of its lag
        estimate); the chunk size follows its speed."""
        tick = time.perf_counter()
        draw = lambda at, m: uniforms(self.settings.seed, [0], at, m, attempt)  # noqa: E731
        codes = self.engine.generate(draw(start, n), self.temperature)[0] if self.pitch is None else \
            pitched_codes(self.engine, self.pitch, draw, start, n, self.temperature)
        self._chunk = max(MIN_CHUNK, int(n / max(time.perf_counter() - tick, 1e-6) * CHUNK_WALL_SECONDS))
        return codes

    def _guarded(self, pos: int, n: int, start_state: dict) -> np.ndarray:
        """One window, codes [n]; a window the guard rejects is redrawn from ``start_state``."""
        codes = self._generate(pos, n, 0)
        if not self.settings.guard:
            return codes
        for attempt in range(self.settings.guard_attempts + 1):
            audio = dequantize(codes, self.q_levels, self.quantization)
            verdict = guard_verdict(audio, self.sample_rate, self.guard_criteria)
            if verdict is None:
                return codes
            self._event(pos, verdict, attempt)
            if attempt == self.settings.guard_attempts:
                self._event(pos, "gave up", attempt, detected=verdict)
                return codes
            self.engine.load_state_dict(start_state)
            codes = self._generate(pos, n, attempt + 1)
        raise AssertionError("unreachable: the last attempt returns")

    def _event(self, pos: int, kind: str, attempt: int, **extra) -> None:
        event = {"seconds": round(pos / self.sample_rate, 3), "kind": kind, "attempt": attempt, **extra}
        self.events = (self.events + [event])[-KEPT_EVENTS:]
        self.event_counts[kind] = self.event_counts.get(kind, 0) + 1
        if kind == "gave up":
            self.guard_lines.gave_up(pos / self.sample_rate, extra.get("detected"), attempt)
        elif attempt < self.settings.guard_attempts:  # the last draw's verdict is logged as the giving up
            self.guard_lines.redraw(pos / self.sample_rate, kind, attempt + 1)

    def _meta(self) -> dict:
        return {"events": self.events, "event_counts": self.event_counts, **self.label_state.meta()}
