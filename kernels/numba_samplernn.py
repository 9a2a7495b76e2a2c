"""SampleRNN on the CPU: every tier and the sample MLP for B streams in one compiled loop.

Built from ``SampleRNN.inference_spec()`` alone; the step order is the reference engine's
(:class:`wavegen.generate.TorchSampleRNNEngine`): at position ``t`` every tier with
``t % F_k == 0`` advances, top to bottom, then the MLP predicts the sample at ``t``.

The algebra that makes it fast (all folds are done once, in float64, at build time):

- The first MLP layer is the spec's per-position tables ``[window, Q, dim]``: a gather.
- A tier's frame input projection folds into its first RNN layer:
  ``w_ih @ (input_w @ frame + input_b + cond) + b_ih = A @ frame + c + w_ih @ cond`` with
  ``A = w_ih @ input_w`` (``[G*dim, F]``, tiny) and ``c = w_ih @ input_b + b_ih``.
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
from numba import get_num_threads, njit, prange

from wavegen.kernels.numba_common import (NumbaEngine, _F0, _F1, FASTMATH, Packer, affine, announce_compile, as_numpy,
                                          check_weights, matrix_store, require_c_contiguous, round_matrix,
                                          fsigmoid, ftanh, rescale, emit_code)

# tier_off columns
_A, _C, _UPW, _UPB, _WIH0 = range(5)
# layer_off columns
_WIH, _BIH, _WHH, _BHH = range(4)
# mlp_off columns
_TAB, _INB, _HIDW, _HIDB, _OUTW, _OUTB = range(6)


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
    affine(V, tier_off[k, _A], V, tier_off[k, _C], gd, fs, frame, gi, lo, hi)  # small: kept float32
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
            affine(M, layer_off[k, layer, _WIH], V, layer_off[k, layer, _BIH], gd, dim, xin, gi, lo, hi)
        h = hidden[k, 0, layer]
        affine(M, layer_off[k, layer, _WHH], V, layer_off[k, layer, _BHH], gd, dim, h, gh, lo, hi)
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
    affine(M, tier_off[k, _UPW], V, tier_off[k, _UPB], ratio * dim, dim, y, cond.reshape(B, ratio * dim), lo, hi)
    if k + 1 < n_tiers:
        gd_next = gd
        proj = pbuf[p_off[k + 1]: p_off[k + 1] + B * ratio * gd_next].reshape(B * ratio, gd_next)
        affine(M, tier_off[k + 1, _WIH0], V, -1, gd_next, dim, cond.reshape(B * ratio, dim), proj,
               lo * ratio, hi * ratio)


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _run(M, V, tier_off, layer_off, mlp_off, tier_int, n_layers, dim, gates, lstm, skip,
         t0, history, hidden, condbuf, cond_off, pbuf, p_off, label_proj,
         mode, codes_in, uniforms, temps, codes_out, logits_out, lo, hi):
    """Run n samples for streams lo..hi-1 from position t0. mode 0: teacher-force codes_in
    [B, n] and write logits_out [B, n, Q]; mode 1: sample with uniforms [B, n] and temps [B]
    into codes_out [B, n]. State arrays are updated in place."""
    B = history.shape[0]
    top = history.shape[1]
    n_tiers = tier_int.shape[0]
    q = tier_int[0, 2]
    gd = gates * dim
    n = codes_in.shape[1] if mode == 0 else uniforms.shape[1]
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
    tables = mlp_off[_TAB]
    in_b = V[mlp_off[_INB]: mlp_off[_INB] + dim]
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
        affine(M, mlp_off[_HIDW], V, mlp_off[_HIDB], dim, dim, x1, x2, lo, hi)
        for b in range(lo, hi):
            for d in range(dim):
                x2[b, d] = max(x2[b, d], _F0)
        affine(M, mlp_off[_OUTW], V, mlp_off[_OUTB], q, dim, x2, logits, lo, hi)
        for b in range(lo, hi):
            code = emit_code(mode, b, i, logits[b], codes_in, uniforms, temps, codes_out, logits_out, scratch)
            for p in range(top - 1):
                history[b, p] = history[b, p + 1]
            history[b, top - 1] = code


@njit(parallel=True, cache=True, error_model="numpy")
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
            affine(M, tier_off[k + 1, _WIH0], V, -1, gd, dim, cond, proj, lo * ratio, hi * ratio)


def round_spec(spec: dict, weights: str) -> dict:
    """The spec with every matrix the kernels keep in the matrix store rounded as ``weights``
    stores it: the fp16 engine computes exactly what the fp32 engines compute on this spec."""
    if weights == "fp32":
        return spec
    out = dict(spec)
    out["tiers"] = []
    for k, tier in enumerate(spec["tiers"]):
        tier = dict(tier)
        tier["up_w"] = round_matrix(tier["up_w"], weights)
        rnn = []
        for j, layer in enumerate(tier["rnn"]):
            layer = dict(layer)
            layer["w_hh"] = round_matrix(layer["w_hh"], weights)
            if j > 0 or k > 0:  # the top tier's first w_ih only enters the folded (float32) A
                layer["w_ih"] = round_matrix(layer["w_ih"], weights)
            rnn.append(layer)
        tier["rnn"] = rnn
        out["tiers"].append(tier)
    out["mlp"] = dict(spec["mlp"])
    for name in ("hidden_w", "out_w"):
        out["mlp"][name] = round_matrix(spec["mlp"][name], weights)
    return out


def pack_samplernn(spec: dict, weights: str = "fp32") -> dict:
    """Inference spec → the matrix store ``M``, the float32 vector store ``V`` and the int64
    offset tables of :func:`_run`. ``weights="fp16"`` packs :func:`round_spec`'s values."""
    spec = round_spec(spec, check_weights(weights))
    dim, n_layers = int(spec["dim"]), int(spec["n_rnn"])
    lstm = spec["rnn_type"] == "lstm"
    gates = 4 if lstm else 3
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
        w_ih = as_numpy(rnn0["w_ih"]).astype(np.float64)
        tier_off[k, _A] = vecs.add(w_ih @ as_numpy(tier["input_w"]).astype(np.float64))
        tier_off[k, _C] = vecs.add(w_ih @ as_numpy(tier["input_b"]).astype(np.float64) + as_numpy(rnn0["b_ih"]))
        tier_off[k, _UPW] = mats.add(as_numpy(tier["up_w"]))
        tier_off[k, _UPB] = vecs.add(as_numpy(tier["up_b"]))
        if k > 0:
            tier_off[k, _WIH0] = mats.add(as_numpy(rnn0["w_ih"]))
        for j, layer in enumerate(tier["rnn"]):
            if j > 0:
                layer_off[k, j, _WIH] = mats.add(as_numpy(layer["w_ih"]))
                layer_off[k, j, _BIH] = vecs.add(as_numpy(layer["b_ih"]))
            layer_off[k, j, _WHH] = mats.add(as_numpy(layer["w_hh"]))
            layer_off[k, j, _BHH] = vecs.add(as_numpy(layer["b_hh"]))
    mlp = spec["mlp"]
    mlp_off = np.array([vecs.add(as_numpy(mlp["tables"])), vecs.add(as_numpy(mlp["in_b"])),
                        mats.add(as_numpy(mlp["hidden_w"])), vecs.add(as_numpy(mlp["hidden_b"])),
                        mats.add(as_numpy(mlp["out_w"])), vecs.add(as_numpy(mlp["out_b"]))], np.int64)
    return {"M": matrix_store(mats.flat(), weights), "V": vecs.flat(), "tier_off": tier_off,
            "layer_off": layer_off, "mlp_off": mlp_off, "tier_int": tier_int, "n_layers": n_layers,
            "dim": dim, "gates": gates, "lstm": lstm, "skip": bool(spec["skip"])}


class NumbaSampleRNNEngine(NumbaEngine):
    """SampleRNN engine on the CPU (numba); the reference engine's contract and state names.

    ``threads``: stream groups run in parallel (default: numba's thread count). ``weights``:
    ``"fp32"`` (matches the torch engine) or ``"fp16"`` (the big matrices stored as IEEE half,
    arithmetic in float32: half the bytes a memory-bound step reads; exactly the fp32 engine on
    ``round_spec(spec, "fp16")``).
    """

    backend = "numba"
    _stream_axes = {"t": None, "history": 0, "hidden": 2, "cond": 0, "label_weights": 0}

    def __init__(self, spec: dict, streams: int, device="cpu", threads: int | None = None, weights: str = "fp32"):
        super().__init__(spec, streams)
        if str(device) != "cpu":
            raise ValueError(f"the numba engine runs on the CPU, not {device!r}")
        self.threads = threads
        self.weights_format = check_weights(weights)
        self.packed = pack_samplernn(spec, weights)
        p = self.packed
        self.frame_sizes = [int(t["frame_size"]) for t in spec["tiers"]]
        self.ratios = [int(t["ratio"]) for t in spec["tiers"]]
        self.h0 = np.stack([as_numpy(t["h0"]).astype(np.float32) for t in spec["tiers"]])  # [K, S, L, dim]
        emb = spec.get("label_embedding")
        self.label_embedding = None if emb is None else as_numpy(emb).astype(np.float32)
        self.w_ih_top = as_numpy(spec["tiers"][0]["rnn"][0]["w_ih"]).astype(np.float32)
        B, dim, gd = streams, p["dim"], p["gates"] * p["dim"]
        # flat per-tier state buffers: cond of tier k's output [B, ratio_k, dim], projections for tier k
        self.cond_off = np.cumsum([0] + [B * r * dim for r in self.ratios]).astype(np.int64)
        self.p_off = np.zeros(len(self.ratios), np.int64)
        size = 0
        for k in range(1, len(self.ratios)):
            self.p_off[k] = size
            size += B * self.ratios[k - 1] * gd
        self.pbuf = np.zeros(max(size, 1), np.float32)
        self.reset(label_weights=self.default_label_weights())

    # ----- state --------------------------------------------------------------------------
    def reset(self, prime_codes=None, label_weights=None) -> None:
        B = self.streams
        self.t = 0
        self.history = np.full((B, self.frame_sizes[0]), self.silence, dtype=np.int64)
        self.hidden = np.array(np.broadcast_to(  # a writable copy: [K, S, L, B, dim]
            self.h0[:, :, :, None, :], self.h0.shape[:3] + (B, self.h0.shape[3])), dtype=np.float32, order="C")
        self.condbuf = np.zeros(int(self.cond_off[-1]), np.float32)
        self.pbuf[:] = 0.0
        self._set_labels(self.label_weights(label_weights))
        if prime_codes is not None:
            self.teacher_force(prime_codes)

    def _set_labels(self, weights: np.ndarray | None) -> None:
        self.weights = weights
        if weights is None:
            self.label_proj = np.zeros((self.streams, 0), np.float32)
        else:
            top_cond = (weights.astype(np.float64) @ self.label_embedding.astype(np.float64))
            self.label_proj = np.ascontiguousarray((top_cond @ self.w_ih_top.T.astype(np.float64)).astype(np.float32))

    def _cond(self, k: int) -> np.ndarray:
        """Tier k's conditioning output, as the reference's cond{k+1}: a view [B, ratio_k, dim]."""
        lo, hi = self.cond_off[k], self.cond_off[k + 1]
        return self.condbuf[lo:hi].reshape(self.streams, self.ratios[k], self.packed["dim"])

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"t": np.array(self.t, dtype=np.int64), "history": self.history.copy()}
        for k in range(len(self.frame_sizes)):
            state[f"hidden{k}"] = self.hidden[k].copy()
            state[f"cond{k + 1}"] = self._cond(k).copy()
        if self.weights is not None:
            state["label_weights"] = self.weights.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        K = len(self.frame_sizes)
        self.t = int(state["t"])
        self.history = np.array(state["history"], dtype=np.int64, order="C")
        self.hidden = np.array(np.stack([np.asarray(state[f"hidden{k}"], np.float32) for k in range(K)]), order="C")
        for k in range(K):
            self._cond(k)[...] = np.asarray(state[f"cond{k + 1}"], np.float32)
        if "label_weights" in state:
            self._set_labels(np.ascontiguousarray(np.asarray(state["label_weights"], np.float32)))
        p = self.packed
        _hoist(self.streams, self._groups(), p["M"], p["V"], p["tier_off"], p["tier_int"], p["dim"], p["gates"], self.condbuf, self.cond_off,
               self.pbuf, self.p_off)

    # ----- running ----------------------------------------------------------------------------
    def _groups(self) -> int:
        threads = self.threads if self.threads is not None else get_num_threads()
        return max(1, min(self.streams, threads))

    def _call(self, mode, codes_in, uniforms, temps, codes_out, logits_out) -> None:
        p = self.packed
        args = (p["M"], p["V"], p["tier_off"], p["layer_off"], p["mlp_off"], p["tier_int"], p["n_layers"], p["dim"],
                p["gates"], p["lstm"], p["skip"], self.t, self.history, self.hidden, self.condbuf,
                self.cond_off, self.pbuf, self.p_off, self.label_proj, mode, codes_in, uniforms, temps,
                codes_out, logits_out)
        require_c_contiguous(args)
        groups = self._groups()
        if groups == 1:
            announce_compile("samplernn", _run, _tier_step)
            _run(*args, 0, self.streams)
        else:
            announce_compile("samplernn-parallel", _run_parallel, _run)
            _run_parallel(groups, *args)
        self.t += codes_in.shape[1] if mode == 0 else uniforms.shape[1]

