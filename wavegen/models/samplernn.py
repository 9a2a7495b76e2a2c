"""SampleRNN (Mehri et al. 2017) with the Dadabots options.

Frame sizes are absolute, top to bottom: ``frame_sizes=[8, 2]`` is the ICLR 3-tier model
(a tier over 8-sample frames, a tier over 2-sample frames, and a sample-level MLP over the
previous 2 samples). Each tier's RNN output is upsampled (learned linear) into one
conditioning vector per frame of the tier below; the lowest frame tier makes one per sample.

Sequences: ``codes [B, C + L]`` with ``C = frame_sizes[0]`` samples of context in front of
the ``L`` predicted samples; ``L`` is a multiple of ``C``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from wavegen.audio import QUANTIZATIONS
from wavegen.config import ConfigError, TrainConfig
from wavegen.models.contract import MAX_LAYERS, State

RNN_TYPES = ("gru", "lstm")


@dataclass
class SampleRNNConfig:
    frame_sizes: list[int] = field(default_factory=lambda: [16, 4])
    n_rnn: int = 1
    dim: int = 1024
    emb_size: int = 256
    q_levels: int = 256
    quantization: str = "linear"
    rnn_type: str = "gru"
    learned_h0: bool = True
    weight_norm: bool = True
    skip: bool = False  # tier output = sum of every RNN layer's output, not just the last
    labels: list[str] = field(default_factory=list)  # global conditioning (artist, album)

    def validate(self, train: TrainConfig | None = None) -> None:
        fs = self.frame_sizes
        if not fs:
            raise ConfigError("model.frame_sizes is empty: give at least one frame size, e.g. [16]")
        for f in fs:
            if f < 1:
                raise ConfigError(f"model.frame_sizes {fs}: {f} is not a positive size")
        for upper, lower in zip(fs, fs[1:]):
            if upper % lower != 0:
                raise ConfigError(f"model.frame_sizes {fs}: {lower} does not divide {upper} "
                                  "(sizes are absolute, top to bottom, each dividing the one above)")
            if upper == lower:
                raise ConfigError(f"model.frame_sizes {fs}: {lower} repeats; each tier's frame "
                                  "must be smaller than the one above")
        for name in ("n_rnn", "dim", "emb_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name}={getattr(self, name)}: must be at least 1")
        if self.n_rnn > MAX_LAYERS:  # checked before the memory estimate builds (and loops over) the layers
            raise ConfigError(f"model.n_rnn={self.n_rnn}: at most {MAX_LAYERS} recurrent layers per tier")
        if self.q_levels < 2:
            raise ConfigError(f"model.q_levels={self.q_levels}: must be at least 2")
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(f"model.quantization={self.quantization!r}: use one of {list(QUANTIZATIONS)}")
        if self.rnn_type not in RNN_TYPES:
            raise ConfigError(f"model.rnn_type={self.rnn_type!r}: use one of {list(RNN_TYPES)}")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"model.labels {self.labels}: names repeat")
        if train is not None and train.seq_len % fs[0] != 0:
            raise ConfigError(f"train.seq_len={train.seq_len} is not a multiple of the top frame size "
                              f"{fs[0]} (model.frame_sizes {fs}); try {max(fs[0], train.seq_len // fs[0] * fs[0])}")


# ----- initialisation ----------------------------------------------------------------------------
# Measured (docs/QUALITY.md, "Learning per step"): with PyTorch's default init this model learned
# less per step than the 2017 samplernn-pytorch at the same config; with the scales below it
# learns more at every point measured. Uniform draws scaled by each unit's fan-in: Kaiming
# (bound sqrt(6 / fan_in), variance kept through a ReLU) for layers feeding a ReLU or a sum of
# conditioning, LeCun (bound sqrt(3 / fan_in), variance kept through a linear map) for the GRU's
# input and gate weights and the logits; biases zero. PyTorch's default bound for Linear and
# Conv is 1 / sqrt(fan_in), 2.4x smaller than Kaiming's, and its RNN biases are not zero.

def _uniform_fan_in_(weight: torch.Tensor, gain_squared: float) -> torch.Tensor:
    """Uniform init of ``weight [out, in, ...]`` with variance ``gain_squared / fan_in``
    (``fan_in = in * kernel``): 2 is Kaiming for ReLU, 1 is LeCun."""
    fan_in = weight[0].numel()
    bound = math.sqrt(3.0 * gain_squared / fan_in)
    return nn.init.uniform_(weight, -bound, bound)


KAIMING, LECUN = 2.0, 1.0


def _init_layer(layer: nn.Module, gain_squared: float) -> nn.Module:
    """Fan-in uniform weights and a zero bias on a plain Linear or Conv1d (before weight norm)."""
    with torch.no_grad():
        _uniform_fan_in_(layer.weight, gain_squared)
        if layer.bias is not None:
            layer.bias.zero_()
    return layer


class _MetaWeightNorm(nn.Module):
    """torch's weight-norm parametrization for a layer on the meta device (shapes only: memory
    checks, ``wavegen info``): the same parameters (``parametrizations.weight.original0`` = g of
    shape [out, 1, ...], ``original1`` = v) and the same forward, but g is made without computing
    a norm. The norm on a meta tensor would first import torch's compiler stack and Python meta
    kernels (1-2 s here) in every process that builds a model (render, eval, info, serve); the
    initialisers' share of that is skipped by :func:`wavegen.memory.meta_model`."""

    def forward(self, weight_g: torch.Tensor, weight_v: torch.Tensor) -> torch.Tensor:
        return torch._weight_norm(weight_v, weight_g, 0)

    def right_inverse(self, weight: torch.Tensor):
        return weight.new_empty((weight.shape[0],) + (1,) * (weight.dim() - 1)), weight


def _weight_normed(layer: nn.Module, weight_norm: bool) -> nn.Module:
    """Weight norm applied after the init: the direction v is the initial weight and the scale
    g = ||v|| per output unit, so the layer computes exactly the initialised weight at step 0."""
    if not weight_norm:
        return layer
    if layer.weight.is_meta:
        nn.utils.parametrize.register_parametrization(layer, "weight", _MetaWeightNorm(), unsafe=True)
        return layer
    return nn.utils.parametrizations.weight_norm(layer)


def _linear(n_in: int, n_out: int, weight_norm: bool, gain_squared: float = KAIMING) -> nn.Linear:
    return _weight_normed(_init_layer(nn.Linear(n_in, n_out), gain_squared), weight_norm)


def _init_rnn(rnn: nn.GRU | nn.LSTM, n_gates: int) -> None:
    """Per gate block: LeCun input weights; LeCun recurrent weights for the gates, an orthogonal
    recurrent block for the candidate (GRU n, LSTM g: block 2 in both of PyTorch's layouts),
    which carries the state from frame to frame without growing or shrinking it; biases zero."""
    dim = rnn.hidden_size
    with torch.no_grad():
        for gate in range(n_gates):
            rows = slice(gate * dim, (gate + 1) * dim)
            _uniform_fan_in_(rnn.weight_ih_l0[rows], LECUN)
            if gate == 2:
                nn.init.orthogonal_(rnn.weight_hh_l0[rows])
            else:
                _uniform_fan_in_(rnn.weight_hh_l0[rows], LECUN)
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.zero_()


def rescale_codes(codes: torch.Tensor, q_levels: int) -> torch.Tensor:
    """codes [...] int64 → float in [-2, 2): the frame tiers' input."""
    return (codes.float() / (q_levels / 2) - 1.0) * 2.0


class FrameTier(nn.Module):
    """One frame-level tier: input projection, ``n_rnn`` stacked RNN layers, learned upsampling."""

    def __init__(self, frame_size: int, ratio: int, cfg: SampleRNNConfig):
        super().__init__()
        self.frame_size, self.ratio, self.dim = frame_size, ratio, cfg.dim
        self.skip, self.is_lstm = cfg.skip, cfg.rnn_type == "lstm"
        # LeCun (not Kaiming) for the frame projection: it feeds the RNN's input, no ReLU. Measured:
        # Kaiming here (2x the variance) swamped a conditioned tiny model's label vector, which
        # then rendered both labels alike after 60 steps (tests/test_conditioning.py)
        self.input = _linear(frame_size, cfg.dim, cfg.weight_norm, LECUN)
        rnn_cls = nn.LSTM if self.is_lstm else nn.GRU
        self.rnns = nn.ModuleList(rnn_cls(cfg.dim, cfg.dim, batch_first=True) for _ in range(cfg.n_rnn))
        for rnn in self.rnns:
            _init_rnn(rnn, 4 if self.is_lstm else 3)
        # Kaiming over the RNN output (fan-in dim): each upsampled vector is conditioning added
        # before the next tier's RNN or the MLP's ReLU
        self.upsample = _linear(cfg.dim, cfg.dim * ratio, cfg.weight_norm)
        n_states = 2 if self.is_lstm else 1
        h0 = torch.zeros(n_states, cfg.n_rnn, cfg.dim)
        if cfg.learned_h0:
            self.h0 = nn.Parameter(h0)
        else:
            self.register_buffer("h0", h0, persistent=False)

    def initial_hidden(self, batch: int) -> list:
        """Per layer: ``h [1, B, dim]`` (GRU) or ``(h, c)`` (LSTM), from the (learned) h0."""
        out = []
        for layer in range(len(self.rnns)):
            states = [self.h0[s, layer].expand(1, batch, self.dim).contiguous() for s in range(self.h0.shape[0])]
            out.append(tuple(states) if self.is_lstm else states[0])
        return out

    def forward(self, frames: torch.Tensor, cond: torch.Tensor | None, hidden: list):
        """frames [B, N, frame] float, cond [B, N|1, dim] or None → ([B, N*ratio, dim], hidden)."""
        x = self.input(frames)
        if cond is not None:
            x = x + cond
        outputs, new_hidden = [], []
        for rnn, h in zip(self.rnns, hidden):
            x, h = rnn(x, h)
            outputs.append(x)
            new_hidden.append(h)
        y = torch.stack(outputs).sum(0) if self.skip else x
        batch, n = y.shape[:2]
        up = self.upsample(y).view(batch, n, self.ratio, self.dim).reshape(batch, n * self.ratio, self.dim)
        return up, new_hidden


# Training folds the MLP's first layer into tables when a call predicts at least this many samples
# per quantization level (below it the convolution was faster; docs/BENCHMARKS.md, "Training speed").
FOLD_MIN_SAMPLES_PER_LEVEL = 4


class SampleMLP(nn.Module):
    """Sample-level MLP: embeddings of the previous ``window`` codes + conditioning → logits."""

    def __init__(self, window: int, cfg: SampleRNNConfig):
        super().__init__()
        self.window = window
        self.embedding = nn.Embedding(cfg.q_levels, cfg.emb_size)  # N(0, 1) rows
        conv = _init_layer(nn.Conv1d(cfg.emb_size, cfg.dim, kernel_size=window), KAIMING)
        self.input = _weight_normed(conv, cfg.weight_norm)
        self.hidden = _linear(cfg.dim, cfg.dim, cfg.weight_norm)
        self.output = _linear(cfg.dim, cfg.q_levels, cfg.weight_norm, LECUN)  # logits: no ReLU after

    def tables(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The embedding folded into the first layer: ``[window, Q, dim]``; row ``[p, q]`` is what
        code ``q`` at the p-th oldest of the window's positions adds to the first layer (no bias).
        Computed in ``dtype`` (default: the weights')."""
        emb, conv_w = self.embedding.weight, self.input.weight  # [Q, emb], [dim, emb, window]
        if dtype is not None:
            emb, conv_w = emb.to(dtype), conv_w.to(dtype)
        return torch.einsum("qe,dew->wqd", emb, conv_w)

    def first_layer_conv(self, prev_codes: torch.Tensor) -> torch.Tensor:
        """prev_codes [B, L + window - 1] → [B, L, dim]: embeddings through the convolution."""
        return self.input(self.embedding(prev_codes).transpose(1, 2)).transpose(1, 2)

    def first_layer_folded(self, prev_codes: torch.Tensor) -> torch.Tensor:
        """The same as :meth:`first_layer_conv` as a sum of ``window`` table rows per sample
        (embedding_bag over the flattened tables): ``Q * window * emb * dim`` multiply-adds per
        call to build the tables instead of ``emb * dim`` per code and position."""
        batch, length = prev_codes.shape[0], prev_codes.shape[1] - self.window + 1
        q_levels = self.embedding.num_embeddings
        offsets = torch.arange(self.window, device=prev_codes.device) * q_levels
        rows = prev_codes.unfold(1, self.window, 1) + offsets  # [B, L, window] rows of the flat tables
        tables = self.tables()
        first = F.embedding_bag(rows.reshape(-1, self.window), tables.reshape(-1, tables.shape[-1]), mode="sum")
        return first.view(batch, length, -1) + self.input.bias

    def forward(self, prev_codes: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """prev_codes [B, L + window - 1], cond [B, L, dim] → logits [B, L, Q]."""
        batch, length = cond.shape[:2]
        # Building the tables costs as much as the convolution over Q positions: it pays once a
        # call predicts several times that many samples (measured: docs/BENCHMARKS.md, "Training speed")
        fold = batch * length >= FOLD_MIN_SAMPLES_PER_LEVEL * self.embedding.num_embeddings
        first = self.first_layer_folded(prev_codes) if fold else self.first_layer_conv(prev_codes)
        x = F.relu(first + cond)
        x = F.relu(self.hidden(x))
        return self.output(x)


class SampleRNN(nn.Module):
    family = "samplernn"

    def __init__(self, cfg: SampleRNNConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        fs = cfg.frame_sizes
        ratios = [upper // lower for upper, lower in zip(fs, fs[1:])] + [fs[-1]]
        self.tiers = nn.ModuleList(FrameTier(f, r, cfg) for f, r in zip(fs, ratios))
        self.mlp = SampleMLP(fs[-1], cfg)
        self.label_embedding = nn.Embedding(len(cfg.labels), cfg.dim) if cfg.labels else None

    # ----- geometry -------------------------------------------------------------------------
    @property
    def context_samples(self) -> int:
        """Samples in front of a sequence that are input only (the top frame)."""
        return self.config.frame_sizes[0]

    @property
    def receptive_field(self) -> int | None:
        return None  # recurrent: unbounded

    # ----- parallel forward -----------------------------------------------------------------
    def initial_hidden(self, batch: int) -> list:
        return [tier.initial_hidden(batch) for tier in self.tiers]

    def label_vectors(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """labels [B] int64 (index) or [B, n_labels] float (blend weights) → [B, 1, dim] or None."""
        if self.label_embedding is None:
            return None
        if labels is None:
            raise ValueError(f"this model is conditioned on labels {self.config.labels}: give one")
        if labels.dim() == 1:
            vec = self.label_embedding(labels.long())
        else:
            vec = labels.float() @ self.label_embedding.weight
        return vec.view(batch, 1, -1)

    def logits(self, codes: torch.Tensor, hidden: list | None = None, labels: torch.Tensor | None = None):
        """codes [B, C + L] int64 → (logits [B, L, Q] for codes[:, C:], final hidden)."""
        batch, total = codes.shape
        ctx = self.context_samples
        length = total - ctx
        if length <= 0 or length % ctx:
            raise ValueError(f"sequence of {total} codes: need {ctx} context + a multiple of {ctx}")
        if hidden is None:
            hidden = self.initial_hidden(batch)
        x = rescale_codes(codes, self.config.q_levels)
        cond = self.label_vectors(labels, batch)
        new_hidden = []
        for tier, h in zip(self.tiers, hidden):
            f = tier.frame_size
            frames = x[:, ctx - f: ctx - f + length].reshape(batch, length // f, f)
            cond, h = tier(frames, cond, h)
            new_hidden.append(h)
        w = self.mlp.window
        return self.mlp(codes[:, ctx - w: total - 1], cond), new_hidden

    def sequence_nll(self, codes: torch.Tensor, labels: torch.Tensor | None = None,
                     state: State | None = None) -> tuple[torch.Tensor, State]:
        """codes [B, C + L] → (NLL in nats [B, L] of codes[:, C:], hidden state after them).

        ``state`` (from a previous call on the same streams) carries the hidden state on; None
        starts from h0.
        """
        hidden = self._hidden_for(state, None, codes.shape[0])
        logits, hidden = self.logits(codes, hidden, labels)
        target = codes[:, self.context_samples:]
        nll = F.cross_entropy(logits.float().transpose(1, 2), target, reduction="none")
        return nll, _state_of(hidden)

    # ----- training -------------------------------------------------------------------------
    def forward(self, batch: dict, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Training loss (mean nats per sample) on a TBPTT window → ``(loss, state)``.

        batch: ``codes [B, C + L]`` int64, ``reset [B]`` bool (the stream starts a new chunk:
        h0 instead of ``state``), ``labels [B]`` int64 (conditioned models). ``state``: the
        hidden state this call returned for the streams' previous window (None: h0); the
        returned one is detached (truncated backprop).
        """
        codes = batch["codes"]
        hidden = self._hidden_for(state, batch.get("reset"), codes.shape[0])
        logits, hidden = self.logits(codes, hidden, batch.get("labels"))
        target = codes[:, self.context_samples:]
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1))
        return loss, _state_of(hidden)

    loss = forward

    def _hidden_for(self, state: State | None, reset: torch.Tensor | None, batch: int) -> list:
        """The hidden state to start a window from: h0, or ``state`` where a stream is not reset."""
        init = self.initial_hidden(batch)
        if not state:
            return init
        names = [name for name, _ in _flatten_hidden(init)]
        if sorted(names) != sorted(state):
            raise ValueError(f"carried state {sorted(state)[:4]}... does not match this model's tiers and layers")
        device = _first(init).device
        it = iter([state[name].to(device) for name in names])
        carried = _map_hidden(init, lambda _: next(it))
        if _first(carried).shape[1] != batch:
            raise ValueError(f"carried state of {_first(carried).shape[1]} streams for a batch of {batch}")
        if reset is None:
            return carried
        keep = (~reset.bool()).view(1, batch, 1).to(device)
        return _zip_hidden(init, carried, lambda h0, c: torch.where(keep, c, h0))

    # ----- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def inference_spec(self) -> dict:
        """Plain fp32 CPU tensors in the canonical layout every engine is built from.

        tiers[k]: ``input_w [dim, F]``, ``input_b [dim]``, ``rnn`` (per layer ``w_ih [G*dim, dim]``,
        ``w_hh``, ``b_ih``, ``b_hh``; gates r,z,n for GRU, i,f,g,o for LSTM), ``h0 [S, n_rnn, dim]``,
        ``up_w [ratio*dim, dim]``, ``up_b``. mlp: ``tables [window, Q, dim]`` (embedding folded
        into the first layer: row p is the contribution of the p-th oldest code), ``in_b``,
        ``hidden_w [dim, dim]``, ``hidden_b``, ``out_w [Q, dim]``, ``out_b``.
        """
        def t(x: torch.Tensor) -> torch.Tensor:
            return x.detach().float().cpu().contiguous().clone()

        cfg = self.config
        tiers = []
        for tier in self.tiers:
            tiers.append({
                "frame_size": tier.frame_size, "ratio": tier.ratio,
                "input_w": t(tier.input.weight), "input_b": t(tier.input.bias),
                "rnn": [{"w_ih": t(r.weight_ih_l0), "w_hh": t(r.weight_hh_l0),
                         "b_ih": t(r.bias_ih_l0), "b_hh": t(r.bias_hh_l0)} for r in tier.rnns],
                "h0": t(tier.h0),
                "up_w": t(tier.upsample.weight), "up_b": t(tier.upsample.bias),
            })
        tables = self.mlp.tables(torch.float32)
        return {
            "family": "samplernn",
            "frame_sizes": list(cfg.frame_sizes), "dim": cfg.dim, "n_rnn": cfg.n_rnn,
            "q_levels": cfg.q_levels, "quantization": cfg.quantization, "rnn_type": cfg.rnn_type,
            "skip": cfg.skip, "labels": list(cfg.labels),
            "label_embedding": t(self.label_embedding.weight) if self.label_embedding is not None else None,
            "tiers": tiers,
            "mlp": {"tables": t(tables), "in_b": t(self.mlp.input.bias),
                    "hidden_w": t(self.mlp.hidden.weight), "hidden_b": t(self.mlp.hidden.bias),
                    "out_w": t(self.mlp.output.weight), "out_b": t(self.mlp.output.bias)},
        }

    def describe(self) -> dict:
        return {"frame_sizes": list(self.config.frame_sizes), "tiers": len(self.tiers) + 1,
                "rnn": f"{self.config.n_rnn}-layer {self.config.rnn_type.upper()} x {self.config.dim}"}


# ----- hidden-state helpers: per tier, per layer, h or (h, c) ------------------------------------

def _map_hidden(hidden: list, fn) -> list:
    return [[tuple(fn(s) for s in h) if isinstance(h, tuple) else fn(h) for h in tier] for tier in hidden]


def _zip_hidden(a: list, b: list, fn) -> list:
    return [[tuple(fn(x, y) for x, y in zip(ha, hb)) if isinstance(ha, tuple) else fn(ha, hb)
             for ha, hb in zip(ta, tb)] for ta, tb in zip(a, b)]


def _flatten_hidden(hidden: list):
    for k, tier in enumerate(hidden):
        for j, h in enumerate(tier):
            states = h if isinstance(h, tuple) else (h,)
            for s, tensor in enumerate(states):
                yield f"tier{k}.layer{j}.state{s}", tensor


def _state_of(hidden: list) -> State:
    """Hidden state → named tensors ``[1, B, dim]`` (streams at dim 1), detached."""
    return {name: t.detach() for name, t in _flatten_hidden(hidden)}


def _first(hidden: list) -> torch.Tensor:
    h = hidden[0][0]
    return h[0] if isinstance(h, tuple) else h

