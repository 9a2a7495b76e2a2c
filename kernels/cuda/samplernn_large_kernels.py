"""The Triton kernels of the cuda SampleRNN engine's large-batch path (:mod:`.samplernn_large`,
which launches them and says when): :func:`srnn_layer` (one GRU/LSTM layer of a tier),
:func:`srnn_linear` (upsampling, hoisted projections, the MLP's hidden layer),
:func:`srnn_mlp_input` (the MLP's first layer as a table gather) and :func:`srnn_out_sample`
(the logits and the draw of each stream's code).

Matmuls take ``[BM, BK] x [BK, BN]`` tiles with ``tl.dot``: the activations cast to the weights'
dtype (bf16/fp16: tensor cores, float32 accumulation) or, at precision fp32, IEEE float32
(``input_precision="ieee"``: no tf32). Helpers are written inline, except :func:`srnn_layer`'s
two (its first layer's input, its gate update), called once per program outside any loop:
Triton's interpreter (the CPU tests) pays heavily for every nested call. Weights are stored
transposed (``[in, out]``); the small folded frame projection ``A``, biases and MLP tables
stay float32.

Precision on the CPU (TRITON_INTERPRET=1, tests): ``tl.dot`` is exact fp32 and fp16 works;
bf16 is checked on a GPU only (the interpreter's bf16 conversion truncates).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def srnn_layer(X, WI, BI, H, WH, BH, CST, HN, Y, A, CV, ring, t_mod, ADD, add_stride, B, dim, F, F0, half_q,
               FP: tl.constexpr, LAYER0: tl.constexpr, HAS_ADD: tl.constexpr, LSTM: tl.constexpr, SKIP: tl.constexpr,
               FIRST: tl.constexpr, BB: tl.constexpr, BD: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr):
    """One GRU/LSTM layer for streams [pid0*BB, ...) and dims [pid1*BD, ...): HN [B, dim] = the new h
    from H [B, dim] (and the cells CST [B, dim], LSTM, in place). Input: X [B, dim] through WI
    [dim, G*dim] + BI, or for the first layer (LAYER0) the frame of the last F codes (ring
    [B, F0]: position s in slot s % F0; t_mod = t % F0) through A [G*dim, F] + CV, plus ADD
    [B, G*dim] (row stride add_stride) where HAS_ADD. With SKIP, Y [B, dim] (+)= h (FIRST: =)."""
    rb = tl.program_id(0) * BB + tl.arange(0, BB)
    rd = tl.program_id(1) * BD + tl.arange(0, BD)
    mb = rb < B
    md = rd < dim
    m2 = mb[:, None] & md[None, :]
    G: tl.constexpr = 4 if LSTM else 3
    GD = G * dim
    rb64 = rb.to(tl.int64)
    acc0 = tl.zeros([BB, BD], tl.float32)
    acc1 = tl.zeros([BB, BD], tl.float32)
    acc2 = tl.zeros([BB, BD], tl.float32)
    acc3 = tl.zeros([BB, BD], tl.float32)
    dt = WH.dtype.element_ty
    # GRU: acc0/acc1 the r/z sums, acc2 the recurrent n part, acc3 the input n part; LSTM: i f g o
    for k0 in range(0, dim, BK):
        rk = k0 + tl.arange(0, BK)
        mk = rk < dim
        wm = mk[:, None] & md[None, :]
        h = tl.load(H + rb64[:, None] * dim + rk[None, :], mask=mb[:, None] & mk[None, :], other=0.0).to(dt)
        at = WH + rk[:, None].to(tl.int64) * GD + rd[None, :]
        acc0 = tl.dot(h, tl.load(at, mask=wm, other=0.0), acc0, input_precision=PREC)
        acc1 = tl.dot(h, tl.load(at + dim, mask=wm, other=0.0), acc1, input_precision=PREC)
        acc2 = tl.dot(h, tl.load(at + 2 * dim, mask=wm, other=0.0), acc2, input_precision=PREC)
        if LSTM:
            acc3 = tl.dot(h, tl.load(at + 3 * dim, mask=wm, other=0.0), acc3, input_precision=PREC)
    if not LAYER0:  # a loop of its own: half the tiles live at once (registers)
        for k0 in range(0, dim, BK):
            rk = k0 + tl.arange(0, BK)
            mk = rk < dim
            wm = mk[:, None] & md[None, :]
            x = tl.load(X + rb64[:, None] * dim + rk[None, :], mask=mb[:, None] & mk[None, :], other=0.0).to(dt)
            at = WI + rk[:, None].to(tl.int64) * GD + rd[None, :]
            acc0 = tl.dot(x, tl.load(at, mask=wm, other=0.0), acc0, input_precision=PREC)
            acc1 = tl.dot(x, tl.load(at + dim, mask=wm, other=0.0), acc1, input_precision=PREC)
            if LSTM:
                acc2 = tl.dot(x, tl.load(at + 2 * dim, mask=wm, other=0.0), acc2, input_precision=PREC)
            acc3 = tl.dot(x, tl.load(at + (3 if LSTM else 2) * dim, mask=wm, other=0.0), acc3, input_precision=PREC)
    # biases: recurrent ones on the recurrent parts, input ones (folded into CV for the first layer)
    acc0 += tl.load(BH + rd, mask=md, other=0.0)[None, :]
    acc1 += tl.load(BH + dim + rd, mask=md, other=0.0)[None, :]
    acc2 += tl.load(BH + 2 * dim + rd, mask=md, other=0.0)[None, :]
    if LSTM:
        acc3 += tl.load(BH + 3 * dim + rd, mask=md, other=0.0)[None, :]
    if LAYER0:
        acc0, acc1, acc2, acc3 = add_frame_input(acc0, acc1, acc2, acc3, ring, t_mod, A, CV, ADD, add_stride, rb64, mb,
                                                 rd, md, m2, dim, F, F0, half_q, FP, HAS_ADD, LSTM)
    else:
        acc0 += tl.load(BI + rd, mask=md, other=0.0)[None, :]
        acc1 += tl.load(BI + dim + rd, mask=md, other=0.0)[None, :]
        if LSTM:
            acc2 += tl.load(BI + 2 * dim + rd, mask=md, other=0.0)[None, :]
            acc3 += tl.load(BI + 3 * dim + rd, mask=md, other=0.0)[None, :]
        else:
            acc3 += tl.load(BI + 2 * dim + rd, mask=md, other=0.0)[None, :]
    gate_update(acc0, acc1, acc2, acc3, H, CST, HN, Y, rb64[:, None] * dim + rd[None, :], m2, LSTM, SKIP, FIRST)


@triton.jit
def add_frame_input(acc0, acc1, acc2, acc3, ring, t_mod, A, CV, ADD, add_stride, rb64, mb, rd, md, m2, dim, F, F0,
                    half_q, FP: tl.constexpr, HAS_ADD: tl.constexpr, LSTM: tl.constexpr):
    """:func:`srnn_layer`'s gate sums (acc0..acc3 [BB, BD], in its gate order) plus the first layer's input:
    the frame of the last F codes (ring [B, F0], t_mod = t % F0) through A [G*dim, F] + CV, plus ADD
    [B, G*dim] (row stride add_stride) where HAS_ADD. Returns the four sums."""
    # the frame [BB, FP] (zero past F) through A^T [FP, BD] per gate, in IEEE float32 (small)
    rf = tl.arange(0, FP)
    mf = rf < F
    code = tl.load(ring + rb64[:, None] * F0 + (t_mod + F0 - F + rf[None, :]) % F0, mask=mb[:, None] & mf[None, :],
                   other=0).to(tl.float32)
    frame = tl.where(mf[None, :], (code / half_q - 1.0) * 2.0, 0.0)
    am = mf[:, None] & md[None, :]
    at = A + rd[None, :] * F + rf[:, None]
    gi0 = tl.dot(frame, tl.load(at, mask=am, other=0.0), input_precision="ieee")
    gi1 = tl.dot(frame, tl.load(at + dim * F, mask=am, other=0.0), input_precision="ieee")
    gi2 = tl.dot(frame, tl.load(at + 2 * dim * F, mask=am, other=0.0), input_precision="ieee")
    gi0 += tl.load(CV + rd, mask=md, other=0.0)[None, :]
    gi1 += tl.load(CV + dim + rd, mask=md, other=0.0)[None, :]
    gi2 += tl.load(CV + 2 * dim + rd, mask=md, other=0.0)[None, :]
    if LSTM:
        gi3 = tl.dot(frame, tl.load(at + 3 * dim * F, mask=am, other=0.0), input_precision="ieee")
        gi3 += tl.load(CV + 3 * dim + rd, mask=md, other=0.0)[None, :]
    if HAS_ADD:
        at = ADD + rb64[:, None] * add_stride + rd[None, :]
        gi0 += tl.load(at, mask=m2, other=0.0)
        gi1 += tl.load(at + dim, mask=m2, other=0.0)
        gi2 += tl.load(at + 2 * dim, mask=m2, other=0.0)
        if LSTM:
            gi3 += tl.load(at + 3 * dim, mask=m2, other=0.0)
    acc0 += gi0
    acc1 += gi1
    if LSTM:
        acc2 += gi2
        acc3 += gi3
    else:
        acc3 += gi2
    return acc0, acc1, acc2, acc3


@triton.jit
def gate_update(acc0, acc1, acc2, acc3, H, CST, HN, Y, at, m2, LSTM: tl.constexpr, SKIP: tl.constexpr,
                FIRST: tl.constexpr):
    """The GRU/LSTM update of :func:`srnn_layer` from its gate sums: HN = the new h at offsets ``at``
    [BB, BD] (H the old one; the cells CST in place, LSTM); with SKIP, Y (+)= h (FIRST: =)."""
    if LSTM:
        g = 2.0 * tl.sigmoid(2.0 * acc2) - 1.0  # tanh
        c = tl.sigmoid(acc1) * tl.load(CST + at, mask=m2, other=0.0) + tl.sigmoid(acc0) * g
        tl.store(CST + at, c, mask=m2)
        h = tl.sigmoid(acc3) * (2.0 * tl.sigmoid(2.0 * c) - 1.0)
    else:
        r = tl.sigmoid(acc0)
        z = tl.sigmoid(acc1)
        n = 2.0 * tl.sigmoid(2.0 * (acc3 + r * acc2)) - 1.0
        h = (1.0 - z) * n + z * tl.load(H + at, mask=m2, other=0.0)
    tl.store(HN + at, h, mask=m2)
    if SKIP:
        if FIRST:
            tl.store(Y + at, h, mask=m2)
        else:
            tl.store(Y + at, tl.load(Y + at, mask=m2, other=0.0) + h, mask=m2)


@triton.jit
def srnn_linear(X, W, BIAS, Y, M, N, K, HAS_BIAS: tl.constexpr, RELU: tl.constexpr, BM: tl.constexpr,
                BN: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr):
    """Y [M, N] = (ReLU)(X [M, K] @ W [K, N] (+ BIAS [N])), float32 out, all row-major."""
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    mm = rm < M
    mn = rn < N
    rm64 = rm.to(tl.int64)
    acc = tl.zeros([BM, BN], tl.float32)
    dt = W.dtype.element_ty
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK)
        mk = rk < K
        x = tl.load(X + rm64[:, None] * K + rk[None, :], mask=mm[:, None] & mk[None, :], other=0.0).to(dt)
        w = tl.load(W + rk[:, None].to(tl.int64) * N + rn[None, :], mask=mk[:, None] & mn[None, :], other=0.0)
        acc = tl.dot(x, w, acc, input_precision=PREC)
    if HAS_BIAS:
        acc += tl.load(BIAS + rn, mask=mn, other=0.0)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    tl.store(Y + rm64[:, None] * N + rn[None, :], acc, mask=mm[:, None] & mn[None, :])


@triton.jit
def srnn_mlp_input(ring, t_mod, COND, cond_stride, TAB, INB, X1, B, dim, q, F0, w, BB: tl.constexpr,
                   BD: tl.constexpr):
    """X1 [B, dim] = ReLU(INB + COND[b] + sum_p TAB[p, code of stream b p-th in the window]); COND's
    rows are cond_stride apart (the conditioning vector of this position)."""
    rb = tl.program_id(0) * BB + tl.arange(0, BB)
    rd = tl.program_id(1) * BD + tl.arange(0, BD)
    mb = rb < B
    md = rd < dim
    m2 = mb[:, None] & md[None, :]
    rb64 = rb.to(tl.int64)
    x = tl.load(INB + rd, mask=md, other=0.0)[None, :] + tl.load(COND + rb64[:, None] * cond_stride + rd[None, :],
                                                                 mask=m2, other=0.0)
    for p in range(w):
        code = tl.load(ring + rb64 * F0 + (t_mod + F0 - w + p) % F0, mask=mb, other=0)
        x += tl.load(TAB + ((p * q + code)[:, None] * dim + rd[None, :]), mask=m2, other=0.0)
    tl.store(X1 + rb64[:, None] * dim + rd[None, :], tl.maximum(x, 0.0), mask=m2)


@triton.jit
def srnn_out_sample(X2, WO, BO, ring, t_mod, codes_in, uniforms, temps, codes_out, logits_out, B, dim, F0, i, n,
                    mode, Q: tl.constexpr, QP: tl.constexpr, BB: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr,
                    FIX_BITS: tl.constexpr):
    """Logits [BB, Q] = X2 @ WO [dim, Q] + BO for a block of streams; mode 0 (teacher forcing): into
    logits_out [B, n, Q] at step i, the code from codes_in [B, n]; mode 1: the code drawn with
    uniforms [B, n] at i and temps [B], into codes_out [B, n]. The code goes into slot t_mod of ring [B, F0]."""
    rb = tl.program_id(0) * BB + tl.arange(0, BB)
    mb = rb < B
    rb64 = rb.to(tl.int64)
    rq = tl.arange(0, QP)
    mq = rq < Q
    acc = tl.zeros([BB, QP], tl.float32)
    dt = WO.dtype.element_ty
    for k0 in range(0, dim, BK):
        rk = k0 + tl.arange(0, BK)
        mk = rk < dim
        x = tl.load(X2 + rb64[:, None] * dim + rk[None, :], mask=mb[:, None] & mk[None, :], other=0.0).to(dt)
        wo = tl.load(WO + rk[:, None].to(tl.int64) * Q + rq[None, :], mask=mk[:, None] & mq[None, :], other=0.0)
        acc = tl.dot(x, wo, acc, input_precision=PREC)
    acc += tl.load(BO + rq, mask=mq, other=0.0)[None, :]
    if mode == 0:
        tl.store(logits_out + (rb64[:, None] * n + i) * Q + rq[None, :], acc, mask=mb[:, None] & mq[None, :])
        code = tl.load(codes_in + rb64 * n + i, mask=mb, other=0).to(tl.int64)
    else:
        u = tl.load(uniforms + rb64 * n + i, mask=mb, other=0.0)
        temp = tl.load(temps + rb, mask=mb, other=1.0)
        # inverse CDF as wavegen.engine.sample_codes (whose cumulative sum runs in float64 on torch's
        # CPU): p in fixed point (2^-FIX_BITS units, int64), whose cumulative sums are exact in any
        # order (the GPU's parallel scan and the interpreter's sequential one agree bit for bit),
        # each prefix then rounded to float32 (the scheme of wavenet_large_steps)
        zq = tl.where(mq[None, :], acc / temp[:, None], float("-inf"))
        p = tl.exp(zq - tl.max(zq, axis=1)[:, None])
        # a p > 0 counts at least one unit: at u = 0 (drawn once in 2**24) the reference takes the
        # first code of probability > 0, not the first of p >= 2^-FIX_BITS (at a low temperature
        # many codes lie between); the units added change a sum by at most Q * 2^-FIX_BITS
        fixed = tl.maximum((p * (2.0 ** FIX_BITS)).to(tl.int64), (p > 0).to(tl.int64))
        cdf = tl.cumsum(fixed, axis=1).to(tl.float32) * (2.0 ** -FIX_BITS)
        total = tl.sum(fixed, axis=1).to(tl.float32) * (2.0 ** -FIX_BITS)
        below = (cdf <= (u * total)[:, None]) & mq[None, :]
        code = tl.minimum(tl.sum(below.to(tl.int32), axis=1), Q - 1).to(tl.int64)
        tl.store(codes_out + rb64 * n + i, code, mask=mb)
    tl.store(ring + rb64 * F0 + t_mod, code, mask=mb)
