"""A run's kept checkpoints, for :func:`wavegen.resolve.resolve_model` and the commands that name one.

``--checkpoint step_N|last`` resolved to a :class:`~wavegen.resolve.ModelRef` (:func:`checkpoint_ref`, its weights
checked against what the checkpoint lists; one pruned while it is read is not called damaged); which checkpoints a
run keeps and which of them can be rendered (:func:`run_checkpoints`, :func:`kept_checkpoints`, what training moved
aside); the weights a checkpoint is judged by (:func:`checkpoint_weights`: its average where the run keeps one); and
which kept checkpoint or best/ holds given weights (:func:`checkpoint_with`, :func:`best_with`,
:func:`instead_of_best`: the hints of render, serve and a damaged best/).
"""

from __future__ import annotations

import re
from pathlib import Path

from wavegen.config import ConfigError, load_json
from wavegen.errors import WavegenError
from wavegen.resolve import (AVERAGED_MODEL, BEST_FOLDERS, CONFIG_FILE, MODEL_FILE, TRAINER_STATE, WEIGHTS_RECORD,
                             ModelRef)
from wavegen.resolve_config import read_config

_STEP = re.compile(r"^step_(\d+)$")
_STEP_OR_OLD = re.compile(r"^step_(\d+)(\.old)?$")
# a checkpoint removed while it is read (a training pruning them, train.keep_checkpoints): how often --checkpoint last
# looks again
PRUNED_RETRIES = 10


class CheckpointRemovedError(ConfigError):
    """The checkpoint named (``--checkpoint step_N``, or the one ``last`` named) was removed while it was read: a
    training pruned it. Not damaged; where the command looks again is the caller's to say."""


def run_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """A run's finished checkpoints ``(step, folder)``, oldest first. Where ``step_N`` is missing and
    ``step_N.old`` is there (a save of step N cut short between fileio.replace_dir's renames), the
    ``.old`` folder stands for it."""
    folder = Path(run_dir) / "checkpoints"
    found = {}
    if folder.is_dir():
        for child in folder.iterdir():
            match = _STEP_OR_OLD.match(child.name)
            if match and (child / TRAINER_STATE).is_file():
                step = int(match.group(1))
                if match.group(2) is None or step not in found:  # step_N before step_N.old
                    found[step] = child
    return sorted(found.items())


def checkpoint_ref(run_dir: Path, checkpoint: str) -> ModelRef:
    """``--checkpoint checkpoint`` of ``run_dir``, its weights checked against what its trainer_state.json lists.
    A checkpoint removed while it is read (a training pruning them) is not called damaged: "last" looks again (a
    few times at most), step_N is ConfigError saying it was removed."""
    if not (run_dir / CONFIG_FILE).is_file() or not (run_dir / "checkpoints").is_dir():
        from wavegen.resolve_why import not_a_run

        raise ConfigError(not_a_run(run_dir, checkpoint))
    for attempt in range(PRUNED_RETRIES):
        found = run_checkpoints(run_dir)
        if not found and attempt < PRUNED_RETRIES - 1:
            continue  # a listing made while one was renamed in and the one before removed may see neither
        if not found:
            raise ConfigError(f"--checkpoint {checkpoint}: {run_dir / 'checkpoints'} holds no finished checkpoint")
        step, folder = found[-1] if checkpoint == "last" else _named_checkpoint(run_dir, checkpoint, found)
        try:
            return _read_checkpoint(run_dir, step, folder, checkpoint)
        except (WavegenError, OSError):  # OSError: a file found, then gone before it was read
            now = run_checkpoints(run_dir)
            newer = checkpoint == "last" and bool(now) and now[-1][0] > step  # "last" names that one now
            if not (newer or was_removed(folder)):
                raise
            if checkpoint != "last":
                raise CheckpointRemovedError(removed_while_read(checkpoint, folder, run_dir)) from None
    raise ConfigError(pruned_too_fast(run_dir))


def _named_checkpoint(run_dir: Path, checkpoint: str, found: list[tuple[int, Path]]) -> tuple[int, Path]:
    """The kept checkpoint ``checkpoint`` ("step_N" or "N") names; ConfigError listing the kept ones otherwise."""
    match = _STEP.match(checkpoint) or re.match(r"^(\d+)$", checkpoint)
    steps = dict(found)
    if match is None or int(match.group(1)) not in steps:
        best = ("; the run's best/ is what the run folder names without --checkpoint"
                if checkpoint.strip("/") == "best" else "")
        aside = set_aside(run_dir, match and int(match.group(1)))
        raise ConfigError(f"--checkpoint {checkpoint}: no such checkpoint in {run_dir}{aside}; "
                          f"{kept_checkpoints(found)}{best}")
    return int(match.group(1)), steps[int(match.group(1))]


# what training moved a checkpoint aside as (checkpoint.DAMAGED, checkpoint.DIVERGED), and why
SET_ASIDE = {".diverged": "its weights gave the run's first non-finite step, or hold NaN or inf",
             ".damaged": "a file of it is damaged"}


def set_aside(run_dir: Path, step: int | None) -> str:
    """For the error of a missing step_N: where training moved that checkpoint aside, and why ("" where it did not)."""
    if step is None:
        return ""
    for suffix, why in SET_ASIDE.items():
        aside = sorted((Path(run_dir) / "checkpoints").glob(f"step_{step}{suffix}*"))
        if aside:
            return f" (training moved it aside to {aside[-1]}: {why}; it is kept for you, not rendered)"
    return ""


def _read_checkpoint(run_dir: Path, step: int, folder: Path, checkpoint: str) -> ModelRef:
    weights = checkpoint_weights(folder)
    if not weights.is_file():
        raise ConfigError(f"{folder}: no {weights.name} (an incomplete checkpoint)")
    listed = _check_listed(weights, run_dir)
    which = ", averaged weights" if weights.name == AVERAGED_MODEL else ""
    # both digests kept from the record now: a render records them after the load, when it may have been pruned
    tensors = listed.get("tensors_sha256")
    return ModelRef("checkpoint", f"{folder} (step {step}{which})", read_config(run_dir / CONFIG_FILE), weights,
                    folder, listed.get("sha256"), tensors if isinstance(tensors, str) else None, checkpoint)


def same_checkpoint(run_dir: Path, checkpoint: str, gone: Path) -> ModelRef | None:
    """``--checkpoint checkpoint`` (step_N) of ``run_dir`` resolved again, where its folder ``gone`` went away while
    it was read and the same step is kept under its other name (step_N <-> step_N.old: fileio.replace_dir saving
    that step again); None where it is not."""
    try:
        fresh = checkpoint_ref(run_dir, checkpoint)
    except ConfigError:
        return None
    return fresh if fresh.folder != gone else None


def was_removed(folder: Path) -> bool:
    """Whether the checkpoint ``folder``, found missing a file, was removed rather than damaged: it is gone.
    (checkpoint.prune_checkpoints renames a checkpoint out of the step_N names before it deletes it: a folder
    still there that lacks a file is damaged or incomplete, never half-removed.)"""
    return not folder.is_dir()


def removed_while_read(checkpoint: str, folder: Path, run_dir: Path) -> str:
    return (f"--checkpoint {checkpoint}: {folder} was removed while it was read (not damaged: a training writing "
            f"this run removes its older checkpoints, keeping the newest train.keep_checkpoints); "
            f"{kept_checkpoints(run_checkpoints(run_dir))}")


def pruned_too_fast(run_dir: Path) -> str:
    """Why ``--checkpoint last`` of ``run_dir`` gave up: each checkpoint it named was pruned while it was read."""
    return (f"--checkpoint last: the checkpoints of {run_dir} were each removed while they were read, "
            f"{PRUNED_RETRIES} times (a training writing this run prunes them as fast as it saves them: "
            "train.keep_checkpoints); give the run folder (its best/), or try again once the training has stopped")


def usable_checkpoint(folder: Path) -> bool:
    """Whether ``--checkpoint`` can render the checkpoint ``folder``: its weights (:func:`checkpoint_weights`)
    are there with the size and sha256 its trainer_state.json lists (hashed: for errors and hints only)."""
    from wavegen.checkpoint import checkpoint_damage

    weights = checkpoint_weights(folder)
    return weights.is_file() and checkpoint_damage(folder, only=(weights.name,)) is None


def intact_checkpoints(found: list[tuple[int, Path]]) -> tuple[list[int], str | None]:
    """The steps of the kept checkpoints ``found`` (:func:`run_checkpoints`) that --checkpoint can render
    (:func:`usable_checkpoint`), and how --checkpoint names the newest of them: "last" where it is the newest kept,
    else "step_N" (the newest is damaged); None where none is intact. The one choice every hint makes."""
    usable = [step for step, folder in found if usable_checkpoint(folder)]
    if not usable:
        return usable, None
    return usable, "last" if usable[-1] == found[-1][0] else f"step_{usable[-1]}"


def kept_checkpoints(found: list[tuple[int, Path]], or_last: bool = True) -> str:
    """For an error: the kept checkpoints (``found``: :func:`run_checkpoints`) a user may give to --checkpoint,
    "kept: step_4, step_6 (or last)", then those whose weights are damaged or missing, which are not usable."""
    found = [(step, folder) for step, folder in found if folder.is_dir()]  # one removed since (pruned) is not kept
    usable, newest = intact_checkpoints(found)
    damaged = [step for step, _ in found if step not in usable]
    text = "kept: " + (", ".join(f"step_{s}" for s in usable) if usable else "none intact")
    if or_last and newest == "last":
        text += " (or last)"
    if damaged:
        text += f"; damaged, not usable: {', '.join(f'step_{s}' for s in damaged)}"
    return text


def instead_of_best(folder: Path) -> str | None:
    """What to render instead of a run's damaged best/ (``folder``): the kept checkpoint that holds the
    same weights, else the intact kept ones; None where ``folder`` is not a run's best/ or no kept
    checkpoint is intact."""
    folder = Path(folder)
    found = run_checkpoints(folder.parent) if folder.name in BEST_FOLDERS else []
    usable, newest = intact_checkpoints(found)
    if not usable:
        return None
    try:
        listed = load_json(folder / WEIGHTS_RECORD)["files"][MODEL_FILE]
        tensors, sha = listed.get("tensors_sha256"), listed["sha256"]
    except (ConfigError, KeyError, TypeError, AttributeError):  # no record (an older wavegen) or a damaged one
        tensors = sha = None
    # a record of an older wavegen lists no tensors: only a checkpoint of the very same file is found
    tensors = tensors if isinstance(tensors, str) else None
    same = checkpoint_with(folder, tensors, sha if isinstance(sha, str) else None)
    if same is not None:
        return (f"the kept checkpoint step_{same[0]} holds the same weights: give {folder.parent} --checkpoint "
                f"step_{same[0]} instead (the same model), or copy the folder again from where it came from")
    last = f"--checkpoint last (step_{usable[-1]})" if newest == "last" else f"--checkpoint {newest}"
    others = ", ".join(f"step_{step}" for step in usable[:-1])
    unknown = "" if isinstance(tensors, str) else \
        " (this folder, written by an older wavegen, does not record its tensors: one may hold them unnoticed)"
    return (f"no kept checkpoint holds its weights{unknown}; give {folder.parent} {last}"
            f"{f' or another kept one ({others})' if others else ''} instead, or copy the folder again from "
            "where it came from")


def checkpoint_with(model_dir: str | Path, tensors: str | None = None, sha256: str | None = None
                    ) -> tuple[int, Path] | None:
    """(step, folder) of the newest kept checkpoint of the run ``model_dir`` belongs to (its best/ or a
    checkpoint) whose weights hold the tensors of digest ``tensors`` (:func:`wavegen.weights_file.tensors_sha256`);
    without it (a render recorded before tensors were, a model folder of an older wavegen), whose weights
    file has the ``sha256`` (a best/ and a checkpoint never do: other writers, other header metadata). Each
    read from the checkpoint's record where it lists it, else hashed. None where no kept checkpoint holds them."""
    from wavegen.checkpoint import CheckpointError, listed_digest, recorded_tensors_sha256
    from wavegen.fileio import sha256_file

    if tensors is None and sha256 is None:
        return None
    folder = Path(model_dir)
    run = folder.parent.parent if folder.parent.name == "checkpoints" else folder.parent
    try:
        kept = [(step, path, checkpoint_weights(path)) for step, path in reversed(run_checkpoints(run))]
    except OSError:  # unreadable: no hint
        return None
    for step, path, weights in kept:
        try:
            if tensors is not None and recorded_tensors_sha256(weights) == tensors or \
                    tensors is None and (listed_digest(weights) or sha256_file(weights)) == sha256:
                return step, path
        except (OSError, CheckpointError):  # missing, unreadable or damaged: the next may hold them
            continue
    return None


def best_with(run: Path, tensors: str | None) -> str | None:
    """The name of the run's model folder (best/, or best.old/ while best/ is replaced) whose weights hold
    the tensors of digest ``tensors``; None where none does (or ``tensors`` is None)."""
    from wavegen.checkpoint import CheckpointError, recorded_tensors_sha256

    for name in BEST_FOLDERS if tensors is not None else ():
        try:
            if recorded_tensors_sha256(Path(run) / name / MODEL_FILE) == tensors:
                return name
        except (OSError, CheckpointError):  # none, or damaged: it holds no weights to render
            continue
    return None


def checkpoint_weights(folder: Path) -> Path:
    """The weights a checkpoint is rendered and judged by: the average of the weights where the run keeps
    one (train.ema_decay: the file is there, or its trainer_state.json lists it: missing, it is damaged or being
    removed, never stood in for by the other weights), else its model.safetensors (which may be missing: an
    incomplete checkpoint)."""
    averaged = Path(folder) / AVERAGED_MODEL
    if averaged.is_file():
        return averaged
    try:
        listed = AVERAGED_MODEL in load_json(Path(folder) / TRAINER_STATE).get("files", {})
    except (WavegenError, AttributeError, TypeError):  # no record (yet, or any more), or not one of files
        listed = False
    return averaged if listed else Path(folder) / MODEL_FILE


def _check_listed(weights: Path, run_dir: Path) -> dict:
    """CheckpointError naming ``weights`` unless it has the size and sha256 its checkpoint's
    trainer_state.json lists (training refuses the same file; only this file is hashed, not the optimizer).
    Returns that (now checked) record of it (its sha256, tensors_sha256); {} for a checkpoint written before
    files were listed."""
    from wavegen.checkpoint import CheckpointError, checkpoint_damage

    why = checkpoint_damage(weights.parent, only=(weights.name,))
    if why is not None:
        raise CheckpointError(f"{why}: the checkpoint is damaged; give another --checkpoint "
                              f"({kept_checkpoints(run_checkpoints(run_dir), or_last=False)})")
    listed = load_json(weights.parent / TRAINER_STATE).get("files") or {}
    want = listed.get(weights.name)
    return want if isinstance(want, dict) else {}
