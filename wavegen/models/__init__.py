"""Model registry and named presets.

Every family keeps the contract in :mod:`wavegen.models.contract` (what the trainer, evaluate,
render, bench and info use of a model). A preset names a published configuration so results
can be compared with the literature;
``*-tiny`` presets are for tests and CPU demos. A preset is a resolved run config minus the
data section: ``{"model_type", "model": {...}, "train": {...}}``.
"""

from __future__ import annotations

from wavegen.config import ConfigError, TrainConfig, from_dict, to_dict
from wavegen.models.contract import Model, ModelConfig, State  # noqa: F401  (the model contract)
from wavegen.models.samplernn import SampleRNN, SampleRNNConfig
from wavegen.models.wavenet import WaveNet, WaveNetConfig

FAMILIES = {
    "samplernn": (SampleRNNConfig, SampleRNN),
    "wavenet": (WaveNetConfig, WaveNet),
}


# The rate every preset's paper trained at (SampleRNN, WaveNet, Dadabots: 16 kHz); a preset may
# name its own with "sample_rate". A trained model's rate is its corpus's, in its config.
PUBLISHED_SAMPLE_RATE = 16000

PRESETS: dict[str, dict] = {
    # ICLR 2017 best 3-tier: frames 8/2, 1-layer GRU, dim 1024, emb 256, linear 256.
    "samplernn-3tier": {
        "model_type": "samplernn",
        "model": {"frame_sizes": [8, 2], "n_rnn": 1, "dim": 1024, "emb_size": 256,
                  "q_levels": 256, "quantization": "linear", "rnn_type": "gru"},
        "train": {"batch_size": 128, "seq_len": 512, "tbptt_windows": 16},
    },
    # ICLR 2017 2-tier: frame 16, 3-layer GRU, dim 1024.
    "samplernn-2tier": {
        "model_type": "samplernn",
        "model": {"frame_sizes": [16], "n_rnn": 3, "dim": 1024, "emb_size": 256,
                  "q_levels": 256, "quantization": "linear", "rnn_type": "gru"},
        "train": {"batch_size": 128, "seq_len": 512, "tbptt_windows": 16},
    },
    # Dadabots: 2-tier, frame 16, 5-layer LSTM, dim 1024, mu-law 256, skip connections.
    "dadabots": {
        "model_type": "samplernn",
        "model": {"frame_sizes": [16], "n_rnn": 5, "dim": 1024, "emb_size": 256,
                  "q_levels": 256, "quantization": "mu-law", "rnn_type": "lstm", "skip": True},
        "train": {"batch_size": 128, "seq_len": 1024, "tbptt_windows": 8},
    },
    # deepsound-project/samplernn-pytorch defaults (the public speed baseline): 3 tiers,
    # frames 64 and 16, 2-layer GRU, dim 1024, emb 256, linear 256.
    "samplernn-deepsound": {
        "model_type": "samplernn",
        "model": {"frame_sizes": [64, 16], "n_rnn": 2, "dim": 1024, "emb_size": 256,
                  "q_levels": 256, "quantization": "linear", "rnn_type": "gru"},
        "train": {"batch_size": 128, "seq_len": 1024, "tbptt_windows": 8},
    },
    # Tests and CPU demos: 300 steps in a few minutes on 2 cores, still learns real music.
    "samplernn-tiny": {
        "model_type": "samplernn",
        "model": {"frame_sizes": [16, 4], "n_rnn": 1, "dim": 128, "emb_size": 32,
                  "q_levels": 256, "quantization": "mu-law", "rnn_type": "gru"},
        "train": {"batch_size": 16, "seq_len": 256, "tbptt_windows": 8, "lr": 2e-3,
                  "val_interval": 100, "checkpoint_interval": 100, "val_seconds": 20.0},
    },
    # nv-wavenet's reference size: 20 layers (2 x 1..512), R64, S128, A256; receptive field 2047.
    "wavenet-medium": {
        "model_type": "wavenet",
        "model": {"layers": 20, "max_dilation": 512, "residual_channels": 64, "skip_channels": 128,
                  "end_channels": 256, "q_levels": 256, "quantization": "mu-law"},
        "train": {"batch_size": 16, "seq_len": 4096, "lr": 1e-3},
    },
    # As re-implemented in the SampleRNN paper: 4 x 10 layers (1..512), 64 channels, A256.
    "wavenet-paper": {
        "model_type": "wavenet",
        "model": {"layers": 40, "max_dilation": 512, "residual_channels": 64, "skip_channels": 64,
                  "end_channels": 256, "q_levels": 256, "quantization": "mu-law"},
        "train": {"batch_size": 16, "seq_len": 4096, "lr": 1e-3},
    },
    # vincentherrmann/pytorch-wavenet defaults (the public speed baseline): 3 x 10 layers
    # (1..512), residual = dilation channels 32, skip 1024, end 512, mu-law 256.
    "wavenet-vincent": {
        "model_type": "wavenet",
        "model": {"layers": 30, "max_dilation": 512, "residual_channels": 32, "skip_channels": 1024,
                  "end_channels": 512, "q_levels": 256, "quantization": "mu-law"},
        "train": {"batch_size": 16, "seq_len": 4096, "lr": 1e-3},
    },
    # Tests and CPU demos: 2 x (1..32), receptive field 127 samples; trains on 2 cores in minutes.
    "wavenet-tiny": {
        "model_type": "wavenet",
        "model": {"layers": 12, "max_dilation": 32, "residual_channels": 24, "skip_channels": 48,
                  "end_channels": 64, "q_levels": 256, "quantization": "mu-law", "label_dim": 16},
        "train": {"batch_size": 16, "seq_len": 512, "lr": 2e-3,
                  "val_interval": 100, "checkpoint_interval": 100, "val_seconds": 20.0},
    },
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def resolve_preset(name: str) -> dict:
    """Preset name → full resolved config dict (every model and train setting present)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; presets: {preset_names()}")
    preset = PRESETS[name]
    config_cls, _ = family(preset["model_type"])
    model = to_dict(from_dict(config_cls, preset["model"], "model"))
    train = to_dict(from_dict(TrainConfig, preset.get("train", {}), "train"))
    data = {"sample_rate": int(preset.get("sample_rate", PUBLISHED_SAMPLE_RATE))}
    return {"model_type": preset["model_type"], "preset": name, "model": model, "train": train, "data": data}


def family(model_type: str) -> tuple[type, type]:
    if model_type not in FAMILIES:
        raise ConfigError(f"unknown model_type {model_type!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[model_type]


def model_config(config: dict):
    """Resolved run/model config dict → the family's validated model config dataclass."""
    config_cls, _ = family(config["model_type"])
    cfg = from_dict(config_cls, config["model"], "model")
    cfg.validate()
    return cfg


def build_model(config: dict):
    """Resolved config dict → a freshly initialised model (the family's nn.Module)."""
    _, model_cls = family(config["model_type"])
    return model_cls(model_config(config))
