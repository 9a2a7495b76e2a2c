"""A process of a torchrun render left behind by a wrapper script that does not exec wavegen: another process lost at
start, the launcher's SIGTERM ended this one's wrapper (a shell), the launcher took that for this process's end and
exited, its store with it. The render says so in one line within seconds, not 10 minutes in torch's connect to the
gone store, deaf to signals, alone."""

from __future__ import annotations

import pytest

from process_helpers import error_lines, left_behind_by_a_wrapper
from render_helpers import ENV, make_model

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
    model, out = make_model(tmp_path / "tiny"), tmp_path / "r"
    command = ["-q", "render", str(model), "--seconds", "1", "--streams", "2", "--out", str(out), "--backend", "torch",
               "--no-guard", "--no-spectrogram"]
    said, took = left_behind_by_a_wrapper(tmp_path, _CLI_HELD_UNTIL_GO, command, ENV)
    errors = error_lines(said, "render")
    assert took < 15, f"{took:.1f} s: {said[-3000:]}"  # not the group's timeout in torch's connect
    assert len(errors) == 1, said[-3000:]
    assert errors[0].startswith("wavegen render: error: the launcher of this render (2 processes) stopped this "
                                "process while it started and has ended since (its store at "), errors[0]
    assert errors[0].endswith("this process stopped: nothing was written yet (not every process had come): rerun the "
                              "same command (started by a wrapper script that does not exec wavegen? the launcher's "
                              "SIGTERM ends the wrapper, and the launcher does not wait for wavegen)"), errors[0]
    assert not [line for line in said.splitlines() if line.startswith("SIGTERM")], said[-3000:]
    assert not out.exists()  # nothing written: a rerun renders it whole
