"""Building blocks shared by the numba engines: fast activations, affine maps, sampling.

Everything here is ``@njit`` and meant to be inlined into an engine's compiled sample loop.

- Weights live in two flat arrays per engine, packed by :mod:`wavegen.kernels.packing`: the
  matrix store ``M`` (the big matrices: float32, or fp16 / bf16 bits kept as uint16 / int16 to
  halve the bytes a memory-bound step reads; :func:`weight` converts on load) and the vector
  store ``V`` (float32: biases, embedding tables, small folded matrices). A matrix is
  ``O`` rows of ``I`` weights from an offset (row-major, torch's ``[out, in]`` layout). Rows
  are read through slices, never as ``M[offset + i]``: numba cannot prove such an index is
  non-negative and wraps it, which turns the inner loop into a gather (about 10x slower).
- :func:`affine` computes ``y[b] = W @ x[b] + bias`` for the streams ``lo .. hi-1``. It walks
  the weight rows in L2-sized tiles and applies each row to blocks of 8, 4, 2 or 1 streams, so
  at batch B a weight is read from memory once, not B times (batch 1 is memory-bound: weight
  bytes per sample is the cost).
- :func:`fexp` is a polynomial ``exp`` (Cephes' expf: 1-2 ulp) that LLVM vectorises, unlike
  libm's; ``tanh`` and ``sigmoid`` are built on it.
- :func:`sample_code` replicates :func:`wavegen.engine.sample_codes` (inverse CDF on
  softmax(logits / T), the CDF accumulated in float64 and rounded to float32 entry by
  entry, as torch's CPU ``cumsum`` does).
- :class:`NumbaEngine` is the engines' shared plumbing: constructor (precision, threads,
  packing), the kernel call (argument list, stream groups, compile notice), generate and
  teacher_force. A kernel runs in one of two modes, TEACHER_FORCE or SAMPLE.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import get_num_threads, njit, types
from numba.core import event as ev
from numba.extending import intrinsic, overload

from wavegen.engine import Engine, EngineError, temperatures
from wavegen.kernels.packing import STORED_PRECISIONS

logger = logging.getLogger(__name__)

# Reassociation lets LLVM vectorise dot products; no nnan/ninf: NaNs stay NaNs.
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_STREAM_COPY_BYTES = 16 << 20  # "far larger than the caches": half of this machine's 32 MB L3

# What a kernel run does at each step (its ``mode`` argument).
TEACHER_FORCE = 0  # record the logits, continue with the given code
SAMPLE = 1  # draw the code from the stream's uniform and temperature


@intrinsic
def _f32_from_bits(typingctx, bits):
    """int32 bit pattern → the float32 with those bits (a register bitcast)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@intrinsic
def _f32_from_f16_bits(typingctx, bits):
    """uint16 holding an IEEE half → float32 (exact; vcvtph2ps once vectorised)."""
    sig = types.float32(types.uint16)

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return sig, codegen


@intrinsic
def _f32_from_bf16_bits(typingctx, bits):
    """int16 holding a bfloat16 (the top half of a float32's bits) → that float32 (exact)."""
    sig = types.float32(types.int16)

    def codegen(context, builder, signature, args):
        wide = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(wide, ir.FloatType())

    return sig, codegen


def weight(v):
    """A stored weight → float32: float32 as is, uint16 read as an IEEE half (fp16 storage),
    int16 as a bfloat16 (bf16 storage)."""
    raise NotImplementedError  # only called from compiled code; see the overload below


@overload(weight, inline="always")
def _weight(v):
    if v == types.uint16:
        return lambda v: _f32_from_f16_bits(v)
    if v == types.int16:
        return lambda v: _f32_from_bf16_bits(v)
    if v == types.float32:
        return lambda v: v
    return None


@njit(fastmath=FASTMATH, inline="always", cache=True, error_model="numpy")
def fexp(x):
    """exp(x) in float32, 1-2 ulp, for x in about [-87, 88] (clamped outside). Vectorisable."""
    x = min(max(x, np.float32(-87.0)), np.float32(88.0))
    n = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
    r = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    y = p * (r * r) + r + _F1
    return y * _f32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))


@njit(fastmath=FASTMATH, inline="always", cache=True, error_model="numpy")
def fsigmoid(x):
    return _F1 / (_F1 + fexp(-x))


@njit(fastmath=FASTMATH, inline="always", cache=True, error_model="numpy")
def ftanh(x):
    # 1 - 2 / (1 + e^{2x}): exact limits at +-inf (fexp clamps), absolute error ~1e-7 near 0.
    return _F1 - np.float32(2.0) / (_F1 + fexp(np.float32(2.0) * x))


@njit(fastmath=FASTMATH, inline="always", cache=True, error_model="numpy")
def _dot8(w, x, b, n_in):
    x0, x1, x2, x3, x4, x5, x6, x7 = x[b], x[b + 1], x[b + 2], x[b + 3], x[b + 4], x[b + 5], x[b + 6], x[b + 7]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = _F0
    for i in range(n_in):
        wi = weight(w[i])
        s0 += wi * x0[i]
        s1 += wi * x1[i]
        s2 += wi * x2[i]
        s3 += wi * x3[i]
        s4 += wi * x4[i]
        s5 += wi * x5[i]
        s6 += wi * x6[i]
        s7 += wi * x7[i]
    return s0, s1, s2, s3, s4, s5, s6, s7


@njit(fastmath=FASTMATH, inline="always", cache=True, error_model="numpy")
def _dot4(w, x, b, n_in):
    x0, x1, x2, x3 = x[b], x[b + 1], x[b + 2], x[b + 3]
    s0 = s1 = s2 = s3 = _F0
    for i in range(n_in):
        wi = weight(w[i])
        s0 += wi * x0[i]
        s1 += wi * x1[i]
        s2 += wi * x2[i]
        s3 += wi * x3[i]
    return s0, s1, s2, s3


@njit(fastmath=FASTMATH, inline="always", cache=True, error_model="numpy")
def _dot2(w, x, b, n_in):
    x0, x1 = x[b], x[b + 1]
    s0 = s1 = _F0
    for i in range(n_in):
        wi = weight(w[i])
        s0 += wi * x0[i]
        s1 += wi * x1[i]
    return s0, s1


@njit(fastmath=FASTMATH, inline="always", cache=True, error_model="numpy")
def _dot1(w, x0, n_in):
    s = _F0
    for i in range(n_in):
        s += weight(w[i]) * x0[i]
    return s


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def affine(M, w_off, V, b_off, n_out, n_in, x, y, lo, hi):
    """``y[b, :n_out] = M[w_off:].reshape(n_out, n_in) @ x[b, :n_in] (+ V[b_off:b_off + n_out])``
    for streams ``lo <= b < hi``.

    M flat matrix store: float32, uint16 holding fp16 or int16 holding bf16 (converted on load,
    accumulated in float32); V flat float32; x [B, >= n_in] and y [B, >= n_out] float32, C-contiguous;
    ``b_off < 0``: no bias. Rows are taken in tiles of about 256 KB (they stay in L2 while every block of
    8, 4, 2 or 1 streams passes over them), so each weight is fetched from memory once per call.
    A stream's result depends on the block it falls in (summation order), so a given number
    of streams and threads always gives the same bits.
    """
    if hi - lo == 1:  # one stream: a plain loop of dot products runs ~1.5x faster than the blocked one
        x0 = x[lo]
        y0 = y[lo]
        for o in range(n_out):
            y0[o] = _dot1(M[w_off + o * n_in: w_off + (o + 1) * n_in], x0, n_in)
        if b_off >= 0:
            bias = V[b_off: b_off + n_out]
            for o in range(n_out):
                y0[o] += bias[o]
        return
    tile = max(8, 65536 // max(n_in, 1))
    # A matrix far larger than the caches, read for 4+ streams: copy each tile into a buffer
    # first. Streaming it and computing on it do not overlap either way, but a plain copy
    # streams from DRAM ~3x faster than the compute loop's own loads do (measured: 1.3x overall).
    stream_copy = hi - lo >= 4 and n_out * n_in * M.itemsize > _STREAM_COPY_BYTES
    buf = np.empty(tile * n_in, M.dtype) if stream_copy else M[:0]  # no allocation per call unless copying
    for o0 in range(0, n_out, tile):
        o1 = min(o0 + tile, n_out)
        if stream_copy:
            src = M[w_off + o0 * n_in: w_off + o1 * n_in]
            for k in range(src.shape[0]):
                buf[k] = src[k]
            rows, base = buf, 0
        else:
            rows, base = M, w_off + o0 * n_in
        b = lo
        while b + 8 <= hi:
            for o in range(o0, o1):
                w = rows[base + (o - o0) * n_in: base + (o - o0 + 1) * n_in]
                bias = V[b_off + o] if b_off >= 0 else _F0
                s0, s1, s2, s3, s4, s5, s6, s7 = _dot8(w, x, b, n_in)
                y[b, o] = s0 + bias
                y[b + 1, o] = s1 + bias
                y[b + 2, o] = s2 + bias
                y[b + 3, o] = s3 + bias
                y[b + 4, o] = s4 + bias
                y[b + 5, o] = s5 + bias
                y[b + 6, o] = s6 + bias
                y[b + 7, o] = s7 + bias
            b += 8
        if b + 4 <= hi:
            for o in range(o0, o1):
                w = rows[base + (o - o0) * n_in: base + (o - o0 + 1) * n_in]
                bias = V[b_off + o] if b_off >= 0 else _F0
                s0, s1, s2, s3 = _dot4(w, x, b, n_in)
                y[b, o] = s0 + bias
                y[b + 1, o] = s1 + bias
                y[b + 2, o] = s2 + bias
                y[b + 3, o] = s3 + bias
            b += 4
        if b + 2 <= hi:  # 2 or 3 streams left: a pair shares each weight load (1.5-5x faster than two passes)
            for o in range(o0, o1):
                w = rows[base + (o - o0) * n_in: base + (o - o0 + 1) * n_in]
                bias = V[b_off + o] if b_off >= 0 else _F0
                s0, s1 = _dot2(w, x, b, n_in)
                y[b, o] = s0 + bias
                y[b + 1, o] = s1 + bias
            b += 2
        for bb in range(b, hi):  # the last stream, if any, alone over the (cached) tile
            x0 = x[bb]
            y0 = y[bb]
            for o in range(o0, o1):
                y0[o] = _dot1(rows[base + (o - o0) * n_in: base + (o - o0 + 1) * n_in], x0, n_in)
            if b_off >= 0:
                bias = V[b_off: b_off + n_out]
                for o in range(o0, o1):
                    y0[o] += bias[o]


@njit(cache=True, error_model="numpy")
def sample_code(logits, u, temperature, z):
    """Inverse-CDF draw from softmax(logits / temperature). logits [Q] float32, u float32 in
    [0, 1), z [Q] float32 scratch → code (int). Same arithmetic as generate.sample_codes."""
    q = logits.shape[0]
    m = -np.inf
    for j in range(q):
        v = logits[j] / temperature
        z[j] = v
        if v > m:
            m = v
    _exp_shifted(z, np.float32(m))
    total = 0.0  # float64 running sum, each entry rounded to float32 (torch's CPU cumsum)
    for j in range(q):
        total += np.float64(z[j])
        z[j] = np.float32(total)
    threshold = np.float32(u * z[q - 1])
    count = 0
    for j in range(q):
        if z[j] <= threshold:
            count += 1
    return min(count, q - 1)


@njit(fastmath=FASTMATH, inline="always", cache=True, error_model="numpy")
def fexp_underflowing(x):
    """exp(x) as torch's exp gives it below float32's normal range: subnormal down to about
    -103.97, then exactly 0. fexp stops at its clamp (exp(-87), never 0), which made the
    sampler's u = 0 (a uniform it does draw, once in 2**24) pick code 0 where the reference picks
    the first code of non-zero probability: at a low temperature a code of probability ~0."""
    if x >= np.float32(-87.0):
        return fexp(x)
    if x < np.float32(-104.0):  # exp(-104) < 2**-150: rounds to 0
        return _F0
    # libm in float64, rounded once (rare: only these 17 units of x); fexp scaled by a power of
    # two would not do: fastmath reassociates that with fexp's own, which underflows first
    return np.float32(np.exp(np.float64(x)))


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _exp_shifted(z, m):
    for j in range(z.shape[0]):
        z[j] = fexp_underflowing(z[j] - m)


@njit(cache=True, error_model="numpy")
def rescale(code, q_levels):
    """A code → the frame tiers' input in [-2, 2): ``(code / (Q/2) - 1) * 2`` in float32."""
    return (np.float32(code) / np.float32(q_levels / 2) - _F1) * np.float32(2.0)


# ----- engine plumbing ---------------------------------------------------------------------------

def require_c_contiguous(args) -> None:
    """Every array handed to a kernel must be C-contiguous: numba would otherwise quietly compile
    a strided variant that does not vectorise (4x slower), so a layout slip fails loudly here."""
    for a in args:
        if isinstance(a, np.ndarray) and not a.flags.c_contiguous:
            raise RuntimeError(f"internal: kernel argument of shape {a.shape} is not C-contiguous")


# ----- compile-on-first-use notice ---------------------------------------------------------------

class _CompileNotice(ev.Listener):
    """Says that numba compiles, once, as its first compile starts."""

    def __init__(self):
        self.said = False

    def on_start(self, event) -> None:
        if not self.said:
            self.said = True
            logger.info("compiling numba kernels (first use on this machine)...")

    def on_end(self, event) -> None:
        pass


def announce_compile():
    """Around a kernel call: a notice before numba compiles, which it does only for a signature it has neither
    in memory nor in its on-disk cache (a first --precision fp16 on a machine whose cache holds only the fp32
    kernels' is one; a check for the cache's index file alone, which the fp32 kernels made, said nothing)."""
    return ev.install_listener("numba:compile", _CompileNotice())


def drop_stale_caches(cache_dir=None, sources=None) -> bool:
    """Delete numba's cached machine code of the kernels when any kernel source changed.

    numba checks only a cached function's own file, but this module's helpers are compiled
    into every engine's loop: after an edit here the engines would keep running the old code.
    A hash of all ``kernels/numba_*.py`` and ``packing.py`` (whose offset-column constants the
    kernels compile in) (``sources``), kept beside the cache (``cache_dir``,
    default numba's for this package), catches that. Runs when this module is imported,
    before any kernel loads from the cache. Best effort; returns whether it dropped anything.
    """
    try:
        here = Path(__file__).parent
        sources = sorted([*here.glob("numba_*.py"), here / "packing.py"]) if sources is None else list(sources)
        digest = hashlib.sha256(b"".join(Path(p).read_bytes() for p in sources)).hexdigest()[:16]
        cache_dir = Path(fexp._cache._cache_path if cache_dir is None else cache_dir)
        stamp = cache_dir / "wavegen-kernels.stamp"
        if stamp.exists() and stamp.read_text().strip() == digest:
            return False
        for f in list(cache_dir.glob("numba_*.nbi")) + list(cache_dir.glob("numba_*.nbc")):
            f.unlink(missing_ok=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest + "\n")
        return True
    except Exception:  # noqa: BLE001 - a stale cache must not stop generation
        return False


drop_stale_caches()


@njit(inline="always", cache=True, error_model="numpy")
def emit_code(mode, b, i, logits, codes_in, uniforms, temps, codes_out, logits_out, z):
    """Step i of stream b: TEACHER_FORCE records ``logits [Q]`` and returns the given code;
    SAMPLE draws a code from the stream's uniform and temperature and records it."""
    if mode == TEACHER_FORCE:
        for v in range(logits.shape[0]):
            logits_out[b, i, v] = logits[v]
        return codes_in[b, i]
    code = sample_code(logits, uniforms[b, i], temps[b], z)
    codes_out[b, i] = code
    return code


class NumbaEngine(Engine):
    """The numba engines' shared plumbing; a family's engine supplies its kernels and arguments.

    A family's kernels have the signatures ``run(*weight_args, t0, *state_args, mode, codes_in
    [B, n], uniforms [B, n], temps [B], codes_out [B, n], logits_out [B, n, Q], lo, hi)`` (streams
    lo..hi-1) and ``run_parallel(groups, *the same but lo, hi)`` (contiguous stream groups, one
    per thread). A subclass sets ``_kernels = (run, run_parallel)`` and implements ``_pack(spec,
    precision) -> dict`` (kept as ``self.packed``), ``_build(spec)`` (buffers that do not change
    with reset), ``_weight_args()`` and ``_state_args()`` (tuples, in the kernels' order), and the
    state methods.

    Options: ``precision`` ("fp32": matches the torch engine; "fp16" / "bf16": the big matrices
    stored at half the bytes, arithmetic in float32, exactly the fp32 engine on
    ``packing.round_spec(spec, precision)``); ``threads``: stream groups run in parallel
    (default: numba's thread count at each call).
    """

    backend = "numba"
    precisions = STORED_PRECISIONS
    options = ("threads",)
    device_types = ("cpu",)
    _kernels: tuple = ()

    def __init__(self, spec: dict, streams: int, device="cpu", precision: str = "fp32", threads: int | None = None):
        super().__init__(spec, streams, device, precision)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                    or threads < 1):
            raise EngineError(f"threads={threads!r}: give a whole number, at least 1")
        self.threads = None if threads is None else int(threads)
        self.packed = self._pack(spec, precision)
        self._build(spec)
        self.reset(label_weights=self.default_label_weights())

    def _pack(self, spec: dict, precision: str) -> dict:
        raise NotImplementedError

    def _build(self, spec: dict) -> None:
        raise NotImplementedError

    def _weight_args(self) -> tuple:
        raise NotImplementedError

    def _state_args(self) -> tuple:
        raise NotImplementedError

    def _groups(self) -> int:
        threads = self.threads if self.threads is not None else get_num_threads()
        return max(1, min(self.streams, threads))

    def _call(self, mode, codes_in, uniforms, temps, codes_out, logits_out) -> None:
        """Run the kernels over ``codes_in`` (TEACHER_FORCE) or ``uniforms`` (SAMPLE); advances t."""
        args = (*self._weight_args(), self.t, *self._state_args(), mode, codes_in, uniforms, temps,
                codes_out, logits_out)
        require_c_contiguous(args)
        run, run_parallel = self._kernels[0], self._kernels[1]
        groups = self._groups()
        if groups == 1:
            with announce_compile():
                run(*args, 0, self.streams)
        else:
            with announce_compile():
                run_parallel(groups, *args)
        self.t += codes_in.shape[1] if mode == TEACHER_FORCE else uniforms.shape[1]

    def generate(self, uniforms, temperature=1.0) -> np.ndarray:
        u = np.ascontiguousarray(self._check_uniforms(uniforms))
        temps = temperatures(temperature, self.streams)
        out = np.zeros(u.shape, np.int64)
        self._call(SAMPLE, np.zeros((self.streams, 0), np.int64), u, temps, out,
                   np.zeros((self.streams, 0, 0), np.float32))
        return out

    def teacher_force(self, codes) -> np.ndarray:
        codes = np.ascontiguousarray(self._check_codes(codes))
        out = np.zeros(codes.shape + (self.q_levels,), np.float32)
        self._call(TEACHER_FORCE, codes, np.zeros((self.streams, 0), np.float32), np.ones(self.streams, np.float32),
                   np.zeros((self.streams, 0), np.int64), out)
        return out
