"""One process's part of a render, window by window: the codes generated in chunks that answer a stop
request promptly (:class:`Generator`), then guarded, written and snapshotted (:class:`ShardRender`),
and the files finished (FLAC, spectrograms). :mod:`wavegen.render.loop` prepares the job and ties
the processes together."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from wavegen.audio import float_to_int16
from wavegen.fileio import atomic_write
from wavegen.generate import uniforms
from wavegen.plotting import spectrogram_png
from wavegen.progress import counted, move_to, plain_seconds, progress_bar, restart_clock
from wavegen.render.folder import REPORT_FILE
from wavegen.render.guard import Guard, GuardLog
from wavegen.render.params_check import check_params
from wavegen.render.pitchsync import PitchSync
from wavegen.render.postfilter import Postfilter
from wavegen.render.processes import say_stopped_elsewhere
from wavegen.render.settings import RenderSettings, RenderStateError
from wavegen.render.writers import (StreamWriters, encode_flac, flushed_samples, load_snapshot, previous_snapshot,
                                    save_snapshot, snapshot_exists)
from wavegen.signals import LossCarried, StopSignals

if TYPE_CHECKING:
    from wavegen.render.loop import RenderJob

logger = logging.getLogger("wavegen.render")

SNAPSHOT_VERSION = 1
CHUNK_WALL_SECONDS = 0.5  # most engine work between two looks at SIGINT/SIGTERM
MIN_CHUNK = 64  # samples
# values (streams x samples) of one chunk at most, whatever --block-seconds or --streams: its uniforms
# (float32) with engine.uniforms' uint64 temporaries take 24-32 bytes a value (measured: 24 + 8 / streams),
# then the uniforms and the engine's codes (int64) 12; so at most 128 MiB
MAX_CHUNK_VALUES = 1 << 22
CHUNK_BYTES_PER_VALUE = 32
# what the first Ctrl-C / SIGTERM does, as it is acknowledged: while windows are made, and once the last is
STOP_IN_WINDOW = "rewinding to the start of the window and saving a snapshot"
STOP_AFTER_LAST_WINDOW = "the last window is made: finishing the render (its files and report) instead of stopping"
# the pitch-sync and postfilter states' arrays in a snapshot, beside the engine's (save_snapshot stores them all as
# "engine.<key>")
PITCH_PREFIX = "pitch_sync."
POST_PREFIX = "postfilter."
# each such state: (its prefix, its option, the attribute of its owner (a render's ShardRender, a serve Station)
# holding it (None where off), whether its "pos" is the snapshot's position)
KEPT_STATES = ((PITCH_PREFIX, "--pitch-sync", "pitch", False), (POST_PREFIX, "--postfilter", "post", True))


def kept_states(owner) -> list[tuple]:
    """(prefix, option, object, held to the snapshot's position) of each state ``owner`` keeps beside the engine's in
    its snapshots: those on."""
    return [(prefix, flag, getattr(owner, name), at) for prefix, flag, name, at in KEPT_STATES
            if getattr(owner, name) is not None]


def kept_entries(owner) -> dict[str, np.ndarray]:
    """Those states as snapshot entries beside the engine's, each under its prefix."""
    return {prefix + k: v for prefix, _, held, _ in kept_states(owner) for k, v in held.state_dict().items()}


def window_samples(s: RenderSettings, sample_rate: int) -> int:
    """Samples per stream generated (and held) at once: a guard window, or a block without the guard."""
    return max(1, int(round((s.guard_seconds if s.guard else s.block_seconds) * sample_rate)))



class _Interrupted(Exception):
    """A stop was requested (first SIGINT/SIGTERM) in the middle of a window; or ``failure``, another process's
    (:meth:`~wavegen.render.processes.Processes.failure_elsewhere`: one lost), met there."""

    def __init__(self, failure: BaseException | None = None):
        super().__init__()
        self.failure = failure


class Generator:
    """Codes for one process's streams, in chunks short enough to answer a stop request promptly.

    A chunk is ``block_seconds`` of audio, or less where the engine is slow: at most
    CHUNK_WALL_SECONDS of work (the codes do not depend on it). The progress bar moves by what it
    generates, except redraws (``count=False``); its "x real time" is the audio the bar counts per
    second of wall time, the time of redraws included (what the report's realtime_factor measures
    over the whole render), and the seconds redrawn are shown beside it. Rate and ETA count from
    the end of the first chunk (the engine's warm-up: compiling, caches). ``pitch``: the pitch-synchronous
    draws' state (--pitch-sync), or None (render's uniforms as drawn); a chunk then ends at each of its blocks.
    """

    def __init__(self, job: RenderJob, stop: StopSignals, bar=None, pitch: PitchSync | None = None):
        self.engine, self.seed, self.ids, self.sr = job.engine, job.settings.seed, job.ids, job.sr
        self.procs = job.procs
        self.temps = job.temps_all[job.ids]
        self.block = max(1, int(round(job.settings.block_seconds * job.sr)))
        self.chunk_cap = MIN_CHUNK  # grows to CHUNK_WALL_SECONDS of work after the first chunk
        self.stop, self.bar = stop, bar
        self.t0 = self.n0 = None  # the clock and the bar's count once warm (after the first chunk)
        self.redrawn = 0  # samples per stream generated again by the guard, this session
        self.pitch = pitch

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
        if self.pitch is not None:  # a window's start, or the guard's redraw of it: the state there
            self.pitch.begin(start)
        i = 0
        while i < n:
            m = min(self.block, self.chunk_cap, n - i, max(1, MAX_CHUNK_VALUES // max(len(self.ids), 1)))
            tick = time.perf_counter()
            if self.pitch is None:
                codes[:, i:i + m] = self.engine.generate(self.draw(start + i, m, attempts), self.temps)
            else:
                made = self.pitch.generate(self.engine, lambda at, k: self.draw(at, k, attempts), start + i, m,
                                           self.temps)
                m = made.shape[1]
                codes[:, i:i + m] = made
            rate = m / max(time.perf_counter() - tick, 1e-6)
            self.chunk_cap = max(MIN_CHUNK, int(rate * CHUNK_WALL_SECONDS))
            i += m
            self._progress(m, count)
            if self.stop.requested:
                raise _Interrupted
            if self.stop.held:  # a launcher's SIGTERM: most often another process was lost, said instead if so
                failure = self.procs.failure_elsewhere()
                if failure is not None:
                    raise _Interrupted(failure)
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
        """The bar (and the pitch-sync state) back at ``pos`` samples: what a stop keeps (a window being made is
        undone)."""
        if self.pitch is not None:
            self.pitch.back_to(pos)
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
        self.resume_crc32s = None  # each file's CRC-32 at the snapshot resumed from (None: none recorded)
        self.pitch = PitchSync(self.s.pitch_sync, len(job.ids), job.to_audio) if self.s.pitch_sync else None
        self.post = Postfilter(self.s.postfilter, len(job.ids)) if self.s.postfilter else None
        self.t0 = time.perf_counter()

    def _io_error(self, path: Path, err: BaseException, written: int | None = None):
        written = self.snapshot_written if written is None else written
        return self.job.folder.io_error(path, err, written, self.sr)

    def start(self) -> int | None:
        """Reset the engine, or restore the last snapshot; → samples written (None when starting fresh)."""
        job, engine = self.job, self.engine
        if not snapshot_exists(self.snapshot_path):
            self._refuse_unvouched_audio()
            prime = None if job.prime is None else np.broadcast_to(job.prime, (len(job.ids), len(job.prime)))
            engine.reset(prime_codes=prime, label_weights=job.label_weights)
            return None
        state, written, meta = load_snapshot(self.snapshot_path, fallback=True)
        check_params(job.folder.with_recorded_tensors(meta["params"]), job.params, job.folder.out_dir,
                     job.settings.backend)
        if meta["streams"] != job.ids.tolist():
            raise RenderStateError(f"{self.snapshot_path} renders streams {meta['streams']}, this process "
                                   f"{job.ids.tolist()}")
        self.log = GuardLog(self.sr, meta["events"], report_name=REPORT_FILE)
        self.wall_before, self.sessions = meta["wall_seconds"], meta["sessions"] + 1
        self.resume_crc32s = meta.get("crc32")  # a snapshot of an older wavegen has none
        kept = {prefix: {k[len(prefix):]: state.pop(k) for k in list(state) if k.startswith(prefix)}
                for prefix, *_ in KEPT_STATES}
        for prefix, flag, held, at_position in kept_states(self):
            entries, over = kept[prefix], "; rerun with --restart to start the render over"
            if not entries or (at_position and "pos" not in entries):
                raise RenderStateError(f"{self.snapshot_path} holds no {flag} state to resume from{over}")
            if at_position and int(entries["pos"]) != written:
                raise RenderStateError(f"{self.snapshot_path}: its {flag} state is at sample {int(entries['pos'])}, "
                                       f"the snapshot at {written}{over}")
            held.load_state_dict(entries)
        engine.reset(label_weights=job.label_weights)
        engine.load_state_dict(state)
        logger.info("resuming %s at %.1f s of %.1f s", job.folder.out_dir, written / self.sr, self.total / self.sr)
        return written

    def _refuse_unvouched_audio(self) -> None:
        """No snapshot of this process's streams, yet a file of them holds audio: its snapshots were removed since,
        or another program wrote it, and starting would overwrite that audio. Refused in one line naming the file and
        what to do. A WAV counts audio in its header only once a snapshot holds it (_save: a render stopped before its
        first one leaves the header of an empty file), but nothing says a snapshot was ever saved; a FLAC render's raw
        PCM has no header, so its first snapshot leaves a mark beside it
        (:meth:`~wavegen.render.folder.RenderFolder.snapshotted_path`), which vouches for it as this render's, and a
        finished .flac with it. A WAV that is not the render's (another rate, channels, format) is refused as such."""
        folder, gone = self.job.folder, (f"{self.snapshot_path.name} and {previous_snapshot(self.snapshot_path).name} "
                                         f"under {self.snapshot_path.parent}")
        if self.s.format == "wav":
            for path in folder.work_paths(self.job.ids):
                held, other = flushed_samples(path, self.sr)
                if other is not None:
                    raise RenderStateError(
                        f"{path} is {other}, not a stream of this render (a mono {self.sr} Hz 16-bit WAV), and the "
                        f"render here has no snapshot ({gone}) to resume it from: move it out of {folder.out_dir} to "
                        "keep it, or pass --restart to render over it")
                if held:
                    self._refuse(path, f"holds {held / self.sr:.1f} s of audio (a mono {self.sr} Hz 16-bit WAV, as "
                                       "this render writes)", gone, vouched=False)
            return
        marked = folder.snapshotted_path(self.job.procs.rank).exists()
        finished = [folder.paths[i] for i in self.job.ids if folder.paths[i].is_file()]
        if finished:  # encoded only once its streams' last snapshot was saved
            self._refuse(finished[0], "is this render's finished stream" if marked else
                         "is a FLAC file where this render writes a stream", gone, vouched=marked)
        if marked:
            for path in folder.work_paths(self.job.ids):
                size = path.stat().st_size if path.is_file() else 0
                if size:
                    self._refuse(path, f"holds {size / 2 / self.sr:.1f} s of this render's audio (raw PCM, "
                                       "encoded to FLAC at the end)", gone, vouched=True)

    def _refuse(self, path: Path, holds: str, gone: str, vouched: bool) -> None:
        """RenderStateError: ``path`` ``holds`` audio no snapshot (``gone``) holds. ``vouched``: a mark says this
        render saved one (its snapshots were removed); else it may be another program's file."""
        if vouched:
            raise RenderStateError(
                f"{path} {holds}, but its snapshots {gone} are gone, so it cannot be resumed: put them back to resume "
                "it, or pass --restart to render it again from the start (overwriting the streams)")
        raise RenderStateError(
            f"{path} {holds}, but there is no snapshot ({gone}) to resume it from: if this render wrote it, its "
            "snapshots are gone (put them back to resume it); if another program did, move it out of "
            f"{self.job.folder.out_dir} to keep it; or pass --restart to render the streams again from the start "
            "(overwriting it)")

    def _save(self, writers: StreamWriters, written: int) -> None:
        """Flush the audio up to ``written``, then snapshot the engine's state (the order makes it safe), then count
        it in the WAV headers: a header's count is always one a snapshot vouches for, so a header counting audio
        where no snapshot is left means they were removed (_refuse_unvouched_audio), never a first snapshot that
        failed or was cut off by a kill (a rerun as its error advises resumes or starts)."""
        writers.flush(header=False)
        meta = {"version": SNAPSHOT_VERSION, "params": self.job.params, "streams": self.job.ids.tolist(),
                "events": self.log.events, "wall_seconds": self.wall_before + time.perf_counter() - self.t0,
                "sessions": self.sessions, "complete": written >= self.total, "crc32": writers.crc32s}
        state = dict(self.engine.state_dict())
        state.update(kept_entries(self))  # at ``written`` too: a window boundary (a stop rewound it there)
        try:
            save_snapshot(self.snapshot_path, state, written, meta, keep_previous=True)
        except OSError as err:
            raise self._io_error(self.snapshot_path, err) from err
        self.snapshot_written = written
        writers.flush()
        if self.s.format != "wav":  # the raw PCM has no header to count what a snapshot holds: a mark does
            marked = self.job.folder.snapshotted_path(self.job.procs.rank)
            if not marked.exists():
                try:
                    atomic_write(marked, b"")
                except OSError as err:
                    raise self._io_error(marked, err) from err

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
        logger.info("rendering %s x %s s at %d Hz with the %s engine (%s)%s", counted(len(job.ids), "stream"),
                    plain_seconds(s.seconds), self.sr, self.engine.backend, s.precision,
                    f" (process {job.procs.rank} of {job.procs.world})" if job.procs.world > 1 else "")
        writers = StreamWriters(job.folder.work_paths(job.ids), self.sr, s.format == "wav", resumed,
                                lambda path, err: self._io_error(path, err), self.resume_crc32s)
        ok = False
        try:
            with torch.inference_mode(), self._bar(written) as bar:
                self.t0 = time.perf_counter()
                self._windows(writers, written, Generator(job, self.stop, bar, self.pitch), self.stop)
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
            self._stop_if_another_failed(writers, pos)
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
            # back to the window's start: audio, state and events; a held SIGTERM's time up met news (LossCarried)
            # far from a chunk: ended as a chunk meeting it ends
            except (_Interrupted, LossCarried) as interrupted:
                self.log.rewind(mark)
                engine.restore(start)
                gen.rewound(pos)
                failure = interrupted.loss if isinstance(interrupted, LossCarried) else interrupted.failure
                if failure is not None:
                    self._stop_for(failure, writers, pos)
                self._save(writers, pos)
                logger.log(logging.WARNING if job.procs.rank == 0 else logging.DEBUG,  # said once, not per process
                           "%s: stopped at %.1f s; snapshot saved. Rerun the same command to resume",
                           stop.name, pos / self.sr)
                raise KeyboardInterrupt from None
            if self.post is None:
                writers.write(job.to_pcm(codes))
            else:  # its state taken once the window is written: a failed write leaves it at the window's start
                audio, after = self.post.filtered(job.to_audio(codes))
                writers.write(float_to_int16(audio))
                self.post.load_state_dict(after)
            pos += n
            gen.show_speed()  # the time of the guard's verdict and the writing counted
            if pos - self.snapshot_written >= snapshot_every and pos < self.total:
                self._save(writers, pos)

    def _stop_if_another_failed(self, writers: StreamWriters, pos: int) -> None:
        """Under several processes, at each window: where another process stopped (a write it could not
        make, a Ctrl-C that reached it alone), save a snapshot of what this one wrote and stop with its
        error, instead of rendering on until the final agreement."""
        if self.stop.requested:  # a stop of this process's own comes first (the same Ctrl-C reached them all)
            return
        failure = self.job.procs.failure_elsewhere()
        if failure is not None:
            self._stop_for(failure, writers, pos)

    def _stop_for(self, failure: BaseException, writers: StreamWriters, pos: int) -> None:
        """Stop with another process's ``failure`` (:meth:`~wavegen.render.processes.Processes.failure_elsewhere`),
        a snapshot of what this one wrote up to ``pos`` saved first."""
        self._save(writers, pos)
        say_stopped_elsewhere(failure, self.job.procs.rank, f"stopped at {pos / self.sr:.1f} s")
        raise failure

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

