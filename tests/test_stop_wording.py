"""What a stop is said as where nothing is lost but the words were wrong: a Ctrl-C to a whole torchrun launch while
its first process rebuilt a damaged report, a SIGTERM handed on twice by a wrapper script, a process still starting
ended by the launcher's SIGTERM. Real processes (torchrun, bash, gloo on this CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from process_helpers import error_lines, kill_launch, wait_until
from test_distributed_startup import _WRAPPER_CLI
from render_helpers import ENV, make_model, wait_for_file, wait_for_snapshot

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

# The CLI, with ``PAUSED`` (module:name of wavegen) taking PAUSE_SECONDS in process 0 after writing PAUSE_MARK; a
# Ctrl-C meanwhile ends that step HANDLING_SECONDS later (a step's own cleanup, while the other process, waiting
# for it at the collective, is ended by the same Ctrl-C). Each process writes its exit code to PAUSE_MARK.exitRANK
_CLI_PAUSED = """import importlib, os, pathlib, sys, time
module, name = os.environ["PAUSED"].split(":")
module = importlib.import_module(module)
real = getattr(module, name)

def paused(*args, **kwargs):
    if os.environ["RANK"] == "0":
        pathlib.Path(os.environ["PAUSE_MARK"]).write_text("paused")
        try:
            time.sleep(float(os.environ["PAUSE_SECONDS"]))
        except KeyboardInterrupt:
            time.sleep(float(os.environ["HANDLING_SECONDS"]))
            raise
    return real(*args, **kwargs)

setattr(module, name, paused)
from wavegen.cli import main
code = main(sys.argv[1:])
pathlib.Path(os.environ["PAUSE_MARK"] + ".exit" + os.environ["RANK"]).write_text(str(code))
raise SystemExit(code)
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.mark.slow
def test_ctrl_c_to_a_launch_rebuilding_a_damaged_report_is_said_interrupted(model, tmp_path):
    """Ctrl-C to a torchrun render (2 processes) whose first process rebuilt a damaged report (decoding its FLAC
    streams), the other waiting for it: that one ended at the collective, and the first, meeting its end there, said
    "another process of this render (2 processes) lost its connection", exit 2. Now the one that ends there leaves
    word of its stop: both exit 130, "interrupted" said once, no error; the report still damaged, to be rebuilt."""
    out = tmp_path / "r"
    command = ["-q", "render", str(model), "--seconds", "0.25", "--streams", "2", "--out", str(out), "--format",
               "flac", "--backend", "torch", "--no-guard", "--no-spectrogram"]
    first = subprocess.run([*TORCHRUN, "-m", "wavegen", *command], env=ENV, capture_output=True, text=True,
                           timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    report = out / "render_report.json"
    text = report.read_text()
    report.write_text(text[:text.index('"paths"') + 3])  # a copy stopped halfway
    script, mark = tmp_path / "cli_paused.py", tmp_path / "paused"
    script.write_text(_CLI_PAUSED)
    env = {**ENV, "PAUSED": "wavegen.render.folder:mend_damaged_report", "PAUSE_MARK": str(mark),
           "PAUSE_SECONDS": "60", "HANDLING_SECONDS": "3"}
    launch = subprocess.Popen([*TORCHRUN, str(script), *command], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_file(launch, mark)
        time.sleep(1.0)  # process 1 waiting at the collective
        os.killpg(launch.pid, signal.SIGINT)  # a terminal's Ctrl-C: every process of the launch
        _, stderr = launch.communicate(timeout=120)
    finally:
        if launch.poll() is None:
            kill_launch(launch)
    exits = [(tmp_path / f"paused.exit{rank}").read_text() if (tmp_path / f"paused.exit{rank}").exists() else None
             for rank in (0, 1)]
    assert exits == ["130", "130"], f"exits {exits}: {stderr[-3000:]}"
    assert stderr.count("wavegen render: interrupted") == 1, stderr[-3000:]
    assert "error:" not in stderr, stderr[-3000:]
    assert report.read_text() == text[:text.index('"paths"') + 3]  # untouched: the rerun rebuilds it


# A wrapper that runs wavegen as its child and hands a SIGTERM on to it (trap, then waits for its end)
_FORWARDING_WRAPPER = """#!/bin/bash
"$PYTHON" -m wavegen "$@" &
child=$!
trap 'kill -TERM $child' TERM
wait $child
wait $child
"""


def test_a_sigterm_handed_on_by_a_wrapper_is_one_stop_and_saves(model, tmp_path):
    """A SIGTERM to the process group of a wrapper script that forwards it to wavegen: wavegen got two, ms apart, and
    took the second for "the signal again to stop at once": no snapshot of the window, a bare "interrupted" after the
    stop line. Now the second is the first handed on: one stop line, the snapshot saved and said."""
    script, out = tmp_path / "wrapper.sh", tmp_path / "r"
    script.write_text(_FORWARDING_WRAPPER)
    script.chmod(0o755)
    launch = subprocess.Popen([str(script), "render", str(model), "--seconds", "60", "--out", str(out), "--backend",
                               "torch", "--no-guard", "--no-spectrogram", "--snapshot-seconds", "0.5",
                               "--block-seconds", "0.25"], env={**ENV, "PYTHON": sys.executable},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_snapshot(launch, out / ".state" / "rank0.npz")
        os.killpg(launch.pid, signal.SIGTERM)  # the wrapper and wavegen (a service manager's stop)
        _, stderr = launch.communicate(timeout=60)
    finally:
        if launch.poll() is None:
            kill_launch(launch)
    assert launch.returncode == 130, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("SIGTERM")]
    assert len(lines) == 2, stderr[-3000:]
    assert lines[0] == "SIGTERM: rewinding to the start of the window and saving a snapshot (the signal again to " \
                       "stop at once)", lines
    assert lines[1].startswith("SIGTERM: stopped at ") and lines[1].endswith("; snapshot saved. Rerun the same "
                                                                             "command to resume"), lines
    assert stderr.count("wavegen render: interrupted") == 1, stderr[-3000:]


def test_a_process_ended_by_a_sigterm_is_told_from_one_killed_while_it_is_not_reaped():
    """What the meeting before a group reads of a process of its launch that ended: a SIGTERM, until its parent
    reaps it; not a SIGKILL, not one still running."""
    from wavegen.launch_processes import ended_by_sigterm

    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(3)]
    try:
        time.sleep(0.5)
        children[0].send_signal(signal.SIGTERM)
        children[1].kill()
        time.sleep(0.5)  # ended, not reaped (no wait yet)
        assert [ended_by_sigterm(child.pid) for child in children] == [True, False, False]
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert not ended_by_sigterm(children[0].pid)  # reaped: nothing left to tell


# torchrun runs this: process 1 slow to start (no handler of wavegen's yet); process 0 writes STARTED once it waits
# for the others before its group
_SLOW_SECOND = """import os, time
if os.environ["RANK"] == "1":
    time.sleep(120)
""" + _WRAPPER_CLI  # (the wrapper test's CLI)


def _launch_stopped_while_one_starts(model, tmp_path, script_text: str, waits: str) -> str:
    """A torchrun of 2 render processes running ``script_text``, SIGTERMed a second after the process that ``waits``
    for the other wrote STARTED (the other still starting): torchrun's stderr and the processes'."""
    script, started = tmp_path / "launched.py", tmp_path / "started"
    script.write_text(script_text)
    launch = subprocess.Popen([*TORCHRUN, str(script), "-q", "render", str(model), "--seconds", "1", "--streams",
                               "2", "--out", str(tmp_path / "r"), "--backend", "torch", "--no-guard",
                               "--no-spectrogram"], env={**ENV, "STARTED": str(started)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_until(launch, started.exists, waits)
        time.sleep(1.0)
        launch.send_signal(signal.SIGTERM)
        return launch.communicate(timeout=60)[1]
    finally:
        if launch.poll() is None:
            kill_launch(launch)


@pytest.mark.slow
def test_a_process_ended_by_the_launchers_sigterm_while_it_started_is_said_so(model, tmp_path):
    """torchrun SIGTERMed (the launch stopped) while process 1 was still starting, before wavegen's handlers: it ended
    by that SIGTERM, and process 0, holding its own, said it "ended unexpectedly (killed, or out of memory?)". Now
    it reads how it ended (torchrun reaps it only once process 0 has ended): by the launcher's SIGTERM."""
    stderr = _launch_stopped_while_one_starts(model, tmp_path, _SLOW_SECOND, "process 0 waiting for the others")
    errors = error_lines(stderr, "render")
    assert errors == ["wavegen render: error: process 1 of this render (2 processes) ended by the launcher's SIGTERM "
                      "while it started, before it could hold one (the launcher stopped the launch: this process had "
                      "its SIGTERM too); this process stopped too: nothing was written yet (not every process had "
                      "come): rerun the same command"], stderr[-3000:]
    assert not [line for line in stderr.splitlines() if line.startswith("SIGTERM")], stderr[-3000:]


# torchrun runs this: process 0 slow to start (no handler of wavegen's yet); process 1 writes STARTED once it waits
# for the others before its group
_SLOW_FIRST = _SLOW_SECOND.replace('os.environ["RANK"] == "1"', 'os.environ["RANK"] == "0"', 1)


@pytest.mark.slow
def test_a_lower_rank_process_ended_while_it_started_by_a_stopped_launch_is_not_said_ended_unexpectedly(model,
                                                                                                        tmp_path):
    """torchrun SIGTERMed (the launch stopped) while process 0 was still starting: it ended by that SIGTERM, and
    torchrun reaped it at once (its exit status gone: a lower rank than process 1, which holds its own). Process 1
    said it "ended unexpectedly (killed, or out of memory?)". Now it says what it can know: unexpectedly, or by the
    launcher's SIGTERM."""
    assert _SLOW_FIRST != _SLOW_SECOND
    stderr = _launch_stopped_while_one_starts(model, tmp_path, _SLOW_FIRST, "process 1 waiting for the others")
    errors = error_lines(stderr, "render")
    assert errors == ["wavegen render: error: process 0 of this render (2 processes) ended while it started, "
                      "unexpectedly (killed, or out of memory?) or by the launcher's SIGTERM before it could hold one "
                      "(the launcher's report says which); this process stopped too: nothing was written yet (not "
                      "every process had come): rerun the same command"], stderr[-3000:]
    assert not [line for line in stderr.splitlines() if line.startswith("SIGTERM")], stderr[-3000:]


def test_processes_that_ended_as_a_launch_started_are_each_said_as_what_can_be_known(monkeypatch):
    """The meeting of process 1 of 4, holding its launcher's SIGTERM, finds processes 0, 2 and 3 ended: 2 gone (reaped
    by torchrun before its SIGTERM: it ended first), 3 a zombie of that SIGTERM, 0 gone (a lower rank: reaped at once
    whichever way it ended). All three were said "ended unexpectedly (killed, or out of memory?)"."""
    from wavegen import distributed

    zombies = {30}  # process 3's pid: ended by a SIGTERM, not yet reaped
    monkeypatch.setattr(distributed, "held_a_launchers_term", lambda: True)
    monkeypatch.setattr(distributed, "ended_by_sigterm", lambda pid: pid in zombies)
    monkeypatch.setattr(distributed, "pids_seen", lambda rank: [rank * 10])
    assert distributed._how_they_ended([0, 2, 3], {}, 1) == (
        "ended: process 2 unexpectedly (killed, or out of memory?), process 0 unexpectedly or by the launcher's "
        "SIGTERM and process 3 by the launcher's SIGTERM (the launcher's report says how each ended)")
    # process 2 of 3, the others gone: the one above none, both unsure
    assert distributed._how_they_ended([0, 1], {}, 2) == (
        "ended while they started, unexpectedly (killed, or out of memory?) or by the launcher's SIGTERM before they "
        "could hold one (the launcher's report says which)")
    # a process that came to the meeting (recorded) held its SIGTERM there: gone, it ended unexpectedly
    assert distributed._how_they_ended([0], {0: (distributed.pid_space(), 0)}, 1) == (
        "ended unexpectedly (killed, or out of memory? the launcher's report says why)")
    # nothing held: a process gone ended unexpectedly, whatever its rank
    monkeypatch.setattr(distributed, "held_a_launchers_term", lambda: False)
    assert distributed._how_they_ended([0, 2], {}, 1) == (
        "ended unexpectedly (killed, or out of memory? the launcher's report says why)")


def test_processes_ended_by_a_sigterm_before_this_one_held_the_launchers_are_not_said_ended_by_the_launchers(
        monkeypatch):
    """Nothing held here (no launcher's SIGTERM came to this process), process 3 a zombie of a SIGTERM, process 2
    gone: process 3 alone is said "ended by a SIGTERM", whoever sent it; beside process 2 it was said "by the
    launcher's SIGTERM", which nothing here knows."""
    from wavegen import distributed

    monkeypatch.setattr(distributed, "held_a_launchers_term", lambda: False)
    monkeypatch.setattr(distributed, "ended_by_sigterm", lambda pid: pid == 30)
    monkeypatch.setattr(distributed, "pids_seen", lambda rank: [rank * 10])
    assert distributed._how_they_ended([3], {}, 1) == "ended by a SIGTERM while it started, before it could hold one"
    assert distributed._how_they_ended([2, 3], {}, 1) == (
        "ended: process 2 unexpectedly (killed, or out of memory?) and process 3 by a SIGTERM (the launcher's report "
        "says how each ended)")
