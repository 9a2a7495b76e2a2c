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
render keeps ``rank{r}.prev.npz``): where the newest is damaged (cut short by a crash, a bad sector)
or missing, a restart goes on from the one before it, said in one line naming the damaged file, and
writes the audio after it again (the same samples). A params.json damaged or gone is written again
from the snapshot (it records the same parameters), said; a snapshot gone while the parts hold audio
one counted is refused, the parts untouched.

Parts, not one file: a WAV holds at most 4 GiB (37 hours at 16 kHz), and a station may play
for weeks. ``keep_parts`` (--archive-keep-parts) bounds the disk it takes: at each snapshot, the
parts older than the newest ``keep_parts`` are removed (the snapshot records the oldest part
kept, ``first_part``, so a restart does not take the removed ones for parts lost; the part the previous
snapshot ends in is kept too, for its fallback). Only that rotation moves ``first_part``: a part moved
away (off a full disk) is said at a restart, and kept when it is brought back. Parts are independent
WAV files, not needed to continue: one cut short since (a crash, a disk problem) is said at a restart,
kept as it is (:mod:`wavegen.serve.archive_folder`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from wavegen.errors import WavegenError
from wavegen.fileio import FolderLock, fsync_dir, not_a_file, read_json_object, stale_temporaries, write_json
from wavegen.render import PCMWriter, load_snapshot, save_snapshot
from wavegen.render.folder import remove_temporaries
from wavegen.render.model_change import TENSORS_KEY, same_model, with_recorded_tensors
from wavegen.render.params_check import binding
from wavegen.render.writers import flushed_samples, previous_snapshot, recorded_meta

logger = logging.getLogger(__name__)

STATE_DIR = ".state"
PARAMS_FILE = "params.json"
SNAPSHOT_FILE = "snapshot.npz"
SNAPSHOT_VERSION = 1
MODEL_FOLDER_KEY = "model_folder"  # params: the model folder it began with, resolved (its run is searched)
# params.json: the most audio the server that began the archive at 0 leaves without a snapshot (its bound)
UNSNAPSHOT_KEY = "unsnapshot_seconds"
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
                 label_blend=None, find_weights=None, unsnapshot_seconds: float | None = None):
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
        self.first_part = 0  # the oldest part kept
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
            if key not in NON_BINDING and key != "model_sha256" and \
                    self._bound(key, saved.get(key)) != self._bound(key, value):
                live = " (a label switched to while it played, POST /label, goes on by itself)" if key == "label" \
                    else ""
                raise ServeError(f"{self.folder} archives a broadcast with {key}={saved.get(key)!r}, but this "
                                 f"command asks for {key}={value!r} ({where}); rerun the original command to "
                                 f"continue it{live}, or choose another --archive")

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
        self._acquire()
        try:
            recorded, _, where = self._recorded_params()
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
        try:
            self.lock.acquire()
        except OSError as err:  # fileio says why a folder cannot be made; a name it cannot even look up is this
            raise self._folder_error(err) from None

    def open(self) -> tuple[dict[str, np.ndarray] | None, int, dict]:
        self._acquire()
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
        """Check all (a refusal leaves the folder as it was), then cut back, remove and record."""
        self._remove_stale_temporaries()
        params_path = self.state_dir / PARAMS_FILE
        recorded, lost, where = self._recorded_params()
        if recorded is not None:
            self._check_params(recorded, where)
        elif part_path(self.folder, 0).exists():
            raise ServeError(f"{part_path(self.folder, 0)} exists but {self.folder} has no {STATE_DIR}/"
                             f"{PARAMS_FILE}: it is not an archive wavegen serve can continue; choose another "
                             "--archive")
        state, meta, fell_back = None, {}, None
        found = self._snapshot_to_resume()
        if found is not None:
            read, state, self.position, meta, fell_back = found
            self._check_params(with_recorded_tensors(meta.get("params", {}), recorded), read)
            self._keep_part_length(meta)
            first = meta.get("first_part", 0)
            if not isinstance(first, int) or not 0 <= first <= self.position // self.part_frames:
                raise self._damaged(read, f"first_part={first!r} is not a part it counts")
            self.first_part = first
        else:
            from wavegen.serve.archive_folder import check_nothing_to_lose  # it imports this module

            check_nothing_to_lose(self, recorded)
        self.snapshot_position = self.position
        index, frames = divmod(self.position, self.part_frames)
        self._check_parts(index, frames)  # before anything is cut or removed
        if fell_back is not None:
            self._fall_back(fell_back)
        if state is None or recorded is None:  # begun (again) at 0, or params.json lost: this command's, with its bound
            self.state_dir.mkdir(parents=True, exist_ok=True)
            write_json(params_path, {**self.params, **self._bounds()})
        else:
            if lost is not None:
                recorded = self._write_params_again(recorded, lost)
            self._record_tensors(recorded, params_path)
        self._remove_parts_before(self.first_part)  # removed by rotation, but not yet when it stopped
        for later_index, later in parts_in(self.folder):
            if later_index > index:  # written after the snapshot: written again
                later.unlink()
        self.writer = self._writer(index, frames)
        if self.position:
            logger.info("archive %s: continuing at %.1f s", self.folder, self.position / self.sample_rate)
        return state, self.position, meta

    def _recorded_params(self) -> tuple[dict | None, str | None, Path]:
        """Looked at only: (what .state/params.json holds, None, its path); where it is damaged or gone while the
        snapshot is readable, (the parameters the snapshot recorded, what is wrong with params.json, the snapshot's
        path): the snapshot records the same ones, so the archive goes on (:meth:`_write_params_again`); a refusal
        names the file its values came from. (None, None, params.json's path): no params.json and no snapshot to
        stand for it. ServeError naming params.json where it is damaged and no snapshot is readable, or something
        else than a file, or a file that cannot be read (its permissions: said, not written over)."""
        path = self.state_dir / PARAMS_FILE
        if self._state_file(path):
            try:
                return read_json_object(path), None, path
            except OSError as err:
                raise ServeError(f"cannot read {path}: {err.strerror or err}; make it readable, or choose another "
                                 "--archive") from None
            except ValueError as err:
                refusal, what = self._damaged(path, str(err)), f"is damaged ({err})"
        else:
            refusal, what = None, "is gone"
        params, name = snapshot_params(self.state_dir)
        if params is not None:
            return params, what, self.state_dir / name
        if refusal is not None:
            raise refusal
        return None, None, path

    def _bounds(self) -> dict:
        """What params.json records beside the parameters, for a restart that finds no snapshot: this command's
        bound on audio without a snapshot, and the parts' length (a full part's header counts all of it)."""
        return {UNSNAPSHOT_KEY: self.unsnapshot_seconds, PART_FRAMES_KEY: self.part_frames}

    def _write_params_again(self, params: dict, lost: str) -> dict:
        """params.json damaged or gone (``lost`` says which), ``params`` the snapshot's, checked: said in one
        warning and written again from them (with this command's bound for audio without a snapshot, and the
        archive's part length) → them."""
        path = self.state_dir / PARAMS_FILE
        logger.warning("archive %s: %s %s; going on with the parameters %s/%s recorded (%s written again from "
                       "them)", self.folder, path, lost, STATE_DIR, SNAPSHOT_FILE, PARAMS_FILE)
        params = {**params, **self._bounds()}
        write_json(path, params)
        return params

    def _remove_stale_temporaries(self) -> None:
        """Lock held: the partial state files a server killed while writing them left (atomic_write's
        temporaries, never read): a station restarted after each kill would gather them for good."""
        remove_temporaries(stale_temporaries(self.state_dir), f"archive {self.folder}",
                           "left partial by a server killed while writing it", logger)

    def _record_tensors(self, recorded: dict, path: Path) -> None:
        """An archive begun before serve recorded its model's tensors, continued from the very weights file it
        began with: params.json gains their digest, so that from now on the same tensors in another file (the
        run's checkpoint of its best/) continue it too."""
        if TENSORS_KEY in recorded or self.params.get(TENSORS_KEY) is None or \
                recorded.get("model_sha256") != self.params.get("model_sha256"):
            return
        write_json(path, {**recorded, TENSORS_KEY: self.params[TENSORS_KEY]})

    def _keep_part_length(self, meta: dict) -> None:
        """Go on with the length the archive's parts were begun with (its snapshot's record; before there
        was one, the oldest part's there, full where a later part is there too: part 0 may have been moved
        away; by its header, which a part cut short since keeps, :func:`closed_part_frames`): with another
        length, a restart would cut the parts where they do not end and write over archived audio.
        --archive-part-seconds shapes a new archive only."""
        recorded = meta.get("part_frames")
        if not isinstance(recorded, int) or recorded < 1:  # a snapshot that does not say
            parts = parts_in(self.folder)
            if len(parts) < 2 or not parts[0][1].is_file():
                return
            from wavegen.serve.archive_folder import closed_part_frames  # it imports this module

            recorded = closed_part_frames(parts[0][1], self.sample_rate)
        if recorded >= 1 and recorded != self.part_frames:
            logger.warning("archive %s: its parts are %g s each; it goes on with those (--archive-part-seconds "
                           "%g shapes a new archive only)", self.folder, recorded / self.sample_rate,
                           self.part_frames / self.sample_rate)
            self.part_frames = recorded

    def _damaged(self, path: Path, why, said: str | None = None) -> ServeError:
        """The refusal of a damaged state file ``path`` (``why``; ``said``: the words for it, where not
        "PATH is damaged (WHY)")."""
        if isinstance(why, BaseException):
            why = f"{type(why).__name__}: {why}"
        said = said or f"{path} is damaged ({why})"
        return ServeError(f"{said}: {self.folder} cannot be continued without it; put a good copy back to "
                          f"continue it, or choose another --archive (the WAV parts in {self.folder} stay as they "
                          "are)")

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

    def _snapshot_to_resume(self) -> tuple[Path, dict[str, np.ndarray], int, dict, str | None] | None:
        """Looked at only: (the snapshot file read, its engine state, position and meta, None); where the newest
        is damaged or missing while the one it replaced (``snapshot.prev.npz``, render's
        :func:`~wavegen.render.writers.previous_snapshot`) is readable, that one's, with what is wrong with the
        newest (:meth:`_fall_back` puts it in place once all is checked); None where there is neither.
        ServeError naming the newest where it is damaged and there is no readable one before it."""
        snap = self.state_dir / SNAPSHOT_FILE
        prev = previous_snapshot(snap)
        newest = self._state_file(snap)
        got = self._load(snap) if newest else None
        if newest and not isinstance(got, str):
            return (snap, *got, None)
        if not self._state_file(prev):  # looked at only where the newest cannot be resumed from
            if newest:
                raise self._damaged(snap, got)
            return None
        what = f"is damaged ({got})" if newest else "is missing"
        got_before = self._load(prev)
        if isinstance(got_before, str):
            raise self._damaged(snap, got_before, f"{snap} {what}, and the snapshot before it, {prev.name}, is "
                                                  f"damaged ({got_before})")
        return (prev, *got_before, what)

    def _fall_back(self, what: str) -> None:
        """The newest snapshot ``what`` (damaged or missing), all checked: said, and the one before it put in its
        place, as a render does (:func:`~wavegen.render.writers.load_snapshot`'s fallback): the next snapshot keeps
        it, not the damaged file, as its own fallback."""
        snap = self.state_dir / SNAPSHOT_FILE
        prev = previous_snapshot(snap)
        logger.warning("archive %s: %s %s; going on from the snapshot before it, %s, at %.1f s (the broadcast "
                       "after it is written again, the same samples)", self.folder, snap, what, prev.name,
                       self.position / self.sample_rate)
        os.replace(prev, snap)
        fsync_dir(self.state_dir)

    def _load(self, path: Path) -> tuple[dict[str, np.ndarray], int, dict] | str:
        """The snapshot at ``path`` (engine state, position, meta), or what is wrong with it, as said."""
        try:
            state, position, meta = load_snapshot(path)
        except WavegenError as err:  # render's message tells a render what to do: restated for serve
            why = err.__cause__ or err
            if isinstance(why, ValueError) and "pickle" in str(why):  # numpy's guess for a file that is no .npz
                return "not a snapshot wavegen serve wrote"
            return f"{type(why).__name__}: {why}"
        if not isinstance(meta, dict) or position < 0:
            return "its record of the archive is not one wavegen serve wrote"
        return state, position, meta

    def _check_parts(self, index: int, frames: int) -> None:
        """The part the snapshot ends in (``index``) is there with its ``frames`` samples: the broadcast goes on
        in it. Earlier parts gone or cut short are said (:func:`~wavegen.serve.archive_folder.say_earlier_parts`),
        and the archive goes on."""
        from wavegen.serve.archive_folder import say_earlier_parts  # it imports this module

        say_earlier_parts(self, index)
        path = part_path(self.folder, index)
        if frames and not path.is_file():
            raise ServeError(f"{path} is missing but the archive's snapshot counts it: the archive was changed "
                             "since; choose another --archive")
        # a part the snapshot counts, or a new one's name holding more than a header (a killed server's new part has
        # a whole header at once): a file put there since (another's recording, a FLAC renamed) is not written over
        held = frames or (path.is_file() and path.stat().st_size > PCMWriter.HEADER_BYTES)
        other = flushed_samples(path, self.sample_rate)[1] if held else None
        if other is not None:
            raise ServeError(f"{path} is {other}, where the archive wrote a mono {self.sample_rate} Hz 16-bit WAV "
                             "part: the archive was changed since; put its part back to continue it, or "
                             "choose another --archive")
        if frames and path.stat().st_size < PCMWriter.HEADER_BYTES + 2 * frames:
            raise self._short_part(path, frames)

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

    def snapshot(self, engine_state: dict[str, np.ndarray], meta: dict) -> None:
        """Flush the current part's samples, record ``engine_state`` at the current position, then count them in
        the part's header (render's order, shard's _save): a header counts part of a part only where a snapshot
        holds it, so one counting audio with no snapshot left means the snapshot was removed, never a server
        killed in its first snapshot (it leaves the header counting none, and a restart begins anew)."""
        try:
            self.writer.flush(header=False)
            self._check_part_in_place()
            first = self.first_part
            if self.keep_parts:  # the part the snapshot before it ends in kept too: a restart may fall back to it
                first = max(first, min(self.position // self.part_frames - self.keep_parts + 1,
                                       self.snapshot_position // self.part_frames))
            meta = {**meta, "version": SNAPSHOT_VERSION, "params": self.params, "part_frames": self.part_frames,
                    "first_part": first}
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
