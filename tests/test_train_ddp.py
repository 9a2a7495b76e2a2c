"""Data-parallel training: 2 CPU processes (torchrun, gloo) equal 1 process with the same global
batch (the average of the weights too); resume across a change of process count; gradient
accumulation; the lr warm-up as applied.

Tolerances. The processes are real (torchrun starts them; DDP all-reduces gradients over gloo).
Two processes cannot match one bit for bit: the gradient is summed in a different order (two
half-batch sums added by the all-reduce, then halved, against one sum over the whole batch) and
matmuls over 2 rows round differently from matmuls over 8. Those are fp32 rounding differences
of ~1e-7 relative per operation; measured after 4 Adam steps: 7e-7 bits in the loss, 8e-7 in
the worst weight. The tolerances (5e-6 bits, 2e-5 per weight) sit well above that and well
below a real fault: scattering the carried hidden state to the wrong streams on resume moved
the loss by 1e-4 bits and weights by 5e-3 (measured by breaking it on purpose).
"""

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from conftest import prepared_corpus
from process_helpers import (cli_recording_threads, error_lines, gloo_threads_left, kill_launch, launched_process,
                             run_launch, wait_until)
from safetensors.torch import load_file

from wavegen.cli import main
from wavegen.folders import FolderLock
from wavegen.models import resolve_preset
from wavegen.resolve import AVERAGED_MODEL, MODEL_FILE
from wavegen.train import read_metrics, resolve_run_config, train

RECIPES = Path(__file__).resolve().parent.parent / "recipes" / "accelerate"
LOSS_ATOL_BITS = 5e-6
WEIGHT_ATOL = 2e-5

# tbptt_windows=4 and a checkpoint at step 2: a resumed run starts mid-chunk, so the carried
# hidden state of every stream must land on the right process and micro-batch.
SETTINGS = ["model.dim=32", "model.emb_size=8", "train.batch_size=8", "train.seq_len=64",
            "train.tbptt_windows=4", "train.val_seconds=0.5", "train.log_interval=1",
            "train.val_interval=2", "train.checkpoint_interval=2",
            "train.sample_interval=2", "train.sample_seconds=0.5",  # samples on, short: main renders them under DDP
            "train.ema_decay=0.5"]  # an average of the weights: validated, checkpointed, restored by every process
STEPS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_train(corpus, run, processes: int, *extra: str, launcher: str = "torchrun",
                threads=None) -> subprocess.Popen:
    """Start ``wavegen train`` as real processes: ``python -m wavegen``, or 2 of them started by
    torchrun or by ``accelerate launch`` with the recipe's one-node config (on a machine without
    GPUs its processes talk over gloo). :func:`finish` waits for it.

    ``--run-dir``: torchrun refuses ``--run`` (a prefix of its own ``--run-path``). ``threads``: a
    folder where each process records the threads it leaves behind (process_helpers).
    """
    entry, env = cli_recording_threads(threads) if threads else (["-m", "wavegen"], {})
    args = [*entry, "-q", "train", "--data", str(corpus), "--model", "samplernn-tiny",
            "--run-dir", str(run), "--max-steps", str(STEPS)]
    args += [a for s in SETTINGS + list(extra) for a in ("--set", s)]
    launch = [sys.executable]
    if processes > 1 and launcher == "torchrun":
        launch += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    elif processes > 1:
        launch += ["-m", "accelerate.commands.launch", "--config_file", str(RECIPES / "one_node.yaml"),
                   "--num_processes", str(processes), "--main_process_port", str(free_port())]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen(launch + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(*launches: subprocess.Popen) -> None:
    """Wait for launches (started side by side: each is mostly seconds of importing torch, and its
    results do not depend on how the CPUs were shared); each must succeed. One that overran (or is left
    by a failure) is ended whole: the launcher and its processes (kill_launch)."""
    try:
        for launch in launches:
            _, err = launch.communicate(timeout=240)
            assert launch.returncode == 0, err[-4000:]
    finally:
        for launch in launches:
            if launch.poll() is None:
                kill_launch(launch)


def losses(run) -> dict[int, float]:
    rows = [r for r in read_metrics(run) if "loss_bits" in r]
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), f"metrics rows written twice (only main may write): {steps}"
    return {r["step"]: r["loss_bits"] for r in rows}


def val_bits(run) -> dict[int, float]:
    return {r["step"]: r["val_bits"] for r in read_metrics(run) if "val_bits" in r}


def weights(run, step: int = STEPS, name: str = MODEL_FILE) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step_{step}" / name))


def assert_same_training(a, b, from_step: int = 1) -> None:
    la, lb = losses(a), losses(b)
    assert sorted(la) == sorted(lb) == list(range(1, STEPS + 1))
    for step in range(from_step, STEPS + 1):
        assert abs(la[step] - lb[step]) < LOSS_ATOL_BITS, (step, la[step], lb[step])
    va, vb = val_bits(a), val_bits(b)
    assert sorted(va) == sorted(vb) == [2, 4]
    assert abs(va[STEPS] - vb[STEPS]) < LOSS_ATOL_BITS
    for name in (MODEL_FILE, AVERAGED_MODEL):
        wa, wb = weights(a, name=name), weights(b, name=name)
        assert sorted(wa) == sorted(wb)
        worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
        assert worst < WEIGHT_ATOL, f"{name}: weights differ by up to {worst}"


def resumed_copy(source, target, step: int):
    """A run folder holding only ``source``'s config, metrics and checkpoint ``step``."""
    (target / "checkpoints").mkdir(parents=True)
    for name in ("config.json", "metrics.jsonl"):
        shutil.copy(source / name, target / name)
    shutil.copytree(source / "checkpoints" / f"step_{step}", target / "checkpoints" / f"step_{step}")
    return target


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process (grad_accum 1) and two processes (grad_accum 2: 2 streams per micro-batch)."""
    root = tmp_path_factory.mktemp("ddp")
    corpus = prepared_corpus(root, val_fraction=0.25, test_fraction=0.25)
    (root / "threads").mkdir()
    finish(start_train(corpus, root / "one", 1),  # side by side: each is seconds of importing torch
           start_train(corpus, root / "two", 2, "train.grad_accum=2", threads=root / "threads"))
    return {"corpus": corpus, "one": root / "one", "two": root / "two", "root": root}


def test_two_processes_equal_one_with_the_same_global_batch(runs):
    one, two = runs["one"], runs["two"]
    assert json.loads((two / "checkpoints" / "step_4" / "trainer_state.json").read_text())["processes"] == 2
    # accelerate keeps one RNG file per process; model and optimizer once
    names = sorted(p.name for p in (two / "checkpoints" / "step_4").iterdir())
    assert "random_states_1.pkl" in names and "model.safetensors" in names
    assert_same_training(one, two)
    # the process group ended with the training: no gloo thread left to race the processes' exit
    assert gloo_threads_left(runs["root"] / "threads", 2) == {0: [], 1: []}
    # the runs really trained: the weights moved from their initialisation by far more than
    # the tolerance, and the loss went down
    first = weights(one, 2)
    assert max(float((weights(one)[k] - first[k]).abs().max()) for k in first) > 10 * WEIGHT_ATOL
    assert losses(two)[STEPS] < losses(two)[1]
    # training samples: the main process alone renders them, at each validation, under DDP too
    for run in (one, two):
        assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_2", "step_4"]
        assert sorted(p.name for p in (run / "samples" / "step_4").glob("*.wav")) == ["stream_000.wav", "stream_001.wav"]


@pytest.mark.slow
def test_resume_across_a_change_of_process_count(runs):
    root = runs["root"]
    # 1 → 2: a one-process checkpoint (grad_accum 1) continued by two processes (grad_accum 2),
    # started by accelerate launch with recipes/accelerate/one_node.yaml
    # 2 → 1: the two-process checkpoint continued by one process; random_states_1.pkl unused
    # (the two resumes run side by side)
    up = resumed_copy(runs["one"], root / "up", 2)
    down = resumed_copy(runs["two"], root / "down", 2)
    finish(start_train(runs["corpus"], up, 2, "train.grad_accum=2", launcher="accelerate"),
           start_train(runs["corpus"], down, 1))
    assert json.loads((up / "checkpoints" / "step_4" / "trainer_state.json").read_text())["processes"] == 2
    assert_same_training(runs["one"], up)
    assert_same_training(runs["two"], down)


@pytest.mark.slow
def test_a_busy_run_folder_stops_every_process_of_a_launch(runs, tmp_path):
    """The run folder is held (as a training running elsewhere holds it): both processes of a torchrun
    launch exit at once, neither waits for the other, the error is printed once, nothing is written."""
    run = tmp_path / "run"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "wavegen", "-q", "train", "--data", str(runs["corpus"]), "--model", "samplernn-tiny",
            "--run-dir", str(run), "--max-steps", str(STEPS)]
    args += [a for s in SETTINGS for a in ("--set", s)]
    with FolderLock(run, "training run"):
        start = time.perf_counter()
        done = run_launch(args, env={**os.environ, "OMP_NUM_THREADS": "1"})
        elapsed = time.perf_counter() - start
    assert done.returncode != 0 and elapsed < 200
    # the refusal is said once (by the first process; the other waits, silent, for torchrun to end it), not once per process
    assert done.stderr.count(f"another training run is writing here (process {os.getpid()}") == 1, done.stderr
    assert done.stderr.count("wavegen train: error:") == 1, done.stderr
    assert sorted(p.name for p in run.iterdir()) == [".lock"]


def config_for(corpus, *extra):
    base = ["model.dim=32", "model.emb_size=8", "train.seq_len=64", "train.tbptt_windows=2",
            "train.val_seconds=0.2", "train.log_interval=1", "train.val_interval=100"]
    return resolve_run_config(resolve_preset("samplernn-tiny"), corpus, base + list(extra))


def test_gradient_accumulation_equals_the_whole_batch(tiny_corpus, tmp_path):
    # batch 8 in one micro-batch, or in 2 of 4 streams each with gradients accumulated
    for accum in (1, 2):
        train(config_for(tiny_corpus, "train.batch_size=8", f"train.grad_accum={accum}", "train.max_steps=3"),
              tmp_path / f"accum{accum}", progress=False)
    la, lb = losses(tmp_path / "accum1"), losses(tmp_path / "accum2")
    assert sorted(la) == sorted(lb) == [1, 2, 3]
    assert all(abs(la[s] - lb[s]) < LOSS_ATOL_BITS for s in la), (la, lb)
    wa = load_file(str(tmp_path / "accum1" / "best" / "model.safetensors"))
    wb = load_file(str(tmp_path / "accum2" / "best" / "model.safetensors"))
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < WEIGHT_ATOL
    # and a different batch is not within the tolerance (the comparison can fail)
    train(config_for(tiny_corpus, "train.batch_size=4", "train.max_steps=3"), tmp_path / "half", progress=False)
    assert abs(losses(tmp_path / "half")[3] - la[3]) > 100 * LOSS_ATOL_BITS


def test_learning_rate_warmup_then_cosine_as_applied(tiny_corpus, tmp_path):
    # warm-up over 3 steps, then cosine to 0 at step 6: the lr each step was taken with
    config = config_for(tiny_corpus, "train.batch_size=4", "train.max_steps=6", "train.warmup_steps=3",
                        "train.lr_schedule=cosine", "train.lr=0.003")
    train(config, tmp_path / "run", progress=False)
    applied = [r["lr"] for r in read_metrics(tmp_path / "run") if "lr" in r]
    expected = [0.001, 0.002, 0.003, 0.003, 0.00225, 0.00075]  # 3e-3 x (1/3, 2/3, 1, 1, 3/4, 1/4)
    np.testing.assert_allclose(applied, expected, rtol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("blocker", ["config.json", "best.old"], ids=["before the loop", "at a validation"])
def test_a_write_only_the_main_process_makes_stops_every_process_with_one_line(runs, tmp_path, blocker):
    """What the main process alone writes (config.json before the loop; best/ at the first validation, through
    replace_dir's best.old) fails there: the other process stopped with a traceback of gloo's ("Connection
    closed by peer") when the main one left; now every process learns of it at once and the error is one line."""
    run = tmp_path / "run"
    run.mkdir()
    if blocker == "config.json":  # a folder where the main process writes the run's config
        (run / "config.json").mkdir()
    else:  # a file where replace_dir removes a folder: rmtree raises on the main process only
        (run / "best.old").write_text("mine")
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "wavegen", "-q", "train", "--data", str(runs["corpus"]), "--model", "samplernn-tiny",
            "--run-dir", str(run), "--max-steps", str(STEPS)]
    args += [a for s in SETTINGS for a in ("--set", s)]
    start = time.perf_counter()
    done = run_launch(args, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0 and time.perf_counter() - start < 200
    assert done.stderr.count("wavegen train: error:") == 1, done.stderr
    assert f"{run / blocker}" in done.stderr and "Connection closed" not in done.stderr, done.stderr
    assert "[rank0]" not in done.stderr and "[rank1]" not in done.stderr, done.stderr  # no process's traceback
    assert not (run / "checkpoints" / "step_2").exists()
    if blocker == "best.old":
        assert (run / "best.old").read_text() == "mine"


# The CLI in each process of a launch, with validation wrapped: after step 2's, the first process sends SIGINT to
# the launcher (as a terminal's Ctrl-C does: torchrun starts its processes in sessions of their own, and hands the
# signal on to each); every process then waits until the signal has reached it, so the stop falls at step 3 on all.
# Each process's exit code goes into EXIT_DIR/RANK.
_CTRL_C_AT_STEP_2 = """import os, signal, sys, time
import wavegen.train
real = wavegen.train._validate
def validate(run):
    real(run)
    if run.step == 2 and os.environ.get("CTRL_C") == "1":
        if run.main:
            os.kill(os.getppid(), signal.SIGINT)
        deadline = time.monotonic() + 120
        while not signal.getsignal(signal.SIGINT).__self__.requested and time.monotonic() < deadline:
            time.sleep(0.01)
wavegen.train._validate = validate
from wavegen.cli import main
code = main(sys.argv[1:])
open(os.path.join(os.environ["EXIT_DIR"], os.environ["RANK"]), "w").write(str(code))
raise SystemExit(code)
"""


@pytest.mark.slow
def test_ctrl_c_under_torchrun_saves_once_said_and_resumes_exactly(runs, tmp_path):
    """Ctrl-C (SIGINT to the launcher, which hands it on to every process): each process finishes the step, the
    checkpoint is saved, each exits 130, what the stop does is said once (it was said by every process); the same
    command then trains on to exactly the run that was never stopped (weights bit for bit, every loss)."""
    script = tmp_path / "ctrl_c.py"
    script.write_text(_CTRL_C_AT_STEP_2)
    run = tmp_path / "run"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), "-q",
            "train", "--data", str(runs["corpus"]), "--model", "samplernn-tiny", "--run-dir", str(run),
            "--max-steps", str(STEPS)]
    args += [a for s in SETTINGS + ["train.grad_accum=2"] for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EXIT_DIR": str(tmp_path)}
    stopped = run_launch(args, env={**env, "CTRL_C": "1"})
    assert [(tmp_path / str(rank)).read_text() for rank in (0, 1)] == ["130", "130"], stopped.stderr[-3000:]
    assert stopped.stderr.count("SIGINT: finishing the step and saving a checkpoint") == 1, stopped.stderr[-3000:]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_2", "step_3"]
    resumed = run_launch(args, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert losses(run) == losses(runs["two"])
    for name in (MODEL_FILE, AVERAGED_MODEL):
        wa, wb = weights(run, name=name), weights(runs["two"], name=name)
        assert sorted(wa) == sorted(wb) and all(torch.equal(wa[k], wb[k]) for k in wa), name


# a training far longer than the tests: stopped by them (a checkpoint every 2 steps, nothing rendered or validated)
ENDLESS = ["model.dim=32", "model.emb_size=8", "train.batch_size=4", "train.seq_len=64", "train.tbptt_windows=4",
           "train.checkpoint_interval=2", "train.val_interval=100000", "train.sample_interval=-1",
           "train.log_interval=1"]


def torchrun_train(corpus, run, *settings: str, max_steps: int = 100_000) -> list[str]:
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "wavegen", "-q", "train", "--data", str(corpus), "--model", "samplernn-tiny",
            "--run-dir", str(run), "--max-steps", str(max_steps)]
    return args + [a for s in ENDLESS + list(settings) for a in ("--set", s)]


def saved_steps(run: Path) -> list[int]:
    """The steps of the checkpoints in ``run`` (finished or being written) at this moment."""
    with contextlib.suppress(FileNotFoundError):
        return [int(p.name[5:]) for p in (run / "checkpoints").iterdir() if p.name.startswith("step_")]
    return []


def stopped_launch(args, stop_process, **popen) -> str:
    """Start ``args`` (a torchrun training), call ``stop_process(launch)`` once it has saved step 4 or later, then wait
    for it to end → its stderr. A launch left running is ended whole."""
    launch = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, **popen)
    try:
        run = Path(args[args.index("--run-dir") + 1])
        # step_4 itself may be pruned (two checkpoints kept) between two looks: any from step 4 on
        wait_until(launch, lambda: saved_steps(run) and max(saved_steps(run)) >= 4, "a checkpoint of step 4 or later")
        stop_process(launch)
        _, err = launch.communicate(timeout=180)
    finally:
        if launch.poll() is None:
            kill_launch(launch)
    return err


def resumes_from_named_checkpoint(corpus, run, line: str, caplog) -> None:
    """The checkpoint ``line`` names is the run's newest, and one process (this one: the CLI's main) resumes from it
    for a step."""
    named = re.search(r"the last checkpoint, (\S+), is kept: rerun the same command to resume from it", line)
    assert named, line
    newest = max((p for p in (run / "checkpoints").iterdir() if p.name.startswith("step_")),
                 key=lambda p: int(p.name[5:]))
    assert Path(named.group(1)) == newest, (named.group(1), newest)
    step = int(newest.name[5:]) + 1
    import numba

    threads = numba.get_num_threads()  # --threads 1 sets it for this whole process: put back after
    try:
        with caplog.at_level(logging.INFO, logger="wavegen"):
            code = main(["train", "--data", str(corpus), "--model", "samplernn-tiny", "--run-dir", str(run),
                         "--max-steps", str(step), "--threads", "1", *[a for s in ENDLESS for a in ("--set", s)]])
    finally:
        numba.set_num_threads(threads)
    assert code == 0, caplog.text[-3000:]
    assert f"resuming {run} from step {step - 1}" in caplog.text, caplog.text[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("killed", [0, 1], ids=["the first process killed", "the second process killed"])
def test_a_process_killed_mid_training_stops_the_other_with_one_line(runs, tmp_path, killed, caplog):
    """kill -9 of one process of a torchrun training: the other said gloo's traceback ("Connection closed by
    peer"); now one line says another process ended, which checkpoint is kept and how to resume, and a rerun
    resumes from that checkpoint."""
    run = tmp_path / "run"
    err = stopped_launch(torchrun_train(runs["corpus"], run), lambda launch: launched_process(launch, killed).kill())
    errors = error_lines(err, "train")
    assert len(errors) == 1, err[-4000:]
    # named: the survivor sees it ended on this machine
    assert f"process {killed} of this training (2 processes) ended unexpectedly" in errors[0], errors[0]
    assert not errors[0].startswith("wavegen train: error: another"), errors[0]
    assert "[rank0]" not in err and "[rank1]" not in err, err[-4000:]  # no process's traceback
    resumes_from_named_checkpoint(runs["corpus"], run, errors[0], caplog)


# past the processes' start-up skew on a loaded machine (the meeting before the group waits this long too; the samples
# test below starts with 3 s), far below gloo's 30 minutes; each second of it is a second the test waits
TIMEOUT_SECONDS = 8


@pytest.mark.slow
def test_a_frozen_process_stops_the_other_after_the_group_timeout_with_one_line(runs, tmp_path, caplog):
    """SIGSTOP of the second process (frozen, not dead): the first waited at its next collective for gloo's 30
    minutes; now it stops after train.group_timeout_seconds with one line naming the setting and the checkpoint
    kept. The frozen process, let go once the first has ended, stops with one line too; nothing is left running."""
    run, waited = tmp_path / "run", []

    def freeze_the_second(launch):
        first, second = launched_process(launch, 0), launched_process(launch, 1)
        second.suspend()
        frozen = time.monotonic()
        try:
            first.wait(timeout=TIMEOUT_SECONDS + 120)
            waited.append(time.monotonic() - frozen)
        finally:  # let go, it ends at once: the launcher asked it to stop as the first process ended
            with contextlib.suppress(psutil.NoSuchProcess):
                second.resume()

    err = stopped_launch(torchrun_train(runs["corpus"], run, f"train.group_timeout_seconds={TIMEOUT_SECONDS}"),
                         freeze_the_second)
    assert TIMEOUT_SECONDS - 1 <= waited[0] < TIMEOUT_SECONDS + 60, waited
    # the first process's line, then (let go) the frozen one's: the first has ended, or its own wait timed out
    errors = error_lines(err, "train")
    assert 1 <= len(errors) <= 2, err[-4000:]
    assert errors[0].startswith("wavegen train: error: process 1 of this training (2 processes) did not "
                                f"answer within train.group_timeout_seconds={TIMEOUT_SECONDS} "), errors[0]
    assert "): it is stopped (SIGSTOP or Ctrl-Z); this process stopped: " in errors[0], errors[0]
    assert errors[0].endswith("if a process is merely that slow, raise train.group_timeout_seconds"), errors[0]
    assert "[rank0]" not in err and "[rank1]" not in err, err[-4000:]  # no process's traceback
    resumes_from_named_checkpoint(runs["corpus"], run, errors[0], caplog)


@pytest.mark.slow
def test_a_wait_for_the_main_process_drawing_samples_loses_no_checkpoint(runs, tmp_path):
    """The main process draws training samples alone while the others wait at their next collective; drawn
    before the step's checkpoint, a wait that ran past train.group_timeout_seconds lost that checkpoint (and
    the steps since the last). Saved first, the step's checkpoint is kept whatever the wait."""
    run = tmp_path / "run"
    done = run_launch(torchrun_train(runs["corpus"], run, "train.group_timeout_seconds=3", "train.sample_interval=6",
                                     "train.sample_seconds=120", "train.sample_streams=1", max_steps=8),
                      env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0, done.stderr[-3000:]  # 120 s of samples at step 6: far past a 3 s wait
    assert "raise train.group_timeout_seconds" in done.stderr, done.stderr[-3000:]
    assert 6 in saved_steps(run) and (run / "checkpoints" / "step_6" / "trainer_state.json").is_file(), \
        (saved_steps(run), done.stderr[-3000:])
