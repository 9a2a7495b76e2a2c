"""A model folder's weights read for :meth:`wavegen.resolve.ModelRef.load` (:func:`read_whole`): once, whole, into
memory; the bytes read are hashed and checked against the folder's weights.json, and the tensors are made from those
same bytes, so the model loaded, the sha256 said of it and its tensors' digest are of one file. A run's best/ that a
training replaces meanwhile (:func:`wavegen.fileio.replace_dir`: best -> best.old, the new folder -> best, best.old
removed) is resolved again and read once more, never read from a folder gone nor from two folders' files: its
config.json (read again: the one resolved may be of a best/ replaced since) and the files beside the weights that are
read after the load (album.json, the render guard's profile: ``ModelRef.read_beside``) are read with them."""

from __future__ import annotations

import hashlib
import os
from dataclasses import fields
from pathlib import Path

from wavegen.config import ConfigError
from wavegen.errors import CheckpointError, WavegenError
from wavegen.resolve import BEST_FOLDERS, CONFIG_FILE, ModelRef, resolve_model
from wavegen.resolve_checkpoints import instead_of_best
from wavegen.resolve_config import read_config


def read_whole(ref: ModelRef, device) -> dict:
    """The tensors of ``ref``'s weights (a model folder's, or a run's best/), read as the module says; ``ref.sha256``
    and ``ref.tensors_sha256`` set from the bytes read. A run's best/ replaced while it was read (a file of it gone,
    or the name holding another folder by the end of the read) is resolved again (``ref`` made it) and read once more;
    replaced again meanwhile, ConfigError in one line. Otherwise CheckpointError naming a damaged or missing file."""
    for attempt in range(2):
        held, began = _hold(ref.folder)
        try:
            state = _read_once(ref, device)
            if not _best_replaced(ref, began):
                return state
        except (WavegenError, OSError) as err:
            if not _best_replaced(ref, began):
                if isinstance(err, FileNotFoundError):
                    raise CheckpointError(f"{err.filename or ref.folder}: removed while it was read; give the "
                                          "model again, or another") from None
                raise
        finally:
            if held is not None:
                os.close(held)
        if attempt == 0 and not _resolved_again(ref):
            break
    run = ref.folder.parent
    raise ConfigError(f"{ref.folder}: replaced twice while it was read (a training writing {run} replaces its "
                      f"best/ at each validation that improves); give {run} again, or a checkpoint of it "
                      "(--checkpoint last)")


def _read_once(ref: ModelRef, device) -> dict:
    """``ref``'s weights file read once into memory, checked against its folder's record (the damage named with what
    to render instead), its header against the config and the memory free; its tensors, made from those bytes."""
    from wavegen.checkpoint import TENSORS_DIGEST, listed_digest, load_weights, verified_weights_sha256
    from wavegen.memory import OutOfMemoryError, check_model_memory
    from wavegen.weights_file import tensors_sha256

    def advice():
        return instead_of_best(ref.folder)

    # the config the model is built from, of the folder the weights are read from: the one resolved may be of a best/
    # a training replaced between resolution and load (no check spans that gap: nothing holds the folder then)
    ref.config = read_config(ref.folder / CONFIG_FILE)
    checked = False
    try:  # a model too large for memory refused before its bytes are read (its header matching its config)
        check_model_memory(ref.config, ref.weights, device)
        checked = True
    except OutOfMemoryError:
        raise
    except (WavegenError, OSError):
        pass  # a header that does not match, or a damaged file: named after the read, the damage first
    try:
        data = ref.weights.read_bytes()  # held beside the tensors made from them: twice the weights at the peak
    except FileNotFoundError:
        verified_weights_sha256(ref.weights, advice)  # a folder that records its weights: named as damaged
        raise CheckpointError(f"{ref.weights}: no such file") from None
    digest = verified_weights_sha256(ref.weights, advice, data) or hashlib.sha256(data).hexdigest()
    if not checked:  # its error, now that the damage had its turn
        check_model_memory(ref.config, ref.weights, device)
    state = load_weights(ref.weights, data)
    listed = listed_digest(ref.weights, TENSORS_DIGEST)  # of the same file: its size and sha256 listed beside it
    ref.sha256, ref.tensors_sha256 = digest, listed if isinstance(listed, str) else tensors_sha256(data)
    ref.read_beside = _read_beside(ref.folder)  # within the replaced-while-read check, as the weights are
    return state


def _read_beside(folder: Path) -> dict:
    """The files of model folder ``folder`` read with its weights (the album profile the render guard takes, album.json:
    read after the load, a best/ replaced meanwhile paired a new profile with the weights read), by name -> text, or
    the bytes read where they are not UTF-8 (its reader names them as not text, without reading the file again); None:
    not there. One that cannot be read otherwise (permission denied, a folder at its name; a FIFO is not opened) -> the
    error met: its reader names that error, and does not read the file again (a second read could find another file,
    or meet the same error twice). wavegen.render.album.read_beside reads it."""
    from wavegen.render.album import ALBUM_FILE, read_beside

    return {ALBUM_FILE: read_beside(folder / ALBUM_FILE)}


def _hold(folder: Path | None) -> tuple[int | None, tuple[int, int] | None]:
    """``folder`` held open while it is read, and its (device, inode) (None, None where it is not there): the inode
    number of a folder held open is not given to another (a number freed is: ext4 gives the best/ a replace makes the
    number of the one it removed). Where a folder cannot be opened (not POSIX), its number alone."""
    held = None
    try:
        try:
            held = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except (FileNotFoundError, NotADirectoryError, TypeError):
            return None, None
        except OSError:  # not POSIX: the number alone
            pass
        info = os.fstat(held) if held is not None else os.stat(folder)
    except OSError:
        return held, None
    return held, (info.st_dev, info.st_ino)


def _best_replaced(ref: ModelRef, began: tuple[int, int] | None) -> bool:
    """Whether ``ref`` names a run's best/ (or best.old/) that is not the folder held when the read began (``began``:
    its (device, inode); None: none was there). replace_dir never puts a folder back at the name it left, so the
    same folder there at the end was there throughout: every file read came from it."""
    if ref.kind not in ("run", "model") or ref.folder is None or ref.folder.name not in BEST_FOLDERS:
        return False
    if not (ref.folder.parent / CONFIG_FILE).is_file():  # a model folder named best, not a run's
        return False
    try:
        now = os.stat(ref.folder)
    except OSError:
        return True
    return began is None or (now.st_dev, now.st_ino) != began


def _resolved_again(ref: ModelRef) -> bool:
    """:func:`_resolve_best_again`; False where that failed while the run's best/ (or best.old/) is there: replaced
    again meanwhile. The run's own error where it has no best folder now."""
    try:
        _resolve_best_again(ref)
    except (WavegenError, OSError):
        if not any((ref.folder.parent / name).is_dir() for name in BEST_FOLDERS):
            raise
        return False
    return True


def _resolve_best_again(ref: ModelRef) -> None:
    """``ref`` made the run's model as it is now (its best/, or best.old/ between replace_dir's renames), its kind
    kept; ConfigError where the run has none now (resolve_model's, naming the run)."""
    fresh = resolve_model(ref.folder.parent)
    kind = ref.kind
    for field in fields(ref):
        setattr(ref, field.name, getattr(fresh, field.name))
    ref.kind = kind
