"""Model folders (safetensors + config.json) and training checkpoints, written atomically.

A model folder holds ``model.safetensors`` and ``config.json`` (the full resolved run
config), so it needs nothing else to be rendered or evaluated. No pickle is ever loaded
from a model folder. Training checkpoints are ``RUN/checkpoints/step_N/``: accelerate's
``save_state`` plus ``training_state.safetensors`` (the state a model carries from one
window of a stream to the next), ``averaged_model.safetensors`` when the run keeps an average of
its weights (``train.ema_decay``: the weights ``--checkpoint`` renders use) and
``trainer_state.json``, which lists every file of the
checkpoint with its size and sha256; the folder is written under a temporary name, synced,
then renamed. A checkpoint whose files do not match that list is damaged: training resumes
from the newest intact one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
from pathlib import Path

import torch

from wavegen.config import load_json
from wavegen.errors import WavegenError
from wavegen.fileio import atomic_write, replace_dir, sha256_file, write_json
from wavegen.resolve import AVERAGED_MODEL

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAINER_STATE = "trainer_state.json"
TRAINING_STATE = "training_state.safetensors"


class CheckpointError(WavegenError):
    """A model or checkpoint file is damaged or unreadable; the message names the file."""


def _safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)


def save_model(model: torch.nn.Module, config: dict, folder: Path, extra: dict[str, bytes | str] | None = None) -> Path:
    """Write ``folder/model.safetensors`` + ``folder/config.json`` (+ ``extra`` files by name, e.g. the
    album profile): a temporary folder, synced, swapped in with fileio.replace_dir (the old folder
    goes only after the swap)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    atomic_write(tmp / MODEL_FILE, _safetensors_bytes(model.state_dict(), {"model_type": config["model_type"]}))
    write_json(tmp / CONFIG_FILE, config)
    for name, data in (extra or {}).items():
        atomic_write(tmp / name, data)
    return replace_dir(tmp, folder)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file → its tensors (CPU); CheckpointError naming the file when it is damaged."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as err:  # safetensors raises its own SafetensorError (and OSError, ValueError)
        raise CheckpointError(f"{path}: damaged or not a safetensors file ({err})") from None


def weights_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes a safetensors file holds, from its header alone (nothing is
    loaded). CheckpointError naming the file when the header is damaged or the data is cut short."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            size = path.stat().st_size
            if n > size - 8:
                raise ValueError(f"header of {n} bytes in a file of {size}")
            header = json.loads(f.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        if ends and 8 + n + max(ends) > size:
            raise ValueError(f"{8 + n + max(ends)} bytes described, {size} present (truncated)")
        return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (OSError, ValueError, KeyError, TypeError, struct.error) as err:
        raise CheckpointError(f"{path}: damaged or not a safetensors file ({err})") from None


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """A model or run folder → (model in eval mode on ``device``, its resolved config dict).

    Shorthand for ``wavegen.resolve.resolve_model(path).load(device)``: the one load path.
    """
    from wavegen.resolve import resolve_model

    ref = resolve_model(path)
    return ref.load(device), ref.config


# ----- training checkpoints ---------------------------------------------------------------------

_STEP = re.compile(r"^step_(\d+)$")


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """A run's finished checkpoints ``(step, folder)``, oldest first (intact or not)."""
    from wavegen.resolve import run_checkpoints

    return run_checkpoints(run_dir)


def _synced_digest(path: Path) -> dict:
    """Size and sha256 of a file written by someone else (accelerate), after syncing it to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def save_checkpoint(accelerator, run_dir: Path, step: int, trainer_state: dict,
                    training_tensors: dict[str, torch.Tensor], keep: int,
                    averaged: dict[str, torch.Tensor] | None = None) -> Path:
    """Every process calls this (accelerate saves per-process RNG state); the main one lists the
    files, renames the folder into place and prunes all but the newest ``keep``. ``averaged``:
    the averaged model's weights, written as AVERAGED_MODEL."""
    folder = Path(run_dir) / "checkpoints"
    final = folder / f"step_{step}"
    tmp = folder / f".tmp_step_{step}"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every process's RNG file is written before the listing
    if accelerator.is_main_process:
        if training_tensors:
            atomic_write(tmp / TRAINING_STATE, _safetensors_bytes(training_tensors))
        if averaged is not None:
            atomic_write(tmp / AVERAGED_MODEL, _safetensors_bytes(averaged))
        files = {p.relative_to(tmp).as_posix(): _synced_digest(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        write_json(tmp / TRAINER_STATE, {**trainer_state, "files": files})
        replace_dir(tmp, final)
        for _, old in checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("checkpoint saved: %s", final)
    accelerator.wait_for_everyone()
    return final


def checkpoint_damage(folder: Path) -> str | None:
    """None when every file the checkpoint listed is there with its size and sha256; otherwise
    what is wrong, naming the file. (A checkpoint written before files were listed is trusted.)"""
    try:
        state = load_json(folder / TRAINER_STATE)
    except WavegenError as err:  # ConfigError naming the file: missing, unreadable, not JSON
        return str(err)
    listed = state.get("files") if isinstance(state, dict) else None
    if not isinstance(state, dict) or "step" not in state:
        return f"{folder / TRAINER_STATE}: not a trainer state"
    for name, want in (listed or {}).items():
        path = folder / name
        if not path.is_file():
            return f"{path}: missing"
        size = path.stat().st_size
        if size != want["bytes"]:
            return f"{path}: {size} bytes, {want['bytes']} were written (truncated or changed)"
        if sha256_file(path) != want["sha256"]:
            return f"{path}: its content differs from what was written (sha256)"
    return None


def intact_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """The newest intact checkpoint ``(step, folder)`` of a run, warning about each damaged newer one;
    None when the run has none. CheckpointError when there are checkpoints but none is intact."""
    found = checkpoints(run_dir)
    damaged = []
    for step, folder in reversed(found):
        why = checkpoint_damage(folder)
        if why is None:
            if damaged:
                logger.warning("resuming from %s instead", folder)
            return step, folder
        damaged.append(why)
        logger.warning("checkpoint %s is damaged (%s): skipping it", folder, why)
    if damaged:
        raise CheckpointError(f"no intact checkpoint in {Path(run_dir) / 'checkpoints'} ({'; '.join(damaged)}); "
                              "remove the damaged folders to start this run again from step 0")
    return None


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
        accelerator.load_state(str(folder))
    except Exception as err:  # a damaged file the listing could not catch (an old checkpoint)
        raise CheckpointError(f"{folder}: cannot be restored ({type(err).__name__}: {err}); remove it to "
                              "resume from the checkpoint before it") from None
    tensors_file = folder / TRAINING_STATE
    tensors = load_weights(tensors_file) if tensors_file.is_file() else {}
    state = load_json(folder / TRAINER_STATE)
    state.pop("files", None)
    return state, tensors
