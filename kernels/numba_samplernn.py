"""SampleRNN on the CPU: every tier and the sample MLP for B streams in one compiled loop.

Built from ``SampleRNN.inference_spec()`` alone; the step order is the reference engine's
(:class:`wavegen.torch_engines.TorchSampleRNNEngine`): at position ``t`` every tier with
``t % F_k == 0`` advances, top to bottom, then the MLP predicts the sample at ``t``.

The weights are packed by :func:`wavegen.kernels.packing.pack_samplernn` (its comment gives
the algebra folded at build time: MLP tables, the frame projection folded into the first RNN
layer). What the kernels add:

- ``w_ih @ cond`` is hoisted out of the recurrent step: when a tier emits the conditioning
  vectors for the ``ratio`` frames of the tier below, their input projections are computed
  right away, as one matrix product over ``ratio x B`` columns, so ``w_ih`` is read once per
  upper-tier step instead of once per lower-tier step. For the top tier the label
  conditioning is constant and its projection is computed once at reset.
- Stream groups (``numba.get_num_threads()`` of them, at most one per stream) run the whole
  sample loop in parallel with no synchronisation: streams are independent.

Engine state uses the reference engine's names and shapes (``t``, ``history``,
``hidden{k}``, ``cond{k}``, ``label_weights``), so a state can move between backends.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from wavegen.kernels.numba_common import (_F0, _F1, FASTMATH, TEACHER_FORCE, NumbaEngine, affine, emit_code,
                                          fsigmoid, ftanh, rescale)
from wavegen.kernels.packing import (SAMPLERNN_STREAM_AXES, SRNN_A, SRNN_BHH, SRNN_BIH, SRNN_C, SRNN_HIDB,
                                     SRNN_HIDW, SRNN_INB, SRNN_OUTB, SRNN_OUTW, SRNN_TAB, SRNN_UPB, SRNN_UPW,
                                     SRNN_WHH, SRNN_WIH, SRNN_WIH0, as_numpy, check_state, pack_samplernn,
                                     samplernn_label_projection, samplernn_state_layout)


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _tier_step(k, t, M, V, tier_off, layer_off, tier_int, n_layers, dim, gates, lstm, skip, n_tiers,
               history, hidden, condbuf, cond_off, pbuf, p_off, label_proj, frame, gi, gh, xin, ysum,
               lo, hi):
    """Advance tier k at position t for streams lo..hi-1 and emit its conditioning for the tier
    (or MLP) below: ``cond`` [B, ratio, dim] and, for a tier below, its hoisted projections."""
    B = history.shape[0]
    top = history.shape[1]
    fs = tier_int[k, 0]
    ratio = tier_int[k, 1]
    gd = gates * dim
    q = tier_int[0, 2]
    for b in range(lo, hi):
        for p in range(fs):
            frame[b, p] = rescale(history[b, top - fs + p], q)
    affine(V, tier_off[k, SRNN_A], V, tier_off[k, SRNN_C], gd, fs, frame, gi, lo, hi)  # small: kept float32
    if k == 0:
        if label_proj.shape[1] > 0:
            for b in range(lo, hi):
                for g in range(gd):
                    gi[b, g] += label_proj[b, g]
    else:
        r_up = tier_int[k - 1, 1]
        j = (t % tier_int[k - 1, 0]) // fs
        proj = pbuf[p_off[k]: p_off[k] + B * r_up * gd].reshape(B * r_up, gd)
        for b in range(lo, hi):
            row = proj[b * r_up + j]
            for g in range(gd):
                gi[b, g] += row[g]
    for b in range(lo, hi):
        for d in range(dim):
            ysum[b, d] = 0.0
    for layer in range(n_layers):
        if layer > 0:
            affine(M, layer_off[k, layer, SRNN_WIH], V, layer_off[k, layer, SRNN_BIH], gd, dim, xin, gi, lo, hi)
        h = hidden[k, 0, layer]
        affine(M, layer_off[k, layer, SRNN_WHH], V, layer_off[k, layer, SRNN_BHH], gd, dim, h, gh, lo, hi)
        if lstm:
            c = hidden[k, 1, layer]
            for b in range(lo, hi):
                for d in range(dim):
                    ig = fsigmoid(gi[b, d] + gh[b, d])
                    fg = fsigmoid(gi[b, dim + d] + gh[b, dim + d])
                    gg = ftanh(gi[b, 2 * dim + d] + gh[b, 2 * dim + d])
                    og = fsigmoid(gi[b, 3 * dim + d] + gh[b, 3 * dim + d])
                    cn = fg * c[b, d] + ig * gg
                    c[b, d] = cn
                    h[b, d] = og * ftanh(cn)
        else:
            for b in range(lo, hi):
                for d in range(dim):
                    r = fsigmoid(gi[b, d] + gh[b, d])
                    z = fsigmoid(gi[b, dim + d] + gh[b, dim + d])
                    n = ftanh(gi[b, 2 * dim + d] + r * gh[b, 2 * dim + d])
                    h[b, d] = (_F1 - z) * n + z * h[b, d]
        for b in range(lo, hi):
            for d in range(dim):
                xin[b, d] = h[b, d]
                ysum[b, d] += h[b, d]
    y = ysum if skip else xin
    cond = condbuf[cond_off[k]: cond_off[k] + B * ratio * dim]
    affine(M, tier_off[k, SRNN_UPW], V, tier_off[k, SRNN_UPB], ratio * dim, dim, y, cond.reshape(B, ratio * dim), lo, hi)
    if k + 1 < n_tiers:
        gd_next = gd
        proj = pbuf[p_off[k + 1]: p_off[k + 1] + B * ratio * gd_next].reshape(B * ratio, gd_next)
        affine(M, tier_off[k + 1, SRNN_WIH0], V, -1, gd_next, dim, cond.reshape(B * ratio, dim), proj,
               lo * ratio, hi * ratio)


# nogil: a server or trainer thread (wavegen serve, training samples) runs while the engine works
@njit(fastmath=FASTMATH, cache=True, error_model="numpy", nogil=True)
def _run(M, V, tier_off, layer_off, mlp_off, tier_int, n_layers, dim, gates, lstm, skip,
         t0, history, hidden, condbuf, cond_off, pbuf, p_off, label_proj,
         mode, codes_in, uniforms, temps, codes_out, logits_out, lo, hi):
    """Run n samples for streams lo..hi-1 from position t0. mode TEACHER_FORCE: codes_in [B, n]
    given, logits into logits_out [B, n, Q]; mode SAMPLE: uniforms [B, n] and temps [B], codes
    into codes_out [B, n]. State arrays are updated in place."""
    B = history.shape[0]
    top = history.shape[1]
    n_tiers = tier_int.shape[0]
    q = tier_int[0, 2]
    gd = gates * dim
    n = codes_in.shape[1] if mode == TEACHER_FORCE else uniforms.shape[1]
    window = tier_int[n_tiers - 1, 0]
    fmax = 0
    for k in range(n_tiers):
        fmax = max(fmax, tier_int[k, 0])
    frame = np.zeros((B, fmax), np.float32)
    gi = np.zeros((B, gd), np.float32)
    gh = np.zeros((B, gd), np.float32)
    xin = np.zeros((B, dim), np.float32)
    ysum = np.zeros((B, dim), np.float32)
    x1 = np.zeros((B, dim), np.float32)
    x2 = np.zeros((B, dim), np.float32)
    logits = np.zeros((B, q), np.float32)
    scratch = np.zeros(q, np.float32)
    last = n_tiers - 1
    mlp_cond = condbuf[cond_off[last]: cond_off[last] + B * window * dim].reshape(B * window, dim)
    tables = mlp_off[SRNN_TAB]
    in_b = V[mlp_off[SRNN_INB]: mlp_off[SRNN_INB] + dim]
    for i in range(n):
        t = t0 + i
        for k in range(n_tiers):
            if t % tier_int[k, 0] == 0:
                _tier_step(k, t, M, V, tier_off, layer_off, tier_int, n_layers, dim, gates, lstm, skip,
                           n_tiers, history, hidden, condbuf, cond_off, pbuf, p_off, label_proj,
                           frame, gi, gh, xin, ysum, lo, hi)
        j = t % window
        for b in range(lo, hi):
            c = mlp_cond[b * window + j]
            for d in range(dim):
                x1[b, d] = in_b[d] + c[d]
            for p in range(window):
                base = tables + (p * q + history[b, top - window + p]) * dim
                row = V[base: base + dim]
                for d in range(dim):
                    x1[b, d] += row[d]
            for d in range(dim):
                x1[b, d] = max(x1[b, d], _F0)
        affine(M, mlp_off[SRNN_HIDW], V, mlp_off[SRNN_HIDB], dim, dim, x1, x2, lo, hi)
        for b in range(lo, hi):
            for d in range(dim):
                x2[b, d] = max(x2[b, d], _F0)
        affine(M, mlp_off[SRNN_OUTW], V, mlp_off[SRNN_OUTB], q, dim, x2, logits, lo, hi)
        for b in range(lo, hi):
            code = emit_code(mode, b, i, logits[b], codes_in, uniforms, temps, codes_out, logits_out, scratch)
            for p in range(top - 1):
                history[b, p] = history[b, p + 1]
            history[b, top - 1] = code


@njit(parallel=True, cache=True, error_model="numpy", nogil=True)
def _run_parallel(groups, M, V, tier_off, layer_off, mlp_off, tier_int, n_layers, dim, gates, lstm, skip,
                  t0, history, hidden, condbuf, cond_off, pbuf, p_off, label_proj,
                  mode, codes_in, uniforms, temps, codes_out, logits_out):
    """:func:`_run` with the streams split into ``groups`` contiguous groups, one per thread."""
    B = history.shape[0]
    for g in prange(groups):
        _run(M, V, tier_off, layer_off, mlp_off, tier_int, n_layers, dim, gates, lstm, skip,
             t0, history, hidden, condbuf, cond_off, pbuf, p_off, label_proj,
             mode, codes_in, uniforms, temps, codes_out, logits_out, g * B // groups, (g + 1) * B // groups)


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _hoist(B, groups, M, V, tier_off, tier_int, dim, gates, condbuf, cond_off, pbuf, p_off):
    """Recompute every hoisted projection from the stored cond (after load_state_dict) with the
    sample loop's arithmetic and stream groups, so a restored engine continues bit for bit."""
    n_tiers = tier_int.shape[0]
    gd = gates * dim
    for k in range(n_tiers - 1):
        ratio = tier_int[k, 1]
        cond = condbuf[cond_off[k]: cond_off[k] + B * ratio * dim].reshape(B * ratio, dim)
        proj = pbuf[p_off[k + 1]: p_off[k + 1] + B * ratio * gd].reshape(B * ratio, gd)
        for g in range(groups):
            lo, hi = g * B // groups, (g + 1) * B // groups
            affine(M, tier_off[k + 1, SRNN_WIH0], V, -1, gd, dim, cond, proj, lo * ratio, hi * ratio)


class NumbaSampleRNNEngine(NumbaEngine):
    """SampleRNN engine on the CPU (numba); the reference engine's contract and state names.
    Options as :class:`NumbaEngine` (precision, threads)."""

    _stream_axes = SAMPLERNN_STREAM_AXES
    _kernels = (_run, _run_parallel)

    def _pack(self, spec: dict, precision: str) -> dict:
        return pack_samplernn(spec, precision)

    def _build(self, spec: dict) -> None:
        p, B = self.packed, self.streams
        self.frame_sizes = [int(t["frame_size"]) for t in spec["tiers"]]
        self.ratios = [int(t["ratio"]) for t in spec["tiers"]]
        self.h0 = np.stack([as_numpy(t["h0"]).astype(np.float32) for t in spec["tiers"]])  # [K, S, L, dim]
        dim, gd = p["dim"], p["gates"] * p["dim"]
        # flat per-tier buffers: tier k's cond output [B, ratio_k, dim]; tier k's hoisted input
        # projections [B, ratio_{k-1}, G*dim] (k >= 1)
        self.cond_off = np.cumsum([0] + [B * r * dim for r in self.ratios]).astype(np.int64)
        self.p_off = np.zeros(len(self.ratios), np.int64)
        size = 0
        for k in range(1, len(self.ratios)):
            self.p_off[k] = size
            size += B * self.ratios[k - 1] * gd
        self.pbuf = np.zeros(max(size, 1), np.float32)

    def reset(self, prime_codes=None, label_weights=None) -> None:
        B = self.streams
        blend = self.check_label_weights(label_weights)
        self.t = 0
        self.history = np.full((B, self.frame_sizes[0]), self.silence, dtype=np.int64)
        self.hidden = np.array(np.broadcast_to(  # a writable copy: [K, S, L, B, dim]
            self.h0[:, :, :, None, :], self.h0.shape[:3] + (B, self.h0.shape[3])), dtype=np.float32, order="C")
        self.condbuf = np.zeros(int(self.cond_off[-1]), np.float32)
        self.pbuf[:] = 0.0
        self._set_label_blend(blend)
        if prime_codes is not None:
            self.teacher_force(prime_codes)

    def _set_label_blend(self, blend: np.ndarray | None) -> None:
        self.label_blend = blend
        self.label_proj = np.zeros((self.streams, 0), np.float32) if blend is None else \
            samplernn_label_projection(self.spec, blend)

    def _cond(self, k: int) -> np.ndarray:
        """Tier k's conditioning output, as the reference's cond{k+1}: a view [B, ratio_k, dim]."""
        lo, hi = self.cond_off[k], self.cond_off[k + 1]
        return self.condbuf[lo:hi].reshape(self.streams, self.ratios[k], self.packed["dim"])

    def _proj(self, k: int) -> np.ndarray:
        """Tier k's (k >= 1) hoisted input projections: a view [B, ratio_{k-1}, G*dim]."""
        gd = self.packed["gates"] * self.packed["dim"]
        n = self.streams * self.ratios[k - 1] * gd
        return self.pbuf[self.p_off[k]: self.p_off[k] + n].reshape(self.streams, self.ratios[k - 1], gd)

    def _live_state(self) -> dict:
        live = {"history": (self.history, 0), "hidden": (self.hidden, 3)}
        for k in range(len(self.frame_sizes)):
            live[f"cond{k + 1}"] = (self._cond(k), 0)
            if k > 0:
                live[f"proj{k}"] = (self._proj(k), 0)
        if self.label_blend is not None:
            live["label_weights"] = (self.label_blend, 0)
            live["label_proj"] = (self.label_proj, 0)
        return live

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"t": np.array(self.t, dtype=np.int64), "history": self.history.copy()}
        for k in range(len(self.frame_sizes)):
            state[f"hidden{k}"] = self.hidden[k].copy()
            state[f"cond{k + 1}"] = self._cond(k).copy()
        if self.label_blend is not None:
            state["label_weights"] = self.label_blend.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        check_state(state, samplernn_state_layout(self.spec, self.streams))
        K = len(self.frame_sizes)
        self.t = int(state["t"])
        self.history = np.array(state["history"], dtype=np.int64, order="C")
        self.hidden = np.array(np.stack([np.asarray(state[f"hidden{k}"], np.float32) for k in range(K)]), order="C")
        for k in range(K):
            self._cond(k)[...] = np.asarray(state[f"cond{k + 1}"], np.float32)
        if "label_weights" in state:
            self._set_label_blend(np.array(state["label_weights"], np.float32, order="C"))
        p = self.packed
        _hoist(self.streams, self._groups(), p["M"], p["V"], p["tier_off"], p["tier_int"], p["dim"], p["gates"],
               self.condbuf, self.cond_off, self.pbuf, self.p_off)

    def _weight_args(self) -> tuple:
        p = self.packed
        return (p["M"], p["V"], p["tier_off"], p["layer_off"], p["mlp_off"], p["tier_int"], p["n_layers"], p["dim"],
                p["gates"], p["lstm"], p["skip"])

    def _state_args(self) -> tuple:
        return (self.history, self.hidden, self.condbuf, self.cond_off, self.pbuf, self.p_off, self.label_proj)
