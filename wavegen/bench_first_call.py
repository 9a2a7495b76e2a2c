"""A bench row's first call, watched: said while it runs long, with its pace only where it cannot be compiling.

A first numba call with an empty cache compiles for a minute (28-61 s): its time projected as the row's pace said
"take 5.6 h or more" of a row that then made 53,731 samples/s. numba's compiler lock (taken to compile, or to load
compiled code from the cache; never on a call of code compiled in this process) tells whether a numba call compiled;
the torch engine runs eagerly; the cuda engines (numba-cuda's and Triton's compilers) may always be compiling.
"""

from __future__ import annotations

import contextlib
import threading


def first_call(engine, u, seconds: float, slow) -> None:
    """engine.generate(u), with ``slow(compiling)`` called from another thread where it is still running after
    ``seconds``; compiling: whether the call may be compiling (:func:`may_compile`; then its time is no pace)."""
    with compiles_seen() as seen:
        watch = threading.Timer(seconds, lambda: slow(may_compile(engine, seen)))
        watch.daemon = True
        watch.start()
        try:
            engine.generate(u)
        finally:
            watch.cancel()


@contextlib.contextmanager
def compiles_seen():
    """A list that gets an entry each time numba compiles, or loads compiled code from its cache, in the block
    (numba's compiler lock is taken for either, never on a call of code already compiled in this process)."""
    seen = []
    try:
        from numba.core import event
    except ImportError:
        yield seen
        return

    class Seen(event.Listener):
        def on_start(self, ev):
            seen.append(ev.kind)

        def on_end(self, ev):
            pass

    with event.install_listener("numba:compiler_lock", Seen()):
        yield seen


def may_compile(engine, seen: list) -> bool:
    """Whether a first call of ``engine`` may be compiling: the torch engine never does (eager); a numba engine where
    numba compiled in it (``seen``, from compiles_seen: a cold cache takes a minute, which is no pace); any other
    (the cuda engines: numba-cuda's and Triton's compilers) may."""
    if engine.backend == "torch":
        return False
    return engine.backend != "numba" or bool(seen)
