"""A process of a torchrun training killed (kill -9) while the training starts: the survivors still importing torch,
or waiting for the others before gloo's group exists. They say, in one line, which process ended, that the training
had not begun (nothing lost), and to rerun, within seconds: not torchrun's 30 s after its SIGTERM in silence."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import TINY_SAMPLERNN, prepared_corpus
from process_helpers import (ended_after_killing, error_lines, kill_launch, launched_process,
                             killed_at_start, left_behind_by_a_wrapper, run_launch, wait_until)

# The CLI, process 0 writing STARTED once wavegen's CLI is imported and torch not yet (the command's import of it)
_CLI_MARKED = """import os, pathlib, sys
from wavegen.cli import run
assert "torch" not in sys.modules
if os.environ["RANK"] == "0":
    pathlib.Path(os.environ["STARTED"]).write_text("started")
raise SystemExit(run())
"""


# The CLI, its main begun, then process 0 writing IMPORTED and taking 3 s before its command sets its own handlers:
# the stretch between the CLI's import and the command's (tens of ms), made long enough to meet a signal in it
_CLI_SLOW_TO_RUN = """import os, pathlib, sys, time
import wavegen.cli
real = wavegen.cli._print_any_name

def slow():
    if os.environ["RANK"] == "0":
        pathlib.Path(os.environ["STARTED"]).write_text("imported")
        time.sleep(3.0)
    real()

wavegen.cli._print_any_name = slow
raise SystemExit(wavegen.cli.run())
"""


def _start(tmp_path, processes: int, *settings: str, cli: str = _CLI_MARKED) -> tuple[subprocess.Popen, object]:
    corpus = prepared_corpus(tmp_path, files=2, seconds=2.0, val_fraction=0.5, test_fraction=0.0)
    script, started = tmp_path / "cli_marked.py", tmp_path / "started"
    script.write_text(cli)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command = ["-q", "train", "--data", str(corpus), "--model", "samplernn-tiny", "--run-dir", str(tmp_path / "run"),
               "--max-steps", "1", *[a for s in TINY_SAMPLERNN + list(settings) for a in ("--set", s)]]
    launch = subprocess.Popen([*launcher, str(script), *command],
                              env={**os.environ, "OMP_NUM_THREADS": "1", "STARTED": str(started)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return launch, started


@pytest.mark.slow
def test_a_process_killed_while_the_training_starts_is_named_by_the_survivor(tmp_path):
    """Process 1 killed a second into process 0's start (torch importing; then the group's connect): process 0 said
    "SIGTERM: finishing the start-up ..." and waited in gloo's connect, deaf to signals, until torchrun killed it
    30 s later. Now the processes meet in the store before the group: one line naming process 1, within seconds."""
    launch, started = _start(tmp_path, 2)
    killed_at_start(launch, started, "train", "process 1 of this training (2 processes) ended unexpectedly (killed, or "
                    "out of memory? the launcher's report says why)", "the training had not begun its steps; rerun "
                    "the same command", within=20)


@pytest.mark.slow
def test_a_process_killed_while_a_bench_train_starts_is_named_as_the_benchs(tmp_path):
    """bench --train meets as training does; its start-up loss said "this training ... the training had not begun
    its steps" (train's words): it names the bench and what it keeps, as its loss while timing does."""
    script, started = tmp_path / "cli_marked.py", tmp_path / "started"
    script.write_text(_CLI_MARKED)
    launch = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), "-q",
         "bench", "--train", "--model", "samplernn-tiny", "--batch", "2", "--seq-len", "64", "--steps", "1"],
        env={**os.environ, "OMP_NUM_THREADS": "1", "STARTED": str(started)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed_at_start(launch, started, "bench", "process 1 of this bench --train (2 processes) ended unexpectedly "
                    "(killed, or out of memory? the launcher's report says why)", "nothing was measured to keep: "
                    "rerun the same command", within=20)


@pytest.mark.slow
def test_two_processes_killed_while_a_training_of_three_starts_are_both_named(tmp_path):
    """Processes 1 and 2 of 3 killed while process 0 starts: process 0 waited for the one missing process it could
    judge lost, found two, and waited in silence until torchrun killed it 30 s after its SIGTERM. Now it sees, on
    its machine, which processes of the launch no longer run: one line naming both, within seconds."""
    launch, started = _start(tmp_path, 3)
    try:
        victims = [launched_process(launch, rank) for rank in (1, 2)]
        wait_until(launch, started.exists, "process 0 started")
        time.sleep(1.0)
        for victim in victims:
            victim.kill()
        killed = time.monotonic()
        _, stderr = launch.communicate(timeout=120)
        took = time.monotonic() - killed
    finally:
        if launch.poll() is None:
            kill_launch(launch)
    errors = error_lines(stderr, "train")
    assert len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith("wavegen train: error: processes 1 and 2 of this training (3 processes) ended "
                                "unexpectedly (killed, or out of memory? the launcher's report says why)"), errors[0]
    assert errors[0].endswith("the training had not begun its steps; rerun the same command"), errors[0]
    assert took < 20, f"{took:.1f} s: {stderr[-3000:]}"  # not torchrun's 30 s after its SIGTERM


@pytest.mark.slow
def test_a_process_frozen_while_the_training_starts_is_said_once_the_group_timeout_has_passed(tmp_path):
    """Process 1 frozen (SIGSTOP) while it imports torch, before it could come: process 0 waits for it
    train.group_timeout_seconds in all (the meeting before the group, not that and gloo's connect after it), then
    says which process did not come, what is kept, and the setting to raise."""
    launch, _ = _start(tmp_path, 2, "train.group_timeout_seconds=6")
    try:
        first, frozen = launched_process(launch, 0), launched_process(launch, 1)
        frozen.suspend()
        stopped = time.monotonic()
        first.wait(timeout=90)
        took = time.monotonic() - stopped
        frozen.resume()  # let go: torchrun's SIGTERM ends it
        _, stderr = launch.communicate(timeout=60)
    finally:
        if launch.poll() is None:
            kill_launch(launch)
    errors = error_lines(stderr, "train")
    assert errors and errors[0].startswith("wavegen train: error: process 1 of this training (2 processes) did not "
                                           "come within 6 s"), stderr[-3000:]
    assert errors[0].endswith("the training had not begun its steps; rerun the same command; if a process is merely "
                              "that slow to start, raise train.group_timeout_seconds"), errors[0]
    assert 5 < took < 6 + 15, f"{took:.1f} s"  # the timeout once, not twice


@pytest.mark.slow
def test_a_launchers_sigterm_before_the_command_sets_its_handlers_is_held(tmp_path):
    """torchrun's SIGTERM (process 1 killed) reaching process 0 after the CLI's import, before train's StopSignals:
    process 0 ended by it at once, without a word. Now held from the CLI's import on: it names process 1."""
    launch, started = _start(tmp_path, 2, cli=_CLI_SLOW_TO_RUN)
    stderr, took = ended_after_killing(launch, 1, lambda: wait_until(launch, started.exists, "process 0 imported"))
    errors = error_lines(stderr, "train")
    assert len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith("wavegen train: error: process 1 of this training (2 processes) ended unexpectedly "
                                "(killed, or out of memory? the launcher's report says why)"), errors[0]
    assert took < 30, f"{took:.1f} s: {stderr[-3000:]}"  # held and said (not torchrun's kill 30 s after, silent)


# A training's group made and ended (library calls, no CLI), then a launcher's SIGTERM held by a StopSignals
_AFTER_THE_GROUP = """import logging, os, signal, sys, time
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from wavegen.distributed import end_accelerator, make_accelerator
from wavegen.signals import StopSignals
end_accelerator(make_accelerator("no", cpu=True, timeout_seconds=60))
with StopSignals("stopping") as stop:
    sent = time.monotonic()
    os.kill(os.getpid(), signal.SIGTERM)
    while not stop.requested and time.monotonic() - sent < 40:
        time.sleep(0.05)
os.write(2, f"RAISED requested {stop.requested} after {time.monotonic() - sent:.1f}\\n".encode())  # one write
"""


@pytest.mark.slow
def test_a_sigterm_after_the_group_has_ended_waits_for_no_meeting(tmp_path):
    """A training's processes, their group made and destroyed: a SIGTERM's line then waited LAUNCH_START_SECONDS
    (20 s) as if they had still to meet the others (no group existed). Now the meeting is over: LAUNCH_TERM_SECONDS."""
    from process_helpers import raised_under_torchrun

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    said, stderr = raised_under_torchrun(tmp_path / "after.py", _AFTER_THE_GROUP, env)
    assert len(said) == 2 and all(line.startswith("RAISED requested True after ") for line in said), stderr[-3000:]
    assert all(float(line.split()[-1]) < 12 for line in said), said  # 5 s, not 20 s


# Two machines' launchers (torchrun agents of one rendezvous, here on one machine): process 1, on the other, slow to
# start (it waits for GO); process 0 writes its agent's pid to STARTED once the CLI is imported
_CLI_ON_TWO_MACHINES = """import os, pathlib, sys, time
if os.environ["RANK"] == "1":
    deadline = time.monotonic() + 90
    while not pathlib.Path(os.environ["GO"]).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
from wavegen.cli import run
if os.environ["RANK"] == "0":
    pathlib.Path(os.environ["STARTED"]).write_text(str(os.getppid()))
raise SystemExit(run())
"""


@pytest.mark.slow
def test_a_process_of_another_machine_not_come_when_the_launcher_stops_this_one_is_not_said_ended(tmp_path):
    """Two agents (--nnodes 2), process 1 slow to start on the other, process 0's agent SIGTERMed: process 0, which
    cannot see process 1, said it "ended unexpectedly (killed, or out of memory?)" while it ran. Now it says that
    process 1 had not come when the launcher stopped this one."""
    corpus = prepared_corpus(tmp_path, files=2, seconds=2.0, val_fraction=0.5, test_fraction=0.0)
    script, started, go = tmp_path / "two_machines.py", tmp_path / "started", tmp_path / "go"
    script.write_text(_CLI_ON_TWO_MACHINES)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"two{port}"]
    command = ["-q", "train", "--data", str(corpus), "--model", "samplernn-tiny", "--run-dir", str(tmp_path / "run"),
               "--max-steps", "1", *[a for s in TINY_SAMPLERNN for a in ("--set", s)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STARTED": str(started), "GO": str(go)}
    agents = [subprocess.Popen([*launcher, str(script), *command], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        deadline = time.monotonic() + 120
        while not (started.exists() and started.read_text()) and time.monotonic() < deadline:
            assert all(agent.poll() is None for agent in agents), "an agent ended before process 0 started"
            time.sleep(0.2)
        stopped = next(agent for agent in agents if str(agent.pid) == started.read_text())
        time.sleep(1.0)
        stopped.send_signal(signal.SIGTERM)  # its machine's launcher stops; process 1 still on its way
        _, stderr = stopped.communicate(timeout=60)
    finally:
        go.write_text("go")
        for agent in agents:
            if agent.poll() is None:
                kill_launch(agent)
    errors = error_lines(stderr, "train")
    assert len(errors) == 1, stderr[-3000:]
    assert errors[0] == ("wavegen train: error: process 1 of this training (2 processes) had not come when the "
                         "launcher stopped this one (slow to start, or ended where this one cannot see it? the "
                         "launcher's report says); this process stopped: the training had not begun its steps; "
                         "rerun the same command"), errors[0]


# torchrun --no-python runs this shell script: process 1's is slow to start wavegen; process 0's runs the CLI as a
# child of the shell (no exec), which writes STARTED once it waits for the others before its group
_WRAPPER_CLI = """import os, pathlib, sys
import wavegen.cli
from wavegen import distributed
real = distributed._wait_for_the_others

def waiting(*args, **kwargs):
    pathlib.Path(os.environ["STARTED"]).write_text("waiting")
    return real(*args, **kwargs)

distributed._wait_for_the_others = waiting
raise SystemExit(wavegen.cli.run())
"""
_WRAPPER = """#!/bin/sh
if [ "$RANK" = "1" ]; then sleep 120; exit 0; fi
"$PYTHON" "$CLI" "$@"
"""


@pytest.mark.slow
def test_a_process_slow_to_start_under_a_wrapper_is_not_said_ended_when_the_launcher_stops(tmp_path):
    """torchrun running a shell script that runs wavegen, process 1 slow to start, the launcher SIGTERMed: process 0,
    a child of its script, saw no sibling under its parent, took process 1 for ended, and said it "ended
    unexpectedly (killed, or out of memory?)". Now a wrapper's child judges no other process by what it sees: process
    1 had not come when the launcher stopped this one."""
    from render_helpers import ENV, make_model

    model = make_model(tmp_path / "tiny")
    script, cli, started = tmp_path / "wrapper.sh", tmp_path / "cli.py", tmp_path / "started"
    script.write_text(_WRAPPER)
    script.chmod(0o755)
    cli.write_text(_WRAPPER_CLI)
    env = {**ENV, "PYTHON": sys.executable, "CLI": str(cli), "STARTED": str(started)}
    launch = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               "--no-python", str(script), "-q", "render", str(model), "--seconds", "1", "--streams",
                               "2", "--out", str(tmp_path / "r"), "--backend", "torch", "--no-guard",
                               "--no-spectrogram"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(launch, started.exists, "process 0 waiting for the others")
        time.sleep(1.0)
        launch.send_signal(signal.SIGTERM)
        _, stderr = launch.communicate(timeout=60)
    finally:
        if launch.poll() is None:
            kill_launch(launch)
    errors = error_lines(stderr, "render")
    assert len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith("wavegen render: error: process 1 of this render (2 processes) had not come when the "
                                "launcher stopped this one (slow to start, or ended where this one cannot see it?"), \
        errors[0]


# The CLI, process 1 holding on inside its main until its launcher's SIGTERM has come (held by the CLI's early hold):
# a process slower to start than process 0, which meets a refusal, exits, and has the launcher end the others
_CLI_SLOWER_THAN_A_REFUSAL = """import os, sys, time
import wavegen.cli, wavegen.signals
real = wavegen.cli._print_any_name

def after_the_launchers_term():
    deadline = time.monotonic() + 60
    while os.environ["RANK"] == "1" and wavegen.signals.term_held_for_next() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    real()

wavegen.cli._print_any_name = after_the_launchers_term
raise SystemExit(wavegen.cli.run())
"""


@pytest.mark.slow
def test_a_refusal_met_by_a_process_its_launcher_already_stopped_is_said_once(tmp_path):
    """Process 0 refuses a corpus that is not there and exits; the launcher's SIGTERM reaches process 1 while it starts
    (held), and process 1 then meets the same refusal: it left the line to process 0 and waited 10 s for the launcher
    to end it (which had asked already), then said the refusal a second time. Now it ends by that SIGTERM at once:
    the refusal reads once, and the launch ends within seconds of process 1 meeting it."""
    script = tmp_path / "cli_slower.py"
    script.write_text(_CLI_SLOWER_THAN_A_REFUSAL)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = ["-q", "train", "--data", str(tmp_path / "missing"), "--model", "samplernn-tiny", "--run-dir",
               str(tmp_path / "run"), "--max-steps", "1"]
    began = time.monotonic()
    result = run_launch([*launcher, str(script), *command], env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=180)
    took = time.monotonic() - began
    errors = error_lines(result.stderr, "train")
    assert result.returncode != 0
    assert len(errors) == 1 and "is not a prepared corpus" in errors[0], result.stderr[-3000:]
    assert took < 30, took  # not process 1's 10 s wait and torchrun's 30 s before its SIGKILL on top of the start


# The CLI, process 0 writing its pid to STARTED once the CLI is imported (a launcher's SIGTERM held from then on),
# then going to the launcher's store only once GO exists (the launcher ended by then)
_CLI_HELD_UNTIL_GO = """import os, pathlib, sys, time
import wavegen.cli
from wavegen import distributed
pathlib.Path(os.environ["STARTED"] + ".pid").write_text(str(os.getpid()))
os.rename(os.environ["STARTED"] + ".pid", os.environ["STARTED"])
real = distributed.meet_the_launch

def after_go(*args, **kwargs):
    deadline = time.monotonic() + 120
    while not pathlib.Path(os.environ["GO"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return real(*args, **kwargs)

distributed.meet_the_launch = after_go
raise SystemExit(wavegen.cli.run())
"""


@pytest.mark.slow
def test_a_process_left_behind_by_a_wrapper_and_its_ended_launcher_says_so_at_once(tmp_path):
    """torchrun running a shell script that starts wavegen without exec, process 1 lost at start: torchrun's SIGTERM
    ended process 0's shell, torchrun took that for process 0's end and exited, and wavegen, holding its SIGTERM,
    waited in torch's connect to the gone launcher's store for the group's timeout (600 s by default), deaf to
    signals, alone. Now it sees the store refuse it once its launcher's SIGTERM is held: one line, at once."""
    corpus = prepared_corpus(tmp_path, files=2, seconds=2.0, val_fraction=0.5, test_fraction=0.0)
    command = ["-q", "train", "--data", str(corpus), "--model", "samplernn-tiny", "--run-dir", str(tmp_path / "run"),
               "--max-steps", "1", *[a for s in [*TINY_SAMPLERNN, "train.group_timeout_seconds=40"]
                                     for a in ("--set", s)]]
    said, took = left_behind_by_a_wrapper(tmp_path, _CLI_HELD_UNTIL_GO, command,
                                          {**os.environ, "OMP_NUM_THREADS": "1"})
    errors = error_lines(said, "train")
    assert took < 15, f"{took:.1f} s: {said[-3000:]}"  # not the group's timeout in torch's connect
    assert len(errors) == 1, said[-3000:]
    assert errors[0].startswith("wavegen train: error: the launcher of this training (2 processes) stopped this "
                                "process while it started and has ended since (its store at "), errors[0]
    assert errors[0].endswith("this process stopped: the training had not begun its steps; rerun the same command "
                              "(started by a wrapper script that does not exec wavegen? the launcher's SIGTERM ends "
                              "the wrapper, and the launcher does not wait for wavegen)"), errors[0]
    assert not [line for line in said.splitlines() if line.startswith("SIGTERM")], said[-3000:]
