"""Incremental generation: backends, their availability, and :func:`make_engine`.

::

    engine = make_engine(model_or_spec, streams=B, backend="auto"|"torch"|"numba"|"cuda",
                         device="cpu", precision="fp32", **options)

The Engine contract (reset, generate, teacher_force, snapshot/restore, state_dict) is in
:mod:`wavegen.engine`, the torch reference engines in :mod:`wavegen.torch_engines`; both are
re-exported here. Backends:

- ``torch``: the reference, fp32 only, CPU or CUDA; always there.
- ``numba``: CPU engines (wavegen.kernels.numba_engines); precision fp32, fp16 or bf16 (weight
  storage, float32 arithmetic); option ``threads``.
- ``cuda``: GPU engines (wavegen.kernels.cuda.engines), where built.

**A new backend** lives in a module named in BACKEND_MODULES (or given to
:func:`register_backend_module`), imported on first use. Importing it registers its engine
class per family (:func:`register_engine`) and, optionally, an availability check
(:func:`register_availability`: returns None where it can run now, else why not). Whatever
goes wrong (the import raising anything, the check raising, the engine's constructor raising
anything but a WavegenError) makes that backend unavailable with the reason, shown by
:func:`available_backends` and ``wavegen info``; ``auto`` then falls back to the next backend
and the others keep working.
"""

from __future__ import annotations

import importlib
import logging
from typing import Callable

import torch

from wavegen.engine import (PRECISIONS, BackendUnavailableError, Engine, EngineError, EngineSnapshot,  # noqa: F401
                            sample_codes, temperatures, uniforms)
from wavegen.errors import WavegenError
from wavegen.torch_engines import TorchSampleRNNEngine, TorchStepEngine, TorchWaveNetEngine  # noqa: F401

logger = logging.getLogger(__name__)

# backend → module that registers it when imported; None: registered here
BACKEND_MODULES: dict[str, str | None] = {"torch": None, "numba": "wavegen.kernels.numba_engines",
                                          "cuda": "wavegen.kernels.cuda.engines"}

_ENGINES: dict[str, dict[str, type]] = {"torch": {"samplernn": TorchSampleRNNEngine, "wavenet": TorchWaveNetEngine}}
_CHECKS: dict[str, Callable[[], str | None]] = {}
_LOADED: dict[str, str | None] = {"torch": None}  # backend → None (imported) or why its import failed
_CHECKED: dict[str, str | None] = {}  # backend → its availability check's answer, asked once
_BROKEN: dict[tuple, str] = {}  # (backend, family, device type) → why building an engine failed


def register_engine(family: str, backend: str, cls: type) -> None:
    """``cls(spec, streams, device=..., precision=..., **options)`` builds ``backend``'s engine for ``family``."""
    _ENGINES.setdefault(backend, {})[family] = cls
    for key in [k for k in _BROKEN if k[:2] == (backend, family)]:
        del _BROKEN[key]


def register_availability(backend: str, check: Callable[[], str | None]) -> None:
    """``check()`` returns None where the backend can run now, else why not; asked once per process."""
    _CHECKS[backend] = check
    _CHECKED.pop(backend, None)


def register_backend_module(backend: str, module: str) -> None:
    """Declare (or redeclare) the module that registers ``backend`` when imported; imported on first use."""
    BACKEND_MODULES[backend] = module
    _LOADED.pop(backend, None)
    _CHECKED.pop(backend, None)


def _why(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _load(backend: str) -> str | None:
    """Import the backend's module once; None where that worked, else why not."""
    if backend not in _LOADED:
        module = BACKEND_MODULES.get(backend)
        try:
            if module is not None:
                importlib.import_module(module)
            _LOADED[backend] = None
        except Exception as err:  # noqa: BLE001 - any failure of an optional backend makes it unavailable
            _LOADED[backend] = f"{module} failed to import ({_why(err)})"
            logger.debug("backend %s unavailable", backend, exc_info=True)
    return _LOADED[backend]


def _check(backend: str) -> str | None:
    if backend not in _CHECKED:
        check = _CHECKS.get(backend)
        try:
            _CHECKED[backend] = None if check is None else check()
        except Exception as err:  # noqa: BLE001 - a failing check means the backend cannot run
            _CHECKED[backend] = f"its availability check failed ({_why(err)})"
    return _CHECKED[backend]


def backend_engines(backend: str) -> dict[str, type]:
    """family → engine class registered for ``backend`` (empty where its module fails to import)."""
    _load(backend)
    return dict(_ENGINES.get(backend, {}))


def backend_names() -> list[str]:
    """Every backend wavegen knows: the built-in ones, then any registered since."""
    return list(dict.fromkeys([*BACKEND_MODULES, *_ENGINES]))


def _unavailable(backend: str, family: str | None, device=None) -> str | None:
    """None where ``backend`` can run here (for ``family`` and ``device`` when given), else why not."""
    why = _load(backend)
    if why is not None:
        return why
    engines = _ENGINES.get(backend, {})
    if not engines:
        return "not built into this version"
    if family is not None and family not in engines:
        return f"no {backend} engine for {family} yet"
    why = _check(backend)
    if why is not None:
        return why
    kind = None if device is None else torch.device(device).type
    broken = [why for (b, f, k), why in _BROKEN.items() if (b, f) == (backend, family) and kind in (None, k)]
    if broken:
        return broken[0]
    classes = [engines[family]] if family is not None else list(engines.values())
    if kind is not None and not any(kind in cls.device_types for cls in classes):
        return f"runs on {' or '.join(classes[0].device_types)}, not {kind}"
    if kind == "cuda" and not torch.cuda.is_available():
        return "no CUDA device here (torch.cuda.is_available() is false)"
    return None


def _unsupported(backend: str, family: str | None, precision: str | None = None, options=()) -> str | None:
    """None where the (importable) backend takes this precision and these options, else why not."""
    engines = _ENGINES.get(backend, {})
    classes = [engines[family]] if family in engines else list(engines.values())
    if not classes:
        return None
    if precision is not None and not any(precision in cls.precisions for cls in classes):
        return f"precision {precision} is not supported by {backend} (it has {', '.join(classes[0].precisions)})"
    unknown = [name for name in options if not any(name in cls.options for cls in classes)]
    if unknown:
        takes = ", ".join(classes[0].options) or "none"
        return f"{backend} takes no option {', '.join(map(repr, unknown))} (its options: {takes})"
    return None


def _reason(backend: str, family: str | None, device=None, precision: str | None = None, options=()) -> str | None:
    return _unavailable(backend, family, device) or _unsupported(backend, family, precision, options)


def available_backends(family: str | None = None, device=None, precision: str | None = None) -> dict[str, str | None]:
    """backend → None where it can run here (for this family, device, precision when given), else why not."""
    return {backend: _reason(backend, family, device, precision) for backend in backend_names()}


# ----- choosing a backend ---------------------------------------------------------------------------

# Stream count from which the cuda backend leaves its small-batch path (persistent kernels:
# weights on chip, no return to the host between samples) for its large-batch path
# (tensor-core matmuls replayed from a CUDA graph), per family.
# samplernn: from the first GPU run (H200, 2026-11-28, docs/BENCHMARKS.md "GPU"): the small path
# took 54 us a step at 1 stream and 452 at 16 (about 27 more per stream); the large path 196 us
# (fp32) and 71 (bf16) at 256 streams, no more at fewer. So from 8 streams the large path is the
# faster (at least 41,000 samples/s in fp32 against the small path's ~33,000); between 2 and 7 the
# run did not tell (recipes/gpu/check.sh measures the small path at 1-32 streams, the large at 1-64).
# wavenet: a GUESS until measured (its cuda engine was not measured in that run): nv-wavenet's
# persistent kernel was built for batches up to about 32.
CUDA_LARGE_BATCH_FROM = {"samplernn": 8, "wavenet": 64}


def cuda_batch_path(family: str, streams: int) -> str:
    """"small" (persistent kernels) or "large" (tensor-core matmuls in a CUDA graph) for the cuda
    backend's engine of ``family`` at ``streams`` streams: the one documented place for that choice."""
    return "large" if streams >= CUDA_LARGE_BATCH_FROM.get(family, 64) else "small"


def auto_order(family: str, streams: int, device="cpu") -> list[str]:
    """The backends ``auto`` tries, fastest first.

    On a CPU the numba engines beat the torch engine at every batch measured (docs/BENCHMARKS.md;
    the gap narrows at large batch, where torch's matmuls amortise its per-step overhead), so
    numba comes first whatever the batch. On a GPU the cuda backend comes first at every batch:
    it picks its small- or large-batch path itself by stream count (:func:`cuda_batch_path`).
    torch is the fallback everywhere.
    """
    return ["cuda", "torch"] if torch.device(device).type == "cuda" else ["numba", "torch"]


def choose_backend(family: str, streams: int, device="cpu", precision: str = "fp32", options=()) -> str:
    """The first backend of :func:`auto_order` that can build this engine here.

    BackendUnavailableError listing every candidate's reason when none can.
    """
    reasons = {}
    for backend in auto_order(family, streams, device):
        why = _reason(backend, family, device, precision, options)
        if why is None:
            return backend
        reasons[backend] = why
    raise BackendUnavailableError(f"no backend can run {family} on {device} at precision {precision}"
                                  + "".join(f"; {b}: {why}" for b, why in reasons.items()))


# ----- building ---------------------------------------------------------------------------------------

def _check_request(backend: str, precision: str) -> None:
    if precision not in PRECISIONS:
        raise EngineError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if backend != "auto" and backend not in backend_names():
        raise EngineError(f"unknown backend {backend!r}; use auto or one of {backend_names()}")


def _build(backend: str, spec: dict, streams: int, device, precision: str, options: dict) -> Engine:
    """The engine, or BackendUnavailableError when its construction fails other than by a user's error."""
    family = spec["family"]
    try:
        return _ENGINES[backend][family](spec, streams, device=device, precision=precision, **options)
    except WavegenError:
        raise
    except Exception as err:  # noqa: BLE001 - a backend that cannot build here is reported, not fatal
        why = f"building its {family} engine failed ({_why(err)})"
        _BROKEN[(backend, family, torch.device(device).type)] = why
        logger.debug("backend %s failed to build", backend, exc_info=True)
        raise BackendUnavailableError(f"backend {backend!r} is not available: {why}") from err


def make_engine(model_or_spec, streams: int, backend: str = "auto", device="cpu", precision: str = "fp32",
                **options) -> Engine:
    """An engine for ``streams`` streams of a model (anything with ``inference_spec()``) or its spec.

    ``backend``: "auto" (the fastest that can run here: :func:`auto_order`) or a name of
    :func:`backend_names`. ``precision``: one of PRECISIONS that the backend has. ``options``:
    the backend's own (numba: ``threads``). EngineError for an unknown backend, precision or
    option; BackendUnavailableError when the named backend (or, for auto, every candidate)
    cannot run here, with the reason. With auto, a backend whose engine fails to build is
    marked unavailable (logged) and the next one is tried.
    """
    spec = model_or_spec.inference_spec() if hasattr(model_or_spec, "inference_spec") else model_or_spec
    if not isinstance(spec, dict) or "family" not in spec:
        raise EngineError(f"a {type(model_or_spec).__name__} is neither a model (no inference_spec()) nor an "
                          "inference spec (a dict naming its 'family')")
    family = spec["family"]
    _check_request(backend, precision)
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise EngineError(f"device {device!r}: {err}") from None
    if backend != "auto":
        why = _unavailable(backend, family, device)
        if why is not None:
            raise BackendUnavailableError(f"backend {backend!r} is not available: {why}")
        why = _unsupported(backend, family, precision, options)
        if why is not None:
            raise EngineError(why)
        return _build(backend, spec, streams, device, precision, options)
    while True:
        chosen = choose_backend(family, streams, device, precision, tuple(options))
        try:
            engine = _build(chosen, spec, streams, device, precision, options)
        except BackendUnavailableError as err:
            logger.warning("%s; trying the next backend", err)
            continue
        logger.debug("engine %s for %s, %d streams, %s", chosen, family, streams, precision)
        return engine
