"""The model an archive (``--archive``) is played with: what serve records of it, where the weights it began
with are now, the refusal of other weights (:func:`model_refusal`).

"The same model" is the same tensors (:mod:`wavegen.render.model_change`): the run's best/ and the checkpoint
it was written from continue an archive alike. So where the model an archive began from is gone (a checkpoint
pruned by a training that went on, best/ deleted or being replaced), the same command goes on with the kept
checkpoint (or, for a checkpoint, the best/) that holds its weights, as a render resumes (one helper for both:
:func:`wavegen.render.model_change.stand_in`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from wavegen.config import ConfigError
from wavegen.fileio import read_json_object
from wavegen.render.model_change import TENSORS_KEY, StandIn, kept_with, stand_in
from wavegen.resolve import ModelRef, resolve_model
from wavegen.serve.archive import MODEL_FOLDER_KEY, PARAMS_FILE, STATE_DIR, ServeError, snapshot_params

logger = logging.getLogger(__name__)


def model_folder(ref) -> str | None:
    """The params' MODEL_FOLDER_KEY for ``ref``: its weights' folder, resolved (as render records its model);
    None for random weights."""
    return None if ref.weights is None else str(Path(ref.weights).parent.resolve())


def weights_finder(ref):
    """→ find(saved): how to play the weights the archive recorded in ``saved`` began with (its tensors digest, or
    its weights file's sha256), where the model played now holds others: "RUN --checkpoint step_N (the weights it
    began with)" for the newest kept checkpoint that holds them, or, where it began from a checkpoint pruned since,
    "RUN (the run's best/ holds the weights it began with)"; None where nothing kept does. Searched in the run the
    archive began with (``saved``'s MODEL_FOLDER_KEY; an archive that did not record it, in the folder its
    ``model`` names where that is one), then in the run of ``ref``, the model played now: a checkpoint holding
    those very weights continues the archive, whichever run it is in. Render's refusal finds them alike
    (:func:`wavegen.render.model_change.kept_with`)."""
    def find(saved: dict) -> str | None:
        saved = {key: value if isinstance(value, str) else None for key, value in saved.items()
                 if key in ("model", "model_sha256", TENSORS_KEY, MODEL_FOLDER_KEY)}
        named = (saved.get("model") or "").split(" (step ")[0]  # a checkpoint's source: "FOLDER (step N...)"
        began = saved.get(MODEL_FOLDER_KEY) or (named if named and Path(named).is_dir() else None)
        for folder in dict.fromkeys(str(f) for f in (began, ref.folder) if f is not None):
            found = kept_with(folder, saved)
            if found is not None:
                run, checkpoint, holder = found
                return (f"{run} --checkpoint {checkpoint} (the weights it began with)" if checkpoint else
                        f"{run} ({holder} holds the weights it began with)")
        return None

    return find


def played_model(target: str, checkpoint: str | None, archive: str | None) -> ModelRef:
    """:func:`~wavegen.resolve.resolve_model` of ``target`` (``--checkpoint checkpoint``); where that model is gone
    (a checkpoint pruned, best/ deleted or being replaced) and the archive in ``archive`` began from it, the model
    that holds the tensors it began with now (:func:`wavegen.render.model_change.stand_in`, as render resumes: a
    kept checkpoint of the run, or for a checkpoint the run's best/), said in one warning; the archive's check of
    its weights follows as ever. Anything else: resolve's ConfigError."""
    try:
        return resolve_model(target, checkpoint)
    except ConfigError:
        found = _stand_in(target, checkpoint, archive)
        if found is None:
            raise
    named = f"--checkpoint {checkpoint}" if checkpoint is not None else str(target)
    logger.warning("%s", found.said(named, f"the archive {archive}", "continuing the archive"))
    return found.ref


def _stand_in(target: str, checkpoint: str | None, archive: str | None) -> StandIn | None:
    """What holds the weights the archive in ``archive`` began with, where ``target`` (``checkpoint``) was that
    model and is gone (see played_model); None otherwise. Its record is params.json, else, where that is damaged
    or gone, the parameters its snapshot recorded (the same ones; the archive's check writes params.json again)."""
    if archive is None:
        return None
    try:
        saved = read_json_object(Path(archive) / STATE_DIR / PARAMS_FILE)
    except (OSError, ValueError):  # no archive yet, or one that cannot be read: its snapshot's record, if any
        saved = snapshot_params(Path(archive) / STATE_DIR)[0]
        if saved is None:  # the archive's check says why
            return None
    return stand_in(target, checkpoint, saved.get(MODEL_FOLDER_KEY), saved.get(TENSORS_KEY), saved.get("model_sha256"))


def _short(digest) -> str:
    return f"{digest[:12]}..." if isinstance(digest, str) else repr(digest)


def model_refusal(folder: Path, saved: dict, params: dict, where: Path, find_weights) -> ServeError:
    """The refusal of a model of other weights (``params``, this command's) than the archive in ``folder`` began
    with (``saved``, as ``where`` records them): render's rule, :func:`~wavegen.render.model_change.same_model`
    (the same tensors, in whatever file; a record without their digest, by its weights file's sha256).
    ``find_weights``: :func:`weights_finder`'s find, or None."""
    began, now = saved.get("model"), params.get("model")
    key = TENSORS_KEY if saved.get(TENSORS_KEY) is not None else "model_sha256"
    word = "tensors" if key == TENSORS_KEY else "model_sha256"
    was, is_ = f"{word} {_short(saved.get(key))}", f"{word} {_short(params.get(key))}"
    older = TENSORS_KEY not in saved and params.get(TENSORS_KEY) is not None  # recorded before the digest
    if began is None or began == now:
        what = (f"a broadcast of the model in {now}, which changed since (trained further or replaced: {was}, "
                f"now {is_})")
    else:
        other = "another weights file" if older else "other weights"
        what = f"a broadcast of the model in {began} ({was}), but this command plays {now}, {other} ({is_})"
    note = ("; an older wavegen began it and recorded only its weights file's sha256, so only that very file "
            "continues it (a checkpoint holding the same tensors is a file of other bytes)") if older else ""
    found = find_weights(saved) if find_weights else None
    began_in = saved.get(MODEL_FOLDER_KEY)
    if found:
        began_with = f"play {found} to continue it"
    elif isinstance(began_in, str) and began_in and not Path(began_in).exists():  # pruned or deleted, none holds it
        began_with = (f"the model it began with, {began_in}, is gone and no kept checkpoint or best/ holds its "
                      "weights: play them from elsewhere to continue it")
    elif began and began != now:
        began_with = f"play {began} to continue it"
    else:
        began_with = "play the weights it began with to continue it"
    return ServeError(f"{folder} archives {what} ({where}){note}; {began_with}, or choose another --archive")
