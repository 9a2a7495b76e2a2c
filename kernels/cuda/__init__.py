"""The ``cuda`` backend: GPU engines in numba-cuda and Triton, each also run on the CPU in tests.

Modules: :mod:`.engines` registers the engines with :mod:`wavegen.generate` (imported on first
use of the backend); :mod:`.common` holds numba-cuda device helpers; ``wavenet_*`` and
``samplernn_*`` hold each family's kernels and engine; :mod:`.check` is the compile check,
``python -m wavegen.kernels.cuda --check``.

**The kernel registry** (this module; plain Python, imports nothing heavy): every kernel that
ships is listed here, so the compile check compiles all of them for sm_90 and sm_80 without a
GPU. To add a kernel, in the module that defines it::

    from wavegen.kernels.cuda import register_numba_kernel, register_triton_kernel

    register_numba_kernel("wavenet_persistent", wavenet_persistent, signature="void(float32[::1], ...)")
    register_triton_kernel("wavenet_large_steps", wavenet_large_steps, signature={"x": "*fp32", ...},
                           constexprs={"BLOCK_B": 32}, num_warps=4)

and add the module's name to :data:`KERNEL_MODULES`. A numba kernel gets an explicit
signature (the types its engine launches it with); a Triton kernel a signature of Triton type
strings and its constexpr values, one registration per configuration the engine uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Modules whose import registers kernels (the compile check imports each).
KERNEL_MODULES = ["wavegen.kernels.cuda.wavenet_small", "wavegen.kernels.cuda.wavenet_large",
                  "wavegen.kernels.cuda.samplernn_small", "wavegen.kernels.cuda.samplernn_large"]


@dataclass
class KernelEntry:
    """One shipped kernel configuration: ``kind`` "numba" (``fn`` a @cuda.jit dispatcher,
    ``signature`` a numba signature string) or "triton" (``fn`` a @triton.jit function,
    ``signature`` {arg: triton type}, ``constexprs`` {arg: value}, ``num_warps``)."""

    name: str
    kind: str
    fn: object
    signature: object
    constexprs: dict = field(default_factory=dict)
    num_warps: int = 4
    module: str = ""


KERNELS: dict[str, KernelEntry] = {}


def register_numba_kernel(name: str, fn, signature: str) -> None:
    """List a numba-cuda kernel (its @cuda.jit dispatcher) and the signature it is launched with."""
    KERNELS[name] = KernelEntry(name, "numba", fn, signature, module=getattr(fn, "__module__", ""))


def register_triton_kernel(name: str, fn, signature: dict, constexprs: dict | None = None, num_warps: int = 4) -> None:
    """List one configuration of a @triton.jit kernel: argument types and constexpr values."""
    KERNELS[name] = KernelEntry(name, "triton", fn, dict(signature), dict(constexprs or {}), num_warps,
                                module=getattr(fn, "__module__", ""))
