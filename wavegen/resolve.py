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
preset: the rate it is published at, ``data.sample_rate`` in the preset). A run's checkpoints (``--checkpoint``, which
are kept, which holds given weights) are wavegen.resolve_checkpoints'; the file names of a model folder and a
checkpoint are here, for both.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from wavegen.config import ConfigError
from wavegen.errors import WavegenError
from wavegen.resolve_config import preset_and_overrides, read_config, read_hand_written

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAINER_STATE = "trainer_state.json"  # a checkpoint's record: its step and every file's size and sha256
WEIGHTS_RECORD = "weights.json"  # a model folder's record of its weights' size and sha256 (checkpoint.save_model)
AVERAGED_MODEL = "averaged_model.safetensors"  # a checkpoint's average of the weights (train.ema_decay)
KINDS = ("preset", "config", "model", "run", "checkpoint")
BEST_FOLDERS = ("best", "best.old")  # what a run folder names as its model (resolve_model)
# accelerate saves a checkpoint's model without unwrapping it: DDP and torch.compile add these
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


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
        from wavegen.resolve_checkpoints import (PRUNED_RETRIES, CheckpointRemovedError, checkpoint_ref,
                                                 pruned_too_fast, removed_while_read, same_checkpoint, was_removed)

        renamed = False  # step_N looked for once under its other name (step_N.old while a save replaces it)
        for _ in range(PRUNED_RETRIES):
            try:
                check_model_memory(self.config, self.weights, device)
                return load_weights(self.weights)
            except WavegenError:
                if self.kind != "checkpoint" or self.weights.is_file() or not was_removed(self.folder):
                    raise
            run = self.folder.parent.parent
            if self.checkpoint != "last":
                fresh = None if renamed else same_checkpoint(run, self.checkpoint or self.folder.name, self.folder)
                if fresh is None:
                    raise CheckpointRemovedError(
                        removed_while_read(self.checkpoint or self.folder.name, self.folder, run)) from None
                renamed = True
            else:
                fresh = checkpoint_ref(run, "last")
            for field in fields(self):
                setattr(self, field.name, getattr(fresh, field.name))
        raise ConfigError(pruned_too_fast(run))

    def check_weights(self) -> None:
        """A model folder's weights against the size and sha256 it recorded when it was written
        (CheckpointError naming the file; hashed once per ModelRef; a folder of an older wavegen,
        without the record, is trusted). A checkpoint's weights were checked when it was resolved."""
        if self.kind in ("model", "run") and self.sha256 is None:
            from wavegen.checkpoint import verified_weights_sha256
            from wavegen.resolve_checkpoints import instead_of_best

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


def resolve_model(target: str | Path, checkpoint: str | None = None) -> ModelRef:
    """A preset name, config file, model folder or run folder (+ ``checkpoint`` "last" | "step_N") → ModelRef.

    A run folder means its ``best/`` (or ``best.old/`` while best/ is being replaced).
    Raises ConfigError naming the path or preset when nothing matches.
    """
    from wavegen.models import PRESETS, resolve_preset
    from wavegen.resolve_checkpoints import checkpoint_ref, run_checkpoints

    text = str(target)
    path = Path(text).expanduser()
    if checkpoint is not None:
        return checkpoint_ref(path, checkpoint)
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
    from wavegen.resolve_checkpoints import run_checkpoints

    try:
        return resolve_model(target)
    except ConfigError:
        run = Path(str(target)).expanduser()
        if not ((run / CONFIG_FILE).is_file() and run_checkpoints(run) and not (run / "best").exists()):
            raise
        raise ConfigError(f"{target}: this run has no best/ model to take the settings of; give its "
                          f"{run / CONFIG_FILE} for them (random weights)") from None
