"""The simulator extension (tests/cudasim.py) behaves as a GPU where the stock simulator does not:
grid barriers across blocks, warp intrinsics, per-block NaN-filled shared memory, deadlocks
reported. On a GPU the same kernels run on the device (the simulator-only checks skip)."""

import cudasim  # noqa: I001 - first: enables the simulator before numba.cuda is imported
import numpy as np
import pytest
from numba import cuda, float32, int32

pytestmark = pytest.mark.cudasim
only_simulated = pytest.mark.skipif(not cudasim.SIMULATED, reason="checks the simulator itself")


@cuda.jit
def grid_sum(x, partial, out, shared_ids):
    """Blocks sum their slices (warp shuffles), meet at a grid barrier, then block 0 adds the partials.
    Each block also keeps its id in its own shared memory across the barrier."""
    tid = cuda.threadIdx.x
    b = cuda.blockIdx.x
    mine = cuda.shared.array(1, int32)
    warps = cuda.shared.array(2, float32)
    v = x[b * cuda.blockDim.x + tid]
    off = 16
    while off > 0:
        v += cuda.shfl_down_sync(0xFFFFFFFF, v, off)
        off //= 2
    if tid % 32 == 0:
        warps[tid // 32] = v
    if tid == 0:
        mine[0] = b
    cuda.syncthreads()  # BLOCK-BARRIER
    if tid == 0:
        partial[b] = warps[0] + warps[1]
    cuda.cg.this_grid().sync()  # GRID-BARRIER
    if tid == 0:
        shared_ids[b] = mine[0]
    if b == 0 and tid == 0:
        acc = float32(0.0)
        for i in range(cuda.gridDim.x):
            acc += partial[i]
        out[0] = acc


def run_grid_sum(kernel):
    x = np.arange(4 * 64, dtype=np.float32)
    partial, out, ids = np.zeros(4, np.float32), np.zeros(1, np.float32), np.zeros(4, np.int32)
    kernel[4, 64](x, partial, out, ids)
    return out[0], x.sum(), ids


def test_grid_barrier_shuffles_and_per_block_shared_memory():
    got, want, ids = run_grid_sum(grid_sum)
    assert got == want
    assert list(ids) == [0, 1, 2, 3]  # one shared array per block


@only_simulated
def test_a_deleted_grid_or_block_barrier_is_caught():
    got, want, _ = run_grid_sum(cudasim.without_lines(grid_sum, "GRID-BARRIER"))
    assert got != want  # block 0 read partials the other blocks had not written yet
    got, _, _ = run_grid_sum(cudasim.without_lines(grid_sum, "BLOCK-BARRIER"))
    assert np.isnan(got)  # an unwritten shared value is NaN
    with pytest.raises(AssertionError, match="expected 1"):
        cudasim.without_lines(grid_sum, "NO-SUCH-MARKER")


@cuda.jit
def warp_ops(x, out):
    lane = cuda.threadIdx.x % 32
    v = x[cuda.threadIdx.x]
    out[0, cuda.threadIdx.x] = cuda.shfl_sync(0xFFFFFFFF, v, 3)
    out[1, cuda.threadIdx.x] = cuda.shfl_up_sync(0xFFFFFFFF, v, 2)
    out[2, cuda.threadIdx.x] = cuda.shfl_xor_sync(0xFFFFFFFF, v, 5)
    out[3, cuda.threadIdx.x] = cuda.ballot_sync(0xFFFFFFFF, lane % 3 == 0)
    out[4, cuda.threadIdx.x] = cuda.any_sync(0xFFFFFFFF, lane == 7) + 2 * cuda.all_sync(0xFFFFFFFF, lane < 40)


def test_warp_intrinsics():
    x = np.arange(64, dtype=np.int64) * 10
    out = np.zeros((5, 64), np.int64)
    warp_ops[1, 64](x, out)
    lanes = np.arange(64) % 32
    base = np.arange(64) - lanes
    assert np.array_equal(out[0], x[base + 3])
    assert np.array_equal(out[1], np.where(lanes >= 2, x[np.arange(64) - 2], x))
    assert np.array_equal(out[2], x[base + (lanes ^ 5)])
    assert np.all(out[3] == sum(1 << i for i in range(0, 32, 3)))
    assert np.all(out[4] == 3)


@cuda.jit
def half_barrier(out):
    if cuda.threadIdx.x == 0:
        cuda.syncthreads()
    out[cuda.threadIdx.x] = 1


@only_simulated
def test_a_barrier_some_threads_never_reach_is_reported():
    with pytest.raises(cudasim.SimulatorDeadlock, match="barrier"):
        half_barrier[1, 32](np.zeros(32, np.int64))


@pytest.mark.skipif(not cudasim.TRITON_INTERPRETED, reason="checks the interpreter (on a GPU Triton's launcher refuses)")
def test_the_triton_interpreter_refuses_a_keyword_the_kernel_does_not_take():
    # As the GPU's launcher does (a head kernel launched with the layer kernel's R ran on the CPU
    # and failed on the H200): every keyword names a parameter or a launch option.
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def double(x, y, n, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        tl.store(y + i, 2 * tl.load(x + i, mask=i < n), mask=i < n)

    x, y = torch.arange(4, dtype=torch.float32), torch.zeros(4)
    double[(1,)](x, y, 4, BLOCK=4, num_warps=1)
    assert y.tolist() == [0.0, 2.0, 4.0, 6.0]
    with pytest.raises(KeyError, match="Keyword argument R was specified but unrecognised"):
        double[(1,)](x, y, 4, BLOCK=4, R=8, num_warps=1)
