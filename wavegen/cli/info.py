"""wavegen info: describe a model, list presets."""

from __future__ import annotations

import json


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
    p.add_argument("--json", action="store_true", help="print it as JSON")


def run(args) -> int:
    from wavegen.cli.options import refuse_json_file_name
    from wavegen.info import describe, presets, presets_table

    refuse_json_file_name(args)
    if args.presets or args.model is None:
        print(json.dumps(presets(), indent=2) if args.json else presets_table())
        return 0
    info = describe(args.model, args.checkpoint)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            if key == "parameters":
                value = f"{value:,} ({value / 1e6:.2f}M)"
            if isinstance(value, dict):
                print(f"{key}:")
                for k, v in value.items():
                    print(f"  {k}: {v}")
            else:
                print(f"{key}: {value}")
    return 0
