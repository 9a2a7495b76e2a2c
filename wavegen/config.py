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
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wavegen.errors import WavegenError
from wavegen.fileio import NOT_JSON, read_json


LARGEST_INT = 2**63 - 1  # the largest whole-number setting (what torch and numpy hold; no setting means more)


class ConfigError(WavegenError, ValueError):
    """A configuration that cannot work; the message says which value and why."""


@dataclass
class TrainConfig:
    """Settings of the training loop (shared by every model family)."""

    seed: int = 0
    batch_size: int = 32  # global: split across processes and accumulation steps
    seq_len: int = 1024  # SampleRNN: TBPTT window; WaveNet: target samples per crop
    tbptt_windows: int = 8  # SampleRNN: consecutive windows per chunk, hidden state carried
    # SampleRNN: the fraction of chunks whose first window sees silence before it (as a render
    # begins: silence codes and the initial state), not the audio that precedes it (0: none)
    silence_start: float = 0.0
    # how evenly the corpus's labels are drawn: 0 as much as each has training audio (a label with 10x
    # the audio trains 10x as often), 1 every label equally often; between, a label's share of the
    # draws goes as its audio ** (1 - label_balance)
    label_balance: float = 0.0
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
    # most every 500 steps; -1: off), sample_streams streams (a conditioned model: one per label, up to 8) of
    # sample_seconds each, rendered from the current weights into RUN/samples/step_N/
    sample_interval: int = 0
    sample_seconds: float = 4.0
    sample_streams: int = 2
    # how long a process of a multi-process training waits for the others at a collective before it stops, saying
    # so (the process group's timeout, gloo's or NCCL's): longer than the main process ever works alone (training
    # samples, best/, a checkpoint's files); a process frozen (stopped, swapped out) is found after it
    group_timeout_seconds: float = 600.0

    def validate(self) -> None:
        """ConfigError naming the first setting that cannot work; every number against NUMBER_RANGES."""
        for name, bounds in NUMBER_RANGES.items():
            check_number(f"train.{name}", getattr(self, name), **bounds)
        if self.lr_schedule not in ("constant", "cosine", "linear"):
            raise ConfigError(f"train.lr_schedule={self.lr_schedule!r}: use constant, cosine or linear")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ConfigError(f"train.mixed_precision={self.mixed_precision!r}: use auto, no, bf16 or fp16")


def train_settings(base: dict) -> dict:
    """A model config's train section over TrainConfig's defaults (a config file written by hand may give
    some settings or none; each is then a setting ``--set train.KEY=VALUE`` finds); ConfigError when it
    is not a section. Unknown names stay, for :func:`from_dict` to refuse by name."""
    given = base.get("train", {})
    if not isinstance(given, dict):
        raise ConfigError(f"train={given!r} in the model's config: expected a section of train settings such as "
                          '{"lr": 0.001} (or no train section: the defaults)')
    return {**to_dict(TrainConfig()), **given}


# The most the optimizer's numbers may be: Adam computes in float32 (at most 3.4e38) and divides lr by
# 1 - beta1 = 0.1 at its first step; 1e30 is still far beyond any value that trains.
OPTIMIZER_MAX = 1e30
_SAMPLES_OFF = " (turn samples off with train.sample_interval=-1)"
# The range of every number of TrainConfig (a test keeps it complete): check_number's bounds.
NUMBER_RANGES: dict[str, dict] = {
    "seed": {"low": 0, "high": 2**32 - 1, "what": "seed"},  # numpy's seed range
    **{name: {"low": 1} for name in ("batch_size", "seq_len", "tbptt_windows", "grad_accum", "max_steps",
                                     "log_interval", "val_interval", "checkpoint_interval", "keep_checkpoints")},
    "lr": {"low": 0, "low_open": True, "high": OPTIMIZER_MAX, "what": "lr"},
    "weight_decay": {"low": 0, "high": OPTIMIZER_MAX, "what": "decay"},
    "grad_clip": {"low": 0, "high": OPTIMIZER_MAX, "what": "norm", "hint": " (0 turns clipping off)"},
    "ema_decay": {"low": 0, "high": 1, "high_open": True, "what": "decay",
                  "hint": " (0 turns the average off; 0.99 averages over about the last 100 steps)"},
    "warmup_steps": {"low": 0},
    "silence_start": {"low": 0, "high": 1, "what": "fraction"},
    "label_balance": {"low": 0, "high": 1, "what": "balance",
                      "hint": " (0 draws each label as often as its audio; 1 every label equally often)"},
    "val_seconds": {"low": 0, "low_open": True},
    "group_timeout_seconds": {"low": 1, "high": 30 * 86400, "what": "seconds"},  # a timedelta gloo takes in ms
    "num_workers": {"low": 0, "high": 64, "what": "threads"},  # batch prefetch threads (data.BatchStream)
    "sample_interval": {"low": -1, "hint": " (-1 turns samples off; 0 samples at validation steps)"},
    "sample_seconds": {"low": 0, "high": 600, "low_open": True, "what": "seconds", "hint": _SAMPLES_OFF},
    "sample_streams": {"low": 1, "high": 64, "what": "streams", "hint": _SAMPLES_OFF},
}


def check_number(name: str, value: float, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False, what: str = "value", hint: str = "") -> None:
    """ConfigError naming ``name`` unless ``value`` is a finite number within ``low`` .. ``high`` (None: no
    bound; an open end excludes the bound itself), e.g. ``train.lr=nan: must be a finite number``,
    ``train.warmup_steps=-1: must be at least 0``, ``train.ema_decay=1.0: give 0 <= decay < 1``."""
    if isinstance(value, float) and not math.isfinite(value):  # (an int is finite, and may be too big for a float)
        raise ConfigError(f"{name}={value}: must be a finite number")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not (too_low or too_high):
        return
    if high is not None:
        rule = (f"give {low} {'<' if low_open else '<='} {what} {'<' if high_open else '<='} {high}" if low is not None
                else f"must be {'below' if high_open else 'at most'} {high}")
    elif low == 0 and low_open:
        rule = "must be positive"
    else:
        rule = f"must be {'above' if low_open else 'at least'} {low}"
    raise ConfigError(f"{name}={value}: {rule}{hint}")


def to_dict(obj: Any) -> dict:
    """Dataclass → plain JSON-ready dict."""
    return dataclasses.asdict(obj)


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Plain dict → dataclass ``cls``; unknown keys are refused by name, types coerced."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown {where or cls.__name__} {'setting' if len(unknown) == 1 else 'settings'} "
                          f"{unknown}; known: {sorted(names)}")
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
    if hint in (int, float):
        return _number(value, hint, name)
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{name}={value!r}: expected a string")
    return value


def _number(value: Any, hint: type, name: str) -> int | float:
    """A setting's ``value`` as ``hint`` (int or float); ConfigError naming ``name`` when it is not a
    number, not finite (JSON's NaN, Infinity, 1e400) or, for an int, beyond 64 bits."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}={_shown(value)}: expected {'a whole number' if hint is int else 'a number'}")
    if hint is float:
        try:
            number = float(value)
        except OverflowError:  # an int beyond a float's range
            number = math.inf
    else:
        number = value
    if isinstance(number, float) and not math.isfinite(number):
        raise ConfigError(f"{name}={_shown(value)}: must be a finite number")
    if hint is float:
        return number
    if int(value) != value:
        raise ConfigError(f"{name}={value!r}: expected a whole number")
    if abs(value) > LARGEST_INT:
        raise ConfigError(_beyond_64_bits(name, value))
    return int(value)


def _beyond_64_bits(name: str, value: int | float) -> str:
    """The error for a whole number no setting holds (beyond LARGEST_INT either way), naming ``name`` and its
    range where NUMBER_RANGES gives one: "train.batch_size=1e+20: too large; give a whole number from 1 to ..."."""
    bounds = NUMBER_RANGES.get(name.removeprefix("train."), {}) if name.startswith("train.") else {}
    size = "large" if value > 0 else "small"
    if bounds.get("low") is None:
        return (f"{name}={_shown(value)}: too {size} (a whole-number setting is "
                f"{f'at most {LARGEST_INT}' if value > 0 else f'at least -{LARGEST_INT}'})")
    return (f"{name}={_shown(value)}: too {size}; give a whole number from {bounds['low']} to "
            f"{bounds.get('high', LARGEST_INT)}{bounds.get('hint', '')}")


def _shown(value: Any) -> str:
    """A value for a message: as written, or its start and its length when it is long."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} characters)"


def parse_value(text: str) -> Any:
    """Parse the right-hand side of ``--set key=value``: JSON where it parses, else a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return json.loads(text)
    except ValueError:  # not JSON, or a number of more digits than Python converts
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


def load_json(path: Path) -> Any:
    """A JSON file's content (fileio.read_json: any JSON value, the caller judges its shape); ConfigError
    naming the file when it is missing, unreadable, not a regular file or not JSON."""
    path = Path(path)
    try:
        return read_json(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    except ValueError as err:  # "not JSON (why)", or what it is when it is no regular file (a FIFO)
        why = str(err)
        raise ConfigError(f"{path}: {'not valid JSON' + why[len(NOT_JSON):] if why.startswith(NOT_JSON) else why}") \
            from None
