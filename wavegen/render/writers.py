"""What a render puts on disk while it runs: streaming PCM writers, snapshots, FLAC at the end.

- :class:`PCMWriter` appends 16-bit PCM to a WAV (or a headerless ``.pcm``) in place; its
  header is rewritten at every flush, so the file is always a valid WAV up to the last
  snapshot, and a resume cuts it back to the snapshot's length.
- :func:`save_snapshot` / :func:`load_snapshot`: one process's state as a pickle-free .npz,
  written atomically. A render keeps the snapshot it replaces as ``*.prev.npz``: a snapshot damaged
  after it was written (a truncated file, a bad sector) is answered by falling back to the
  previous one, which is safe because the audio files only grow between snapshots and a
  resume cuts them back to whatever snapshot it starts from.
- :func:`reserve_open_files`: the writers keep one file open per stream, so the open-file
  limit is raised (or the render refused) before any of them is opened.
- :func:`encode_flac`: FLAC cannot be truncated or appended to safely (the encoder buffers
  whole frames that a flush does not write), so a FLAC render keeps raw PCM and encodes it
  when the render completes: the same encoder input gives the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from wavegen.config import ConfigError
from wavegen.fileio import atomic_write, fsync_dir
from wavegen.progress import counted
from wavegen.render.settings import WAV_HEADER_BYTES, RenderStateError
from wavegen.signals import signals_held

try:
    import resource
except ImportError:  # not POSIX (Windows)
    resource = None

logger = logging.getLogger("wavegen.render")

OPEN_FILES_MARGIN = 64  # files a render holds open besides its writers (libraries, lock, snapshots, PNGs)
NO_RLIMIT_OPEN_FILES = 8192  # where there is no RLIMIT_NOFILE: the C runtime's limit (Windows' UCRT)
SAY_CHECK_BYTES = 1 << 30  # a resume reading this much of its files (their CRC-32) says so first


def open_file_limit() -> int | None:
    """This process's soft limit on open files (None when unlimited)."""
    if resource is None:
        return NO_RLIMIT_OPEN_FILES
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def reserve_open_files(files: int, streams: int) -> None:
    """Make room for ``files`` writers open at once (plus OPEN_FILES_MARGIN): raise the soft
    open-file limit towards the hard one where it is lower; ConfigError when that is not enough.

    ``streams``: the render's --streams (``files`` is this process's share of them). Checked
    before any path is listed or file created, so an impossible --streams fails at once.
    """
    needed = files + OPEN_FILES_MARGIN
    limit = open_file_limit()
    if resource is not None and limit is not None and limit < needed:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # macOS: above kern.maxfilesperproc
            pass
        limit = open_file_limit()
        if limit is not None and limit >= needed:
            logger.info("raised the open-file limit to %d for %s", limit, counted(files, "stream file"))
    if limit is not None and limit < needed:
        share = f" ({files} in this process)" if files != streams else ""
        raise ConfigError(f"--streams {streams}{share} needs about {needed} open files, the limit is {limit}: "
                          "raise it with ulimit -n or render fewer streams per folder")


def _wav_header(sample_rate: int, data_bytes: int) -> bytes:
    """The 44-byte header of the 16-bit mono PCM WAV a render writes, its data ``data_bytes`` long."""
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, 1, sample_rate,
                       2 * sample_rate, 2, 16, b"data", data_bytes)


def _not_ours(head: bytes, sample_rate: int) -> str | None:
    """None where ``head`` (a file's first WAV_HEADER_BYTES) is the header a render at ``sample_rate`` writes, but
    for its sizes; else what the file is, as a person reads it: "a stereo 44100 Hz 16-bit WAV", "not a WAV"."""
    ours = _wav_header(sample_rate, 0)
    if head[:4] + head[8:40] == ours[:4] + ours[8:40]:
        return None
    if len(head) < WAV_HEADER_BYTES or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return "not a WAV"
    if head[12:16] != b"fmt ":
        return "a WAV laid out otherwise (no format chunk first)"
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", head[20:36])
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}-channel")
    kind = {1: f"{bits}-bit", 3: f"{bits}-bit float"}.get(tag, f"{bits}-bit (format tag {tag:#06x})")
    what = f"a {layout} {rate} Hz {kind} WAV"
    if (tag, channels, rate, bits) == (1, 1, sample_rate, 16):  # as ours but for its layout (extra chunks)
        what += " laid out otherwise (its audio is not right after a 16-byte format chunk)"
    return what


class PCMWriter:
    """16-bit mono PCM appended block by block to a WAV file (or a headerless ``.pcm``), resumable.

    ``resume_frames=N`` reopens an existing file and cuts it back to its first N samples. The
    WAV header's sizes are rewritten at every :meth:`flush` (which also fsyncs), so after a
    crash the file is a valid WAV holding at least every flushed sample. ``crc32``: the CRC-32 of
    the samples' bytes so far (a resume reads them); ``resume_crc32``, the one recorded with the
    snapshot: a file whose first N samples differ (rewritten by an editor, another format) is
    refused, not continued into audio that is half something else.
    """

    HEADER_BYTES = WAV_HEADER_BYTES

    def __init__(self, path: Path, sample_rate: int, wav: bool = True, resume_frames: int | None = None,
                 resume_crc32: int | None = None):
        self.path, self.sample_rate, self.wav = Path(path), int(sample_rate), wav
        header = self.HEADER_BYTES if wav else 0
        self.crc32 = 0
        if resume_frames is None:
            self.file = open(self.path, "wb")
            self.frames = 0
            if wav:
                self.file.write(self._header())
        else:
            try:
                self.file = open(self.path, "r+b")
            except FileNotFoundError:
                raise RenderStateError(f"{self.path} is missing: it was removed since the render's last snapshot "
                                       f"(which holds {counted(resume_frames, 'sample')} of it); rerun with "
                                       "--restart to start over") from None
            try:
                self._check_resumable(resume_frames, resume_crc32)
            except BaseException:
                self.file.close()
                raise
            self.file.truncate(header + 2 * resume_frames)
            self.file.seek(0, os.SEEK_END)
            self.frames = resume_frames

    def _check_resumable(self, frames: int, crc32: int | None) -> None:
        """RenderStateError unless the open file begins with ``frames`` samples as this writer wrote them:
        its header (16-bit mono PCM at this rate, its data right after), its length, their CRC-32 (where
        ``crc32`` is given); sets :attr:`crc32` from the file's samples."""
        header = self.HEADER_BYTES if self.wav else 0
        size = os.fstat(self.file.fileno()).st_size
        changed = "it was changed since; rerun with --restart to start over"
        if self.wav:
            head = self.file.read(header)
            if len(head) < header:
                raise RenderStateError(f"{self.path} is cut short ({counted(size, 'byte')}, less than a WAV header; "
                                       f"its snapshot counts {counted(frames, 'sample')}): {changed}")
            other = _not_ours(head, self.sample_rate)  # the sizes aside (the data's is at least the snapshot's)
            if other is not None:
                raise RenderStateError(f"{self.path} is {other}, not the mono {self.sample_rate} Hz 16-bit WAV this "
                                       f"render writes: {changed}")
        if size < header + 2 * frames:
            raise RenderStateError(f"{self.path} holds {counted((size - header) // 2, 'sample')}, fewer than the "
                                   f"{frames} its snapshot claims: {changed}")
        self.file.seek(header)
        left, crc = 2 * frames, 0
        while left:
            block = self.file.read(min(left, 1 << 20))
            crc, left = zlib.crc32(block, crc), left - len(block)
        if crc32 is not None and crc != crc32:
            raise RenderStateError(f"{self.path}: its first {counted(frames, 'sample')} are not the ones this render "
                                   f"wrote (their CRC-32 differs from its snapshot's): {changed}")
        self.crc32 = crc

    def _header(self) -> bytes:
        return _wav_header(self.sample_rate, 2 * self.frames)

    def write(self, pcm: np.ndarray) -> None:
        """pcm [n] int16."""
        data = np.ascontiguousarray(pcm, dtype="<i2").tobytes()
        self.file.write(data)
        self.crc32 = zlib.crc32(data, self.crc32)
        self.frames += len(pcm)

    def flush(self, header: bool = True) -> None:
        """The samples written so far on disk; with ``header``, a WAV's header counting them too."""
        if self.wav and header:
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


class StreamWriters:
    """One :class:`PCMWriter` per stream of a process; ``io_error(path, err)`` turns an OSError
    into the error to raise (it knows what is intact). Opening a later file failing closes the
    earlier ones."""

    def __init__(self, paths: list[Path], sample_rate: int, wav: bool, resume_frames: int | None, io_error,
                 resume_crc32s: list[int] | None = None):
        self.io_error = io_error
        self.writers: list[PCMWriter] = []
        crcs = resume_crc32s if resume_crc32s is not None and len(resume_crc32s) == len(paths) else [None] * len(paths)
        if resume_frames is not None and 2 * resume_frames * len(paths) >= SAY_CHECK_BYTES:  # read whole: minutes
            logger.info("checking the %s against the snapshot (%.1f GB read) before resuming",
                        counted(len(paths), "file"), 2 * resume_frames * len(paths) / 1e9)
        try:
            for path, crc in zip(paths, crcs):
                self.writers.append(PCMWriter(path, sample_rate, wav=wav, resume_frames=resume_frames,
                                              resume_crc32=crc))
        except OSError as err:
            self.abandon()
            raise io_error(Path(err.filename or path), err) from err
        except BaseException:
            self.abandon()
            raise

    def _each(self, action, rows=None) -> None:
        for k, w in enumerate(self.writers):
            try:
                action(w) if rows is None else action(w, rows[k])
            except OSError as err:
                raise self.io_error(w.path, err) from err

    @property
    def crc32s(self) -> list[int]:
        """Each file's CRC-32 of its samples so far (PCMWriter.crc32)."""
        return [w.crc32 for w in self.writers]

    def write(self, pcm: np.ndarray) -> None:
        """pcm [B, n] int16, one row per writer."""
        self._each(PCMWriter.write, pcm)

    def flush(self, header: bool = True) -> None:
        self._each(lambda w: w.flush(header))

    def close(self) -> None:
        self._each(PCMWriter.close)

    def abandon(self) -> None:
        for w in self.writers:
            w.abandon()


class _KeptErrorFile:
    """The file soundfile encodes into, for its C callbacks: the first OSError of a write, seek or
    tell (a full disk) is kept, not raised, so cffi does not print it as an ignored exception, and
    :func:`encode_flac` raises it once soundfile returns; every call after it does nothing."""

    def __init__(self, file):
        self.file, self.error = file, None

    def _kept(self, call, failed):
        if self.error is None:
            try:
                return call()
            except OSError as err:
                self.error = err
        return failed

    def write(self, data) -> int:
        return self._kept(lambda: self.file.write(data), 0)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._kept(lambda: self.file.seek(offset, whence), -1)

    def tell(self) -> int:
        return self._kept(self.file.tell, -1)


def encode_flac(pcm_path: Path, flac_path: Path, sample_rate: int) -> None:
    """Raw 16-bit PCM → FLAC, block by block (memory flat), atomically; deterministic bytes.

    Raises OSError (a failed write of the FLAC file, as the file system reported it, or of reading
    the PCM), or RuntimeError saying what the encoder reported where there was none. A Ctrl-C or
    SIGTERM is answered between blocks (:func:`wavegen.signals.signals_held`): its KeyboardInterrupt leaves no
    partial file.
    """
    import soundfile as sf

    def write(f) -> None:
        block, out = 1 << 16, _KeptErrorFile(f)
        try:
            with open(pcm_path, "rb") as src:
                with signals_held():
                    dst = sf.SoundFile(out, "w", samplerate=sample_rate, channels=1, subtype="PCM_16",
                                       format="FLAC")
                try:
                    for chunk in iter(lambda: src.read(2 * block), b""):
                        with signals_held():
                            dst.write(np.frombuffer(chunk, dtype="<i2"))
                finally:
                    with signals_held():
                        dst.close()
        except (RuntimeError, AssertionError) as err:  # soundfile: a short write asserts, or libsndfile's error
            if out.error is not None:
                raise out.error from None
            raise RuntimeError(f"the FLAC encoder (libsndfile) failed: {str(err) or type(err).__name__}") from err
        if out.error is not None:  # a short write the encoder did not notice: never a truncated FLAC
            raise out.error

    atomic_write(flac_path, write)


# ----- snapshots ----------------------------------------------------------------------------------

def previous_snapshot(path: Path) -> Path:
    """Where the snapshot that ``path`` replaced is kept: rank0.npz → rank0.prev.npz."""
    path = Path(path)
    return path.with_name(path.stem + ".prev" + path.suffix)


def save_snapshot(path: Path, engine_state: dict[str, np.ndarray], written: int, meta: dict,
                  keep_previous: bool = False) -> None:
    """One process's render state → ``path`` (.npz, no pickle), atomically.

    ``engine_state``: the engine's state_dict (numpy arrays); ``written``: samples per stream
    on disk at this snapshot; ``meta``: JSON-able (params, events, wall time ...).
    ``keep_previous``: the snapshot it replaces becomes :func:`previous_snapshot` (the
    fallback of ``load_snapshot(fallback=True)``).
    """
    path = Path(path)
    arrays = {f"engine.{k}": np.asarray(v) for k, v in engine_state.items()}
    arrays["written"] = np.asarray(written, dtype=np.int64)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    if keep_previous and path.is_file():
        os.replace(path, previous_snapshot(path))  # a crash before the next line: load falls back to it
    atomic_write(path, lambda f: np.savez(f, **arrays))


# what reading a snapshot raises where it is missing, unreadable or damaged
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def _meta(z) -> dict:
    """The meta (params, streams, events, ...) of an open snapshot ``z``."""
    return json.loads(z["meta"].tobytes().decode())


def _read_snapshot(path: Path) -> tuple[dict[str, np.ndarray], int, dict]:
    try:
        with np.load(path, allow_pickle=False) as z:
            engine = {k[len("engine."):]: z[k] for k in z.files if k.startswith("engine.")}
            return engine, int(z["written"]), _meta(z)
    except _UNREADABLE as err:
        raise RenderStateError(f"{path}: unreadable render snapshot ({type(err).__name__}: {err}); "
                               "rerun with --restart to start the render over") from err


def load_snapshot(path: Path, fallback: bool = False) -> tuple[dict[str, np.ndarray], int, dict]:
    """``path`` → (engine state, samples written per stream, meta); RenderStateError naming a damaged file.

    ``fallback=True``: where ``path`` is missing or damaged, the previous snapshot
    (:func:`previous_snapshot`) is read instead, with a warning naming the damaged file, and put in its place
    (renamed over it): the next ``save_snapshot(keep_previous=True)`` keeps it, not the damaged file, as the fallback.
    """
    path = Path(path)
    prev = previous_snapshot(path)
    if not fallback:
        return _read_snapshot(path)
    try:
        return _read_snapshot(path)
    except RenderStateError as err:
        if not prev.is_file():
            raise
        what = "is missing" if not path.exists() else f"is damaged ({type(err.__cause__).__name__}: {err.__cause__})"
        try:
            state = _read_snapshot(prev)
        except RenderStateError:
            raise RenderStateError(f"{path} {what}, and so is the snapshot before it, {prev.name}; rerun with "
                                   "--restart to start the render over") from None
        logger.warning("%s %s; resuming from the snapshot before it, %s (%.0f samples per stream)",
                       path, what, prev.name, state[1])
        # the good one back in the newest's place: the next save_snapshot(keep_previous=True) would otherwise
        # keep the damaged (or unreadable: a bad sector) file as the fallback, and a crash or full disk in that
        # save leave no snapshot to resume; at worst one snapshot's interval is rendered again, to the same audio
        try:
            os.replace(prev, path)
            fsync_dir(path.parent)
        except OSError:  # a folder that takes no rename: the render's own writes there say why
            pass
        return state


def recorded_meta(path: Path) -> tuple[dict | None, str | None]:
    """The meta (params, ...) the snapshot ``path`` recorded, else the one it replaced (:func:`previous_snapshot`),
    and the name of the file read; (None, None) where neither is readable. Read only: nothing renamed."""
    for candidate in (Path(path), previous_snapshot(path)):
        if candidate.is_file():
            try:
                with np.load(candidate, allow_pickle=False) as z:
                    return _meta(z), candidate.name
            except _UNREADABLE:
                continue
    return None, None


def flushed_samples(path: Path, sample_rate: int) -> tuple[int, str | None]:
    """(samples per stream the WAV ``path`` declares in its header, None) for a WAV a render at ``sample_rate``
    writes: what its last snapshot holds (the header is counted just after each, shard's _save); 0 where it is
    missing, shorter than a header, or never counted (a render stopped before its first snapshot: the header of
    an empty file, whatever its buffered audio after it). (0, what it is) for a file that is not such a WAV,
    whose header is another's (:func:`_not_ours`: another rate, channels or format)."""
    try:
        with open(path, "rb") as f:
            head = f.read(WAV_HEADER_BYTES)
    except OSError:
        return 0, None
    if len(head) < WAV_HEADER_BYTES:
        return 0, None
    other = _not_ours(head, sample_rate)
    if other is not None:
        return 0, other
    return struct.unpack("<I", head[40:44])[0] // 2, None


def snapshot_exists(path: Path) -> bool:
    """A snapshot at ``path``, or the one it replaced (see :func:`load_snapshot`'s fallback)."""
    return Path(path).is_file() or previous_snapshot(path).is_file()
