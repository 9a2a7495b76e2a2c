"""Launched processes: ended whole when they overrun (:func:`run_launch`, :func:`kill_launch`), and
reporting, as they exit, which threads they leave behind.

A process whose gloo process group outlives it ends gloo's worker threads during interpreter
exit, racing it (now and then a SIGABRT, "terminate called without an active exception"):
every multi-process command must have ended its group, and its threads, before it exits
(wavegen.distributed says how, and why ending it elsewhere can deadlock instead).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

# the CLI, then the names of the threads still alive in this process, into THREADS_DIR/RANK
_CLI_THEN_THREADS = """import os, sys
from wavegen.cli import main
code = main(sys.argv[1:])
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
open(os.path.join(os.environ["THREADS_DIR"], os.environ["RANK"]), "w").write(" ".join(sorted(names)))
raise SystemExit(code)
"""


def cli_recording_threads(folder: Path) -> tuple[list[str], dict]:
    """→ (what replaces ``-m wavegen`` in a launch, the environment to add): each process runs the
    CLI, then writes the names of its remaining threads into ``folder/RANK``."""
    script = folder / "cli_then_threads.py"
    script.write_text(_CLI_THEN_THREADS)
    return [str(script)], {"THREADS_DIR": str(folder)}


def gloo_threads_left(folder: Path, processes: int) -> dict[int, list[str]]:
    """Every process's gloo threads still alive after its command returned (asserts each reported)."""
    left = {}
    for rank in range(processes):
        names = (folder / str(rank)).read_text().split()
        assert names, f"process {rank} reported no threads at all"
        left[rank] = [name for name in names if "gloo" in name]
    return left


def error_lines(stderr: str, command: str) -> list[str]:
    """The ``wavegen COMMAND: error: ...`` lines in a process's or a launch's stderr, each from where it begins: a
    launcher's own traceback, written to the same pipe at the same moment, can put text before one on its line."""
    head = f"wavegen {command}: error:"
    return [line[line.index(head):] for line in stderr.splitlines() if head in line]


def kill_launch(launch: subprocess.Popen) -> None:
    """End a launch that overran: the launcher and every process under it, then read its pipes to the end.
    torchrun (and accelerate launch through it) starts its processes in sessions of their own, so they
    outlive a launcher killed alone, still holding its stdout and stderr: a communicate() after that kill
    waited for them, for gloo's 30 minutes where they hung at a collective (a test "hung" in CI)."""
    try:
        launcher = psutil.Process(launch.pid)
        launcher.suspend()  # it starts no more while its tree is listed
        tree = launcher.children(recursive=True)
    except psutil.NoSuchProcess:  # it ended meanwhile: its processes, if any, are its own to end
        tree = []
    launch.kill()
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    launch.communicate(timeout=60)


def run_launch(args: list, timeout: float = 240, **popen) -> subprocess.CompletedProcess:
    """subprocess.run(args, capture_output=True, text=True, timeout=timeout, **popen) for a launcher (torchrun,
    accelerate launch, a recipe): past ``timeout``, the launch is ended whole (:func:`kill_launch`), then
    TimeoutExpired."""
    launch = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:
        out, err = launch.communicate(timeout=timeout)
    except BaseException:
        kill_launch(launch)
        raise
    return subprocess.CompletedProcess(args, launch.returncode, out, err)


def raised_under_torchrun(script: Path, text: str, env: dict) -> tuple[list[str], str]:
    """``text`` written to ``script`` and run by torchrun as 2 processes → (its stderr lines that begin "RAISED":
    what each process printed of the error it ended with, its stderr)."""
    import sys

    script.write_text(text)
    run = run_launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                      str(script)], timeout=180, env=env)
    return [line for line in run.stderr.splitlines() if line.startswith("RAISED")], run.stderr


def launched_process(launch: subprocess.Popen, rank: int, timeout: float = 120) -> psutil.Process:
    """The process of ``launch`` (a launcher: torchrun, accelerate launch) whose RANK is ``rank``, once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in psutil.Process(launch.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if process.environ().get("RANK") == str(rank) and "LOCAL_RANK" in process.environ():
                    return process
        assert launch.poll() is None, f"the launch ended (exit {launch.returncode}) before process {rank} was found"
        time.sleep(0.2)
    raise TimeoutError(f"no process of rank {rank} under launcher {launch.pid} within {timeout} s")


def ended_after(launch: subprocess.Popen, act, timeout: float = 120) -> tuple[str, float]:
    """``act()`` done to a running launch: (its stderr once it has ended, the seconds from act's return to its
    end). The launch is ended whole (kill_launch) where anything fails or overruns."""
    try:
        act()
        done = time.monotonic()
        _, stderr = launch.communicate(timeout=timeout)
        return stderr, time.monotonic() - done
    finally:
        if launch.poll() is None:
            kill_launch(launch)


def ended_after_killing(launch: subprocess.Popen, rank: int, wait, timeout: float = 120) -> tuple[str, float]:
    """Process ``rank`` of the launch killed once ``wait()`` returns: (the launch's stderr once it has ended, the
    seconds from the kill to its end): :func:`ended_after`."""
    def kill():
        victim = launched_process(launch, rank)
        wait()
        victim.kill()

    return ended_after(launch, kill, timeout)


def killed_at_start(launch: subprocess.Popen, started: Path, command: str, starts: str, ends: str,
                    within: float) -> str:
    """Process 1 of ``launch`` killed a second after process 0 marked ``started`` (its command begun): the one
    ``wavegen COMMAND: error:`` line the launch then says, checked to begin with ``starts`` and end with ``ends``
    (after "wavegen COMMAND: error: "), no "SIGTERM" line beside it, the launch ended ``within`` seconds of the kill
    (not torchrun's 30 s after its SIGTERM)."""
    stderr, took = ended_after_killing(
        launch, 1, lambda: (wait_until(launch, started.exists, "process 0 started"), time.sleep(1.0)))
    assert took < within, f"{took:.1f} s: {stderr[-3000:]}"
    prefix = f"wavegen {command}: error: "
    errors = [line for line in stderr.splitlines() if line.startswith(prefix)]
    assert len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith(prefix + starts) and errors[0].endswith(ends), errors[0]
    assert not [line for line in stderr.splitlines() if line.startswith("SIGTERM")], stderr[-3000:]
    return errors[0]


def wait_until(launch: subprocess.Popen, done, what: str, timeout: float = 180) -> None:
    """Wait until ``done()`` while ``launch`` runs (AssertionError naming ``what``, with its stderr, when it ends
    first or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    while not done():
        if launch.poll() is not None:
            raise AssertionError(f"the launch ended (exit {launch.returncode}) before {what}: "
                                 f"{launch.stderr.read()[-3000:] if launch.stderr else ''}")
        assert time.monotonic() < deadline, f"not {what} within {timeout} s"
        time.sleep(0.2)


# torchrun --no-python runs this shell script, which does not exec: process 1's ends with an error once process 0's
# CLI is imported (a process lost at start); process 0's runs the CLI given as $CLI (with $PYTHON) as the shell's child
WRAPPER_NO_EXEC = """#!/bin/sh
if [ "$RANK" = "1" ]; then
    while [ ! -e "$STARTED" ]; do sleep 0.1; done
    exit 1
fi
"$PYTHON" "$CLI" "$@"
exit $?
"""


def left_behind_by_a_wrapper(tmp_path: Path, cli_text: str, command: list[str], env: dict) -> tuple[str, float]:
    """torchrun of 2 processes running ``command`` through WRAPPER_NO_EXEC, process 0's wavegen the CLI
    ``cli_text``, which writes its pid to $STARTED and goes on once $GO exists: process 1's wrapper fails, the
    launcher's SIGTERM ends process 0's shell, the launcher exits; then GO. → (the launch's stderr, the seconds
    process 0's wavegen took to end after GO: 60 at most, killed then)."""
    script, cli = tmp_path / "wrapper.sh", tmp_path / "cli.py"
    started, go, said = tmp_path / "started", tmp_path / "go", tmp_path / "stderr.txt"
    script.write_text(WRAPPER_NO_EXEC)
    script.chmod(0o755)
    cli.write_text(cli_text)
    env = {**env, "PYTHON": sys.executable, "CLI": str(cli), "STARTED": str(started), "GO": str(go)}
    with open(said, "w") as stderr:
        launch = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                   "2", "--no-python", str(script), *command], env=env, stdout=subprocess.DEVNULL,
                                  stderr=stderr)
    wavegen, took = None, None
    try:
        wait_until(launch, started.exists, "process 0's CLI imported")
        wavegen = psutil.Process(int(started.read_text()))  # (the shell's child: not the launcher's once it ends)
        launch.wait(timeout=60)  # process 1's wrapper failed; the launcher's SIGTERM ended process 0's: it exits
        go.write_text("go")
        let_go = time.monotonic()
        wavegen.wait(timeout=60)  # (the old code waited 600 s: psutil's TimeoutExpired, the process killed below)
        took = time.monotonic() - let_go
    finally:
        go.write_text("go")
        if launch.poll() is None:
            kill_launch(launch)
        if wavegen is not None and wavegen.is_running():
            wavegen.kill()
    return said.read_text(), took


@contextlib.contextmanager
def stalled(pid: int):
    """Process ``pid`` stopped (SIGSTOP) inside the block, as a busy machine may leave it unscheduled; signals sent to
    it meanwhile wait, and it meets them as it goes on (SIGCONT)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def unread(pipe: str | Path) -> bytes:
    """What waits unread in a pipe (``pipe``: a path to it, /proc/PID/fd/N), left there for its reader (tee(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    source = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    into, out = os.pipe()
    try:
        count = libc.tee(source, out, 1 << 16, 2)  # (SPLICE_F_NONBLOCK)
        if count < 0:
            if ctypes.get_errno() == errno.EAGAIN:  # nothing waits
                return b""
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(pipe))
        return os.read(into, count) if count else b""
    finally:
        for fd in (source, into, out):
            os.close(fd)
