"""Registers the numba (CPU) engines with :mod:`wavegen.generate`.

Imported lazily by ``generate._load_backend_modules``; an ImportError here (numba missing or
broken) makes the numba backend unavailable with that reason instead of breaking wavegen.
"""

from __future__ import annotations

import numba

from wavegen.generate import register_availability, register_engine
from wavegen.kernels.numba_samplernn import NumbaSampleRNNEngine
from wavegen.kernels.numba_wavenet import NumbaWaveNetEngine


def _available() -> str | None:
    """None: numba engines run wherever numba imports (any CPU)."""
    major, minor = (int(x) for x in numba.__version__.split(".")[:2])
    if (major, minor) < (0, 59):
        return f"numba {numba.__version__} is too old (need 0.59 or newer)"
    return None


register_engine("samplernn", "numba", NumbaSampleRNNEngine)
register_engine("wavenet", "numba", NumbaWaveNetEngine)
register_availability("numba", _available)
