"""Registers the numba (CPU) engines with :mod:`wavegen.generate`.

Imported lazily by ``generate`` (BACKEND_MODULES); any exception here (numba missing or broken)
makes the numba backend unavailable with that reason instead of breaking wavegen.
"""

from __future__ import annotations

import numba

from wavegen.generate import register_availability, register_engine
from wavegen.kernels.numba_samplernn import NumbaSampleRNNEngine
from wavegen.kernels.numba_wavenet import NumbaWaveNetEngine

ENGINES = {"samplernn": NumbaSampleRNNEngine, "wavenet": NumbaWaveNetEngine}


def _available() -> str | None:
    """None: numba engines run wherever numba imports (any CPU)."""
    major, minor = (int(x) for x in numba.__version__.split(".")[:2])
    if (major, minor) < (0, 59):
        return f"numba {numba.__version__} is too old (need 0.59 or newer)"
    return None


for _family, _cls in ENGINES.items():
    register_engine(_family, "numba", _cls)
register_availability("numba", _available)
