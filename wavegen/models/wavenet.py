"""WaveNet (van den Oord et al. 2016): dilated causal convolutions over an embedding of codes.

Input embedding of the previous code, ``layers`` dilated causal convolutions (kernel 2,
dilation 1, 2, 4 .. ``max_dilation``, then repeating), gated tanh·sigmoid units, residual
(R) and skip (S) 1×1 projections, then ReLU → S→A → ReLU → A→Q over the summed skips.
A label embedding (artist, album) is projected into every gated unit.

Sequences: ``codes [B, C + L]`` with ``C = receptive_field`` samples of context in front of
the ``L`` predicted samples: the first predicted sample sees a full receptive field.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from wavegen.audio import QUANTIZATIONS
from wavegen.config import ConfigError, TrainConfig
from wavegen.models.contract import MAX_LAYERS, State


@dataclass
class WaveNetConfig:
    layers: int = 20
    max_dilation: int = 512  # dilations 1, 2, 4 .. max_dilation, then again from 1
    residual_channels: int = 64
    skip_channels: int = 128
    end_channels: int = 256
    q_levels: int = 256
    quantization: str = "mu-law"
    labels: list[str] = field(default_factory=list)  # global conditioning (artist, album)
    label_dim: int = 32  # size of the label embedding projected into every gated unit

    def validate(self, train: TrainConfig | None = None) -> None:
        """Raise ConfigError naming the value that cannot work (``train`` adds no WaveNet constraint)."""
        for name in ("layers", "max_dilation", "residual_channels", "skip_channels", "end_channels",
                     "label_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name}={getattr(self, name)}: must be at least 1")
        if self.layers > MAX_LAYERS:  # checked before the memory estimate builds (and loops over) the layers
            raise ConfigError(f"model.layers={self.layers}: at most {MAX_LAYERS} layers")
        d = self.max_dilation
        if d & (d - 1):
            lower = 1 << (d.bit_length() - 1)
            raise ConfigError(f"model.max_dilation={d} is not a power of two (dilations double "
                              f"1, 2, 4, ...); use {lower} or {lower * 2}")
        if self.q_levels < 2:
            raise ConfigError(f"model.q_levels={self.q_levels}: must be at least 2")
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(f"model.quantization={self.quantization!r}: use one of {list(QUANTIZATIONS)}")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"model.labels {self.labels}: names repeat")

    @property
    def dilations(self) -> list[int]:
        """One dilation per layer: 1, 2, 4 .. max_dilation, repeating."""
        cycle = self.max_dilation.bit_length()  # layers per stack
        return [1 << (i % cycle) for i in range(self.layers)]


class GatedLayer(nn.Module):
    """One dilated causal conv (kernel 2) → tanh·sigmoid gate → residual and skip 1×1 projections."""

    def __init__(self, dilation: int, cfg: WaveNetConfig, last: bool):
        super().__init__()
        R = cfg.residual_channels
        self.dilation = dilation
        self.conv = nn.Conv1d(R, 2 * R, kernel_size=2, dilation=dilation)  # tap 0: t - d, tap 1: t
        self.cond = nn.Linear(cfg.label_dim, 2 * R, bias=False) if cfg.labels else None
        # The last layer's residual output is never read: no parameters that get no gradient
        # (DDP refuses those); the spec exports zeros for it.
        self.res = None if last else nn.Conv1d(R, R, 1)
        self.skip = nn.Conv1d(R, cfg.skip_channels, 1)

    def forward(self, x: torch.Tensor, label_vec: torch.Tensor | None, out_len: int, pad: bool):
        """x [B, R, T] → (next layer's input [B, R, T or T - d] or None, skip [B, S, out_len])."""
        h = self.conv(F.pad(x, (self.dilation, 0)) if pad else x)
        if label_vec is not None:
            h = h + self.cond(label_vec).unsqueeze(-1)
        f, g = h.chunk(2, dim=1)
        z = torch.tanh(f) * torch.sigmoid(g)
        skip = self.skip(z[..., z.shape[-1] - out_len:])
        if self.res is None:
            return None, skip
        return x[..., x.shape[-1] - z.shape[-1]:] + self.res(z), skip


class WaveNet(nn.Module):
    family = "wavenet"

    def __init__(self, cfg: WaveNetConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.dilations = cfg.dilations
        self.embed = nn.Embedding(cfg.q_levels, cfg.residual_channels)
        self.layers = nn.ModuleList(GatedLayer(d, cfg, last=(i == cfg.layers - 1))
                                    for i, d in enumerate(self.dilations))
        self.out1 = nn.Conv1d(cfg.skip_channels, cfg.end_channels, 1)
        self.out2 = nn.Conv1d(cfg.end_channels, cfg.q_levels, 1)
        self.label_embedding = nn.Embedding(len(cfg.labels), cfg.label_dim) if cfg.labels else None

    # ----- geometry -------------------------------------------------------------------------
    @property
    def receptive_field(self) -> int:
        """Codes one prediction sees: sum(dilations) + 1 (the newest is the previous sample)."""
        return sum(self.dilations) + 1

    @property
    def context_samples(self) -> int:
        """Codes in front of a training sequence that are input only: one full receptive field."""
        return self.receptive_field

    # ----- parallel forward -----------------------------------------------------------------
    def label_vectors(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """labels [B] int64 (index) or [B, n_labels] float (blend weights) → [B, label_dim] or None."""
        if self.label_embedding is None:
            return None
        if labels is None:
            raise ValueError(f"this model is conditioned on labels {self.config.labels}: give one")
        if labels.dim() == 1:
            return self.label_embedding(labels.long())
        return labels.float() @ self.label_embedding.weight

    def _logits(self, inputs: torch.Tensor, labels, out_len: int, pad: bool) -> torch.Tensor:
        batch = inputs.shape[0]
        label_vec = self.label_vectors(labels, batch)
        x = self.embed(inputs).transpose(1, 2)  # [B, R, T]
        skip = 0
        for layer in self.layers:
            x, s = layer(x, label_vec, out_len, pad)
            skip = skip + s
        y = self.out2(F.relu(self.out1(F.relu(skip))))
        return y.transpose(1, 2)  # [B, out_len, Q]

    def parallel_logits(self, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """inputs [B, T] int64 → logits [B, T, Q]; position t predicts the code after inputs[:, t].

        Causal with zeros in front of every layer's input, as an engine just after ``reset``:
        ``engine.teacher_force(codes)`` equals this on ``[silence] + codes[:, :-1]``.
        """
        return self._logits(inputs, labels, inputs.shape[1], pad=True)

    def logits(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, C + L] int64 → logits [B, L, Q] for codes[:, C:] (C = receptive field).

        No padding: each layer shortens the sequence by its dilation, so only the positions that
        the L predictions need are computed.
        """
        total = codes.shape[1]
        length = total - self.context_samples
        if length <= 0:
            raise ValueError(f"sequence of {total} codes: need {self.context_samples} context + at least one")
        return self._logits(codes[:, :-1], labels, length, pad=False)

    def sequence_nll(self, codes: torch.Tensor, labels: torch.Tensor | None = None,
                     state: State | None = None) -> tuple[torch.Tensor, State]:
        """codes [B, C + L] → (NLL in nats [B, L] of codes[:, C:], ``{}``).

        WaveNet carries no state: the C = receptive-field codes in front are all it needs.
        """
        logits = self.logits(codes, labels)
        target = codes[:, self.context_samples:]
        return F.cross_entropy(logits.float().transpose(1, 2), target, reduction="none"), {}

    # ----- training -------------------------------------------------------------------------
    def forward(self, batch: dict, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Training loss (mean nats per sample) on random crops → ``(loss, {})``.

        batch: ``codes [B, C + L]`` int64, ``labels [B]`` int64 (conditioned models); ``reset``
        and ``state`` are ignored (crops are independent).
        """
        codes = batch["codes"]
        logits = self.logits(codes, batch.get("labels"))
        target = codes[:, self.context_samples:]
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1)), {}

    loss = forward

    # ----- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def inference_spec(self) -> dict:
        """Plain fp32 CPU tensors in the canonical layout every engine is built from.

        ``embed [Q, R]``; per layer: ``dilation``, ``conv_w [2, 2R, R]`` (tap 0 multiplies the
        layer input from ``dilation`` steps ago, tap 1 the current one; rows 0..R-1 filter, R..2R-1
        gate), ``conv_b [2R]``, ``label_bias [n_labels, 2R]`` or None (label embedding folded
        through the layer's projection), ``res_w [R, R]``, ``res_b [R]`` (zeros in the last
        layer, whose residual output is never read), ``skip_w [S, R]``, ``skip_b [S]``; then
        ``out1_w [A, S]``, ``out1_b``, ``out2_w [Q, A]``, ``out2_b``.
        """
        def t(x: torch.Tensor) -> torch.Tensor:
            return x.detach().float().cpu().contiguous().clone()

        cfg = self.config
        R = cfg.residual_channels
        layers = []
        for layer in self.layers:
            label_bias = None
            if self.label_embedding is not None:
                label_bias = t(self.label_embedding.weight.float() @ layer.cond.weight.float().T)
            layers.append({
                "dilation": layer.dilation,
                "conv_w": t(layer.conv.weight.permute(2, 0, 1)),  # [2R, R, 2] → [2, 2R, R]
                "conv_b": t(layer.conv.bias),
                "label_bias": label_bias,
                "res_w": t(layer.res.weight[:, :, 0]) if layer.res is not None else torch.zeros(R, R),
                "res_b": t(layer.res.bias) if layer.res is not None else torch.zeros(R),
                "skip_w": t(layer.skip.weight[:, :, 0]), "skip_b": t(layer.skip.bias),
            })
        return {
            "family": "wavenet", "q_levels": cfg.q_levels, "quantization": cfg.quantization,
            "labels": list(cfg.labels), "residual_channels": R, "skip_channels": cfg.skip_channels,
            "end_channels": cfg.end_channels, "dilations": list(self.dilations),
            "receptive_field": self.receptive_field,
            "embed": t(self.embed.weight), "layers": layers,
            "out1_w": t(self.out1.weight[:, :, 0]), "out1_b": t(self.out1.bias),
            "out2_w": t(self.out2.weight[:, :, 0]), "out2_b": t(self.out2.bias),
        }

    def describe(self) -> dict:
        """Facts for ``wavegen info``: layers, the dilation pattern, channel widths."""
        cfg = self.config
        span = lambda top: "1" if top == 1 else f"1..{top}"  # noqa: E731
        stacks, rest = divmod(cfg.layers, cfg.max_dilation.bit_length())
        parts = ([f"{stacks} x {span(cfg.max_dilation)}"] if stacks else []) + ([span(1 << (rest - 1))] if rest else [])
        return {"layers": cfg.layers, "dilations": " + ".join(parts),
                "channels": f"residual {cfg.residual_channels}, skip {cfg.skip_channels}, end {cfg.end_channels}"}
