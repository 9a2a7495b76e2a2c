"""A process of a torchrun render left behind by a wrapper script that does not exec wavegen: another process lost at
start, the launcher's SIGTERM ended this one's wrapper (a shell), the launcher took that for this process's end and
exited, its store with it. The render says so in one line within seconds, not 10 minutes in torch's connect to the
gone store, deaf to signals, alone."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from process_helpers import error_lines, kill_launch, wait_until
from render_helpers import ENV, make_model

# torchrun --no-python runs this shell script, which does not exec: process 1's ends with an error once process 0's
# CLI is imported (a process lost at start); process 0's runs the CLI below as the shell's child
_WRAPPER_NO_EXEC = """#!/bin/sh
if [ "$RANK" = "1" ]; then
    while [ ! -e "$STARTED" ]; do sleep 0.1; done
    exit 1
fi
"$PYTHON" "$CLI" "$@"
exit $?
"""
# The CLI, process 0 writing its pid to STARTED once the CLI and render's processes are imported (a launcher's SIGTERM
# held from then on), then going to the launcher's store only once GO exists (the launcher ended by then): the step
# just before the render's rendezvous waits for it
_CLI_HELD_UNTIL_GO = """import os, pathlib, sys, time
import wavegen.cli
from wavegen.render import processes
pathlib.Path(os.environ["STARTED"] + ".pid").write_text(str(os.getpid()))
os.rename(os.environ["STARTED"] + ".pid", os.environ["STARTED"])
real = processes.before_process_group

def after_go():
    deadline = time.monotonic() + 120
    while not pathlib.Path(os.environ["GO"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return real()

processes.before_process_group = after_go
raise SystemExit(wavegen.cli.run())
"""


@pytest.mark.slow
def test_a_render_process_left_behind_by_a_wrapper_and_its_ended_launcher_says_so_at_once(tmp_path):
    """torchrun running a shell script that starts wavegen render without exec, process 1 lost at start: torchrun's
    SIGTERM ended process 0's shell, torchrun took that for process 0's end and exited, and the render, holding its
    SIGTERM, waited in torch's connect to the gone launcher's store for the group's timeout (600 s), deaf to
    signals, alone. Now it sees the store refuse it once its launcher's SIGTERM is held: one line, at once, and
    nothing written."""
    import psutil

    model = make_model(tmp_path / "tiny")
    script, cli, out = tmp_path / "wrapper.sh", tmp_path / "cli.py", tmp_path / "r"
    started, go, said = tmp_path / "started", tmp_path / "go", tmp_path / "stderr.txt"
    script.write_text(_WRAPPER_NO_EXEC)
    script.chmod(0o755)
    cli.write_text(_CLI_HELD_UNTIL_GO)
    env = {**ENV, "PYTHON": sys.executable, "CLI": str(cli), "STARTED": str(started), "GO": str(go)}
    command = ["-q", "render", str(model), "--seconds", "1", "--streams", "2", "--out", str(out), "--backend", "torch",
               "--no-guard", "--no-spectrogram"]
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
    errors = error_lines(said.read_text(), "render")
    assert took < 15, f"{took:.1f} s: {said.read_text()[-3000:]}"  # not the group's timeout in torch's connect
    assert len(errors) == 1, said.read_text()[-3000:]
    assert errors[0].startswith("wavegen render: error: the launcher of this render (2 processes) stopped this "
                                "process while it started and has ended since (its store at "), errors[0]
    assert errors[0].endswith("this process stopped: nothing was written yet (not every process had come): rerun the "
                              "same command (started by a wrapper script that does not exec wavegen? the launcher's "
                              "SIGTERM ends the wrapper, and the launcher does not wait for wavegen)"), errors[0]
    assert not [line for line in said.read_text().splitlines() if line.startswith("SIGTERM")], said.read_text()[-3000:]
    assert not out.exists()  # nothing written: a rerun renders it whole
