"""The loss guard's judgement at a stop between log rows under torchrun with 2 processes: the mean since the last row
is a collective (train._running_mean), reached by every process at the agreed stop (a checkpoint step), in a fresh
run and in one resumed with the sum since the last row restored from its checkpoint; none waits for another."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from process_helpers import kill_launch, wait_until

GUARD = "the model is learning nothing"
# lr 1e6: the loss far above a uniform guess from step 2 on; no log row before step 1000; a checkpoint every 4 steps
SETTINGS = ["model.dim=32", "model.emb_size=8", "train.batch_size=4", "train.seq_len=64", "train.tbptt_windows=4",
            "train.checkpoint_interval=4", "train.val_interval=100000", "train.sample_interval=-1",
            "train.log_interval=1000", "train.lr=1e6"]
_CLI_THEN_EXIT = """import os, sys
from wavegen.cli import main
code = main(sys.argv[1:])
open(os.path.join(os.environ["EXIT_DIR"], os.environ["RANK"]), "w").write(str(code))
raise SystemExit(code)
"""


def _steps(run: Path) -> list[int]:
    folder = run / "checkpoints"
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    return [int(m.group(1)) for m in map(re.compile(r"^step_(\d+)$").match, names) if m]


def _launch(tmp_path: Path, corpus, run: Path, *extra: str) -> subprocess.Popen:
    script = tmp_path / "cli_then_exit.py"
    script.write_text(_CLI_THEN_EXIT)
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
            "train", "--data", str(corpus), "--model", "samplernn-tiny", "--run-dir", str(run),
            "--max-steps", "100000", *[a for s in SETTINGS + list(extra) for a in ("--set", s)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EXIT_DIR": str(tmp_path)}
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def _stopped(launch: subprocess.Popen, when) -> str:
    """SIGINT to the launcher (handed on to both processes) once ``when(lines so far)``; its stderr once it ended
    (within 120 s: a process waiting at a collective the other never reached would not)."""
    lines, sent = [], threading.Event()

    def read():
        for line in launch.stderr:
            lines.append(line)
            if not sent.is_set() and when(lines):
                sent.set()
                launch.send_signal(signal.SIGINT)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(launch, sent.is_set, "the stop sent", timeout=240)
        launch.wait(timeout=120)
        reader.join(timeout=30)
    finally:
        if launch.poll() is None:
            kill_launch(launch)
    return "".join(lines)


@pytest.mark.slow
def test_a_stop_between_log_rows_is_judged_by_every_process_fresh_and_resumed(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    launch = _launch(tmp_path, tiny_corpus, run)
    err = _stopped(launch, lambda lines: _steps(run) and max(_steps(run)) >= 8)
    assert [(tmp_path / str(rank)).read_text() for rank in (0, 1)] == ["130", "130"], err[-3000:]
    said = [line for line in err.splitlines() if GUARD in line]
    stopped_at = max(_steps(run))
    assert len(said) == 1 and f"step {stopped_at}: " in said[0] and "judged at the stop" in said[0], err[-3000:]
    for rank in (0, 1):
        (tmp_path / str(rank)).unlink()
    # resumed (the sum since the last row restored from its checkpoint on both processes; lr 1e-3: lr 1e6 goes on
    # to a non-finite step), stopped at its second checkpoint: the mean reached by both again, the weights resumed from
    # blamed (the loss above the limit from the first step after the resume)
    launch = _launch(tmp_path, tiny_corpus, run, "train.lr=1e-3")
    err = _stopped(launch, lambda lines: max(_steps(run)) >= stopped_at + 4)
    assert [(tmp_path / str(rank)).read_text() for rank in (0, 1)] == ["130", "130"], err[-3000:]
    said = [line for line in err.splitlines() if GUARD in line]
    assert len(said) == 1 and f"step {max(_steps(run))}: " in said[0] and "judged at the stop" in said[0], err[-3000:]
    assert f"since the first step after the resume from step {stopped_at}" in said[0], said
