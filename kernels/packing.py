"""Weight packing and state layout for the fast engines, in numpy alone (no numba import).

A fast engine is built from a model's inference spec (``model.inference_spec()``: torch
tensors in a canonical layout). This module turns a spec into what kernels read, so the numba
(CPU) and CUDA engines pack weights the same way:

- **Precision** of stored weights: ``fp32``; ``fp16`` (IEEE half) or ``bf16`` (the top 16 bits
  of a float32), both with float32 arithmetic. :func:`round_spec` rounds the matrices a
  backend stores at reduced precision (the big ones; biases, embedding tables and small folded
  matrices stay float32); an engine at that precision computes what the fp32 engines compute
  on the rounded spec. :func:`matrix_store` gives the bits kernels read: float32, fp16 as
  ``uint16``, bf16 as ``int16`` (numba picks the conversion by the integer type; a CUDA
  engine may view them as ``float16`` / ``torch.bfloat16``).
- **Packing**: :func:`pack_samplernn` / :func:`pack_wavenet` put every weight into a matrix
  store ``M`` and a float32 vector store ``V`` (flat arrays; a matrix is ``O`` rows of ``I``
  weights, torch's ``[out, in]``) and give int64 offset tables whose columns are named below
  (``SRNN_*``, ``WN_*``); the algebra folded at build time is described there.
- **State layout**: :func:`state_layout` names every entry of an engine's ``state_dict``
  (shape, dtype, stream axis) per family; every backend's ``state_dict`` uses these names and
  shapes, so a state saved by one backend continues on another. :func:`initial_state` is the
  state after ``reset`` without a prime.
"""

from __future__ import annotations

import numpy as np

from wavegen.engine import EngineError

STORED_PRECISIONS = ("fp32", "fp16", "bf16")
_FP16_MAX = 65504.0


def as_numpy(x) -> np.ndarray:
    """A torch tensor or array-like → numpy array (no copy where possible)."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def round_values(x, precision: str) -> np.ndarray:
    """float32 values → float32 values that ``precision`` can hold exactly (round to nearest even).

    EngineError where a value does not fit (fp16 beyond 65504, anything not finite after rounding).
    """
    x = np.asarray(as_numpy(x), dtype=np.float32)
    if precision == "fp32":
        return x
    if precision == "fp16":
        big = float(np.abs(x).max()) if x.size else 0.0
        if not big < _FP16_MAX:
            raise EngineError(f"a weight of magnitude {big:g} does not fit fp16 (max {_FP16_MAX:g}): "
                              "use precision 'bf16' or 'fp32'")
        return x.astype(np.float16).astype(np.float32)
    if precision == "bf16":
        bits = x.view(np.uint32).astype(np.uint64)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000  # round to nearest, ties to even
        out = bits.astype(np.uint32).view(np.float32)
        if x.size and not np.all(np.isfinite(out)):
            raise EngineError("a weight does not fit bf16 (not finite once rounded): use precision 'fp32'")
        return out
    raise EngineError(f"precision {precision!r}: weights are stored as one of {list(STORED_PRECISIONS)}")


def matrix_store(flat: np.ndarray, precision: str) -> np.ndarray:
    """Packed float32 matrices (already rounded by :func:`round_values`) → the store kernels read:
    float32; fp16 bits as uint16; bf16 bits (the top half of each float32) as int16."""
    flat = np.ascontiguousarray(flat, dtype=np.float32)
    if precision == "fp32":
        return flat
    if precision == "fp16":
        return flat.astype(np.float16).view(np.uint16)
    if precision == "bf16":
        return (flat.view(np.uint32) >> np.uint32(16)).astype(np.uint16).view(np.int16)
    raise EngineError(f"precision {precision!r}: weights are stored as one of {list(STORED_PRECISIONS)}")


def _rounded(x, precision: str):
    """x rounded for ``precision``, as the same kind of object (torch tensor stays a tensor)."""
    values = round_values(x, precision)
    if hasattr(x, "detach"):
        import torch

        return torch.from_numpy(values.copy())
    return values


class Packer:
    """Appends float32 arrays to one flat buffer and hands back their offsets."""

    def __init__(self):
        self.parts, self.size = [], 0

    def add(self, array) -> int:
        a = np.ascontiguousarray(np.asarray(array, dtype=np.float32)).reshape(-1)
        offset = self.size
        self.parts.append(a)
        self.size += a.size
        return offset

    def flat(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)


def _f64(x) -> np.ndarray:
    return as_numpy(x).astype(np.float64)


# ----- SampleRNN --------------------------------------------------------------------------------------
# The algebra (folds done once, in float64):
# - the first MLP layer is the spec's per-position tables [window, Q, dim]: a gather;
# - a tier's frame input projection folds into its first RNN layer:
#   w_ih @ (input_w @ frame + input_b + cond) + b_ih = A @ frame + C + w_ih @ cond, with
#   A = w_ih @ input_w ([G*dim, F], tiny, float32 in V) and C = w_ih @ input_b + b_ih;
# - w_ih @ cond of a lower tier is hoisted: kept as its own matrix (SRNN_WIH0) so the kernels
#   apply it once per upper-tier step to all `ratio` conditioning vectors.

SRNN_A, SRNN_C, SRNN_UPW, SRNN_UPB, SRNN_WIH0 = range(5)  # tier_off columns
SRNN_WIH, SRNN_BIH, SRNN_WHH, SRNN_BHH = range(4)  # layer_off columns
SRNN_TAB, SRNN_INB, SRNN_HIDW, SRNN_HIDB, SRNN_OUTW, SRNN_OUTB = range(6)  # mlp_off entries

SAMPLERNN_STREAM_AXES = {"t": None, "history": 0, "hidden": 2, "cond": 0, "label_weights": 0}


def round_spec_samplernn(spec: dict, precision: str) -> dict:
    """The spec with every matrix the matrix store holds rounded for ``precision``."""
    if precision == "fp32":
        return spec
    out = dict(spec)
    out["tiers"] = []
    for k, tier in enumerate(spec["tiers"]):
        tier = dict(tier)
        tier["up_w"] = _rounded(tier["up_w"], precision)
        rnn = []
        for j, layer in enumerate(tier["rnn"]):
            layer = dict(layer)
            layer["w_hh"] = _rounded(layer["w_hh"], precision)
            if j > 0 or k > 0:  # the top tier's first w_ih only enters the folded (float32) A
                layer["w_ih"] = _rounded(layer["w_ih"], precision)
            rnn.append(layer)
        tier["rnn"] = rnn
        out["tiers"].append(tier)
    out["mlp"] = dict(spec["mlp"])
    for name in ("hidden_w", "out_w"):
        out["mlp"][name] = _rounded(spec["mlp"][name], precision)
    return out


def pack_samplernn(spec: dict, precision: str = "fp32") -> dict:
    """Inference spec → ``M`` (matrix store), ``V`` (float32 vectors), int64 offset tables
    ``tier_off [K, 5]`` (SRNN_A..SRNN_WIH0), ``layer_off [K, n_rnn, 4]`` (SRNN_WIH..SRNN_BHH; -1
    where absent), ``mlp_off [6]`` (SRNN_TAB..SRNN_OUTB), ``tier_int [K, 3]`` (frame size,
    ratio, Q) and the sizes ``n_layers``, ``dim``, ``gates``, ``lstm``, ``skip``."""
    spec = round_spec_samplernn(spec, precision)
    dim, n_layers = int(spec["dim"]), int(spec["n_rnn"])
    lstm = spec["rnn_type"] == "lstm"
    q = int(spec["q_levels"])
    tiers = spec["tiers"]
    K = len(tiers)
    mats, vecs = Packer(), Packer()
    tier_off = np.full((K, 5), -1, np.int64)
    layer_off = np.full((K, n_layers, 4), -1, np.int64)
    tier_int = np.zeros((K, 3), np.int64)
    for k, tier in enumerate(tiers):
        tier_int[k] = (int(tier["frame_size"]), int(tier["ratio"]), q)
        rnn0 = tier["rnn"][0]
        w_ih = _f64(rnn0["w_ih"])
        tier_off[k, SRNN_A] = vecs.add(w_ih @ _f64(tier["input_w"]))
        tier_off[k, SRNN_C] = vecs.add(w_ih @ _f64(tier["input_b"]) + as_numpy(rnn0["b_ih"]))
        tier_off[k, SRNN_UPW] = mats.add(as_numpy(tier["up_w"]))
        tier_off[k, SRNN_UPB] = vecs.add(as_numpy(tier["up_b"]))
        if k > 0:
            tier_off[k, SRNN_WIH0] = mats.add(as_numpy(rnn0["w_ih"]))
        for j, layer in enumerate(tier["rnn"]):
            if j > 0:
                layer_off[k, j, SRNN_WIH] = mats.add(as_numpy(layer["w_ih"]))
                layer_off[k, j, SRNN_BIH] = vecs.add(as_numpy(layer["b_ih"]))
            layer_off[k, j, SRNN_WHH] = mats.add(as_numpy(layer["w_hh"]))
            layer_off[k, j, SRNN_BHH] = vecs.add(as_numpy(layer["b_hh"]))
    mlp = spec["mlp"]
    mlp_off = np.array([vecs.add(as_numpy(mlp["tables"])), vecs.add(as_numpy(mlp["in_b"])),
                        mats.add(as_numpy(mlp["hidden_w"])), vecs.add(as_numpy(mlp["hidden_b"])),
                        mats.add(as_numpy(mlp["out_w"])), vecs.add(as_numpy(mlp["out_b"]))], np.int64)
    return {"M": matrix_store(mats.flat(), precision), "V": vecs.flat(), "tier_off": tier_off,
            "layer_off": layer_off, "mlp_off": mlp_off, "tier_int": tier_int, "n_layers": n_layers,
            "dim": dim, "gates": 4 if lstm else 3, "lstm": lstm, "skip": bool(spec["skip"])}


def samplernn_label_projection(spec: dict, label_blend: np.ndarray) -> np.ndarray:
    """The top tier's constant label input, projected by its first w_ih: float32 [B, G*dim]
    (``(blend @ label_embedding) @ w_ih.T``, in float64)."""
    top_cond = label_blend.astype(np.float64) @ _f64(spec["label_embedding"])
    return np.ascontiguousarray((top_cond @ _f64(spec["tiers"][0]["rnn"][0]["w_ih"]).T).astype(np.float32))


def samplernn_state_layout(spec: dict, streams: int) -> dict[str, tuple[tuple, type, int | None]]:
    """name → (shape, dtype, stream axis): ``t``; ``history [B, F0]`` (the last top-frame of codes);
    ``hidden{k} [S, n_rnn, B, dim]`` per tier (S = 2 for LSTM: h then c); ``cond{k} [B, ratio, dim]``
    for k = 1..K (what tier k-1 left for the tier or MLP below); ``label_weights [B, n_labels]``."""
    B, dim, L = streams, int(spec["dim"]), int(spec["n_rnn"])
    S = 2 if spec["rnn_type"] == "lstm" else 1
    layout = {"t": ((), np.int64, None), "history": ((B, int(spec["frame_sizes"][0])), np.int64, 0)}
    for k, tier in enumerate(spec["tiers"]):
        layout[f"hidden{k}"] = ((S, L, B, dim), np.float32, 2)
    for k, tier in enumerate(spec["tiers"], start=1):
        layout[f"cond{k}"] = ((B, int(tier["ratio"]), dim), np.float32, 0)
    if spec.get("labels"):
        layout["label_weights"] = ((B, len(spec["labels"])), np.float32, 0)
    return layout


# ----- WaveNet ----------------------------------------------------------------------------------------
# Each layer's dilated convolution is one [2R, 2R] matrix over [input d steps ago | input now];
# the per-layer skip projections are fused into ONE [S, layers * R] matrix over every layer's
# gated output (and their biases summed): one long dot product per skip channel.

WN_CONV, WN_CONVB, WN_RES, WN_RESB = range(4)  # layer_off columns
WN_EMB, WN_SKIP, WN_SKIPB, WN_OUT1, WN_OUT1B, WN_OUT2, WN_OUT2B = range(7)  # head entries

WAVENET_STREAM_AXES = {"t": None, "prev": 0, "buffer": 0, "label_weights": 0}


def round_spec_wavenet(spec: dict, precision: str) -> dict:
    """The spec with every matrix the matrix store holds rounded for ``precision``."""
    if precision == "fp32":
        return spec
    out = {**spec, "layers": [{**layer, **{name: _rounded(layer[name], precision)
                                           for name in ("conv_w", "res_w", "skip_w")}}
                              for layer in spec["layers"]]}
    for name in ("out1_w", "out2_w"):
        out[name] = _rounded(spec[name], precision)
    return out


def pack_wavenet(spec: dict, precision: str = "fp32") -> dict:
    """Inference spec → ``M``, ``V``, ``layer_off [L, 4]`` (WN_CONV..WN_RESB), ``head [7]``
    (WN_EMB..WN_OUT2B), ``dil [L]``, ``ring_off [L]`` (each layer's first slot in a slot-major
    ring of ``sum(dil)`` slots) and the sizes ``R``, ``S``, ``A``, ``q``."""
    spec = round_spec_wavenet(spec, precision)
    R, S, A = int(spec["residual_channels"]), int(spec["skip_channels"]), int(spec["end_channels"])
    layers = spec["layers"]
    L = len(layers)
    mats, vecs = Packer(), Packer()
    layer_off = np.zeros((L, 4), np.int64)
    head = np.zeros(7, np.int64)
    head[WN_EMB] = vecs.add(as_numpy(spec["embed"]))
    skip_w = np.zeros((S, L * R), np.float32)
    skip_b = np.zeros(S, np.float64)
    for k, layer in enumerate(layers):
        w = as_numpy(layer["conv_w"])
        layer_off[k, WN_CONV] = mats.add(np.concatenate([w[0], w[1]], axis=1))  # [2R, 2R]: [past | current]
        layer_off[k, WN_CONVB] = vecs.add(as_numpy(layer["conv_b"]))
        layer_off[k, WN_RES] = mats.add(as_numpy(layer["res_w"]))
        layer_off[k, WN_RESB] = vecs.add(as_numpy(layer["res_b"]))
        skip_w[:, k * R:(k + 1) * R] = as_numpy(layer["skip_w"])
        skip_b += as_numpy(layer["skip_b"])
    head[WN_SKIP] = mats.add(skip_w)
    head[WN_SKIPB] = vecs.add(skip_b)
    head[WN_OUT1] = mats.add(as_numpy(spec["out1_w"]))
    head[WN_OUT1B] = vecs.add(as_numpy(spec["out1_b"]))
    head[WN_OUT2] = mats.add(as_numpy(spec["out2_w"]))
    head[WN_OUT2B] = vecs.add(as_numpy(spec["out2_b"]))
    dil = np.array([int(layer["dilation"]) for layer in layers], np.int64)
    return {"M": matrix_store(mats.flat(), precision), "V": vecs.flat(), "layer_off": layer_off, "head": head,
            "dil": dil, "ring_off": np.concatenate([[0], np.cumsum(dil)[:-1]]).astype(np.int64),
            "R": R, "S": S, "A": A, "q": int(spec["q_levels"])}


def wavenet_label_biases(spec: dict) -> np.ndarray | None:
    """Every layer's folded label biases, float32 [L, n_labels, 2R] (None unconditioned); a blend's
    bias per stream is ``einsum("bn,lnc->blc", blend, biases)`` (all linear)."""
    biases = [layer["label_bias"] for layer in spec["layers"]]
    return None if biases[0] is None else np.stack([as_numpy(b) for b in biases]).astype(np.float32)


def wavenet_state_layout(spec: dict, streams: int) -> dict[str, tuple[tuple, type, int | None]]:
    """name → (shape, dtype, stream axis): ``t``; ``prev [B]`` (the previous code); per layer
    ``buffer{k} [B, d_k, R]`` (slot ``t % d`` holds the layer input of step ``t - d``);
    ``label_weights [B, n_labels]``."""
    B, R = streams, int(spec["residual_channels"])
    layout = {"t": ((), np.int64, None), "prev": ((B,), np.int64, 0)}
    for k, layer in enumerate(spec["layers"]):
        layout[f"buffer{k}"] = ((B, int(layer["dilation"]), R), np.float32, 0)
    if spec.get("labels"):
        layout["label_weights"] = ((B, len(spec["labels"])), np.float32, 0)
    return layout


# ----- by family -----------------------------------------------------------------------------------

def round_spec(spec: dict, precision: str) -> dict:
    """The spec as an engine storing weights at ``precision`` sees it (fp32: the spec itself)."""
    if precision not in STORED_PRECISIONS:
        raise EngineError(f"precision {precision!r}: weights are stored as one of {list(STORED_PRECISIONS)}")
    return {"samplernn": round_spec_samplernn, "wavenet": round_spec_wavenet}[spec["family"]](spec, precision)


def state_layout(spec: dict, streams: int) -> dict[str, tuple[tuple, type, int | None]]:
    """The family's state_dict entries for ``streams`` streams: name → (shape, dtype, stream axis)."""
    return {"samplernn": samplernn_state_layout, "wavenet": wavenet_state_layout}[spec["family"]](spec, streams)


def check_state(state: dict, layout: dict) -> None:
    """EngineError naming the first entry of ``state`` missing or of the wrong shape for ``layout``."""
    missing = sorted(set(layout) - set(state))
    if missing:
        raise EngineError(f"engine state lacks {missing}")
    for name, (shape, _, _) in layout.items():
        got = tuple(np.shape(state[name]))
        if got != tuple(shape):
            raise EngineError(f"engine state {name} of shape {got}: expected {tuple(shape)}")


def initial_state(spec: dict, streams: int, label_blend: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The state after ``reset()`` without a prime: silence as the past codes, h0 as every RNN's
    state, zero conditioning and ring buffers, ``label_blend [B, n_labels]`` where labelled."""
    from wavegen.audio import silence_code

    silence = silence_code(int(spec["q_levels"]), spec["quantization"])
    state = {}
    for name, (shape, dtype, _) in state_layout(spec, streams).items():
        state[name] = np.zeros(shape, dtype)
    state["t"] = np.array(0, np.int64)
    if spec["family"] == "samplernn":
        state["history"][...] = silence
        for k, tier in enumerate(spec["tiers"]):
            state[f"hidden{k}"][...] = as_numpy(tier["h0"])[:, :, None, :]
    else:
        state["prev"][...] = silence
    if "label_weights" in state:
        if label_blend is None:
            raise EngineError(f"this model is conditioned on labels {spec['labels']}: choose one")
        state["label_weights"][...] = label_blend
    return state
