"""Signals met as a wavegen command starts, before its own StopSignals exist (wavegen.signals holds those).

Started alone, the CLI's program takes a SIGTERM for a Ctrl-C (:func:`term_as_interrupt`: "interrupted", exit 130;
its echo, one handed on twice within TERM_ECHO_SECONDS, nothing more) until a command sets its own handler, and prep,
eval and info throughout. Under a launch (torchrun, accelerate launch: WORLD_SIZE > 1) a launcher's SIGTERM from the
CLI's import on is held for the next StopSignals (:func:`hold_launch_term_early`, until :func:`release_early_term`),
as one inside a command's imports is (:func:`launch_term_held`: torch's seconds, before its StopSignals exist; a render
started alone holds its SIGTERMs so too, ``alone``). The StopSignals entered next takes a SIGTERM held so as its own
(wavegen.signals.hold_term_for_next).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

from wavegen.signals import (deliver, drop_term_held, forget_launchers_term, hold_term_for_next, is_an_echo, launched,
                             term_held_for_next, took_a_launchers_term)

# the CLI's early hold: "import" (wavegen.cli imports), "imported" (its main not begun), "main" (it runs)
_cli_hold = ""
_cli_term_due = False  # a SIGTERM held while "imported" waited its second for main in vain: delivered, not held
_CLI_MAIN_SECONDS = 1.0  # how long a SIGTERM held while the CLI imported waits for its main before it is delivered


def hold_launch_term_early() -> None:
    """From the CLI's import on (wavegen.cli: tens of ms before a command sets handlers of its own), under a launch,
    in the main thread, where SIGTERM has its default: a launcher's SIGTERM held for the next StopSignals (as
    :func:`launch_term_held` holds it), until :func:`release_early_term`; while the CLI imports and inside its main
    (:func:`cli_imported`, :func:`cli_main_runs`); between the two (``python -m wavegen``: tens of microseconds) for
    a second: a program that imports the CLI without calling main ends by that SIGTERM, as by default."""
    global _cli_hold, _cli_term_due
    if (launched() and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
        _cli_hold, _cli_term_due = "import", False
        signal.signal(signal.SIGTERM, _cli_took_early)


def cli_imported() -> None:
    """wavegen.cli's import is over: its early hold (:func:`hold_launch_term_early`) holds a SIGTERM met from now
    until its main runs (:func:`cli_main_runs`) a second at most, as one met during the import: delivered then where
    main has not begun (a library's import of the CLI: the process ends by it, as it would have)."""
    global _cli_hold
    if _cli_hold != "import":
        return
    _cli_hold = "imported"
    if term_held_for_next() is not None:
        _wait_for_main()


def cli_main_runs() -> None:
    """The CLI's main has begun: its early hold applies (until :func:`release_early_term`)."""
    global _cli_hold
    _cli_hold = "main"


def _wait_for_main() -> None:
    timer = threading.Timer(_CLI_MAIN_SECONDS, _term_outside_main)
    timer.daemon = True
    timer.start()


def _term_outside_main() -> None:
    global _cli_term_due
    if (_cli_hold == "imported" and term_held_for_next() is not None
            and signal.getsignal(signal.SIGTERM) is _cli_took_early):
        _cli_term_due = True  # (main begun meanwhile: its hold takes this SIGTERM, _cli_hold is "main")
        os.kill(os.getpid(), signal.SIGTERM)  # (its handler, in the main thread, ends the process)


def _cli_took_early(signum, frame) -> None:
    """The CLI's early hold: held while the CLI imports or its main runs, and between the two for a second
    (:func:`cli_imported`); elsewhere SIGTERM's default."""
    if _cli_hold in ("import", "main") or (_cli_hold == "imported" and not _cli_term_due):
        if _cli_hold == "imported" and term_held_for_next() is None:
            _wait_for_main()
        _took_early(signum, frame)
        return
    drop_term_held()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.raise_signal(signal.SIGTERM)


def _took_early(signum, frame) -> None:
    hold_term_for_next()


def release_early_term() -> None:
    """The CLI's early hold (:func:`hold_launch_term_early`) over: SIGTERM's default back, and a SIGTERM held that
    no StopSignals took delivered now (the process ends by it, as it would have). Nothing where it was not held."""
    global _cli_hold
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not _cli_took_early):
        return
    _cli_hold = ""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if drop_term_held():
        signal.raise_signal(signal.SIGTERM)


@contextlib.contextmanager
def launch_term_held(alone: bool = False, late: bool = False):
    """Under a launch, in the main thread: a SIGTERM that comes inside the block outside any StopSignals (a
    command's imports, torch's seconds, before its StopSignals exist) is held for the next StopSignals entered
    in it, which holds it as its own from then (the launcher ending the survivors of a process killed while
    they started: they meet the loss at their first meeting and say it, not end without a word). One that no
    StopSignals took is delivered as the block ends well; where it raises, its error is said, not cut short by the
    signal (a survivor that met the loss in its last StopSignals, then the launcher's SIGTERM as it closed its
    group: it died by it, without its line), and the SIGTERM counts as a launcher's held
    (wavegen.signals.held_a_launchers_term: one that leaves its error to another ends by it). ``alone``: in a
    process started alone too, where SIGTERM has its default (:func:`_term_held_alone`); elsewhere the block runs
    as it is. Yields what it held (``untaken``).
    ``late`` (with ``alone``): a SIGTERM after a block that ended well, up to the process's end, goes to ``untaken``
    too, where it would have been the CLI start's Ctrl-C (:meth:`HeldTerm.came_late`)."""
    held = HeldTerm()
    if threading.current_thread() is not threading.main_thread() or not (launched() or alone):
        yield held
        return
    if not launched():
        with _term_held_alone(held, late):
            yield held
        return
    forget_launchers_term()  # a new command (tests run several in one process): no SIGTERM of its launcher yet
    previous = signal.signal(signal.SIGTERM, _took_early)
    ended_well = False
    try:
        yield held
        ended_well = True
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if drop_term_held():
            if ended_well:
                deliver(signal.SIGTERM, previous)
            else:  # the launcher ending the survivors of a lost process, met after the work's last StopSignals (its
                took_a_launchers_term()  # group closing): the error says the loss (distributed.wait_for_the_launcher)


class HeldTerm:
    """What :func:`launch_term_held` held: ``untaken``, a process started alone whose block ended well with a
    SIGTERM that no StopSignals took (it came once their work was over): the caller says what that stop met."""
    untaken = False
    since: float | None = None  # when the first of them came (monotonic), where known

    def came_late(self, signum, frame) -> None:
        """SIGTERM's handler once a ``late`` block ended well (the CLI's program: until the process ends, tens of
        microseconds of main's end, then its exit): the work is whole, and the signal stops nothing of it (as the
        CLI start's Ctrl-C, term_as_interrupt, it said "interrupted", exit 130, of a finished render): ``untaken``
        (said by the caller where it has not looked yet; else the exit is 0). The first handed on twice asks
        nothing more; another, past TERM_ECHO_SECONDS, ends the process by SIGTERM's default (an exit that hangs)."""
        first = self.since if self.untaken else term_held_for_next()
        if first is None or is_an_echo(first):
            self.untaken, self.since = True, first if first is not None else time.monotonic()
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)


@contextlib.contextmanager
def _term_held_alone(held: HeldTerm, late: bool = False):
    """A process started alone: a SIGTERM outside the command's StopSignals (torch importing, the model loading
    before a render's first, its folder checked between two) ended it by the signal's default, without a word,
    where one inside them is said and stops cleanly. Held here for the next StopSignals, which takes it as its own
    (:func:`_took_early_alone`); one that none took: ``held.untaken`` where the block ends well, dropped where it
    raises (its error is said). The CLI's start's Ctrl-C (:func:`term_as_interrupt`) is replaced as the default is,
    and set back after (where ``late`` and the block ended well, :meth:`HeldTerm.came_late` takes its place instead:
    the work is whole); a SIGTERM ignored or handled otherwise (SIG_IGN, a caller's handler) is left so."""
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL and previous is not term_as_interrupt:
        yield
        return
    drop_term_held()
    signal.signal(signal.SIGTERM, _took_early_alone)
    ended_well = False
    try:
        yield
        ended_well = True
    finally:
        signal.signal(signal.SIGTERM, held.came_late if late and ended_well and previous is term_as_interrupt
                      else previous)
        came = term_held_for_next()
        if drop_term_held() and ended_well:
            held.untaken, held.since = True, came


def _took_early_alone(signum, frame) -> None:
    """A process started alone: its first SIGTERM held for the next StopSignals; another, after
    TERM_ECHO_SECONDS (not the first handed on twice), stops at once, as a second signal does under StopSignals."""
    came = term_held_for_next()
    if came is None:
        hold_term_for_next()
    elif not is_an_echo(came):
        raise KeyboardInterrupt


_term_came: float | None = None  # when the SIGTERM that term_as_interrupt took for a Ctrl-C came (monotonic)


def term_as_interrupt(signum, frame) -> None:
    """A SIGTERM handler where a stop is a Ctrl-C's (the CLI's start; prep, eval and info throughout): a
    KeyboardInterrupt, said as a Ctrl-C's with exit code 130. That one handed on twice (TERM_ECHO_SECONDS: a recipe
    that forwards it beside its sender's to the process group) asks nothing more: raised again, it cut the first's
    cleanup short (prep's temporary folder of decoded audio left in the corpus folder)."""
    global _term_came
    if _term_came is not None and is_an_echo(_term_came):
        return
    _term_came = time.monotonic()
    raise KeyboardInterrupt


def term_taken_as_interrupt() -> bool:
    """Whether :func:`term_as_interrupt` took a SIGTERM in this process."""
    return _term_came is not None
