"""wavegen.signals: the first SIGINT/SIGTERM asks for a stop, a second stops at once (real signals)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from wavegen.signals import StopSignals
from wavegen.signals import _before_the_group as _real_before_the_group


@pytest.fixture(autouse=True)
def met_the_others(monkeypatch):
    """These tests' launched processes have met the others (a held SIGTERM's line waits no longer for a process
    group: test_a_held_sigterms_line_waits_while_the_process_has_not_met_the_others)."""
    from wavegen import signals

    monkeypatch.setattr(signals, "_before_the_group", lambda: False)


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_sets_the_flag_second_interrupts(first):
    previous = signal.getsignal(first)
    with StopSignals("saving") as stop:
        assert not stop.requested
        os.kill(os.getpid(), first)
        assert stop.requested and stop.signum == first and stop.name == first.name
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(first) is previous  # handlers restored


def twice(signum) -> bool:
    """Signal ``signum`` sent to this process twice, at once → whether the second raised KeyboardInterrupt (caught
    here: a KeyboardInterrupt out of a test ends pytest's whole session)."""
    try:
        os.kill(os.getpid(), signum)
        os.kill(os.getpid(), signum)
        for _ in range(1000):  # (handlers run between bytecodes)
            pass
    except KeyboardInterrupt:
        return True
    return False


def interrupt_then_term() -> bool:
    """A Ctrl-C then a SIGTERM sent to this process at once → whether the SIGTERM raised KeyboardInterrupt (as
    :func:`twice`)."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    except KeyboardInterrupt:
        return True
    return False


def test_a_sigterm_handed_on_twice_is_one_stop_and_a_later_one_stops_at_once(monkeypatch, caplog):
    """A wrapper script that traps SIGTERM and forwards it to wavegen, its sender signalling the whole process group:
    two SIGTERMs ms apart, the second taken for "the signal again to stop at once" (KeyboardInterrupt: the window's
    snapshot not saved, a bare "interrupted"). Now one within TERM_ECHO_SECONDS is the first handed on: one stop, one
    line; one later still stops at once, as the line says; a Ctrl-C then too. Under a launch, held, the same."""
    from wavegen import signals

    monkeypatch.setattr(signals, "TERM_ECHO_SECONDS", 0.5, raising=False)  # (raising: a wavegen without it fails below)
    caplog.set_level(logging.WARNING, logger="wavegen.signals")
    with StopSignals("saving") as stop:
        echo_stopped = twice(signal.SIGTERM)
        assert not echo_stopped and stop.requested and stop.name == "SIGTERM"
        assert caplog.text.count("SIGTERM: saving") == 1, caplog.text
        time.sleep(0.6)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
    with StopSignals("saving"), pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C is not an echo
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(signals, "LAUNCH_TERM_SECONDS", 0.3)
    caplog.clear()
    with StopSignals("saving") as stop:
        echo_stopped = twice(signal.SIGTERM)
        assert not echo_stopped and stop.held and not stop.requested
        time.sleep(0.6)
        assert stop.requested and caplog.text.count("SIGTERM: saving") == 1, caplog.text


def _a_term_after_a_ctrl_c_is_the_same_stop_and_a_later_one_stops_at_once(caplog):
    """Under a launcher that sends a SIGTERM after a Ctrl-C (TERM_ECHO_SECONDS patched to 0.5 s): that SIGTERM is
    the Ctrl-C's stop, said once; one 0.6 s after it stops at once."""
    caplog.set_level(logging.WARNING, logger="wavegen.signals")
    with StopSignals("saving") as stop:
        assert not interrupt_then_term() and stop.requested and stop.name == "SIGINT"
        assert caplog.text.count("SIGINT: saving") == 1, caplog.text
        time.sleep(0.6)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)


def test_accelerates_one_process_launchers_sigterm_after_a_ctrl_c_is_the_same_stop(monkeypatch, caplog):
    """accelerate launch of one process: a Ctrl-C reaches it and wavegen, and it then sends wavegen a SIGTERM (and
    kills it 5 s later). That SIGTERM was taken for the second signal ("stop at once": no checkpoint, the line said
    untrue). Now, under that launcher (ACCELERATE_DYNAMO_BACKEND, no WORLD_SIZE above 1), one within
    TERM_ECHO_SECONDS of the Ctrl-C is the same stop; a later one stops at once; started alone, as ever, at once."""
    from wavegen import signals

    monkeypatch.setattr(signals, "TERM_ECHO_SECONDS", 0.5)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")  # (what accelerate's launcher sets, for one process too)
    _a_term_after_a_ctrl_c_is_the_same_stop_and_a_later_one_stops_at_once(caplog)
    monkeypatch.delenv("ACCELERATE_DYNAMO_BACKEND")
    with StopSignals("saving"):
        assert interrupt_then_term()


def test_a_ctrl_c_under_accelerates_one_process_launcher_is_said_once_the_launcher_reacted(monkeypatch, caplog):
    """That launcher copies wavegen's stderr and a Ctrl-C can cut its copying between a read and its write: the stop's
    line, written as the Ctrl-C came, was lost now and then (test_train_signals' launch, stalled). Now the line, and
    the stop with it, wait for the launcher's SIGTERM (then it copies from a thread the Ctrl-C does not cut), or
    TERM_ECHO_SECONDS where none comes; a Ctrl-C again meanwhile stops at once, the first's line never said."""
    from wavegen import signals

    monkeypatch.setattr(signals, "TERM_ECHO_SECONDS", 0.5)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("ACCELERATE_DYNAMO_BACKEND", "NO")
    caplog.set_level(logging.WARNING, logger="wavegen.signals")
    with StopSignals("saving") as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        assert not stop.requested and "saving" not in caplog.text  # the launcher has yet to react
        os.kill(os.getpid(), signal.SIGTERM)  # it has
        assert stop.requested and stop.name == "SIGINT" and caplog.text.count("SIGINT: saving") == 1, caplog.text
    caplog.clear()
    with StopSignals("saving") as stop:  # no SIGTERM comes (a Ctrl-C sent to wavegen alone)
        sent = time.monotonic()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        assert not stop.requested and not caplog.text
        while not stop.requested and time.monotonic() < sent + 10:
            time.sleep(0.01)
        assert time.monotonic() - sent >= 0.5 and caplog.text.count("SIGINT: saving") == 1, caplog.text
    caplog.clear()
    with StopSignals("saving") as stop:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.6)
        assert not caplog.text


@pytest.mark.parametrize("env", [{"OMPI_COMM_WORLD_SIZE": "2"},
                                 {"OMPI_COMM_WORLD_SIZE": "2", "ACCELERATE_DYNAMO_BACKEND": "NO", "WORLD_SIZE": "2"}],
                         ids=["mpirun", "accelerate launch --cpu under mpirun, its state made"])
def test_an_mpi_launchers_sigterm_after_a_ctrl_c_is_the_same_stop(monkeypatch, caplog, env):
    """mpirun reached by a Ctrl-C ends its job: a SIGTERM to every process (then SIGKILL); accelerate's launcher
    above it sends its own to every process below it. That SIGTERM was taken for the second signal (stop at once, no
    checkpoint) under mpirun alone, and under accelerate's --cpu path once its state had set WORLD_SIZE (its one-process
    rule then no longer held). Now the same stop; one after TERM_ECHO_SECONDS stops at once."""
    from wavegen import signals

    monkeypatch.setattr(signals, "TERM_ECHO_SECONDS", 0.5)
    for name in ("WORLD_SIZE", "ACCELERATE_DYNAMO_BACKEND", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _a_term_after_a_ctrl_c_is_the_same_stop_and_a_later_one_stops_at_once(caplog)


def test_off_the_main_thread_it_installs_nothing():
    seen = []

    def worker():
        with StopSignals() as stop:
            seen.append((stop.requested, dict(stop._previous)))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [(False, {})]


def test_real_process_finishes_its_step_on_sigterm():
    """A worker loop in another process: SIGTERM lets the current step finish, then it exits 0."""
    script = textwrap.dedent("""
        import time
        from wavegen.signals import StopSignals
        steps = 0
        with StopSignals("finishing the step") as stop:
            print("ready", flush=True)
            while not stop.requested:
                time.sleep(0.01)
                steps += 1
        print("stopped cleanly", stop.name, flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert "stopped cleanly SIGTERM" in out
    assert "SIGTERM: finishing the step" in err


def test_a_second_signal_during_the_first_message_still_lets_the_message_out():
    """CI once lost the first signal's message: the second arrived while it was being logged, and its
    KeyboardInterrupt cut the logging call short. The interrupt now waits for the message."""
    logged = []

    class SecondSignalMidMessage(logging.Handler):
        def emit(self, record):
            os.kill(os.getpid(), signal.SIGINT)  # handled at the next bytecode, inside this call
            logged.append(record.getMessage())

    handler = SecondSignalMidMessage()
    log = logging.getLogger("wavegen.signals")
    log.addHandler(handler)
    try:
        with StopSignals("saving") as stop, pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the interrupt comes from the handler, not from here
                pass
    finally:
        log.removeHandler(handler)
    assert stop.name == "SIGTERM"
    assert logged == ["SIGTERM: saving (the signal again to stop at once)"]


def test_under_a_launch_a_sigterm_line_waits_and_a_lost_process_drops_it(monkeypatch, caplog):
    """torchrun ends the survivors of a process that died with SIGTERM: their 'SIGTERM: finishing ...' line came
    before the line of the loss. Under a launch it waits LAUNCH_TERM_SECONDS, unsaid once a loss is said; a
    SIGTERM with no loss is said after the wait, a Ctrl-C at once."""
    from wavegen import signals
    from wavegen.distributed import ProcessLostError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(signals, "LAUNCH_TERM_SECONDS", 0.5)
    monkeypatch.setattr(signals, "_terms_held", False)
    caplog.set_level(logging.WARNING, logger="wavegen.signals")
    with StopSignals("saving") as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert not stop.requested and stop.name == "SIGTERM" and caplog.text == ""  # not yet: the loss may come
        assert stop.held  # the work looks for a lost process meanwhile (a render: at each chunk)
        ProcessLostError("another process of this training (2 processes) ended unexpectedly")
        assert stop.requested and not stop.held
        time.sleep(1.0)
    assert caplog.text == "" and signals.held_a_launchers_term()
    with StopSignals("saving") as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1.0)
        assert stop.requested and "SIGTERM: saving (the signal again to stop at once)" in caplog.text
    caplog.clear()
    with StopSignals("saving") as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert "SIGINT: saving (Ctrl-C again to stop at once)" in caplog.text


def test_a_held_sigterm_whose_time_is_up_raises_a_loss_found_meanwhile_in_the_main_thread(monkeypatch, caplog):
    """A launched render far from its next look for a lost process (a guard's verdict, the FLAC encoding at the end)
    when its held SIGTERM's time was up said "SIGTERM: ... finishing the render ... instead of stopping", then met
    the loss (or torchrun killed it 30 s after its SIGTERM, unsaid). Now look_for_loss is asked then, and the loss it
    finds is raised in the main thread at once, no SIGTERM line said, no stop requested; none found: the line."""
    from wavegen import signals

    class Lost(Exception):
        pass

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(signals, "LAUNCH_TERM_SECONDS", 0.3)
    caplog.set_level(logging.WARNING, logger="wavegen.signals")
    with pytest.raises(Lost), StopSignals("saving", look_for_loss=lambda: Lost("process 1 ended")) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # work that never looks (Python code: the handler runs in it)
            time.sleep(0.01)
    assert time.monotonic() < deadline and not stop.requested and caplog.text == ""
    with StopSignals("saving", look_for_loss=lambda: None) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1.0)
        assert stop.requested and "SIGTERM: saving (the signal again to stop at once)" in caplog.text


def test_which_process_of_a_launch_says_a_ctrl_c_is_known_without_torch(monkeypatch):
    """A Ctrl-C reaches every process of a launch: the first says "interrupted" for all, decided from the
    launcher's variables alone (the CLI asks while torch may be half imported by the interrupt)."""
    import subprocess
    import sys

    from wavegen.signals import says_the_interrupt

    for name in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK", "WORLD_SIZE",
                 "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert says_the_interrupt()  # alone
    monkeypatch.setenv("RANK", "1")
    assert says_the_interrupt()  # a stray RANK of a process started alone (no launcher's size above 1): it says it
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert says_the_interrupt()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not says_the_interrupt()  # the second of two
    monkeypatch.setenv("RANK", "0")
    assert says_the_interrupt()
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "3")  # an MPI launcher's (accelerate launch --cpu under mpirun)
    assert not says_the_interrupt()
    code = "import sys, wavegen.signals as s; s.launch_rank(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "False\n"


def test_a_launchers_sigterm_before_any_stopsignals_is_held_for_the_next_one(monkeypatch):
    """A launched process's SIGTERM while it imported torch (no StopSignals yet: a render's start) ended it at once,
    without a word about the process lost meanwhile. Inside launch_term_held it waits for the next StopSignals,
    which holds it as its own (then looks for the loss); one that no StopSignals took is delivered at the end."""
    from wavegen import signals
    from wavegen.signals_start import launch_term_held

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(signals, "LAUNCH_TERM_SECONDS", 60.0)
    monkeypatch.setattr(signals, "_terms_held", False)
    took = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: took.append(signum))
    try:
        with launch_term_held():
            os.kill(os.getpid(), signal.SIGTERM)  # (torch importing)
            assert not took
            with StopSignals("saving") as stop:
                assert stop.held and stop.name == "SIGTERM" and not stop.requested
            assert signals.held_a_launchers_term() and not took  # taken by that StopSignals: not delivered again
            os.kill(os.getpid(), signal.SIGTERM)  # between two StopSignals
        assert took == [signal.SIGTERM]  # none took it: delivered as the block ended
    finally:
        signal.signal(signal.SIGTERM, previous)
    monkeypatch.setenv("WORLD_SIZE", "1")
    with launch_term_held():  # not launched: nothing held
        assert signal.getsignal(signal.SIGTERM) is previous


def test_a_launchers_sigterm_held_as_the_block_raises_is_not_delivered_over_its_error(monkeypatch):
    """A render's survivor met the loss in its last StopSignals, then its launcher's SIGTERM as it closed its group:
    held for a next StopSignals that never came, it was delivered as the block ended and the process died by it, its
    error unsaid. Now the error goes on to be said, and that SIGTERM counts as a launcher's held."""
    from wavegen import signals
    from wavegen.signals_start import launch_term_held

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(signals, "_terms_held", False)
    took = []

    def handler(signum, frame):  # the handler before the block (the CLI's), set back after it
        took.append(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(RuntimeError, match="the loss"):
            with launch_term_held():
                try:
                    raise RuntimeError("the loss")
                finally:  # (its group closing)
                    os.kill(os.getpid(), signal.SIGTERM)
        assert took == [] and signals.held_a_launchers_term() and signals.term_held_for_next() is None
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_held_sigterm_whose_loss_may_not_be_raised_stays_held_unsaid(monkeypatch, caplog):
    """A launched render's start (model load, numba's compile: an exception must not cut it) held its SIGTERM, then
    said "SIGTERM: stopping once the model and engine are ready", and then the loss it met at its next meeting: two
    lines. With raise_loss False, a loss look_for_loss finds leaves the line unsaid and the signal held, raising
    nothing; the work's own meeting with the loss ends it."""
    from wavegen import signals
    from wavegen.distributed import ProcessLostError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(signals, "LAUNCH_TERM_SECONDS", 0.2)
    caplog.set_level(logging.WARNING, logger="wavegen.signals")
    with StopSignals("saving", look_for_loss=lambda: RuntimeError("process 1 ended"), raise_loss=False) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1.0)  # Python code all along: a loss raised would land here
        assert stop.held and not stop.requested and caplog.text == ""
        ProcessLostError("process 1 of this render (2 processes) ended unexpectedly")  # met by the work
        assert not stop.held
    assert caplog.text == ""


def test_a_loss_raised_as_a_held_sigterms_time_is_up_is_not_swallowed_by_except_exception(monkeypatch, caplog):
    """The loss look_for_loss found was raised as itself (an ordinary Exception) at whatever line the main thread
    ran: an ``except Exception`` there (a store call's) swallowed it, the held SIGTERM forgotten, and the launcher
    killed the process 30 s later without a word. Now it passes any ``except Exception`` and leaves the block as
    the loss itself."""
    from wavegen import signals
    from wavegen.distributed import ProcessLostError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(signals, "LAUNCH_TERM_SECONDS", 0.2)
    caplog.set_level(logging.WARNING, logger="wavegen.signals")
    swallowed = []
    with pytest.raises(ProcessLostError, match="process 1 ended"), \
            StopSignals("saving", look_for_loss=lambda: ProcessLostError("process 1 ended")):
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:  # (a store call that treats its own errors as "no word")
                time.sleep(0.01)
            except Exception as err:  # noqa: BLE001
                swallowed.append(err)
    assert not swallowed and time.monotonic() < deadline and caplog.text == ""


def test_a_held_sigterms_line_waits_while_the_process_has_not_met_the_others(monkeypatch, caplog):
    """A launched training whose torch import outlasted LAUNCH_TERM_SECONDS after torchrun's SIGTERM (processes 1 and
    2 of 3 killed as they started) said "SIGTERM: stopping ...", then stopped before its run started, exit 130, the
    loss unsaid. Now the line waits while no process group exists (the process meets the others first and says the
    loss there), at most LAUNCH_START_SECONDS; once the group exists, it is said."""
    from wavegen import signals

    met = []
    monkeypatch.setattr(signals, "_before_the_group", lambda: not met)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(signals, "LAUNCH_TERM_SECONDS", 0.2)
    caplog.set_level(logging.WARNING, logger="wavegen.signals")
    with StopSignals("saving") as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1.0)
        assert stop.held and not stop.requested and caplog.text == ""
        met.append(True)
        time.sleep(1.0)
        assert stop.requested and "SIGTERM: saving" in caplog.text
    caplog.clear()
    met.clear()
    monkeypatch.setattr(signals, "LAUNCH_START_SECONDS", 0.5)
    with StopSignals("saving") as stop:  # no group ever made (a launched command that makes none): said after all
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1.5)
        assert stop.requested and "SIGTERM: saving" in caplog.text


def test_a_held_sigterm_waits_for_no_meeting_where_none_is_ahead():
    """A launched process that never meets the others before a group (`wavegen serve` under a launcher's
    WORLD_SIZE=2; train or render once their group was destroyed): its SIGTERM's line waited LAUNCH_START_SECONDS
    (20 s, exit 130 after 22 s) for a meeting that never came. Now it waits LAUNCH_TERM_SECONDS, as anywhere."""
    script = textwrap.dedent("""
        import logging, os, signal, time
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        from wavegen.signals import StopSignals
        with StopSignals("stopping the server") as stop:
            sent = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)
            while not stop.requested and time.monotonic() - sent < 40:
                time.sleep(0.05)
        print(f"requested {stop.requested} after {time.monotonic() - sent:.1f}", flush=True)
    """)
    child = subprocess.run([sys.executable, "-c", script], env={**os.environ, "WORLD_SIZE": "2"},
                           capture_output=True, text=True, timeout=60)
    said = child.stdout.split()
    assert said[:2] == ["requested", "True"], child.stdout + child.stderr
    assert float(said[-1]) < 12, child.stdout  # LAUNCH_TERM_SECONDS (5 s), not LAUNCH_START_SECONDS (20 s)
    assert "SIGTERM: stopping the server" in child.stderr


def test_a_held_sigterms_line_waits_only_while_a_meeting_is_ahead(monkeypatch, caplog):
    """expect_the_others (train and render under a launch, from their start; the meeting before the group): a held
    SIGTERM's line waits for the meeting, no group existing; met_the_others (the meeting over): said."""
    from wavegen import signals

    monkeypatch.setattr(signals, "_before_the_group", _real_before_the_group)  # (the fixture's stand-in undone)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(signals, "LAUNCH_TERM_SECONDS", 0.2)
    caplog.set_level(logging.WARNING, logger="wavegen.signals")
    signals.expect_the_others()
    try:
        with StopSignals("saving") as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)
            assert stop.held and not stop.requested and caplog.text == ""
            signals.met_the_others()
            time.sleep(1.0)
            assert stop.requested and "SIGTERM: saving" in caplog.text
    finally:
        signals.met_the_others()


# As wavegen.cli's import does (hold_launch_term_early, then cli_imported), a launcher's SIGTERM met during it; then
# a program that never calls the CLI's main
_SIGTERM_WHILE_THE_CLI_IMPORTS = """import os, signal, sys, time
from wavegen import signals_start
signals_start.hold_launch_term_early()
os.kill(os.getpid(), signal.SIGTERM)  # held: the CLI is importing
time.sleep(0.2)
signals_start.cli_imported()
print("imported", flush=True)
time.sleep(30)
"""


def test_a_sigterm_held_while_the_cli_imports_ends_a_program_that_never_calls_its_main():
    """A launcher's SIGTERM held by the CLI's early hold during its import, the CLI's main never called (a library's
    program): the SIGTERM was held for good. Now it is delivered within a second: the process ends by it."""
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-c", _SIGTERM_WHILE_THE_CLI_IMPORTS], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})
    assert run.stdout.strip() == "imported", run.stderr[-2000:]  # held through the import
    assert run.returncode == -signal.SIGTERM, (run.returncode, run.stderr[-2000:])
    assert time.monotonic() - start < 20


# As `python -m wavegen` does: the CLI imported (hold_launch_term_early, then cli_imported), then a launcher's SIGTERM
# before its main begins (the tens of microseconds between the import's end and main's first line), then main or not
_SIGTERM_BETWEEN_THE_IMPORT_AND_MAIN = """import os, signal, sys, time
from wavegen import signals, signals_start
signals_start.hold_launch_term_early()
signals_start.cli_imported()
os.kill(os.getpid(), signal.SIGTERM)  # the CLI imported, its main not begun yet
time.sleep(0.2)
print("after the signal", flush=True)
if sys.argv[1] == "main":
    signals_start.cli_main_runs()
time.sleep(3)  # past the second the hold waits for main
print("held", signals.term_held_for_next() is not None, flush=True)
"""


@pytest.mark.parametrize("main", ["main", "no main"])
def test_a_sigterm_between_the_clis_import_and_its_main_is_held_for_main(main):
    """`python -m wavegen` under a launch, a launcher's SIGTERM after the CLI's import and before its main's first
    line: the process ended by it at once, without a word (the hold then applied inside main alone). Now it is held
    for main's commands as during the import; where main never begins, delivered a second later."""
    run = subprocess.run([sys.executable, "-c", _SIGTERM_BETWEEN_THE_IMPORT_AND_MAIN, main], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})
    if main == "main":
        assert (run.returncode, run.stdout.split()) == (0, ["after", "the", "signal", "held", "True"]), run.stderr
    else:
        assert (run.returncode, run.stdout.strip()) == (-signal.SIGTERM, "after the signal"), run.stderr[-2000:]


LATCHED = """
import sys
from wavegen.signals import end_program
try:
    exec("import time\\nprint('ready', flush=True)\\ntime.sleep(60)")  # the Ctrl-C passes out of a string's code
except KeyboardInterrupt:
    print("caught", flush=True)
if sys.argv[1] == "end_program":
    end_program(130)
raise SystemExit(130)
"""


@pytest.mark.parametrize("ending", ["end_program", "SystemExit"])
def test_a_caught_ctrl_c_exits_with_the_programs_code_under_python_m(tmp_path, ending):
    """A Ctrl-C caught after it passed out of exec'd code: ``python -m`` ends with the program's 130 through
    end_program; a bare SystemExit(130) is turned into a death by SIGINT (-2) by CPython's latch (the control: the
    quirk end_program exists for; seen as the kernel check's flaky cut-short test)."""
    (tmp_path / "latched").mkdir()
    (tmp_path / "latched" / "__main__.py").write_text(LATCHED)
    run = subprocess.Popen([sys.executable, "-m", "latched", ending], cwd=tmp_path, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert run.stdout.readline() == "ready\n"  # inside the exec'd code
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=60)
    assert out == "caught\n" and "Traceback" not in err, (out, err)
    assert run.returncode == (130 if ending == "end_program" else -signal.SIGINT), (ending, run.returncode)
