"""``--archive DIR``: the broadcast written as a long-form render, resumable.

Layout::

    DIR/broadcast_00000.wav, broadcast_00001.wav, ...   16-bit PCM, ``part_seconds`` each
    DIR/.state/params.json                             what decides the audio (checked on restart)
    DIR/.state/snapshot.npz                            engine state + samples written, atomically
    DIR/.state/snapshot.prev.npz                       the snapshot it replaced (render's fallback)

The parts are written by the render module's :class:`~wavegen.render.PCMWriter` (a valid WAV
after every flush) and the state by its snapshots (:func:`~wavegen.render.save_snapshot`).
A snapshot is taken every ``snapshot_seconds`` of audio, after the parts' samples were flushed up
to that point; the part's header counts them after it (render's order). A restarted server with
the same arguments cuts the parts back to the snapshot and continues from there: the parts come
out byte-identical to a server that never stopped (the uniforms are keyed by position, so the same
samples are drawn again). Each snapshot keeps the one it replaces (``snapshot.prev.npz``, as a
render keeps ``rank{r}.prev.npz``): where the newest is damaged (cut short by a crash, a bad sector; a
state the engine does not take, or whose label is not the blend it holds), missing, or something else than a
file (a folder, a FIFO: never opened; a link to nothing, named with its target), a restart goes on from the one
before it, said in one line naming the damaged file, which is moved aside, not deleted (``snapshot.npz.damaged``;
a link itself, its target untouched), and writes the audio after it again (the same samples). One this user may
not read (its permissions) is not damaged: refused naming it, nothing written over. A params.json damaged or gone
is written again from the snapshot (it records the same parameters), said; a snapshot gone while the parts hold
audio one counted is refused, the parts untouched.

A label switch (POST /label) writes its snapshot as both files: only snapshots from the switch on record
the new label, and a fallback to one before it would undo the switch.

Parts, not one file: a WAV holds at most 4 GiB (37 hours at 16 kHz), and a station may play
for weeks. ``keep_parts`` (--archive-keep-parts) bounds the disk it takes: at each snapshot, the
parts older than the newest ``keep_parts`` are removed, except those from the part the previous snapshot
ends in on (its fallback's): at most ``keep_parts`` + ceil(snapshot gap / part length) parts are kept. The
snapshot records the oldest part kept, ``first_part``, so a restart does not take the removed ones for
parts lost. Only that rotation moves ``first_part`` (after a fallback, up to the oldest part there: the
damaged snapshot's rotation removed those below it, no further than the fewest ``keep_parts`` known could reach
from the newest part there; the snapshot put in place records it, and each snapshot records its server's
``keep_parts``, so a restart without the option after a rotation knows it too): a part moved away (off a full
disk) that no rotation removed is said once, at the restart that finds it gone (the snapshots record it), and kept
when it is brought back. Parts are independent
WAV files, not needed to continue: one cut short since (a crash, a disk problem) is said at a restart,
kept as it is (:mod:`wavegen.serve.archive_folder`). Opening it: :mod:`wavegen.serve.archive_resume`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from wavegen.errors import WavegenError
from wavegen.fileio import not_a_file
from wavegen.folders import FolderLock, link_target, link_to_nothing
from wavegen.render import PCMWriter, save_snapshot
from wavegen.render.model_change import TENSORS_KEY, same_model
from wavegen.render.params_check import ADDED_LATER, binding, setting_differs
from wavegen.render.writers import recorded_meta

logger = logging.getLogger(__name__)

STATE_DIR = ".state"
PARAMS_FILE = "params.json"
SNAPSHOT_FILE = "snapshot.npz"
SNAPSHOT_VERSION = 1
MODEL_FOLDER_KEY = "model_folder"  # params: the model folder it began with, resolved (its run is searched)
# params.json: the most audio the server that began the archive at 0 leaves without a snapshot (its bound)
UNSNAPSHOT_KEY = "unsnapshot_seconds"
KEEP_PARTS_KEY = "keep_parts"  # a snapshot's meta: the --archive-keep-parts of the server that wrote it (0: none)
GONE_SAID_KEY = "parts_said_gone"  # a snapshot's meta: the parts a restart said gone, as runs [first, last]
PART_FRAMES_KEY = "part_frames"  # params.json: the parts' length (samples) the archive was begun (at 0) with
# a moved model folder is the same model when its weights match; TENSORS_KEY is judged with model_sha256
NON_BINDING = ("model", TENSORS_KEY, MODEL_FOLDER_KEY, UNSNAPSHOT_KEY, PART_FRAMES_KEY)
PART_GLOB = "broadcast_[0-9][0-9][0-9][0-9][0-9].wav"


class ServeError(WavegenError, RuntimeError):
    """A refusal or failure of ``wavegen serve`` the user can act on (the message says how)."""


def part_path(folder: Path, index: int) -> Path:
    return Path(folder) / f"broadcast_{index:05d}.wav"


def parts_in(folder: Path) -> list[tuple[int, Path]]:
    """The archive's parts in ``folder`` (whatever is at their names), as (index, path), oldest first."""
    return sorted((int(path.stem.split("_")[1]), path) for path in Path(folder).glob(PART_GLOB))


def check_state_dir(folder: str | Path) -> None:
    """ServeError in one line where ``FOLDER/.state`` is there but is no folder (a link to nothing, named with its
    target; a link to a file; a file): the archive keeps its params.json and snapshots in it, and its making would
    fail as "File exists" only once the model was loaded and timed (or an archive with parts be taken for one
    without params.json). Looked at only: nothing is written, here or where the link leads."""
    path = Path(folder) / STATE_DIR
    if not os.path.lexists(path) or os.path.isdir(path):
        return
    nothing = link_to_nothing(path)
    if nothing is not None:
        said = nothing[0]
    elif not os.path.exists(path):  # a link that cannot be followed here (its permissions): its use says why
        return
    else:
        kind = f"a {not_a_file(path) or 'file'}, not a folder"
        said = f"{path} is a link to {link_target(path)}, {kind}" if path.is_symlink() \
            else f"{path} is {kind}"
    raise ServeError(f"{said}: the archive keeps its {PARAMS_FILE} and snapshots in a folder there; put the "
                     f"archive's {STATE_DIR} folder back (or point the link at it), or choose another --archive")


def snapshot_params(state_dir: Path) -> tuple[dict | None, str | None]:
    """(The parameters the archive's snapshot under ``state_dir`` recorded, the name of the file read: the newest
    snapshot, else the one it replaced, :func:`~wavegen.render.writers.recorded_meta`); (None, None) where
    neither is readable or records them. Read only."""
    meta, name = recorded_meta(Path(state_dir) / SNAPSHOT_FILE)
    params = meta.get("params") if isinstance(meta, dict) else None
    return (params, name) if isinstance(params, dict) and params else (None, None)


class Archive:
    """The broadcast's archive in ``folder``; one writer at a time (a FolderLock on it).

    ``open()`` → (engine state or None, samples already archived, snapshot meta); then
    ``write(pcm)`` for every block and ``snapshot(state, position, meta)`` now and then.
    """

    def __init__(self, folder: str | Path, sample_rate: int, params: dict, part_seconds: float, keep_parts: int = 0,
                 label_blend=None, find_weights=None, unsnapshot_seconds: float | None = None, state_fits=None):
        self.folder = Path(folder)
        self.state_dir = self.folder / STATE_DIR
        self.sample_rate = int(sample_rate)
        self.params = json.loads(json.dumps(params))
        self.part_frames = max(1, int(round(part_seconds * self.sample_rate)))
        self.keep_parts = int(keep_parts)  # the newest parts kept (0: all)
        self.label_blend = label_blend  # a --label → what the engine gets (ValueError: not this model's), or None
        # (tensors digest or None, model_sha256) → a model that holds those weights, for people ("runs/x --checkpoint
        # step_5"), or None: named where another model is refused
        self.find_weights = find_weights
        # the most audio a server stopped before its first snapshot leaves in the parts (None: not checked); more
        # without a snapshot means the snapshot was lost, and starting over would write over the archive
        self.unsnapshot_seconds = unsnapshot_seconds
        # (engine state, position, meta) of a snapshot → None where the engine takes it, else what does not fit
        # (said): one that does not is fallen back from as a damaged one (archive_resume.engine_fit); None: not checked
        self.state_fits = state_fits
        self.first_part = 0  # the oldest part kept
        # the parts gone that a restart said so, as runs [first, last] (archive_folder.say_earlier_parts): each
        # snapshot records them, so that a later restart does not say them again
        self.gone_said: list[list[int]] = []
        self.lock = FolderLock(self.folder, "wavegen serve archive")
        self.position = 0  # samples written
        self.snapshot_position = 0
        self.writer: PCMWriter | None = None

    # ----- opening: params, snapshot, parts -----

    def _check_params(self, saved: dict, where: Path) -> None:
        for key, value in self.params.items():
            if key == "model_sha256" and not same_model(saved, self.params):
                from wavegen.serve.archive_model import model_refusal  # it imports this module

                raise model_refusal(self.folder, saved, self.params, where, self.find_weights)
            before = saved.get(key, ADDED_LATER.get(key))  # pitch_sync: 0 in an archive begun before serve took it
            if key not in NON_BINDING and key != "model_sha256" and self._bound(key, before) != self._bound(key, value):
                live = " (a label switched to while it played, POST /label, goes on by itself)" if key == "label" \
                    else ""
                # as a render says it: the values as typed (a float32 0.9 is 0.9), --no-guard by its name and
                # only the guard's thresholds that differ, not the whole of both
                raise ServeError(f"{self.folder} archives a broadcast {setting_differs(key, before, value)} "
                                 f"({where}); rerun the original command to continue it{live}, or choose another "
                                 "--archive")

    def _bound(self, key: str, value):
        """What of a parameter must match: a label is its blend ("a" is "a:1", "a:0.7,b:0.3" is "b:3,a:7")."""
        if key == "label" and self.label_blend is not None and value is not None:
            try:
                return self.label_blend(value)
            except ValueError:  # not one this model reads: compared as written
                pass
        return binding(key, value)

    def check(self) -> None:
        """Take the lock and check params.json against this command's (ServeError / FolderBusyError, the lock
        let go), writing nothing: a second server or another broadcast is refused before the model is timed.
        ``open()`` then goes on under the lock."""
        from wavegen.serve.archive_resume import recorded_params  # it imports this module

        self._acquire()
        try:
            recorded, _, where = recorded_params(self)
            if recorded is not None:
                self._check_params(recorded, where)
        except BaseException as err:
            self.lock.release()
            if isinstance(err, OSError):
                raise self._folder_error(err) from None
            raise

    def _acquire(self) -> None:
        if self.lock.held:  # check() took it
            return
        check_state_dir(self.folder)  # before the lock: a refused folder gains no .lock
        try:
            self.lock.acquire()
        except OSError as err:  # folders says why a folder cannot be made; a name it cannot even look up is this
            raise self._folder_error(err) from None

    def open(self) -> tuple[dict[str, np.ndarray] | None, int, dict]:
        """Check all (a refusal leaves the folder as it was), then cut back, remove and record
        (:func:`~wavegen.serve.archive_resume.resume`)."""
        from wavegen.serve.archive_resume import resume  # it imports this module

        self._acquire()
        try:
            return resume(self)
        except BaseException as err:
            self.lock.release()
            if isinstance(err, OSError):
                raise self._folder_error(err) from None
            raise

    def _folder_error(self, err: OSError) -> ServeError:
        where = f" ({err.filename})" if err.filename and Path(err.filename) != self.folder else ""
        return ServeError(f"--archive {self.folder}: cannot create or use it{where}: {err.strerror or err}; "
                          "choose a folder that can be written, or make this one writable")

    def _bounds(self) -> dict:
        """What params.json records beside the parameters, for a restart that finds no snapshot: this command's
        bound on audio without a snapshot, and the parts' length (a full part's header counts all of it)."""
        return {UNSNAPSHOT_KEY: self.unsnapshot_seconds, PART_FRAMES_KEY: self.part_frames}

    def _damaged(self, path: Path, why, said: str | None = None) -> ServeError:
        """The refusal of a damaged state file ``path`` (``why``; ``said``: the words for it, where not
        "PATH is damaged (WHY)")."""
        if isinstance(why, BaseException):
            why = f"{type(why).__name__}: {why}"
        said = said or f"{path} is damaged ({why})"
        return ServeError(f"{said}: {self.folder} cannot be continued without it; put a good copy back to "
                          f"continue it, or choose another --archive (the WAV parts in {self.folder} stay as they "
                          "are)")

    @staticmethod
    def _short_part(path: Path, frames: int) -> ServeError:
        return ServeError(f"{path} holds fewer than the {frames} samples the archive's snapshot counts: the "
                          "archive was changed since; choose another --archive")

    def _writer(self, index: int, frames: int) -> PCMWriter:
        path = part_path(self.folder, index)
        try:
            writer = PCMWriter(path, self.sample_rate, wav=True, resume_frames=frames if frames else None)
            # a new part is a valid (empty) WAV at once, not 0 bytes until the next snapshot; a part cut back to an
            # earlier snapshot (fallen back to) counts no more than that one holds
            writer.flush()
            return writer
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
                self._check_part_in_place()
                self._close_writer()
                self.writer = self._writer(self.position // self.part_frames, 0)

    def _close_writer(self) -> None:
        try:
            self.writer.close()
        except OSError as err:
            raise self._write_error(self.writer.path, err) from err

    def snapshot(self, engine_state: dict[str, np.ndarray], meta: dict, fallback_too: bool = False) -> None:
        """Flush the current part's samples, record ``engine_state`` at the current position, then count them in
        the part's header (render's order, shard's _save): a header counts part of a part only where a snapshot
        holds it, so one counting audio with no snapshot left means the snapshot was removed, never a server
        killed in its first snapshot (it leaves the header counting none, and a restart begins anew).
        ``fallback_too``: the snapshot before it (``snapshot.prev.npz``) is this one too (a label switch: only
        snapshots from it on record the new label, and a restart falling back to an older one would undo it)."""
        try:
            self.writer.flush(header=False)
            self._check_part_in_place()
            first = self.first_part
            before = self.position if fallback_too else self.snapshot_position  # where the fallback ends
            if self.keep_parts:  # the part the snapshot before it ends in kept too: a restart may fall back to it
                first = max(first, min(self.position // self.part_frames - self.keep_parts + 1,
                                       before // self.part_frames))
            meta = {**meta, "version": SNAPSHOT_VERSION, "params": self.params, "part_frames": self.part_frames,
                    "first_part": first, KEEP_PARTS_KEY: self.keep_parts, GONE_SAID_KEY: self.gone_said}
            for _ in range(2 if fallback_too else 1):  # the second moves the first to snapshot.prev.npz
                save_snapshot(self.state_dir / SNAPSHOT_FILE, engine_state, self.position, meta, keep_previous=True)
            self.snapshot_position, self.first_part = self.position, first
            self.writer.flush()
        except OSError as err:
            raise self._write_error(Path(err.filename or self.state_dir), err) from err
        self._remove_parts_before(first)  # after the snapshot that no longer counts them

    def _check_part_in_place(self) -> None:
        """ServeError where the part being written is no longer the file at its name (removed, or replaced by a
        folder or another file): what went into it since went to no file anyone can open. Said at the snapshot,
        which would count it, not carried on in silence."""
        path = self.writer.path
        try:
            in_place = os.path.samestat(os.fstat(self.writer.file.fileno()), os.stat(path))
        except (FileNotFoundError, NotADirectoryError):
            in_place = False
        except OSError as err:  # the folder cannot be looked in any more: said as a write that failed
            raise self._write_error(path, err) from err
        if not in_place:
            start = self.position // self.part_frames * self.part_frames
            raise ServeError(f"{path} was removed or replaced while the archive wrote it: the broadcast from "
                             f"{start / self.sample_rate:.1f} s on is not in any file; the archive cannot go on "
                             f"without it (its snapshot at {self.snapshot_position / self.sample_rate:.1f} s counts "
                             "it): choose another --archive")

    def _remove_parts_before(self, first: int) -> None:
        """Remove the parts before part ``first`` (the archive keeps the newest --archive-keep-parts). One
        that cannot be removed is said and left: the broadcast and the archive go on."""
        for index, path in parts_in(self.folder):
            if index < first:
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                except OSError as err:
                    logger.warning("archive: cannot remove %s, older than the parts kept: %s", path,
                                   err.strerror or err)
                    continue
                logger.info("archive: removed %s, older than the parts kept", path.name)

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
