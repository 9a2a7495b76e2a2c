"""``wavegen train --threads``: more threads than the CPUs the training may use (times the processes of a
launch on this machine) is said, with the most that runs best (it trains: only slower)."""

import os
import re

import pytest
from conftest import TINY_SAMPLERNN

from wavegen.cli import main
from wavegen.cli.train import threads_warning

CPUS = len(os.sched_getaffinity(0))


def train_args(corpus, run, threads):
    return ["train", "--data", str(corpus), "--model", "samplernn-tiny", "--run", str(run), "--max-steps", "1",
            "--threads", str(threads)] + [a for s in TINY_SAMPLERNN for a in ("--set", s)]


def test_more_threads_than_cpus_is_said_and_the_training_runs(tiny_corpus, tmp_path, capsys):
    """Taken as it was: 32 threads on 2 CPUs made a training step 8x slower than 2 threads, without a word."""
    assert main(train_args(tiny_corpus, tmp_path / "run", CPUS + 1)) == 0
    err = capsys.readouterr().err
    cpus = f"{CPUS} CPU" if CPUS == 1 else f"{CPUS} CPUs"
    beyond = "CPU" if CPUS == 1 else "CPUs"
    assert (f"--threads {CPUS + 1}: more than the {cpus} this training may use; threads beyond the {beyond} wait "
            f"on one another and training runs several times slower (at most {CPUS} runs best)") in err
    assert (tmp_path / "run" / "best").is_dir()


def test_threads_are_counted_over_the_processes_of_a_launch(monkeypatch):
    assert threads_warning(CPUS) is None and threads_warning(None) is None
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(CPUS + 1))  # more processes than CPUs: one thread each stays
    assert threads_warning(1) is None
    if CPUS < 2:
        pytest.skip("one CPU: no launch of several processes fits")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    said = (rf"^--threads {CPUS}: in each of the 2 processes of this launch on this machine, {2 * CPUS} threads, "
            rf"more than the {CPUS} CPUs .* \(at most {CPUS // 2} runs best\)$")
    assert re.match(said, threads_warning(CPUS))
    assert threads_warning(CPUS // 2) is None


@pytest.mark.parametrize("cpus, said, beyond", [(1, "the 1 CPU this", "the CPU"), (2, "the 2 CPUs this", "the CPUs")])
def test_the_cpus_are_counted_with_their_noun_agreeing(monkeypatch, cpus, said, beyond):
    """It said 'more than the 1 CPU(s) this training may use', then '... the 1 CPU ...; threads beyond the CPUs'."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert threads_warning(cpus + 1) == (f"--threads {cpus + 1}: more than {said} training may use; threads beyond "
                                         f"{beyond} wait on one another and training runs several times slower "
                                         f"(at most {cpus} runs best)")
