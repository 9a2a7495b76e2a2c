"""A model config file read as wavegen reads one: a folder's config.json (complete: written by wavegen), or a
config written by hand for ``--model`` (a preset's settings with the file's over them), each checked once with
errors naming the file and the setting. :mod:`wavegen.resolve` reads every config through :func:`read_config`."""

from __future__ import annotations

import json
from pathlib import Path

from wavegen.config import ConfigError, load_json


def read_config(path: Path, hand_written: bool = False) -> dict:
    """The model config in ``path``, once it has a wavegen config's shape: ConfigError naming the
    file when a section is missing or the sample rate is not a rate (a damaged or hand-edited
    config is one line, not a traceback later). A folder's config.json (complete: written by
    wavegen) is read as it is, its model settings checked ("best/config.json: model.dim=-3: must be
    at least 1", not the setting alone when the model is built). A config written by hand
    (``hand_written``, given to ``--model``) that names a preset is that preset's config with the
    file's settings over it (:func:`_over_preset`), and its model and train settings are checked
    here, each error naming the file, as are a key it does not read (:func:`_check_keys`) and overrides that are
    not a list of ``--set`` strings."""
    return _read(path, hand_written)[0]


def read_hand_written(path: Path) -> tuple[dict, int | None]:
    """:func:`read_config` of a config written by hand, and the data.sample_rate the file itself gives (None
    where it gives none, a preset's then, or where its data names a corpus: a run's config.json, whose rate was
    its corpus's, as a model folder's is). Training refuses a corpus at another rate than the one given
    (:func:`check_rate_given`), as it refuses ``--set data.sample_rate``: a run trains at its corpus's rate."""
    return _read(path, True)


def check_rate_given(source: str, rate: int | None, corpus: str) -> None:
    """ConfigError naming the config file ``source``, the ``rate`` it gives and the rate of the prepared corpus
    in ``corpus`` where they differ (``rate`` None: the file gives none, nothing to check)."""
    from wavegen.corpus import Corpus

    if rate is None:
        return
    corpus_rate = Corpus(corpus).sample_rate
    if rate != corpus_rate:
        raise ConfigError(f"{source}: data.sample_rate {rate}, but corpus {corpus} is at {corpus_rate} Hz: a run "
                          f"trains at its corpus's rate; give {corpus_rate} in the file (or leave it out where the "
                          f"file names a preset), or prepare the corpus at {rate} Hz")


def _read(path: Path, hand_written: bool) -> tuple[dict, int | None]:
    """read_config, and the data.sample_rate a hand-written file gives itself (read_hand_written)."""
    config = load_json(path)
    given = None
    if hand_written:
        _check_keys(path, config)
        data = config.get("data") if isinstance(config, dict) else None
        if isinstance(data, dict) and "corpus" not in data:
            given = data.get("sample_rate")
        config = _over_preset(path, config)
    if not (isinstance(config, dict) and isinstance(config.get("model_type"), str)
            and isinstance(config.get("model"), dict)):
        raise ConfigError(f"{path}: not a wavegen model config (no model_type and model)")
    data = config.get("data", {} if hand_written else None)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a wavegen model config (data is {data!r}, not a section holding "
                          "data.sample_rate)")
    if "sample_rate" not in data and hand_written:
        raise ConfigError(f"{path}: no data.sample_rate and no known preset to take it from; "
                          'add "data": {"sample_rate": HZ}')
    rate = data.get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise ConfigError(f"{path}: data.sample_rate {rate!r} is not a sample rate (a positive whole number of Hz)")
    overrides = config.get("overrides", [])
    if not (isinstance(overrides, list) and all(isinstance(item, str) for item in overrides)):
        raise ConfigError(f"{path}: overrides {overrides!r} is not a list of settings as --set writes them "
                          '(["model.dim=48"]); leave it out of a config written by hand')
    _check_settings(path, config, train=hand_written)  # a folder's train settings are for training alone
    return config, given


def _over_preset(path: Path, config):
    """A hand-written config that names a preset → the preset's resolved config, each section
    (model, train, data) with the file's settings over the preset's; ``overrides`` the file's
    settings that differ from the preset's (as ``--set`` would write them), unless the file lists
    its own (a run's config.json). A config naming no preset is returned as it is (its missing
    settings take the dataclass defaults). ConfigError naming the file for an unknown preset or a
    model_type that is not the preset's."""
    from wavegen.models import PRESETS, resolve_preset

    if not isinstance(config, dict) or config.get("preset") is None:
        return config
    name = config["preset"]
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"{path}: preset {name!r} is not a preset (presets: {sorted(PRESETS)}); name one, or "
                          'leave "preset" out and give every model setting')
    base = resolve_preset(name)
    if config.get("model_type", base["model_type"]) != base["model_type"]:
        raise ConfigError(f"{path}: model_type {config['model_type']!r}, but preset {name!r} is a "
                          f"{base['model_type']} model; leave model_type out, or name a {config['model_type']} preset")
    merged = {**config, "model_type": base["model_type"]}
    for section in ("model", "train", "data"):
        given = config.get(section, {})
        merged[section] = {**base[section], **given} if isinstance(given, dict) else given
    if "overrides" not in config:
        merged["overrides"] = [f"{section}.{key}={_as_set(value)}" for section in ("model", "train")
                               if isinstance(config.get(section), dict)
                               for key, value in config[section].items() if base[section].get(key, _ABSENT) != value]
    return merged


_ABSENT = object()
# What a config file holds (a run's config.json too): the keys outside the model and train sections, whose
# settings their dataclasses check by name
_TOP_KEYS = ("model_type", "preset", "model", "train", "data", "overrides")
_DATA_KEYS = ("sample_rate", "corpus", "corpus_id", "split_ids")


def _check_keys(path: Path, config) -> None:
    """ConfigError naming the file and the key where a config written by hand holds a key wavegen does not
    read (a section's name mistyped, "seed" beside the sections, data.sample_rat): its setting would not be
    applied, and the training or render would go on without a word."""
    if not isinstance(config, dict) or not any(key in config for key in ("model_type", "preset", "model")):
        return  # not a model config at all (a corpus's manifest.json, a bench result): said so by read_config
    unknown = [key for key in config if key not in _TOP_KEYS]
    data = config.get("data")
    unknown += [f"data.{key}" for key in (data if isinstance(data, dict) else ()) if key not in _DATA_KEYS]
    if unknown:
        where = (f"data holds only {', '.join(_DATA_KEYS)}" if all(k.startswith("data.") for k in unknown) else
                 f"a model config holds only {', '.join(_TOP_KEYS)}, each setting inside its section "
                 '("train": {"seed": 3})')
        raise ConfigError(f"{path}: unknown {'key' if len(unknown) == 1 else 'keys'} {unknown}: {where}")


def _as_set(value) -> str:
    """A setting's value as ``--set key=VALUE`` writes it (config.parse_value reads it back)."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _check_settings(path: Path, config: dict, train: bool = True) -> None:
    """The model settings of a config file and (``train``) its train settings, each alone (the pair is
    checked when a run is resolved, after any ``--set``): ConfigError naming the file and the setting."""
    from wavegen.config import TrainConfig, from_dict, train_settings
    from wavegen.models import model_config

    try:
        model_config(config)
        if train:
            from_dict(TrainConfig, train_settings(config), "train").validate()
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def preset_and_overrides(config: dict) -> str:
    """"preset NAME with model.dim=512; " for a config built on a preset ("" for one that names none)."""
    if not config.get("preset"):
        return ""
    overrides = config.get("overrides") or []
    return f"preset {config['preset']}" + (f" with {' '.join(overrides)}" if overrides else "") + "; "
