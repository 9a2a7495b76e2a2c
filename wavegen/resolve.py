"""What a user names as "the model": a preset, a model folder, a run folder, or a run's checkpoint.

One resolver for train, render, eval, info and bench::

    ref = resolve_model("runs/my-band")                      # the run's best/
    ref = resolve_model("runs/my-band", checkpoint="last")   # its newest kept checkpoint
    ref = resolve_model("runs/my-band", checkpoint="step_2000")
    ref = resolve_model("samplernn-tiny")                    # a preset: random weights
    ref = resolve_model("my-config.json")                    # a config file: random weights
    model = ref.load("cpu")                                  # eval mode, weights loaded
    ref.config, ref.sample_rate, ref.weights, ref.source
    ref.weights_sha256()                                     # checked against the folder's record, hashed once
    ref.weights_tensors_sha256()                             # its tensors alone: the same for best/ and its checkpoint

The sample rate always comes from the model's config (a trained model: its corpus's rate; a
preset: the rate it is published at, ``data.sample_rate`` in the preset).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

from wavegen.config import ConfigError, load_json
from wavegen.errors import WavegenError
from wavegen.resolve_config import preset_and_overrides, read_config, read_hand_written

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAINER_STATE = "trainer_state.json"  # a checkpoint's record: its step and every file's size and sha256
WEIGHTS_RECORD = "weights.json"  # a model folder's record of its weights' size and sha256 (checkpoint.save_model)
AVERAGED_MODEL = "averaged_model.safetensors"  # a checkpoint's average of the weights (train.ema_decay)
KINDS = ("preset", "config", "model", "run", "checkpoint")
_STEP = re.compile(r"^step_(\d+)$")
BEST_FOLDERS = ("best", "best.old")  # what a run folder names as its model (resolve_model)
_STEP_OR_OLD = re.compile(r"^step_(\d+)(\.old)?$")
# accelerate saves a checkpoint's model without unwrapping it: DDP and torch.compile add these
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# a checkpoint removed while it is read (a training pruning them, train.keep_checkpoints): how often --checkpoint last
# looks again
PRUNED_RETRIES = 10


class CheckpointRemovedError(ConfigError):
    """The checkpoint named (``--checkpoint step_N``, or the one ``last`` named) was removed while it was read: a
    training pruned it. Not damaged; where the command looks again is the caller's to say."""


@dataclass
class ModelRef:
    """A resolved model. ``kind`` is one of KINDS; ``weights`` is None for a preset or config file."""

    kind: str
    source: str  # for people: "preset samplernn-tiny (random weights)", "runs/x/best", ...
    config: dict  # the full resolved config; data.sample_rate always present
    weights: Path | None = None
    folder: Path | None = None  # the model folder, run folder or checkpoint folder
    sha256: str | None = None  # the weights' sha256 once hashed and checked (weights_sha256)
    tensors_sha256: str | None = None  # their tensors' digest once read (weights_tensors_sha256)
    checkpoint: str | None = None  # the --checkpoint resolved ("last", "step_N"): load() looks again for "last"
    # a model folder's files beside its weights, read with them by load() (resolve_replaced: of the same folder, a best/
    # replaced meanwhile read again; config.json too, into config), by name -> text (bytes where not UTF-8; None: not
    # there; the error met where it could not be read: an OSError, a ValueError for a FIFO not opened); None until
    # then. album.json: the guard's profile
    read_beside: dict | None = None
    rate_given: int | None = None  # the data.sample_rate a hand-written config file gives (read_hand_written)

    @property
    def sample_rate(self) -> int:
        return int(self.config["data"]["sample_rate"])

    @property
    def trained(self) -> bool:
        return self.weights is not None

    def build(self, device="cpu"):
        """A freshly initialised model of this config (random weights, train mode).

        The weights must fit in memory (on the CPU and ``device``): a config with absurd sizes is
        refused before anything is allocated. (Shapes only: :func:`wavegen.memory.meta_model`.)
        """
        from wavegen.memory import check_model_memory
        from wavegen.models import build_model

        check_model_memory(self.config, self.weights, device)
        return build_model(self.config)

    def load(self, device="cpu"):
        """The model in eval mode on ``device``: trained weights where there are any. The weights
        file's header is checked against the config before anything is built, and a model folder's
        weights against the sha256 they were written with: read once, whole, into memory, and the bytes read checked
        and loaded, from one folder, with its config.json (``config`` read again: a run's best/ replaced since its
        resolution, or meanwhile: wavegen.resolve_replaced.read_whole)."""
        if self.weights is None:
            return self.build(device).to(device).eval()
        from wavegen.models import build_model
        from wavegen.resolve_replaced import read_whole

        # before the model is built: a checkpoint being pruned has less time to go
        state = read_whole(self, device) if self.kind in ("model", "run") else self._read_weights(device)
        model = build_model(self.config)
        _load_into(model, state, self.weights)
        return model.to(device).eval()

    def _read_weights(self, device) -> dict:
        """The weights' tensors, once the model is known to fit in memory on ``device`` (the file's header read:
        :func:`wavegen.memory.check_model_memory`); CheckpointError naming a damaged file. A checkpoint removed since
        it was resolved (a training pruning its checkpoints) is not called damaged: for ``--checkpoint last`` this
        ref is resolved again, naming the newest kept checkpoint (a few times at most); step_N is read from its other
        name where it has one now (step_N.old while a save of that step replaces it), else ConfigError saying it was
        removed."""
        from wavegen.checkpoint import load_weights
        from wavegen.memory import check_model_memory

        renamed = False  # step_N looked for once under its other name (step_N.old while a save replaces it)
        for _ in range(PRUNED_RETRIES):
            try:
                check_model_memory(self.config, self.weights, device)
                return load_weights(self.weights)
            except WavegenError:
                if self.kind != "checkpoint" or self.weights.is_file() or not _removed(self.folder):
                    raise
            run = self.folder.parent.parent
            if self.checkpoint != "last":
                fresh = None if renamed else _same_checkpoint(run, self.checkpoint or self.folder.name, self.folder)
                if fresh is None:
                    raise CheckpointRemovedError(
                        _removed_while_read(self.checkpoint or self.folder.name, self.folder, run)) from None
                renamed = True
            else:
                fresh = _checkpoint_ref(run, "last")
            for field in fields(self):
                setattr(self, field.name, getattr(fresh, field.name))
        raise ConfigError(pruned_too_fast(run))

    def check_weights(self) -> None:
        """A model folder's weights against the size and sha256 it recorded when it was written
        (CheckpointError naming the file; hashed once per ModelRef; a folder of an older wavegen,
        without the record, is trusted). A checkpoint's weights were checked when it was resolved."""
        if self.kind in ("model", "run") and self.sha256 is None:
            from wavegen.checkpoint import verified_weights_sha256

            self.sha256 = verified_weights_sha256(self.weights, lambda: instead_of_best(self.folder))

    def weights_sha256(self) -> str | None:
        """The weights file's sha256 (None without weights), checked as :meth:`check_weights` does
        and hashed once per ModelRef: what a command records as its model_sha256 after load()."""
        if self.weights is None:
            return None
        self.check_weights()
        if self.sha256 is None:
            from wavegen.fileio import sha256_file

            self.sha256 = sha256_file(self.weights)
        return self.sha256

    def weights_tensors_sha256(self) -> str | None:
        """The digest of the weights' tensors alone (:func:`wavegen.weights_file.tensors_sha256`; None without
        weights): equal for a run's best/ and the checkpoint it was written from, whose files differ. Read
        from the folder's record (checked with the file, :meth:`check_weights`) where it lists it, else
        hashed; once per ModelRef. What render records as model_tensors_sha256 and compares on resume."""
        if self.weights is None:
            return None
        self.check_weights()
        if self.tensors_sha256 is None:
            from wavegen.checkpoint import recorded_tensors_sha256

            self.tensors_sha256 = recorded_tensors_sha256(self.weights)
        return self.tensors_sha256


def strip_wrappers(state: dict) -> dict:
    """State dict keys without the DDP / torch.compile prefixes accelerate leaves in checkpoints."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def _load_into(model, state: dict, weights: Path) -> None:
    """``state`` (the tensors of the file ``weights``) into ``model``; ConfigError naming the file where they do
    not fit."""
    state = strip_wrappers(state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ConfigError(f"{weights} does not match its config: {err}") from None


def _is_model_folder(folder: Path) -> bool:
    return (folder / MODEL_FILE).is_file() and (folder / CONFIG_FILE).is_file()


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


def _checkpoint_ref(run_dir: Path, checkpoint: str) -> ModelRef:
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
            if not (newer or _removed(folder)):
                raise
            if checkpoint != "last":
                raise CheckpointRemovedError(_removed_while_read(checkpoint, folder, run_dir)) from None
    raise ConfigError(pruned_too_fast(run_dir))


def _named_checkpoint(run_dir: Path, checkpoint: str, found: list[tuple[int, Path]]) -> tuple[int, Path]:
    """The kept checkpoint ``checkpoint`` ("step_N" or "N") names; ConfigError listing the kept ones otherwise."""
    match = _STEP.match(checkpoint) or re.match(r"^(\d+)$", checkpoint)
    steps = dict(found)
    if match is None or int(match.group(1)) not in steps:
        best = ("; the run's best/ is what the run folder names without --checkpoint"
                if checkpoint.strip("/") == "best" else "")
        raise ConfigError(f"--checkpoint {checkpoint}: no such checkpoint in {run_dir}{set_aside(run_dir, match and int(match.group(1)))}; "
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


def _same_checkpoint(run_dir: Path, checkpoint: str, gone: Path) -> ModelRef | None:
    """``--checkpoint checkpoint`` (step_N) of ``run_dir`` resolved again, where its folder ``gone`` went away while
    it was read and the same step is kept under its other name (step_N <-> step_N.old: fileio.replace_dir saving
    that step again); None where it is not."""
    try:
        fresh = _checkpoint_ref(run_dir, checkpoint)
    except ConfigError:
        return None
    return fresh if fresh.folder != gone else None


def _removed(folder: Path) -> bool:
    """Whether the checkpoint ``folder``, found missing a file, was removed rather than damaged: it is gone.
    (checkpoint.prune_checkpoints renames a checkpoint out of the step_N names before it deletes it: a folder
    still there that lacks a file is damaged or incomplete, never half-removed.)"""
    return not folder.is_dir()


def _removed_while_read(checkpoint: str, folder: Path, run_dir: Path) -> str:
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


def kept_checkpoints(found: list[tuple[int, Path]], or_last: bool = True) -> str:
    """For an error: the kept checkpoints (``found``: :func:`run_checkpoints`) a user may give to --checkpoint,
    "kept: step_4, step_6 (or last)", then those whose weights are damaged or missing, which are not usable."""
    usable, damaged = [], []
    found = [(step, folder) for step, folder in found if folder.is_dir()]  # one removed since (pruned) is not kept
    for step, folder in found:
        (usable if usable_checkpoint(folder) else damaged).append(step)
    text = "kept: " + (", ".join(f"step_{s}" for s in usable) if usable else "none intact")
    if or_last and usable and usable[-1] == found[-1][0]:
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
    usable = [step for step, path in found if usable_checkpoint(path)]
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
    last = f"--checkpoint last (step_{usable[-1]})" if usable[-1] == found[-1][0] else f"--checkpoint step_{usable[-1]}"
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


def resolve_model(target: str | Path, checkpoint: str | None = None) -> ModelRef:
    """A preset name, config file, model folder or run folder (+ ``checkpoint`` "last" | "step_N") → ModelRef.

    A run folder means its ``best/`` (or ``best.old/`` while best/ is being replaced).
    Raises ConfigError naming the path or preset when nothing matches.
    """
    from wavegen.models import PRESETS, resolve_preset

    text = str(target)
    path = Path(text).expanduser()
    if checkpoint is not None:
        return _checkpoint_ref(path, checkpoint)
    if text in PRESETS and not path.exists():
        config = resolve_preset(text)
        return ModelRef("preset", f"preset {text} (random weights)", config)
    if path.is_file():
        if path.suffix != ".json":
            raise ConfigError(f"{path}: not a model: give a preset name, a model or run folder, or a config .json")
        config, rate_given = read_hand_written(path)
        return ModelRef("config", f"{path} ({preset_and_overrides(config)}random weights)", config,
                        folder=path.parent, rate_given=rate_given)
    found = _model_folder_ref(path) or _model_folder_ref(path)  # twice: a best/ being replaced meanwhile
    if found is not None:
        return found
    if not path.exists():
        presets = "" if "/" in text else f" (presets: {sorted(PRESETS)})"  # a path is not a mistyped preset
        raise ConfigError(f"{text}: no such preset, model folder or run folder{presets}")
    from wavegen.resolve_why import no_best, not_a_model

    if (path / CONFIG_FILE).is_file() and run_checkpoints(path):
        raise ConfigError(no_best(path))
    raise ConfigError(not_a_model(path))


def _model_folder_ref(path: Path) -> ModelRef | None:
    """``path`` as a model folder, or a run folder's best/ (best.old/ between fileio.replace_dir's renames); None
    where neither is there. A run's best folder gone between its look and its config's read (replaced: best.old/
    removed as the replace ends) is passed over, not an error; one there again (best/, the replace's new one) is
    read once more: a config that fails twice is the folder's own."""
    for kind, folder in (("model", path), *(("run", path / name) for name in BEST_FOLDERS)):
        for attempt in range(1 if kind == "model" else 2):
            if not _is_model_folder(folder):
                break
            try:
                return ModelRef(kind, str(folder), read_config(folder / CONFIG_FILE), folder / MODEL_FILE, folder)
            except ConfigError:
                if kind == "model" or (attempt == 1 and _is_model_folder(folder)):
                    raise
    return None


def resolve_settings(target: str | Path) -> ModelRef:
    """:func:`resolve_model` for the commands that take a model's settings alone (train --model, bench
    --train: random weights), which have no --checkpoint: a run with checkpoints but no best/ yet is
    answered with its config.json to give, not resolve_model's "--checkpoint last"."""
    try:
        return resolve_model(target)
    except ConfigError:
        run = Path(str(target)).expanduser()
        if not ((run / CONFIG_FILE).is_file() and run_checkpoints(run) and not (run / "best").exists()):
            raise
        raise ConfigError(f"{target}: this run has no best/ model to take the settings of; give its "
                          f"{run / CONFIG_FILE} for them (random weights)") from None
