"""WaveNet on the GPU for a few streams: one persistent kernel runs ``n`` samples of B streams.

The launch never returns to the host between samples. Its blocks have roles, and each keeps its
weights in shared memory for the whole launch (loaded once, at the start):

- **layer blocks** (one per ``P`` layers, ``layers_per_block``; default one): each layer's
  ``[2R, 2R]`` dilated convolution and ``[R, R]`` residual, and with one layer a block its
  columns of the fused skip matrix ``[S, R]`` (with more, these are read from global memory:
  they are off the chain). Per sample, the half of each convolution that reads the ring buffer
  (the input of ``d`` steps ago, already known) is done *before* waiting for the block's input,
  so only the half on the new input, the gate and the residual sit on the chain from layer to
  layer; between the layers of one block the residual stream stays in shared memory, and only
  the block's last layer hands it on through global memory. The skip contributions come after
  that hand-off. The block owns its layers' ring buffers. Block 0 also draws each sample's code
  (one warp per stream, inverse CDF from the caller's uniforms) and embeds it as the first
  layer's input;
- **out1 blocks** (H1 of them): sum the layers' skip contributions, ReLU, and compute their
  slice of the ``[A, S]`` projection;
- **out2 blocks** (H2): ReLU and their slice of the ``[Q, A]`` projection: the logits.

Blocks hand results to each other through counters in global memory (``flags``; see
:mod:`wavegen.kernels.cuda.common`): per sample, ceil(L / P) - 1 block-to-block hand-offs on
the layer chain, then skip → out1 → out2 → block 0. Layout of ``flags``: ``[0, L)`` layer k's
residual output ready (posted by a block's last layer only),
``[L, 2L)`` its skip contribution ready, then the H1 out1 and H2 out2 blocks; each counts
the samples its block has finished in this launch. Every buffer a block reads is rewritten
only after the block has posted that it is done with it (the chain through block 0 orders
it), so one buffer per hand-off is enough.

Arrays are flat (C order): ``rings [sum(dil), B, R]`` slot-major as in the numba engine,
``label_bias [B, L, 2R]``, ``codes_in/codes_out/uniforms [B, n]``, ``logits_out [B, n, Q]``,
hand-off buffers ``xbuf [L, B, R]``, ``skipbuf [L, B, S]``, ``y1buf [B, A]``, ``logits_buf
[B, Q]``. Weights come from :func:`wavegen.kernels.packing.pack_wavenet` (fp32 store).
"""

from __future__ import annotations

import math

import torch
from numba import cuda, float32, int32
from numba.extending import register_jitable

from wavegen.engine import EngineError
from wavegen.kernels.cuda import register_numba_kernel
from wavegen.kernels.cuda.common import (block_matvec, launch, load_padded, post_flag, sigmoid, wait_flags,
                                         warp_sample)
from wavegen.kernels.packing import (WN_CONV, WN_CONVB, WN_EMB, WN_OUT1, WN_OUT1B, WN_OUT2, WN_OUT2B, WN_RES,
                                     WN_RESB, WN_SKIP, WN_SKIPB)

TEACHER_FORCE, SAMPLE = 0, 1


@register_jitable
def _res_offset(R):
    """Where a layer's residual [R, R] starts within its weights in shared memory: after the
    convolution's 2R rows of stride 2R + 1."""
    return 2 * R * (2 * R + 1)


@register_jitable
def _layer_layout(R, S, B, per_block):
    """Where a layer block running ``per_block`` layers keeps things in shared memory, in floats
    (the kernel and the launch's size both read it here): (one layer's weights, the skip columns,
    the convolution outputs, the gates, the layer input, the sampler's scratch). Each layer's
    convolution [2R, 2R] and residual [R, R] weights (odd row strides), then the skip columns
    where a block runs one layer (else read from global memory: they are off the chain), then per
    layer B rows of the convolution's 2R outputs and B rows of the gate's R outputs, then B rows
    of the layer input (the residual stream), then the first block's 128 floats per warp."""
    per = _res_offset(R) + R * (R + 1)
    s_ws = per_block * per
    s_h = s_ws + (S * (R + 1) if per_block == 1 else 0)
    s_z = s_h + per_block * B * (2 * R + 1)
    s_x = s_z + per_block * B * (R + 1)
    return per, s_ws, s_h, s_z, s_x, s_x + B * (R + 1)


def layer_smem_floats(R: int, S: int, B: int, warps: int, per_block: int = 1) -> int:
    """Shared memory of a layer block running ``per_block`` layers, in floats (:func:`_layer_layout`)."""
    return _layer_layout(R, S, B, per_block)[5] + 128 * warps


def head_smem_floats(rows: int, cols: int, B: int) -> int:
    """Shared memory of an out1/out2 block with ``rows`` rows of a ``cols``-wide matrix, in floats."""
    return (rows + B) * (cols + 1)


@cuda.jit(device=True)
def _load_layers(k0, nk, per, sm, M, layer_off, R, tid, nthreads):
    """Layers k0 .. k0+nk-1's convolution [2R, 2R] and residual [R, R] into shared memory (layer j's
    at j * per, rows padded to an odd stride), for the whole launch."""
    for j in range(nk):
        load_padded(M, layer_off[k0 + j, WN_CONV], 2 * R, 2 * R, sm, j * per, 2 * R + 1, tid, nthreads)
        load_padded(M, layer_off[k0 + j, WN_RES], R, R, sm, j * per + _res_offset(R), R + 1, tid, nthreads)


@cuda.jit(device=True)
def _load_skip(k, sm, s_ws, M, head, R, S, L, tid, nthreads):
    """Layer k's columns of the fused [S, L*R] skip matrix into shared memory at s_ws (stride R+1)."""
    skip_w = head[WN_SKIP] + k * R
    for i in range(tid, S * R, nthreads):
        s = i // R
        sm[s_ws + s * (R + 1) + i - s * R] = M[skip_w + s * L * R + i - s * R]


@cuda.jit(device=True)
def _layer_input(g, k0, i, n, mode, sm, s_x, s_smp, status, V, head, L, H1, H2, R, Q, prev, codes_in, uniforms,
                 temps, codes_out, logits_buf, xbuf, flags, err, spin_limit, B, tid, nthreads):
    """This block's input at step i into s_x: for the first block, the embedding of the code drawn
    from the last step's logits (or given); for the others, the residual output of layer k0-1.
    Returns 0 (go on), 1 (the first block's last, code-only step: done) or 2 (a wait timed out)."""
    rs = R + 1
    if g == 0:
        if i > 0:
            if not wait_flags(flags, 2 * L + H1, H2, i, spin_limit, err, status, tid, nthreads):
                return 2
        warp = tid // 32
        lane = tid % 32
        for b in range(warp, B, nthreads // 32):
            if i == 0:
                code = prev[b]
            elif mode == SAMPLE:
                code = warp_sample(logits_buf, b * Q, Q, uniforms[b * n + i - 1], temps[b], sm, s_smp + 128 * warp,
                                   lane)
                if lane == 0:
                    codes_out[b * n + i - 1] = code
            else:
                code = codes_in[b * n + i - 1]
            if i == n and lane == 0:
                prev[b] = code
            for j in range(lane, R, 32):
                sm[s_x + b * rs + j] = V[head[WN_EMB] + code * R + j]
        if i == n:
            return 1
    else:
        if not wait_flags(flags, k0 - 1, 1, i + 1, spin_limit, err, status, tid, nthreads):
            return 2
        for j in range(tid, B * R, nthreads):
            b = j // R
            sm[s_x + b * rs + j - b * R] = xbuf[k0 * B * R + j]
    return 0


@cuda.jit(device=True)
def _chain_layer(j, k, nk, w, h, z, s_x, sm, V, layer_off, ring_off, dil, t, i, L, R, rings, label_bias, labelled,
                 xbuf, flags, B, tid, nthreads):
    """Layer k (the block's j-th of nk, weights at sm[w]) at position t (step i of the launch), on
    the chain: its input s_x into its ring, the convolution's half on it added to h (the ring's
    half is there), the gate into z, and the residual: into s_x for the block's next layer, or
    to xbuf and the next block (the flag) after its last."""
    R2 = 2 * R
    cs = R2 + 1
    rs = R + 1
    slot = ring_off[k] + t % dil[k]
    for e in range(tid, B * R, nthreads):
        b = e // R
        rings[slot * B * R + e] = sm[s_x + b * rs + e - b * R]
    block_matvec(sm, w + R, cs, R2, R, sm, s_x, rs, B, sm, h, cs, V, -1, 1, tid, nthreads)
    cuda.syncthreads()  # CONV-BARRIER
    for e in range(tid, B * R, nthreads):
        b = e // R
        r = e - b * R
        f = sm[h + b * cs + r]
        g = sm[h + b * cs + R + r]
        if labelled:
            f += label_bias[(b * L + k) * R2 + r]
            g += label_bias[(b * L + k) * R2 + R + r]
        sm[z + b * rs + r] = float32(math.tanh(f)) * sigmoid(g)
    cuda.syncthreads()  # GATE-BARRIER
    if k < L - 1:  # the last layer's residual output is never read
        block_matvec(sm, w + _res_offset(R), rs, R, R, sm, z, rs, B, sm, h, cs, V, layer_off[k, WN_RESB], 0, tid, nthreads)
        cuda.syncthreads()  # RES-BARRIER
        for e in range(tid, B * R, nthreads):
            b = e // R
            r = e - b * R
            if j == nk - 1:
                xbuf[(k + 1) * B * R + e] = sm[s_x + b * rs + r] + sm[h + b * cs + r]
            else:
                sm[s_x + b * rs + r] += sm[h + b * cs + r]
        if j == nk - 1:
            post_flag(flags, k, i + 1, tid)
        if j < nk - 1:  # CHAIN-BARRIER: the block's next layer reads the new input
            cuda.syncthreads()  # CHAIN-BARRIER


@cuda.jit(device=True)
def _layer_block(g, per_block, sm, status, M, V, layer_off, head, dil, ring_off, R, S, Q, L, H1, H2, t0, n, mode,
                 prev, rings, label_bias, labelled, codes_in, uniforms, temps, codes_out, logits_buf,
                 xbuf, skipbuf, flags, err, spin_limit, B, tid, nthreads):
    """Layers k0 = g * per_block .. k0 + nk - 1 of every step: each layer's convolution half on its ring
    before the wait, then the chain layer to layer in shared memory, the residual hand-off to the
    next block after the last, and the skip contributions after that (off the chain)."""
    R2 = 2 * R
    cs = R2 + 1
    rs = R + 1
    k0 = g * per_block
    nk = min(per_block, L - k0)
    skip_cached = per_block == 1  # the skip columns in shared memory (else read from M: they are off the chain)
    per, s_ws, s_h, s_z, s_x, s_smp = _layer_layout(R, S, B, per_block)
    _load_layers(k0, nk, per, sm, M, layer_off, R, tid, nthreads)
    if skip_cached:
        _load_skip(k0, sm, s_ws, M, head, R, S, L, tid, nthreads)
    cuda.syncthreads()
    steps = n + 1 if g == 0 else n  # the first block draws the last sample's code after the loop's last step
    for i in range(steps):
        if i < n:  # the half of each convolution on the input of d steps ago: before the wait
            for j in range(nk):
                slot = ring_off[k0 + j] + (t0 + i) % dil[k0 + j]
                block_matvec(sm, j * per, cs, R2, R, rings, slot * B * R, R, B, sm, s_h + j * B * cs, cs,
                             V, layer_off[k0 + j, WN_CONVB], 0, tid, nthreads)
        got = _layer_input(g, k0, i, n, mode, sm, s_x, s_smp, status, V, head, L, H1, H2, R, Q, prev, codes_in,
                           uniforms, temps, codes_out, logits_buf, xbuf, flags, err, spin_limit, B, tid, nthreads)
        if got != 0:
            return
        cuda.syncthreads()  # INPUT-BARRIER: the input is in place, the ring slots have been read
        for j in range(nk):
            _chain_layer(j, k0 + j, nk, j * per, s_h + j * B * cs, s_z + j * B * rs, s_x, sm, V, layer_off, ring_off,
                         dil, t0 + i, i, L, R, rings, label_bias, labelled, xbuf, flags, B, tid, nthreads)
        for j in range(nk):
            k = k0 + j
            if skip_cached:
                block_matvec(sm, s_ws, rs, S, R, sm, s_z + j * B * rs, rs, B, skipbuf, k * B * S, S, V, -1, 0,
                             tid, nthreads)
            else:
                block_matvec(M, head[WN_SKIP] + k * R, L * R, S, R, sm, s_z + j * B * rs, rs, B, skipbuf, k * B * S,
                             S, V, -1, 0, tid, nthreads)
            post_flag(flags, L + k, i + 1, tid)


@cuda.jit(device=True)
def _head_block(first_row, rows_per, n_rows, cols, w_off, b_off, wait_first, wait_count, post_index,
                sm, status, M, V, n, src, src_bias, src_layers, dst, dst_off, dst_step, dst_stride,
                flags, err, spin_limit, B, tid, nthreads):
    """Rows [first_row, first_row + n_rows) of a [*, cols] matrix (at M[w_off], bias V[b_off]) applied
    to ReLU(input) for every step: out1 (input: the sum of ``src_layers`` [B, cols] skip
    contributions in ``src`` plus the summed skip bias V[src_bias]) or out2 (input: y1, one
    layer, no bias). Step i's output row r of stream b goes to
    dst[dst_off + i*dst_step + b*dst_stride + first_row + r]."""
    st = cols + 1
    s_in = rows_per * st
    load_padded(M, w_off + first_row * cols, n_rows, cols, sm, 0, st, tid, nthreads)
    cuda.syncthreads()
    for i in range(n):
        if not wait_flags(flags, wait_first, wait_count, i + 1, spin_limit, err, status, tid, nthreads):
            return
        for e in range(tid, B * cols, nthreads):
            b = e // cols
            c = e - b * cols
            acc = float32(0.0)
            if src_bias >= 0:
                acc = V[src_bias + c]
            for layer in range(src_layers):
                acc += src[(layer * B + b) * cols + c]
            sm[s_in + b * st + c] = max(acc, float32(0.0))
        cuda.syncthreads()  # HEAD-INPUT-BARRIER
        block_matvec(sm, 0, st, n_rows, cols, sm, s_in, st, B, dst, dst_off + i * dst_step + first_row, dst_stride,
                     V, b_off + first_row, 0, tid, nthreads)
        post_flag(flags, post_index, i + 1, tid)


@cuda.jit(cache=True)  # on a GPU: compiled once, not per process (bench runs several)
def wavenet_persistent(M, V, layer_off, head, dil, ring_off, R, S, A, Q, H1, H2, P, t0, n, mode,
                       prev, rings, label_bias, labelled, codes_in, uniforms, temps, codes_out, logits_out,
                       logits_buf, xbuf, skipbuf, y1buf, flags, err, spin_limit):
    """n samples of B streams from position t0 (see the module docstring). Grid: ceil(L / P) + H1
    + H2 blocks (P layers a layer block), all resident at once; dynamic shared memory: the largest
    role's need."""
    sm = cuda.shared.array(0, float32)
    status = cuda.shared.array(1, int32)
    tid = cuda.threadIdx.x
    if tid == 0:
        status[0] = 1  # cleared only by a timed-out wait (wait_flags); the weights' load syncs it
    nthreads = cuda.blockDim.x
    bid = cuda.blockIdx.x
    L = dil.shape[0]
    B = prev.shape[0]
    G = (L + P - 1) // P  # layer blocks
    if bid < G:
        _layer_block(bid, P, sm, status, M, V, layer_off, head, dil, ring_off, R, S, Q, L, H1, H2, t0, n, mode,
                     prev, rings, label_bias, labelled, codes_in, uniforms, temps, codes_out, logits_buf,
                     xbuf, skipbuf, flags, err, spin_limit, B, tid, nthreads)
    elif bid < G + H1:
        j = bid - G
        rows_per = (A + H1 - 1) // H1
        first = j * rows_per
        _head_block(first, rows_per, min(rows_per, A - first), S, head[WN_OUT1], head[WN_OUT1B], L, L,
                    2 * L + j, sm, status, M, V, n, skipbuf, head[WN_SKIPB], L, y1buf, 0, 0, A,
                    flags, err, spin_limit, B, tid, nthreads)
    else:
        j = bid - G - H1
        rows_per = (Q + H2 - 1) // H2
        first = j * rows_per
        if mode == SAMPLE:
            _head_block(first, rows_per, min(rows_per, Q - first), A, head[WN_OUT2], head[WN_OUT2B], 2 * L, H1,
                        2 * L + H1 + j, sm, status, M, V, n, y1buf, -1, 1, logits_buf, 0, 0, Q,
                        flags, err, spin_limit, B, tid, nthreads)
        else:
            _head_block(first, rows_per, min(rows_per, Q - first), A, head[WN_OUT2], head[WN_OUT2B], 2 * L, H1,
                        2 * L + H1 + j, sm, status, M, V, n, y1buf, -1, 1, logits_out, 0, Q, n * Q,
                        flags, err, spin_limit, B, tid, nthreads)


# ----- the host side -------------------------------------------------------------------------------------

SPIN_LIMIT = 1 << 24  # polls of one flag (about 10 s on a GPU) before the kernel gives up: a bug, not a wait
HEAD_BUDGET_BYTES = 48 * 1024  # shared memory an out1/out2 block aims at: more blocks, shorter matvecs
MAX_STREAMS = 64  # streams the persistent kernel runs at most


def head_rows(rows: int, cols: int, B: int, budget_bytes: int) -> tuple[int, int]:
    """(blocks, rows per block) splitting a [rows, cols] matrix so each block's shared memory
    (:func:`head_smem_floats`) stays within ``budget_bytes`` (at least one row per block)."""
    per = max(1, budget_bytes // 4 // (cols + 1) - B)
    blocks = -(-rows // per)
    return blocks, -(-rows // blocks)


def _device_view(x: torch.Tensor):
    """What a kernel argument is given: the tensor itself on a GPU (numba reads its
    __cuda_array_interface__), a numpy view of the CPU tensor under the simulator."""
    return x.numpy() if x.device.type == "cpu" else cuda.as_cuda_array(x)


def small_path_fit(p: dict, B: int, dev, threads=None, head_blocks=None, layers_per_block=None) -> dict:
    """The persistent kernel's launch shape for ``B`` streams of the packed model ``p`` on ``dev``,
    checked without allocating anything: ``threads``, ``H1``/``H2`` (out1/out2 blocks), ``per_block``
    (layers a block runs), ``grid`` and ``shared_bytes``. EngineError where the streams do not fit
    (more than MAX_STREAMS, more blocks or shared memory than the device has) or an option value is
    not taken."""
    R, S, A, Q = p["R"], p["S"], p["A"], p["q"]
    L = len(p["dil"])
    dev = torch.device(dev)
    if B > MAX_STREAMS:
        raise EngineError(f"the persistent WaveNet kernel runs at most {MAX_STREAMS} streams ({B} asked): "
                          "use path='large'")
    n_threads = int(threads or (32 if 2 * R * B <= 64 else 128 if 2 * R * B <= 256 else 256))
    if n_threads % 32 or not 32 <= n_threads <= 1024:
        raise EngineError(f"threads={threads}: a multiple of 32 from 32 to 1024")
    if head_blocks is None:
        H1, rows1 = head_rows(A, S, B, HEAD_BUDGET_BYTES)
        H2, rows2 = head_rows(Q, A, B, HEAD_BUDGET_BYTES)
    else:
        H1, H2 = (int(h) for h in head_blocks)
        if not (1 <= H1 <= A and 1 <= H2 <= Q):
            raise EngineError(f"head_blocks={head_blocks}: between 1 and ({A}, {Q})")
        rows1, rows2 = -(-A // H1), -(-Q // H2)
    per_block = int(layers_per_block or 1)
    if not 1 <= per_block <= L:
        raise EngineError(f"layers_per_block={layers_per_block}: from 1 to the model's {L} layers")
    grid = -(-L // per_block) + H1 + H2
    shared_bytes = 4 * max(layer_smem_floats(R, S, B, n_threads // 32, per_block),
                           head_smem_floats(rows1, S, B), head_smem_floats(rows2, A, B))
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        if grid > props.multi_processor_count:
            raise EngineError(f"the persistent kernel needs {grid} blocks resident at once, more than the "
                              f"{props.multi_processor_count} multiprocessors of {props.name}: use path='large'")
        limit = getattr(props, "shared_memory_per_block_optin", 227 * 1024)
        if shared_bytes > limit:
            raise EngineError(f"the persistent kernel needs {shared_bytes} bytes of shared memory per block, "
                              f"more than {limit} on {props.name}: use path='large'")
    return {"threads": n_threads, "H1": H1, "H2": H2, "per_block": per_block, "grid": grid,
            "shared_bytes": shared_bytes}


class PersistentWaveNet:
    """Runs :func:`wavenet_persistent` for a :class:`CudaWaveNetEngine` (its weights, state, buffers).
    ``layers_per_block`` (default 1): layers a layer block runs one after another, handing the
    residual stream on in shared memory (fewer hand-offs through global memory on the chain, more
    shared memory a block: with more than one, the skip weights are read from global memory)."""

    def __init__(self, engine, threads: int | None = None, head_blocks=None, layers_per_block: int | None = None):
        p, B, dev = engine.packed, engine.streams, engine.device
        self.engine = engine
        R, S, A, Q = p["R"], p["S"], p["A"], p["q"]
        L = len(p["dil"])
        fit = small_path_fit(p, B, dev, threads, head_blocks, layers_per_block)
        self.threads, self.H1, self.H2, self.per_block = fit["threads"], fit["H1"], fit["H2"], fit["per_block"]
        self.grid, self.shared_bytes = fit["grid"], fit["shared_bytes"]
        f32 = dict(dtype=torch.float32, device=dev)
        i64 = dict(dtype=torch.int64, device=dev)
        self.weights = [torch.from_numpy(p["M"]).to(dev), torch.from_numpy(p["V"]).to(dev),
                        torch.from_numpy(p["layer_off"]).to(dev), torch.from_numpy(p["head"]).to(dev),
                        torch.from_numpy(p["dil"]).to(dev), torch.from_numpy(p["ring_off"]).to(dev)]
        self.sizes = (R, S, A, Q, self.H1, self.H2, self.per_block)
        self.xbuf = torch.zeros(L * B * R, **f32)
        self.skipbuf = torch.zeros(L * B * S, **f32)
        self.y1buf = torch.zeros(B * A, **f32)
        self.logits_buf = torch.zeros(B * Q, **f32)
        self.flags = torch.zeros(2 * L + self.H1 + self.H2, dtype=torch.int32, device=dev)
        self.err = torch.zeros(1, dtype=torch.int32, device=dev)
        self.no_codes = torch.zeros(1, **i64)
        self.no_floats = torch.zeros(1, **f32)

    def _launch(self, mode, t0, n, codes_in, uniforms, temps, codes_out, logits_out) -> None:
        e = self.engine
        self.flags.zero_()
        self.err.zero_()
        labelled = int(e.label_blend is not None)
        tensors = (*self.weights,)
        state = (e.prev, e.rings.view(-1), e.label_bias.view(-1))
        buffers = (self.logits_buf, self.xbuf, self.skipbuf, self.y1buf, self.flags, self.err)
        args = ([_device_view(x) for x in tensors] + list(self.sizes) + [int(t0), int(n), mode]
                + [_device_view(x) for x in state[:3]] + [labelled]
                + [_device_view(x.reshape(-1)) for x in (codes_in, uniforms, temps, codes_out, logits_out)]
                + [_device_view(x) for x in buffers] + [SPIN_LIMIT])
        stream = None  # numba's default stream: torch's default (legacy) stream too
        if e.device.type == "cuda":
            handle = torch.cuda.current_stream(e.device).cuda_stream
            stream = cuda.external_stream(handle) if handle else None
        launch(wavenet_persistent, self.grid, self.threads, self.shared_bytes, tuple(args), stream)
        if int(self.err.item()):
            raise RuntimeError("the persistent WaveNet kernel timed out waiting for a block (a bug, or blocks not "
                               "resident at once): state is undefined, reset the engine")

    def run_sample(self, t0: int, uniforms: torch.Tensor, temps: torch.Tensor, codes_out: torch.Tensor) -> None:
        """codes_out [B, n] drawn with uniforms [B, n] and temperatures [B], from position t0."""
        self._launch(SAMPLE, t0, uniforms.shape[1], self.no_codes, uniforms, temps, codes_out, self.no_floats)

    def run_teacher_force(self, t0: int, codes_in: torch.Tensor, logits_out: torch.Tensor) -> None:
        """logits_out [B, n, Q] for the given codes [B, n], from position t0."""
        self._launch(TEACHER_FORCE, t0, codes_in.shape[1], codes_in, self.no_floats, self.no_floats,
                     self.no_codes, logits_out)


WAVENET_PERSISTENT_SIGNATURE = (
    "void(float32[::1], float32[::1], int64[:, ::1], int64[::1], int64[::1], int64[::1], "
    "int64, int64, int64, int64, int64, int64, int64, int64, int64, int64, "
    "int64[::1], float32[::1], float32[::1], int64, "
    "int64[::1], float32[::1], float32[::1], int64[::1], float32[::1], "
    "float32[::1], float32[::1], float32[::1], float32[::1], int32[::1], int32[::1], int64)")
register_numba_kernel("wavenet_persistent", wavenet_persistent, WAVENET_PERSISTENT_SIGNATURE)
