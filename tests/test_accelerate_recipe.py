"""recipes/accelerate/run.sh, the parts that run on a CPU in seconds: a failed training stage reads
as wavegen's one line and the recipe's, without accelerate's traceback (one process); one_node on a
machine without GPUs asks for --num-processes instead of starting the file's 8 CPU processes.
(tests/test_distributed_launch.py covers the launches themselves.)"""

import os
import subprocess
from pathlib import Path

import pytest
import torch
from process_helpers import run_launch

RUN_SH = Path(__file__).resolve().parent.parent / "recipes" / "accelerate" / "run.sh"


def run_sh(*args: str) -> subprocess.CompletedProcess:
    return run_launch(["bash", str(RUN_SH), *args], env={**os.environ, "OMP_NUM_THREADS": "1"})


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


@pytest.mark.parametrize("args, message", [
    (["--config", "one_node", "--num-processes", "0"], "--num-processes takes a whole number (at least 1), not '0'"),
    (["--config", "one_node", "--num-processes", "-1"], "--num-processes takes a whole number (at least 1), not '-1'"),
    (["--config", "one_node", "--num-processes", "two"],
     "--num-processes takes a whole number (at least 1), not 'two'"),
    (["--config", "multi_node", "--machine-rank", "1.0"],
     "--machine-rank takes a whole number (at least 0), not '1.0'"),
    (["--num-processes", "2"],
     "--config one_gpu runs one process; for 2 on this machine give --config one_node --num-processes 2"),
    (["--config", "one_node", "--num-processes", "2", "--machine-rank", "1"],
     "--machine-rank 1 is for a training over several machines (--config multi_node or a FILE.yaml of yours); "
     "--config one_node runs on this machine alone"),
], ids=["no processes", "negative", "a word", "a rank not whole", "several on one_gpu", "a second machine of one"])
def test_a_launch_option_it_cannot_follow_is_refused_before_anything_runs(tmp_path, args, message):
    """Each of these reached accelerate launch: 0 and -1 processes an AssertionError or ValueError traceback, a
    word its usage, each then followed by the recipe's line blaming "wavegen's message above" (there was none);
    one_gpu with --num-processes 2 trained one process without a word; --machine-rank 1 with one_node trained as
    the only machine, but, not being machine 0, left no marker and skipped the evaluation and the render."""
    done = run_sh("--dir", str(tmp_path / "exp"), "--stage", "2", "--stop-stage", "2", "--model", "samplernn-tiny",
                  "--steps", "1", *args)
    assert done.returncode == 2
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "stage 2" not in done.stderr + done.stdout
    assert not (tmp_path / "exp").exists()


def test_the_last_line_names_a_model_only_where_there_is_one(tmp_path):
    # stages past the last (nothing runs): the recipe ended with "Model: DIR/run/best/", where nothing was
    done = run_sh("--dir", str(tmp_path / "exp"), "--stage", "9")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"No model yet in {tmp_path / 'exp' / 'run' / 'best'}/: stage 2 " \
        "trains it"
    assert "Model:" not in done.stdout
