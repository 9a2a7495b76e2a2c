"""wavegen info: describe a model, list presets."""

from __future__ import annotations

from wavegen.cli.options import add_json


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="describe a model (or list presets and backends)",
                       description="Describe a model: its type, parameters, geometry, sample rate, quantization, "
                                   "receptive field, labels, and which backends can render it here. With no "
                                   "model (or --presets): the presets.")
    p.add_argument("model", nargs="?", default=None,
                   help="preset name, config .json, model folder or run folder (its best/)")
    p.add_argument("--checkpoint", default=None, metavar="step_N|last",
                   help="a run's kept checkpoint instead of its best/ model")
    p.add_argument("--presets", action="store_true", help="list the model presets")
    add_json(p, "the description (or the presets)")


def run(args) -> int:
    from wavegen.cli.options import check_json_file, emit_json, json_file, settle_json_word
    from wavegen.info import describe, presets, presets_table

    if not args.presets:  # with --presets the word after --json is its file: no model is asked for
        settle_json_word(args)  # `wavegen info --json RUN`: RUN is the model, not --json's file
    _refuse_what_would_be_ignored(args)
    check_json_file(args, "info.json", "wavegen info result", _is_info_result)
    listing = args.presets or args.model is None
    result = presets() if listing else describe(args.model, args.checkpoint)
    if args.json is None or json_file(args) is not None:  # the text, unless a bare --json prints instead
        print(presets_table(result) if listing else _text(result))
    if args.json is not None:
        emit_json(args, result, kept="the text above has it")
    return 0


def _refuse_what_would_be_ignored(args) -> None:
    """A model with --presets, --checkpoint with no model (the presets were listed, the rest ignored), and
    ``wavegen info --json runs/typo``: no model, no --presets, and --json's word is no .json name: a model
    that is not there (mistyped), not a file for the presets list (write --presets for that)."""
    from wavegen.cli.options import json_file
    from wavegen.config import ConfigError

    if args.presets and args.model is not None:
        raise ConfigError(f"--presets lists the presets, {args.model} is a model to describe: give one of them")
    if args.checkpoint is not None and args.model is None:
        raise ConfigError(f"--checkpoint {args.checkpoint} goes with a run folder: wavegen info RUN --checkpoint "
                          f"{args.checkpoint}")
    word = json_file(args)
    if word is not None and args.model is None and not args.presets and not word.lower().endswith(".json"):
        raise ConfigError(f"{word}: no such preset, model folder or run folder (to write the presets to {word}: "
                          f"wavegen info --presets --json {word})")


def _is_info_result(value) -> bool:
    """Whether a JSON value is what ``wavegen info --json`` writes: a model's description (its backends beside
    its model_type: a config.json has no backends) or the presets (every entry a preset's facts)."""
    if not isinstance(value, dict) or not value:
        return False
    if {"model_type", "backends"} <= value.keys():
        return True
    return all(isinstance(v, dict) and {"model_type", "parameters", "sample_rate"} <= v.keys() for v in value.values())


def _text(info: dict) -> str:
    """:func:`wavegen.info.describe`'s facts, a line each (a dict's entries indented under its name)."""
    lines = []
    for key, value in info.items():
        if key == "step":  # a best/ model's step: on the model's line, as a checkpoint's source says its own
            continue
        if key == "model" and "step" in info:
            value = f"{value} (step {info['step']})"
        if key == "parameters":
            value = f"{value:,} ({value / 1e6:.2f}M)"
        if isinstance(value, dict):
            lines += [f"{key}:", *(f"  {k}: {v}" for k, v in value.items())]
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)
