"""WaveNet on the CPU: every layer and the output stack for B streams in one compiled loop.

Built from ``WaveNet.inference_spec()`` alone (fast-wavenet): each layer keeps a ring buffer
of its last ``dilation`` inputs, so a sample costs O(layers), not O(receptive field). A step,
given the previous code ``c``::

    x = embed[c]; per layer: h = conv_w @ [x from d steps ago | x] + conv_b (+ label bias)
                             z = tanh(h[:R]) * sigmoid(h[R:]); x += res_w @ z + res_b
    skip = sum over layers of (skip_w @ z + skip_b); logits = out2(relu(out1(relu(skip))))

Weights are packed by :func:`wavegen.kernels.packing.pack_wavenet`: the per-layer skip
projections are fused into ONE ``[S, layers * R]`` product over every layer's ``z`` (same
arithmetic up to rounding): ``layers`` short dot products of length R become one long one
per skip channel, which is what makes ``wavenet-vincent`` (R 32, S 1024) fast. The label
bias (a blend of labels is a blend of their folded biases) is computed once per reset.
State uses the reference engine's names: ``t``, ``prev [B]``, per layer ``buffer{k} [B, d,
R]`` (slot ``t % d`` holds the layer input of step ``t - d``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from wavegen.kernels.numba_common import (_F0, FASTMATH, TEACHER_FORCE, NumbaEngine, affine, emit_code, fsigmoid,
                                          ftanh)
from wavegen.kernels.packing import (WAVENET_STREAM_AXES, WN_CONV, WN_CONVB, WN_EMB, WN_OUT1, WN_OUT1B, WN_OUT2,
                                     WN_OUT2B, WN_RES, WN_RESB, WN_SKIP, WN_SKIPB, check_state, pack_wavenet,
                                     wavenet_label_biases, wavenet_state_layout)


# nogil: a server or trainer thread (wavegen serve, training samples) runs while the engine works
@njit(fastmath=FASTMATH, cache=True, error_model="numpy", nogil=True)
def _run(M, V, layer_off, head, dil, ring_off, R, S, A, q, t0, prev, rings, label_bias,
         mode, codes_in, uniforms, temps, codes_out, logits_out, lo, hi):
    """Run n samples for streams lo..hi-1 from position t0. mode TEACHER_FORCE: codes_in [B, n]
    given, logits into logits_out [B, n, Q]; mode SAMPLE: uniforms [B, n] and temps [B], codes
    into codes_out [B, n]. prev [B] and rings [sum(dilations), B, R] (slot-major: one step
    reads one contiguous [B, R] block per layer) are updated in place."""
    B = prev.shape[0]
    L = dil.shape[0]
    n = codes_in.shape[1] if mode == TEACHER_FORCE else uniforms.shape[1]
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
    emb = head[WN_EMB]
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
            affine(M, layer_off[layer, WN_CONV], V, layer_off[layer, WN_CONVB], 2 * R, 2 * R, xc, h, lo, hi)
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
                affine(M, layer_off[layer, WN_RES], V, layer_off[layer, WN_RESB], R, R, z, res, lo, hi)
                for b in range(lo, hi):
                    for r in range(R):
                        x[b, r] += res[b, r]
        affine(M, head[WN_SKIP], V, head[WN_SKIPB], S, L * R, zall, skip, lo, hi)
        for b in range(lo, hi):
            for s in range(S):
                skip[b, s] = max(skip[b, s], _F0)
        affine(M, head[WN_OUT1], V, head[WN_OUT1B], A, S, skip, y1, lo, hi)
        for b in range(lo, hi):
            for a in range(A):
                y1[b, a] = max(y1[b, a], _F0)
        affine(M, head[WN_OUT2], V, head[WN_OUT2B], q, A, y1, logits, lo, hi)
        for b in range(lo, hi):
            code = emit_code(mode, b, i, logits[b], codes_in, uniforms, temps, codes_out, logits_out, scratch)
            prev[b] = code


@njit(parallel=True, cache=True, error_model="numpy", nogil=True)
def _run_parallel(groups, M, V, layer_off, head, dil, ring_off, R, S, A, q, t0, prev, rings, label_bias,
                  mode, codes_in, uniforms, temps, codes_out, logits_out):
    """:func:`_run` with the streams split into ``groups`` contiguous groups, one per thread."""
    B = prev.shape[0]
    for g in prange(groups):
        _run(M, V, layer_off, head, dil, ring_off, R, S, A, q, t0, prev, rings, label_bias,
             mode, codes_in, uniforms, temps, codes_out, logits_out, g * B // groups, (g + 1) * B // groups)


class NumbaWaveNetEngine(NumbaEngine):
    """WaveNet engine on the CPU (numba); the reference engine's contract and state names.
    Options as :class:`NumbaEngine` (precision, threads)."""

    _stream_axes = WAVENET_STREAM_AXES
    _kernels = (_run, _run_parallel)

    def _pack(self, spec: dict, precision: str) -> dict:
        return pack_wavenet(spec, precision)

    def _build(self, spec: dict) -> None:
        self.dilations = [int(d) for d in self.packed["dil"]]
        self.label_biases = wavenet_label_biases(spec)

    def reset(self, prime_codes=None, label_weights=None) -> None:
        p = self.packed
        blend = self.check_label_weights(label_weights)
        self.t = 0
        self.prev = np.full(self.streams, self.silence, np.int64)
        self.rings = np.zeros((int(p["dil"].sum()), self.streams, p["R"]), np.float32)  # slot-major
        self._set_label_blend(blend)
        if prime_codes is not None:
            self.teacher_force(prime_codes)

    def _set_label_blend(self, blend: np.ndarray | None) -> None:
        self.label_blend = blend
        if blend is None:
            self.label_bias = np.zeros((self.streams, 0, 0), np.float32)
        else:  # [B, layers, 2R], summed in float32 like the reference's blend @ label_bias
            self.label_bias = np.ascontiguousarray(np.einsum("bn,lnc->blc", blend, self.label_biases),
                                                   dtype=np.float32)

    def _live_state(self) -> dict:
        live = {"prev": (self.prev, 0), "rings": (self.rings, 1)}
        if self.label_blend is not None:
            live["label_weights"] = (self.label_blend, 0)
            live["label_bias"] = (self.label_bias, 0)
        return live

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"t": np.array(self.t, dtype=np.int64), "prev": self.prev.copy()}
        off = self.packed["ring_off"]
        for k, d in enumerate(self.dilations):
            state[f"buffer{k}"] = np.array(self.rings[off[k]:off[k] + d].transpose(1, 0, 2), order="C")  # a copy
        if self.label_blend is not None:
            state["label_weights"] = self.label_blend.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        check_state(state, wavenet_state_layout(self.spec, self.streams))
        off = self.packed["ring_off"]
        self.t = int(state["t"])
        self.prev = np.array(state["prev"], dtype=np.int64).reshape(self.streams)
        for k, d in enumerate(self.dilations):
            self.rings[off[k]:off[k] + d] = np.asarray(state[f"buffer{k}"], np.float32).transpose(1, 0, 2)
        if "label_weights" in state:
            self._set_label_blend(np.array(state["label_weights"], np.float32, order="C"))

    def _weight_args(self) -> tuple:
        p = self.packed
        return (p["M"], p["V"], p["layer_off"], p["head"], p["dil"], p["ring_off"], p["R"], p["S"], p["A"], p["q"])

    def _state_args(self) -> tuple:
        return (self.prev, self.rings, self.label_bias)
