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


def _term_caught(pid: int) -> bool:
    """The recipe's bash catches SIGTERM: run_forwarding's traps are set (INT's first), its command started (a
    signal sent before would find bash's own default, not the traps under test)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def _demo_in_stage_2(tmp_path: Path, stand_in: str, stop_stage: int, **popen) -> tuple[subprocess.Popen, Path]:
    """The demo recipe from stage 2 to ``stop_stage`` with ``stand_in`` as ``wavegen``, in its own session, once
    stage 2's command has started and the recipe's traps are set; and the file each command started writes its
    stage's first word to (STARTED). The caller ends the recipe and waits for it."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "wavegen").write_text(stand_in)
    (tmp_path / "bin" / "wavegen").chmod(0o755)
    started = tmp_path / "started"
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "STARTED": str(started),
           "STOPPED": str(tmp_path / "stopped")}
    recipe = subprocess.Popen(["bash", str(DEMO), "--dir", str(tmp_path / "demo"), "--stage", "2", "--stop-stage",
                               str(stop_stage)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, **popen)
    deadline = time.monotonic() + 30
    while not (started.exists() and _term_caught(recipe.pid)) and recipe.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    return recipe, started


def test_a_sigterm_to_the_demo_recipe_reaches_its_stage_and_stops_the_recipe(tmp_path):
    recipe, started = _demo_in_stage_2(tmp_path, STAND_IN, 2)
    stopped = tmp_path / "stopped"
    try:
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


# runs until a Ctrl-C, which it answers as wavegen does: exit 130; says each stage it ran (the recipe going on to
# stage 3 after the Ctrl-C: 'train' after 'prep')
CTRL_C_STAND_IN = r"""#!/usr/bin/env python3
import os, sys, time
with open(os.environ["STARTED"], "a") as f:
    f.write(sys.argv[1] + "\n")
try:
    time.sleep(20)
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_a_ctrl_c_stops_the_demo_recipe_in_its_stage(tmp_path):
    """A Ctrl-C (SIGINT to the terminal's whole process group) stops the stage's command and the recipe with it.
    bash before 4.3 (macOS's 3.2) starts a command run with & with SIGINT ignored: the command ran on through the
    Ctrl-C, and the recipe went on to the next stage (run with such a bash first on PATH, this fails without the
    reset of run_forwarding)."""
    recipe, started = _demo_in_stage_2(tmp_path, CTRL_C_STAND_IN, 3,  # SIGINT at its default, as at a terminal
                                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert started.read_text() == "prep\n"  # stage 2's command runs
        os.killpg(recipe.pid, signal.SIGINT)  # Ctrl-C: the recipe and its command alike
        status = recipe.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(recipe.pid, signal.SIGKILL)
        recipe.wait()
    assert started.read_text() == "prep\n", "the recipe went on after the Ctrl-C"
    assert status == 130  # the command's status: the recipe stopped there
    assert list((tmp_path / "demo" / ".done").iterdir()) == []  # stage 2 not marked done
