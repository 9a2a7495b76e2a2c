"""WaveNet on the GPU for many streams: two fused Triton kernels per sample step, replayed from
a CUDA graph.

One step of every stream is two launches, each program taking ``BLOCK_B`` streams:

- :func:`wavenet_large_layers`: every layer (dilated convolution over [ring slot, input], gate,
  residual) as matmuls of ``[BLOCK_B, RP] x [RP, RP]`` tiles (``tl.dot``: tensor cores with
  bf16/fp16 inputs and fp32 accumulation; 3xTF32 for precision fp32). The residual stream
  passes between layers through a small global scratch (``x_buf``, in L1/L2) and each layer's
  gated output goes to ``Z [B, L, RP]``: nothing but one layer's operands is live in registers.
- :func:`wavenet_large_head`: the skip sum as ONE matmul over every layer's gated output
  (``Z [B, L*RP] x [L*RP, S]``: no skip accumulator carried through the layers), the output
  stack, the logits, and the draw of the next code (inverse CDF, the arithmetic of
  :func:`wavegen.engine.sample_codes`, with an exact int64 fixed-point running sum standing in
  for torch's float64 one), written to ``prev`` for the next step's layers.

Sampling runs in chunks of :data:`GRAPH_STEPS` steps (64): on a CUDA device the chunk's 2 x 64
launches are captured once into a CUDA graph (per labelling: the kernels specialise on it) and
replayed for every later chunk, so the host does a few copies per 64 samples and nothing per
sample. The kernels read the chunk's first position from the device (``t_pos``) and the step's
column ``i`` from their arguments, so one graph serves every position; a chunk's uniforms,
temperatures and codes pass through fixed buffers the graph knows. The first chunk runs
launch by launch (it compiles the kernels); a partial last chunk too. A capture that fails
logs a warning and the engine keeps launching from the host (same kernels, same codes).
Teacher forcing (priming) launches from the host.

Why not one kernel looping over the steps (the previous design)? It held the whole network's
working set in one register allocation and spilled for fp32 (3xTF32) at every tile shape
tried; split in two, each kernel fits with room at 16 streams per program and 8 warps (see
``python -m wavegen.kernels.cuda --check``), and the skip matmul gets a long K dimension.

Weights are packed by :func:`pack_large` into one matrix store of padded, transposed tiles
(dimensions padded to powers of two >= 16, zeros outside; ``tl.dot`` needs them) and one
float32 vector store. Layer k's tiles start at ``k * 5 * RP * RP``: the convolution's four
``[RP, RP]`` quarters (past→filter, past→gate, current→filter, current→gate) and the residual
``[RP, RP]``; then the skip stack ``[L*RP, SP]`` (layer k's rows at ``k*RP``), out1 ``[SP,
AP]``, out2 ``[AP, QP]``. The output stack goes through per-stream scratch (``y1_buf``,
``logits_buf``) in chunks of ``CH`` columns, so no tile is larger than ``[CH, CH]`` there.

Precision on the CPU (TRITON_INTERPRET=1, tests): ``tl.dot`` is exact fp32, fp16 works, bf16
does not (the interpreter's bf16 conversion truncates and its bf16 dot is wrong), so bf16 is
checked on a GPU only. On a GPU, precision fp32 multiplies with ``input_precision="tf32x3"``
(three tf32 tensor-core products per matmul: close to fp32, not bit-exact; Triton's "ieee"
fp32 dot runs on the FMA units), so there the fp32 logits match the torch engine to about
1e-5, not to its last bit.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import triton
import triton.language as tl

from wavegen.engine import EngineError
from wavegen.kernels.cuda import register_triton_kernel

logger = logging.getLogger(__name__)


def _pad(n: int) -> int:
    return max(16, 1 << (int(n) - 1).bit_length())


@triton.jit(do_not_specialize=["i"])
def wavenet_large_layers(W, V, dil, ring_off, prev, rings, label_bias, x_buf, Z, t_pos, i, B, L, labelled,
                         R: tl.constexpr, RP: tl.constexpr, BLOCK_B: tl.constexpr, PREC: tl.constexpr):
    """Every layer of step ``t_pos[0] + i`` for streams [pid*BLOCK_B, ...): the input is the
    embedding of ``prev [B]``; each layer's ring slot is read (its input d steps ago) and
    overwritten, and its gated output z goes to ``Z [B, L, RP]`` (the weights' dtype) for the
    skip matmul of :func:`wavenet_large_head`. The residual stream x passes from layer to layer
    through ``x_buf [B, RP]`` (float32), so no activation is carried in registers across
    layers; each matmul's operands are loaded where it needs them."""
    pid = tl.program_id(0)
    rb = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    mb = rb < B
    rr = tl.arange(0, RP)
    m_br = mb[:, None] & (rr < R)[None, :]
    dt = W.dtype.element_ty
    t = tl.load(t_pos) + i
    x_at = x_buf + rb[:, None] * RP + rr[None, :]
    code = tl.load(prev + rb, mask=mb, other=0)
    tl.store(x_at, tl.load(V + L * 3 * RP + code[:, None] * RP + rr[None, :]), mask=mb[:, None])  # the embedding
    tl.debug_barrier()
    for k in range(L):
        at = rings + ((tl.load(ring_off + k) + t % tl.load(dil + k)) * B + rb[:, None]) * R + rr[None, :]
        wb = W + k * 5 * RP * RP
        vb = V + k * 3 * RP
        # filter and gate over [past, current]: one operand at a time (j = 0: the ring slot, the
        # layer's input d steps ago; j = 1: the input now), a runtime loop so that the compiler
        # does not hold both operands and all four tiles at once
        f = tl.zeros([BLOCK_B, RP], tl.float32)
        g = tl.zeros([BLOCK_B, RP], tl.float32)
        for j in range(2):
            a = tl.load(tl.where(j == 0, at, x_at), mask=m_br, other=0.0).to(dt)
            wf = wb + 2 * j * RP * RP + rr[:, None] * RP + rr[None, :]
            f = tl.dot(a, tl.load(wf), f, input_precision=PREC)
            g = tl.dot(a, tl.load(wf + RP * RP), g, input_precision=PREC)
        f += tl.load(vb + rr)[None, :]
        g += tl.load(vb + RP + rr)[None, :]
        if labelled:
            lb = label_bias + (rb[:, None] * L + k) * 2 * R + rr[None, :]
            f += tl.load(lb, mask=m_br, other=0.0)
            g += tl.load(lb + R, mask=m_br, other=0.0)
        z_c = ((2.0 / (1.0 + tl.exp(-2.0 * f)) - 1.0) / (1.0 + tl.exp(-g))).to(dt)  # tanh(f) * sigmoid(g)
        tl.store(Z + (rb[:, None] * L + k) * RP + rr[None, :], z_c, mask=mb[:, None])
        tl.debug_barrier()  # every thread has read the ring slot and x_buf
        x = tl.load(x_at, mask=mb[:, None], other=0.0)
        tl.store(at, x, mask=m_br)  # the ring slot now holds this step's input
        if k < L - 1:  # the last layer's residual output is never read
            x += tl.load(vb + 2 * RP + rr)[None, :]
            x = tl.dot(z_c, tl.load(wb + 4 * RP * RP + rr[:, None] * RP + rr[None, :]), x, input_precision=PREC)
            tl.store(x_at, x, mask=mb[:, None])
        tl.debug_barrier()  # x_buf written before the next layer reads it


@triton.jit
def _draw(logits_buf, u, temp, rb, mb, Q: tl.constexpr, QP: tl.constexpr, CH: tl.constexpr, BLOCK_B: tl.constexpr,
          FIX_BITS: tl.constexpr):
    """Codes [BLOCK_B] int64 drawn from the logits in ``logits_buf [B, QP]`` of streams ``rb`` (``mb``
    those that exist) at ``u`` and ``temp`` [BLOCK_B]: the head's inverse CDF (see there)."""
    rc = tl.arange(0, CH)
    FIX: tl.constexpr = 2.0 ** FIX_BITS  # probabilities in [0, 1] as integers: Q of them fit int64
    UNFIX: tl.constexpr = 2.0 ** -FIX_BITS
    m = tl.full([BLOCK_B], float("-inf"), tl.float32)
    for n0 in range(0, QP, CH):
        z = tl.load(logits_buf + rb[:, None] * QP + n0 + rc[None, :], mask=mb[:, None], other=0.0)
        z = tl.where((n0 + rc < Q)[None, :], z / temp[:, None], float("-inf"))
        m = tl.maximum(m, tl.max(z, axis=1))
    total = tl.zeros([BLOCK_B], tl.int64)
    for n0 in range(0, QP, CH):
        z = tl.load(logits_buf + rb[:, None] * QP + n0 + rc[None, :], mask=mb[:, None], other=0.0)
        z = tl.where((n0 + rc < Q)[None, :], z / temp[:, None], float("-inf"))
        p = tl.exp(z - m[:, None])
        total += tl.sum(tl.maximum((p * FIX).to(tl.int64), (p > 0).to(tl.int64)), axis=1)
    threshold = u * (total.to(tl.float32) * UNFIX)
    below = tl.zeros([BLOCK_B], tl.int32)
    carry = tl.zeros([BLOCK_B], tl.int64)
    for n0 in range(0, QP, CH):
        valid = (n0 + rc < Q)[None, :]
        z = tl.load(logits_buf + rb[:, None] * QP + n0 + rc[None, :], mask=mb[:, None], other=0.0)
        z = tl.where(valid, z / temp[:, None], float("-inf"))
        p = tl.exp(z - m[:, None])
        # a p > 0 counts at least one unit: at u = 0 (drawn once in 2**24) the reference takes the
        # first code of probability > 0, not the first of p >= 2^-FIX_BITS (at a low temperature
        # many codes lie between); the units added change a sum by at most Q * 2^-FIX_BITS
        fixed = tl.maximum((p * FIX).to(tl.int64), (p > 0).to(tl.int64))
        cdf = (tl.cumsum(fixed, axis=1) + carry[:, None]).to(tl.float32) * UNFIX
        below += tl.sum(((cdf <= threshold[:, None]) & valid).to(tl.int32), axis=1)
        carry += tl.sum(fixed, axis=1)
    return tl.minimum(below, Q - 1).to(tl.int64)


@triton.jit(do_not_specialize=["i"])
def wavenet_large_head(W, V, prev, Z, codes_in, uniforms, temps, codes_out, logits_out, y1_buf, logits_buf,
                       i, cols, B, L, mode, Q: tl.constexpr, RP: tl.constexpr, SP: tl.constexpr,
                       AP: tl.constexpr, QP: tl.constexpr, CH: tl.constexpr, BLOCK_B: tl.constexpr,
                       PREC: tl.constexpr, FIX_BITS: tl.constexpr):
    """The output stack of step column ``i`` for streams [pid*BLOCK_B, ...): skip = relu(Z @ skip
    weights of every layer + bias), relu(skip @ out1 + b1) @ out2 + b2 = logits; then mode 0
    (teacher forcing) stores them in ``logits_out [B, cols, Q]`` and takes the next code from
    ``codes_in [B, cols]``, mode 1 (sampling) draws it with ``uniforms [B, cols]``, ``temps [B]``
    into ``codes_out [B, cols]``. Either way the code goes to ``prev [B]``. Layers' outputs
    ``y1`` and the logits pass through per-stream scratch (``y1_buf [B, AP]``, ``logits_buf
    [B, QP]``) in ``CH``-column pieces, so no tile is larger than ``[CH, CH]`` there."""
    pid = tl.program_id(0)
    rb = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    mb = rb < B
    rr = tl.arange(0, RP)
    rs = tl.arange(0, SP)
    rc = tl.arange(0, CH)
    dt = W.dtype.element_ty
    w_skip = W + L * 5 * RP * RP
    w1 = w_skip + L * RP * SP
    w2 = w1 + SP * AP
    v_skip = V + L * 3 * RP + Q * RP
    # the skip sum: one [BLOCK_B, L*RP] x [L*RP, SP] matmul, a layer's RP rows at a time
    skip = tl.zeros([BLOCK_B, SP], tl.float32)
    for k in range(L):
        z = tl.load(Z + (rb[:, None] * L + k) * RP + rr[None, :], mask=mb[:, None], other=0.0)
        skip = tl.dot(z, tl.load(w_skip + (k * RP + rr[:, None]) * SP + rs[None, :]), skip, input_precision=PREC)
    skip = tl.maximum(skip + tl.load(v_skip + rs)[None, :], 0.0).to(dt)
    for n0 in range(0, AP, CH):  # loops, not unrolled: compile time and code size
        y = tl.dot(skip, tl.load(w1 + rs[:, None] * AP + n0 + rc[None, :]), input_precision=PREC)
        y = tl.maximum(y + tl.load(v_skip + SP + n0 + rc)[None, :], 0.0)
        tl.store(y1_buf + rb[:, None] * AP + n0 + rc[None, :], y.to(dt), mask=mb[:, None])
    tl.debug_barrier()  # y1 written by every thread before any reads it
    for n0 in range(0, QP, CH):
        acc = tl.zeros([BLOCK_B, CH], tl.float32)
        for k0 in range(0, AP, CH):
            a = tl.load(y1_buf + rb[:, None] * AP + k0 + rc[None, :], mask=mb[:, None], other=0.0)
            acc = tl.dot(a, tl.load(w2 + (k0 + rc[:, None]) * QP + n0 + rc[None, :]), acc, input_precision=PREC)
        acc += tl.load(v_skip + SP + AP + n0 + rc)[None, :]
        if mode == 0:
            tl.store(logits_out + (rb[:, None] * cols + i) * Q + n0 + rc[None, :], acc,
                     mask=mb[:, None] & (n0 + rc < Q)[None, :])
        else:
            tl.store(logits_buf + rb[:, None] * QP + n0 + rc[None, :], acc, mask=mb[:, None])
    if mode == 0:
        code = tl.load(codes_in + rb * cols + i, mask=mb, other=0).to(tl.int64)
    else:
        # inverse CDF as wavegen.engine.sample_codes (whose cumulative sum runs in float64 on
        # torch's CPU), over the logits in CH-column pieces: p in fixed point (2^-FIX_BITS units,
        # int64), whose cumulative sums are exact in any order, so the GPU's parallel scan and the
        # interpreter's sequential one agree bit for bit; each prefix rounded to float32
        tl.debug_barrier()  # the logits written by every thread
        u = tl.load(uniforms + rb * cols + i, mask=mb, other=0.0)
        temp = tl.load(temps + rb, mask=mb, other=1.0)
        code = _draw(logits_buf, u, temp, rb, mb, Q, QP, CH, BLOCK_B, FIX_BITS)
        tl.store(codes_out + rb * cols + i, code, mask=mb)
    tl.store(prev + rb, code, mask=mb)


# ----- the host side ------------------------------------------------------------------------------------

def pack_large(spec: dict, dtype: torch.dtype) -> dict:
    """A (rounded) WaveNet spec → ``W`` (padded transposed tiles, ``dtype``), ``V`` (float32),
    ``dil``, ``ring_off`` (int64) and the padded sizes ``RP SP AP QP``, chunk ``CH``."""
    R, S, A, Q = (int(spec[k]) for k in ("residual_channels", "skip_channels", "end_channels", "q_levels"))
    RP, SP, AP, QP = _pad(R), _pad(S), _pad(A), _pad(Q)
    layers = spec["layers"]
    L = len(layers)
    W = np.zeros(L * 5 * RP * RP + L * RP * SP + SP * AP + AP * QP, np.float32)
    V = np.zeros(L * 3 * RP + Q * RP + SP + AP + QP, np.float32)

    def put(base, matrix_out_in, rows_p, cols_p):  # store matrix.T into a [rows_p, cols_p] tile
        m = np.asarray(matrix_out_in, np.float32).T
        tile = np.zeros((rows_p, cols_p), np.float32)
        tile[:m.shape[0], :m.shape[1]] = m
        W[base:base + rows_p * cols_p] = tile.reshape(-1)

    skip_b = np.zeros(S, np.float64)
    w_skip = L * 5 * RP * RP
    for k, layer in enumerate(layers):
        conv = np.concatenate([np.asarray(layer["conv_w"][0]), np.asarray(layer["conv_w"][1])], axis=1)  # [2R, 2R]
        b = k * 5 * RP * RP
        put(b, conv[:R, :R], RP, RP)
        put(b + RP * RP, conv[R:, :R], RP, RP)
        put(b + 2 * RP * RP, conv[:R, R:], RP, RP)
        put(b + 3 * RP * RP, conv[R:, R:], RP, RP)
        put(b + 4 * RP * RP, layer["res_w"], RP, RP)
        put(w_skip + k * RP * SP, layer["skip_w"], RP, SP)  # rows k*RP.. of the [L*RP, SP] skip stack
        conv_b = np.asarray(layer["conv_b"], np.float32)
        V[k * 3 * RP:k * 3 * RP + R] = conv_b[:R]
        V[k * 3 * RP + RP:k * 3 * RP + RP + R] = conv_b[R:]
        V[k * 3 * RP + 2 * RP:k * 3 * RP + 2 * RP + R] = np.asarray(layer["res_b"], np.float32)
        skip_b += np.asarray(layer["skip_b"], np.float64)
    head = w_skip + L * RP * SP
    put(head, spec["out1_w"], SP, AP)
    put(head + SP * AP, spec["out2_w"], AP, QP)
    v = L * 3 * RP
    V[v:v + Q * RP] = np.pad(np.asarray(spec["embed"], np.float32), ((0, 0), (0, RP - R))).reshape(-1)
    v += Q * RP
    V[v:v + S] = skip_b
    V[v + SP:v + SP + A] = np.asarray(spec["out1_b"], np.float32)
    V[v + SP + AP:v + SP + AP + Q] = np.asarray(spec["out2_b"], np.float32)
    dil = np.array([int(layer["dilation"]) for layer in layers], np.int64)
    return {"W": torch.from_numpy(W).to(dtype), "V": torch.from_numpy(V), "dil": torch.from_numpy(dil),
            "ring_off": torch.from_numpy(np.concatenate([[0], np.cumsum(dil)[:-1]]).astype(np.int64)),
            "R": R, "Q": Q, "RP": RP, "SP": SP, "AP": AP, "QP": QP, "CH": min(64, SP, AP, QP),
            "FIX_BITS": fix_bits(Q)}


def fix_bits(q: int) -> int:
    """Fractional bits of the sampler's fixed-point probabilities: q values of at most 1 must sum
    below 2^63 (54 for q = 256; a small q keeps more bits)."""
    return min(60, 62 - max(1, (int(q) - 1).bit_length()))


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BLOCK_B, NUM_WARPS = 16, 8
GRAPH_STEPS = 64  # steps per CUDA graph: 2 kernel nodes each


class FusedWaveNet:
    """Runs :func:`wavenet_large_layers` and :func:`wavenet_large_head` for a
    :class:`CudaWaveNetEngine` (its state, on its device), sampling in chunks of
    :data:`GRAPH_STEPS` steps, replayed from a CUDA graph where ``graph`` (default: on a CUDA
    device; False: every launch from the host)."""

    def __init__(self, engine, rounded_spec: dict, block_streams: int | None = None, graph: bool | None = None):
        self.engine = engine
        dev, B = engine.device, engine.streams
        packed = pack_large(rounded_spec, DTYPES[engine.precision])
        self.tensors = {k: packed[k].to(dev) for k in ("W", "V", "dil", "ring_off")}
        self.R, self.RP = packed["R"], packed["RP"]  # the layer kernel's sizes; the head's:
        self.head_sizes = {k: packed[k] for k in ("Q", "RP", "SP", "AP", "QP", "CH", "FIX_BITS")}
        # fp32: three tf32 products per matmul (tensor cores, about fp32's accuracy); Triton's
        # "ieee" fp32 dot runs on the FMA units and spills. 16-bit inputs ignore it.
        self.prec = "tf32x3" if engine.precision == "fp32" else "tf32"
        self.block_b = int(block_streams or BLOCK_B)
        if self.block_b < 16 or self.block_b & (self.block_b - 1):
            raise EngineError(f"block_streams={block_streams}: a power of two, at least 16")
        on_gpu = torch.device(dev).type == "cuda"
        if graph and not on_gpu:
            raise EngineError("graph=True needs a CUDA device")
        self.graph = on_gpu if graph is None else bool(graph)  # turned off for good by a failed capture
        self.chunk = GRAPH_STEPS
        self.L = len(rounded_spec["layers"])
        wdt = {"dtype": DTYPES[engine.precision], "device": dev}
        self.Z = torch.zeros((B, self.L, packed["RP"]), **wdt)
        self.y1_buf = torch.zeros((B, packed["AP"]), **wdt)
        f32, i64 = {"dtype": torch.float32, "device": dev}, {"dtype": torch.int64, "device": dev}
        self.x_buf = torch.zeros((B, packed["RP"]), **f32)
        self.logits_buf = torch.zeros((B, packed["QP"]), **f32)
        self.t_pos = torch.zeros(1, **i64)  # the chunk's first position, read by the kernels (a graph replays any)
        self.u_buf = torch.zeros((B, self.chunk), **f32)  # a chunk's uniforms, codes and temperatures, where
        self.codes_buf = torch.zeros((B, self.chunk), **i64)  # a graph finds them
        self.temps_buf = torch.ones(B, **f32)
        self.no_codes, self.no_floats = torch.zeros(1, **i64), torch.zeros(1, **f32)
        self.graphs = {}  # labelled (0 or 1) → CUDA graph of one chunk of sampling
        self.warm = set()  # labellings whose kernels ran (compiled) outside a capture

    def _layers(self, i: int) -> None:
        e, T = self.engine, self.tensors
        wavenet_large_layers[(triton.cdiv(e.streams, self.block_b),)](
            T["W"], T["V"], T["dil"], T["ring_off"], e.prev, e.rings, e.label_bias, self.x_buf, self.Z, self.t_pos, i,
            e.streams, self.L, int(e.label_blend is not None), R=self.R, RP=self.RP,
            BLOCK_B=self.block_b, PREC=self.prec, num_warps=NUM_WARPS, num_stages=1)

    def _head(self, mode, i, cols, codes_in, uniforms, temps, codes_out, logits_out) -> None:
        e, T = self.engine, self.tensors
        wavenet_large_head[(triton.cdiv(e.streams, self.block_b),)](
            T["W"], T["V"], e.prev, self.Z, codes_in, uniforms, temps, codes_out, logits_out, self.y1_buf,
            self.logits_buf, i, cols, e.streams, self.L, mode, **self.head_sizes, BLOCK_B=self.block_b, PREC=self.prec,
            num_warps=NUM_WARPS, num_stages=1)

    def _sample_chunk(self, steps: int) -> None:
        """``steps`` sampling steps from position t_pos[0]: uniforms from u_buf, codes into codes_buf."""
        for i in range(steps):
            self._layers(i)
            self._head(1, i, self.chunk, self.no_codes, self.u_buf, self.temps_buf, self.codes_buf, self.no_floats)

    def _graph(self):
        """The CUDA graph of a whole chunk for the current labelling, captured on first need; None
        where graphs are off, the kernels not yet compiled, or a capture failed (then never again)."""
        key = int(self.engine.label_blend is not None)
        if not self.graph or key not in self.warm or key in self.graphs:
            return self.graphs.get(key)
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._sample_chunk(self.chunk)
        except Exception as err:  # noqa: BLE001 - no graph is slower, not wrong: launch one by one
            logger.warning("cuda WaveNet large path: CUDA graph capture failed (%s: %s); launching kernels "
                           "from the host instead", type(err).__name__, str(err).split("\n")[0])
            self.graph = False
            return None
        self.graphs[key] = graph
        return graph

    def run_sample(self, t0: int, uniforms: torch.Tensor, temps: torch.Tensor, codes_out: torch.Tensor) -> None:
        """Codes for ``uniforms [B, n]`` (on the device) from position t0 into ``codes_out [B, n]``."""
        self.temps_buf.copy_(temps)
        n = uniforms.shape[1]
        for c0 in range(0, n, self.chunk):
            steps = min(self.chunk, n - c0)
            self.t_pos.fill_(t0 + c0)
            self.u_buf[:, :steps].copy_(uniforms[:, c0:c0 + steps])
            graph = self._graph() if steps == self.chunk else None
            if graph is not None:
                graph.replay()
            else:
                self._sample_chunk(steps)
                self.warm.add(int(self.engine.label_blend is not None))
            codes_out[:, c0:c0 + steps].copy_(self.codes_buf[:, :steps])

    def run_teacher_force(self, t0: int, codes_in: torch.Tensor, logits_out: torch.Tensor) -> None:
        """Logits ``[B, n, Q]`` for ``codes_in [B, n]`` from position t0 (launched from the host:
        priming, not the hot path)."""
        self.t_pos.fill_(t0)
        n = codes_in.shape[1]
        for i in range(n):
            self._layers(i)
            self._head(0, i, n, codes_in, self.no_floats, self.no_floats, self.no_codes, logits_out)


def _register() -> None:
    """The configurations the compile check builds: wavenet-medium (R64 S128 A256 Q256) at each
    precision (fp32 as 3xTF32, fp16, bf16)."""
    layers = {"W": "*fp32", "V": "*fp32", "dil": "*i64", "ring_off": "*i64", "prev": "*i64", "rings": "*fp32",
              "label_bias": "*fp32", "x_buf": "*fp32", "Z": "*fp32", "t_pos": "*i64", "i": "i32", "B": "i32",
              "L": "i32", "labelled": "i32"}
    head = {"W": "*fp32", "V": "*fp32", "prev": "*i64", "Z": "*fp32", "codes_in": "*i64", "uniforms": "*fp32",
            "temps": "*fp32", "codes_out": "*i64", "logits_out": "*fp32", "y1_buf": "*fp32", "logits_buf": "*fp32",
            "i": "i32", "cols": "i32", "B": "i32", "L": "i32", "mode": "i32"}
    medium = {"Q": 256, "RP": 64, "SP": 128, "AP": 256, "QP": 256, "CH": 64, "FIX_BITS": fix_bits(256)}
    for precision, ty in (("fp32", "*fp32"), ("fp16", "*fp16"), ("bf16", "*bf16")):
        prec = "tf32x3" if precision == "fp32" else "tf32"
        register_triton_kernel(f"wavenet_large_layers[{precision}]", wavenet_large_layers,
                               {**layers, "W": ty, "Z": ty},
                               {"R": 64, "RP": 64, "BLOCK_B": BLOCK_B, "PREC": prec}, num_warps=NUM_WARPS)
        register_triton_kernel(f"wavenet_large_head[{precision}]", wavenet_large_head,
                               {**head, "W": ty, "Z": ty, "y1_buf": ty},
                               {**medium, "BLOCK_B": BLOCK_B, "PREC": prec}, num_warps=NUM_WARPS)


_register()
