"""The phases of the persistent SampleRNN kernel (:mod:`wavegen.kernels.cuda.samplernn_small`):
numba-cuda device functions, each one phase of a sample step for this block's share of the
work (see that module's docstring for the schedule and the grid barriers between phases), plus
the layout they read: the kernel's modes, the ``cfg`` indices (sizes and shared-memory
offsets, in floats) and :func:`cache_index` (where a matrix's slice sits in shared memory).

The kernel calls these through its own module's names, so a test that swaps a phase for an
edited copy (tests/cudasim.py ``patched``) patches ``samplernn_small``, not this module.
"""

from __future__ import annotations

import math

from numba import cuda, float32, int32

from wavegen.kernels.cuda.common import block_matvec, sigmoid, wait_flags, warp_sample
from wavegen.kernels.packing import (SRNN_A, SRNN_BHH, SRNN_BIH, SRNN_C, SRNN_HIDB, SRNN_HIDW, SRNN_INB, SRNN_OUTB,
                                     SRNN_OUTW, SRNN_TAB, SRNN_UPB, SRNN_UPW, SRNN_WHH, SRNN_WIH, SRNN_WIH0)

TEACHER_FORCE, SAMPLE, HOIST = 0, 1, 2  # kernel modes; HOIST only recomputes the projections from cond

# cfg: the kernel's sizes and shared-memory layout (floats), by index
(CF_B, CF_DIM, CF_G, CF_LSTM, CF_SKIP, CF_L, CF_Q, CF_K, CF_F0, CF_LABELLED, CF_DPB, CF_SGI, CF_SGH, CF_SX,
 CF_SWS) = range(15)
SAMPLE_SCRATCH = 128  # floats of shared memory per warp for warp_sample


def cache_index(kind: str, K: int, L: int, k: int = 0, layer: int = 0) -> int:
    """Index in ``wcache`` (shared-memory offset of a block's slice, -1 where read from M) of a matrix:
    "whh"/"wih" (tier k, layer), "up" (tier k), "proj" (tier k's first w_ih, k >= 1), "hidden", "out"."""
    if kind in ("whh", "wih"):
        return (k * L + layer) * 2 + (kind == "wih")
    return {"up": 2 * K * L + k, "proj": 2 * K * L + K + k, "hidden": 2 * K * L + 2 * K,
            "out": 2 * K * L + 2 * K + 1}[kind]


# ----- device code -------------------------------------------------------------------------------

@cuda.jit(device=True)
def span(total, nblk, bid):
    """(first, count) of this block's share of ``total`` items cut into ceil(total / nblk) pieces."""
    per = (total + nblk - 1) // nblk
    first = bid * per
    return first, max(0, min(per, total - first))


@cuda.jit(device=True)
def grid_barrier(counter, nblk, spin_limit, err, status, tid, nthreads):
    """Every block's writes before it are seen by every block after it. ``counter`` [1] (int64,
    zero at the launch) counts the blocks' arrivals: each block adds one when its writes are
    out, learning from the count before its own which barrier this is (the g-th: g * nblk up
    to (g + 1) * nblk - 1, as no block can arrive at the next before all arrived at this one),
    and waits for the count to reach (g + 1) * nblk. One atomic and one polling thread a block,
    as CUDA's own grid sync (a flag per block polled by every block would put nblk x nblk polls
    a round on a few cache lines). False where a wait timed out."""
    cuda.threadfence()  # release: this block's writes before its arrival, seen from any block
    cuda.syncthreads()  # ARRIVE-BARRIER
    target = 0  # only thread 0 polls (wait_flags: one flag)
    if tid == 0:
        target = (cuda.atomic.add(counter, 0, 1) // nblk + 1) * nblk
    return wait_flags(counter, 0, 1, target, spin_limit, err, status, tid, nthreads)


@cuda.jit(device=True)
def slice_matvec(M, sm, coff, m_off, row0, srow0, rows, cols, X, x_off, x_stride, B, Y, y_off, y_stride,
                 V, b_off, tid, nthreads):
    """Rows ``row0 .. row0+rows-1`` of the [*, cols] matrix at M[m_off] applied to B vectors (see
    block_matvec), read from this block's copy in shared memory (rows from ``srow0``, stride
    cols+1) where it has one (``coff >= 0``). One call site of block_matvec for both (every call
    is inlined: fewer copies, a smaller kernel, a faster compile)."""
    W = M
    w_off = m_off + row0 * cols
    w_stride = cols
    if coff >= 0:
        W = sm
        w_off = coff + srow0 * (cols + 1)
        w_stride = cols + 1
    block_matvec(W, w_off, w_stride, rows, cols, X, x_off, x_stride, B, Y, y_off, y_stride, V, b_off, 0, tid, nthreads)


@cuda.jit(device=True)
def cache_rows(M, m_off, row0, rows, cols, sm, coff, srow0, tid, nthreads):
    """Copy rows row0.. of the matrix at M[m_off] into shared memory (rows from srow0, stride cols+1)."""
    if coff < 0:
        return
    for e in range(tid, rows * cols, nthreads):
        r = e // cols
        sm[coff + (srow0 + r) * (cols + 1) + e - r * cols] = M[m_off + (row0 + r) * cols + e - r * cols]


@cuda.jit(device=True)
def load_caches(M, tier_off, layer_off, mlp_off, tier_int, wcache, cfg, sm, bid, nblk, tid, nthreads):
    """This block's slices of every matrix that has a place in shared memory (wcache >= 0)."""
    dim = cfg[CF_DIM]
    G = cfg[CF_G]
    L = cfg[CF_L]
    K = cfg[CF_K]
    dpb = cfg[CF_DPB]
    d0, nd = span(dim, nblk, bid)
    for k in range(K):
        for layer in range(L):
            for g in range(G):
                cache_rows(M, layer_off[k, layer, SRNN_WHH], g * dim + d0, nd, dim, sm,
                           wcache[(k * L + layer) * 2], g * dpb, tid, nthreads)
                if layer > 0:
                    cache_rows(M, layer_off[k, layer, SRNN_WIH], g * dim + d0, nd, dim, sm,
                               wcache[(k * L + layer) * 2 + 1], g * dpb, tid, nthreads)
        r0, nr = span(tier_int[k, 1] * dim, nblk, bid)
        cache_rows(M, tier_off[k, SRNN_UPW], r0, nr, dim, sm, wcache[2 * K * L + k], 0, tid, nthreads)
        if k > 0:
            r0, nr = span(G * dim, nblk, bid)
            cache_rows(M, tier_off[k, SRNN_WIH0], r0, nr, dim, sm, wcache[2 * K * L + K + k], 0, tid, nthreads)
    r0, nr = span(dim, nblk, bid)
    cache_rows(M, mlp_off[SRNN_HIDW], r0, nr, dim, sm, wcache[2 * K * L + 2 * K], 0, tid, nthreads)
    r0, nr = span(cfg[CF_Q], nblk, bid)
    cache_rows(M, mlp_off[SRNN_OUTW], r0, nr, dim, sm, wcache[2 * K * L + 2 * K + 1], 0, tid, nthreads)


@cuda.jit(device=True)
def layer_phase(k, layer, t, M, V, tier_off, layer_off, tier_int, wcache, cfg, sm, hbuf, cbuf, ybuf, pbuf, p_off,
                label_proj, bid, nblk, tid, nthreads):
    """One GRU/LSTM layer of tier k at position t, for this block's dims of every stream."""
    B = cfg[CF_B]
    dim = cfg[CF_DIM]
    G = cfg[CF_G]
    L = cfg[CF_L]
    K = cfg[CF_K]
    F0 = cfg[CF_F0]
    dpb = cfg[CF_DPB]
    s_gi = cfg[CF_SGI]
    s_gh = cfg[CF_SGH]
    GD = G * dim
    F = tier_int[k, 0]
    d0, nd = span(dim, nblk, bid)
    old = (t // F) % 2
    h_old = ((old * K + k) * L + layer) * B * dim
    h_new = (((1 - old) * K + k) * L + layer) * B * dim
    c_whh = wcache[(k * L + layer) * 2]
    for g in range(G):  # gh rows of this block's dims: sm[s_gh + b*G*dpb + g*dpb + d]
        slice_matvec(M, sm, c_whh, layer_off[k, layer, SRNN_WHH], g * dim + d0, g * dpb, nd, dim, hbuf, h_old, dim,
                     B, sm, s_gh + g * dpb, G * dpb, V, layer_off[k, layer, SRNN_BHH] + g * dim + d0, tid, nthreads)
    if layer > 0:
        x_in = (((1 - old) * K + k) * L + layer - 1) * B * dim
        c_wih = wcache[(k * L + layer) * 2 + 1]
        for g in range(G):
            slice_matvec(M, sm, c_wih, layer_off[k, layer, SRNN_WIH], g * dim + d0, g * dpb, nd, dim, hbuf, x_in,
                         dim, B, sm, s_gi + g * dpb, G * dpb, V, layer_off[k, layer, SRNN_BIH] + g * dim + d0,
                         tid, nthreads)
    else:  # the frame through the folded input projection, plus the conditioning from above
        half_q = float32(cfg[CF_Q]) * float32(0.5)
        a_off = tier_off[k, SRNN_A]
        c_off = tier_off[k, SRNN_C]
        j = 0
        r_up = 1
        if k > 0:
            j = (t % tier_int[k - 1, 0]) // F
            r_up = tier_int[k - 1, 1]
        s_hist = 0
        for e in range(tid, B * G * nd, nthreads):
            b = e // (G * nd)
            g = (e - b * G * nd) // nd
            d = e - b * G * nd - g * nd
            row = g * dim + d0 + d
            acc = V[c_off + row]
            for f in range(F):
                code = sm[s_hist + b * F0 + (t + F0 - F + f) % F0]
                acc += V[a_off + row * F + f] * ((code / half_q - float32(1.0)) * float32(2.0))
            if k > 0:
                acc += pbuf[p_off[k] + (b * r_up + j) * GD + row]
            elif cfg[CF_LABELLED]:
                acc += label_proj[b * GD + row]
            sm[s_gi + b * G * dpb + g * dpb + d] = acc
    cuda.syncthreads()  # GATES-BARRIER
    for e in range(tid, B * nd, nthreads):
        b = e // nd
        d = e - b * nd
        gi = s_gi + b * G * dpb + d
        gh = s_gh + b * G * dpb + d
        if cfg[CF_LSTM]:
            ig = sigmoid(sm[gi] + sm[gh])
            fg = sigmoid(sm[gi + dpb] + sm[gh + dpb])
            gg = float32(math.tanh(sm[gi + 2 * dpb] + sm[gh + 2 * dpb]))
            og = sigmoid(sm[gi + 3 * dpb] + sm[gh + 3 * dpb])
            c_at = ((k * L + layer) * B + b) * dim + d0 + d
            cn = fg * cbuf[c_at] + ig * gg
            cbuf[c_at] = cn
            h = og * float32(math.tanh(cn))
        else:
            r = sigmoid(sm[gi] + sm[gh])
            z = sigmoid(sm[gi + dpb] + sm[gh + dpb])
            nn = float32(math.tanh(sm[gi + 2 * dpb] + r * sm[gh + 2 * dpb]))
            h = (float32(1.0) - z) * nn + z * hbuf[h_old + b * dim + d0 + d]
        hbuf[h_new + b * dim + d0 + d] = h
        if cfg[CF_SKIP]:
            y_at = (k * B + b) * dim + d0 + d
            if layer == 0:
                ybuf[y_at] = h
            else:
                ybuf[y_at] += h


@cuda.jit(device=True)
def up_phase(k, t, M, V, tier_off, tier_int, wcache, cfg, sm, hbuf, ybuf, condbuf, cond_off, bid, nblk, tid, nthreads):
    """This block's rows of tier k's upsampling: cond [B, ratio*dim] = up_w @ y + up_b."""
    B = cfg[CF_B]
    dim = cfg[CF_DIM]
    L = cfg[CF_L]
    K = cfg[CF_K]
    R = tier_int[k, 1] * dim
    r0, nr = span(R, nblk, bid)
    X = ybuf  # skip: the sum of the layers' outputs; else the last layer's new h
    x_off = k * B * dim
    if not cfg[CF_SKIP]:
        X = hbuf
        x_off = (((t // tier_int[k, 0] + 1) % 2 * K + k) * L + L - 1) * B * dim
    slice_matvec(M, sm, wcache[2 * K * L + k], tier_off[k, SRNN_UPW], r0, 0, nr, dim, X, x_off, dim, B,
                 condbuf, cond_off[k] + r0, R, V, tier_off[k, SRNN_UPB] + r0, tid, nthreads)


@cuda.jit(device=True)
def proj_phase(k, M, V, tier_off, tier_int, wcache, cfg, sm, condbuf, cond_off, pbuf, p_off, bid, nblk, tid, nthreads):
    """This block's rows of tier k+1's input projections of tier k's ratio conditioning vectors."""
    dim = cfg[CF_DIM]
    GD = cfg[CF_G] * dim
    L = cfg[CF_L]
    K = cfg[CF_K]
    r0, nr = span(GD, nblk, bid)
    slice_matvec(M, sm, wcache[2 * K * L + K + k + 1], tier_off[k + 1, SRNN_WIH0], r0, 0, nr, dim, condbuf,
                 cond_off[k], dim, cfg[CF_B] * tier_int[k, 1], pbuf, p_off[k + 1] + r0, GD, V, -1, tid, nthreads)


@cuda.jit(device=True)
def hidden_phase(t, M, V, mlp_off, tier_int, wcache, cfg, sm, condbuf, cond_off, xbuf, bid, nblk, tid, nthreads):
    """x1 = relu(in_b + cond + sum_p tables[p, code_p]) for every stream into shared memory, then
    this block's rows of hidden_w @ x1 + hidden_b into xbuf[t % 2]."""
    B = cfg[CF_B]
    dim = cfg[CF_DIM]
    K = cfg[CF_K]
    q = cfg[CF_Q]
    F0 = cfg[CF_F0]
    s_x = cfg[CF_SX]
    w = tier_int[K - 1, 0]
    j = t % w
    c_off = cond_off[K - 1]
    tab = mlp_off[SRNN_TAB]
    in_b = mlp_off[SRNN_INB]
    for e in range(tid, B * dim, nthreads):
        b = e // dim
        d = e - b * dim
        acc = V[in_b + d] + condbuf[c_off + (b * w + j) * dim + d]
        for p in range(w):
            code = int32(sm[b * F0 + (t + F0 - w + p) % F0])
            acc += V[tab + (p * q + code) * dim + d]
        sm[s_x + b * (dim + 1) + d] = max(acc, float32(0.0))
    cuda.syncthreads()  # X1-BARRIER
    r0, nr = span(dim, nblk, bid)
    L = cfg[CF_L]
    slice_matvec(M, sm, wcache[2 * K * L + 2 * K], mlp_off[SRNN_HIDW], r0, 0, nr, dim, sm, s_x, dim + 1, B,
                 xbuf, (t % 2) * B * dim + r0, dim, V, mlp_off[SRNN_HIDB] + r0, tid, nthreads)


@cuda.jit(device=True)
def out_phase(t, i, n, mode, M, V, mlp_off, wcache, cfg, sm, xbuf, logits_buf, logits_out, bid, nblk, tid, nthreads):
    """relu(x2) into shared memory, then this block's rows of the logits: into logits_buf [B, Q]
    (sampling) or logits_out [B, n, Q] at step i (teacher forcing)."""
    B = cfg[CF_B]
    dim = cfg[CF_DIM]
    q = cfg[CF_Q]
    K = cfg[CF_K]
    L = cfg[CF_L]
    s_x = cfg[CF_SX]
    x_off = (t % 2) * B * dim
    for e in range(tid, B * dim, nthreads):
        b = e // dim
        sm[s_x + e + b] = max(xbuf[x_off + e], float32(0.0))  # row b at s_x + b * (dim + 1)
    cuda.syncthreads()  # X2-BARRIER
    r0, nr = span(q, nblk, bid)
    Y = logits_buf
    y_off = r0
    y_stride = q
    if mode != SAMPLE:
        Y = logits_out
        y_off = i * q + r0
        y_stride = n * q
    slice_matvec(M, sm, wcache[2 * K * L + 2 * K + 1], mlp_off[SRNN_OUTW], r0, 0, nr, dim, sm, s_x, dim + 1, B,
                 Y, y_off, y_stride, V, mlp_off[SRNN_OUTB] + r0, tid, nthreads)


@cuda.jit(device=True)
def take_codes(t, i, n, mode, cfg, sm, codes_in, uniforms, temps, codes_out, logits_buf, bid, tid, nthreads):
    """Every stream's code at position t (drawn from logits_buf, or the given one) into this block's
    ring of past codes; block 0 also writes drawn codes to codes_out [B, n]."""
    B = cfg[CF_B]
    q = cfg[CF_Q]
    F0 = cfg[CF_F0]
    lane = tid % 32
    for b in range(tid // 32, B, nthreads // 32):
        if mode == SAMPLE:
            code = warp_sample(logits_buf, b * q, q, uniforms[b * n + i], temps[b], sm,
                               cfg[CF_SWS] + (tid // 32) * SAMPLE_SCRATCH, lane)
            if bid == 0 and lane == 0:
                codes_out[b * n + i] = code
        else:
            code = codes_in[b * n + i]
        if lane == 0:
            sm[b * F0 + t % F0] = float32(code)
