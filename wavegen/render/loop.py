"""The render itself: resolve the model, lock the folder, render each process's streams window by
window (generate, guard, write, snapshot), and write the report."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from wavegen.audio import dequantize, float_to_int16
from wavegen.config import ConfigError
from wavegen.generate import make_engine, temperatures, uniforms
from wavegen.memory import check_fits
from wavegen.plotting import spectrogram_png
from wavegen.progress import move_to, progress_bar, restart_clock
from wavegen.render.folder import REPORT_FILE, RenderFolder, check_params
from wavegen.render.guard import Guard, GuardCriteria, GuardLog, criteria_for
from wavegen.render.processes import Processes
from wavegen.render.settings import (RenderSettings, RenderStateError, check_prime_path, parse_label, prime_codes,
                                     shard_streams)
from wavegen.render.writers import (StreamWriters, encode_flac, load_snapshot, reserve_open_files, save_snapshot,
                                    snapshot_exists)
from wavegen.resolve import ModelRef, resolve_model
from wavegen.signals import StopSignals

logger = logging.getLogger("wavegen.render")

SNAPSHOT_VERSION = 1
CHUNK_WALL_SECONDS = 0.5  # most engine work between two looks at SIGINT/SIGTERM
MIN_CHUNK = 64  # samples
# bytes held per sample of a window: codes (int64), its audio (float64 dequantized, float32),
# float_to_int16's float64 and the int16 written
WINDOW_BYTES_PER_SAMPLE = 8 + 8 + 4 + 8 + 2
PRIME_BYTES_PER_SAMPLE = 8  # the prime's codes, copied per stream (int64) by the engine
# what the first Ctrl-C / SIGTERM does, as it is acknowledged: while windows are made, and once the last is
STOP_IN_WINDOW = "rewinding to the start of the window and saving a snapshot"
STOP_AFTER_LAST_WINDOW = "the last window is made: finishing the render (its files and report) instead of stopping"


def render(model: str | Path, out_dir: str | Path, settings: RenderSettings, progress: bool = True,
           restart: bool = False, checkpoint: str | None = None) -> dict:
    """Render ``settings.streams`` streams of ``settings.seconds`` each into ``out_dir``; resumes.

    ``model``: a model folder or run folder (``checkpoint``: "last" or "step_N" of a run).
    Returns the report (also ``out_dir/render_report.json``, which names the files relative to
    ``out_dir``; the returned one names them as paths in ``out_dir``): paths, seconds, wall time,
    × real time, backend, guard events, spectrograms. Raises KeyboardInterrupt after saving a
    snapshot on SIGINT/SIGTERM; FolderBusyError when another render holds ``out_dir``;
    RenderWriteError when the disk is full or the folder read-only; RenderStateError when
    ``out_dir`` holds a different or damaged render; ConfigError for settings that cannot work.
    """
    settings.validate()
    ref = resolve_render_model(model, checkpoint)
    total = settings.total_samples(ref.sample_rate)
    procs = Processes()
    try:
        # before any path is listed or file created: a --streams beyond the open-file limit fails at once
        procs.agree(lambda: reserve_open_files(len(range(procs.rank, settings.streams, procs.world)),
                                               settings.streams))
        folder = RenderFolder(out_dir, settings.streams, settings.format)
        # the model, engine and inputs before the folder: their errors leave no new --out behind
        job = procs.agree(lambda: RenderJob(ref, folder, settings, procs, total, restart))
        procs.agree(folder.lock, src=0)  # the first process holds the folder; a refusal reaches every process
        try:
            return job.run(restart, progress)
        finally:
            folder.unlock()
    finally:
        procs.close()


def resolve_render_model(model: str | Path, checkpoint: str | None = None) -> ModelRef:
    """A model folder, run folder or run checkpoint → ModelRef with trained weights (ConfigError otherwise)."""
    from wavegen.models import PRESETS

    if checkpoint is None and not Path(model).exists():
        if str(model) in PRESETS:
            raise ConfigError(f"{model} is a preset (random weights): render needs a trained model: a model "
                              "folder, a run folder, or a run folder with --checkpoint")
        raise ConfigError(f"{model}: no such model or run folder")
    ref = resolve_model(model, checkpoint)
    if ref.weights is None:
        raise ConfigError(f"{ref.source}: no trained weights to render from; give a model folder, a run folder, "
                          "or a run folder with --checkpoint")
    return ref


class RenderJob:
    """One process's part of a render: its model, engine, streams and the render's parameters."""

    def __init__(self, ref: ModelRef, folder: RenderFolder, settings: RenderSettings, procs: Processes, total: int,
                 restart: bool = False):
        self.settings, self.folder, self.procs, self.total = settings, folder, procs, total
        self.sr = ref.sample_rate
        device = settings.device
        if procs.world > 1 and torch.device(device).type == "cuda" and torch.device(device).index is None:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', procs.rank))}"
        self.ids = np.array(shard_streams(settings.streams, procs.rank, procs.world), dtype=np.int64)
        recorded_prime = self._prime_gone(restart)  # before the model loads: a --prime that is gone is refused at once
        model = ref.load(device)
        # an engine of one stream when this process has none: it still resolves the backend
        self.engine = make_engine(model, max(len(self.ids), 1), settings.backend, device, settings.precision)
        self.q_levels, self.quantization = self.engine.q_levels, self.engine.spec["quantization"]
        self.label_weights = parse_label(settings.label, list(self.engine.labels))
        self.prime, prime_sha256 = None, recorded_prime
        if settings.prime is not None and recorded_prime is None:
            self.prime = prime_codes(settings.prime, self.sr, settings.prime_seconds, self.q_levels,
                                     self.quantization, int(getattr(model, "context_samples", 1)))
            prime_sha256 = hashlib.sha256(self.prime.tobytes()).hexdigest()
        del model
        self._check_memory()
        self.criteria = criteria_for(settings, ref)  # the model's album profile, or the fixed thresholds
        self.temps_all = temperatures(settings.temperature, settings.streams)
        self.params = render_params(ref, settings, self.temps_all, prime_sha256, self.engine.backend, procs.world,
                                    self.sr, self.criteria, engine_threads(self.engine.backend, settings.streams,
                                                                           procs.world))

    def _prime_gone(self, restart: bool) -> str | None:
        """Where --prime names a file that is gone: the prime's sha256 the render in the folder recorded,
        when this process resumes it (a snapshot of its streams carries the state the prime left in the
        engine; said in the log) or it is complete. None where there is no --prime or its file is there
        (read it; the rerun check refuses one that differs). ConfigError where the render starts from
        the prime (a new render, --restart, no snapshot yet): the file is needed.
        """
        s = self.settings
        if s.prime is None or os.path.exists(s.prime):
            return None
        recorded, complete = (None, False) if restart else self.folder.recorded("prime_sha256")
        resumes = complete or not len(self.ids) or snapshot_exists(self.folder.snapshot_path(self.procs.rank))
        if isinstance(recorded, str) and resumes:
            if self.procs.rank == 0 and not complete:
                logger.info("--prime %s is gone: resuming %s with the prime it began with (sha256 %s..., recorded; "
                            "its snapshot carries it)", s.prime, self.folder.out_dir, recorded[:12])
            return recorded
        if isinstance(recorded, str):
            raise ConfigError(f"--prime {s.prime}: no such file; the render in {self.folder.out_dir} began with "
                              "it but has no snapshot to resume from yet, so it starts from the prime again: give "
                              "the file")
        check_prime_path(s.prime)  # what is wrong with the name: no such file, an empty name
        raise ConfigError(f"--prime {s.prime}: no such file")

    def _check_memory(self) -> None:
        """OutOfMemoryError before anything is written where a window (or the prime) of this process's
        streams would not fit in RAM (numpy arrays, whatever the device): their sizes follow the user's seconds."""
        s, streams = self.settings, max(len(self.ids), 1)
        window = min(window_samples(s, self.sr), self.total)  # a render shorter than a window makes less
        what = (f"the guard window of {streams} stream(s) (--guard-seconds {s.guard_seconds:g})" if s.guard else
                f"a block of {streams} stream(s) (--block-seconds {s.block_seconds:g})")
        check_fits(WINDOW_BYTES_PER_SAMPLE * streams * window, what,
                   "lower --guard-seconds or --streams" if s.guard else "lower --block-seconds or --streams")
        if self.prime is not None:
            check_fits(PRIME_BYTES_PER_SAMPLE * streams * len(self.prime),
                       f"the prime of {streams} stream(s) ({len(self.prime) / self.sr:g} s of --prime "
                       f"{s.prime})", "lower --prime-seconds or --streams")

    def to_audio(self, codes: np.ndarray) -> np.ndarray:
        """codes [..., n] → float audio [..., n] in [-1, 1]."""
        return dequantize(codes, self.q_levels, self.quantization)

    def run(self, restart: bool, progress: bool) -> dict:
        """Every process: prepare the folder (first process), render this process's streams, then
        the report (first process). → the report, or this process's paths under several."""
        folder, procs = self.folder, self.procs
        procs.agree(lambda: self._prepare(restart), src=0)
        done = procs.agree(self._finished_or_checked)
        if done is not None:
            logger.info("%s: this render is already complete (%d stream(s) x %g s); nothing to do",
                        folder.out_dir, done["streams"], done["seconds"])
            return done
        # one stop request for the whole render: a window being made is rewound (KeyboardInterrupt);
        # one that comes after the last window is made lets the render finish, and says so
        with StopSignals(STOP_IN_WINDOW) as stop:
            shard = ShardRender(self, progress and procs.rank == 0, stop)
            # every process's snapshot read (or engine reset) before any renders: a refusal of one (a damaged
            # snapshot) reaches the others at once, not once they have rendered their streams to the end
            resumed = procs.agree(shard.start if len(self.ids) else (lambda: None))
            meta = procs.agree((lambda: shard.run(resumed)) if len(self.ids) else (lambda: None))
            if procs.rank != 0:
                result = {"paths": [str(folder.paths[i]) for i in self.ids], "rank": procs.rank, "meta": meta}
            else:
                result = self.finish()
        if stop.requested:
            logger.warning("%s came after the last window was made: the render finished and is complete; "
                           "nothing to resume", stop.name)
        return result

    def _prepare(self, restart: bool) -> None:
        """First process, lock held: --restart, the rerun check, this render's parameters recorded."""
        if self.folder.prepare(self.params, restart) is None:
            self.folder.warn_if_short_of_space(self.total)

    def _finished_or_checked(self) -> dict | None:
        """The report when this render is complete; else None, once the recorded parameters are checked."""
        done = self.folder.completed_report(self.params)
        if done is None and self.procs.rank != 0:  # the first process checked them in _prepare
            check_params(self.folder.saved_params() or {}, self.params, self.folder.out_dir)
        return done

    def finish(self) -> dict:
        """First process, every shard done: the report of the whole render → render_report.json."""
        s, folder = self.settings, self.folder
        events, wall, sessions = [], 0.0, 1
        for rank in range(self.procs.world):
            path = folder.snapshot_path(rank)
            if snapshot_exists(path):
                meta = load_snapshot(path, fallback=True)[2]
                events += meta["events"]
                wall = max(wall, meta["wall_seconds"])
                sessions = max(sessions, meta["sessions"])
        spectrograms = [p.with_suffix(".png").name for p in folder.paths
                        if s.spectrogram and p.with_suffix(".png").is_file()]
        events.sort(key=lambda e: (e["seconds"], e["stream"], e["attempt"]))
        counts = {}
        for e in events:
            counts[e["kind"]] = counts.get(e["kind"], 0) + 1
        seconds = self.total / self.sr
        report = {
            "status": "complete", "params": self.params, "paths": [p.name for p in folder.paths],
            "spectrograms": spectrograms, "seconds": seconds, "streams": s.streams, "sample_rate": self.sr,
            "wall_seconds": wall, "realtime_factor": seconds / wall if wall else None,
            "realtime_factor_all_streams": seconds * s.streams / wall if wall else None,
            "backend": self.engine.backend, "precision": s.precision, "processes": self.procs.world,
            "sessions": sessions, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "guard": {"enabled": s.guard, "counts": counts, "events": events},
        }
        folder.write_report(report, self.total, self.sr)
        # wall_seconds: the generation's (and its writing), every session's; the FLAC encoding and the
        # spectrograms after it are not counted
        logger.info("rendered %d stream(s) x %g s, generated in %.1f s (%.2fx real time per stream, %s backend%s); "
                    "guard events: %s → %s", s.streams, seconds, wall, report["realtime_factor"] or 0,
                    report["backend"], f", {sessions} sessions" if sessions > 1 else "",
                    counts or "none", folder.out_dir)
        return folder.located(json.loads(json.dumps(report)))


def window_samples(s: RenderSettings, sample_rate: int) -> int:
    """Samples per stream generated (and held) at once: a guard window, or a block without the guard."""
    return max(1, int(round((s.guard_seconds if s.guard else s.block_seconds) * sample_rate)))


def engine_threads(backend: str, streams: int, world: int) -> int | None:
    """The thread count as it decides a render's audio, or None where it does not: the numba engine
    runs a process's streams in groups, one per thread and at most one per stream, and a stream's
    sums round by the group it falls in. → min(numba's threads, the streams of the largest process
    of ``world``) for the numba backend; None for the others."""
    if backend != "numba":
        return None
    import numba

    return max(1, min(numba.get_num_threads(), -(-streams // world)))


def render_params(ref: ModelRef, s: RenderSettings, temps: np.ndarray, prime_sha256: str | None, backend: str,
                  world: int, sample_rate: int, criteria: GuardCriteria, threads: int | None = None) -> dict:
    """Everything that decides a render's audio (plus NON_BINDING records), as JSON would give it
    back; ``prime_sha256``: of the prime's codes (None without a prime); ``criteria``: the guard's
    (:func:`~wavegen.render.guard.criteria_for` of ``s`` and ``ref``); ``threads``: :func:`engine_threads`."""
    guard = {"seconds": s.guard_seconds, "attempts": s.guard_attempts, **criteria.as_dict()}
    return json.loads(json.dumps({
        "model": str(ref.weights.parent.resolve()), "model_sha256": ref.weights_sha256(),
        "sample_rate": sample_rate, "seconds": s.seconds, "streams": s.streams, "seed": s.seed,
        "temperature": [float(t) for t in temps], "label": s.label,
        "prime_sha256": prime_sha256,
        "format": s.format, "backend": backend, "threads": threads, "precision": s.precision, "device": s.device,
        "world_size": world, "guard": guard if s.guard else False, "block_seconds": s.block_seconds,
    }))


class _Interrupted(Exception):
    """A stop was requested (first SIGINT/SIGTERM) in the middle of a window."""


class Generator:
    """Codes for one process's streams, in chunks short enough to answer a stop request promptly.

    A chunk is ``block_seconds`` of audio, or less where the engine is slow: at most
    CHUNK_WALL_SECONDS of work (the codes do not depend on it). The progress bar moves by what it
    generates, except redraws (``count=False``); its "x real time" is the audio the bar counts per
    second of wall time, the time of redraws included (what the report's realtime_factor measures
    over the whole render), and the seconds redrawn are shown beside it. Rate and ETA count from
    the end of the first chunk (the engine's warm-up: compiling, caches).
    """

    def __init__(self, job: RenderJob, stop: StopSignals, bar=None):
        self.engine, self.seed, self.ids, self.sr = job.engine, job.settings.seed, job.ids, job.sr
        self.temps = job.temps_all[job.ids]
        self.block = max(1, int(round(job.settings.block_seconds * job.sr)))
        self.chunk_cap = MIN_CHUNK  # grows to CHUNK_WALL_SECONDS of work after the first chunk
        self.stop, self.bar = stop, bar
        self.t0 = self.n0 = None  # the clock and the bar's count once warm (after the first chunk)
        self.redrawn = 0  # samples per stream generated again by the guard, this session

    def draw(self, start: int, n: int, attempts: np.ndarray) -> np.ndarray:
        """Uniforms [B, n] for positions start.., each stream at its own attempt."""
        u = np.empty((len(self.ids), n), dtype=np.float32)
        for a in np.unique(attempts):
            rows = attempts == a
            u[rows] = uniforms(self.seed, self.ids[rows], start, n, int(a))
        return u

    def generate(self, start: int, n: int, attempts: np.ndarray, count: bool = True) -> np.ndarray:
        """codes [B, n] int64 for positions start..start+n; raises _Interrupted on a stop request."""
        codes = np.empty((len(self.ids), n), dtype=np.int64)
        i = 0
        while i < n:
            m = min(self.block, self.chunk_cap, n - i)
            tick = time.perf_counter()
            codes[:, i:i + m] = self.engine.generate(self.draw(start + i, m, attempts), self.temps)
            rate = m / max(time.perf_counter() - tick, 1e-6)
            self.chunk_cap = max(MIN_CHUNK, int(rate * CHUNK_WALL_SECONDS))
            i += m
            self._progress(m, count)
            if self.stop.requested:
                raise _Interrupted
        return codes

    def _progress(self, m: int, count: bool) -> None:
        """``m`` samples per stream generated: the bar moves (``count``) or they count as redrawn."""
        if not count:
            self.redrawn += m
        if self.bar is None:
            return
        if self.t0 is None:  # the first chunk: moved without a rate (its time is the warm-up's), then the clock
            self.bar.n += m / self.sr if count else 0
            restart_clock(self.bar)
            self.t0, self.n0 = time.perf_counter(), self.bar.n
            return
        if count:
            self.bar.update(m / self.sr)
        self.show_speed()

    def show_speed(self) -> None:
        """The bar's "x real time" (and the seconds redrawn) as of now."""
        if self.bar is None or self.t0 is None:
            return
        speed = (self.bar.n - self.n0) / max(time.perf_counter() - self.t0, 1e-9)
        redrawn = f", {self.redrawn / self.sr:.1f} s redrawn" if self.redrawn else ""
        self.bar.set_postfix_str(f"{speed:.2f}x real time{redrawn}")

    def rewound(self, pos: int) -> None:
        """The bar back at ``pos`` samples: what a stop keeps (a window being made is undone)."""
        if self.bar is not None:
            move_to(self.bar, pos / self.sr)
            self.n0 = None if self.n0 is None else min(self.n0, self.bar.n)
            self.show_speed()


class ShardRender:
    """One process's streams, start (or resume) to end: windows, guard, writes, snapshots; then
    FLAC encoding and spectrograms. ``start()`` (the engine reset, or the last snapshot restored) →
    samples written; ``run(start())`` → {"events", "spectrograms"}."""

    def __init__(self, job: RenderJob, show_progress: bool, stop: StopSignals):
        self.job, self.show_progress, self.stop = job, show_progress, stop
        self.s, self.engine, self.sr, self.total = job.settings, job.engine, job.sr, job.total
        self.snapshot_path = job.folder.snapshot_path(job.procs.rank)
        self.log = GuardLog(self.sr, report_name=REPORT_FILE)
        self.wall_before, self.sessions, self.snapshot_written = 0.0, 1, 0
        self.t0 = time.perf_counter()

    def _io_error(self, path: Path, err: BaseException, written: int | None = None):
        written = self.snapshot_written if written is None else written
        return self.job.folder.io_error(path, err, written, self.sr)

    def start(self) -> int | None:
        """Reset the engine, or restore the last snapshot; → samples written (None when starting fresh)."""
        job, engine = self.job, self.engine
        if not snapshot_exists(self.snapshot_path):
            prime = None if job.prime is None else np.broadcast_to(job.prime, (len(job.ids), len(job.prime)))
            engine.reset(prime_codes=prime, label_weights=job.label_weights)
            return None
        state, written, meta = load_snapshot(self.snapshot_path, fallback=True)
        check_params(meta["params"], job.params, job.folder.out_dir)
        if meta["streams"] != job.ids.tolist():
            raise RenderStateError(f"{self.snapshot_path} renders streams {meta['streams']}, this process "
                                   f"{job.ids.tolist()}")
        self.log = GuardLog(self.sr, meta["events"], report_name=REPORT_FILE)
        self.wall_before, self.sessions = meta["wall_seconds"], meta["sessions"] + 1
        engine.reset(label_weights=job.label_weights)
        engine.load_state_dict(state)
        logger.info("resuming %s at %.1f s of %.1f s", job.folder.out_dir, written / self.sr, self.total / self.sr)
        return written

    def _save(self, writers: StreamWriters, written: int) -> None:
        """Flush the audio up to ``written``, then snapshot the engine's state (the order makes it safe)."""
        writers.flush()
        meta = {"version": SNAPSHOT_VERSION, "params": self.job.params, "streams": self.job.ids.tolist(),
                "events": self.log.events, "wall_seconds": self.wall_before + time.perf_counter() - self.t0,
                "sessions": self.sessions, "complete": written >= self.total}
        try:
            save_snapshot(self.snapshot_path, self.engine.state_dict(), written, meta, keep_previous=True)
        except OSError as err:
            raise self._io_error(self.snapshot_path, err) from err
        self.snapshot_written = written

    def _bar(self, written: int):
        if not self.show_progress:
            return contextlib.nullcontext()
        return progress_bar(total=self.total / self.sr, initial=written / self.sr, unit="s",
                            desc="rendered",
                            bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}{postfix}]")

    def run(self, resumed: int | None) -> dict:
        """``resumed``: what :meth:`start` returned."""
        s, job = self.s, self.job
        written = resumed or 0
        self.snapshot_written = written
        if s.format == "flac" and written < self.total:
            logger.info("FLAC: audio is kept as PCM under %s until the render completes, then encoded",
                        job.folder.state_dir)
        logger.info("rendering %d stream(s) x %g s at %d Hz with the %s engine (%s)%s", len(job.ids), s.seconds,
                    self.sr, self.engine.backend, s.precision, f" (process {job.procs.rank} of {job.procs.world})"
                    if job.procs.world > 1 else "")
        writers = StreamWriters(job.folder.work_paths(job.ids), self.sr, s.format == "wav", resumed,
                                lambda path, err: self._io_error(path, err))
        ok = False
        try:
            with torch.inference_mode(), self._bar(written) as bar:
                self.t0 = time.perf_counter()
                self._windows(writers, written, Generator(job, self.stop, bar), self.stop)
                self._save(writers, self.total)  # complete
                writers.close()
                ok = True
        finally:
            if not ok:
                writers.abandon()
        try:
            return self._after(job)
        except KeyboardInterrupt:  # a second Ctrl-C: the audio is all made and saved, the files not finished
            logger.warning("stopped while the render's files were being finished: every window is made and saved "
                           "under %s; rerun the same command to finish them (nothing is generated again)",
                           job.folder.state_dir)
            raise

    def _windows(self, writers: StreamWriters, pos: int, gen: Generator, stop: StopSignals) -> None:
        """Render positions pos..total window by window; a stop request rewinds to the window start."""
        s, engine, job = self.s, self.engine, self.job
        window = window_samples(s, self.sr)
        snapshot_every = max(1, int(round(s.snapshot_seconds * self.sr)))
        guard = Guard(job.criteria, s.guard_attempts, self.sr, job.ids, job.to_audio, self.log) \
            if s.guard else None
        no_redraw = np.zeros(len(job.ids), dtype=np.int64)
        if pos >= self.total:  # resumed from the complete snapshot: only its files are left to finish
            stop.message = STOP_AFTER_LAST_WINDOW
        while pos < self.total:
            n = min(window - pos % window, self.total - pos)
            start, mark = engine.snapshot(), self.log.mark()
            try:
                if stop.requested:  # came while the last window was written
                    raise _Interrupted
                codes = gen.generate(pos, n, no_redraw)
                if guard is not None:
                    guard.check(engine, pos, codes, start,
                                lambda attempts: gen.generate(pos, n, attempts, count=False))
                if stop.requested:  # came while the guard judged the window
                    raise _Interrupted
                if pos + n == self.total:  # from here on a stop request lets the render finish
                    stop.message = STOP_AFTER_LAST_WINDOW
            except _Interrupted:  # back to the window's start: audio, state and events
                self.log.rewind(mark)
                engine.restore(start)
                gen.rewound(pos)
                self._save(writers, pos)
                logger.warning("%s: stopped at %.1f s; snapshot saved. Rerun the same command to resume",
                               stop.name, pos / self.sr)
                raise KeyboardInterrupt from None
            writers.write(float_to_int16(job.to_audio(codes)))
            pos += n
            gen.show_speed()  # the time of the guard's verdict and the writing counted
            if pos - self.snapshot_written >= snapshot_every and pos < self.total:
                self._save(writers, pos)

    def _after(self, job: RenderJob) -> dict:
        """The finished shard: FLAC encoded from the PCM under .state, a spectrogram per stream."""
        if self.s.format == "flac":
            for i, pcm_path in zip(job.ids, job.folder.work_paths(job.ids)):
                try:
                    encode_flac(pcm_path, job.folder.paths[i], self.sr)
                except (OSError, RuntimeError) as err:  # RuntimeError: the encoder's own, where no OSError says why
                    raise self._io_error(job.folder.paths[i], err, self.total) from err
        spectrograms = []
        if self.s.spectrogram:
            for i in job.ids:
                target = job.folder.paths[i].with_suffix(".png")
                try:  # written atomically: a full disk leaves no partial PNG
                    png = spectrogram_png(job.folder.paths[i], target)
                except OSError as err:
                    raise self._io_error(target, err, self.total) from err
                if png is not None:
                    spectrograms.append(str(png))
        return {"events": self.log.events, "spectrograms": spectrograms}

