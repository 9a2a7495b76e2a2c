"""A training whose logs (metrics.jsonl, TensorBoard) can no longer be written stops in one line."""

import resource
import subprocess
import sys

import pytest
from conftest import TINY_SAMPLERNN


@pytest.mark.slow
def test_logs_that_cannot_be_written_stop_the_training_in_one_line(tiny_corpus, tmp_path):
    """Files capped at 3000 bytes (RLIMIT_FSIZE: a write past it fails with EFBIG, as one on a full disk with
    ENOSPC): config.json and album.json fit, the logs outgrow the cap within a few dozen steps. The training
    stops with its one line (exit 2), not with the traceback of TensorBoard's writer, whose close raised the
    same error again while the logs were closed."""
    run = tmp_path / "run"
    sets = TINY_SAMPLERNN + ["train.val_interval=1000", "train.checkpoint_interval=1000"]
    args = [sys.executable, "-m", "wavegen", "-q", "train", "--data", str(tiny_corpus), "--model", "samplernn-tiny",
            "--run", str(run), "--max-steps", "1000", *[a for s in sets for a in ("--set", s)]]

    def capped():
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    done = subprocess.run(args, capture_output=True, text=True, timeout=600, preexec_fn=capped)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wavegen train: error: cannot write the metrics of {run}: "), lines
    assert "File too large" in lines[0] and "a rerun starts again from step 0" in lines[0]
    assert (run / "config.json").is_file() and (run / "metrics.jsonl").stat().st_size > 0
