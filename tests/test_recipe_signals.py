"""A SIGTERM sent to a recipe's process (kill, a supervisor, a scheduler's time limit) reaches the command it runs
(stages.sh run_forwarding): bash, ended by it while a command ran in the foreground, left the command running,
unwatched (a training on for minutes, a render holding its folder's lock). The demo recipe's stage 2 with a
stand-in ``wavegen`` on PATH that says when it started and when a SIGTERM came; the longform recipe's real render
under GNU time: tests/test_render_longform_recipe.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "demo" / "run.sh"

# runs until a SIGTERM, which it answers as wavegen does: exit 130 (its sleep ended with it)
STAND_IN = r"""#!/usr/bin/env bash
trap 'kill "$nap" 2>/dev/null; echo "$1" > "$STOPPED"; exit 130' TERM
sleep 120 & nap=$!
echo "$1" > "$STARTED"
wait "$nap"
"""


def test_a_sigterm_to_the_demo_recipe_reaches_its_stage_and_stops_the_recipe(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "wavegen").write_text(STAND_IN)
    (tmp_path / "bin" / "wavegen").chmod(0o755)
    started, stopped = tmp_path / "started", tmp_path / "stopped"
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "STARTED": str(started),
           "STOPPED": str(stopped)}
    recipe = subprocess.Popen(["bash", str(DEMO), "--dir", str(tmp_path / "demo"), "--stage", "2", "--stop-stage", "2"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not started.exists() and recipe.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started.read_text() == "prep\n"  # stage 2's command runs
        recipe.send_signal(signal.SIGTERM)
        status = recipe.wait(timeout=30)
        deadline = time.monotonic() + 5
        while not stopped.exists() and time.monotonic() < deadline:  # (the old recipe: never)
            time.sleep(0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left running (the old recipe: the stand-in)
            os.killpg(recipe.pid, signal.SIGKILL)
        recipe.wait()
    assert stopped.is_file() and stopped.read_text() == "prep\n", "the stage's command never had the SIGTERM"
    assert status == 130  # the command's status: the recipe stopped there
    assert list((tmp_path / "demo" / ".done").iterdir()) == []  # stage 2 not marked done
