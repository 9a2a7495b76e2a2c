"""Device helpers shared by the numba-cuda kernels, and launching them.

Everything here is float32 on the device: literals are written ``float32(1.0)`` (a bare
``1.0`` compiles to float64 instructions, which the compile check refuses).

- :func:`block_matvec`: ``Y[b, r] = bias[r] + W[r, :] . X[b, :]`` for every row and stream, by
  all threads of a block; each (row, stream) item is summed by a group of lanes whose partial
  sums meet by warp shuffles (the group grows when there are fewer items than threads).
- :func:`wait_flags` / :func:`post_flag`: blocks hand results to each other through counters
  in global memory (nv-wavenet's way; no grid barrier). A producer writes its data, fences,
  then sets its counter (an atomic exchange) to the number of steps it has finished; a
  consumer polls the counter with plain loads that bypass L1 (``ld.global.cv``: each poll
  reads the L2 copy the exchange wrote, and, unlike an atomic, does not queue behind the other
  pollers of the same word), fences, and only then reads. A poll that runs past
  ``spin_limit`` reports a timeout instead of hanging the GPU.
- :func:`warp_sample`: one warp draws a code by inverse CDF, the arithmetic of
  :func:`wavegen.engine.sample_codes` on torch's CPU (a float64 running sum of the
  probabilities, each prefix rounded to float32), here with float32 pairs (hi, lo) that carry
  the sum to about 48 bits, so that no float64 instruction is needed.
"""

from __future__ import annotations

import math

from numba import cuda, float32, int32

FULL = 0xFFFFFFFF  # every lane of a warp
TIMED_OUT = 1  # error code a block leaves in err[0] when a wait runs past spin_limit
# A waiting thread looks at err[0] (and its own spin count) every this many polls of its flag, not
# every poll: err is one word, and every waiting thread of every block polling it (132 x 132 at
# one stream on an H200) would queue on one L2 address while the flags spread over many.
ERR_POLL_EVERY = 256


# ----- arithmetic ------------------------------------------------------------------------------------

@cuda.jit(device=True)
def sigmoid(x):
    return float32(1.0) / (float32(1.0) + float32(math.exp(-x)))


@cuda.jit(device=True)
def warp_sum(v):
    off = 16
    while off > 0:
        v += cuda.shfl_xor_sync(FULL, v, off)
        off //= 2
    return v


@cuda.jit(device=True)
def warp_max(v):
    off = 16
    while off > 0:
        v = max(v, cuda.shfl_xor_sync(FULL, v, off))
        off //= 2
    return v


@cuda.jit(device=True)
def df_add(a_hi, a_lo, b_hi, b_lo):
    """(a_hi + a_lo) + (b_hi + b_lo) in float32 pairs (two-sum, then renormalise): (hi, lo)."""
    s = a_hi + b_hi
    bb = s - a_hi
    e = (a_hi - (s - bb)) + (b_hi - bb)
    e += a_lo + b_lo
    hi = s + e
    lo = e - (hi - s)
    return hi, lo


@cuda.jit(device=True)
def group_size(items, cols, nthreads):
    """Lanes per (row, stream) item: a power of two up to 32, while the items still fill the block."""
    g = 1
    while g < 32 and g * 2 <= cols and items * g * 2 <= nthreads:
        g *= 2
    return g


@cuda.jit(device=True)
def block_matvec(W, w_off, w_stride, rows, cols, X, x_off, x_stride, B, Y, y_off, y_stride,
                 bias, b_off, accumulate, tid, nthreads):
    """Y[y_off + b*y_stride + r] (+)= bias[b_off + r] + sum_i W[w_off + r*w_stride + i] * X[x_off + b*x_stride + i]
    for r < rows, b < B: no bias where b_off < 0; added to Y's value where ``accumulate``. Called by
    every thread of the block (the shuffles need whole warps); the caller synchronises before
    reading Y."""
    items = rows * B
    g = group_size(items, cols, nthreads)
    groups = nthreads // g
    lane_in_group = tid % g
    rounds = (items + groups - 1) // groups
    for k in range(rounds):
        item = k * groups + tid // g
        r = item // B
        b = item - r * B
        acc = float32(0.0)
        if item < items:
            w = w_off + r * w_stride
            x = x_off + b * x_stride
            for i in range(lane_in_group, cols, g):
                acc += W[w + i] * X[x + i]
        off = g // 2
        while off > 0:
            acc += cuda.shfl_down_sync(FULL, acc, off)
            off //= 2
        if item < items and lane_in_group == 0:
            if b_off >= 0:
                acc += bias[b_off + r]
            if accumulate:
                acc += Y[y_off + b * y_stride + r]
            Y[y_off + b * y_stride + r] = acc


@cuda.jit(device=True)
def load_padded(src, s_off, rows, cols, dst, d_off, d_stride, tid, nthreads):
    """dst[d_off + r*d_stride + c] = src[s_off + r*cols + c]: a [rows, cols] matrix into shared
    memory with padded rows (an odd stride spreads a warp's rows over the banks)."""
    for i in range(tid, rows * cols, nthreads):
        r = i // cols
        dst[d_off + r * d_stride + i - r * cols] = src[s_off + i]


# ----- hand-off between blocks ------------------------------------------------------------------------

@cuda.jit(device=True)
def wait_flags(flags, first, count, target, spin_limit, err, status, tid, nthreads):
    """Wait until flags[first .. first+count-1] all reach ``target``; then every thread of the block
    may read what their producers wrote. Returns False (in every thread) when a poll ran past
    ``spin_limit`` or another block already timed out (err[0] set): the caller returns. Both are
    looked at every ``ERR_POLL_EVERY`` polls (so a timeout is seen within that many more).
    ``status[0]`` is shared memory the kernel set to 1 at its start; only a timeout clears it."""
    for j in range(tid, count, nthreads):
        spins = 0
        while cuda.ldcv(flags, first + j) < target:
            spins += 1
            if spins % ERR_POLL_EVERY == 0 and (spins > spin_limit or cuda.ldcv(err, 0) != 0):
                cuda.atomic.exch(err, 0, TIMED_OUT)
                status[0] = 0
                break
        cuda.threadfence()  # acquire: the producer's data is read after its flag
    cuda.syncthreads()  # WAIT-BARRIER
    return status[0] == 1


@cuda.jit(device=True)
def post_flag(flags, index, value, tid):
    """Publish this block's results of a step: every thread's writes, then flags[index] = value."""
    cuda.threadfence()  # release: the data before the flag, seen from any block
    cuda.syncthreads()  # POST-BARRIER
    if tid == 0:
        cuda.atomic.exch(flags, index, value)


# ----- sampling ---------------------------------------------------------------------------------------

@cuda.jit(device=True)
def warp_sample(logits, l_off, q, u, temperature, scratch, s_off, lane):
    """Inverse-CDF code from softmax(logits[l_off : l_off+q] / temperature) for the uniform u,
    computed by one whole warp (every lane gets the code): the number of CDF entries <= u * total,
    clamped to q-1, as wavegen.engine.sample_codes. Each lane takes a contiguous chunk of the q
    entries; the lanes meet through ``scratch[s_off : s_off + 128]`` (shared memory of this
    warp), three times, rather than through two dozen shuffles."""
    chunk = (q + 31) // 32
    lo_j = min(lane * chunk, q)
    hi_j = min(lo_j + chunk, q)
    m = logits[l_off] / temperature
    for j in range(lo_j, hi_j):
        m = max(m, logits[l_off + j] / temperature)
    cuda.syncwarp(FULL)  # the previous call's readers are done with scratch
    scratch[s_off + lane] = m
    cuda.syncwarp(FULL)  # SAMPLE-MAX-BARRIER
    for j in range(32):
        m = max(m, scratch[s_off + j])
    s_hi = float32(0.0)
    s_lo = float32(0.0)
    for j in range(lo_j, hi_j):
        p = float32(math.exp(logits[l_off + j] / temperature - m))
        s_hi, s_lo = df_add(s_hi, s_lo, p, float32(0.0))
    scratch[s_off + 32 + lane] = s_hi
    scratch[s_off + 64 + lane] = s_lo
    cuda.syncwarp(FULL)  # SAMPLE-SUM-BARRIER
    # every lane adds the 32 chunk sums in the same order: the same total everywhere, and what
    # comes before its own chunk
    e_hi = float32(0.0)
    e_lo = float32(0.0)
    t_hi = float32(0.0)
    t_lo = float32(0.0)
    for j in range(32):
        if j == lane:
            e_hi = t_hi
            e_lo = t_lo
        t_hi, t_lo = df_add(t_hi, t_lo, scratch[s_off + 32 + j], scratch[s_off + 64 + j])
    threshold = u * t_hi
    count = 0
    for j in range(lo_j, hi_j):
        p = float32(math.exp(logits[l_off + j] / temperature - m))
        e_hi, e_lo = df_add(e_hi, e_lo, p, float32(0.0))
        if e_hi <= threshold:
            count += 1
    scratch[s_off + 96 + lane] = float32(count)
    cuda.syncwarp(FULL)  # SAMPLE-COUNT-BARRIER
    total = 0
    for j in range(32):
        total += int32(scratch[s_off + 96 + j])
    return min(total, q - 1)


# ----- launching ----------------------------------------------------------------------------------------

def simulated() -> bool:
    """True where numba-cuda runs kernels in its simulator (NUMBA_ENABLE_CUDASIM=1)."""
    from numba.cuda.core import config

    return bool(config.ENABLE_CUDASIM)


_SPECIALIZED: dict = {}


def launch(kernel, grid: int, block: int, shared_bytes: int, args: tuple, stream=None) -> None:
    """``kernel[grid, block, stream, shared_bytes](*args)``. On a GPU, a kernel asking for more than
    the default 48 KB of dynamic shared memory is first allowed it (cuFuncSetAttribute), on a
    copy specialised to these argument types so the attribute and the launch meet the same code."""
    if simulated() or shared_bytes <= 48 * 1024:
        kernel[grid, block, stream or 0, shared_bytes](*args)
        return
    from numba.cuda.cudadrv.driver import binding, driver

    key = (kernel, tuple(kernel.typeof_pyval(a) for a in args))
    entry = _SPECIALIZED.get(key)
    if entry is None or entry[1] < shared_bytes:
        special = entry[0] if entry else kernel.specialize(*args)
        compiled = next(iter(special.overloads.values()))
        cufunc = compiled._codelibrary.get_cufunc()
        attr = binding.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        driver.cuKernelSetAttribute(attr, int(shared_bytes), cufunc.handle, cufunc.device.id)
        entry = _SPECIALIZED[key] = (special, shared_bytes)
    entry[0][grid, block, stream or 0, shared_bytes](*args)
