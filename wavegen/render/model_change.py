"""The model a render began with, when a resume finds it changed or gone.

A render records its model's folder and the sha256 of its weights (``model``, ``model_sha256`` in
``.state/params.json``). A resume whose weights differ is refused (:func:`model_differs`), naming the
kept checkpoint of the run that holds the weights the render began with, if any; a render begun from a
run's ``best/`` that is gone since (deleted, or being replaced) is refused by :func:`model_gone` the
same way. A run's ``best/`` (written by :func:`wavegen.checkpoint.save_model`) and its checkpoints
(accelerate's writer) hold the same tensors in files of other bytes, so a checkpoint's tensors are
hashed as a model folder would hold them (:func:`same_weights_as_model_folder`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from wavegen.errors import WavegenError
from wavegen.fileio import read_json_object, sha256_file

BEST_FOLDERS = ("best", "best.old")  # what a run folder names as its model (wavegen.resolve.resolve_model)


def model_differs(where: Path, saved: dict, current: dict) -> str:
    """The refusal of a resume whose weights are not the ones the render began with: the model in the
    same place changed (the run trained further, best/ was replaced), or this command names another."""
    began, now = saved.get("model"), current.get("model")
    sha = saved["model_sha256"]
    if began is None or Path(began) == Path(now):
        what = (f"{where} holds a render begun from the model in {now}, which changed since (trained further or "
                f"replaced: model_sha256 was {sha[:12]}..., is now {current['model_sha256'][:12]}...)")
    else:
        what = (f"{where} holds a render begun from the model in {began} (model_sha256={sha[:12]}...), but this "
                f"command renders {now} (model_sha256={current['model_sha256'][:12]}...)")
    found = checkpoint_with(began, sha) if began else None
    resume = f"resume it with --checkpoint step_{found[0]} (the weights it began with), " if found else ""
    return (f"{what}; {resume}pass --restart to render it anew from the model as it is now, or choose "
            "another --out")


def model_gone(where: Path, named, began, sha, complete: bool) -> str | None:
    """The refusal of a rerun naming ``named`` (a run or model folder, as given), which no longer holds a
    model, where the render in ``where`` began from it (``began``: the model folder it recorded, ``sha``
    its weights' sha256): best/ deleted, or gone while a training replaces it. It names the kept
    checkpoint with the same weights (rerun with --checkpoint step_N: the same audio), or says that none
    is kept. None where the render there began from another model, or recorded none."""
    from wavegen.checkpoint import MODEL_FILE

    if not (isinstance(began, str) and isinstance(sha, str)):
        return None
    began_dir, named_dir = Path(began), Path(named).expanduser().resolve()
    if (began_dir / MODEL_FILE).is_file() or not (
            began_dir == named_dir or (began_dir.parent == named_dir and began_dir.name in BEST_FOLDERS)):
        return None
    what = (f"{where} holds a {'finished render' if complete else 'render'} begun from the model in {began} "
            f"(model_sha256={sha[:12]}...), which is gone (deleted, or being replaced by a training)")
    found = checkpoint_with(began, sha)
    run = began_dir.parent.parent if _in_checkpoints(began) else began_dir.parent
    if found is not None:
        step, folder = found
        return (f"{what}; the checkpoint {folder} holds the same weights: rerun with --checkpoint step_{step} to "
                f"{'check it' if complete else 'resume it'}, or choose another --out")
    return (f"{what}, and no kept checkpoint of {run} holds its weights, so it cannot be resumed: pass --restart "
            "with a model that is there (e.g. --checkpoint last), or choose another --out")


def checkpoint_with(model_dir: str, sha: str) -> tuple[int, Path] | None:
    """(step, folder) of the newest kept checkpoint of the run ``model_dir`` belongs to (its best/ or a
    checkpoint) whose weights have ``sha``; None where there is none. A checkpoint's sha256 is the one its
    trainer_state.json lists (a model folder's: its weights.json); a file neither lists is hashed.
    A render begun from a model folder (best/) recorded the sha256 of its weights as a model folder
    holds them, written by another writer than the checkpoint's (other header metadata, other bytes):
    where no file matches, each checkpoint's weights are hashed as a model folder would hold them."""
    from wavegen.resolve import checkpoint_weights, run_checkpoints

    folder = Path(model_dir)
    in_checkpoints = _in_checkpoints(model_dir)
    run = folder.parent.parent if in_checkpoints else folder.parent
    try:
        kept = [(step, path, checkpoint_weights(path)) for step, path in reversed(run_checkpoints(run))]
        kept = [(step, path, weights) for step, path, weights in kept if weights.is_file()]
        for step, path, weights in kept:
            if _recorded_sha256(weights) == sha:
                return step, path
        for step, path, weights in ([] if in_checkpoints else kept):
            if _sha256_as_model_folder(weights, folder) == sha:
                return step, path
    except (OSError, WavegenError):  # unreadable: no hint, the refusal stands
        pass
    return None


def same_weights_as_model_folder(saved: dict, current: dict) -> bool:
    """Whether a render begun from a model folder (a run's best/) is resumed from a checkpoint holding the
    same weights: best/ and a checkpoint are written by different writers (other header metadata, other
    bytes, other sha256) from the same tensors, so the checkpoint's are hashed as the folder holds them.
    And the other way round: a render begun from a checkpoint (or resumed from one, which its snapshot
    records) resumed from a best/ that holds the same weights."""
    began, now = saved.get("model"), current.get("model")
    sha, sha_now = saved.get("model_sha256"), current.get("model_sha256")
    if not all(isinstance(v, str) for v in (began, now, sha, sha_now)) or \
            _in_checkpoints(began) == _in_checkpoints(now):
        return False
    from wavegen.resolve import checkpoint_weights

    try:
        if _in_checkpoints(now):
            return _sha256_as_model_folder(checkpoint_weights(Path(now)), Path(began)) == sha
        weights = checkpoint_weights(Path(began))  # the checkpoint a snapshot recorded, if it still holds them
        return _recorded_sha256(weights) == sha and _sha256_as_model_folder(weights, Path(now)) == sha_now
    except (OSError, WavegenError):
        return False


def _in_checkpoints(model_dir: str) -> bool:
    return Path(model_dir).parent.name == "checkpoints"


def _sha256_as_model_folder(weights: Path, model_dir: Path) -> str | None:
    """The sha256 ``weights`` (a checkpoint's) would have in the model folder ``model_dir`` (best/): its
    tensors serialised with the header metadata of the folder's weights file (:func:`_folder_metadata`).
    None where ``weights`` is missing or that metadata unknown."""
    if not weights.is_file():
        return None
    metadata = _folder_metadata(model_dir)
    if metadata is None:
        return None
    stat = weights.stat()
    return _sha256_with_metadata(str(weights), stat.st_mtime_ns, stat.st_size, json.dumps(metadata, sort_keys=True))


def _folder_metadata(model_dir: Path) -> dict | None:
    """The header metadata of ``model_dir``'s weights file: read from the file; where the folder is gone
    (a best/ deleted), the metadata its one writer (checkpoint.save_model) gives it, from the config of
    its run. None where the file is unreadable, or no config says the model type."""
    from safetensors import safe_open

    from wavegen.checkpoint import CONFIG_FILE, MODEL_FILE, model_folder_metadata

    weights = model_dir / MODEL_FILE
    if weights.exists():
        try:
            with safe_open(str(weights), "pt") as f:
                return f.metadata()
        except Exception:  # noqa: BLE001 (safetensors raises its own errors): damaged, no match
            return None
    for config in (model_dir / CONFIG_FILE, model_dir.parent / CONFIG_FILE):
        try:
            return model_folder_metadata(read_json_object(config))
        except (OSError, ValueError, KeyError):  # none, unreadable, or no model_type
            continue
    return None


@functools.lru_cache(maxsize=8)  # the rerun check runs several times a render (every process, each snapshot)
def _sha256_with_metadata(weights: str, _mtime_ns: int, _size: int, metadata: str) -> str:
    """sha256 of ``weights``' tensors (without DDP / torch.compile prefixes, as a model folder holds them)
    serialised with ``metadata`` (a JSON object)."""
    from wavegen.checkpoint import load_weights, safetensors_bytes
    from wavegen.resolve import strip_wrappers

    tensors = strip_wrappers(load_weights(weights))
    return hashlib.sha256(safetensors_bytes(tensors, json.loads(metadata))).hexdigest()


def _recorded_sha256(weights: Path) -> str:
    """``weights``' sha256 as its folder records it (a checkpoint's trainer_state.json, a model folder's
    weights.json, when the record holds one for a file of this size); else hashed."""
    from wavegen.checkpoint import TRAINER_STATE
    from wavegen.resolve import WEIGHTS_RECORD

    size = weights.stat().st_size
    for record in (TRAINER_STATE, WEIGHTS_RECORD):
        try:
            want = read_json_object(weights.parent / record).get("files", {}).get(weights.name)
        except (OSError, ValueError, AttributeError):  # no record, or not one of files
            continue
        if isinstance(want, dict) and want.get("bytes") == size and isinstance(want.get("sha256"), str):
            return want["sha256"]
    return sha256_file(weights)
