"""Incremental generation: the Engine contract, the torch reference engines, backend selection.

An engine runs one model incrementally for B streams at once, built from the model's
inference spec alone (``model.inference_spec()``)::

    engine = make_engine(model_or_spec, streams=B, backend="auto"|"torch"|"numba"|"cuda")
    engine.reset(prime_codes=None, label_weights=None)  # optional [B, T0] codes run through first
    codes = engine.generate(uniforms, temperature)      # uniforms [B, n] in [0, 1) → codes [B, n]
    logits = engine.teacher_force(codes)                # logits [B, n, Q] predicting each given code
    engine.state_dict() / engine.load_state_dict()      # everything needed to continue exactly
    engine.stream_state(b) / engine.set_stream_state(b, s)  # one stream's part (via _stream_axes)

Arrays in and out are numpy (codes int64, logits and uniforms float32) so every backend
speaks the same language; ``state_dict`` holds numpy arrays only, so it saves anywhere.

Sampling is inverse-CDF on softmax(logits / T) with uniforms the caller supplies, drawn
from :func:`uniforms`, a counter-based generator keyed by (seed, stream, position): a render
is reproducible, backends can be compared sample for sample, and a resumed render
continues byte for byte.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from wavegen.audio import silence_code

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "numba", "cuda")

# ----- counter-based uniforms ---------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijective avalanche on uint64 (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniforms(seed: int, streams, start: int, n: int, attempt: int = 0) -> np.ndarray:
    """Uniforms in [0, 1) keyed by (seed, stream, position, attempt): float32 [len(streams), n].

    ``streams`` is a sequence of stream ids; positions run ``start .. start + n - 1``.
    ``attempt`` gives a fresh, still deterministic, draw for the same positions.
    """
    with np.errstate(over="ignore"):
        ids = np.asarray(streams, dtype=np.uint64).reshape(-1, 1)
        key = _mix64(np.uint64(seed) * _GOLDEN + _mix64(ids + np.uint64(0x632BE59BD9B4E019)))
        key = _mix64(key ^ (np.uint64(attempt) * np.uint64(0xD1B54A32D192ED03)))
        pos = np.arange(start, start + n, dtype=np.uint64).reshape(1, -1)
        bits = _mix64(key + pos * _GOLDEN)
    return ((bits >> np.uint64(40)).astype(np.float32)) * np.float32(2.0 ** -24)


def sample_codes(logits: torch.Tensor, u: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling. logits [B, Q] float32, u [B], temperature [B] → codes [B] int64.

    The code is the number of CDF entries ``<= u * total`` (the smallest j whose cumulative
    probability exceeds u), clamped to Q-1: the same arithmetic in every backend.
    """
    z = logits / temperature.view(-1, 1)
    z = z - z.max(dim=1, keepdim=True).values
    p = torch.exp(z)
    cdf = torch.cumsum(p, dim=1)
    threshold = u.view(-1, 1) * cdf[:, -1:]
    return (cdf <= threshold).sum(dim=1).clamp(max=logits.shape[1] - 1)


def temperatures(temperature, streams: int) -> np.ndarray:
    """A float or a list (cycled over streams) → float32 [streams], all positive."""
    values = np.atleast_1d(np.asarray(temperature, dtype=np.float32))
    if values.size == 0 or np.any(~(values > 0)):
        raise ValueError(f"temperature {temperature}: must be positive")
    return np.resize(values, streams).astype(np.float32)


# ----- the contract --------------------------------------------------------------------------------

class Engine:
    """Base of every backend's engine; see the module docstring for the contract.

    Per-stream state (the render guard rewinds one stream and leaves the others): every
    engine declares ``_stream_axes``, state_dict name → the axis of that array that indexes
    streams, or None for an entry all streams share (the position ``t``). A name with a
    trailing layer/tier index (``hidden0``, ``buffer12``) is looked up by its stem
    (``hidden``, ``buffer``). :meth:`stream_state` and :meth:`set_stream_state` are built on
    that mapping; a state entry the mapping does not name raises NotImplementedError, so an
    engine that forgets one fails loudly instead of mixing streams up.
    """

    backend = "?"
    _stream_axes: dict[str, int | None] = {}

    def __init__(self, spec: dict, streams: int):
        if streams < 1:
            raise ValueError(f"streams={streams}: need at least one")
        self.spec = spec
        self.streams = streams
        self.q_levels = int(spec["q_levels"])
        self.labels = list(spec.get("labels") or [])
        self.silence = silence_code(self.q_levels, spec["quantization"])

    def label_weights(self, label_weights) -> np.ndarray | None:
        """None | [n_labels] | [B, n_labels] → float32 [B, n_labels] (None for unconditioned)."""
        if not self.labels:
            if label_weights is not None:
                raise ValueError("this model is not conditioned on labels")
            return None
        if label_weights is None:
            raise ValueError(f"this model is conditioned on labels {self.labels}: choose one")
        w = np.asarray(label_weights, dtype=np.float32)
        if w.ndim == 1:
            w = np.broadcast_to(w, (self.streams, w.shape[0]))
        if w.shape != (self.streams, len(self.labels)):
            raise ValueError(f"label weights of shape {w.shape}: expected ({self.streams}, {len(self.labels)})")
        return np.ascontiguousarray(w)

    def default_label_weights(self) -> np.ndarray | None:
        """An even blend of every label (None for unconditioned models): the state after construction."""
        return np.full(len(self.labels), 1.0 / len(self.labels), dtype=np.float32) if self.labels else None

    def _check_codes(self, codes) -> np.ndarray:
        codes = np.array(codes, dtype=np.int64)  # a private, writable copy
        if codes.ndim != 2 or codes.shape[0] != self.streams:
            raise ValueError(f"codes of shape {codes.shape}: expected [{self.streams}, n]")
        if codes.size and (codes.min() < 0 or codes.max() >= self.q_levels):
            raise ValueError(f"codes outside [0, {self.q_levels - 1}]")
        return codes

    def _check_uniforms(self, u) -> np.ndarray:
        u = np.asarray(u, dtype=np.float32)
        if u.ndim != 2 or u.shape[0] != self.streams:
            raise ValueError(f"uniforms of shape {u.shape}: expected [{self.streams}, n]")
        return u

    def reset(self, prime_codes=None, label_weights=None) -> None:
        raise NotImplementedError

    def generate(self, uniforms, temperature=1.0) -> np.ndarray:
        raise NotImplementedError

    def teacher_force(self, codes) -> np.ndarray:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """A snapshot: numpy arrays that later steps of the engine do not change (copies, not views)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    # ----- per-stream state, built on state_dict and _stream_axes -----

    def _stream_axis(self, name: str) -> int | None:
        for key in (name, name.rstrip("0123456789")):
            if key in self._stream_axes:
                return self._stream_axes[key]
        raise NotImplementedError(f"{type(self).__name__}: state entry {name!r} has no stream axis in "
                                  "_stream_axes (name -> axis, or None when shared by all streams)")

    def stream_state(self, b: int, state: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Stream ``b``'s part of ``state`` (default: the engine's own ``state_dict()``).

        Arrays with a stream axis lose that axis (index b taken); shared entries are copied whole.
        """
        if not 0 <= b < self.streams:
            raise IndexError(f"stream {b} of {self.streams}")
        state = self.state_dict() if state is None else state
        out = {}
        for name, value in state.items():
            axis = self._stream_axis(name)
            value = np.asarray(value)
            out[name] = value.copy() if axis is None else np.take(value, b, axis=axis)
        return out

    def set_stream_state(self, b: int, stream_state: dict[str, np.ndarray]) -> None:
        """Replace stream ``b``'s part of the engine state with ``stream_state`` (from :meth:`stream_state`).

        The other streams are untouched. Shared entries must equal the engine's (a stream can
        only be moved within the same position ``t``): ValueError otherwise.
        """
        if not 0 <= b < self.streams:
            raise IndexError(f"stream {b} of {self.streams}")
        state = {name: np.array(value) for name, value in self.state_dict().items()}
        if set(state) != set(stream_state):
            raise ValueError(f"stream state entries {sorted(stream_state)}: expected {sorted(state)}")
        for name, value in state.items():
            axis = self._stream_axis(name)
            if axis is None:
                if not np.array_equal(value, stream_state[name]):
                    raise ValueError(f"shared state {name!r} differs ({stream_state[name]} vs the engine's "
                                     f"{value}): streams can only be swapped at the same position")
                continue
            index = [slice(None)] * value.ndim
            index[axis] = b
            value[tuple(index)] = stream_state[name]
        self.load_state_dict(state)


# ----- torch reference: SampleRNN ------------------------------------------------------------------

def _gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    gi = x @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    i_r, i_z, i_n = gi.chunk(3, 1)
    h_r, h_z, h_n = gh.chunk(3, 1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def _lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class TorchStepEngine(Engine):
    """The torch engines' shared loop: one Python step per sample, ``_logits`` then ``_push``.

    Subclasses set ``self.device`` and implement ``_logits() -> [B, Q]`` (the next sample's
    logits from the current state) and ``_push(codes [B])`` (advance the state by one sample).
    """

    backend = "torch"

    def _logits(self) -> torch.Tensor:
        raise NotImplementedError

    def _push(self, codes: torch.Tensor) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, uniforms, temperature=1.0) -> np.ndarray:
        u = torch.from_numpy(self._check_uniforms(uniforms)).to(self.device)
        temp = torch.from_numpy(temperatures(temperature, self.streams)).to(self.device)
        out = torch.empty(u.shape, dtype=torch.long, device=self.device)
        for i in range(u.shape[1]):
            codes = sample_codes(self._logits(), u[:, i], temp)
            self._push(codes)
            out[:, i] = codes
        return out.cpu().numpy()

    @torch.no_grad()
    def teacher_force(self, codes) -> np.ndarray:
        codes = torch.from_numpy(self._check_codes(codes)).to(self.device)
        out = torch.empty(codes.shape + (self.q_levels,), dtype=torch.float32, device=self.device)
        for i in range(codes.shape[1]):
            out[:, i] = self._logits()
            self._push(codes[:, i])
        return out.cpu().numpy()


class TorchSampleRNNEngine(TorchStepEngine):
    """Reference SampleRNN engine: plain torch, one Python step per sample, CPU or GPU.

    State: the last ``frame_sizes[0]`` codes, each tier's hidden state, the conditioning
    vectors each tier left for the tier (or MLP) below, and the position ``t``.
    """

    backend = "torch"
    # hidden{k} is [S, n_rnn, B, dim] (S = 2 for LSTM h, c); history [B, F]; cond{k} [B, ratio, dim]
    _stream_axes = {"t": None, "history": 0, "hidden": 2, "cond": 0, "label_weights": 0}

    def __init__(self, spec: dict, streams: int, device: str | torch.device = "cpu"):
        super().__init__(spec, streams)
        self.device = torch.device(device)
        to = lambda x: x.to(self.device)  # noqa: E731
        self.frame_sizes = list(spec["frame_sizes"])
        self.lstm = spec["rnn_type"] == "lstm"
        self.skip = bool(spec["skip"])
        self.dim = int(spec["dim"])
        self.tiers = [{k: ([{n: to(w) for n, w in layer.items()} for layer in v] if k == "rnn"
                           else to(v) if torch.is_tensor(v) else v) for k, v in tier.items()}
                      for tier in spec["tiers"]]
        self.mlp = {k: to(v) for k, v in spec["mlp"].items()}
        emb = spec.get("label_embedding")
        self.label_embedding = to(emb) if emb is not None else None
        self.reset(label_weights=self.default_label_weights())

    def reset(self, prime_codes=None, label_weights=None) -> None:
        B, dev = self.streams, self.device
        self.t = 0
        self.history = torch.full((B, self.frame_sizes[0]), self.silence, dtype=torch.long, device=dev)
        self.hidden = [tier["h0"][:, :, None, :].expand(-1, -1, B, -1).clone() for tier in self.tiers]
        self.cond = [None] + [torch.zeros(B, tier["ratio"], self.dim, device=dev) for tier in self.tiers]
        w = self.label_weights(label_weights)
        self.weights = None if w is None else torch.tensor(w, device=dev)
        self.top_cond = None if w is None else self.weights @ self.label_embedding
        if prime_codes is not None:
            self.teacher_force(prime_codes)

    @torch.no_grad()
    def _logits(self) -> torch.Tensor:
        """Logits [B, Q] for the sample at position t, advancing every tier due at t."""
        t, q = self.t, self.q_levels
        for k, (tier, f) in enumerate(zip(self.tiers, self.frame_sizes)):
            if t % f:
                continue
            frame = (self.history[:, -f:].float() / (q / 2) - 1.0) * 2.0
            x = frame @ tier["input_w"].T + tier["input_b"]
            if k == 0:
                if self.top_cond is not None:
                    x = x + self.top_cond
            else:
                x = x + self.cond[k][:, (t % self.frame_sizes[k - 1]) // f]
            outs = []
            for j, layer in enumerate(tier["rnn"]):
                if self.lstm:
                    h, c = _lstm_cell(x, self.hidden[k][0, j], self.hidden[k][1, j], **layer)
                    self.hidden[k][1, j] = c
                else:
                    h = _gru_cell(x, self.hidden[k][0, j], **layer)
                self.hidden[k][0, j] = h
                outs.append(h)
                x = h
            y = torch.stack(outs).sum(0) if self.skip else x
            self.cond[k + 1] = (y @ tier["up_w"].T + tier["up_b"]).view(self.streams, tier["ratio"], self.dim)
        mlp, w = self.mlp, self.frame_sizes[-1]
        window = self.history[:, -w:]
        x = mlp["in_b"] + self.cond[-1][:, t % w]
        for p in range(w):
            x = x + mlp["tables"][p][window[:, p]]
        x = F.relu(x)
        x = F.relu(x @ mlp["hidden_w"].T + mlp["hidden_b"])
        return x @ mlp["out_w"].T + mlp["out_b"]

    def _push(self, codes: torch.Tensor) -> None:
        self.history = torch.cat([self.history[:, 1:], codes.view(-1, 1)], dim=1)
        self.t += 1

    def state_dict(self) -> dict[str, np.ndarray]:
        # copies: on CPU .numpy() is a view, and the hidden states are updated in place
        state = {"t": np.array(self.t, dtype=np.int64), "history": self.history.cpu().numpy().copy()}
        for k, h in enumerate(self.hidden):
            state[f"hidden{k}"] = h.cpu().numpy().copy()
        for k, c in enumerate(self.cond[1:], start=1):
            state[f"cond{k}"] = c.cpu().numpy().copy()
        if self.weights is not None:
            state["label_weights"] = self.weights.cpu().numpy().copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        dev = self.device
        self.t = int(state["t"])
        self.history = torch.from_numpy(np.array(state["history"])).to(dev)
        self.hidden = [torch.from_numpy(np.array(state[f"hidden{k}"])).to(dev) for k in range(len(self.tiers))]
        self.cond = [None] + [torch.from_numpy(np.array(state[f"cond{k}"])).to(dev)
                              for k in range(1, len(self.tiers) + 1)]
        if "label_weights" in state:
            self.weights = torch.from_numpy(np.array(state["label_weights"])).to(dev)
            self.top_cond = self.weights @ self.label_embedding


# ----- torch reference: WaveNet ---------------------------------------------------------------------

class TorchWaveNetEngine(TorchStepEngine):
    """Reference WaveNet engine: plain torch, one Python step per sample, CPU or GPU.

    fast-wavenet: each layer keeps a ring buffer of its last ``dilation`` inputs, so a step costs
    O(layers), not O(receptive field). State: the previous code ``prev [B]``, the position ``t``
    and per layer ``buffer{k} [B, d, R]`` (slot ``t % d`` holds the layer input of step t - d).
    After ``reset`` the previous code is silence and every buffer is zeros, as the parallel
    forward's causal zero padding.
    """

    backend = "torch"
    # buffer{k} is [B, d, R]; prev [B]; label_weights [B, n_labels]
    _stream_axes = {"t": None, "prev": 0, "buffer": 0, "label_weights": 0}

    def __init__(self, spec: dict, streams: int, device: str | torch.device = "cpu"):
        super().__init__(spec, streams)
        self.device = torch.device(device)
        to = lambda x: x.to(self.device, torch.float32)  # noqa: E731
        self.R = int(spec["residual_channels"])
        self.embed = to(spec["embed"])
        self.dilations = [int(layer["dilation"]) for layer in spec["layers"]]
        self.layers = []
        for layer in spec["layers"]:
            w = layer["conv_w"]
            self.layers.append({
                "conv_w": to(torch.cat([w[0], w[1]], dim=1)),  # [2R, 2R]: [past | current] inputs
                "conv_b": to(layer["conv_b"]),
                "label_bias": to(layer["label_bias"]) if layer["label_bias"] is not None else None,
                "res_w": to(layer["res_w"]), "res_b": to(layer["res_b"]),
                "skip_w": to(layer["skip_w"]), "skip_b": to(layer["skip_b"]),
            })
        self.out = {k: to(spec[k]) for k in ("out1_w", "out1_b", "out2_w", "out2_b")}
        self.reset(label_weights=self.default_label_weights())

    def reset(self, prime_codes=None, label_weights=None) -> None:
        B, dev = self.streams, self.device
        self.t = 0
        self.prev = torch.full((B,), self.silence, dtype=torch.long, device=dev)
        self.buffers = [torch.zeros(B, d, self.R, device=dev) for d in self.dilations]
        w = self.label_weights(label_weights)
        self._set_label_weights(None if w is None else torch.tensor(w, device=dev))
        if prime_codes is not None:
            self.teacher_force(prime_codes)

    def _set_label_weights(self, weights: torch.Tensor | None) -> None:
        self.weights = weights
        # per layer [B, 2R]: a blend of labels is a blend of their folded biases (all linear)
        self.label_biases = [None if weights is None else weights @ layer["label_bias"] for layer in self.layers]

    @torch.no_grad()
    def _logits(self) -> torch.Tensor:
        """Logits [B, Q] for the sample at position t, given the previous code."""
        R, last = self.R, len(self.layers) - 1
        x = self.embed[self.prev]
        skip = 0
        for k, (layer, buf, d) in enumerate(zip(self.layers, self.buffers, self.dilations)):
            slot = self.t % d
            h = torch.cat([buf[:, slot], x], dim=1) @ layer["conv_w"].T + layer["conv_b"]
            buf[:, slot] = x  # read before write: the slot held the input of step t - d
            if self.label_biases[k] is not None:
                h = h + self.label_biases[k]
            z = torch.tanh(h[:, :R]) * torch.sigmoid(h[:, R:])
            skip = skip + z @ layer["skip_w"].T + layer["skip_b"]
            if k < last:  # the last layer's residual output is never read
                x = x + z @ layer["res_w"].T + layer["res_b"]
        out = self.out
        y = F.relu(F.relu(skip) @ out["out1_w"].T + out["out1_b"])
        return y @ out["out2_w"].T + out["out2_b"]

    def _push(self, codes: torch.Tensor) -> None:
        self.prev = codes
        self.t += 1

    def state_dict(self) -> dict[str, np.ndarray]:
        # copies: on CPU .numpy() is a view, and the ring buffers are updated in place
        state = {"t": np.array(self.t, dtype=np.int64), "prev": self.prev.cpu().numpy().copy()}
        for k, buf in enumerate(self.buffers):
            state[f"buffer{k}"] = buf.cpu().numpy().copy()
        if self.weights is not None:
            state["label_weights"] = self.weights.cpu().numpy().copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        dev = self.device
        for k, d in enumerate(self.dilations):
            shape = tuple(np.shape(state[f"buffer{k}"]))
            if shape != (self.streams, d, self.R):
                raise ValueError(f"engine state buffer{k} of shape {shape}: expected {(self.streams, d, self.R)}")
        self.t = int(state["t"])
        self.prev = torch.from_numpy(np.array(state["prev"], dtype=np.int64)).to(dev)
        self.buffers = [torch.from_numpy(np.array(state[f"buffer{k}"], dtype=np.float32)).to(dev)
                        for k in range(len(self.dilations))]
        if "label_weights" in state:
            self._set_label_weights(torch.from_numpy(np.array(state["label_weights"], dtype=np.float32)).to(dev))


# ----- backend selection -----------------------------------------------------------------------------

# family → backend → factory(spec, streams, device) ; other modules register theirs.
_ENGINES: dict[str, dict[str, Callable]] = {"samplernn": {"torch": TorchSampleRNNEngine},
                                            "wavenet": {"torch": TorchWaveNetEngine}}


def register_engine(family: str, backend: str, factory: Callable) -> None:
    _ENGINES.setdefault(family, {})[backend] = factory


def _load_backend_modules() -> None:
    """Import the optional backends so they register; failures are recorded, not raised."""
    global _BACKEND_ERRORS
    if _BACKEND_ERRORS is not None:
        return
    _BACKEND_ERRORS = {}
    for backend, module in (("numba", "wavegen.kernels.numba_engines"), ("cuda", "wavegen.kernels.cuda_engines")):
        try:
            __import__(module)
        except ImportError as err:
            _BACKEND_ERRORS[backend] = f"{module} unavailable: {err}"


_BACKEND_ERRORS: dict[str, str] | None = None


def available_backends(family: str | None = None, device: str | None = None) -> dict[str, str | None]:
    """backend → None where it can run here, else the reason it cannot."""
    _load_backend_modules()
    out = {}
    for backend in BACKENDS:
        if backend in _BACKEND_ERRORS:
            out[backend] = _BACKEND_ERRORS[backend]
            continue
        families = [f for f, b in _ENGINES.items() if backend in b]
        if not families:
            out[backend] = "not built into this version"
        elif family is not None and family not in families:
            out[backend] = f"no {backend} engine for {family} yet"
        else:
            checker = _AVAILABILITY.get(backend)
            out[backend] = checker() if checker else None
    return out


_AVAILABILITY: dict[str, Callable[[], str | None]] = {}


def register_availability(backend: str, check: Callable[[], str | None]) -> None:
    """``check()`` returns None where the backend can run now, else why not."""
    _AVAILABILITY[backend] = check


def choose_backend(family: str, streams: int, device: str = "cpu") -> str:
    """The fastest backend available for this family, device and batch.

    On a CPU the numba engines beat the torch engine at every batch measured (docs/BENCHMARKS.md;
    the gap narrows at large batch, where torch's matmuls amortise its per-step overhead), so
    numba comes first whatever the batch; torch is the fallback everywhere.
    """
    avail = available_backends(family)
    if torch.device(device).type == "cuda":
        order = ["cuda", "torch"]
    else:
        order = ["numba", "torch"]
    for backend in order:
        if avail.get(backend) is None:
            return backend
    return "torch"


def make_engine(model_or_spec, streams: int, backend: str = "auto", device: str = "cpu") -> Engine:
    """Build an engine for ``streams`` streams from a model or its inference spec."""
    spec = model_or_spec.inference_spec() if hasattr(model_or_spec, "inference_spec") else model_or_spec
    family = spec["family"]
    if backend == "auto":
        backend = choose_backend(family, streams, device)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; use auto or one of {list(BACKENDS)}")
    reason = available_backends(family).get(backend)
    if reason is not None:
        raise RuntimeError(f"backend {backend!r} is not available: {reason}")
    engine = _ENGINES[family][backend](spec, streams, device)
    logger.debug("engine %s for %s, %d streams", backend, family, streams)
    return engine
