"""A process of a launch lost (killed, frozen by SIGSTOP) or failing as another is lost, with real processes
(torchrun, gloo on this CPU): what the others say, once, and that nothing already made is lost.

A launcher (torchrun, accelerate launch through it) sends SIGTERM to the survivors once one of its processes
has ended: the survivors hold it (wavegen.signals) and say the loss, not the SIGTERM's stop line.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from process_helpers import kill_launch, launched_process, raised_under_torchrun, wait_until
from render_helpers import ENV, SR, direct_pcm, file_bytes, make_model, wait_for_snapshot, write_streams


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model") / "tiny")


def torchrun_render(model, out, seconds: float, processes: int = 2) -> list[str]:
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", processes,
            "-m", "wavegen", "-q", "render", model, "--seconds", seconds, "--streams", 3, "--out", out,
            "--backend", "torch", "--no-guard", "--no-spectrogram", "--snapshot-seconds", 0.5,
            "--block-seconds", 0.25]
    return list(map(str, args))


def error_lines(stderr: str, command: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"wavegen {command}: error:")]


@pytest.mark.slow
def test_a_frozen_render_process_stops_the_others_with_one_line_naming_it_and_the_render_resumes(model, tmp_path):
    """SIGSTOP of one process of a torchrun render: the other, done with its streams, waited at the final agreement
    for the group's 7 days. Now it waits while the frozen one is heard from (a heartbeat), then says one line naming
    it, and a rerun resumes to the bytes of a render never stopped."""
    seconds, out = 4.0, tmp_path / "r"
    args = torchrun_render(model, out, seconds)
    env = {**ENV, "WAVEGEN_SILENCE_SECONDS": "4"}
    launch = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for rank in (0, 1):
            wait_for_snapshot(launch, out / ".state" / f"rank{rank}.prev.npz")
        frozen, survivor = launched_process(launch, 0), launched_process(launch, 1)
        frozen.suspend()
        started = time.monotonic()
        survivor.wait(timeout=120)  # its streams, then SILENCE_SECONDS of waiting
        waited = time.monotonic() - started
        frozen.kill()  # (torchrun would, 30 s after its SIGTERM)
        _, stderr = launch.communicate(timeout=120)
    finally:
        if launch.poll() is None:
            kill_launch(launch)
    assert waited >= 4, waited
    errors = error_lines(stderr, "render")
    assert len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith("wavegen render: error: process 0 of this render (2 processes) has not answered for "
                                "4 s (it is stopped (SIGSTOP or Ctrl-Z)) while this one waited for it"), errors[0]
    assert errors[0].endswith("rerun the same command to resume"), errors[0]
    assert not [line for line in stderr.splitlines() if line.startswith("SIGTERM:")], stderr[-3000:]
    resumed = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = write_streams(tmp_path / "ref", direct_pcm(model, 3, int(seconds * SR)), "wav")
    assert file_bytes(out, 3) == file_bytes(expected, 3)


@pytest.mark.slow
def test_a_render_process_alone_for_longer_than_the_silence_is_not_taken_for_lost(model, tmp_path):
    """1 stream over 2 processes: the second has none and waits for the first for the whole render, far longer
    than WAVEGEN_SILENCE_SECONDS; the first is heard from meanwhile (its heartbeat, not its windows), so the
    render ends whole, as one process renders it."""
    seconds, out = 6.0, tmp_path / "r"
    args = torchrun_render(model, out, seconds)
    args[args.index("--streams") + 1] = "1"
    args[args.index("--block-seconds") + 1] = "3"  # a window of 3 s of audio: seconds of work between two looks
    started = time.monotonic()
    done = subprocess.run(args, env={**ENV, "WAVEGEN_SILENCE_SECONDS": "3"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert time.monotonic() - started > 3
    expected = write_streams(tmp_path / "ref", direct_pcm(model, 1, int(seconds * SR)), "wav")
    assert file_bytes(out, 1) == file_bytes(expected, 1)


CHECK_FAILS_AS_ANOTHER_IS_LOST = """
import os, sys
from wavegen.config import TrainConfig
from wavegen.distributed import leave_to_another_process, lost_contact, make_accelerator
from wavegen.errors import WavegenError
from wavegen.signals import StopSignals
from wavegen.trainstate import checked, training_lost

with StopSignals() as stop:  # as train holds them: the launcher's SIGTERM to the survivor
    accelerator = make_accelerator("no", timeout_seconds=30)
    if accelerator.process_index == 0:
        os._exit(9)  # killed before the agreement


    def check():
        raise WavegenError("cannot write run/best/model.safetensors: No space left on device")


    try:
        try:
            checked(accelerator, check)
        except Exception as err:
            if not lost_contact(err):
                raise
            raise training_lost(err, TrainConfig(), 2) from err
    except Exception as err:
        print(f"RAISED {type(err).__name__} left={leave_to_another_process(err)} {err}", file=sys.stderr, flush=True)
"""


@pytest.mark.slow
def test_a_failing_check_that_meets_a_lost_process_says_its_own_error_with_the_loss(tmp_path):
    """trainstate.checked: a process's own check failed (a full disk) while the agreement that shares it met a
    lost process: the one line said the loss alone (the disk only in __context__). Now it says both, itself."""
    said, stderr = raised_under_torchrun(tmp_path / "checked.py", CHECK_FAILS_AS_ANOTHER_IS_LOST, ENV)
    assert len(said) == 1, stderr[-3000:]
    assert said[0].startswith("RAISED ProcessLostError left=False cannot write run/best/model.safetensors: No space "
                              "left on device; and process 0 of this training (2 processes) ended "
                              "unexpectedly"), said
    assert said[0].endswith("the training had not begun its steps; rerun the same command"), said
    assert not [line for line in stderr.splitlines() if line.startswith("SIGTERM:")], stderr[-3000:]


def kill_once_steps_run(args, rank: int, started, **popen) -> str:
    """Start ``args`` (a launch), kill -9 its process ``rank`` once ``started(launch)`` says it has begun its steps,
    then wait for the launch to end → its stderr (what ``started`` read of it first, then the rest). A launch left
    running is ended whole."""
    launch = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    try:
        read = started(launch)
        launched_process(launch, rank).kill()
        _, stderr = launch.communicate(timeout=180)
    finally:
        if launch.poll() is None:
            kill_launch(launch)
    return read + stderr


def once_saved(run, step: int):
    """A ``started`` of kill_once_steps_run: once the run holds a checkpoint of ``step`` or later (any: step_N
    itself may be pruned between two looks, the training keeping only its newest)."""
    def saved() -> bool:
        names = (p.name.removeprefix("step_") for p in (run / "checkpoints").glob("step_*"))
        return any(name.isdigit() and int(name) >= step for name in names)

    def started(launch) -> str:
        wait_until(launch, saved, f"a checkpoint of step {step} or later saved in {run}")
        return ""

    return started


def once_said(words: str):
    """A ``started`` of kill_once_steps_run: once a line of the launch's stderr holds ``words``."""
    def started(launch) -> str:
        read = []
        for line in launch.stderr:
            read.append(line)
            if words in line:
                time.sleep(2)  # well into the steps
                return "".join(read)
        raise AssertionError(f"the launch ended before saying {words!r}: {''.join(read)[-3000:]}")

    return started


@pytest.mark.slow
@pytest.mark.parametrize("killed", [0, 2], ids=["the first of 3 killed", "the last of 3 killed"])
def test_a_process_killed_in_a_training_of_three_is_said_once_without_the_launchers_sigterm(tiny_corpus, tmp_path,
                                                                                            killed):
    """torchrun ends the survivors with SIGTERM: the first said "SIGTERM: finishing the step ..." before its
    line, and each survivor said the loss (two lines of three processes). Now one line, and no SIGTERM line."""
    run = tmp_path / "run"
    settings = ["model.dim=32", "model.emb_size=8", "train.batch_size=6", "train.seq_len=64", "train.tbptt_windows=4",
                "train.checkpoint_interval=2", "train.val_interval=100000", "train.sample_interval=-1"]
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "3", "-m", "wavegen",
            "-q", "train", "--data", str(tiny_corpus), "--model", "samplernn-tiny", "--run-dir", str(run),
            "--max-steps", "100000", *[a for s in settings for a in ("--set", s)]]
    stderr = kill_once_steps_run(args, killed, once_saved(run, 4), env=ENV)
    errors = error_lines(stderr, "train")
    assert len(errors) == 1, stderr[-4000:]
    assert f"process {killed} of this training (3 processes) ended unexpectedly" in errors[0], errors[0]
    assert errors[0].endswith("is kept: rerun the same command to resume from it"), errors[0]
    assert not [line for line in stderr.splitlines() if line.startswith("SIGTERM:")], stderr[-4000:]


@pytest.mark.slow
def test_a_process_killed_in_bench_train_under_a_launch_is_one_line(tmp_path):
    """bench --train of 2 processes (accelerate launch), one killed: the other said gloo's traceback, or nothing
    (ended by the launcher's SIGTERM). Now the one line train says."""
    from test_train_ddp import RECIPES, free_port

    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(RECIPES / "one_node.yaml"),
              "--num_processes", "2", "--main_process_port", str(free_port()), "-m", "wavegen", "bench",
              "--train", "--model", "samplernn-tiny", "--seq-len", "64", "--warmup-steps", "0", "--threads", "1",
              "--batch", "4", "--steps", "100000"]
    stderr = kill_once_steps_run(launch, 1, once_said("timed steps"), env=ENV)
    errors = error_lines(stderr, "bench")
    assert len(errors) == 1, stderr[-4000:]
    assert errors[0].startswith("wavegen bench: error: process 1 of this bench --train (2 processes) ended "
                                "unexpectedly"), errors[0]
    assert "[rank0]" not in stderr and "[rank1]" not in stderr, stderr[-4000:]  # no process's traceback
    assert not [line for line in stderr.splitlines() if line.startswith("SIGTERM:")], stderr[-4000:]


@pytest.mark.slow
def test_ctrl_c_of_bench_train_under_a_launch_stops_every_process_together(tmp_path):
    """bench --train holds a launch's Ctrl-C (so that the launcher's SIGTERM after a loss says the loss): the first
    stops every process at the same step (agreed at train.log_interval, as training agrees), said once."""
    from test_train_ddp import RECIPES, free_port

    args = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(RECIPES / "one_node.yaml"),
            "--num_processes", "2", "--main_process_port", str(free_port()), "-m", "wavegen", "bench", "--train",
            "--model", "samplernn-tiny", "--seq-len", "64", "--warmup-steps", "0", "--threads", "1", "--batch", "4",
            "--steps", "100000"]
    launch = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        read = once_said("timed steps")(launch)
        launch.send_signal(2)  # Ctrl-C: the launcher hands it on to every process
        _, stderr = launch.communicate(timeout=120)
    finally:
        if launch.poll() is None:
            kill_launch(launch)
    stderr = read + stderr
    lines = stderr.splitlines()
    assert lines.count("SIGINT: stopping every process at the next logged step (Ctrl-C again to stop at once)") == 1, \
        stderr[-3000:]
    assert "wavegen bench: interrupted" in lines, stderr[-3000:]
    assert not error_lines(stderr, "bench") and "[rank" not in stderr, stderr[-3000:]


# A process of a launch (WORLD_SIZE 2: wavegen.signals) waits for the launcher after an error it left to another
# process: argv[1] says which error, and whether it held its launcher's SIGTERM first
_WAITS_FOR_THE_LAUNCHER = """import os, signal, sys, time
os.environ["WORLD_SIZE"] = "2"
from wavegen.distributed import ProcessLostError, leave_to_another_process, wait_for_the_launcher
from wavegen.errors import WavegenError
from wavegen.signals import StopSignals

if sys.argv[1] != "a refusal, no SIGTERM held":
    with StopSignals("saving"):
        os.kill(os.getpid(), signal.SIGTERM)  # held: a launcher ending the others
        time.sleep(0.2)
if sys.argv[1] == "the loss":
    lost = ProcessLostError("process 0 of this render (2 processes) ended unexpectedly")
    lost.said_elsewhere = True  # another survivor claimed its saying
    leave_to_another_process(lost)  # module state it sets decides nothing of a later error
    wait_for_the_launcher(lost, seconds=30)
else:
    wait_for_the_launcher(WavegenError("--out: no such folder"), seconds=0.2 if "no SIGTERM" in sys.argv[1] else 30)
print("waited", flush=True)
"""


@pytest.mark.parametrize("case, ended", [("the loss", True), ("a refusal", True), ("a refusal, no SIGTERM held", False)])
def test_a_process_that_left_its_error_to_another_ends_by_its_launchers_sigterm_and_else_waits(case, ended):
    """wait_for_the_launcher ends a process that held its launcher's SIGTERM by that SIGTERM (it was asked to end, and
    the error is another's to say): a survivor that left its loss to another survivor, and one that left a refusal
    (it met it after the process that said it had exited: test_distributed_startup). A process that held none waits
    for the launcher, then goes on to say the error itself."""
    run = subprocess.run([sys.executable, "-c", _WAITS_FOR_THE_LAUNCHER, case], env=ENV, capture_output=True,
                         text=True, timeout=120)
    if ended:
        assert run.returncode == -15 and "waited" not in run.stdout, run.stderr[-3000:]
    else:
        assert run.returncode == 0 and run.stdout == "waited\n", run.stderr[-3000:]
