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


def _available() -> str | None:
    """None where a CUDA GPU is visible to torch and to numba-cuda, else why not."""
    if not torch.cuda.is_available():
        return "no CUDA GPU (torch.cuda.is_available() is false)"
    from numba import cuda

    if not cuda.is_available():
        return "numba-cuda sees no GPU (driver or CUDA libraries missing)"
    major, _ = torch.cuda.get_device_capability()
    if major < 8:
        return f"compute capability {major}.x: the cuda kernels are built for 8.0 and newer"
    return None


for _family, _cls in ENGINES.items():
    register_engine(_family, "cuda", _cls)
register_availability("cuda", _available)
