"""Ctrl-C and SIGTERM mean the same everywhere in wavegen (training, rendering, serving).

The first SIGINT or SIGTERM asks the work to stop at the next safe point: training finishes
its step and writes a checkpoint; a render finishes (or rewinds) its block and writes a
snapshot. A second signal stops at once (KeyboardInterrupt), leaving what the last checkpoint
or snapshot holds. Handlers can only be installed from the main thread; elsewhere the
context manager does nothing and the process keeps its handlers.
"""

from __future__ import annotations

import logging
import signal
import threading

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """``with StopSignals("finishing the step and saving a checkpoint") as stop: ... stop.requested``.

    ``message`` is logged on the first signal (what will happen before the process exits).
    ``signum`` is the first signal's number (None until one arrives); ``name`` its name.
    """

    def __init__(self, message: str = "stopping at the next safe point"):
        self.message = message
        self.signum: int | None = None
        self._previous: dict = {}
        self._announcing = False  # the first signal's message is being logged
        self._again = False  # a second signal came meanwhile

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a stop as a signal would (used by code that stops itself, and by tests)."""
        if self.signum is None:
            self.signum = signum

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            if not self._announcing:
                raise KeyboardInterrupt
            # a handler can run inside another one (between any two bytecodes): an interrupt raised
            # here would cut the first signal's message short, so it is raised once that is out
            self._again = True
            return
        self.signum = signum
        self._announcing = True
        try:
            logger.warning("%s: %s (%s again to stop at once)", signal.Signals(signum).name, self.message,
                           "Ctrl-C" if signum == signal.SIGINT else "the signal")
        finally:
            self._announcing = False
        if self._again:
            raise KeyboardInterrupt

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
