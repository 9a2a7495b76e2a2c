"""The render itself: resolve the model, lock the folder, prepare each process's job (model, engine,
parameters), have it render its streams (:mod:`wavegen.render.shard`), and write the report."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import resource
from pathlib import Path

import numpy as np
import torch

from wavegen.audio import dequantize, float_to_int16
from wavegen.config import ConfigError
from wavegen.generate import make_engine, temperatures
from wavegen.memory import check_fits
from wavegen.progress import counted, plain_seconds
from wavegen.render.folder import RenderFolder
from wavegen.render.folder_report import measured
from wavegen.render.guard import GuardCriteria, counts_in_words, criteria_for
from wavegen.render.model_change import TENSORS_KEY, model_gone, stand_in
from wavegen.render.params_check import check_params
from wavegen.render.processes import Processes
from wavegen.render.settings import (RenderSettings, RenderStateError, check_prime_path, parse_label, prime_codes,
                                     shard_streams)
from wavegen.render.shard import (CHUNK_BYTES_PER_VALUE, MAX_CHUNK_VALUES, STOP_IN_WINDOW, ShardRender,
                                  window_samples)
from wavegen.render.writers import load_snapshot, reserve_open_files, snapshot_exists
from wavegen.resolve import ModelRef, resolve_model
from wavegen.resolve_checkpoints import PRUNED_RETRIES, CheckpointRemovedError, pruned_too_fast
from wavegen.signals import StopSignals, first_process_says
from wavegen.signals import logger as signals_logger

logger = logging.getLogger("wavegen.render")

# Bytes a window holds per sample of each stream (measured with tracemalloc: tests/test_render_memory.py):
# its codes (int64) and their PCM (int16, looked up from RenderJob.pcm_table). The guard holds a second
# window of codes while it redraws (int64), and judges one stream at a time: per sample of that one
# stream, its audio (float32, from audio_table) and guard_verdict's temporaries (a float64 copy, |x|,
# frame and FFT arrays: 28-35 bytes measured). Writing adds one stream's bytes (int16, tobytes).
WINDOW_BYTES_PER_SAMPLE = 8 + 2
GUARD_BYTES_PER_SAMPLE = 8 + 8
JUDGE_BYTES_PER_SAMPLE = 4 + 36  # of the one stream judged
WRITE_BYTES_PER_SAMPLE = 2  # of the one stream written
PRIME_BYTES_PER_SAMPLE = 8  # the prime's codes, copied per stream (int64) by the engine
STOP_WHILE_PREPARING = "stopping once the model and engine are ready, before anything is written"


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
    if not str(out_dir).strip():  # an unset variable in a script: not the current directory
        raise ConfigError("--out: give a folder for the render (the name is empty)")
    procs = None
    try:
        # the processes meet, agree on the model, and prepare (model, engine, inputs) before the folder: their
        # errors leave no new --out behind. A Ctrl-C meanwhile waits for them, then stops every process: one
        # inside a collective would leave the others waiting for this process, and one raised inside numba's
        # compiler or an import it makes is not always passed on, and left numpy half imported. A launcher's SIGTERM
        # whose process is seen lost meanwhile is not said as a stop: the next meeting says the loss
        with StopSignals(STOP_WHILE_PREPARING, lambda: news_elsewhere(procs), raise_loss=False) as stop, \
                first_process_says(signals_logger.name):
            procs = Processes()
            job = _prepared_job(procs, model, out_dir, settings, restart, checkpoint)
        procs.agree(lambda: _stop_if(stop))  # before anything is written
        procs.agree(job.folder.lock, src=0)  # the first process holds the folder; a refusal reaches every process
        try:
            return job.run(restart, progress)
        finally:
            job.folder.unlock()
    finally:
        if procs is not None:
            procs.close()


def _prepared_job(procs: Processes, model: str | Path, out_dir: str | Path, settings: RenderSettings,
                  restart: bool, checkpoint: str | None) -> RenderJob:
    """Every process's RenderJob, of the one model the first process resolved (:func:`_model_of_every_process`).
    Where that is a run's ``--checkpoint last`` that a training pruned while the processes read it, the first
    process resolves it again (PRUNED_RETRIES times at most), as one process's load looks again."""
    ref = _model_of_every_process(procs, model, out_dir, checkpoint, restart)
    # before any path is listed or file created: a --streams beyond the open-file limit fails at once
    procs.agree(lambda: reserve_open_files(len(range(procs.rank, settings.streams, procs.world)),
                                           settings.streams))
    folder = RenderFolder(out_dir, settings.streams, settings.format, settings.backend, settings.spectrogram)
    # one process looks again for "last" in its own load (ModelRef.load); several, pinned to one step, together
    again = checkpoint == "last" and procs.world > 1
    for tries in range(PRUNED_RETRIES):
        if tries:  # pruned while the processes read it: the first resolves it again, for all
            ref = _model_of_every_process(procs, model, out_dir, checkpoint, restart)
        job = procs.agree(lambda: _job_unless_pruned(ref, folder, settings, procs, restart, again))
        if not any(procs.gather(job is None)):
            return job
    raise ConfigError(pruned_too_fast(ref.folder.parent.parent))


def _model_of_every_process(procs: Processes, model: str | Path, out_dir: str | Path, checkpoint: str | None,
                            restart: bool) -> ModelRef:
    """The model every process renders: resolved by the first process and handed to the others, so that a run's
    ``--checkpoint last`` names one checkpoint for all of them (a training may save a newer one while they
    start). Under several processes, a checkpoint is theirs by its step: a process whose load finds it removed
    meanwhile (pruned) does not look again for "last" alone (:func:`_job_unless_pruned`)."""
    ref = procs.agree(lambda: _resolved_model(model, out_dir, checkpoint, restart), src=0)
    if procs.world > 1 and ref.kind == "checkpoint":
        ref = dataclasses.replace(ref, checkpoint=ref.folder.name)
    return ref


def _resolved_model(model: str | Path, out_dir: str | Path, checkpoint: str | None, restart: bool) -> ModelRef:
    try:
        return resolve_render_model(model, checkpoint)
    except ConfigError:
        # best/ or the checkpoint gone since the render in out_dir began from it: the kept model with its weights
        ref = None if restart else _model_it_began_with(model, out_dir, checkpoint)
        if ref is None:
            raise
        return ref


def _job_unless_pruned(ref: ModelRef, folder: RenderFolder, settings: RenderSettings, procs: Processes, restart: bool,
                       again: bool) -> RenderJob | None:
    """RenderJob; None where its checkpoint (``--checkpoint last`` of several processes, resolved by the first
    and pinned to its step) was removed while this process read it and ``again``: the processes resolve it
    again. Any other error (a bad --label, a missing --prime) is said at once."""
    try:
        return RenderJob(ref, folder, settings, procs, settings.total_samples(ref.sample_rate), restart)
    except CheckpointRemovedError:
        if not again:
            raise
        return None


def news_elsewhere(procs: Processes | None) -> BaseException | None:
    """What a held SIGTERM's time up raises in a render (StopSignals' ``look_for_loss``): the news each chunk and
    window look for (Processes.failure_elsewhere: another process's recorded error or stop, else one seen ended),
    so that a process that recorded its own error before it ended is not said "ended unexpectedly"; None while
    there is none, or before the processes have met (``procs`` None)."""
    return None if procs is None else procs.failure_elsewhere()


def _stop_if(stop: StopSignals) -> None:
    if stop.requested:
        raise KeyboardInterrupt


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


def _model_it_began_with(model: str | Path, out_dir: str | Path, checkpoint: str | None = None) -> ModelRef | None:
    """Where ``model`` (its ``checkpoint``) holds no model now and the render in ``out_dir`` began from it: the kept
    checkpoint (or, for a checkpoint, the run's best/) holding the weights it began with, said in one line
    (:func:`~wavegen.render.model_change.stand_in`, as serve continues an archive); none: RenderStateError saying
    so (:func:`~wavegen.render.model_change.model_gone`). None where the render there began from another model,
    or none. Where whether the render finished is not known (a damaged report beside the .state/ a kill left), the
    line says both what the rerun does if it is not (resumes it) and if it is (writes the report again)."""
    folder = RenderFolder(out_dir, 1, "wav")
    complete = folder.recorded("model")[1]
    saved = {key: folder.recorded(key)[0] for key in ("model", "model_sha256", TENSORS_KEY)}
    found = stand_in(model, checkpoint, saved["model"], saved[TENSORS_KEY], saved["model_sha256"])
    if found is not None:
        named = f"--checkpoint {checkpoint}" if checkpoint is not None else str(model)
        said = found.said(named, f"the render in {folder.out_dir}",
                          "checking the finished render" if complete else "resuming the render")
        if complete is None:
            said += ", or, if it is finished, checking it and writing its damaged report again"
        logger.warning("%s", said)
        return found.ref
    message = model_gone(folder.out_dir, model, saved, complete, checkpoint)
    if message is not None:
        raise RenderStateError(message)
    return None


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
        if ref.sample_rate != self.sr:  # a run folder trained again at another rate between resolve and load
            raise ConfigError(f"{ref.folder}: replaced by a model at {ref.sample_rate} Hz while the render started (it was "
                              f"resolved at {self.sr} Hz); nothing was rendered: rerun the same command")
        # an engine of one stream when this process has none: it still resolves the backend
        self.engine = make_engine(model, max(len(self.ids), 1), settings.backend, device, settings.precision)
        self.q_levels, self.quantization = self.engine.q_levels, self.engine.spec["quantization"]
        # every code's sample, computed once: a window is looked up, with none of dequantize's float64
        # temporaries (a mu-law window's took 32 bytes a sample)
        self.audio_table = dequantize(np.arange(self.q_levels), self.q_levels, self.quantization)
        self.pcm_table = float_to_int16(self.audio_table)
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
                                                                           procs.world), self.label_weights)

    def _prime_gone(self, restart: bool) -> str | None:
        """Where --prime names a file that is gone: the prime's sha256 the render in the folder recorded,
        when this process resumes it (a snapshot of its streams carries the state the prime left in the
        engine; said in the log, with what the rerun does if it is finished where that is not known: a damaged
        report beside the .state/ a kill left) or it is complete. None where there is no --prime or its file
        is there (read it; the rerun check refuses one that differs). ConfigError where the render starts from
        the prime (a new render, --restart, no snapshot yet): the file is needed.
        """
        s = self.settings
        if s.prime is None or os.path.exists(s.prime):
            return None
        recorded, complete = (None, False) if restart else self.folder.recorded("prime_sha256")
        resumes = complete or not len(self.ids) or snapshot_exists(self.folder.snapshot_path(self.procs.rank))
        if isinstance(recorded, str) and resumes:
            if self.procs.rank == 0 and not complete:  # (None: finished or not, its report damaged: not known)
                logger.info("--prime %s is gone: resuming %s with the prime it began with (sha256 %s..., recorded; "
                            "its snapshot carries it)%s", s.prime, self.folder.out_dir, recorded[:12],
                            "" if complete is False else
                            ", or, if it is finished, checking it and writing its damaged report again")
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
        what = (f"the guard window of {counted(streams, 'stream')} (--guard-seconds {s.guard_seconds:g})" if s.guard
                else f"a block of {counted(streams, 'stream')} (--block-seconds {s.block_seconds:g})")
        check_fits(window_bytes(streams, window, min(s.block_seconds * self.sr, window), s.guard), what,
                   "lower --guard-seconds or --streams" if s.guard else "lower --block-seconds or --streams")
        if self.prime is not None:
            check_fits(PRIME_BYTES_PER_SAMPLE * streams * len(self.prime),
                       f"the prime of {counted(streams, 'stream')} ({len(self.prime) / self.sr:g} s of --prime "
                       f"{s.prime})", "lower --prime-seconds or --streams")

    def to_audio(self, codes: np.ndarray) -> np.ndarray:
        """codes [..., n] int64 → float32 audio [..., n] in [-1, 1] (dequantize's values)."""
        return self.audio_table[codes]

    def to_pcm(self, codes: np.ndarray) -> np.ndarray:
        """codes [..., n] int64 → int16 PCM [..., n], as float_to_int16(to_audio(codes)) gives it."""
        return self.pcm_table[codes]

    def run(self, restart: bool, progress: bool) -> dict:
        """Every process: prepare the folder (first process), render this process's streams, then
        the report (first process). → the report, or this process's paths under several."""
        folder, procs = self.folder, self.procs
        procs.agree(lambda: self._prepare(restart, progress), src=0)
        done = procs.agree(self._finished_or_checked)
        if done is not None:
            if procs.rank != 0:  # said, and the files listed, once: by the first process
                return self._own_paths(None)
            logger.info("%s: this render is already complete (%s x %s s); nothing to do",
                        folder.out_dir, counted(done["streams"], "stream"), plain_seconds(done["seconds"]))
            folder.warn_if_changed(done)
            return done
        # one stop request for the whole render: a window being made is rewound (KeyboardInterrupt);
        # one that comes after the last window is made lets the render finish, and says so. A launcher's SIGTERM
        # (another process lost) is met at the next chunk or window, or, where the work is far from one (a guard's
        # verdict, the FLAC encoding), raised as the loss once its line's time is up
        with StopSignals(STOP_IN_WINDOW, lambda: news_elsewhere(procs)) as stop, \
                first_process_says(signals_logger.name, procs.rank):
            shard = ShardRender(self, progress and procs.rank == 0, stop)
            # every process's snapshot read (or engine reset) before any renders: a refusal of one (a damaged
            # snapshot) reaches the others at once, not once they have rendered their streams to the end
            resumed = procs.agree(shard.start if len(self.ids) else (lambda: None))
            meta = procs.agree((lambda: procs.telling_failure(shard.run, resumed)) if len(self.ids) else
                               (lambda: None))
            if procs.rank != 0:
                result = self._own_paths(meta)
            else:
                result = self.finish()
        if stop.requested:
            logger.warning("%s came after the last window was made: the render finished and is complete; "
                           "nothing to resume", stop.name)
        return result

    def _own_paths(self, meta: dict | None) -> dict:
        """What a process other than the first returns: its streams' paths, its rank, its shard's ``meta``."""
        return {"paths": [str(self.folder.paths[i]) for i in self.ids], "rank": self.procs.rank, "meta": meta}

    def _prepare(self, restart: bool, progress: bool) -> None:
        """First process, lock held: --restart, the rerun check, this render's parameters recorded (``progress``:
        a bar over a long check)."""
        if self.folder.prepare(self.params, restart, progress) is None:
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
        paths = [folder.snapshot_path(rank) for rank in range(self.procs.world)]
        seconds = self.total / self.sr
        m = measured([load_snapshot(p, fallback=True)[2] for p in paths if snapshot_exists(p)], seconds, s.streams)
        wall, sessions, counts = m["wall_seconds"], m["sessions"], m["counts"]
        spectrograms = [p.with_suffix(".png").name for p in folder.paths
                        if s.spectrogram and p.with_suffix(".png").is_file()]
        report = {
            "status": "complete", "params": self.params, "paths": [p.name for p in folder.paths],
            "spectrograms": spectrograms, "seconds": seconds, "streams": s.streams, "sample_rate": self.sr,
            "wall_seconds": wall, "realtime_factor": m["realtime_factor"],
            "realtime_factor_all_streams": m["realtime_factor_all_streams"],
            "backend": self.engine.backend, "precision": s.precision, "processes": self.procs.world,
            "sessions": sessions, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "guard": {"enabled": s.guard, "counts": counts, "events": m["events"]},
        }
        folder.write_report(report, self.total, self.sr)
        # wall_seconds: the generation's (and its writing), every session's; the FLAC encoding and the
        # spectrograms after it are not counted
        logger.info("rendered %s x %s s, generated in %.1f s (%.2fx real time per stream, %s backend%s); "
                    "guard events: %s → %s", counted(s.streams, "stream"), plain_seconds(seconds), wall,
                    report["realtime_factor"] or 0, report["backend"], f", {sessions} sessions" if sessions > 1 else "",
                    counts_in_words(counts), folder.out_dir)
        return folder.located(json.loads(json.dumps(report)))


def window_bytes(streams: int, window: int, block: float, guard: bool) -> int:
    """Peak bytes of numpy arrays a render's window of ``streams`` x ``window`` samples holds, beside the
    engine's state: the window (WINDOW_BYTES_PER_SAMPLE, or the guard's terms) and one chunk of ``block``
    samples per stream being drawn (:data:`~wavegen.render.shard.CHUNK_BYTES_PER_VALUE`, at most
    MAX_CHUNK_VALUES of them)."""
    if guard:
        per_sample = max(GUARD_BYTES_PER_SAMPLE * streams, WINDOW_BYTES_PER_SAMPLE * streams + JUDGE_BYTES_PER_SAMPLE)
    else:
        per_sample = WINDOW_BYTES_PER_SAMPLE * streams + WRITE_BYTES_PER_SAMPLE
    chunk_values = min(int(streams * max(1.0, block)), MAX_CHUNK_VALUES)
    return int(per_sample * window + CHUNK_BYTES_PER_VALUE * chunk_values)


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
                  world: int, sample_rate: int, criteria: GuardCriteria, threads: int | None = None,
                  label_weights=None) -> dict:
    """Everything that decides a render's audio (plus NON_BINDING records), as JSON would give it
    back; ``prime_sha256``: of the prime's codes (None without a prime); ``criteria``: the guard's
    (:func:`~wavegen.render.guard.criteria_for` of ``s`` and ``ref``); ``threads``: :func:`engine_threads`;
    ``label_weights``: the blend the engine gets (:func:`parse_label`), which binds rather than its spelling."""
    guard = {"seconds": s.guard_seconds, "attempts": s.guard_attempts, **criteria.as_dict()}
    return json.loads(json.dumps({
        "model": str(ref.weights.parent.resolve()), "model_sha256": ref.weights_sha256(),
        TENSORS_KEY: ref.weights_tensors_sha256(),
        "sample_rate": sample_rate, "seconds": s.seconds, "streams": s.streams, "seed": s.seed,
        "temperature": [float(t) for t in temps], "label": s.label,
        "label_weights": None if label_weights is None else [float(w) for w in label_weights],
        "prime_sha256": prime_sha256,
        "format": s.format, "backend": backend, "threads": threads, "precision": s.precision, "device": s.device,
        "world_size": world, "guard": guard if s.guard else False, "block_seconds": s.block_seconds,
        "pitch_sync": float(s.pitch_sync), "postfilter": float(s.postfilter),
    }))
