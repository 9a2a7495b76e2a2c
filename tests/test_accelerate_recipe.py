"""recipes/accelerate/run.sh, the parts that run on a CPU in seconds: a failed training stage reads
as wavegen's one line and the recipe's, without accelerate's traceback (one process); one_node on a
machine without GPUs asks for --num-processes instead of starting the file's 8 CPU processes.
(tests/test_distributed_launch.py covers the launches themselves.)"""

import os
import subprocess
from pathlib import Path

import pytest
import torch

RUN_SH = Path(__file__).resolve().parent.parent / "recipes" / "accelerate" / "run.sh"


def run_sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RUN_SH), *args], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_refused_training_stage_is_one_line_and_the_recipes(tmp_path):
    # stage 2 alone, on a folder without a corpus: wavegen refuses, in one line; accelerate's launcher
    # (--quiet) adds no CalledProcessError traceback; the recipe stops with a non-zero exit, unmarked
    done = run_sh("--dir", str(tmp_path / "exp"), "--stage", "2", "--stop-stage", "2", "--model", "samplernn-tiny",
                  "--steps", "1")
    assert done.returncode != 0
    assert done.stderr.count("wavegen train: error:") == 1, done.stderr
    assert f"{tmp_path / 'exp' / 'corpus'} is not a prepared corpus" in done.stderr
    assert "stage 2 ended with exit" in done.stderr
    assert "Traceback" not in done.stderr and "CalledProcessError" not in done.stderr, done.stderr
    assert list((tmp_path / "exp" / ".done").iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="one_node counts the GPUs here")
def test_one_node_without_gpus_asks_for_the_number_of_processes(tmp_path):
    done = run_sh("--config", "one_node", "--dir", str(tmp_path / "exp"), "--stage", "2", "--stop-stage", "2")
    assert done.returncode == 2
    assert "--config one_node starts one process per GPU, and there is none here: give --num-processes N" in done.stderr
    assert not (tmp_path / "exp" / "run").exists()
