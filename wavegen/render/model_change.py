"""The model a render began with, when a resume finds it changed or gone.

A render records its model's folder and the sha256 of its weights (``model``, ``model_sha256`` in
``.state/params.json``). A resume whose weights differ is refused (:func:`model_differs`), naming the
kept checkpoint of the run that holds the weights the render began with, if any; a render begun from a
run's ``best/`` that is gone since (deleted, or being replaced), or from a checkpoint pruned since, is
refused by :func:`model_gone` the same way (for a checkpoint: or naming best/ where it holds them). A
run's ``best/`` (written by :func:`wavegen.checkpoint.save_model`) and its checkpoints (accelerate's
writer) hold the same tensors in files of other bytes, so a checkpoint's tensors are hashed as a model
folder would hold them (:func:`same_weights_as_model_folder`), and best/'s as a checkpoint would.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from wavegen.errors import WavegenError
from wavegen.resolve import MODEL_FILE
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
    if found is None and began and _in_checkpoints(began) and not Path(began).exists():  # pruned since
        run = Path(began).parent.parent
        best = next((name for name in BEST_FOLDERS if _holds_as_checkpoint(run / name / MODEL_FILE, run, sha)), None)
        resume = f"resume it without --checkpoint (the run's {best}/ holds the weights it began with), " if best else ""
    return (f"{what}; {resume}pass --restart to render it anew from the model as it is now, or choose "
            "another --out")


def model_gone(where: Path, named, began, sha, complete: bool, checkpoint: str | None = None) -> str | None:
    """The refusal of a rerun naming ``named`` (a run or model folder, as given; with ``checkpoint``, that
    checkpoint of the run), which no longer holds a model, where the render in ``where`` began from it
    (``began``: the model folder it recorded, ``sha`` its weights' sha256): best/ deleted, or gone while a
    training replaces it; a checkpoint pruned by a training that went on. It names the kept checkpoint
    (or, for a checkpoint, the run's best/) with the same weights (rerun with it: the same audio), or
    says that none holds them. None where the render there began from another model, or recorded none."""
    if not (isinstance(began, str) and isinstance(sha, str)):
        return None
    began_dir, named_dir = Path(began), Path(named).expanduser().resolve()
    if checkpoint is not None:
        return _checkpoint_gone(where, named_dir, began_dir, sha, complete, checkpoint)
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


def _checkpoint_gone(where: Path, run: Path, began: Path, sha: str, complete: bool, checkpoint: str) -> str | None:
    """:func:`model_gone` for ``--checkpoint step_N`` of the run ``run``, where the render in ``where`` began
    from that checkpoint (``began``), now gone (pruned): the kept checkpoint or the run's best/ with the same
    weights, or that none holds them. None where the render began from another checkpoint."""
    step = checkpoint.removeprefix("step_")
    if began.parent != run / "checkpoints" or began.name != f"step_{step}" or began.exists():
        return None
    what = (f"--checkpoint {checkpoint}: {where} holds a {'finished render' if complete else 'render'} begun from "
            f"the checkpoint {began} (model_sha256={sha[:12]}...), which is gone (pruned by a training that went on, "
            "or deleted)")
    action = "check it" if complete else "resume it"
    found = checkpoint_with(str(began), sha)
    if found is not None:
        return (f"{what}; the kept checkpoint {found[1]} holds the same weights: rerun with --checkpoint "
                f"step_{found[0]} to {action}, or choose another --out")
    for name in BEST_FOLDERS:
        if _holds_as_checkpoint(run / name / MODEL_FILE, run, sha):
            return (f"{what}; the run's {name}/ holds the same weights: rerun without --checkpoint to {action}, "
                    "or choose another --out")
    return (f"{what}, and neither a kept checkpoint nor the run's best/ holds its weights, so it cannot be "
            f"{'checked' if complete else 'resumed'}: pass --restart with a model that is there (e.g. --checkpoint "
            "last), or choose another --out")


# the header metadata of a checkpoint's weights files (accelerate's writer; checkpoint.save_checkpoint's),
# where no kept checkpoint shows them
_CHECKPOINT_METADATA = ({"format": "pt"}, None)


def _holds_as_checkpoint(weights: Path, run: Path, sha: str) -> bool:
    """Whether the model folder's ``weights`` (a run's best/) hold the tensors of a checkpoint weights file
    whose sha256 was ``sha``: they are hashed as a checkpoint's writer would write them (with the header
    metadata a kept checkpoint's weights files show, else the writers' known metadata)."""
    from safetensors import safe_open

    from wavegen.resolve import AVERAGED_MODEL, run_checkpoints

    if not weights.is_file():
        return False
    found = []
    for _, folder in run_checkpoints(run):
        for name in (MODEL_FILE, AVERAGED_MODEL):
            try:
                with safe_open(str(folder / name), "pt") as f:
                    found.append(f.metadata())
            except Exception:  # noqa: BLE001 (missing or damaged: safetensors raises its own errors)
                continue
    stat = weights.stat()
    for metadata in {json.dumps(m, sort_keys=True) for m in (*found, *_CHECKPOINT_METADATA)}:
        try:
            if _sha256_with_metadata(str(weights), stat.st_mtime_ns, stat.st_size, metadata) == sha:
                return True
        except (OSError, WavegenError):  # damaged: it holds no weights to render
            return False
    return False


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
    except OSError:  # unreadable: no hint, the refusal stands
        return None
    kept = [(step, path, weights) for step, path, weights in kept if weights.is_file()]
    hashers = [_recorded_sha256] + ([] if in_checkpoints else [lambda w: _sha256_as_model_folder(w, folder)])
    for hashed in hashers:
        for step, path, weights in kept:
            try:
                if hashed(weights) == sha:
                    return step, path
            except (OSError, WavegenError):  # this one unreadable or damaged: the next may hold them
                continue
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
        if not weights.parent.exists():  # pruned since: best/'s tensors hashed as the checkpoint held them
            return _holds_as_checkpoint(Path(now) / MODEL_FILE, Path(began).parent.parent, sha)
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
    (a best/ deleted) or its file damaged, the metadata its one writer (checkpoint.save_model) gives it,
    from the config of its run. None where no config says the model type."""
    from safetensors import safe_open

    from wavegen.checkpoint import CONFIG_FILE, MODEL_FILE, model_folder_metadata

    weights = model_dir / MODEL_FILE
    if weights.exists():
        try:
            with safe_open(str(weights), "pt") as f:
                return f.metadata()
        except Exception:  # noqa: BLE001 (safetensors raises its own errors): damaged, its writer's below
            pass
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
