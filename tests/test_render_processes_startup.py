"""A process of a torchrun render killed (kill -9) while the render starts: the survivor still importing torch (no
handler of its own yet), or waiting for it before gloo's group exists. It says, in one line, that the process ended,
naming it, within seconds, and the render's folder is as it was."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from process_helpers import kill_launch, launched_process, wait_until
from render_helpers import ENV, make_model

# The CLI, process 0 writing STARTED once wavegen's CLI is imported and torch not yet (the render's import of it)
_CLI_MARKED = """import os, pathlib, sys
from wavegen.cli import main
assert "torch" not in sys.modules
if os.environ["RANK"] == "0":
    pathlib.Path(os.environ["STARTED"]).write_text("started")
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_process_killed_while_the_render_starts_is_named_by_the_survivor(tmp_path):
    """Process 1 killed a second into process 0's start (torch importing, seconds; then the group's connect): torchrun's
    SIGTERM ended process 0 at once, without a word (its handlers were not set yet), or, where it waited in gloo's
    connect (deaf to signals), said "SIGTERM: stopping once the model and engine are ready" and was killed 30 s
    later. Now the SIGTERM is held from the command's start, and the processes meet in the store before the group:
    one line naming process 1, within seconds, nothing written."""
    model = make_model(tmp_path / "tiny")
    script, out, started = tmp_path / "cli_marked.py", tmp_path / "r", tmp_path / "started"
    script.write_text(_CLI_MARKED)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = ["-q", "render", str(model), "--seconds", "1", "--streams", "2", "--out", str(out), "--backend", "torch",
               "--no-guard", "--no-spectrogram"]
    launch = subprocess.Popen([*launcher, str(script), *command], env={**ENV, "STARTED": str(started)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        victim = launched_process(launch, 1)
        wait_until(launch, started.exists, "process 0 started")
        time.sleep(1.0)
        victim.kill()
        killed = time.monotonic()
        _, stderr = launch.communicate(timeout=120)
        took = time.monotonic() - killed
    finally:
        if launch.poll() is None:
            kill_launch(launch)
    errors = [line for line in stderr.splitlines() if line.startswith("wavegen render: error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith("wavegen render: error: process 1 of this render (2 processes) ended unexpectedly "
                                "(killed, or out of memory? the launcher's report says why)"), errors[0]
    assert errors[0].endswith("nothing was written yet (not every process had come): rerun the same command"), \
        errors[0]
    assert not [line for line in stderr.splitlines() if line.startswith("SIGTERM")], stderr[-3000:]
    assert took < 25, f"{took:.1f} s: {stderr[-3000:]}"  # not torchrun's 30 s after its SIGTERM
    assert not out.exists()  # nothing written: a rerun renders it whole
