"""WaveNet on the CPU: every layer and the output stack for B streams in one compiled loop.

Built from ``WaveNet.inference_spec()`` alone (fast-wavenet): each layer keeps a ring buffer
of its last ``dilation`` inputs, so a sample costs O(layers), not O(receptive field). A step,
given the previous code ``c``::

    x = embed[c]; per layer: h = conv_w @ [x from d steps ago | x] + conv_b (+ label bias)
                             z = tanh(h[:R]) * sigmoid(h[R:]); x += res_w @ z + res_b
    skip = sum over layers of (skip_w @ z + skip_b); logits = out2(relu(out1(relu(skip))))

The per-layer skip projections are fused into ONE ``[S, layers * R]`` product over every
layer's ``z`` (same arithmetic up to rounding): ``layers`` short dot products of length R
become one long one per skip channel, which is what makes ``wavenet-vincent`` (R 32, S 1024)
fast. The label bias (a blend of labels is a blend of their folded biases) is computed once
per reset. State uses the reference engine's names: ``t``, ``prev [B]``, per layer
``buffer{k} [B, d, R]`` (slot ``t % d`` holds the layer input of step ``t - d``).
"""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from wavegen.kernels.numba_common import (NumbaEngine, _F0, FASTMATH, Packer, affine, announce_compile, as_numpy,
                                          check_weights, matrix_store, require_c_contiguous, round_matrix,
                                          fsigmoid, ftanh, emit_code)

# layer_off columns
_CONV, _CONVB, _RES, _RESB = range(4)
# head offsets
_EMB, _SKIP, _SKIPB, _OUT1, _OUT1B, _OUT2, _OUT2B = range(7)


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _run(M, V, layer_off, head, dil, ring_off, R, S, A, q, t0, prev, rings, label_bias,
         mode, codes_in, uniforms, temps, codes_out, logits_out, lo, hi):
    """Run n samples for streams lo..hi-1 from position t0. mode 0: teacher-force codes_in
    [B, n], logits into logits_out [B, n, Q]; mode 1: sample with uniforms [B, n] and temps
    [B] into codes_out [B, n]. prev [B] and rings [sum(dilations), B, R] (slot-major: one step
    reads one contiguous [B, R] block per layer) are updated in place."""
    B = prev.shape[0]
    L = dil.shape[0]
    n = codes_in.shape[1] if mode == 0 else uniforms.shape[1]
    x = np.zeros((B, R), np.float32)
    xc = np.zeros((B, 2 * R), np.float32)
    h = np.zeros((B, 2 * R), np.float32)
    z = np.zeros((B, R), np.float32)
    res = np.zeros((B, R), np.float32)
    zall = np.zeros((B, L * R), np.float32)
    skip = np.zeros((B, S), np.float32)
    y1 = np.zeros((B, A), np.float32)
    logits = np.zeros((B, q), np.float32)
    scratch = np.zeros(q, np.float32)
    labelled = label_bias.shape[1] > 0
    emb = head[_EMB]
    for i in range(n):
        t = t0 + i
        for b in range(lo, hi):
            e = V[emb + prev[b] * R: emb + (prev[b] + 1) * R]
            for r in range(R):
                x[b, r] = e[r]
        for layer in range(L):
            slot = ring_off[layer] + t % dil[layer]
            for b in range(lo, hi):
                past = rings[slot, b]
                for r in range(R):
                    xc[b, r] = past[r]
                    xc[b, R + r] = x[b, r]
                    past[r] = x[b, r]  # read before write: the slot held the input of step t - d
            affine(M, layer_off[layer, _CONV], V, layer_off[layer, _CONVB], 2 * R, 2 * R, xc, h, lo, hi)
            for b in range(lo, hi):
                if labelled:
                    lb = label_bias[b, layer]
                    for r in range(2 * R):
                        h[b, r] += lb[r]
                for r in range(R):
                    g = ftanh(h[b, r]) * fsigmoid(h[b, R + r])
                    z[b, r] = g
                    zall[b, layer * R + r] = g
            if layer < L - 1:  # the last layer's residual output is never read
                affine(M, layer_off[layer, _RES], V, layer_off[layer, _RESB], R, R, z, res, lo, hi)
                for b in range(lo, hi):
                    for r in range(R):
                        x[b, r] += res[b, r]
        affine(M, head[_SKIP], V, head[_SKIPB], S, L * R, zall, skip, lo, hi)
        for b in range(lo, hi):
            for s in range(S):
                skip[b, s] = max(skip[b, s], _F0)
        affine(M, head[_OUT1], V, head[_OUT1B], A, S, skip, y1, lo, hi)
        for b in range(lo, hi):
            for a in range(A):
                y1[b, a] = max(y1[b, a], _F0)
        affine(M, head[_OUT2], V, head[_OUT2B], q, A, y1, logits, lo, hi)
        for b in range(lo, hi):
            code = emit_code(mode, b, i, logits[b], codes_in, uniforms, temps, codes_out, logits_out, scratch)
            prev[b] = code


@njit(parallel=True, cache=True, error_model="numpy")
def _run_parallel(groups, M, V, layer_off, head, dil, ring_off, R, S, A, q, t0, prev, rings, label_bias,
                  mode, codes_in, uniforms, temps, codes_out, logits_out):
    """:func:`_run` with the streams split into ``groups`` contiguous groups, one per thread."""
    B = prev.shape[0]
    for g in prange(groups):
        _run(M, V, layer_off, head, dil, ring_off, R, S, A, q, t0, prev, rings, label_bias,
             mode, codes_in, uniforms, temps, codes_out, logits_out, g * B // groups, (g + 1) * B // groups)


def round_spec(spec: dict, weights: str) -> dict:
    """The spec with every matrix the kernels keep in the matrix store rounded as ``weights``
    stores it: the fp16 engine computes exactly what the fp32 engines compute on this spec."""
    if weights == "fp32":
        return spec
    out = {**spec, "layers": [{**layer, **{name: round_matrix(layer[name], weights)
                                           for name in ("conv_w", "res_w", "skip_w")}}
                              for layer in spec["layers"]]}
    for name in ("out1_w", "out2_w"):
        out[name] = round_matrix(spec[name], weights)
    return out


def pack_wavenet(spec: dict, weights: str = "fp32") -> dict:
    """Inference spec → the matrix store ``M``, the float32 vector store ``V`` and the int64
    offsets of :func:`_run`. ``weights="fp16"`` packs :func:`round_spec`'s values."""
    spec = round_spec(spec, check_weights(weights))
    R, S, A = int(spec["residual_channels"]), int(spec["skip_channels"]), int(spec["end_channels"])
    layers = spec["layers"]
    L = len(layers)
    mats, vecs = Packer(), Packer()
    layer_off = np.zeros((L, 4), np.int64)
    head = np.zeros(7, np.int64)
    head[_EMB] = vecs.add(as_numpy(spec["embed"]))
    skip_w = np.zeros((S, L * R), np.float32)
    skip_b = np.zeros(S, np.float64)
    for k, layer in enumerate(layers):
        w = as_numpy(layer["conv_w"])
        layer_off[k, _CONV] = mats.add(np.concatenate([w[0], w[1]], axis=1))  # [2R, 2R]: [past | current]
        layer_off[k, _CONVB] = vecs.add(as_numpy(layer["conv_b"]))
        layer_off[k, _RES] = mats.add(as_numpy(layer["res_w"]))
        layer_off[k, _RESB] = vecs.add(as_numpy(layer["res_b"]))
        skip_w[:, k * R:(k + 1) * R] = as_numpy(layer["skip_w"])
        skip_b += as_numpy(layer["skip_b"])
    head[_SKIP] = mats.add(skip_w)
    head[_SKIPB] = vecs.add(skip_b)
    head[_OUT1] = mats.add(as_numpy(spec["out1_w"]))
    head[_OUT1B] = vecs.add(as_numpy(spec["out1_b"]))
    head[_OUT2] = mats.add(as_numpy(spec["out2_w"]))
    head[_OUT2B] = vecs.add(as_numpy(spec["out2_b"]))
    dil = np.array([int(layer["dilation"]) for layer in layers], np.int64)
    return {"M": matrix_store(mats.flat(), weights), "V": vecs.flat(), "layer_off": layer_off, "head": head,
            "dil": dil, "ring_off": np.concatenate([[0], np.cumsum(dil)[:-1]]).astype(np.int64),
            "R": R, "S": S, "A": A, "q": int(spec["q_levels"])}


class NumbaWaveNetEngine(NumbaEngine):
    """WaveNet engine on the CPU (numba); the reference engine's contract and state names.

    ``threads``: stream groups run in parallel (default: numba's thread count). ``weights``:
    ``"fp32"`` (matches the torch engine) or ``"fp16"`` (matrices stored as IEEE half,
    arithmetic in float32; exactly the fp32 engine on ``round_spec(spec, "fp16")``).
    """

    backend = "numba"
    _stream_axes = {"t": None, "prev": 0, "buffer": 0, "label_weights": 0}

    def __init__(self, spec: dict, streams: int, device="cpu", threads: int | None = None, weights: str = "fp32"):
        super().__init__(spec, streams)
        if str(device) != "cpu":
            raise ValueError(f"the numba engine runs on the CPU, not {device!r}")
        self.threads = threads
        self.weights_format = check_weights(weights)
        self.packed = pack_wavenet(spec, weights)
        self.dilations = [int(d) for d in self.packed["dil"]]
        biases = [layer["label_bias"] for layer in spec["layers"]]
        self.label_biases = None if biases[0] is None else np.stack([as_numpy(lb) for lb in biases]).astype(np.float32)
        self.reset(label_weights=self.default_label_weights())

    def reset(self, prime_codes=None, label_weights=None) -> None:
        p = self.packed
        self.t = 0
        self.prev = np.full(self.streams, self.silence, np.int64)
        self.rings = np.zeros((int(p["dil"].sum()), self.streams, p["R"]), np.float32)  # slot-major
        self._set_labels(self.label_weights(label_weights))
        if prime_codes is not None:
            self.teacher_force(prime_codes)

    def _set_labels(self, weights: np.ndarray | None) -> None:
        self.weights = weights
        if weights is None:
            self.label_bias = np.zeros((self.streams, 0, 0), np.float32)
        else:  # [B, layers, 2R], summed in float32 like the reference's weights @ label_bias
            self.label_bias = np.ascontiguousarray(np.einsum("bn,lnc->blc", weights, self.label_biases),
                                                   dtype=np.float32)

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"t": np.array(self.t, dtype=np.int64), "prev": self.prev.copy()}
        off = self.packed["ring_off"]
        for k, d in enumerate(self.dilations):
            state[f"buffer{k}"] = np.array(self.rings[off[k]:off[k] + d].transpose(1, 0, 2), order="C")  # a copy
        if self.weights is not None:
            state["label_weights"] = self.weights.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        R, off = self.packed["R"], self.packed["ring_off"]
        for k, d in enumerate(self.dilations):
            shape = tuple(np.shape(state[f"buffer{k}"]))
            if shape != (self.streams, d, R):
                raise ValueError(f"engine state buffer{k} of shape {shape}: expected {(self.streams, d, R)}")
        self.t = int(state["t"])
        self.prev = np.array(state["prev"], dtype=np.int64).reshape(self.streams)
        for k, d in enumerate(self.dilations):
            self.rings[off[k]:off[k] + d] = np.asarray(state[f"buffer{k}"], np.float32).transpose(1, 0, 2)
        if "label_weights" in state:
            self._set_labels(np.ascontiguousarray(np.asarray(state["label_weights"], np.float32)))

    def _call(self, mode, codes_in, uniforms, temps, codes_out, logits_out) -> None:
        p = self.packed
        args = (p["M"], p["V"], p["layer_off"], p["head"], p["dil"], p["ring_off"], p["R"], p["S"], p["A"], p["q"],
                self.t, self.prev, self.rings, self.label_bias, mode, codes_in, uniforms, temps,
                codes_out, logits_out)
        require_c_contiguous(args)
        threads = self.threads if self.threads is not None else get_num_threads()
        groups = max(1, min(self.streams, threads))
        if groups == 1:
            announce_compile("wavenet", _run)
            _run(*args, 0, self.streams)
        else:
            announce_compile("wavenet-parallel", _run_parallel, _run)
            _run_parallel(groups, *args)
        self.t += codes_in.shape[1] if mode == 0 else uniforms.shape[1]

