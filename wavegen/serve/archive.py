"""``--archive DIR``: the broadcast written as a long-form render, resumable.

Layout::

    DIR/broadcast_00000.wav, broadcast_00001.wav, ...   16-bit PCM, ``part_seconds`` each
    DIR/.state/params.json                             what decides the audio (checked on restart)
    DIR/.state/snapshot.npz                            engine state + samples written, atomically

The parts are written by the render module's :class:`~wavegen.render.PCMWriter` (a valid WAV
after every flush) and the state by its snapshots (:func:`~wavegen.render.save_snapshot`).
A snapshot is taken every ``snapshot_seconds`` of audio, after the parts were flushed up to
that point. A restarted server with the same arguments cuts the parts back to the snapshot
and continues from there: the parts come out byte-identical to a server that never stopped
(the uniforms are keyed by position, so the same samples are drawn again).

Parts, not one file: a WAV holds at most 4 GiB (37 hours at 16 kHz), and a station may play
for weeks.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from wavegen.errors import WavegenError
from wavegen.fileio import FolderLock, check_writable, ensure_folder, not_a_file, read_json_object, write_json
from wavegen.render import PCMWriter, load_snapshot, save_snapshot
from wavegen.render.folder import binding

logger = logging.getLogger(__name__)

STATE_DIR = ".state"
PARAMS_FILE = "params.json"
SNAPSHOT_FILE = "snapshot.npz"
SNAPSHOT_VERSION = 1
NON_BINDING = ("model",)  # a moved model folder is the same model when its weights' hash matches


class ServeError(WavegenError, RuntimeError):
    """A refusal or failure of ``wavegen serve`` the user can act on (the message says how)."""


def part_path(folder: Path, index: int) -> Path:
    return Path(folder) / f"broadcast_{index:05d}.wav"


def check_archive_folder(folder: str | Path) -> None:
    """WavegenError in one line unless ``folder`` (serve's --archive) can be made and written in: serve
    calls it before the model loads, so a folder that cannot work does not cost the load and the timing."""
    ensure_folder(folder, "--archive folder")
    check_writable(folder, "--archive folder")


class Archive:
    """The broadcast's archive in ``folder``; one writer at a time (a FolderLock on it).

    ``open()`` → (engine state or None, samples already archived, snapshot meta); then
    ``write(pcm)`` for every block and ``snapshot(state, position, meta)`` now and then.
    """

    def __init__(self, folder: str | Path, sample_rate: int, params: dict, part_seconds: float):
        self.folder = Path(folder)
        self.state_dir = self.folder / STATE_DIR
        self.sample_rate = int(sample_rate)
        self.params = json.loads(json.dumps(params))
        self.part_frames = max(1, int(round(part_seconds * self.sample_rate)))
        self.lock = FolderLock(self.folder, "wavegen serve archive")
        self.position = 0  # samples written
        self.snapshot_position = 0
        self.writer: PCMWriter | None = None

    # ----- opening: params, snapshot, parts -----

    def _check_params(self, saved: dict, where: Path) -> None:
        for key, value in self.params.items():
            if key not in NON_BINDING and binding(key, saved.get(key)) != binding(key, value):
                raise ServeError(f"{self.folder} archives a broadcast with {key}={saved.get(key)!r}, but this "
                                 f"command asks for {key}={value!r} ({where}); rerun the original command to "
                                 "continue it, or choose another --archive")

    def open(self) -> tuple[dict[str, np.ndarray] | None, int, dict]:
        try:
            self.lock.acquire()
        except OSError as err:  # fileio says why a folder cannot be made; a name it cannot even look up is this
            raise self._folder_error(err) from None
        try:
            return self._open()
        except BaseException as err:
            self.lock.release()
            if isinstance(err, OSError):
                raise self._folder_error(err) from None
            raise

    def _folder_error(self, err: OSError) -> ServeError:
        where = f" ({err.filename})" if err.filename and Path(err.filename) != self.folder else ""
        return ServeError(f"--archive {self.folder}: cannot create or use it{where}: {err.strerror or err}; "
                          "choose a folder that can be written, or make this one writable")

    def _open(self) -> tuple[dict[str, np.ndarray] | None, int, dict]:
        params_path = self.state_dir / PARAMS_FILE
        if self._state_file(params_path):
            self._check_params(self._read_params(params_path), params_path)
        else:
            if part_path(self.folder, 0).exists():
                raise ServeError(f"{part_path(self.folder, 0)} exists but {self.folder} has no {STATE_DIR}/"
                                 f"{PARAMS_FILE}: it is not an archive wavegen serve can continue; choose another "
                                 "--archive")
            self.state_dir.mkdir(parents=True, exist_ok=True)
            write_json(params_path, self.params)
        state, meta = None, {}
        snap = self.state_dir / SNAPSHOT_FILE
        if self._state_file(snap):
            state, self.position, meta = self._read_snapshot(snap)
            self._check_params(meta.get("params", {}), snap)
        self.snapshot_position = self.position
        index, frames = divmod(self.position, self.part_frames)
        self._check_parts(index, frames)  # before anything is cut or removed
        for later in sorted(self.folder.glob("broadcast_[0-9][0-9][0-9][0-9][0-9].wav")):
            if int(later.stem.split("_")[1]) > index:  # written after the snapshot: written again
                later.unlink()
        self.writer = self._writer(index, frames)
        if self.position:
            logger.info("archive %s: continuing at %.1f s", self.folder, self.position / self.sample_rate)
        return state, self.position, meta

    def _damaged(self, path: Path, why) -> ServeError:
        if isinstance(why, BaseException):
            why = f"{type(why).__name__}: {why}"
        return ServeError(f"{path} is damaged ({why}): {self.folder} cannot be continued; choose another --archive "
                          f"(the WAV parts in {self.folder} stay as they are)")

    def _state_file(self, path: Path) -> bool:
        """Whether a state file is at ``path`` (True too for a link to nothing: its read says so). Something
        else there (a folder, a FIFO: never opened, it would block) is refused, not taken for no file: an
        archive without a snapshot restarts from 0, over its parts."""
        if not os.path.lexists(path):
            return False
        kind = not_a_file(path)
        if kind is not None:
            raise self._damaged(path, f"a {kind}, not a file")
        return True

    def _read_params(self, path: Path) -> dict:
        """.state/params.json → the dict serve wrote there; ServeError naming it when it cannot be read or
        holds no JSON object (not JSON, not UTF-8 text, a list, nested too deep to parse)."""
        try:
            return read_json_object(path)
        except OSError as err:
            raise ServeError(f"cannot read {path}: {err.strerror or err}; make it readable, or choose another "
                             "--archive") from None
        except ValueError as err:
            raise self._damaged(path, str(err)) from None

    def _read_snapshot(self, path: Path) -> tuple[dict[str, np.ndarray], int, dict]:
        try:
            state, position, meta = load_snapshot(path)
        except WavegenError as err:  # render's message tells a render what to do: restated for serve
            raise self._damaged(path, err.__cause__ or err) from None
        if not isinstance(meta, dict) or position < 0:
            raise self._damaged(path, "its record of the archive is not one wavegen serve wrote")
        return state, position, meta

    def _check_parts(self, index: int, frames: int) -> None:
        """Every part the snapshot counts is there, the current one with its ``frames`` samples."""
        for k in range(index + 1 if frames else index):
            path = part_path(self.folder, k)
            if not path.is_file():
                raise ServeError(f"{path} is missing but the archive's snapshot counts it: the archive was changed "
                                 "since; choose another --archive")
        path = part_path(self.folder, index)
        if frames and path.stat().st_size < PCMWriter.HEADER_BYTES + 2 * frames:
            raise self._short_part(path, frames)

    @staticmethod
    def _short_part(path: Path, frames: int) -> ServeError:
        return ServeError(f"{path} holds fewer than the {frames} samples the archive's snapshot counts: the "
                          "archive was changed since; choose another --archive")

    def _writer(self, index: int, frames: int) -> PCMWriter:
        path = part_path(self.folder, index)
        try:
            return PCMWriter(path, self.sample_rate, wav=True, resume_frames=frames if frames else None)
        except WavegenError:  # PCMWriter: the part is shorter than the snapshot says (or no WAV)
            raise self._short_part(path, frames) from None
        except OSError as err:
            raise self._write_error(path, err) from err

    # ----- writing -----

    def _write_error(self, path: Path, err: OSError) -> ServeError:
        return ServeError(f"cannot write {path}: {err.strerror or err}; the archive up to "
                          f"{self.snapshot_position / self.sample_rate:.1f} s is intact; free space (or make the "
                          "folder writable) and rerun the same command to continue")

    def write(self, pcm: np.ndarray) -> None:
        """pcm [n] int16, appended across as many parts as it reaches."""
        pcm = np.asarray(pcm, dtype=np.int16)
        done = 0
        while done < len(pcm):
            room = self.part_frames - self.position % self.part_frames
            take = min(room, len(pcm) - done)
            try:
                self.writer.write(pcm[done:done + take])
            except OSError as err:
                raise self._write_error(self.writer.path, err) from err
            done += take
            self.position += take
            if self.position % self.part_frames == 0:  # the part is full: on to the next
                self._close_writer()
                self.writer = self._writer(self.position // self.part_frames, 0)

    def _close_writer(self) -> None:
        try:
            self.writer.close()
        except OSError as err:
            raise self._write_error(self.writer.path, err) from err

    def snapshot(self, engine_state: dict[str, np.ndarray], meta: dict) -> None:
        """Flush the current part, then record ``engine_state`` at the current position."""
        try:
            self.writer.flush()
            meta = {**meta, "version": SNAPSHOT_VERSION, "params": self.params}
            save_snapshot(self.state_dir / SNAPSHOT_FILE, engine_state, self.position, meta)
        except OSError as err:
            raise self._write_error(Path(err.filename or self.state_dir), err) from err
        self.snapshot_position = self.position

    def close(self) -> None:
        try:
            if self.writer is not None:
                self._close_writer()
        finally:
            self.writer = None
            self.lock.release()

    def abandon(self) -> None:
        """After a failure: close without raising (what reached the disk stays; a restart cuts back)."""
        if self.writer is not None:
            self.writer.abandon()
            self.writer = None
        self.lock.release()
