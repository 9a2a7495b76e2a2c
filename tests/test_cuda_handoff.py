"""The hand-off between blocks the persistent kernels use (kernels/cuda/common.py: post_flag,
wait_flags): a consumer reads what its producer wrote before the flag; a wait that cannot end
reports a timeout (err[0] = TIMED_OUT, False in every thread) instead of hanging the GPU, also
when another block timed out first. And the persistent SampleRNN kernel's grid barrier (an
arrival counter, kernels/cuda/samplernn_small_phases.py: grid_barrier), round after round. On
numba-cuda's simulator with tests/cudasim.py (every block of a launch at once), on the device
where a GPU is present."""

import cudasim  # noqa: F401, I001 - first: enables the simulator before numba.cuda is imported
import numpy as np
import pytest
from numba import cuda, float32, int32

from wavegen.kernels.cuda.common import ERR_POLL_EVERY, TIMED_OUT, post_flag, wait_flags
from wavegen.kernels.cuda.samplernn_small_phases import grid_barrier

pytestmark = pytest.mark.cudasim

THREADS = 32


@cuda.jit
def hand_off(flags, err, data, out, target, spin_limit):
    """Block 1 writes data, then posts flags[1] = 1; block 0 waits until flags[1] reaches
    ``target`` and copies data into out (-1 everywhere where the wait failed)."""
    status = cuda.shared.array(1, int32)
    tid = cuda.threadIdx.x
    if tid == 0:
        status[0] = 1
    cuda.syncthreads()
    if cuda.blockIdx.x == 1:
        data[tid] = float32(tid + 1)
        post_flag(flags, 1, 1, tid)
    else:
        ok = wait_flags(flags, 1, 1, target, spin_limit, err, status, tid, cuda.blockDim.x)
        out[tid] = data[tid] if ok else float32(-1.0)


def run(target: int, spin_limit: int, err0: int = 0):
    flags = np.zeros(2, np.int32)
    err = np.array([err0], np.int32)
    data = np.zeros(THREADS, np.float32)
    out = np.zeros(THREADS, np.float32)
    hand_off[2, THREADS](flags, err, data, out, target, spin_limit)
    return out, int(err[0])


def test_the_consumer_reads_what_the_producer_wrote_before_its_flag():
    out, err = run(target=1, spin_limit=1 << 24)
    assert err == 0
    assert out.tolist() == [float(i + 1) for i in range(THREADS)]


def test_a_wait_that_cannot_end_times_out_in_every_thread():
    """flags[1] never reaches 2: the wait gives up past spin_limit (looked at every ERR_POLL_EVERY polls)."""
    out, err = run(target=2, spin_limit=ERR_POLL_EVERY + 1)
    assert err == TIMED_OUT
    assert (out == -1.0).all()


def test_a_wait_gives_up_when_another_block_timed_out():
    """err[0] already set (another block's timeout): the wait stops within ERR_POLL_EVERY polls though
    its own spin limit is far away."""
    out, err = run(target=2, spin_limit=1 << 30, err0=TIMED_OUT)
    assert err == TIMED_OUT
    assert (out == -1.0).all()


@cuda.jit
def rounds_of_barriers(counter, err, data, out, rounds, spin_limit):
    """Each round every block writes its row of data, meets the others at the grid barrier, and
    sums every block's row (what it reads only adds up if all blocks wrote before it read)."""
    status = cuda.shared.array(1, int32)
    tid = cuda.threadIdx.x
    bid = cuda.blockIdx.x
    nblk = cuda.gridDim.x
    if tid == 0:
        status[0] = 1
    cuda.syncthreads()
    ok = True
    for r in range(rounds):
        data[(r * nblk + bid) * THREADS + tid] = float32(r * 1000 + bid * THREADS + tid)
        ok = grid_barrier(counter, nblk, spin_limit, err, status, tid, cuda.blockDim.x)  # THE-BARRIER
        if not ok:
            return
        acc = float32(0.0)
        for b in range(nblk):
            acc += data[(r * nblk + b) * THREADS + tid]
        out[(r * nblk + bid) * THREADS + tid] = acc


def run_rounds(kernel, blocks: int = 4, rounds: int = 5):
    counter = np.zeros(1, np.int64)
    err = np.zeros(1, np.int32)
    data = np.full(rounds * blocks * THREADS, np.nan, np.float32)  # unwritten: NaN
    out = np.zeros(rounds * blocks * THREADS, np.float32)
    kernel[blocks, THREADS](counter, err, data, out, rounds, 1 << 24)
    want = np.array([[[sum(r * 1000 + b * THREADS + t for b in range(blocks)) for t in range(THREADS)]
                      for _ in range(blocks)] for r in range(rounds)], np.float32)
    return out.reshape(rounds, blocks, THREADS), want, int(err[0]), int(counter[0])


def test_the_grid_barrier_holds_round_after_round():
    out, want, err, counter = run_rounds(rounds_of_barriers)
    assert err == 0
    assert counter == 5 * 4  # one arrival per block per round
    np.testing.assert_array_equal(out, want)


@pytest.mark.skipif(not cudasim.SIMULATED, reason="editing a kernel needs the simulator")
def test_without_the_grid_barrier_blocks_read_rows_not_yet_written():
    out, want, err, _ = run_rounds(cudasim.without_lines(rounds_of_barriers, "THE-BARRIER"))
    assert not np.array_equal(out, want)  # NaN (a row read before it was written) counts as different
