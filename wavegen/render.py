"""Long-form rendering: hours of audio, many streams, resumable, guarded.

``render(model, out_dir, RenderSettings(seconds=..., streams=N))`` writes
``out_dir/stream_000.wav`` ... block by block from one batched engine, so memory stays flat
however long the render. Uniforms come from :func:`wavegen.generate.uniforms` keyed by
(seed, stream id, position, attempt): the same command gives byte-identical files whatever
the block size, the number of processes, or how often the render was interrupted.

Resuming. Under ``out_dir/.state/`` the render keeps ``params.json`` (everything that decides
the audio) and, per process, ``rank{r}.npz``: engine state, samples written, guard events,
written atomically (temporary file, fsync, rename) every ``snapshot_seconds`` of audio, after
the audio files were flushed and fsynced up to that point. Rerunning the same command after
a crash, Ctrl-C or ``kill -9`` truncates each file back to the snapshot and continues.

- WAV is written in place by :class:`PCMWriter` (its header is rewritten at every flush, so
  the file on disk is always a valid WAV up to the last snapshot).
- FLAC cannot be truncated or appended to safely (the encoder buffers whole frames that a
  flush does not write), so a FLAC render keeps raw PCM under ``.state/`` and encodes it,
  block by block, when the render completes: the same encoder input gives the same bytes.

Guard (on by default). Every ``guard_seconds`` window of each stream is checked before it is
written (:func:`guard_verdict`): clipping, silence or runaway noise rewinds that stream to the
window's start and redraws it with ``attempt + 1``; after ``guard_attempts`` redraws the last
one is kept and "gave up" is logged. Every event goes to ``render_report.json``.

Several processes (``torchrun``/``accelerate launch``: WORLD_SIZE, RANK set): process r renders
streams r, r + world, ... (:func:`shard_streams`) with the global stream ids as uniform keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import resource
import shutil
import signal
import struct
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from wavegen.audio import dequantize, float_to_int16, quantize
from wavegen.checkpoint import MODEL_FILE, find_model_dir, load_model
from wavegen.errors import WavegenError
from wavegen.generate import make_engine, temperatures, uniforms

logger = logging.getLogger(__name__)

FORMATS = ("wav", "flac")
STATE_DIR = ".state"
REPORT_FILE = "render_report.json"
PARAMS_FILE = "params.json"
SNAPSHOT_VERSION = 1
# Parameters recorded but free to change on resume: the audio does not depend on them.
NON_BINDING = ("model", "block_seconds")
LOGGED_EVENTS = 50  # guard events logged per session; every one goes to the report
CHUNK_WALL_SECONDS = 0.5  # most engine work between two looks at SIGINT/SIGTERM
MIN_CHUNK = 64  # samples


class RenderStateError(WavegenError, ValueError):
    """The output folder holds another render (or a damaged one); the message says what differs."""


class RenderWriteError(WavegenError, RuntimeError):
    """Audio or state could not be written (disk full, read-only folder); what is on disk is resumable."""


@dataclass
class RenderSettings:
    seconds: float
    streams: int = 1
    seed: int = 0
    temperature: list[float] = field(default_factory=lambda: [1.0])  # cycled over streams
    prime: str | None = None
    prime_seconds: float = 2.0  # the last this many seconds of --prime are run through the model
    label: str | None = None  # "name" or a blend "a:0.7,b:0.3"
    backend: str = "auto"
    device: str = "cpu"
    format: str = "wav"
    block_seconds: float = 1.0  # audio generated between progress updates / interrupt checks
    snapshot_seconds: float = 30.0  # audio between snapshots (rounded up to whole guard windows)
    spectrogram: bool = True
    # guard: criteria of guard_verdict
    guard: bool = True
    guard_seconds: float = 2.0
    guard_attempts: int = 4  # redraws before giving up and keeping the last one
    guard_silence_db: float = -60.0  # every 50 ms frame's RMS (mean removed) below this → silence
    guard_noise_flatness: float = 0.85  # spectral flatness above this ...
    guard_noise_db: float = -30.0  # ... with the window's RMS above this → noise
    guard_clip_level: float = 0.95  # |x| at or above this counts as clipped ...
    guard_clip_fraction: float = 0.1  # ... in more than this fraction of the window → clipping

    def validate(self) -> None:
        if not self.seconds > 0:
            raise ValueError(f"--seconds {self.seconds}: must be positive")
        if self.streams < 1:
            raise ValueError(f"--streams {self.streams}: need at least one")
        if self.format not in FORMATS:
            raise ValueError(f"--format {self.format!r}: use one of {list(FORMATS)}")
        for name in ("block_seconds", "snapshot_seconds", "guard_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} {getattr(self, name)}: must be positive")
        if self.guard_attempts < 0:
            raise ValueError(f"guard_attempts {self.guard_attempts}: must be >= 0")
        temperatures(self.temperature, self.streams)


# ----- inputs -------------------------------------------------------------------------------------

def parse_label(text: str | None, labels: list[str]) -> np.ndarray | None:
    """``"name"`` or ``"a:0.7,b:0.3"`` → blend weights [n_labels] (None when no label given).

    Weights are normalised to sum to 1. An unknown name is an error listing the known ones.
    """
    if not labels:
        if text:
            raise ValueError(f"--label {text!r}: this model was not trained with labels")
        return None
    if not text:
        raise ValueError(f"this model is conditioned on labels; choose one with --label (known: {labels})")
    weights = np.zeros(len(labels), dtype=np.float32)
    for part in text.split(","):
        name, _, value = part.strip().partition(":")
        name = name.strip()
        if name not in labels:
            raise ValueError(f"--label {name!r} is not one of this model's labels: {labels}")
        try:
            w = float(value) if value else 1.0
        except ValueError:
            raise ValueError(f"--label {part!r}: weight {value!r} is not a number") from None
        if w < 0:
            raise ValueError(f"--label {part!r}: weights must not be negative")
        weights[labels.index(name)] += w
    if weights.sum() <= 0:
        raise ValueError(f"--label {text!r}: weights sum to zero")
    return weights / weights.sum()


def prime_codes(path: str, sample_rate: int, seconds: float, q_levels: int, quantization: str,
                multiple: int = 1) -> np.ndarray:
    """The last ``seconds`` of an audio file (any rate, any channels) → codes [T0] int64,
    T0 trimmed from the front to a multiple of ``multiple`` (a whole top frame)."""
    from wavegen.audio import load_mono

    audio = load_mono(path, sample_rate)
    keep = min(len(audio), int(round(seconds * sample_rate)))
    keep -= keep % multiple
    if keep <= 0:
        raise ValueError(f"--prime {path}: shorter than {multiple} samples at {sample_rate} Hz")
    return quantize(audio[len(audio) - keep:], q_levels, quantization)


def stream_paths(out_dir: Path, streams: int, fmt: str) -> list[Path]:
    return [Path(out_dir) / f"stream_{i:03d}.{fmt}" for i in range(streams)]


def shard_streams(streams: int, rank: int, world: int) -> list[int]:
    """The stream ids process ``rank`` of ``world`` renders: rank, rank + world, ... (maybe none)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of world size {world}")
    return list(range(rank, streams, world))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ----- the guard ----------------------------------------------------------------------------------

def _db(x: float) -> float:
    return 20.0 * math.log10(max(float(x), 1e-12))


def guard_verdict(audio: np.ndarray, sample_rate: int, settings: RenderSettings) -> str | None:
    """One window of one stream, audio [n] float in [-1, 1] → "clipping" | "silence" | "noise" | None.

    - clipping: more than ``guard_clip_fraction`` of the samples at ``|x| >= guard_clip_level``
      (a model stuck at the rails).
    - silence: every 50 ms frame has an RMS, mean removed, below ``guard_silence_db`` dBFS (a
      model stuck on one code, whatever DC value that code has).
    - noise: spectral flatness (geometric / arithmetic mean of the Welch-averaged power
      spectrum, 256-point Hann frames, DC dropped) above ``guard_noise_flatness`` while the RMS
      is above ``guard_noise_db`` dBFS. White noise scores 0.98-1 over a 2 s window at 16 kHz
      (0.92 at worst over 2400 samples), pink noise ~0.5, tones under 0.01. Windows shorter than
      8 frames (2048 samples) are not checked for noise: too few frames to average.
    """
    x = np.asarray(audio, dtype=np.float64)
    n = len(x)
    if n == 0:
        return None
    if np.mean(np.abs(x) >= settings.guard_clip_level) > settings.guard_clip_fraction:
        return "clipping"
    frame = max(1, min(n, int(round(0.05 * sample_rate))))
    frames = x[: n // frame * frame].reshape(-1, frame)
    if _db(frames.std(axis=1).max()) < settings.guard_silence_db:
        return "silence"
    n_fft = 256
    if n >= 8 * n_fft:
        seg = x[: n // n_fft * n_fft].reshape(-1, n_fft)
        seg = (seg - seg.mean(axis=1, keepdims=True)) * np.hanning(n_fft)
        power = (np.abs(np.fft.rfft(seg, axis=1)) ** 2).mean(axis=0)[1:] + 1e-20
        flatness = math.exp(np.mean(np.log(power))) / np.mean(power)
        if flatness > settings.guard_noise_flatness and _db(x.std()) > settings.guard_noise_db:
            return "noise"
    return None


# ----- files: streaming PCM writer, snapshots -----------------------------------------------------

class PCMWriter:
    """16-bit mono PCM appended block by block to a WAV file (or a headerless ``.pcm``), resumable.

    ``resume_frames=N`` reopens an existing file and cuts it back to its first N samples. The
    WAV header's sizes are rewritten at every :meth:`flush` (which also fsyncs), so after a
    crash the file is a valid WAV holding at least every flushed sample.
    """

    HEADER_BYTES = 44

    def __init__(self, path: Path, sample_rate: int, wav: bool = True, resume_frames: int | None = None):
        self.path, self.sample_rate, self.wav = Path(path), int(sample_rate), wav
        header = self.HEADER_BYTES if wav else 0
        if resume_frames is None:
            self.file = open(self.path, "wb")
            self.frames = 0
            if wav:
                self.file.write(self._header())
        else:
            self.file = open(self.path, "r+b")
            size = os.fstat(self.file.fileno()).st_size
            if size < header + 2 * resume_frames or (wav and self.file.read(4) != b"RIFF"):
                self.file.close()
                raise RenderStateError(f"{self.path} holds {(size - header) // 2} samples, fewer than the "
                                       f"{resume_frames} its snapshot claims: it was changed since; "
                                       "rerun with --restart to start over")
            self.file.truncate(header + 2 * resume_frames)
            self.file.seek(0, os.SEEK_END)
            self.frames = resume_frames

    def _header(self) -> bytes:
        data = 2 * self.frames
        return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data, b"WAVE", b"fmt ", 16, 1, 1,
                           self.sample_rate, 2 * self.sample_rate, 2, 16, b"data", data)

    def write(self, pcm: np.ndarray) -> None:
        """pcm [n] int16."""
        self.file.write(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
        self.frames += len(pcm)

    def flush(self) -> None:
        if self.wav:
            self.file.seek(0)
            self.file.write(self._header())
            self.file.seek(0, os.SEEK_END)
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.file.close()

    def abandon(self) -> None:
        """Close after a failure without raising (what reached the disk stays; resume truncates)."""
        try:
            self.file.close()
        except OSError:
            pass


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write) -> None:
    """``write(file)`` into ``path.tmp``, fsync, rename over ``path``, fsync the folder."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save_snapshot(path: Path, engine_state: dict[str, np.ndarray], written: int, meta: dict) -> None:
    """One process's render state → ``path`` (.npz, no pickle), atomically."""
    arrays = {f"engine.{k}": np.asarray(v) for k, v in engine_state.items()}
    arrays["written"] = np.asarray(written, dtype=np.int64)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    write_atomic(path, lambda f: np.savez(f, **arrays))


def load_snapshot(path: Path) -> tuple[dict[str, np.ndarray], int, dict]:
    """→ (engine state, samples written per stream, meta)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            engine = {k[len("engine."):]: z[k] for k in z.files if k.startswith("engine.")}
            return engine, int(z["written"]), json.loads(z["meta"].tobytes().decode())
    except (OSError, ValueError, KeyError) as err:
        raise RenderStateError(f"{path}: unreadable render snapshot ({err}); rerun with --restart") from err


def _json_roundtrip(obj):
    return json.loads(json.dumps(obj))


def check_params(saved: dict, current: dict, where: Path) -> None:
    """RenderStateError naming the first parameter that differs (NON_BINDING ones may)."""
    for key in current:
        if key in NON_BINDING:
            continue
        if saved.get(key) != current[key]:
            raise RenderStateError(
                f"{where} holds a render with {key}={saved.get(key)!r}, but this command asks for "
                f"{key}={current[key]!r}. Rerun the original command to resume it, pass --restart to "
                "discard it, or choose another --out")


# ----- spectrograms -------------------------------------------------------------------------------

def spectrogram_summary(audio_path: Path, n_fft: int = 1024, columns: int = 1200) -> tuple[np.ndarray, float, int]:
    """An audio file of any length, read block by block (memory flat) → (db [cols, n_fft/2 + 1], seconds, rate).

    Power of non-overlapping Hann frames, averaged into ``cols = min(columns, frames)`` equal
    time columns, in dB. ``n_fft`` shrinks (to a power of two, at least 16) for short files.
    """
    import soundfile as sf

    info = sf.info(str(audio_path))
    total, sr = int(info.frames), int(info.samplerate)
    n_fft = max(16, min(n_fft, 1 << int(math.log2(max(total, 1)))))
    n_frames = max(1, total // n_fft)
    cols = min(columns, n_frames)
    power = np.zeros((cols, n_fft // 2 + 1))
    counts = np.zeros(cols)
    window = np.hanning(n_fft)
    index = 0
    for block in sf.blocks(str(audio_path), blocksize=n_fft * 64, dtype="float32", fill_value=0.0):
        if index >= n_frames:
            break
        k = min(64, n_frames - index)  # blocks are padded to full length with zeros
        seg = block[: k * n_fft].reshape(k, n_fft)
        col = np.arange(index, index + k) * cols // n_frames
        np.add.at(power, col, np.abs(np.fft.rfft(seg * window, axis=1)) ** 2)
        np.add.at(counts, col, 1)
        index += k
    return 10 * np.log10(power / np.maximum(counts, 1)[:, None] + 1e-12), total / sr, sr


def spectrogram_png(audio_path: Path, png_path: Path) -> Path | None:
    """Draw :func:`spectrogram_summary` of an audio file (80 dB range) as a 1000 x 400 PNG.

    Returns the PNG path, or None (with a warning) where matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend state
    except ImportError:
        logger.warning("matplotlib is not installed: no spectrogram (pip install matplotlib)")
        return None
    db, seconds, sr = spectrogram_summary(audio_path)
    scale, unit = (60.0, "min") if seconds > 600 else (1.0, "s")
    fig = Figure(figsize=(10, 4), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(db.T, origin="lower", aspect="auto", cmap="magma", vmin=db.max() - 80, vmax=db.max(),
                      extent=(0, seconds / scale, 0, sr / 2))
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("frequency (Hz)")
    ax.set_title(f"{Path(audio_path).name}: {seconds:.1f} s at {sr} Hz")
    fig.colorbar(image, ax=ax, label="dB")
    fig.tight_layout()
    fig.savefig(str(png_path))
    return Path(png_path)


# ----- processes ----------------------------------------------------------------------------------

class _Processes:
    """This process's rank and the world size (1 unless launched with WORLD_SIZE > 1), with barriers."""

    def __init__(self):
        self.rank, self.world, self.owned = 0, 1, False
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return
        import datetime

        import torch.distributed as dist

        if not dist.is_initialized():
            # gloo: only barriers travel, and a shorter shard may wait hours for a longer one
            dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
            self.owned = True
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()


class _StopSignals:
    """SIGINT/SIGTERM set a flag the render loop checks between blocks (main thread only)."""

    def __init__(self):
        self.signum = None
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class _Interrupted(Exception):
    pass


# ----- the render ---------------------------------------------------------------------------------

def render(model_path: str | Path, out_dir: str | Path, settings: RenderSettings, progress: bool = True,
           restart: bool = False) -> dict:
    """Render ``settings.streams`` streams of ``settings.seconds`` each into ``out_dir``; resumes.

    Returns the report (also ``out_dir/render_report.json``): paths, seconds, wall time,
    × real time, backend, guard events, spectrograms. Raises KeyboardInterrupt after saving a
    snapshot on SIGINT/SIGTERM, RenderWriteError when the disk is full or the folder read-only,
    RenderStateError when ``out_dir`` holds a different render.
    """
    settings.validate()
    procs = _Processes()
    try:
        return _Render(model_path, out_dir, settings, procs, progress).run(restart)
    finally:
        procs.close()


class _Render:
    def __init__(self, model_path, out_dir, settings: RenderSettings, procs: _Processes, progress: bool):
        self.settings, self.procs, self.progress = settings, procs, progress
        self.out_dir = Path(out_dir)
        self.state_dir = self.out_dir / STATE_DIR
        device = settings.device
        if procs.world > 1 and torch.device(device).type == "cuda" and torch.device(device).index is None:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', procs.rank))}"
        self.model_dir = find_model_dir(model_path)
        model, config = load_model(self.model_dir, device)
        self.sr = int(config["data"]["sample_rate"])
        self.total = int(round(settings.seconds * self.sr))
        self.ids = np.array(shard_streams(settings.streams, procs.rank, procs.world), dtype=np.int64)
        # an engine of one stream when this process has none: it still resolves the backend
        self.engine = make_engine(model, max(len(self.ids), 1), settings.backend, device)
        spec = self.engine.spec
        self.q_levels, self.quantization = self.engine.q_levels, spec["quantization"]
        self.label_weights = parse_label(settings.label, list(self.engine.labels))
        self.prime = None
        if settings.prime:
            self.prime = prime_codes(settings.prime, self.sr, settings.prime_seconds, self.q_levels,
                                     self.quantization, int(getattr(model, "context_samples", 1)))
        del model
        self.temps_all = temperatures(settings.temperature, settings.streams)
        if settings.format == "wav" and PCMWriter.HEADER_BYTES + 2 * self.total > 0xFFFFFFFF:
            raise ValueError(f"--seconds {settings.seconds}: more than a WAV file can hold (4 GiB); "
                             "use --format flac")
        self.paths = stream_paths(self.out_dir, settings.streams, settings.format)
        self.params = _json_roundtrip({
            "model": str(self.model_dir.resolve()),
            "model_sha256": file_sha256(self.model_dir / MODEL_FILE),
            "sample_rate": self.sr, "seconds": settings.seconds, "streams": settings.streams,
            "seed": settings.seed, "temperature": [float(t) for t in self.temps_all],
            "label": settings.label,
            "prime_sha256": None if self.prime is None else hashlib.sha256(self.prime.tobytes()).hexdigest(),
            "format": settings.format, "backend": self.engine.backend, "device": settings.device,
            "world_size": procs.world,
            "guard": {k[len("guard_"):]: v for k, v in asdict(settings).items() if k.startswith("guard_")}
            if settings.guard else False,
            "block_seconds": settings.block_seconds,
        })

    # ----- setup: restart, completed render, parameter check -----

    def _io_error(self, path: Path, err: BaseException, written: int | None = None) -> RenderWriteError:
        reason = getattr(err, "strerror", None) or str(err)
        intact = "nothing was written yet" if not written else \
            f"{written / self.sr:.1f} s of each stream written so far are intact"
        return RenderWriteError(f"cannot write {path}: {reason}; {intact}; free space (or make the folder "
                                "writable) and rerun the same command to resume")

    def _report_if_complete(self) -> dict | None:
        path = self.out_dir / REPORT_FILE
        if not path.is_file():
            return None
        report = json.loads(path.read_text())
        if report.get("status") != "complete":
            return None
        check_params(report.get("params", {}), self.params, self.out_dir)
        missing = [p for p in report["paths"] if not Path(p).is_file()]
        if missing:
            raise RenderStateError(f"{self.out_dir} holds a finished render but {missing[0]} is gone; "
                                   "pass --restart to render it again")
        return report

    def _wipe(self) -> None:
        removed = []
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
            removed.append(STATE_DIR)
        for pattern in ("stream_[0-9][0-9][0-9]*.wav", "stream_[0-9][0-9][0-9]*.flac",
                        "stream_[0-9][0-9][0-9]*.png", REPORT_FILE):
            for p in self.out_dir.glob(pattern):
                p.unlink()
                removed.append(p.name)
        if removed:
            logger.info("--restart: removed %s from %s", ", ".join(sorted(removed)), self.out_dir)

    def _setup(self, restart: bool) -> None:
        """Rank 0: check (or wipe) what ``out_dir`` holds, then record this render's parameters."""
        if restart and self.out_dir.exists():
            self._wipe()
        if self._report_if_complete() is not None:
            return
        params_path = self.state_dir / PARAMS_FILE
        if params_path.is_file():
            check_params(json.loads(params_path.read_text()), self.params, self.out_dir)
            return
        foreign = [p for p in self.paths if p.exists()]
        if foreign:
            raise RenderStateError(f"{foreign[0]} exists and is not part of a resumable render; pass "
                                   "--restart to overwrite it, or choose another --out")
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(params_path, lambda f: f.write(json.dumps(self.params, indent=1).encode()))
        except OSError as err:
            raise self._io_error(Path(err.filename or self.state_dir), err) from err

    def run(self, restart: bool) -> dict:
        if self.procs.rank == 0:
            self._setup(restart)
        self.procs.barrier()
        done = self._report_if_complete()
        if done is not None:
            logger.info("%s: this render is already complete (%d stream(s) x %.1f s); nothing to do",
                        self.out_dir, done["streams"], done["seconds"])
            return done
        if self.procs.rank != 0:
            check_params(json.loads((self.state_dir / PARAMS_FILE).read_text()), self.params, self.out_dir)
        meta = self._render_shard() if len(self.ids) else None
        self.procs.barrier()
        if self.procs.rank != 0:
            return {"paths": [str(self.paths[i]) for i in self.ids], "rank": self.procs.rank, "meta": meta}
        return self._finish()

    # ----- one process's streams -----

    def _snapshot_path(self) -> Path:
        return self.state_dir / f"rank{self.procs.rank}.npz"

    def _work_paths(self) -> list[Path]:
        if self.settings.format == "wav":
            return [self.paths[i] for i in self.ids]
        return [self.state_dir / f"stream_{i:03d}.pcm" for i in self.ids]

    def _draw(self, start: int, n: int, attempts: np.ndarray) -> np.ndarray:
        """Uniforms [B, n] for positions start.., each stream at its own attempt."""
        u = np.empty((len(self.ids), n), dtype=np.float32)
        for a in np.unique(attempts):
            rows = attempts == a
            u[rows] = uniforms(self.settings.seed, self.ids[rows], start, n, int(a))
        return u

    def _generate(self, start: int, n: int, attempts: np.ndarray, bar=None) -> np.ndarray:
        """codes [B, n] for positions start.. in blocks; checks for SIGINT/SIGTERM between blocks.

        A block is ``block_seconds`` of audio, or less where the engine is slow: at most
        CHUNK_WALL_SECONDS of work, so Ctrl-C is answered promptly (the codes do not depend on it).
        """
        block = max(1, int(round(self.settings.block_seconds * self.sr)))
        temps = self.temps_all[self.ids]
        codes = np.empty((len(self.ids), n), dtype=np.int64)
        i = 0
        while i < n:
            m = min(block, self.chunk_cap, n - i)
            tick = time.perf_counter()
            codes[:, i:i + m] = self.engine.generate(self._draw(start + i, m, attempts), temps)
            rate = m / max(time.perf_counter() - tick, 1e-6)
            self.chunk_cap = max(MIN_CHUNK, int(rate * CHUNK_WALL_SECONDS))
            i += m
            if bar is not None:
                bar.update(m / self.sr)
                self.session_samples += m
                bar.set_postfix_str(f"{self.session_samples / self.sr / max(time.perf_counter() - self.t0, 1e-9):.2f}x"
                                    " real time")
            if self.stop.signum is not None:
                raise _Interrupted
        return codes

    def _engine_state(self) -> dict[str, np.ndarray]:
        # copied: an engine's state_dict may hand out views of buffers it updates in place
        return {k: np.array(v, copy=True) for k, v in self.engine.state_dict().items()}

    def _audio(self, codes: np.ndarray) -> np.ndarray:
        return dequantize(codes, self.q_levels, self.quantization)

    def _guard(self, pos: int, n: int, codes: np.ndarray, start_state: dict) -> None:
        """Check each stream's window; rewind and redraw failing ones in place (codes [B, n])."""
        s = self.settings
        audio = self._audio(codes)
        verdicts = {b: guard_verdict(audio[b], self.sr, s) for b in range(len(self.ids))}
        attempts = np.zeros(len(self.ids), dtype=np.int64)
        bad = [b for b, v in verdicts.items() if v]
        while bad:
            retry = [b for b in bad if attempts[b] < s.guard_attempts]
            for b in bad:
                self._event(int(self.ids[b]), pos, verdicts[b], int(attempts[b]), last=b not in retry)
                if b not in retry:
                    self._event(int(self.ids[b]), pos, "gave up", int(attempts[b]), detected=verdicts[b])
            if not retry:
                return
            end_state = self._engine_state()
            self.engine.load_state_dict(start_state)  # the whole batch back to the window start ...
            attempts[retry] += 1
            redrawn = self._generate(pos, n, attempts)
            for b in range(len(self.ids)):  # ... and every stream not redrawn forward again
                if b not in retry:
                    self.engine.set_stream_state(b, self.engine.stream_state(b, end_state))
            codes[retry] = redrawn[retry]
            audio = self._audio(codes[retry])
            verdicts = {b: guard_verdict(a, self.sr, s) for b, a in zip(retry, audio)}
            bad = [b for b in retry if verdicts[b]]

    def _event(self, stream: int, pos: int, kind: str, attempt: int, last: bool = False, **extra) -> None:
        """Record one guard event {stream, seconds, kind, attempt[, detected]} and log it."""
        event = {"stream": stream, "seconds": round(pos / self.sr, 6), "kind": kind, "attempt": attempt, **extra}
        self.events.append(event)
        self.logged_events += 1
        if self.logged_events > LOGGED_EVENTS:
            return
        if self.logged_events == LOGGED_EVENTS:
            logger.warning("guard: %d events so far; the rest go to %s only", LOGGED_EVENTS, REPORT_FILE)
        elif kind == "gave up":
            logger.warning("guard: stream %d at %.1f s still %s after %d redraws; keeping it", stream,
                           pos / self.sr, extra.get("detected"), attempt)
        elif not last:
            logger.info("guard: stream %d at %.1f s: %s; rewinding, redraw %d", stream, pos / self.sr,
                        kind, attempt + 1)

    def _snapshot(self, writers: list[PCMWriter], state: dict, written: int) -> None:
        for w in writers:
            try:
                w.flush()
            except OSError as err:
                raise self._io_error(w.path, err, self.snapshot_written) from err
        meta = {"version": SNAPSHOT_VERSION, "params": self.params, "streams": self.ids.tolist(),
                "events": self.events, "wall_seconds": self.wall_before + time.perf_counter() - self.t0,
                "sessions": self.sessions, "complete": written >= self.total}
        try:
            save_snapshot(self._snapshot_path(), state, written, meta)
        except OSError as err:
            raise self._io_error(self._snapshot_path(), err, self.snapshot_written) from err
        self.snapshot_written = written

    def _render_shard(self) -> dict:
        s, engine = self.settings, self.engine
        snap = self._snapshot_path()
        self.events, self.wall_before, self.sessions, self.logged_events = [], 0.0, 1, 0
        self.chunk_cap = MIN_CHUNK  # grows to CHUNK_WALL_SECONDS of work after the first block
        written = 0
        if snap.is_file():
            state, written, meta = load_snapshot(snap)
            check_params(meta["params"], self.params, self.out_dir)
            if meta["streams"] != self.ids.tolist():
                raise RenderStateError(f"{snap} renders streams {meta['streams']}, this process {self.ids.tolist()}")
            self.events, self.wall_before, self.sessions = meta["events"], meta["wall_seconds"], meta["sessions"] + 1
            engine.reset(label_weights=self.label_weights)
            engine.load_state_dict(state)
            logger.info("resuming %s at %.1f s of %.1f s", self.out_dir, written / self.sr, self.total / self.sr)
        else:
            prime = None if self.prime is None else np.broadcast_to(self.prime, (len(self.ids), len(self.prime)))
            engine.reset(prime_codes=prime, label_weights=self.label_weights)
        self.snapshot_written = written
        if s.format == "flac" and written < self.total:
            logger.info("FLAC: audio is kept as PCM under %s until the render completes, then encoded",
                        self.state_dir)
        logger.info("rendering %d stream(s) x %.1f s at %d Hz with the %s engine%s", len(self.ids), s.seconds,
                    self.sr, engine.backend, f" (process {self.procs.rank} of {self.procs.world})"
                    if self.procs.world > 1 else "")
        writers = []
        try:
            for path in self._work_paths():
                writers.append(PCMWriter(path, self.sr, wav=s.format == "wav",
                                         resume_frames=written if snap.is_file() else None))
        except OSError as err:
            for w in writers:
                w.abandon()
            raise self._io_error(Path(err.filename or self.out_dir), err, written) from err

        window = int(round((s.guard_seconds if s.guard else s.block_seconds) * self.sr))
        window = max(1, window)
        snapshot_every = max(1, int(round(s.snapshot_seconds * self.sr)))
        bar = None
        if self.progress and self.procs.rank == 0:
            from tqdm import tqdm
            bar = tqdm(total=round(self.total / self.sr, 2), initial=round(written / self.sr, 2), unit="s",
                       dynamic_ncols=True, desc="rendered",
                       bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}{postfix}]")
        self.t0, self.session_samples = time.perf_counter(), 0
        pos = written
        ok = False
        try:
            with _StopSignals() as self.stop, torch.inference_mode():
                while pos < self.total:
                    n = min(window - pos % window, self.total - pos)
                    start_state, events_before = self._engine_state(), len(self.events)
                    try:
                        codes = self._generate(pos, n, np.zeros(len(self.ids), dtype=np.int64), bar)
                        if s.guard:
                            self._guard(pos, n, codes, start_state)
                    except _Interrupted:  # back to the window's start: audio, state and events
                        del self.events[events_before:]
                        self._snapshot(writers, start_state, pos)
                        name = signal.Signals(self.stop.signum).name
                        logger.warning("%s: stopped at %.1f s; snapshot saved. Rerun the same command to resume",
                                       name, pos / self.sr)
                        raise KeyboardInterrupt from None
                    pcm = float_to_int16(self._audio(codes))
                    for w, row in zip(writers, pcm):
                        try:
                            w.write(row)
                        except OSError as err:
                            raise self._io_error(w.path, err, self.snapshot_written) from err
                    pos += n
                    if pos - self.snapshot_written >= snapshot_every and pos < self.total:
                        self._snapshot(writers, engine.state_dict(), pos)
                self._snapshot(writers, engine.state_dict(), pos)  # complete
                for w in writers:
                    try:
                        w.close()
                    except OSError as err:
                        raise self._io_error(w.path, err, self.snapshot_written) from err
                ok = True
        finally:
            if not ok:
                for w in writers:
                    w.abandon()
            if bar is not None:
                bar.close()
        if s.format == "flac":
            for i, pcm_path in zip(self.ids, self._work_paths()):
                self._encode_flac(pcm_path, self.paths[i])
        spectrograms = []
        if s.spectrogram:
            for i in self.ids:
                png = spectrogram_png(self.paths[i], self.paths[i].with_suffix(".png"))
                if png is not None:
                    spectrograms.append(str(png))
        return {"events": self.events, "spectrograms": spectrograms}

    def _encode_flac(self, pcm_path: Path, flac_path: Path) -> None:
        """Raw PCM under .state → FLAC, block by block, atomically (deterministic: same bytes every time)."""
        import soundfile as sf

        tmp = flac_path.with_name(flac_path.name + ".tmp")
        block = 1 << 16
        try:
            with open(pcm_path, "rb") as src, sf.SoundFile(str(tmp), "w", samplerate=self.sr, channels=1,
                                                          subtype="PCM_16", format="FLAC") as dst:
                for chunk in iter(lambda: src.read(2 * block), b""):
                    dst.write(np.frombuffer(chunk, dtype="<i2"))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, flac_path)
        except (OSError, RuntimeError, AssertionError) as err:  # soundfile asserts on a short write
            tmp.unlink(missing_ok=True)
            raise self._io_error(flac_path, err, self.total) from err

    # ----- the end: one report for every process's streams -----

    def _finish(self) -> dict:
        s = self.settings
        events, spectrograms, wall, sessions = [], [], 0.0, 1
        for rank in range(self.procs.world):
            path = self.state_dir / f"rank{rank}.npz"
            if path.is_file():
                _, _, meta = load_snapshot(path)
                events += meta["events"]
                wall = max(wall, meta["wall_seconds"])
                sessions = max(sessions, meta["sessions"])
        for i in range(s.streams):
            png = self.paths[i].with_suffix(".png")
            if s.spectrogram and png.is_file():
                spectrograms.append(str(png))
        events.sort(key=lambda e: (e["seconds"], e["stream"], e["attempt"]))
        counts = {}
        for e in events:
            counts[e["kind"]] = counts.get(e["kind"], 0) + 1
        seconds = self.total / self.sr
        report = {
            "status": "complete", "params": self.params, "paths": [str(p) for p in self.paths],
            "spectrograms": spectrograms, "seconds": seconds, "streams": s.streams, "sample_rate": self.sr,
            "wall_seconds": wall, "realtime_factor": seconds / wall if wall else None,
            "realtime_factor_all_streams": seconds * s.streams / wall if wall else None,
            "backend": self.engine.backend, "processes": self.procs.world, "sessions": sessions,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "guard": {"enabled": s.guard, "counts": counts, "events": events},
        }
        try:
            write_atomic(self.out_dir / REPORT_FILE, lambda f: f.write(json.dumps(report, indent=1).encode()))
        except OSError as err:
            raise self._io_error(self.out_dir / REPORT_FILE, err, self.total) from err
        shutil.rmtree(self.state_dir, ignore_errors=True)
        logger.info("rendered %d stream(s) x %.1f s in %.1f s (%.2fx real time per stream, %s backend%s); "
                    "guard events: %s → %s", s.streams, seconds, wall, report["realtime_factor"] or 0,
                    report["backend"], f", {sessions} sessions" if sessions > 1 else "",
                    counts or "none", self.out_dir)
        return report
