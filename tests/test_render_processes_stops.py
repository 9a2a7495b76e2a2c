"""Stops of a launch (torchrun) where the processes are not yet, or no longer, at a window: a Ctrl-C while they
meet and prepare, a Ctrl-C outside any command's own handling (the CLI's start-up), and the launcher's SIGTERM
to a survivor of a killed process in the middle of a long window. Each reads once, as the stop it is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import prepared_corpus
from process_helpers import error_lines, kill_launch, launched_process
from render_helpers import ENV, make_model, wait_for_file

# The CLI, with ``PAUSED`` (a function of wavegen, as module:name) taking PAUSE_SECONDS in process PAUSE_RANK (every
# process where unset) after writing the file PAUSE_MARK + its rank: the moment a test stops the launch
_CLI_PAUSED = """import importlib, os, pathlib, sys, time
module, name = os.environ["PAUSED"].split(":")
module = importlib.import_module(module)
real = getattr(module, name)

def paused(*args, **kwargs):
    if os.environ.get("PAUSE_RANK", os.environ["RANK"]) == os.environ["RANK"]:
        pathlib.Path(os.environ["PAUSE_MARK"] + os.environ["RANK"]).write_text("paused")
        time.sleep(float(os.environ["PAUSE_SECONDS"]))
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


def ctrl_c_while_paused(tmp_path, paused: str, command: list, rank: int | None = None, seconds: float = 4,
                        signals: int = 1) -> str:
    """``command`` (wavegen's arguments) under torchrun (2 processes), paused at ``paused`` (:data:`_CLI_PAUSED`)
    in process ``rank`` (both where None); a terminal's Ctrl-C (SIGINT to every process of the launch's process
    group), ``signals`` times, once it is there → the launch's stderr, once both processes exited 130."""
    script, mark = tmp_path / "cli_paused.py", tmp_path / "paused"
    script.write_text(_CLI_PAUSED)
    env = {**ENV, "PAUSED": paused, "PAUSE_MARK": str(mark), "PAUSE_SECONDS": str(seconds)}
    if rank is not None:
        env["PAUSE_RANK"] = str(rank)
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
            *map(str, command)]
    launch = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        for paused_rank in (0, 1) if rank is None else (rank,):  # each paused process there, not only the first
            wait_for_file(launch, tmp_path / f"paused{paused_rank}")
        time.sleep(0.5)  # well inside the pause (and the other process at the collective that waits for it)
        for _ in range(signals):
            os.killpg(launch.pid, signal.SIGINT)
            time.sleep(0.3)
        _, stderr = launch.communicate(timeout=120)
    finally:
        if launch.poll() is None:
            kill_launch(launch)
    exits = [(tmp_path / f"paused.exit{r}").read_text() if (tmp_path / f"paused.exit{r}").exists() else None
             for r in (0, 1)]
    assert exits == ["130", "130"], f"exits {exits}: {stderr[-3000:]}"
    return stderr


@pytest.mark.slow
def test_ctrl_c_while_the_processes_agree_on_the_open_files_is_an_ordinary_stop(model, tmp_path):
    """The first agreement (the open-file limit) ran outside StopSignals: a Ctrl-C there raised KeyboardInterrupt in
    one process mid-collective while the other waited for it. Now the stop waits for the agreement, as one while the
    model loads does: each process exits 130, nothing written, said once, no traceback."""
    out = tmp_path / "r"
    stderr = ctrl_c_while_paused(tmp_path, "wavegen.render.loop:reserve_open_files",
                                 ["-q", "render", model, "--seconds", 0.5, "--streams", 2, "--out", out,
                                  "--backend", "torch", "--no-guard", "--no-spectrogram"], rank=1)
    assert stderr.count("wavegen render: interrupted") == 1, stderr[-3000:]
    assert stderr.count("SIGINT: stopping once the model and engine are ready, before anything is written") == 1, \
        stderr[-3000:]
    # no process's traceback (torchrun's own, of the Ctrl-C it was sent too, is the launcher's)
    assert "error:" not in stderr and "/wavegen/" not in stderr, stderr[-3000:]
    assert not out.exists()


@pytest.mark.slow
def test_ctrl_c_of_a_launch_outside_the_commands_handling_says_interrupted_once(model, tmp_path):
    """A Ctrl-C that ends a command where it holds no stop handler of its own (here: render's start-up, before
    the render; any command's imports) came out of every process as "wavegen render: interrupted". Now the
    first process says it for all."""
    stderr = ctrl_c_while_paused(tmp_path, "wavegen.cli.render:apply_threads",
                                 ["-q", "render", model, "--seconds", 0.5, "--out", tmp_path / "r", "--backend",
                                  "torch"])
    assert stderr.count("wavegen render: interrupted") == 1, stderr[-3000:]


@pytest.mark.slow
def test_ctrl_c_of_a_training_launch_while_it_starts_is_said_once(tmp_path):
    """Training's start-up (its settings resolved, before the run) holds a Ctrl-C: every process said what it would
    do, and that it stopped before the run started. Now the first process says both, for all."""
    corpus = prepared_corpus(tmp_path, files=2, seconds=2.0, sample_rate=8000)
    stderr = ctrl_c_while_paused(tmp_path, "wavegen.cli.train:apply_threads",
                                 ["-q", "train", "--data", corpus, "--model", "samplernn-tiny", "--run-dir",
                                  tmp_path / "run", "--max-steps", 1])
    assert stderr.count("SIGINT: stopping at the next safe point") == 1, stderr[-3000:]
    assert stderr.count("SIGINT: stopped before the run started") == 1, stderr[-3000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_launchers_sigterm_after_a_kill_mid_window_says_the_loss_not_a_stop(model, tmp_path):
    """A window longer than LAUNCH_TERM_SECONDS (one 60 s block): process 1 killed, torchrun's SIGTERM to process 0
    took effect 5 s later in the middle of the window ("SIGTERM: rewinding ...", "stopped at", "interrupted"), the
    loss, met at windows only, never said. Now a held SIGTERM has the render look for a lost process at each chunk:
    one line names the killed process, and no SIGTERM line is said."""
    out = tmp_path / "r"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "wavegen",
            "-q", "render", str(model), "--seconds", "60", "--block-seconds", "60", "--streams", "2", "--out",
            str(out), "--backend", "torch", "--no-guard", "--no-spectrogram"]
    launch = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_file(launch, out / "stream_001.wav")  # both render their first (and only) window
        time.sleep(1)
        launched_process(launch, 1).kill()
        _, stderr = launch.communicate(timeout=120)
    finally:
        if launch.poll() is None:
            kill_launch(launch)
    errors = error_lines(stderr, "render")
    assert len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith("wavegen render: error: process 1 of this render (2 processes) ended unexpectedly"), \
        errors[0]
    assert not [line for line in stderr.splitlines() if line.startswith("SIGTERM")], stderr[-3000:]
    assert "interrupted" not in stderr, stderr[-3000:]
