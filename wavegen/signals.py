"""Ctrl-C and SIGTERM mean the same everywhere in wavegen (training, rendering, serving): StopSignals, and who
says a stop under a launch (what happens before a command's StopSignals exist: wavegen.signals_start).

The first SIGINT or SIGTERM asks the work to stop at the next safe point: training finishes
its step and writes a checkpoint; a render finishes (or rewinds) its block and writes a
snapshot. A second signal stops at once (KeyboardInterrupt), leaving what the last checkpoint
or snapshot holds; a SIGTERM within TERM_ECHO_SECONDS of a first SIGTERM is that one handed on twice (a wrapper
script that forwards it, beside its sender's to the process group) and changes nothing, as does one within
TERM_ECHO_SECONDS of a Ctrl-C under accelerate's one-process launcher or an MPI launcher
(:func:`launcher_terms_after_an_interrupt`). accelerate's one-process launcher copies wavegen's stderr, and a line
written as the Ctrl-C came could be lost in the copying: there the Ctrl-C's line, and its stop, wait for that SIGTERM
(TERM_ECHO_SECONDS at most; :func:`accelerates_one_process`).
Handlers can only be installed from the main thread; elsewhere the context manager does nothing and the process
keeps its handlers.

Under a launch (torchrun, accelerate launch: WORLD_SIZE > 1) a SIGTERM is most often the launcher ending
the survivors of a process that ended (a user's Ctrl-C reaches the processes as SIGINT): it takes effect,
its line said, LAUNCH_TERM_SECONDS later, time for the process to meet the lost one (its next collective,
a render's next chunk: StopSignals.held) and say that instead (:func:`drop_pending_stop_lines`); a work that
may be far from its next look (a render's guard, its FLAC encoding) gives a ``look_for_loss``, asked then, whose
loss is raised at once. While a meeting with the others is ahead of the process (train and render under a launch, from
their start, :func:`expect_the_others`, until the meeting before their group, distributed.meet_before_the_group,
that names a process lost at start, is over: :func:`met_the_others`) the line waits on, LAUNCH_START_SECONDS at most
(any other command, or one past its meeting, says it as ever); and from the CLI's import on, a SIGTERM before any
StopSignals is held for the next (:func:`hold_term_for_next`: wavegen.signals_start's holds, which hold the signals met
as a command starts). A Ctrl-C reaches
every process of a launch: the first alone says what it does (:func:`first_process_says`) and that it interrupted
the command (:func:`says_the_interrupt`).
"""

from __future__ import annotations

import _thread
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
import time

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)

LAUNCH_TERM_SECONDS = 5.0  # how long a launched process's SIGTERM line waits for word of a lost process
# how long it waits, at most, while this process has a meeting with the others ahead (expect_the_others: torch
# importing, the meeting before the group, distributed.meet_before_the_group, names the lost one): under torchrun's 30 s
LAUNCH_START_SECONDS = 20.0
# a SIGTERM this soon after the first is that one handed on twice (a wrapper script that traps it and forwards it to
# wavegen, beside the sender's own to the whole process group: torchrun's, a service manager's), not "again"
TERM_ECHO_SECONDS = 1.0
_RELOOK_SECONDS = 0.25  # how often a held SIGTERM's line looks again whether the group exists
_pending: set = set()  # the StopSignals whose SIGTERM line waits
_terms_held = False  # a SIGTERM of a launcher was held by a StopSignals of this process
# when a SIGTERM held before any StopSignals (wavegen.signals_start) came (monotonic), for the next to take as its own;
# None where none is held
_early_term_at: float | None = None
_meeting_ahead = False  # this process has yet to meet the others before its group (expect_the_others)
_lock = threading.Lock()  # a held SIGTERM's time up (its timer's thread) against a loss met by the work meanwhile


def launched() -> bool:
    """Whether this process is one of several of a launch (its launcher set WORLD_SIZE > 1)."""
    return os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1")


# Where a launcher puts this process's rank and its rank on its machine: torchrun / accelerate's
# multi-GPU launcher, then the MPI launchers accelerate's --cpu path runs under (accelerate reads the same)
_RANK_VARS = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")
_LOCAL_RANK_VARS = ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK")
_SIZE_VARS = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


def launch_rank() -> tuple[int, int]:
    """This process's ``(rank, local rank)`` as its launcher set them, before any process group
    exists (and without torch: the CLI asks while torch may be half imported): ``(0, 0)`` for a
    process started alone."""
    def first(names):
        for name in names:
            if os.environ.get(name, "").strip().isdigit():
                return int(os.environ[name])
        return 0

    return first(_RANK_VARS), first(_LOCAL_RANK_VARS)


def launcher_terms_after_an_interrupt() -> bool:
    """Whether this process's launcher sends it a SIGTERM after a Ctrl-C: ``accelerate launch`` of one process (its
    launcher without torchrun: it sets ACCELERATE_DYNAMO_BACKEND, which no one else does, and no WORLD_SIZE above 1),
    or an MPI launcher (mpirun, mpiexec: its size variable set; accelerate's --cpu path runs under one, and then sets
    WORLD_SIZE itself as its state is made). accelerate's launcher shares the terminal's process group: a Ctrl-C
    reaches it beside this process, and it then sends this process (every process below it) a SIGTERM and kills it
    5 s later; mpirun, reached by a Ctrl-C, ends its job so: SIGTERM, then SIGKILL. That SIGTERM is the same stop as
    the Ctrl-C, not a second signal (:class:`StopSignals`)."""
    return _mpi_launched() or accelerates_one_process()


def _mpi_launched() -> bool:
    """Whether an MPI launcher started this process (its size variable set)."""
    return any(os.environ.get(name, "").strip().isdigit() for name in _SIZE_VARS[1:])


def accelerates_one_process() -> bool:
    """Whether this process is ``accelerate launch``'s one process (its launcher without torchrun or MPI: it sets
    ACCELERATE_DYNAMO_BACKEND, no one else does, and no size above 1). That launcher reads this process's stderr
    and copies it to its own; a Ctrl-C, which reaches it beside this process, can cut the copying between a read and
    its write, and what was read then is lost: a line written as the Ctrl-C came (StopSignals' says it once the
    launcher has reacted: its SIGTERM, :func:`launcher_terms_after_an_interrupt`)."""
    return "ACCELERATE_DYNAMO_BACKEND" in os.environ and not launched() and not _mpi_launched()


def says_the_interrupt() -> bool:
    """Whether this process speaks for its launch: says that a Ctrl-C interrupted its command, and what a Ctrl-C
    will do (:func:`first_process_says`). A Ctrl-C reaches every process of a launch (the terminal's process group;
    torchrun's workers, in sessions of their own, by its forward alone), so the first of the launch (launch_rank)
    says it for all (the others exit 130 without a word); a process started alone always does (however a stray RANK
    in its environment reads: no launcher set a size above 1)."""
    several = any(os.environ.get(name, "").strip().isdigit() and int(os.environ[name]) > 1 for name in _SIZE_VARS)
    return not several or launch_rank()[0] == 0


def drop_pending_stop_lines() -> None:
    """A lost process is said by this one: a launcher's SIGTERM held meanwhile says nothing of its own."""
    with _lock:
        for stop in list(_pending):
            if not stop._looking or threading.current_thread() is not stop._line:  # (not the look that made it)
                stop._cancel_line()


def held_a_launchers_term() -> bool:
    """Whether a StopSignals of this process held a SIGTERM under a launch (its launcher asked it to end)."""
    return _terms_held


@contextlib.contextmanager
def first_process_says(logger_name: str, rank: int | None = None):
    """While inside: the warnings (and info) of logger ``logger_name`` said by the first process of a launch
    alone (``rank``, or launch_rank's: known before any process group exists); its errors by every process. A
    Ctrl-C reaches every process of a launch (torchrun hands it on to each, once), and each would say the same."""
    if (says_the_interrupt() if rank is None else rank == 0):
        yield
        return
    log, errors_only = logging.getLogger(logger_name), (lambda record: record.levelno >= logging.ERROR)
    log.addFilter(errors_only)
    try:
        yield
    finally:
        log.removeFilter(errors_only)


def hold_term_for_next() -> None:
    """A SIGTERM before any StopSignals (wavegen.signals_start's holds: the CLI's import, a command's imports): held
    for the next StopSignals entered, which takes it as its own (one held already stays, with its time)."""
    global _early_term_at
    if _early_term_at is None:
        _early_term_at = time.monotonic()


def term_held_for_next() -> float | None:
    """When the SIGTERM held for the next StopSignals came (:func:`hold_term_for_next`; monotonic), None where none."""
    return _early_term_at


def drop_term_held() -> bool:
    """The SIGTERM held for the next StopSignals let go (delivered by the caller, or dropped): whether one was."""
    global _early_term_at
    held, _early_term_at = _early_term_at is not None, None
    return held


def took_a_launchers_term() -> None:
    """A launcher's SIGTERM met outside any StopSignals, taken as one of theirs (:func:`held_a_launchers_term`):
    wavegen.signals_start.launch_term_held's, where its block raised an error that the process says."""
    global _terms_held
    _terms_held = True


def forget_launchers_term() -> None:
    """A new command starts (tests run several in one process): no SIGTERM of its launcher held yet
    (:func:`held_a_launchers_term`)."""
    global _terms_held
    _terms_held = False


def is_an_echo(since: float) -> bool:
    """Whether a SIGTERM now is the one that came at ``since`` (monotonic) handed on twice: within
    TERM_ECHO_SECONDS (a wrapper script that forwards it, beside its sender's to the process group)."""
    return time.monotonic() - since < TERM_ECHO_SECONDS


def expect_the_others() -> None:
    """Under a launch: this process's command (train, render) has yet to meet the others before its process group
    (distributed.meet_before_the_group), where a process lost at start is named: a held SIGTERM's line waits for that
    meeting (LAUNCH_START_SECONDS at most) until :func:`met_the_others`. Nothing where not launched."""
    global _meeting_ahead
    if launched():
        _meeting_ahead = True


def met_the_others() -> None:
    """The meeting :func:`expect_the_others` announced is over (the group made, the meeting failed, the command
    ended): a held SIGTERM's line is said LAUNCH_TERM_SECONDS after the signal, as anywhere."""
    global _meeting_ahead
    _meeting_ahead = False


def _before_the_group() -> bool:
    """Whether this launched process has a meeting with the others ahead (:func:`expect_the_others`) and has not met
    them yet: no process group of torch's (torch not imported, or its group not made)."""
    if not _meeting_ahead:
        return False
    dist = sys.modules.get("torch.distributed")
    try:
        return dist is None or not dist.is_initialized()
    except Exception:  # noqa: BLE001 (torch half imported): not met yet
        return True


def deliver(signum: int, handler) -> None:
    """Signal ``signum``, held back, answered as ``handler`` would have: StopSignals', Python's or the default."""
    if callable(handler):
        handler(signum, None)
    elif handler in (signal.SIG_DFL, None):
        signal.raise_signal(signum)


@contextlib.contextmanager
def signals_held():
    """SIGINT and SIGTERM held back inside the block and handed to the handlers they had (Python's
    KeyboardInterrupt, StopSignals', the default) when it ends, in the main thread (elsewhere handlers cannot
    be set: nothing is held). For code that turns a KeyboardInterrupt raised inside it into something else:
    libsndfile's write callbacks (cffi prints and drops it: render.writers' FLAC encoding), a module built
    with pybind11 whose initialisation reports it as an ImportError (matplotlib's ft2font: plotting).
    Masking the signals would not do: another thread, numba's or torch's, takes them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        for signum in held:  # as they would have been answered: StopSignals', Python's or the default
            deliver(signum, previous[signum])


def import_held(name: str):
    """Module ``name``, imported with SIGINT and SIGTERM held until it is (:func:`signals_held`), for extension
    modules that turn a KeyboardInterrupt raised while they initialise into something else (pybind11: an
    ImportError; nanobind: nothing at all); one imported before is returned as it is, no handler touched (a
    render's StopSignals keep theirs). ImportError where it is not installed."""
    if name in sys.modules:
        return sys.modules[name]
    with signals_held():
        return importlib.import_module(name)


class LossCarried(BaseException):
    """A loss that a held SIGTERM's ``look_for_loss`` found, raised in the main thread wherever it runs: a
    BaseException, so that no ``except Exception`` on the way (a store call's) swallows it and, with it, the held
    SIGTERM (the launcher then killed the process 30 s later without a word). StopSignals' exit raises ``loss``
    in its place; code inside the block that handles errors itself takes the loss through :func:`carried`."""

    def __init__(self, loss: BaseException):
        super().__init__(str(loss))
        self.loss = loss


def carried(err: BaseException) -> BaseException:
    """``err``, or the loss it carries where it is a :class:`LossCarried`."""
    return err.loss if isinstance(err, LossCarried) else err


def end_program(code: int):
    """``raise SystemExit(code)`` for a program's ``__main__``, a Ctrl-C it caught forgotten. CPython latches a
    KeyboardInterrupt that passed out of code run from a string (exec and eval, which Triton, dataclasses and
    namedtuples use to build functions) and, under ``python -m``, ends the process by SIGINT at exit (returncode -2,
    no word) though the program caught it and chose its code (Modules/main.c, Py_RunMain); the next string run clears
    the latch (Python/pythonrun.c, run_eval_code_obj). A Ctrl-C the program did not catch never comes here and keeps
    it."""
    exec("pass")  # clears the latch
    raise SystemExit(code)


def _started_timer(seconds: float, then) -> threading.Timer:
    """``then()`` in a daemon thread ``seconds`` from now (a StopSignals' line said later), started."""
    timer = threading.Timer(seconds, then)
    timer.daemon = True
    timer.start()
    return timer


class StopSignals:
    """``with StopSignals("finishing the step and saving a checkpoint") as stop: ... stop.requested``.

    ``message`` is logged on the first signal (what will happen before the process exits).
    ``signum`` is the first signal's number (None until one arrives); ``name`` its name.
    ``look_for_loss``: under a launch, → the error of another process of the launch seen lost (ended), or None;
    asked when a held SIGTERM's LAUNCH_TERM_SECONDS are up: that error is then raised in the main thread, whatever
    it is doing (carried past any ``except Exception`` by :class:`LossCarried`, raised as itself at the block's
    end), instead of the SIGTERM's line (a work that looks for a lost process at safe points alone may be far from
    the next one: a guard's verdict, the FLAC encoding at the end; torchrun kills 30 s after its SIGTERM).
    ``raise_loss`` False: a loss found then is not raised (work that an exception must not cut: numba's compiler,
    imports), but the SIGTERM's line is left unsaid and the signal held: the work meets the loss at its next look.
    """

    def __init__(self, message: str = "stopping at the next safe point", look_for_loss=None, raise_loss: bool = True):
        self.message, self.look_for_loss, self.raise_loss = message, look_for_loss, raise_loss
        self._looking = False  # look_for_loss is being asked (the held SIGTERM's timer)
        self._loss: BaseException | None = None  # what it found: raised in the main thread (its handler)
        self.signum: int | None = None
        self._previous: dict = {}
        self._announcing = False  # the first signal's message is being logged
        self._again = False  # a second signal came meanwhile
        self._line: threading.Timer | None = None  # a launched process's SIGTERM line, waiting
        self._held_since = 0.0  # when the first signal came (a launched process's SIGTERM: held since)
        # a Ctrl-C's line waiting for accelerate's one-process launcher to react (its SIGTERM, TERM_ECHO_SECONDS at
        # most): the timer that says it then, and who says it (the timer or the SIGTERM's handler, once)
        self._after_the_launcher: threading.Timer | None = None
        self._saying = threading.Lock()

    @property
    def requested(self) -> bool:
        """A stop was asked for (a launched process's SIGTERM: once its line is said, or dropped for a loss; a
        Ctrl-C under accelerate's one-process launcher: once its line is said, :meth:`_say_after_the_launcher`)."""
        return (self.signum is not None and self not in _pending and self._loss is None
                and self._after_the_launcher is None)

    @property
    def held(self) -> bool:
        """A launched process's SIGTERM waits, LAUNCH_TERM_SECONDS, for word of a lost process: the work looks
        for one at its next safe point (:func:`drop_pending_stop_lines`) rather than stop on the signal."""
        return self in _pending

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a stop as a signal would (used by code that stops itself, and by tests)."""
        if self.signum is None:
            self.signum = signum

    def _handle(self, signum, frame) -> None:
        if self._loss is not None:  # a lost process found as a held SIGTERM's time was up (_time_up)
            loss, self._loss, self.signum = self._loss, None, None  # said as the loss, not as a stop
            raise LossCarried(loss)  # (turned back into the loss as the block ends)
        if self.signum is not None:
            if (signum == signal.SIGTERM and is_an_echo(self._held_since)
                    and (self.signum == signal.SIGTERM or launcher_terms_after_an_interrupt())):
                self._say_after_the_launcher()  # (a Ctrl-C's line that waited for it)
                return  # the first signal handed on: it asks for nothing more (TERM_ECHO_SECONDS)
            if not self._announcing:
                self._drop_the_wait_for_the_launcher()  # the first's line, still waiting, is moot
                raise KeyboardInterrupt
            # a handler can run inside another one (between any two bytecodes): an interrupt raised
            # here would cut the first signal's message short, so it is raised once that is out
            self._again = True
            return
        self.signum, self._held_since = signum, time.monotonic()
        if signum == signal.SIGTERM and launched():  # the launcher ending the survivors of a lost process?
            global _terms_held
            _terms_held = True
            _pending.add(self)
            self._arm(LAUNCH_TERM_SECONDS)
            return
        if signum == signal.SIGINT and accelerates_one_process():  # said once the launcher reads in safety
            self._after_the_launcher = _started_timer(TERM_ECHO_SECONDS, self._say_after_the_launcher)
            return
        self._announcing = True
        try:
            self._say()
        finally:
            self._announcing = False
        if self._again:
            raise KeyboardInterrupt

    def _time_up(self) -> None:
        """A held SIGTERM's LAUNCH_TERM_SECONDS are up (its timer's thread): a lost process that look_for_loss
        finds is raised in the main thread (its SIGTERM handler, :meth:`_handle`, at once or after a block that
        holds signals: :func:`signals_held`); else the line is said and the stop takes effect. Nothing where the
        work met the loss meanwhile (:func:`drop_pending_stop_lines`)."""
        with _lock:
            if self not in _pending:
                return
            if _before_the_group() and time.monotonic() - self._held_since < LAUNCH_START_SECONDS:
                self._arm(_RELOOK_SECONDS)  # it meets the others first, and says a lost one there
                return
            self._looking = self.look_for_loss is not None
        loss = None
        if self._looking:
            try:
                loss = self.look_for_loss()
            except Exception:  # noqa: BLE001 (a store gone): the line is said
                loss = None
        with _lock:
            self._looking = False
            if self not in _pending:  # the work met the loss while this looked: it says it
                return
            if loss is None:
                self._say()
                return
            if not self.raise_loss:  # held, unsaid: the work says the loss where it meets it
                return
            _pending.discard(self)
            self._loss = loss
        _thread.interrupt_main(signal.SIGTERM)

    def _say_after_the_launcher(self) -> None:
        """A Ctrl-C's line under accelerate's one-process launcher, said (and the stop in effect) once the launcher
        has reacted to it (its SIGTERM, handed to this by :meth:`_handle`), or TERM_ECHO_SECONDS after it (the timer's
        thread): the launcher then copies this process's stderr from a thread that a Ctrl-C does not cut (a line
        written as the Ctrl-C came could be lost: :func:`accelerates_one_process`). Once; nothing where none waits."""
        timer = self._after_the_launcher
        if timer is None or not self._saying.acquire(blocking=False):
            return
        in_the_handler = threading.current_thread() is threading.main_thread()
        try:
            timer.cancel()
            self._announcing = in_the_handler  # (a Ctrl-C again meanwhile: raised once the line is out)
            self._say()
            self._after_the_launcher = None
        finally:
            self._announcing = False
            self._saying.release()
        if in_the_handler and self._again:
            raise KeyboardInterrupt

    def _drop_the_wait_for_the_launcher(self) -> None:
        """A Ctrl-C's line waiting for the launcher (:meth:`_say_after_the_launcher`) left unsaid: a second signal
        stops at once, or the work ended; the stop stands (:attr:`requested`)."""
        if self._after_the_launcher is not None:
            self._after_the_launcher.cancel()
            self._after_the_launcher = None

    def _arm(self, seconds: float) -> None:
        """The held SIGTERM's line (:meth:`_time_up`) ``seconds`` from now."""
        self._line = _started_timer(seconds, self._time_up)

    def _say(self) -> None:
        _pending.discard(self)
        logger.warning("%s: %s (%s again to stop at once)", signal.Signals(self.signum).name, self.message,
                       "Ctrl-C" if self.signum == signal.SIGINT else "the signal")

    def _cancel_line(self) -> None:
        _pending.discard(self)
        if self._line is not None:
            self._line.cancel()

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
            came = term_held_for_next()
            if came is not None:  # a SIGTERM before this existed (signals_start's holds): held from now on
                drop_term_held()
                self._handle(signal.SIGTERM, None)
                if not launched():  # its echo window runs from when it came, not from now
                    self._held_since = came
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._cancel_line()  # the work is over: what it did is said by what follows
        self._drop_the_wait_for_the_launcher()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        if isinstance(exc, LossCarried):
            raise exc.loss from None
