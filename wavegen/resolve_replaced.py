"""A run's best/ read while a training replaces it (:func:`wavegen.fileio.replace_dir`: best -> best.old, the new
folder -> best, best.old removed): :func:`read_whole`, what :meth:`wavegen.resolve.ModelRef.load` reads a model's
weights with, takes them from one folder, never from a folder gone nor from two folders' files."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

from wavegen.config import ConfigError
from wavegen.errors import CheckpointError, WavegenError
from wavegen.resolve import BEST_FOLDERS, CONFIG_FILE, ModelRef, resolve_model


def folder_id(folder: Path | None) -> tuple[int, int] | None:
    """``folder``'s (device, inode): replace_dir puts another folder at the name; None where none is there."""
    try:
        info = os.stat(folder)
    except (OSError, TypeError):
        return None
    return info.st_dev, info.st_ino


def read_whole(ref: ModelRef, device) -> dict:
    """``ref``'s weights' tensors, checked (``ref.check_weights``) and read from one folder. A run's best/ that a
    training replaces meanwhile leaves ``ref`` naming a folder gone, or another's files: where the folder is not
    the one it was when the read began, the run's model is resolved again (``ref`` made it) and read once more;
    replaced again meanwhile, ConfigError in one line. A file missing from a folder not replaced: CheckpointError
    naming it."""
    for attempt in range(2):
        before = folder_id(ref.folder)
        if ref.kind in ("model", "run") and ref.sha256 is not None and ref.folder_id != before:
            ref.sha256 = ref.tensors_sha256 = None  # hashed before the load, in a folder since replaced
        try:
            ref.check_weights()
            state = ref._read_weights(device)
            _note_tensors_sha256(ref)
            if not _best_replaced(ref, before):
                return state
        except (WavegenError, OSError) as err:
            if not _best_replaced(ref, before):
                if isinstance(err, FileNotFoundError):
                    raise CheckpointError(f"{err.filename or ref.folder}: removed while it was read; give the "
                                          "model again, or another") from None
                raise
        if attempt == 0:
            _resolve_best_again(ref)
    run = ref.folder.parent
    raise ConfigError(f"{ref.folder}: replaced twice while it was read (a training writing {run} replaces its "
                      f"best/ at each validation that improves); give {run} again, or a checkpoint of it "
                      "(--checkpoint last)")


def _best_replaced(ref: ModelRef, before: tuple[int, int] | None) -> bool:
    """Whether ``ref`` names a run's best/ (or best.old/) that is no longer the folder it was (``before``: its
    (device, inode) when the read began; None: it was gone then)."""
    if ref.kind not in ("run", "model") or ref.folder is None or ref.folder.name not in BEST_FOLDERS:
        return False
    if not (ref.folder.parent / CONFIG_FILE).is_file():  # a model folder named best, not a run's
        return False
    return before is None or folder_id(ref.folder) != before


def _resolve_best_again(ref: ModelRef) -> None:
    """``ref`` made the run's model as it is now (its best/, or best.old/ between replace_dir's renames), its kind
    kept; ConfigError where the run has none now (resolve_model's, naming the run)."""
    fresh = resolve_model(ref.folder.parent)
    kind = ref.kind
    for field in fields(ref):
        setattr(ref, field.name, getattr(fresh, field.name))
    ref.kind = kind


def _note_tensors_sha256(ref: ModelRef) -> None:
    """The tensors' digest as the folder's record lists it (cheap), kept while the folder is the one read:
    ``ref.weights_tensors_sha256()`` asked later would read the record of the folder there then."""
    if ref.kind in ("model", "run") and ref.tensors_sha256 is None:
        from wavegen.checkpoint import TENSORS_DIGEST, listed_digest

        digest = listed_digest(ref.weights, TENSORS_DIGEST)
        ref.tensors_sha256 = digest if isinstance(digest, str) else None
