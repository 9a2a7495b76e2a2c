"""Configuration: plain dataclasses, a JSON round trip, `--set key=value` overrides.

A run's resolved config is one JSON object::

    {"model_type": "samplernn", "preset": "samplernn-tiny",
     "model": {...SampleRNNConfig...}, "train": {...TrainConfig...},
     "data": {"corpus": "/abs/corpus", "sample_rate": 16000}}

The model folder (``best/``) carries the same object, so rendering needs nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wavegen.errors import WavegenError


class ConfigError(WavegenError, ValueError):
    """A configuration that cannot work; the message says which value and why."""


@dataclass
class TrainConfig:
    """Settings of the training loop (shared by every model family)."""

    seed: int = 0
    batch_size: int = 32  # global: split across processes and accumulation steps
    seq_len: int = 1024  # SampleRNN: TBPTT window; WaveNet: target samples per crop
    tbptt_windows: int = 8  # SampleRNN: consecutive windows per chunk, hidden state carried
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    grad_accum: int = 1
    # an exponential moving average of the weights (torch's AveragedModel), updated after every
    # step: validation, best/, training samples and --checkpoint renders use it (0: off)
    ema_decay: float = 0.0
    lr_schedule: str = "constant"  # constant | cosine | linear
    warmup_steps: int = 0
    max_steps: int = 100_000
    log_interval: int = 10
    val_interval: int = 500
    val_seconds: float = 60.0  # cap on validation audio per evaluation
    checkpoint_interval: int = 500
    keep_checkpoints: int = 3
    mixed_precision: str = "auto"  # auto (bf16 on CUDA) | no | bf16 | fp16
    compile: bool = False
    num_workers: int = 0
    # training samples (wavegen.samples): every sample_interval steps (0: at validation steps, at
    # most every 500 steps; negative: off), sample_streams streams (a conditioned model: one per label, up to 8) of
    # sample_seconds each, rendered from the current weights into RUN/samples/step_N/
    sample_interval: int = 0
    sample_seconds: float = 4.0
    sample_streams: int = 2

    def validate(self) -> None:
        positive = ["batch_size", "seq_len", "tbptt_windows", "grad_accum", "max_steps",
                    "log_interval", "val_interval", "checkpoint_interval", "keep_checkpoints"]
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}={getattr(self, name)}: must be at least 1")
        if self.lr <= 0:
            raise ConfigError(f"train.lr={self.lr}: must be positive")
        if self.lr_schedule not in ("constant", "cosine", "linear"):
            raise ConfigError(f"train.lr_schedule={self.lr_schedule!r}: use constant, cosine or linear")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ConfigError(f"train.mixed_precision={self.mixed_precision!r}: use auto, no, bf16 or fp16")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"train.ema_decay={self.ema_decay}: give 0 <= decay < 1 (0 turns the average off; "
                              "0.99 averages over about the last 100 steps)")
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps={self.warmup_steps}: must be >= 0")
        if self.val_seconds <= 0:
            raise ConfigError(f"train.val_seconds={self.val_seconds}: must be positive")
        if not 0 < self.sample_seconds <= 600:
            raise ConfigError(f"train.sample_seconds={self.sample_seconds}: give 0 < seconds <= 600 "
                              "(turn samples off with train.sample_interval=-1)")
        if self.sample_streams < 1:
            raise ConfigError(f"train.sample_streams={self.sample_streams}: must be at least 1 "
                              "(turn samples off with train.sample_interval=-1)")


def to_dict(obj: Any) -> dict:
    """Dataclass → plain JSON-ready dict."""
    return dataclasses.asdict(obj)


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Plain dict → dataclass ``cls``; unknown keys are refused by name, types coerced."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown {where or cls.__name__} setting(s) {unknown}; known: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], name)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}={value!r}: expected a list")
        (item,) = typing.get_args(hint) or (Any,)
        return [_coerce(v, item, name) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}={value!r}: expected true or false")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{name}={value!r}: expected a whole number")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}={value!r}: expected a number")
        return float(value)
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{name}={value!r}: expected a string")
    return value


def parse_value(text: str) -> Any:
    """Parse the right-hand side of ``--set key=value``: JSON where it parses, else a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if "," in text:  # frame_sizes=8,2
            return [parse_value(part) for part in text.split(",")]
        return text


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` strings to a resolved run config dict (returns a new dict).

    ``section.key=value`` names a section (``model.dim=512``); a bare ``key=value`` is looked up
    in every section and must be unique (``seed=3`` → ``train.seed``).
    """
    config = json.loads(json.dumps(config))
    for item in overrides:
        section, name = override_target(config, item)
        config[section][name] = parse_value(item.split("=", 1)[1])
    return config


def override_target(config: dict, item: str) -> tuple[str, str]:
    """The (section, setting) a ``key=value`` string sets in ``config``, as :func:`apply_overrides`
    reads it; ConfigError naming the string where it is not ``key=value`` or names no one setting."""
    sections = [s for s in ("model", "train", "data") if isinstance(config.get(s), dict)]
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key = item.split("=", 1)[0].strip()
    if "." in key:
        section, name = key.split(".", 1)
        if section not in sections:
            raise ConfigError(f"--set {item!r}: no section {section!r}; sections: {sections}")
        if name not in config[section]:
            raise ConfigError(f"--set {item!r}: {section} has no setting {name!r}; "
                              f"known: {sorted(config[section])}")
        return section, name
    found = [s for s in sections if key in config[s]]
    if not found:
        known = sorted(f"{s}.{k}" for s in sections for k in config[s])
        raise ConfigError(f"--set {item!r}: no setting {key!r}; known: {known}")
    if len(found) > 1:
        raise ConfigError(f"--set {item!r}: {key!r} is in several sections {found}; "
                          f"write it as section.{key}")
    return found[0], key


def load_json(path: Path) -> dict:
    """A JSON file's content; ConfigError naming the file when it is missing, unreadable or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read ({getattr(err, 'strerror', None) or err})") from None
