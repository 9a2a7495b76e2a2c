"""What a model is: parameters, geometry, sample rate, and the backends that can run it."""

from __future__ import annotations

from wavegen.checkpoint import BEST_SCORE
from wavegen.fileio import read_json_object
from wavegen.memory import meta_model
from wavegen.models import preset_names, resolve_preset
from wavegen.resolve import WEIGHTS_RECORD, resolve_model


def describe(target: str, checkpoint: str | None = None) -> dict:
    """Facts for ``wavegen info`` about a preset, config .json, model folder or run folder.

    checkpoint: "last" or "step_N" of a run folder (its best/ model when None). Returns a
    flat dict (model, step (a best/ model's training step, where its record says it), model_type, preset,
    parameters, sample_rate, q_levels, quantization, the family's own facts, receptive_field, labels,
    backends: {name: "available" | why not}).
    Raises ConfigError (or CheckpointError for a damaged weights file) naming what is wrong.
    """
    from wavegen.generate import available_backends

    ref = resolve_model(target, checkpoint)
    if ref.trained:
        model = ref.load("cpu")  # reads the weights: a damaged file is named here, not at render time
    else:
        model = meta_model(ref.config)  # random weights: shapes are all there is to say
    config, sr = ref.config, ref.sample_rate
    info = {"model": ref.source, **_best_step(ref), "model_type": config["model_type"],
            "preset": config.get("preset"), "parameters": sum(p.numel() for p in model.parameters()), "sample_rate": sr,
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


def _best_step(ref) -> dict:
    """``{"step": N}``: the training step a run's best/ (or a model folder copied from one) was saved at, as the
    validation record beside its weights says (checkpoint.BEST_SCORE); {} where it records none (an older wavegen's,
    a model saved outside training) or is unreadable: the model is described without it."""
    if ref.kind not in ("model", "run") or ref.folder is None:
        return {}
    try:
        scored = read_json_object(ref.folder / WEIGHTS_RECORD).get(BEST_SCORE)
    except (OSError, ValueError):
        return {}
    step = scored.get("step") if isinstance(scored, dict) else None
    return {"step": step} if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else {}


def presets() -> dict:
    """Every preset by name → {model_type, parameters, sample_rate, and the family's own facts}."""
    out = {}
    for name in preset_names():
        config = resolve_preset(name)
        model = meta_model(config)
        out[name] = {"model_type": config["model_type"], "parameters": sum(p.numel() for p in model.parameters()),
                     "sample_rate": config["data"]["sample_rate"], **model.describe()}
    return out


def presets_table(facts_by_name: dict | None = None) -> str:
    """One line per preset (``facts_by_name``, :func:`presets` when None): name, family, parameters, sample
    rate and the family's own facts."""
    rows = []
    for name, facts in (presets() if facts_by_name is None else facts_by_name).items():
        facts = dict(facts)
        model_type, n, rate = facts.pop("model_type"), facts.pop("parameters"), facts.pop("sample_rate")
        rows.append(f"{name:22s} {model_type:10s} {n / 1e6:8.2f}M  {rate:6d} Hz  " +
                    ", ".join(f"{k}={v}" for k, v in facts.items()))
    return "presets:\n" + "\n".join("  " + r for r in rows)
