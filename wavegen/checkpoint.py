"""Model folders (safetensors + config.json) and training checkpoints, written atomically.

A model folder holds ``model.safetensors``, ``config.json`` (the full resolved run
config) and ``weights.json`` (the weights file's size and sha256, checked when the model is
loaded: a folder written before it was recorded is trusted), so it needs nothing else to be
rendered or evaluated. No pickle is ever loaded from a model folder. Training checkpoints are
``RUN/checkpoints/step_N/``: accelerate's
``save_state`` plus ``training_state.safetensors`` (the state a model carries from one
window of a stream to the next), ``averaged_model.safetensors`` when the run keeps an average of
its weights (``train.ema_decay``: the weights ``--checkpoint`` renders use) and
``trainer_state.json``, which lists every file of the
checkpoint with its size and sha256; the folder is written under a temporary name, synced,
then renamed. A checkpoint whose files do not match that list is damaged: training resumes
from the newest intact one, moves the damaged newer ones aside (``step_N.damaged``, named in a
warning: nothing is deleted) and counts only intact checkpoints when it prunes. A pruned checkpoint
is renamed out of the ``step_N`` names before it is deleted, so a reader sees it whole or not at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
from pathlib import Path

import torch

from wavegen.config import load_json
from wavegen.errors import CheckpointError, WavegenError
from wavegen.fileio import (REMOVED, atomic_write, free_name, fsync_dir, read_json_object, remove_dir, replace_dir,
                            sha256_file, utf8_path, write_failure, write_json)
from wavegen.resolve import AVERAGED_MODEL, WEIGHTS_RECORD
from wavegen.trainstate import SaveError, agree, save_failed
from wavegen.weights_file import tensors_sha256

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAINER_STATE = "trainer_state.json"
TRAINING_STATE = "training_state.safetensors"
TENSORS_DIGEST = "tensors_sha256"  # a weights file's tensors_sha256(), beside its size and sha256 in a record
# in a run's best/weights.json: the validation that chose its weights ({"step", "val_bits", "val_samples"}), the
# score a run that starts again (its checkpoints and metrics rows gone) keeps as the one to beat (wavegen.bestmodel)
BEST_SCORE = "validation"


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)


def model_folder_metadata(config: dict) -> dict[str, str]:
    """The header metadata :func:`save_model` gives a model folder's weights file (its bytes, and so its
    sha256, depend on it; its :func:`tensors_sha256` does not)."""
    return {"model_type": str(config["model_type"])}


def save_model(model: torch.nn.Module, config: dict, folder: Path, extra: dict[str, bytes | str] | None = None,
               scored: dict | None = None) -> Path:
    """Write ``folder/model.safetensors`` + ``folder/config.json`` (+ ``extra`` files by name, e.g. the
    album profile) + ``folder/weights.json`` (the weights' size and sha256, which
    :func:`verified_weights_sha256` checks when the model is loaded; and ``scored``, a run's best/: the
    validation that chose these weights, under BEST_SCORE): a temporary folder, synced, swapped in with
    fileio.replace_dir (the old folder goes only after the swap)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    weights = safetensors_bytes(model.state_dict(), model_folder_metadata(config))
    atomic_write(tmp / MODEL_FILE, weights)
    record = {"files": {MODEL_FILE: {"bytes": len(weights), "sha256": hashlib.sha256(weights).hexdigest(),
                                     TENSORS_DIGEST: tensors_sha256(weights)}}}
    write_json(tmp / WEIGHTS_RECORD, dict(record, **{BEST_SCORE: scored}) if scored else record)
    write_json(tmp / CONFIG_FILE, config)
    for name, data in (extra or {}).items():
        atomic_write(tmp / name, data)
    return replace_dir(tmp, folder)


def load_weights(path: str | Path, data: bytes | None = None) -> dict[str, torch.Tensor]:
    """A safetensors file → its tensors (CPU); CheckpointError naming the file when it is damaged. A path
    that is not UTF-8 (a folder named in another encoding), which safetensors' load_file refuses, is opened
    through fileio.utf8_path. ``data``: the file's bytes, read already: the tensors are made from those."""
    from safetensors.torch import load, load_file

    path = Path(path)
    try:
        if data is not None:
            return load(data)
        with utf8_path(path) as name:
            return load_file(name)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as err:  # safetensors raises its own SafetensorError (and OSError, ValueError)
        raise CheckpointError(f"{path}: damaged or not a safetensors file ({err})") from None


def listed_digest(weights: Path, key: str = "sha256") -> str | None:
    """``weights``' ``key`` (its "sha256", or TENSORS_DIGEST) as its folder's record lists it: a checkpoint's
    trainer_state.json, a model folder's weights.json, where it lists a file of this size; else None.
    OSError when ``weights`` is missing."""
    size = Path(weights).stat().st_size
    for record in (TRAINER_STATE, WEIGHTS_RECORD):
        try:
            want = read_json_object(Path(weights).parent / record).get("files", {}).get(Path(weights).name)
        except (OSError, ValueError, AttributeError):  # no record, or not one of files
            continue
        if isinstance(want, dict) and want.get("bytes") == size and isinstance(want.get(key), str):
            return want[key]
    return None


def recorded_tensors_sha256(weights: Path) -> str:
    """``weights``' :func:`tensors_sha256` as its folder's record lists it (:func:`listed_digest`), else
    hashed. CheckpointError naming the file when it is damaged or missing."""
    try:
        listed = listed_digest(weights, TENSORS_DIGEST)
    except FileNotFoundError:
        raise CheckpointError(f"{weights}: no such file") from None
    return listed or tensors_sha256(weights)


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """A model or run folder → (model in eval mode on ``device``, its resolved config dict).

    Shorthand for ``wavegen.resolve.resolve_model(path).load(device)``: the one load path.
    """
    from wavegen.resolve import resolve_model

    ref = resolve_model(path)
    return ref.load(device), ref.config


# ----- training checkpoints ---------------------------------------------------------------------

DAMAGED = ".damaged"  # a damaged checkpoint training moved aside: checkpoints/step_N.damaged
DIVERGED = ".diverged"  # a checkpoint whose weights gave a non-finite step (divergence.kept_after_divergence)
PRUNED = ".pruned"  # a pruned checkpoint while it is deleted: checkpoints/.tmp_step_N.pruned (remove_checkpoint)


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """A run's finished checkpoints ``(step, folder)``, oldest first (intact or not)."""
    from wavegen.resolve_checkpoints import run_checkpoints

    return run_checkpoints(run_dir)


def _synced_digest(path: Path) -> dict:
    """Size and sha256 of a file written by someone else (accelerate), after syncing it to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _save_part(accelerator, part, step: int, tmp: Path, last: Path | None) -> None:
    """``part()`` (None: nothing to do on this process), then every process agrees (a barrier): when
    it failed to write anywhere (an OSError, or torch's or safetensors' own error for it: fileio.write_failure),
    the unfinished folder goes and every process raises SaveError (trainstate.save_failed)."""
    failure = None
    if part is not None:
        try:
            part()
        except Exception as err:
            failure = write_failure(err, tmp)
            if failure is None:
                raise
    if agree(accelerator, failure is not None):
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        if failure is None:
            raise SaveError(f"another process could not write the checkpoint of step {step} (see its error)")
        raise save_failed(f"the checkpoint of step {step} in {tmp.parent}", failure, last) from None


def save_checkpoint(accelerator, run_dir: Path, step: int, trainer_state: dict,
                    training_tensors: dict[str, torch.Tensor], averaged: dict[str, torch.Tensor] | None = None,
                    last: Path | None = None) -> Path:
    """Every process calls this (accelerate saves per-process RNG state); the main one lists the
    files and renames the folder into place (:func:`prune_checkpoints` then thins them out).
    ``averaged``: the averaged model's weights, written as AVERAGED_MODEL. A write that fails (a
    full disk, a folder made read-only) is SaveError on every process, naming the folder, the
    reason and ``last``, the newest intact checkpoint before this one."""
    folder = Path(run_dir) / "checkpoints"
    final = folder / f"step_{step}"
    tmp = folder / f".tmp_step_{step}"
    main = accelerator.is_main_process

    def begin():
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)

    def finish():
        if training_tensors:
            atomic_write(tmp / TRAINING_STATE, safetensors_bytes(training_tensors))
        if averaged is not None:
            atomic_write(tmp / AVERAGED_MODEL, safetensors_bytes(averaged))
        files = {p.relative_to(tmp).as_posix(): _synced_digest(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        for name in (MODEL_FILE, AVERAGED_MODEL):  # what render compares a checkpoint's and best/'s weights by
            try:
                files[name][TENSORS_DIGEST] = tensors_sha256(tmp / name)
            except (KeyError, CheckpointError):  # not written (or not safetensors): render hashes what is there
                continue
        write_json(tmp / TRAINER_STATE, {**trainer_state, "files": files})
        replace_dir(tmp, final)

    _save_part(accelerator, begin if main else None, step, tmp, last)
    # every process's RNG file is written before the listing (the agreement after it is a barrier)
    _save_part(accelerator, lambda: accelerator.save_state(str(tmp)), step, tmp, last)
    _save_part(accelerator, finish if main else None, step, tmp, last)
    if main:
        logger.info("checkpoint saved: %s", final)
    return final


def prune_checkpoints(run_dir: Path, keep: int, intact: set[Path], protect: tuple = ()) -> None:
    """Keep the newest ``keep`` intact checkpoints, and every folder in ``protect`` (the one just
    written, the one the run resumed from); remove the older ones (main process; :func:`remove_checkpoint`).
    ``intact``: the folders known intact in this session (grown with those checked here, each hashed once). A
    damaged checkpoint is never counted: it is moved aside (:func:`set_aside`), not deleted."""
    kept = 0
    for _, folder in reversed(checkpoints(run_dir)):
        if folder in protect:
            kept += 1
            continue
        if kept >= keep:
            remove_checkpoint(folder)
            continue
        if folder not in intact:
            why = checkpoint_damage(folder)
            if why is not None:
                set_aside(folder, why)
                continue
            intact.add(folder)
        kept += 1


def remove_checkpoint(folder: Path) -> None:
    """Delete the checkpoint ``folder`` so that no reader (``--checkpoint last|step_N`` of a run being trained)
    ever sees it half-removed: it is renamed out of the ``step_N`` names first (one atomic rename: a listing
    of the run's checkpoints holds the whole folder or none of it), to ``.tmp_step_N.pruned``, then deleted
    there. What a deletion cut short leaves there is swept by :func:`tidy_run_folder` (``.tmp_step_*``);
    save_checkpoint writes into ``.tmp_step_N``, never into this name."""
    try:
        remove_dir(folder, folder.with_name(f".tmp_{folder.name}{PRUNED}"))
    except OSError as err:
        logger.warning("checkpoint %s was not removed: %s: %s; remove it yourself", folder, err.filename or folder,
                       err.strerror or err)


def set_aside(folder: Path, why: str, suffix: str = DAMAGED, quiet: bool = False) -> Path | None:
    """Move the checkpoint ``folder`` out of the run's checkpoints, to ``step_N`` + ``suffix`` (DAMAGED:
    ``step_N.damaged``, ``.damaged2``, ... when taken; DIVERGED), with a warning unless ``quiet`` (the caller
    says it): nothing of it is deleted, and it is no longer resumed from nor shadows the checkpoints written
    after it. Returns where it went; None (warned) when it cannot move."""
    target = free_name(folder.with_name(folder.name.removesuffix(".old") + suffix))
    try:
        folder.rename(target)
    except OSError as err:
        logger.warning("checkpoint %s cannot be moved aside (%s: %s): remove it yourself", folder, why,
                       err.strerror or err)
        return None
    if not quiet:
        logger.warning("checkpoint %s is damaged (%s): moved aside to %s (training no longer uses it; delete it "
                       "once you no longer need it)", folder, why, target)
    return target


def checkpoint_damage(folder: Path, only: tuple[str, ...] | None = None) -> str | None:
    """None when every file the checkpoint listed (or, with ``only``, those of these names) is there
    with its size and sha256; otherwise what is wrong, naming the file. (A checkpoint written
    before files were listed is trusted.)"""
    try:
        state = load_json(folder / TRAINER_STATE)
    except WavegenError as err:  # ConfigError naming the file: missing, unreadable, not JSON
        return str(err)
    listed = state.get("files") if isinstance(state, dict) else None
    if not isinstance(state, dict) or "step" not in state or not isinstance(listed, (dict, type(None))):
        return f"{folder / TRAINER_STATE}: not a trainer state"
    for name, want in (listed or {}).items():
        if only is not None and name not in only:
            continue
        why, _ = file_damage(folder / name, want)
        if why is not None:
            return why
    return None


def file_damage(path: Path, want, data: bytes | None = None) -> tuple[str | None, str | None]:
    """``path`` against what was written (``want``: ``{"bytes": N, "sha256": HEX}``) → (what is wrong,
    naming the file, or None; the file's sha256 when it was hashed). The size is compared first, so a
    truncated file is not read. A file removed while it is checked (its checkpoint pruned) is missing, not an
    OSError: it is looked at once (one stat), and a file gone before it is hashed is missing too. ``data``: the
    file's bytes, read already: checked instead (nothing is read)."""
    try:
        info = None if data is not None else path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return f"{path}: missing", None
    if info is not None and not stat.S_ISREG(info.st_mode):
        return f"{path}: missing", None
    size = len(data) if data is not None else info.st_size
    if not isinstance(want, dict) or size != want.get("bytes"):
        return (f"{path}: {size} bytes, {want.get('bytes') if isinstance(want, dict) else '?'} were written "
                "(truncated or changed)"), None
    try:
        digest = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(path)
    except FileNotFoundError:
        return f"{path}: missing", None
    if digest != want.get("sha256"):
        return f"{path}: its content differs from what was written (sha256)", digest
    return None, digest


def verified_weights_sha256(weights: Path, advice=None, data: bytes | None = None) -> str | None:
    """The sha256 of a model folder's weights file, checked against what :func:`save_model` recorded in
    the folder's weights.json (hashed once). None when the folder has no record (written by an older
    wavegen: trusted, not hashed). CheckpointError naming the file when it differs, or when the record
    is unreadable; ``advice()`` (when given, and not None) says what to do instead of the generic advice. ``data``:
    the file's bytes, read already: those are checked (:func:`file_damage`)."""
    weights = Path(weights)
    record = weights.parent / WEIGHTS_RECORD
    if not record.is_file():
        return None
    try:
        want = load_json(record)["files"][weights.name]
    except WavegenError as err:  # ConfigError naming the record: unreadable, not JSON
        raise CheckpointError(f"{err}; {_DAMAGED_FOLDER_ADVICE}") from None
    except (KeyError, TypeError):
        raise CheckpointError(f"{record}: not a record of {weights.name}'s size and sha256; "
                              f"{_DAMAGED_FOLDER_ADVICE}") from None
    why, digest = file_damage(weights, want, data)
    if why is not None:
        raise CheckpointError(f"{why}: the model folder is damaged; {(advice and advice()) or _DAMAGED_FOLDER_ADVICE}")
    return digest


_DAMAGED_FOLDER_ADVICE = ("use the run's checkpoint instead (--checkpoint last or step_N; a run's best/, once "
                          "removed, comes back from the checkpoint that scored it when the run's wavegen train "
                          "command is rerun), copy the folder again from where it came from, or retrain")


def newest_intact(run_dir: Path) -> tuple[tuple[int, Path] | None, list[tuple[Path, str]]]:
    """The newest intact checkpoint ``(step, folder)`` of a run (None when it has none) and the
    damaged ones newer than it, ``(folder, what is wrong)``, each warned about. CheckpointError when
    there are checkpoints but none is intact."""
    damaged = []
    for step, folder in reversed(checkpoints(run_dir)):
        why = checkpoint_damage(folder)
        if why is None:
            if damaged:
                logger.warning("resuming from %s instead", folder)
            return (step, folder), damaged
        damaged.append((folder, why))
        logger.warning("checkpoint %s is damaged (%s): skipping it", folder, why)
    if damaged:
        raise CheckpointError(f"no intact checkpoint in {Path(run_dir) / 'checkpoints'} "
                              f"({'; '.join(why for _, why in damaged)}); "
                              "remove the damaged folders to start this run again from step 0")
    return None, []


def intact_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """The newest intact checkpoint ``(step, folder)`` of a run (:func:`newest_intact`'s first half)."""
    return newest_intact(run_dir)[0]


def tidy_run_folder(run_dir: Path, found: tuple[int, Path] | None,
                    damaged: list[tuple[Path, str]]) -> tuple[int, Path] | None:
    """Before a run resumes (main process, holding the run's lock, every check passed): the damaged
    checkpoints newer than ``found`` (``newest_intact``) moved aside; folders left by a process that
    died while writing them removed (``best.tmpPID``, ``checkpoints/.tmp_step_N``: never the only
    copy of anything, see fileio.replace_dir), and folders it died while deleting (pruned checkpoints,
    ``.tmp_step_N.pruned``: :func:`remove_checkpoint`; an old best/ or step_N, ``.tmp_best.old.removed``:
    fileio.remove_dir); ``best.old`` back to ``best`` where best/ is missing, and ``found`` back under its own name
    when it was read from ``step_N.old`` (saves cut short between replace_dir's renames). Returns ``found`` as it
    is now."""
    for folder, why in damaged:
        set_aside(folder, why)
    run_dir = Path(run_dir)
    leftovers = [*run_dir.glob("best.tmp*"), *run_dir.glob(".tmp_best*"),
                 *(run_dir / "checkpoints").glob(".tmp_step_*")]
    for folder in leftovers:
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            doing = "removing" if folder.name.endswith((PRUNED, REMOVED)) else "writing"
            if folder.exists():
                logger.warning("%s, left unfinished by a process that stopped while %s it, cannot be removed: "
                               "remove it yourself", folder, doing)
            else:
                logger.info("removed %s, left unfinished by a process that stopped while %s it", folder, doing)
    best, old_best = run_dir / "best", run_dir / "best.old"
    if not best.exists() and (old_best / MODEL_FILE).is_file():  # a best/ save cut short between its renames
        old_best.rename(best)
        fsync_dir(run_dir)
        logger.warning("%s was missing (a save cut short): restored it from %s", best, old_best)
    if found is not None and found[1].name.endswith(".old"):
        step, old = found
        found = step, old.with_name(old.name.removesuffix(".old"))
        old.rename(found[1])
        fsync_dir(old.parent)
        logger.warning("%s was missing (a save cut short): restored it from %s", found[1], old)
    return found


def load_checkpoint(accelerator, folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore accelerate's state; return (trainer_state, training tensors).

    Works across a change of process count: the model and optimizer are saved once, the
    carried training tensors over the global batch (the caller scatters them). accelerate
    keeps one RNG file per process (``random_states_{rank}.pkl``); a process with no file of
    its own keeps its seeded RNG, which changes nothing here (batches are drawn from
    (seed, step, stream), not from torch's RNG, and the models have no dropout).
    """
    folder = Path(folder)
    if not (folder / f"random_states_{accelerator.process_index}.pkl").is_file():
        logger.info("%s has no RNG state for process %d (written by fewer processes): "
                    "that process keeps its seeded RNG", folder, accelerator.process_index)
    try:
        with utf8_path(folder) as name:  # it reads the model with safetensors' load_file: a UTF-8 path only
            accelerator.load_state(name)
    except Exception as err:  # a damaged file the listing could not catch (an old checkpoint)
        raise CheckpointError(f"{folder}: cannot be restored ({type(err).__name__}: {err}); remove it to "
                              "resume from the checkpoint before it") from None
    tensors_file = folder / TRAINING_STATE
    tensors = load_weights(tensors_file) if tensors_file.is_file() else {}
    state = load_json(folder / TRAINER_STATE)
    state.pop("files", None)
    return state, tensors
