"""SampleRNN on the GPU for a few streams: one persistent kernel runs ``n`` samples of B streams.

The launch never returns to the host between samples. Every block takes part in every step:
the work of a step is cut into **phases**, each spread over all blocks, with a grid barrier
(an arrival counter in global memory, :func:`grid_barrier`) between a phase and the next that
reads what it wrote. Each block owns the same slice of every matrix for the whole launch and
keeps as many of its slices in shared memory as fit (loaded once, at the start; the rest is read
from global memory, where it stays in L2). Per sample:

- **tier k due at t** (``t % F_k == 0``), top tier first, per RNN layer one phase: block b
  owns the dims ``[b*dpb, (b+1)*dpb)`` and computes their gate rows (the recurrent ``W_hh @
  h``, the input rows ``W_ih @ x`` for layers above the first, or for the first layer the
  frame projection folded into ``A @ frame + C`` plus the hoisted conditioning projection),
  then the GRU/LSTM update of its dims. Then the **upsampling** phase (``up_w @ y``: the
  ``ratio`` conditioning vectors for the tier or MLP below) and, for a tier below, the
  **projection** phase: the next tier's ``w_ih @ cond`` for all ``ratio`` vectors at once
  (hoisted out of that tier's recurrent step, as in the numba engine);
- **hidden** phase: every block builds the MLP's first layer for all streams (a gather from
  the per-position tables, :func:`wavegen.kernels.packing.pack_samplernn`) in shared memory
  and computes its rows of ``hidden_w @ relu(x1)``;
- **out** phase: its rows of the logits; after a barrier every block draws every stream's code
  (one warp per stream, inverse CDF from the caller's uniforms: the same codes in every
  block), so no further hand-off is needed before the next sample.

A GRU/LSTM layer's hidden state is double-buffered (``hbuf [2, K, L, B, dim]``: tier k's step
s reads slot ``s % 2`` and writes the other), so a block writing its new dims never races a
block still reading the old vector. The MLP's hidden activations are double-buffered by the
position's parity for the same reason (teacher forcing skips the barrier after the out phase).
Each block keeps the last ``F0`` codes of every stream in shared memory as a ring (slot
``position % F0``); block 0 writes them back to ``history [B, F0]`` (oldest first) at the end.
The streams' MLP activations sit in shared memory in rows of ``dim + 1`` floats, as the weight
slices sit in rows of ``cols + 1``: lanes reading one column of different streams' rows fall in
different banks (with rows of ``dim`` floats, 16 streams' reads of a column would queue on one).

Arithmetic is float32 (literals written ``float32(...)``: a bare ``1.0`` is a float64
instruction); weights are the spec rounded to the engine's precision, stored as float32.

This module holds the kernel (the schedule of phases and barriers) and its host side; the
phases themselves are device functions in :mod:`.samplernn_small_phases`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import cuda, float32, int32

from wavegen.engine import EngineError
from wavegen.kernels.cuda import register_numba_kernel
from wavegen.kernels.cuda.common import launch, simulated
# the phases are looked up here at each call: a test that edits one patches this module's name
from wavegen.kernels.cuda.samplernn_small_phases import (CF_B, CF_F0, CF_K, CF_L, CF_LABELLED, HOIST, SAMPLE,
                                                         SAMPLE_SCRATCH, TEACHER_FORCE, cache_index, grid_barrier,
                                                         hidden_phase, layer_phase, load_caches, out_phase,
                                                         proj_phase, take_codes, up_phase)


# ----- the kernel ---------------------------------------------------------------------------------------

@cuda.jit
def samplernn_persistent(M, V, tier_off, layer_off, mlp_off, tier_int, wcache, cfg, t0, n, mode,
                         history, hbuf, cbuf, condbuf, cond_off, pbuf, p_off, label_proj,
                         codes_in, uniforms, temps, codes_out, logits_out,
                         xbuf, ybuf, logits_buf, counter, err, spin_limit):
    """n samples of B streams from position t0 (module docstring). Grid: any number of blocks,
    all resident at once; threads: a multiple of 32; dynamic shared memory: see
    :class:`PersistentSampleRNN`. mode TEACHER_FORCE (codes_in [B, n] → logits_out [B, n, Q]),
    SAMPLE (uniforms [B, n], temps [B] → codes_out [B, n]) or HOIST (pbuf from condbuf only)."""
    sm = cuda.shared.array(0, float32)
    status = cuda.shared.array(1, int32)
    tid = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    bid = cuda.blockIdx.x
    nblk = cuda.gridDim.x
    B = cfg[CF_B]
    K = cfg[CF_K]
    L = cfg[CF_L]
    F0 = cfg[CF_F0]
    if tid == 0:
        status[0] = 1  # cleared only by a timed-out wait (wait_flags)
    load_caches(M, tier_off, layer_off, mlp_off, tier_int, wcache, cfg, sm, bid, nblk, tid, nthreads)
    for e in range(tid, B * F0, nthreads):  # the past codes, as a ring: position s in slot s % F0
        b = e // F0
        p = e - b * F0
        sm[b * F0 + (t0 + p) % F0] = float32(history[e])
    cuda.syncthreads()
    ok = True  # a barrier's answer: False once a wait timed out
    if mode == HOIST:
        for k in range(K - 1):
            proj_phase(k, M, V, tier_off, tier_int, wcache, cfg, sm, condbuf, cond_off, pbuf, p_off,
                       bid, nblk, tid, nthreads)
        return
    for i in range(n):
        t = t0 + i
        for k in range(K):
            if t % tier_int[k, 0] == 0:
                for layer in range(L):
                    layer_phase(k, layer, t, M, V, tier_off, layer_off, tier_int, wcache, cfg, sm, hbuf, cbuf, ybuf,
                                pbuf, p_off, label_proj, bid, nblk, tid, nthreads)
                    ok = grid_barrier(counter, nblk, spin_limit, err, status, tid, nthreads)  # LAYER-BARRIER
                    if not ok:
                        return
                up_phase(k, t, M, V, tier_off, tier_int, wcache, cfg, sm, hbuf, ybuf, condbuf, cond_off,
                         bid, nblk, tid, nthreads)
                ok = grid_barrier(counter, nblk, spin_limit, err, status, tid, nthreads)  # UP-BARRIER
                if not ok:
                    return
                if k + 1 < K:
                    proj_phase(k, M, V, tier_off, tier_int, wcache, cfg, sm, condbuf, cond_off, pbuf, p_off,
                               bid, nblk, tid, nthreads)
                    ok = grid_barrier(counter, nblk, spin_limit, err, status, tid, nthreads)  # PROJ-BARRIER
                    if not ok:
                        return
        hidden_phase(t, M, V, mlp_off, tier_int, wcache, cfg, sm, condbuf, cond_off, xbuf, bid, nblk, tid, nthreads)
        ok = grid_barrier(counter, nblk, spin_limit, err, status, tid, nthreads)  # HIDDEN-BARRIER
        if not ok:
            return
        out_phase(t, i, n, mode, M, V, mlp_off, wcache, cfg, sm, xbuf, logits_buf, logits_out, bid, nblk,
                  tid, nthreads)
        if mode == SAMPLE:
            ok = grid_barrier(counter, nblk, spin_limit, err, status, tid, nthreads)  # OUT-BARRIER
            if not ok:
                return
        take_codes(t, i, n, mode, cfg, sm, codes_in, uniforms, temps, codes_out, logits_buf, bid, tid, nthreads)
        cuda.syncthreads()  # CODES-BARRIER
    if bid == 0:
        t_end = t0 + n
        for e in range(tid, B * F0, nthreads):
            b = e // F0
            p = e - b * F0
            history[e] = int32(sm[b * F0 + (t_end + p) % F0])


# ----- the host side -------------------------------------------------------------------------------------

SPIN_LIMIT = 1 << 24  # polls of one flag (about 10 s on a GPU) before the kernel gives up: a bug, not a wait
SHARED_RESERVE_BYTES = 1024  # left to the kernel's static shared memory (the wait status)
MAX_STREAMS = 64


class SmallPathDoesNotFit(EngineError):
    """The streams' activations do not fit a block's shared memory (the engine may take the large path)."""


def _device_view(x: torch.Tensor):
    """A kernel argument: the tensor (numba reads __cuda_array_interface__) on a GPU, a numpy view of
    the CPU tensor under the simulator."""
    return x.numpy() if x.device.type == "cpu" else cuda.as_cuda_array(x)


def _span_count(total: int, blocks: int) -> int:
    """The most items any block gets of ``total`` (the device's :func:`span`)."""
    return -(-total // blocks)


def small_path_fit(p: dict, B: int, dev, blocks=None, threads=None, smem_bytes=None) -> dict:
    """The persistent kernel's launch shape for ``B`` streams of the packed model ``p`` on ``dev``,
    checked without allocating anything: ``blocks``, ``threads``, ``dpb`` (dims per block),
    ``budget`` (shared bytes a block may use), ``end`` (floats of shared memory the activations
    take) and ``offsets`` (s_gi, s_gh, s_x, s_ws). SmallPathDoesNotFit where the streams do not
    fit (more than MAX_STREAMS, or their activations over the shared memory), EngineError for an
    option value the kernel does not take."""
    dim, G = p["dim"], p["gates"]
    if B > MAX_STREAMS:
        raise SmallPathDoesNotFit(f"the persistent SampleRNN kernel runs at most {MAX_STREAMS} streams "
                                  f"({B} asked): use path='large'")
    dev = torch.device(dev)
    on_gpu = dev.type == "cuda" and not simulated()
    props = torch.cuda.get_device_properties(dev) if on_gpu else None
    n_blocks = int(blocks or (min(props.multi_processor_count, dim) if on_gpu else 2))
    n_threads = int(threads or (256 if on_gpu else 32))
    if n_threads % 32 or not 32 <= n_threads <= 1024:
        raise EngineError(f"threads={threads}: a multiple of 32 from 32 to 1024")
    if not 1 <= n_blocks <= max(dim, 1):
        raise EngineError(f"blocks={blocks}: from 1 to the model's dim ({dim})")
    if on_gpu and n_blocks > props.multi_processor_count:
        raise EngineError(f"the persistent kernel needs its {n_blocks} blocks resident at once, more than the "
                          f"{props.multi_processor_count} multiprocessors of {props.name}")
    limit = getattr(props, "shared_memory_per_block_optin", 227 * 1024) if on_gpu else 1 << 40
    budget = int(smem_bytes if smem_bytes is not None else limit - SHARED_RESERVE_BYTES)
    F0 = int(p["tier_int"][0, 0])
    dpb = _span_count(dim, n_blocks)
    s_gi = B * F0
    s_gh = s_gi + B * G * dpb
    s_x = s_gh + B * G * dpb
    s_ws = s_x + B * (dim + 1)  # the streams' MLP activations, rows padded: lanes of different streams, other banks
    end = s_ws + SAMPLE_SCRATCH * (n_threads // 32)
    if 4 * end > min(budget, limit):
        raise SmallPathDoesNotFit(f"the persistent kernel needs {4 * end} bytes of shared memory per block "
                                  f"for {B} streams' activations, more than {min(budget, limit)}: use fewer "
                                  "streams or path='large'")
    return {"blocks": n_blocks, "threads": n_threads, "dpb": dpb, "budget": budget, "end": end,
            "offsets": (s_gi, s_gh, s_x, s_ws)}


class PersistentSampleRNN:
    """Runs :func:`samplernn_persistent` for a :class:`~wavegen.kernels.cuda.samplernn.CudaSampleRNNEngine`.

    Options: ``blocks`` (grid size; default one per multiprocessor, at most one per dim; 2 in
    the simulator), ``threads`` per block (a multiple of 32; default 256, 32 in the simulator),
    ``smem_bytes`` (shared memory a block may use: the device's opt-in limit by default, or
    unlimited in the simulator). Matrices are placed in shared memory in the order they are
    read most often (MLP, then the tiers from the bottom up) while they fit; ``matrices`` names
    them all, ``cached`` those that fit.
    """

    def __init__(self, engine, blocks: int | None = None, threads: int | None = None, smem_bytes: int | None = None):
        p, B, dev = engine.packed, engine.streams, engine.device
        self.engine = engine
        dim, G, L, K, q = p["dim"], p["gates"], p["n_layers"], len(p["tier_int"]), int(p["tier_int"][0, 2])
        fit = small_path_fit(p, B, dev, blocks, threads, smem_bytes)
        self.blocks, self.threads, budget, end = fit["blocks"], fit["threads"], fit["budget"], fit["end"]
        F0, dpb = int(p["tier_int"][0, 0]), fit["dpb"]
        s_gi, s_gh, s_x, s_ws = fit["offsets"]
        self.wcache = np.full(2 * K * L + 2 * K + 2, -1, np.int64)
        self.cached, self.matrices = [], []
        for name, index, rows, cols in self._matrices(p, K, L, G, dim, q, dpb, self.blocks):
            self.matrices.append(name)
            need = rows * (cols + 1)
            if 4 * (end + need) <= budget:
                self.wcache[index] = end
                end += need
                self.cached.append(name)
        self.shared_bytes = 4 * end
        self.cfg = np.array([B, dim, G, int(p["lstm"]), int(p["skip"]), L, q, K, F0, 0, dpb, s_gi, s_gh, s_x, s_ws],
                            np.int64)
        f32 = dict(dtype=torch.float32, device=dev)
        to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)  # noqa: E731
        self.weights = [to(p["M"]), to(p["V"]), to(p["tier_off"]), to(p["layer_off"]), to(p["mlp_off"]),
                        to(p["tier_int"]), to(self.wcache)]
        fill = math.nan if simulated() else 0.0  # an unwritten value read in a test shows as NaN
        self.xbuf = torch.full((2 * B * dim,), fill, **f32)
        self.ybuf = torch.full((max(K * B * dim, 1),), fill, **f32)
        self.logits_buf = torch.full((B * q,), fill, **f32)
        self.counter = torch.zeros(1, dtype=torch.int64, device=dev)  # the grid barrier's arrivals
        self.err = torch.zeros(1, dtype=torch.int32, device=dev)
        self.no_codes = torch.zeros(1, dtype=torch.int64, device=dev)
        self.no_floats = torch.zeros(1, **f32)

    @staticmethod
    def _matrices(p, K, L, G, dim, q, dpb, blocks):
        """(name, wcache index, rows per block, columns) of every matrix, most often read first."""
        blocks_rows = lambda rows: _span_count(rows, blocks)  # noqa: E731 - the device's span
        out = [("hidden", cache_index("hidden", K, L), blocks_rows(dim), dim),
               ("out", cache_index("out", K, L), blocks_rows(q), dim)]
        for k in reversed(range(K)):
            ratio = int(p["tier_int"][k, 1])
            for layer in range(L):
                out.append((f"tier{k}.w_hh{layer}", cache_index("whh", K, L, k, layer), G * dpb, dim))
                if layer > 0:
                    out.append((f"tier{k}.w_ih{layer}", cache_index("wih", K, L, k, layer), G * dpb, dim))
            out.append((f"tier{k}.up", cache_index("up", K, L, k), blocks_rows(ratio * dim), dim))
            if k + 1 < K:
                out.append((f"tier{k + 1}.w_ih0", cache_index("proj", K, L, k + 1), blocks_rows(G * dim), dim))
        return out

    def _launch(self, mode, t0, n, codes_in, uniforms, temps, codes_out, logits_out) -> None:
        e = self.engine
        self.counter.zero_()
        self.err.zero_()
        cfg = self.cfg.copy()
        cfg[CF_LABELLED] = int(e.label_blend is not None)
        state = (e.history.view(-1), e.hbuf.view(-1), e.cbuf.view(-1), e.condbuf, e.cond_off_dev, e.pbuf,
                 e.p_off_dev, e.label_proj.view(-1))
        args = ([_device_view(x) for x in self.weights] + [_device_view(torch.from_numpy(cfg).to(e.device))]
                + [int(t0), int(n), mode] + [_device_view(x) for x in state]
                + [_device_view(x.reshape(-1)) for x in (codes_in, uniforms, temps, codes_out, logits_out)]
                + [_device_view(x) for x in (self.xbuf, self.ybuf, self.logits_buf, self.counter, self.err)]
                + [SPIN_LIMIT])
        stream = None
        if e.device.type == "cuda":
            stream = cuda.external_stream(torch.cuda.current_stream(e.device).cuda_stream)
        launch(samplernn_persistent, self.blocks, self.threads, self.shared_bytes, tuple(args), stream)
        if int(self.err.item()):
            raise RuntimeError("the persistent SampleRNN kernel timed out waiting for a block (a bug, or blocks not "
                               "resident at once): state is undefined, reset the engine")

    def run_sample(self, t0: int, uniforms: torch.Tensor, temps: torch.Tensor, codes_out: torch.Tensor) -> None:
        """codes_out [B, n] drawn with uniforms [B, n] and temperatures [B], from position t0."""
        self._launch(SAMPLE, t0, uniforms.shape[1], self.no_codes, uniforms, temps, codes_out, self.no_floats)

    def run_teacher_force(self, t0: int, codes_in: torch.Tensor, logits_out: torch.Tensor) -> None:
        """logits_out [B, n, Q] for the given codes [B, n], from position t0."""
        self._launch(TEACHER_FORCE, t0, codes_in.shape[1], codes_in, self.no_floats, self.no_floats,
                     self.no_codes, logits_out)

    def hoist(self, t0: int) -> None:
        """Recompute every tier's input projections of its conditioning (pbuf) from condbuf, with the
        arithmetic of the sample loop (after a state is loaded: exact continuation)."""
        self._launch(HOIST, t0, 0, self.no_codes, self.no_floats, self.no_floats, self.no_codes, self.no_floats)


SAMPLERNN_PERSISTENT_SIGNATURE = (
    "void(float32[::1], float32[::1], int64[:, ::1], int64[:, :, ::1], int64[::1], int64[:, ::1], int64[::1], "
    "int64[::1], int64, int64, int64, "
    "int64[::1], float32[::1], float32[::1], float32[::1], int64[::1], float32[::1], int64[::1], float32[::1], "
    "int64[::1], float32[::1], float32[::1], int64[::1], float32[::1], "
    "float32[::1], float32[::1], float32[::1], int64[::1], int32[::1], int64)")
register_numba_kernel("samplernn_persistent", samplernn_persistent, SAMPLERNN_PERSISTENT_SIGNATURE)
