"""WaveNet on the GPU for many streams: one Triton kernel runs every step of a call.

Each program takes ``BLOCK_B`` streams through all ``n`` steps: the whole network per step
(every layer's dilated convolution, gate, residual and skip, the output stack, the logits)
as matmuls of ``[BLOCK_B, in] x [in, out]`` tiles (``tl.dot``: tensor cores with bf16/fp16
inputs and fp32 accumulation; IEEE fp32 for precision fp32), the activations in registers,
then the draw of the next code (inverse CDF, the arithmetic of
:func:`wavegen.engine.sample_codes`, with an exact int64 fixed-point running sum standing in for
torch's float64 one). Streams never meet, so programs never wait for each other and the step loop
lives inside the kernel: one launch per call, nothing for the host to do between samples (a
CUDA graph would only replay that one launch).

Weights are packed by :func:`pack_large` into one matrix store of padded, transposed tiles
(dimensions padded to powers of two >= 16, zeros outside; ``tl.dot`` needs them) and one
float32 vector store. Layer k's tiles start at ``k * LSTRIDE``: the convolution's four
``[RP, RP]`` quarters (past→filter, past→gate, current→filter, current→gate), the residual
``[RP, RP]`` and the skip ``[RP, SP]``; then the head: out1 ``[SP, AP]``, out2 ``[AP, QP]``.
The output stack goes through a small global scratch (``[B, SP]``, ``[B, AP]``, ``[B, QP]``)
in chunks of ``CH`` columns, so no tile is larger than ``[CH, CH]`` there.

Precision on the CPU (TRITON_INTERPRET=1, tests): ``tl.dot`` is exact fp32, fp16 works, bf16
does not (the interpreter's bf16 conversion truncates and its bf16 dot is wrong), so bf16 is
checked on a GPU only. On a GPU, precision fp32 multiplies with ``input_precision="tf32x3"``
(three tf32 tensor-core products per matmul: close to fp32, not bit-exact; Triton's "ieee"
fp32 dot runs on the FMA units and spilled 23 KB of registers for wavenet-medium), so there
the fp32 logits match the torch engine to about 1e-5, not to its last bit.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from wavegen.kernels.cuda import register_triton_kernel


def _pad(n: int) -> int:
    return max(16, 1 << (int(n) - 1).bit_length())


@triton.jit
def wavenet_large_steps(W, V, dil, ring_off, prev, rings, label_bias, codes_in, uniforms, temps, codes_out,
                        logits_out, skip_buf, y1_buf, logits_buf, t0, n, B, L, labelled, mode,
                        R: tl.constexpr, Q: tl.constexpr, RP: tl.constexpr, SP: tl.constexpr,
                        AP: tl.constexpr, QP: tl.constexpr, CH: tl.constexpr, BLOCK_B: tl.constexpr,
                        PREC: tl.constexpr, FIX_BITS: tl.constexpr):
    """n steps of streams [pid*BLOCK_B, ...) from position t0 (mode 0: teacher forcing with
    codes_in [B, n] → logits_out [B, n, Q]; mode 1: sampling with uniforms [B, n], temps [B] →
    codes_out [B, n]). prev [B] and rings [sum(dil), B, R] are updated in place. Helpers are
    written inline: Triton's interpreter (the CPU tests) pays heavily for every nested call."""
    pid = tl.program_id(0)
    rb = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    mb = rb < B
    rr = tl.arange(0, RP)
    m_br = mb[:, None] & (rr < R)[None, :]
    rs = tl.arange(0, SP)
    rc = tl.arange(0, CH)
    dt = W.dtype.element_ty
    FIX: tl.constexpr = 2.0 ** FIX_BITS  # probabilities in [0, 1] as integers: Q of them fit int64
    UNFIX: tl.constexpr = 2.0 ** -FIX_BITS
    LSTRIDE: tl.constexpr = 5 * RP * RP + RP * SP
    head = L * LSTRIDE
    v_emb = L * 3 * RP
    v_skip = v_emb + Q * RP
    code = tl.load(prev + rb, mask=mb, other=0).to(tl.int64)
    for i in range(n):
        t = t0 + i
        x = tl.load(V + v_emb + code[:, None] * RP + rr[None, :])
        skip = tl.zeros([BLOCK_B, SP], tl.float32)
        for k in range(L):
            slot = tl.load(ring_off + k) + t % tl.load(dil + k)
            at = rings + (slot * B + rb[:, None]) * R + rr[None, :]
            past = tl.load(at, mask=m_br, other=0.0)
            tl.store(at, x, mask=m_br)
            # the layer's five [RP, RP] tiles as one [5*RP, RP] matrix, and its [RP, SP] skip tile:
            # block pointers, so no [RP, RP] tensor of addresses lives in registers
            wb = W + k * LSTRIDE
            vb = V + k * 3 * RP
            tiles = tl.make_block_ptr(wb, (5 * RP, RP), (RP, 1), (0, 0), (RP, RP), (1, 0))
            past_c = past.to(dt)
            x_c = x.to(dt)
            # barriers between the tiles' loads keep the compiler from holding every tile of the
            # layer in registers at once (255 registers and spills without them)
            f = tl.dot(past_c, tl.load(tiles), input_precision=PREC)
            tl.debug_barrier()
            f = tl.dot(x_c, tl.load(tl.advance(tiles, (2 * RP, 0))), f, input_precision=PREC)
            tl.debug_barrier()
            g = tl.dot(past_c, tl.load(tl.advance(tiles, (RP, 0))), input_precision=PREC)
            tl.debug_barrier()
            g = tl.dot(x_c, tl.load(tl.advance(tiles, (3 * RP, 0))), g, input_precision=PREC)
            tl.debug_barrier()
            f += tl.load(vb + rr)[None, :]
            g += tl.load(vb + RP + rr)[None, :]
            if labelled:
                lb = label_bias + (rb[:, None] * L + k) * 2 * R + rr[None, :]
                f += tl.load(lb, mask=m_br, other=0.0)
                g += tl.load(lb + R, mask=m_br, other=0.0)
            z = (2.0 / (1.0 + tl.exp(-2.0 * f)) - 1.0) / (1.0 + tl.exp(-g))  # tanh(f) * sigmoid(g)
            z_c = z.to(dt)
            if k < L - 1:  # the last layer's residual output is never read
                x = x + tl.dot(z_c, tl.load(tl.advance(tiles, (4 * RP, 0))), input_precision=PREC) \
                    + tl.load(vb + 2 * RP + rr)[None, :]
            tl.debug_barrier()
            skip_tile = tl.make_block_ptr(wb + 5 * RP * RP, (RP, SP), (SP, 1), (0, 0), (RP, SP), (1, 0))
            skip = tl.dot(z_c, tl.load(skip_tile), skip, input_precision=PREC)
        # output stack, through global scratch in [CH, CH] pieces (no tile larger than that)
        skip = tl.maximum(skip + tl.load(V + v_skip + rs)[None, :], 0.0)
        tl.store(skip_buf + rb[:, None] * SP + rs[None, :], skip, mask=mb[:, None])
        tl.debug_barrier()
        for n0 in range(0, AP, CH):  # loops, not unrolled: compile time and code size
            acc = tl.zeros([BLOCK_B, CH], tl.float32)
            for k0 in range(0, SP, CH):
                a = tl.load(skip_buf + rb[:, None] * SP + k0 + rc[None, :], mask=mb[:, None], other=0.0)
                w = tl.load(tl.make_block_ptr(W + head, (SP, AP), (AP, 1), (k0, n0), (CH, CH), (1, 0)))
                acc = tl.dot(a.to(dt), w, acc, input_precision=PREC)
            acc = tl.maximum(acc + tl.load(V + v_skip + SP + n0 + rc)[None, :], 0.0)
            tl.store(y1_buf + rb[:, None] * AP + n0 + rc[None, :], acc, mask=mb[:, None])
        tl.debug_barrier()
        for n0 in range(0, QP, CH):
            acc = tl.zeros([BLOCK_B, CH], tl.float32)
            for k0 in range(0, AP, CH):
                a = tl.load(y1_buf + rb[:, None] * AP + k0 + rc[None, :], mask=mb[:, None], other=0.0)
                w = tl.load(tl.make_block_ptr(W + head + SP * AP, (AP, QP), (QP, 1), (k0, n0), (CH, CH), (1, 0)))
                acc = tl.dot(a.to(dt), w, acc, input_precision=PREC)
            acc += tl.load(V + v_skip + SP + AP + n0 + rc)[None, :]
            if mode == 0:
                tl.store(logits_out + (rb[:, None] * n + i) * Q + n0 + rc[None, :], acc,
                         mask=mb[:, None] & (n0 + rc < Q)[None, :])
            else:
                tl.store(logits_buf + rb[:, None] * QP + n0 + rc[None, :], acc, mask=mb[:, None])
        if mode == 0:
            code = tl.load(codes_in + rb * n + i, mask=mb, other=0).to(tl.int64)
        else:
            # inverse CDF as wavegen.engine.sample_codes (whose cumulative sum runs in float64 on
            # torch's CPU), over the logits in CH-column pieces: p in fixed point (2^-FIX_BITS
            # units, int64), whose cumulative sums are exact in any order, so the GPU's parallel scan and
            # the interpreter's sequential one agree bit for bit; each prefix rounded to float32
            tl.debug_barrier()
            u = tl.load(uniforms + rb * n + i, mask=mb, other=0.0)
            temp = tl.load(temps + rb, mask=mb, other=1.0)
            m = tl.full([BLOCK_B], float("-inf"), tl.float32)
            for n0 in range(0, QP, CH):
                z = tl.load(logits_buf + rb[:, None] * QP + n0 + rc[None, :], mask=mb[:, None], other=0.0)
                z = tl.where((n0 + rc < Q)[None, :], z / temp[:, None], float("-inf"))
                m = tl.maximum(m, tl.max(z, axis=1))
            tl.debug_barrier()
            total = tl.zeros([BLOCK_B], tl.int64)
            for n0 in range(0, QP, CH):
                z = tl.load(logits_buf + rb[:, None] * QP + n0 + rc[None, :], mask=mb[:, None], other=0.0)
                z = tl.where((n0 + rc < Q)[None, :], z / temp[:, None], float("-inf"))
                total += tl.sum((tl.exp(z - m[:, None]) * FIX).to(tl.int64), axis=1)
            threshold = u * (total.to(tl.float32) * UNFIX)
            tl.debug_barrier()
            below = tl.zeros([BLOCK_B], tl.int32)
            carry = tl.zeros([BLOCK_B], tl.int64)
            for n0 in range(0, QP, CH):
                valid = (n0 + rc < Q)[None, :]
                z = tl.load(logits_buf + rb[:, None] * QP + n0 + rc[None, :], mask=mb[:, None], other=0.0)
                z = tl.where(valid, z / temp[:, None], float("-inf"))
                fixed = (tl.exp(z - m[:, None]) * FIX).to(tl.int64)
                cdf = (tl.cumsum(fixed, axis=1) + carry[:, None]).to(tl.float32) * UNFIX
                below += tl.sum(((cdf <= threshold[:, None]) & valid).to(tl.int32), axis=1)
                carry += tl.sum(fixed, axis=1)
            code = tl.minimum(below, Q - 1).to(tl.int64)
            tl.store(codes_out + rb * n + i, code, mask=mb)
    tl.store(prev + rb, code, mask=mb)


# ----- the host side ------------------------------------------------------------------------------------

def pack_large(spec: dict, dtype: torch.dtype) -> dict:
    """A (rounded) WaveNet spec → ``W`` (padded transposed tiles, ``dtype``), ``V`` (float32),
    ``dil``, ``ring_off`` (int64) and the padded sizes ``RP SP AP QP``, chunk ``CH``."""
    R, S, A, Q = (int(spec[k]) for k in ("residual_channels", "skip_channels", "end_channels", "q_levels"))
    RP, SP, AP, QP = _pad(R), _pad(S), _pad(A), _pad(Q)
    layers = spec["layers"]
    L = len(layers)
    lstride = 5 * RP * RP + RP * SP
    W = np.zeros(L * lstride + SP * AP + AP * QP, np.float32)
    V = np.zeros(L * 3 * RP + Q * RP + SP + AP + QP, np.float32)

    def put(base, matrix_out_in, rows_p, cols_p):  # store matrix.T into a [rows_p, cols_p] tile
        m = np.asarray(matrix_out_in, np.float32).T
        tile = np.zeros((rows_p, cols_p), np.float32)
        tile[:m.shape[0], :m.shape[1]] = m
        W[base:base + rows_p * cols_p] = tile.reshape(-1)

    skip_b = np.zeros(S, np.float64)
    for k, layer in enumerate(layers):
        conv = np.concatenate([np.asarray(layer["conv_w"][0]), np.asarray(layer["conv_w"][1])], axis=1)  # [2R, 2R]
        b = k * lstride
        put(b, conv[:R, :R], RP, RP)
        put(b + RP * RP, conv[R:, :R], RP, RP)
        put(b + 2 * RP * RP, conv[:R, R:], RP, RP)
        put(b + 3 * RP * RP, conv[R:, R:], RP, RP)
        put(b + 4 * RP * RP, layer["res_w"], RP, RP)
        put(b + 5 * RP * RP, layer["skip_w"], RP, SP)
        conv_b = np.asarray(layer["conv_b"], np.float32)
        V[k * 3 * RP:k * 3 * RP + R] = conv_b[:R]
        V[k * 3 * RP + RP:k * 3 * RP + RP + R] = conv_b[R:]
        V[k * 3 * RP + 2 * RP:k * 3 * RP + 2 * RP + R] = np.asarray(layer["res_b"], np.float32)
        skip_b += np.asarray(layer["skip_b"], np.float64)
    head = L * lstride
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
# 16 streams per program, 8 warps, no software pipelining (num_stages=1, in the launch and the
# compile check), barriers between a layer's tile loads, the sampler in 64-column pieces: ptxas
# (sm_90a, wavenet-medium) went from 2400 B of spill stores (bf16; 32 streams, 4 warps, 3
# stages, whole-row sampler) to 28 B (bf16) and 472 B (fp32 as 3xTF32), at 255 registers; 4 or
# 16 warps or 64 streams spill more. 4096 streams make 256 programs.
BLOCK_B, NUM_WARPS = 16, 8


class FusedWaveNet:
    """Runs :func:`wavenet_large_steps` for a :class:`CudaWaveNetEngine` (its state, on its device)."""

    def __init__(self, engine, rounded_spec: dict, block_streams: int | None = None):
        self.engine = engine
        dev, B = engine.device, engine.streams
        packed = pack_large(rounded_spec, DTYPES[engine.precision])
        self.tensors = {k: packed[k].to(dev) for k in ("W", "V", "dil", "ring_off")}
        self.sizes = {k: packed[k] for k in ("R", "Q", "RP", "SP", "AP", "QP", "CH", "FIX_BITS")}
        # fp32: three tf32 products per matmul (tensor cores, about fp32's accuracy); Triton's
        # "ieee" fp32 dot runs on the FMA units and spilled 23 KB here. 16-bit inputs ignore it.
        self.prec = "tf32x3" if engine.precision == "fp32" else "tf32"
        self.block_b = int(block_streams or BLOCK_B)
        if self.block_b < 16 or self.block_b & (self.block_b - 1):
            raise ValueError(f"block_streams={block_streams}: a power of two, at least 16")
        f32 = dict(dtype=torch.float32, device=dev)
        self.skip_buf = torch.zeros(B * packed["SP"], **f32)
        self.y1_buf = torch.zeros(B * packed["AP"], **f32)
        self.logits_buf = torch.zeros(B * packed["QP"], **f32)
        self.no_codes = torch.zeros(1, dtype=torch.int64, device=dev)
        self.no_floats = torch.zeros(1, **f32)
        self.L = len(rounded_spec["layers"])

    def _launch(self, mode, t0, n, codes_in, uniforms, temps, codes_out, logits_out) -> None:
        e, T = self.engine, self.tensors
        grid = (triton.cdiv(e.streams, self.block_b),)
        wavenet_large_steps[grid](
            T["W"], T["V"], T["dil"], T["ring_off"], e.prev, e.rings, e.label_bias, codes_in, uniforms, temps,
            codes_out, logits_out, self.skip_buf, self.y1_buf, self.logits_buf, int(t0), int(n), e.streams, self.L,
            int(e.label_blend is not None), mode, **self.sizes, BLOCK_B=self.block_b, PREC=self.prec,
            num_warps=NUM_WARPS, num_stages=1)

    def run_sample(self, t0: int, uniforms: torch.Tensor, temps: torch.Tensor, codes_out: torch.Tensor) -> None:
        self._launch(1, t0, uniforms.shape[1], self.no_codes, uniforms, temps, codes_out, self.no_floats)

    def run_teacher_force(self, t0: int, codes_in: torch.Tensor, logits_out: torch.Tensor) -> None:
        self._launch(0, t0, codes_in.shape[1], codes_in, self.no_floats, self.no_floats, self.no_codes, logits_out)


def _register() -> None:
    """The configurations the compile check builds: wavenet-medium (R64 S128 A256 Q256), fp32
    (3xTF32) and bf16."""
    sig = {"W": "*fp32", "V": "*fp32", "dil": "*i64", "ring_off": "*i64", "prev": "*i64", "rings": "*fp32",
           "label_bias": "*fp32", "codes_in": "*i64", "uniforms": "*fp32", "temps": "*fp32", "codes_out": "*i64",
           "logits_out": "*fp32", "skip_buf": "*fp32", "y1_buf": "*fp32", "logits_buf": "*fp32", "t0": "i64",
           "n": "i32", "B": "i32", "L": "i32", "labelled": "i32", "mode": "i32"}
    medium = {"R": 64, "Q": 256, "RP": 64, "SP": 128, "AP": 256, "QP": 256, "CH": 64, "BLOCK_B": BLOCK_B,
              "FIX_BITS": fix_bits(256)}
    register_triton_kernel("wavenet_large_steps[fp32]", wavenet_large_steps, sig, {**medium, "PREC": "tf32x3"},
                           num_warps=NUM_WARPS)
    register_triton_kernel("wavenet_large_steps[bf16]", wavenet_large_steps, {**sig, "W": "*bf16"},
                           {**medium, "PREC": "tf32"}, num_warps=NUM_WARPS)


_register()
