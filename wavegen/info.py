"""What a model is: parameters, geometry, sample rate, and the backends that can run it."""

from __future__ import annotations

from pathlib import Path

import torch

from wavegen.models import PRESETS, build_model, preset_names, resolve_preset


def describe(target: str) -> dict:
    """Model folder, run folder or preset name → a dict of facts for ``wavegen info``."""
    from wavegen.generate import available_backends

    if target in PRESETS and not Path(target).exists():
        config = resolve_preset(target)
        config["data"] = {"sample_rate": 16000}
        model, source = build_model(config), f"preset {target} (random weights, 16000 Hz assumed)"
    else:
        from wavegen.checkpoint import find_model_dir, load_model

        model, config = load_model(target)
        source = str(find_model_dir(target))
    sr = int(config["data"]["sample_rate"])
    info = {"model": source, "model_type": config["model_type"], "preset": config.get("preset"),
            "parameters": sum(p.numel() for p in model.parameters()), "sample_rate": sr,
            "q_levels": model.config.q_levels, "quantization": model.config.quantization}
    info.update(model.describe())
    rf = model.receptive_field
    if rf is not None:
        info["receptive_field"] = f"{rf} samples = {rf / sr:.4f} s at {sr} Hz"
    if model.config.labels:
        info["labels"] = list(model.config.labels)
    info["backends"] = {name: "available" if why is None else f"unavailable: {why}"
                        for name, why in available_backends(config["model_type"]).items()}
    return info


def presets_table() -> str:
    rows = []
    for name in preset_names():
        config = resolve_preset(name)
        config["data"] = {"sample_rate": 16000}
        with torch.device("meta"):  # shapes only: no memory, no initialisation work
            model = build_model(config)
        n = sum(p.numel() for p in model.parameters())
        rows.append(f"{name:22s} {config['model_type']:10s} {n / 1e6:8.2f}M  " +
                    ", ".join(f"{k}={v}" for k, v in model.describe().items()))
    return "presets:\n" + "\n".join("  " + r for r in rows)
