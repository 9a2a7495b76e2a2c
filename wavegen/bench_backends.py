"""A bench row's backend: its name read, its engine built, and every (backend, batch) row checked before anything is
timed (``wavegen bench`` and ``--profile``).

A backend is named as make_engine names it, optionally with a precision and engine options:
``numba``, ``numba-fp16``, ``numba-bf16``, ``cuda-bf16``, ``numba:threads=1``, and for the
cuda backend's two paths (otherwise chosen by stream count) ``cuda:path=small``,
``cuda-bf16:path=large`` (:func:`parse_backend`); every row's engine comes from
:func:`wavegen.generate.make_engine` (:func:`build_engine`). :func:`check_backends` finds an unknown backend,
an option or value it does not take, a backend that cannot run here, a batch over its engine's limits or whose
state does not fit, each in one line naming the backend (and the batch).
"""

from __future__ import annotations

import contextlib

from wavegen.config import ConfigError
from wavegen.engine import PRECISIONS
from wavegen.generate import make_engine


def _option_value(text: str):
    """An engine option's value as written in a backend name: an integer, true/false, or a string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        return text


def parse_backend(name: str) -> tuple[str, str, dict]:
    """A bench backend name ``BACKEND[-PRECISION][:OPTION=VALUE]...`` → (make_engine backend,
    precision, engine options): "numba" → ("numba", "fp32", {}), "numba-fp16" → ("numba",
    "fp16", {}), "cuda-bf16:path=large" → ("cuda", "bf16", {"path": "large"}),
    "cuda:path=small:threads=128" → ("cuda", "fp32", {"path": "small", "threads": 128}).
    Values: integers, true/false, else strings. ConfigError for an option that is not KEY=VALUE."""
    head, *written = name.split(":")
    base, _, suffix = head.rpartition("-")
    base, precision = (base, suffix) if base and suffix in PRECISIONS else (head, "fp32")
    options = {}
    for item in written:
        key, eq, value = (part.strip() for part in item.partition("="))
        if not eq or not key or not value:
            raise ConfigError(f"backend {name!r}: option {item!r} is not KEY=VALUE (as in cuda:path=large)")
        options[key] = _option_value(value)
    return base, precision, options


def is_torch(name: str) -> bool:
    """Whether bench backend ``name`` is the torch engine, however written ("torch", "torch-fp32"): its rows
    time --torch-samples and are what the others' speed-up is over ("torch-fp32" was taken for another)."""
    return parse_backend(name)[0] == "torch"


def check_backend_options(backends, family: str) -> None:
    """ConfigError, before anything is measured, where a backend name gives an option its engine for
    ``family`` does not take (unknown or unavailable backends are left to make_engine, which says why)."""
    from wavegen.generate import backend_engines

    for name in backends:
        base, _, options = parse_backend(name)
        cls = backend_engines(base).get(family)
        unknown = [key for key in options if cls is not None and key not in cls.options]
        if unknown:
            raise ConfigError(f"backend {name!r}: the {base} engine for {family} takes no option "
                              f"{', '.join(map(repr, unknown))} (its options: {', '.join(cls.options) or 'none'})")


def build_engine(spec: dict, streams: int, backend: str, device: str = "cpu"):
    """make_engine for a bench backend name, its precision and options (see :func:`parse_backend`)."""
    base, precision, options = parse_backend(backend)
    return make_engine(spec, streams, base, device, precision=precision, **options)


def check_state_fits(per_stream: int | None, backend: str, batch: int, device: str = "cpu") -> None:
    """OutOfMemoryError naming --batch when ``batch`` streams of ``backend``'s engine state, ``per_stream``
    bytes each (an engine of one stream's ``state_nbytes``; None: not shown, nothing checked), do not fit."""
    from wavegen.memory import check_fits

    if per_stream and batch > 1:
        check_fits(per_stream * batch, f"--batch {batch} of the {backend} engine's state ({per_stream:,} bytes "
                   "per stream)", "lower --batch", device)


def _state_nbytes(engine) -> int | None:
    """Bytes of an engine's state; None where it does not show them."""
    try:
        return engine.state_nbytes()
    except NotImplementedError:
        return None


def check_backends(spec: dict, backends, batches, device: str = "cpu") -> None:
    """Every (backend, batch) row checked before anything is timed: each name's options
    (:func:`check_backend_options`), then an engine of one stream built (:func:`_probe`), which finds
    an unknown backend, a precision or option value it does not take, or a backend that cannot run
    here, and whose state (what each stream adds) is checked, times the largest of ``batches``,
    against the memory here (:func:`check_state_fits`); then every batch against the engine's own
    limits (:func:`check_batch`); then, where the smallest batch is over one, an engine of it built
    and dropped. The error (a WavegenError) names the backend as given, and the batch where it is one's."""
    check_backend_options(backends, spec["family"])
    for name in backends:
        engine, streams = _probe(spec, name, batches, device)
        nbytes = _state_nbytes(engine)
        check_state_fits(None if nbytes is None else -(-nbytes // streams), name, max(batches), device)
        for batch in dict.fromkeys(batches):
            check_batch(engine, name, batch)
        if min(batches) > streams:
            del engine
            with _naming(name, min(batches)):
                engine = build_engine(spec, min(batches), name, device)
        del engine


@contextlib.contextmanager
def _naming(name: str, batch: int | None = None):
    """A WavegenError raised inside, raised again naming its row: ``--backends NAME [--batch N]: ...``
    (an OutOfMemoryError, which names its setting, as it is)."""
    from wavegen.errors import WavegenError
    from wavegen.memory import OutOfMemoryError

    try:
        yield
    except OutOfMemoryError:
        raise
    except WavegenError as err:
        where = f"--backends {name}" + ("" if batch is None else f" --batch {batch}")
        raise type(err)(f"{where}: {err}") from None


def _probe(spec: dict, name: str, batches, device: str):
    """(engine, its streams): ``name``'s engine of one stream; where that cannot be built and every
    batch is over one, of the smallest batch (an option of the cuda engine's large-batch path, such
    as ``cuda:block_streams=32``, is refused at one stream, which takes the small path). A WavegenError
    naming the backend (and the batch, for the second) where neither builds."""
    from wavegen.errors import WavegenError
    from wavegen.memory import OutOfMemoryError

    try:
        with _naming(name):
            return build_engine(spec, 1, name, device), 1
    except OutOfMemoryError:
        raise
    except WavegenError:
        if min(batches) == 1:
            raise
    with _naming(name, min(batches)):
        return build_engine(spec, min(batches), name, device), min(batches)


def check_batch(engine, name: str, batch: int) -> None:
    """A WavegenError naming ``--backends name --batch batch`` where ``engine`` (the probe of
    :func:`_probe`) says it could not run ``batch`` streams with its options (the cuda engines' paths run
    at most so many streams: ``engine.check_streams``; engines without limits have no such method)."""
    check = getattr(engine, "check_streams", None)
    if check is not None:
        with _naming(name, batch):
            check(batch)
