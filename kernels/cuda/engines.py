"""Registers the cuda backend's engines with :mod:`wavegen.generate`.

Imported lazily by ``generate`` (BACKEND_MODULES); any exception here (numba-cuda or Triton
missing or broken) makes the cuda backend unavailable with that reason, and the other
backends keep working. The availability check asks torch for a GPU first, so a CPU-only
machine never initialises the CUDA driver through numba.
"""

from __future__ import annotations

import torch

from wavegen.generate import register_availability, register_engine
from wavegen.kernels.cuda.samplernn import CudaSampleRNNEngine
from wavegen.kernels.cuda.wavenet import CudaWaveNetEngine

ENGINES = {"wavenet": CudaWaveNetEngine, "samplernn": CudaSampleRNNEngine}


def compiler_loads() -> str | None:
    """None where numba-cuda's compiler loads its lowering registries, else why not. They load at
    a process's first kernel compile, not at import: numba-cuda 0.30 on numpy 2.5 (which removed
    ``np.row_stack``) imports cleanly and fails there, so an engine would build and then fail."""
    try:
        import numba.cuda.cudaimpl  # noqa: F401 - the registries a first compile loads
    except Exception as err:  # noqa: BLE001 - any failure makes the backend unavailable, with its reason
        import numpy

        from numba_cuda import __version__ as version

        hint = "; numba-cuda 0.30 needs numpy < 2.5" if "numpy" in str(err) else ""
        return (f"numba-cuda {version} fails to load its compiler with numpy {numpy.__version__} "
                f"({type(err).__name__}: {err}){hint}")
    return None


def _available() -> str | None:
    """None where a CUDA GPU is visible to torch and to numba-cuda, else why not."""
    if not torch.cuda.is_available():
        return "no CUDA GPU (torch.cuda.is_available() is false)"
    from numba import cuda

    if not cuda.is_available():
        return "numba-cuda sees no GPU (driver or CUDA libraries missing)"
    why = compiler_loads()
    if why is not None:
        return why
    major, _ = torch.cuda.get_device_capability()
    if major < 8:
        return f"compute capability {major}.x: the cuda kernels are built for 8.0 and newer"
    return None


for _family, _cls in ENGINES.items():
    register_engine(_family, "cuda", _cls)
register_availability("cuda", _available)
