"""A SIGTERM or SIGINT while `wavegen train` starts up (reading the corpus, building the model, before
its first step): a clean stop (exit 130, as a stop while it trains), nothing half-written, and the same
command then trains. Real processes and real signals; each one is signalled at a known point of its
start-up (a function of it wrapped to say where it is and wait for the test), not after a fixed sleep."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import TINY_SAMPLERNN
from process_helpers import kill_launch, stalled, unread

from wavegen.cli import main
from wavegen.train import read_metrics


# The CLI, with one start-up function wrapped: it prints "at NAME" and waits for a line on stdin, so the
# test signals the process while it is there
CHILD = """import sys
import wavegen.train
name = sys.argv.pop(1)
real = getattr(wavegen.train, name)
def wrapped(*args, **kwargs):
    print("at", name, flush=True)
    sys.stdin.readline()
    return real(*args, **kwargs)
setattr(wavegen.train, name, wrapped)
from wavegen.cli import run
raise SystemExit(run())
"""


def train_command(corpus, run, steps):
    cmd = ["train", "--data", str(corpus), "--model", "samplernn-tiny", "--run", str(run), "--max-steps",
           str(steps), "--threads", "1"]
    return cmd + [a for s in TINY_SAMPLERNN for a in ("--set", s)]


@pytest.mark.slow
@pytest.mark.parametrize("where, signum", [("resolve_run_config", signal.SIGTERM), ("build_training", signal.SIGTERM),
                                           ("build_training", signal.SIGINT)],
                         ids=["SIGTERM-reading-the-corpus", "SIGTERM-building-the-model", "SIGINT-building-the-model"])
def test_a_signal_while_training_starts_up_stops_cleanly(tiny_corpus, tmp_path, where, signum):
    """SIGTERM before the stop handler was installed (torch importing, the model building) killed the
    process by the signal (exit 143 in a shell) wherever it was in its start-up; a SIGINT there was a
    KeyboardInterrupt in the middle of whatever ran. Now the start-up finishes, no step trains, exit 130."""
    run = tmp_path / "run"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen([sys.executable, str(script), where] + train_command(tiny_corpus, run, 3),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert child.stdout.readline().strip() == f"at {where}"
        child.send_signal(signum)
        _, err = child.communicate("go\n", timeout=120)
    finally:
        child.kill()
    assert child.returncode == 130, err
    name = signal.Signals(signum).name
    assert "Traceback" not in err
    if where == "build_training":  # the run took its folder: it finishes starting up, then stops
        assert f"{name}: stopping once the run has started up, before its first step" in err
        assert f"{name}: stopped before training step 1" in err
        assert "interrupted at step 0; no best/ model yet" in err
        assert (run / "config.json").is_file()
    else:  # before the run folder was touched
        assert f"{name}: stopped before the run started" in err
        assert not run.exists()
    assert read_metrics(run) == [] and not list(run.glob("checkpoints/step_*"))
    assert main(train_command(tiny_corpus, run, 2)) == 0  # the same command, in this process
    assert [r["step"] for r in read_metrics(run) if "loss_bits" in r] == [1, 2]


ONE_GPU = Path(__file__).resolve().parent.parent / "recipes" / "accelerate" / "one_gpu.yaml"
STOP_LINE = "SIGINT: finishing the step and saving a checkpoint"


@pytest.mark.slow
@pytest.mark.parametrize("late", [0.0, 0.4], ids=["launcher-at-once", "launcher-late"])
def test_a_ctrl_c_to_accelerate_launch_of_one_process_saves_the_checkpoint(tiny_corpus, tmp_path, late):
    """A Ctrl-C to `accelerate launch` of one process (the terminal's SIGINT to its process group: the launcher and
    wavegen) said "finishing the step and saving a checkpoint", then the launcher's own SIGTERM to wavegen (sent on
    its Ctrl-C, a kill 5 s later) was taken as the second signal: "interrupted", no checkpoint at all, every step since
    the last lost. Now that SIGTERM is the same stop: the step finishes and its checkpoint is saved, exit 130.
    The launcher copies wavegen's stderr, and a Ctrl-C can cut its copying between a read and its write: the line,
    written before the launcher ran (a busy machine), was read with the Ctrl-C and lost. Now it is written once the
    launcher has reacted. ``late``: the launcher stalled that long after the Ctrl-C (the line waits unwritten)."""
    run = tmp_path / "run"
    launch = subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ONE_GPU), "--cpu", "-m", "wavegen"]
        + train_command(tiny_corpus, run, 100000) + ["--set", "train.checkpoint_interval=100000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,  # (setsid: a terminal)
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        seen = []
        for line in launch.stderr:  # training has begun (its first logged step) before the Ctrl-C
            seen.append(line)
            if line.startswith("step "):
                break
        assert seen and seen[-1].startswith("step "), "".join(seen)
        if late:  # the launcher stalled: the line waits for it (it was written at once, and is lost when the
            # launcher, as it goes on, reads it in the same wake-up as its Ctrl-C: ci's stop 54, 1 in 40 under load)
            (wavegen,) = psutil.Process(launch.pid).children()
            with stalled(launch.pid):
                os.killpg(launch.pid, signal.SIGINT)
                time.sleep(late)
                assert STOP_LINE.encode() not in unread(f"/proc/{wavegen.pid}/fd/2")
        else:
            os.killpg(launch.pid, signal.SIGINT)
        err = "".join(seen) + launch.stderr.read()
        launch.wait(timeout=60)
    finally:
        if launch.poll() is None:
            kill_launch(launch)
    assert launch.returncode == 130, err
    assert STOP_LINE in err and "Traceback" not in err
    last = max(r["step"] for r in read_metrics(run) if "loss_bits" in r)
    assert [p.name for p in (run / "checkpoints").glob("step_*")] == [f"step_{last}"], err
    assert f"interrupted at step {last};" in err and "wavegen train: interrupted" not in err
