"""The model an archive (``--archive``) is played with: what serve records of it, where the weights it began
with are now.

"The same model" is the same tensors (:mod:`wavegen.render.model_change`): the run's best/ and the checkpoint
it was written from continue an archive alike. So where the checkpoint an archive began from is gone (pruned by
a training that went on), the same command goes on with the kept checkpoint or the best/ that holds its weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

from wavegen.config import ConfigError
from wavegen.fileio import read_json_object
from wavegen.render.model_change import TENSORS_KEY, held_by
from wavegen.resolve import BEST_FOLDERS, ModelRef, best_with, resolve_model
from wavegen.serve.archive import MODEL_FOLDER_KEY, PARAMS_FILE, STATE_DIR

logger = logging.getLogger(__name__)


def model_folder(ref) -> str | None:
    """The params' MODEL_FOLDER_KEY for ``ref``: its weights' folder, resolved (as render records its model);
    None for random weights."""
    return None if ref.weights is None else str(Path(ref.weights).parent.resolve())


def weights_finder(ref):
    """→ find(saved): "RUN --checkpoint step_N", the newest kept checkpoint that holds the weights the archive
    recorded in ``saved`` began with (its tensors digest, or its weights file's sha256), or None. Searched in
    the run the archive began with (``saved``'s MODEL_FOLDER_KEY; an archive that did not record it, in the
    folder its ``model`` names where that is one), then in the run of ``ref``, the model played now: a
    checkpoint holding those very weights continues the archive, whichever run it is in."""
    def find(saved: dict) -> str | None:
        saved = {key: value if isinstance(value, str) else None for key, value in saved.items()
                 if key in ("model", "model_sha256", TENSORS_KEY, MODEL_FOLDER_KEY)}
        named = (saved.get("model") or "").split(" (step ")[0]  # a checkpoint's source: "FOLDER (step N...)"
        began = saved.get(MODEL_FOLDER_KEY) or (named if named and Path(named).is_dir() else None)
        for folder in dict.fromkeys(str(f) for f in (began, ref.folder) if f is not None):
            found = held_by(folder, saved)
            if found is not None:
                return f"{found[1].parent.parent} --checkpoint step_{found[0]}"
        return None

    return find


def played_model(target: str, checkpoint: str | None, archive: str | None) -> ModelRef:
    """:func:`~wavegen.resolve.resolve_model` of ``target`` (``--checkpoint checkpoint``); where that checkpoint is
    gone and the archive in ``archive`` began from it, the model that holds the tensors it began with now: the
    newest kept checkpoint of the run holding them, else the run's best/ (said in a warning; the archive's check
    of its weights follows as ever). Anything else: resolve's ConfigError."""
    try:
        return resolve_model(target, checkpoint)
    except ConfigError:
        stand_in = _stand_in(target, checkpoint, archive)
        if stand_in is None:
            raise
    ref, began, what = stand_in
    logger.warning("--checkpoint %s: %s, the archive's model, is gone (pruned by a training that went on, or "
                   "deleted); %s holds the weights %s began with: playing it to continue the archive", checkpoint,
                   began, what, archive)
    return ref


def _stand_in(target: str, checkpoint: str | None, archive: str | None) -> tuple[ModelRef, Path, str] | None:
    """(the model that holds the weights, the checkpoint gone, it in words) or None (see played_model)."""
    if checkpoint is None or archive is None:
        return None
    try:
        saved = read_json_object(Path(archive) / STATE_DIR / PARAMS_FILE)
    except (OSError, ValueError):  # no archive yet, or one that cannot be read: its check says why
        return None
    began, tensors = saved.get(MODEL_FOLDER_KEY), saved.get(TENSORS_KEY)
    run = Path(target).expanduser().resolve()
    if not (isinstance(began, str) and isinstance(tensors, str)) or Path(began) != run / "checkpoints" / checkpoint \
            or Path(began).exists():
        return None
    found = held_by(began, {TENSORS_KEY: tensors})
    if found is not None:
        return resolve_model(run, f"step_{found[0]}"), Path(began), f"the kept checkpoint {found[1]}"
    name = best_with(run, tensors)
    if name is None:
        return None
    return resolve_model(run if name == BEST_FOLDERS[0] else run / name), Path(began), f"the run's {name}/"
