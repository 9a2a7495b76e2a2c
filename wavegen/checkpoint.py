"""Model folders (safetensors + config.json) and training checkpoints, written atomically.

A model folder holds ``model.safetensors`` and ``config.json`` (the full resolved run
config), so it needs nothing else to be rendered or evaluated. No pickle is ever loaded
from a model folder. Training checkpoints are ``RUN/checkpoints/step_N/``: accelerate's
``save_state`` plus ``trainer_state.json`` and ``training_state.safetensors`` (state a
model carries between batches), written under a temporary name and then renamed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from wavegen.config import ConfigError, load_json, save_json
from wavegen.errors import WavegenError
from wavegen.models import build_model

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished folder into place: the old one is removed only after the swap."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def save_model(model: torch.nn.Module, config: dict, folder: Path) -> Path:
    """Write ``folder/model.safetensors`` + ``folder/config.json`` atomically."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / MODEL_FILE), metadata={"model_type": config["model_type"]})
    save_json(tmp / CONFIG_FILE, config)
    replace_dir(tmp, folder)
    return folder


class CheckpointError(WavegenError):
    """A model or checkpoint file is damaged or unreadable; the message names the file."""


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file → its tensors (CPU); CheckpointError naming the file when it is damaged."""
    path = Path(path)
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as err:  # safetensors raises its own SafetensorError (and OSError, ValueError)
        raise CheckpointError(f"{path}: damaged or not a safetensors file ({err})") from None


def find_model_dir(path: str | Path) -> Path:
    """A model folder, or a run folder (its ``best/``), → the folder holding the weights."""
    path = Path(path)
    for candidate in (path, path / "best", path / "best.old"):
        if (candidate / MODEL_FILE).is_file() and (candidate / CONFIG_FILE).is_file():
            return candidate
    if not path.exists():
        raise ConfigError(f"{path}: no such model or run folder")
    raise ConfigError(f"{path}: no {MODEL_FILE} + {CONFIG_FILE} here or in {path / 'best'}; "
                      "train a model first (wavegen train), or give a run or model folder")


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """Model or run folder → (model in eval mode on ``device``, resolved config dict)."""
    folder = find_model_dir(path)
    config = load_json(folder / CONFIG_FILE)
    model = build_model(config)
    state = load_weights(folder / MODEL_FILE)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ConfigError(f"{folder / MODEL_FILE} does not match its {CONFIG_FILE}: {err}") from None
    return model.to(device).eval(), config


# ----- training checkpoints ---------------------------------------------------------------------

_STEP = re.compile(r"^step_(\d+)$")


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Finished checkpoints of a run, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    found = []
    if folder.is_dir():
        for child in folder.iterdir():
            match = _STEP.match(child.name)
            if match and (child / "trainer_state.json").is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1][1] if found else None


def save_checkpoint(accelerator, run_dir: Path, step: int, trainer_state: dict,
                    training_tensors: dict[str, torch.Tensor], keep: int) -> Path | None:
    """Every process calls this (accelerate saves per-process RNG state); the main one renames."""
    folder = Path(run_dir) / "checkpoints"
    final = folder / f"step_{step}"
    tmp = folder / f".tmp_step_{step}"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every process's RNG file is written before the rename
    if accelerator.is_main_process:
        if training_tensors:
            save_file({k: v.detach().cpu().contiguous() for k, v in training_tensors.items()},
                      str(tmp / "training_state.safetensors"))
        save_json(tmp / "trainer_state.json", trainer_state)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for _, old in checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("checkpoint saved: %s", final)
    accelerator.wait_for_everyone()
    return final


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
    accelerator.load_state(str(folder))
    tensors_file = folder / "training_state.safetensors"
    tensors = load_file(str(tensors_file)) if tensors_file.is_file() else {}
    return load_json(folder / "trainer_state.json"), tensors
