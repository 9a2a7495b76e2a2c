"""numba-cuda's simulator, extended so that multi-block kernels run as they would on a GPU.

Tests-only code. numba-cuda's stock simulator (``NUMBA_ENABLE_CUDASIM=1``) runs the blocks of
a launch one after another, treats ``cuda.cg.this_grid().sync()`` as a block barrier
(silently wrong for more than one block), has no warp shuffles or ballots, and gives every
block the same shared-memory arrays. This extension replaces its launch:

- **every block of a launch runs at once**: each CUDA thread is a greenlet, and a scheduler
  runs them in turn, switching at every barrier, warp intrinsic and atomic. Blocks that hand
  data to each other through flags in global memory, or meet at a grid barrier, run as on the
  device; a missing wait shows as a wrong or NaN result, a deadlock as an error. The
  interleaving is deterministic (round robin), so a failure repeats;
- ``cuda.syncthreads()`` is a real barrier of the block's threads, ``cuda.cg.this_grid().sync()``
  a real barrier of every thread of the launch;
- ``cuda.shfl_sync / shfl_up_sync / shfl_down_sync / shfl_xor_sync``, ``ballot_sync``,
  ``all_sync``, ``any_sync``, ``syncwarp``, ``activemask``: full warps only (a partial mask
  raises NotImplementedError rather than guess);
- shared memory per block, static and dynamic, and local arrays, **filled with NaN** (integers
  with -1): a read of a value no thread wrote shows;
- atomics and ``ldcv`` (the uncached load that polls a flag) yield to the other threads first
  (a block spinning on a flag lets the block it waits for run); ``threadfence`` is a no-op
  (one interpreter: memory is sequentially consistent);
- a launch that does not finish within ``TIMEOUT_SECONDS``, or whose threads all wait at
  barriers that cannot complete, fails with SimulatorDeadlock instead of hanging the tests.

It also hands plain numeric arrays to kernels as numpy arrays (not the stock per-element
wrapper), and numpy's float32/int32 in place of numba's casts: same values, several times
faster.

**How a test uses it.** Import it before anything imports ``numba.cuda`` (at the top of the
test module, as ``import cudasim``; pytest puts tests/ on sys.path), mark the tests
``cudasim``, and run kernels and engines on ``cudasim.DEVICE``::

    import cudasim                      # enables the simulator where no GPU is present
    pytestmark = pytest.mark.cudasim

    def test_kernel():
        engine = SomeCudaEngine(spec, streams=3, device=cudasim.DEVICE)

Where torch sees a CUDA GPU, nothing is simulated (``SIMULATED`` is False, ``DEVICE`` is
"cuda"): the same tests run the kernels on the device. :func:`without_lines` builds a copy of
a kernel or device function with marked source lines removed, for negative controls (a
deleted barrier must make a test fail); it needs the simulator, where kernels are Python
functions; :func:`patched` puts such a copy in place for a ``with`` block.

Cost: roughly 10 us of Python per simulated thread per barrier or warp exchange, plus the
kernel's own arithmetic run as Python: keep to tiny models, one warp per block, 2-4 streams
and 16-64 steps (a 4-layer tiny WaveNet: about 50 ms per sample of 3 streams).
"""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap
import threading
import time
from collections import deque

import numpy as np
import torch

TIMEOUT_SECONDS = 120.0
FULL_MASK = 0xFFFFFFFF

if "numba.cuda" not in sys.modules and not torch.cuda.is_available():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # read when a @triton.jit function is defined

from numba import cuda  # noqa: E402,F401  (after the environment variable, which numba.cuda reads on import)

from numba.cuda.core import config as _config  # noqa: E402

SIMULATED = bool(_config.ENABLE_CUDASIM)
DEVICE = "cpu" if SIMULATED else "cuda"

if not SIMULATED and not torch.cuda.is_available():
    raise RuntimeError("numba.cuda was imported for a real GPU before tests/cudasim.py could enable the "
                       "simulator, and there is no GPU: import cudasim before anything imports numba.cuda")


class SimulatorDeadlock(RuntimeError):
    """A simulated launch that did not finish: some thread waits for something that never happens."""


class _Aborted(BaseException):
    """Raised inside simulated threads once the launch has failed elsewhere (not an Exception, so
    kernel code cannot swallow it)."""


# ----- the pieces of one launch -------------------------------------------------------------------

if SIMULATED:
    import greenlet
    from numba.cuda.errors import normalize_kernel_dimensions
    from numba.cuda.simulator import kernel as _simkernel
    from numba.cuda.simulator.args import ArgHint, InOut
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray, FakeWithinKernelCUDAArray
    from numba.cuda.simulator.kernelapi import Dim3, FakeCUDAAtomic, FakeCUDAModule, FakeCUDAShared, swapped_cuda_module
    from numba.cuda.np import numpy_support
    from numba.cuda import types as _types

    _SCALAR_CASTS = {_types.float32: np.float32, _types.float64: np.float64, _types.int32: np.int32,
                     _types.int64: np.int64}

    def _dtype(dtype) -> np.dtype:
        return numpy_support.as_dtype(dtype) if isinstance(dtype, _types.Type) else np.dtype(dtype)

    def _filled(shape, dtype) -> np.ndarray:
        dtype = _dtype(dtype)
        out = np.empty(shape, dtype)
        out[...] = np.nan if np.issubdtype(out.dtype, np.floating) else -1
        return out

    class _Shared(FakeCUDAShared):
        """One block's shared memory: NaN-filled, one array per allocating source line."""

        def __init__(self, dynshared_size: int):
            super().__init__(dynshared_size)
            self._dynshared[...] = -1  # 0xFF bytes: NaN as float32/float64, -1 as integers
            self._lock = threading.Lock()

        def array(self, shape, dtype, alignment=None):
            if shape == 0:
                return super().array(shape, _dtype(dtype), alignment)
            caller = sys._getframe(1).f_code.co_filename, sys._getframe(1).f_lineno
            with self._lock:
                if caller not in self._allocations:
                    self._allocations[caller] = _filled(shape, dtype)
                return self._allocations[caller]

    class _Local:
        def array(self, shape, dtype, alignment=None):
            return _filled(shape, dtype)

    class _Barrier:
        """A barrier of ``n`` simulated threads: arrivals park until the last one comes."""

        def __init__(self, launch, n: int):
            self.launch, self.n, self.waiting = launch, n, []

        def wait(self) -> None:
            self.launch.check()
            if len(self.waiting) + 1 < self.n:
                self.waiting.append(greenlet.getcurrent())
                self.launch.park()
            else:
                woken, self.waiting = self.waiting, []
                self.launch.ready.extend(woken)
            self.launch.check()

    class _Block:
        def __init__(self, launch, n_threads: int, dynshared: int):
            self.barrier = _Barrier(launch, n_threads)
            self.shared = _Shared(dynshared)
            self.votes = {}
            self.warps = [_Warp(launch, min(32, n_threads - w)) for w in range(0, n_threads, 32)]

    class _Warp:
        """Exchange slots (two sets, used in turn, so one barrier per exchange is enough) and a
        barrier for the warp-wide intrinsics."""

        def __init__(self, launch, lanes: int):
            self.lanes = lanes
            self.barrier = _Barrier(launch, lanes)
            self.slots = [[None] * lanes, [None] * lanes]
            self.turn = [0] * lanes

    class _Atomics(FakeCUDAAtomic):
        """The stock atomics, each after a yield to the other threads (a block spinning on a flag
        lets the block it waits for run) and a check for a failed launch."""

        def __init__(self, launch):
            self._launch = launch

        def __getattribute__(self, name):
            attr = super().__getattribute__(name)
            if name.startswith("_") or not callable(attr):
                return attr
            launch = super().__getattribute__("_launch")

            def op(*args):
                launch.yield_()
                return attr(*args)

            return op

    class _GridGroup:
        def __init__(self, launch):
            self._launch = launch

        def sync(self):
            self._launch.grid_barrier.wait()

    class _Cg:
        def __init__(self, launch):
            self._grid = _GridGroup(launch)

        def this_grid(self):
            return self._grid

    class _SimThread(greenlet.greenlet):
        """One CUDA thread: a greenlet that runs the kernel until a barrier, shuffle or atomic hands
        control to the next thread."""

        def __init__(self, launch, fn, args, block, block_idx, thread_idx, block_dim):
            super().__init__(parent=greenlet.getcurrent())
            self.launch, self.fn, self.args, self.block = launch, fn, args, block
            self.blockIdx, self.threadIdx = Dim3(*block_idx), Dim3(*thread_idx)
            self.thread_id = thread_idx[0] + block_dim[0] * (thread_idx[1] + block_dim[1] * thread_idx[2])
            self.warp = block.warps[self.thread_id // 32]

        def run(self):
            try:
                self.fn(*self.args)
            except _Aborted:
                pass
            except Exception as err:  # noqa: BLE001 - reported by the launch, with the thread's place
                self.launch.fail(err, self)

    class _Launch(FakeCUDAModule):
        """The ``cuda`` module as kernel code sees it during one launch, and the scheduler of its threads."""

        def __init__(self, grid_dim, block_dim, dynshared_size):
            super().__init__(grid_dim, block_dim, dynshared_size)
            self.n_block_threads = int(np.prod(block_dim))
            self.n_threads = self.n_block_threads * int(np.prod(grid_dim))
            self.grid_barrier = _Barrier(self, self.n_threads)
            self._cg = _Cg(self)
            self._local = _Local()
            self._atomic = _Atomics(self)
            self._dynshared_size = dynshared_size
            self.error = None
            self.ready = deque()
            self.swaps = contextlib.ExitStack()
            self._swapped = set()

        def swap(self, fn) -> None:
            """Give ``fn``'s module this launch as ``cuda`` (and numpy's scalar types as numba's
            float32/int32 casts, same values, faster) until the launch ends."""
            key = id(fn.__globals__)
            if key in self._swapped:
                return
            self._swapped.add(key)
            self.swaps.enter_context(swapped_cuda_module(fn, self))
            names = {name: value for name, value in fn.__globals__.items()
                     if any(value is numba_type for numba_type in _SCALAR_CASTS)}
            for name, value in names.items():
                fn.__globals__[name] = _SCALAR_CASTS[value]
            self.swaps.callback(fn.__globals__.update, names)

        # --- scheduling
        def park(self) -> None:
            """Hand control back to the scheduler without being queued (a barrier wakes us)."""
            greenlet.getcurrent().parent.switch()

        def yield_(self) -> None:
            self.check()
            self.ready.append(greenlet.getcurrent())
            self.park()
            self.check()

        def fail(self, err, thread) -> None:
            if self.error is None:
                self.error = (err, f"block {tuple(thread.blockIdx)} thread {tuple(thread.threadIdx)}")

        def check(self) -> None:
            if self.error is not None:
                raise _Aborted()

        # --- what kernel code calls
        @property
        def threadIdx(self):
            return greenlet.getcurrent().threadIdx

        @property
        def blockIdx(self):
            return greenlet.getcurrent().blockIdx

        @property
        def laneid(self):
            return greenlet.getcurrent().thread_id % 32

        @property
        def shared(self):
            return greenlet.getcurrent().block.shared

        def syncthreads(self):
            greenlet.getcurrent().block.barrier.wait()

        def ldcv(self, array, i):
            """A load that bypasses L1 (a flag's poll): after a yield, as the atomics."""
            self.yield_()
            return array[i]

        def _vote(self, value):
            me = greenlet.getcurrent()
            me.block.votes[me.thread_id] = value
            self.syncthreads()
            votes = list(me.block.votes.values())
            self.syncthreads()
            return votes

        def syncthreads_count(self, value):
            return int(np.count_nonzero(self._vote(value)))

        def syncthreads_and(self, value):
            return int(all(self._vote(value)))

        def syncthreads_or(self, value):
            return int(any(self._vote(value)))

        def _exchange(self, mask, value, pick):
            me = greenlet.getcurrent()
            warp = me.warp
            if warp.lanes != 32 or mask & FULL_MASK != FULL_MASK:
                raise NotImplementedError(f"warp intrinsic with mask {mask:#x} on a warp of {warp.lanes} "
                                          "lanes: the simulator handles full 32-lane warps only")
            lane = me.thread_id % 32
            slots = warp.slots[warp.turn[lane]]
            warp.turn[lane] ^= 1
            slots[lane] = value
            warp.barrier.wait()
            return pick(slots, lane)

        def shfl_sync(self, mask, value, src_lane):
            return self._exchange(mask, value, lambda s, lane: s[src_lane % 32])

        def shfl_up_sync(self, mask, value, delta):
            return self._exchange(mask, value, lambda s, lane: s[lane - delta] if lane >= delta else s[lane])

        def shfl_down_sync(self, mask, value, delta):
            return self._exchange(mask, value, lambda s, lane: s[lane + delta] if lane + delta < 32 else s[lane])

        def shfl_xor_sync(self, mask, value, lane_mask):
            return self._exchange(mask, value, lambda s, lane: s[lane ^ lane_mask] if lane ^ lane_mask < 32 else s[lane])

        def ballot_sync(self, mask, predicate):
            return self._exchange(mask, bool(predicate), lambda s, lane: sum(1 << i for i, p in enumerate(s) if p))

        def all_sync(self, mask, predicate):
            return int(self._exchange(mask, bool(predicate), lambda s, lane: all(s)))

        def any_sync(self, mask, predicate):
            return int(self._exchange(mask, bool(predicate), lambda s, lane: any(s)))

        def syncwarp(self, mask=FULL_MASK):
            self._exchange(mask, None, lambda s, lane: None)

        def activemask(self):
            return FULL_MASK

        # --- running it
        def run(self, fn, args) -> None:
            gdim, bdim = tuple(self.gridDim), tuple(self.blockDim)
            threads = []
            for block_idx in np.ndindex(*gdim[::-1]):
                block = _Block(self, self.n_block_threads, self._dynshared_size)
                for thread_idx in np.ndindex(*bdim[::-1]):
                    threads.append(_SimThread(self, fn, args, block, block_idx[::-1], thread_idx[::-1], bdim))
            self.ready.extend(threads)
            deadline = time.monotonic() + TIMEOUT_SECONDS
            while self.ready and self.error is None:
                self.ready.popleft().switch()
                if time.monotonic() > deadline:
                    self.error = (SimulatorDeadlock(f"still running after {TIMEOUT_SECONDS:.0f} s: a flag "
                                                    "never set, or a loop that never ends"), "the launch")
            stuck = [t for t in threads if not t.dead]
            if stuck and self.error is None:
                self.error = (SimulatorDeadlock(f"{len(stuck)} of {len(threads)} threads wait at a barrier that "
                                                "the others never reach"), "the launch")
            for t in stuck:  # let them unwind now rather than when collected
                try:
                    t.throw(_Aborted)
                except _Aborted:  # a thread that never started passes it straight back
                    pass
            if self.error is not None:
                err, where = self.error
                if isinstance(err, SimulatorDeadlock):
                    raise err
                raise type(err)(f"{where}: {err}") from err

    def _device_arg(arg, retr):
        """A kernel argument as the device sees it: the stock simulator's conversion, except that a
        plain numeric array is handed over as the numpy array itself (the stock wrapper adds a
        Python call to every element access, a third of the time of a launch)."""
        if isinstance(arg, np.ndarray) and arg.ndim > 0:
            arg = InOut(arg).to_device(retr)
        elif isinstance(arg, ArgHint):
            arg = arg.to_device(retr)
        elif isinstance(arg, np.void):
            arg = FakeCUDAArray(arg)
        if isinstance(arg, FakeCUDAArray):
            return arg._ary if arg._ary.dtype.fields is None else FakeWithinKernelCUDAArray(arg)
        return arg

    _stock_call = _simkernel.FakeCUDAKernel.__call__

    def _concurrent_call(self, *args):
        context = _simkernel._get_kernel_context()
        if isinstance(context, _Launch):  # a device function called by a simulated thread
            context.swap(self.fn)
            return self.fn(*args)
        if self._device or context is not None:
            return _stock_call(self, *args)
        if self.extensions:
            raise NotImplementedError("cudasim: kernel extensions are not supported")
        grid_dim, block_dim = normalize_kernel_dimensions(self.grid_dim, self.block_dim)
        launch = _Launch(grid_dim, block_dim, self.dynshared_size)
        with _simkernel._push_kernel_context(launch), launch.swaps:
            retr = []
            device_args = [_device_arg(arg, retr) for arg in args]
            launch.swap(self.fn)
            launch.run(self.fn, device_args)
            for write_back in retr:
                write_back()

    _simkernel.FakeCUDAKernel.__call__ = _concurrent_call
    _simkernel.FakeOverload.max_cooperative_grid_blocks = lambda self, blockdim, dynsmemsize=0: 1 << 16


# ----- Triton's interpreter ------------------------------------------------------------------------

TRITON_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

if TRITON_INTERPRETED:
    # Triton 3.6's interpreter turns a scalar tensor into a Python int with int() on a
    # one-element array, which numpy 2.4 refuses: a kernel looping ``for i in range(n)`` over a
    # runtime n fails. Same conversion, through .item().
    from triton.runtime import interpreter as _interpreter

    _stock_patch_tensor = _interpreter._patch_lang_tensor

    def _patch_lang_tensor(tensor, scope):
        _stock_patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    _interpreter._patch_lang_tensor = _patch_lang_tensor

    # The interpreter drops a launch's keyword arguments that name no parameter of the kernel;
    # the GPU's launcher refuses them (KeyError, "Keyword argument R was specified but
    # unrecognised": a launch passing the layer kernel's sizes to the head kernel failed only on
    # the GPU). Refuse them here as well, with the same list of launch options.
    import dataclasses as _dataclasses

    from triton.backends.nvidia.compiler import CUDAOptions as _CUDAOptions

    _LAUNCH_OPTIONS = {f.name for f in _dataclasses.fields(_CUDAOptions)}
    _stock_run = _interpreter.InterpretedFunction.run

    def _strict_run(self, *args, grid, warmup, **kwargs):
        unknown = sorted(set(kwargs) - set(self.arg_names) - _LAUNCH_OPTIONS)
        if unknown:
            raise KeyError(f"Keyword argument {unknown[0]} was specified but unrecognised (kernel {self.__name__})")
        return _stock_run(self, *args, grid=grid, warmup=warmup, **kwargs)

    _interpreter.InterpretedFunction.run = _strict_run


# ----- negative controls ----------------------------------------------------------------------------

def without_lines(kernel, marker: str, expect: int = 1):
    """A copy of the simulated ``kernel`` (or device function) whose source lines containing
    ``marker`` are deleted; ``expect`` is how many such lines there must be (AssertionError
    otherwise, so a renamed marker cannot turn a negative control into a no-op). The copy
    lives in the kernel's module globals, so it calls the same device functions.
    """
    if not SIMULATED:
        raise RuntimeError("without_lines needs the simulator (kernels are Python functions there)")
    import inspect

    fn = kernel.py_func
    lines = textwrap.dedent(inspect.getsource(fn)).splitlines(keepends=True)
    kept = [line for line in lines if marker not in line]
    removed = len(lines) - len(kept)
    assert removed == expect, f"{removed} lines of {fn.__name__} contain {marker!r}, expected {expect}"
    namespace = {}
    code = compile("".join(kept), inspect.getsourcefile(fn), "exec")
    exec(code, fn.__globals__, namespace)  # noqa: S102 - the kernel's own source, minus lines
    return namespace[fn.__name__]


@contextlib.contextmanager
def patched(module, name: str, marker: str, expect: int = 1):
    """``module.name`` (a kernel or device function) replaced, inside the ``with`` block, by
    :func:`without_lines` of it; every function of the module that calls it by name sees the copy."""
    original = getattr(module, name)
    setattr(module, name, without_lines(original, marker, expect))
    try:
        yield
    finally:
        setattr(module, name, original)
