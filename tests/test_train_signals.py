"""A SIGTERM or SIGINT while `wavegen train` starts up (reading the corpus, building the model, before
its first step): a clean stop (exit 130, as a stop while it trains), nothing half-written, and the same
command then trains. Real processes and real signals; each one is signalled at a known point of its
start-up (a function of it wrapped to say where it is and wait for the test), not after a fixed sleep."""

import os
import signal
import subprocess
import sys

import pytest
from conftest import TINY_SAMPLERNN

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
