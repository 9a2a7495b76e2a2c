"""Training under a launcher (accelerate launch, torchrun): a refusal reads once, not once per
process; a refusal only one process meets reaches every process with its message; and
``accelerate launch --cpu --num_processes N``, which starts one process, says so. A launch that
overruns its test is ended whole (process_helpers.run_launch, kill_launch).

The processes are real (accelerate's and torch's launchers start them; they talk over gloo)."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from process_helpers import kill_launch, run_launch

from wavegen.distributed import ProcessLostError, asked_for_several_cpu_processes, leave_to_another_process
from wavegen.errors import WavegenError, every_process

SMALL = ["model.dim=32", "model.emb_size=8", "train.batch_size=2", "train.seq_len=64", "train.tbptt_windows=2",
         "train.val_seconds=0.2", "train.sample_interval=-1"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(launcher: list[str], *args: str, cwd=None, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return run_launch([sys.executable, "-m", *launcher, *args], timeout=timeout, env=env, cwd=cwd)


def accelerate_two(*flags: str) -> list[str]:
    return ["accelerate.commands.launch", *flags, "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]


def train_args(corpus, run, *overrides: str) -> list[str]:
    args = ["-m", "wavegen", "train", "--data", str(corpus), "--model", "samplernn-tiny", "--run", str(run),
            "--max-steps", "1", "--threads", "1"]
    return args + [a for s in SMALL + list(overrides) for a in ("--set", s)]


@pytest.mark.slow
def test_a_refusal_under_accelerate_launch_is_printed_once(tiny_corpus, tmp_path):
    # found before the processes talk (a bad --set, a missing corpus), and found by the processes
    # together (the run folder cannot be made): each said once, and the launch fails
    cases = [(train_args(tiny_corpus, tmp_path / "a", "train.no_such=1"), "train has no setting 'no_such'"),
             (train_args(tmp_path / "missing", tmp_path / "b"), f"{tmp_path / 'missing'} is not a prepared corpus"),
             (train_args(tiny_corpus, tmp_path / "file" / "run"), "cannot create the training run")]
    (tmp_path / "file").write_text("a file where the run's parent folder should be")
    # one launch at a time: side by side on 2 busy cores they were no faster, and a launch's second process, started
    # seconds after its first, met the launcher's SIGTERM while it started (the start-up race of
    # test_distributed_startup's refusal test, mended in wavegen.distributed.wait_for_the_launcher)
    for args, message in cases:
        done = launch(accelerate_two("--multi_gpu"), *args)
        assert done.returncode != 0
        assert done.stderr.count(message) == 1, done.stderr
        assert done.stderr.count("wavegen train: error:") == 1, done.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_a_refusal_of_one_process_reaches_every_process_with_its_message(tmp_path):
    # trainstate.checked with two real processes: only process 1 refuses; both raise its message,
    # and only the first prints it; without a refusal each keeps its own value
    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent(f"""
        import json
        from wavegen.distributed import end_accelerator, leave_to_another_process, make_accelerator
        from wavegen.errors import WavegenError
        from wavegen.trainstate import checked

        accelerator = make_accelerator("no", cpu=True)
        rank = accelerator.process_index

        def check():
            if rank == 1:
                raise WavegenError("corpus /x: only process 1 cannot read it")
            return "fine"

        out = {{"value": checked(accelerator, lambda: rank * 10)}}
        try:
            checked(accelerator, check)
        except WavegenError as err:
            out.update(raised=str(err), silent=leave_to_another_process(err))
        with open({str(tmp_path)!r} + f"/rank{{rank}}.json", "w") as f:
            json.dump(out, f)
        end_accelerator(accelerator)
        """))
    done = launch(["torch.distributed.run", "--standalone", "--nproc_per_node", "2"], str(script))
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert first == {"value": 0, "raised": "corpus /x: only process 1 cannot read it", "silent": False}
    assert second == {"value": 10, "raised": "corpus /x: only process 1 cannot read it", "silent": True}


@pytest.mark.slow
def test_the_group_timeout_reaches_the_process_group(tmp_path):
    """make_accelerator's timeout is the gloo group's, 600 s included: accelerate passes on only a timeout that
    differs from its own default (600 s), so that one was dropped and gloo waited its 30 minutes."""
    script = tmp_path / "timeout.py"
    script.write_text(textwrap.dedent(f"""
        import torch, torch.distributed as dist
        from wavegen.distributed import end_accelerator, make_accelerator

        accelerator = make_accelerator("no", cpu=True, timeout_seconds=600)
        timeout = dist.group.WORLD._get_backend(torch.device("cpu")).options._timeout
        with open({str(tmp_path)!r} + f"/rank{{accelerator.process_index}}", "w") as f:
            f.write(str(timeout.total_seconds()))
        end_accelerator(accelerator)
        """))
    done = launch(["torch.distributed.run", "--standalone", "--nproc_per_node", "2"], str(script))
    assert done.returncode == 0, done.stderr[-3000:]
    assert [round(float((tmp_path / f"rank{r}").read_text())) for r in (0, 1)] == [600, 600]


@pytest.mark.slow
def test_accelerate_launch_cpu_with_several_processes_says_it_started_one(tiny_corpus, tmp_path):
    # accelerate's --cpu launcher starts one process whatever --num_processes says: the run trains
    # alone (correctly: the batch is global), and says how to get N processes
    done = launch(accelerate_two("--cpu"), *train_args(tiny_corpus, tmp_path / "run"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("accelerate launch --cpu started this one process") == 1, done.stderr
    assert "--multi_gpu --num_processes N" in done.stderr
    assert "1 process on cpu" in done.stderr
    assert json.loads((tmp_path / "run" / "checkpoints" / "step_1" / "trainer_state.json").read_text())[
        "processes"] == 1


def test_which_process_prints_an_error(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_RANK",
                 "MPI_LOCALRANKID", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    alone, agreed = WavegenError("bad --data"), every_process(WavegenError("bad --data"))
    assert not leave_to_another_process(alone) and not leave_to_another_process(agreed)  # not launched
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert leave_to_another_process(alone) and leave_to_another_process(agreed)
    # the first process of a second machine: says what it found alone (its machine may differ), not what all agreed
    monkeypatch.setenv("RANK", "4")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert not leave_to_another_process(alone) and leave_to_another_process(agreed)
    monkeypatch.setenv("RANK", "0")
    assert not leave_to_another_process(agreed)
    # an MPI launch (accelerate's --cpu path under mpirun) names its ranks otherwise
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("PMI_RANK", "3")
    monkeypatch.setenv("MPI_LOCALRANKID", "1")
    assert leave_to_another_process(alone)
    # another process ended: this one says so itself (the one that would print it may be the one gone)
    assert not leave_to_another_process(ProcessLostError("another process of this training ended unexpectedly"))


def test_several_cpu_processes_asked_of_accelerate_launch_is_recognised(monkeypatch):
    for name in ("ACCELERATE_USE_CPU", "MASTER_ADDR", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not asked_for_several_cpu_processes()  # started alone
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    assert not asked_for_several_cpu_processes()  # accelerate launch --cpu (one process asked)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert asked_for_several_cpu_processes()  # --cpu --num_processes 2: the address set, one process started
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not asked_for_several_cpu_processes()  # really several (torchrun, --multi_gpu)
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")
    assert not asked_for_several_cpu_processes()  # a GPU launch


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, ended but not yet reaped by its parent, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_launch_that_overruns_is_ended_with_its_processes(tmp_path):
    """Both processes of a torchrun launch hang (here: sleep); ended, the launcher and both are gone within
    seconds. (Killed alone, the launcher left them running, and the test waited on their pipes.)"""
    script = tmp_path / "hang.py"
    script.write_text("import os, time\n"
                      f"path = os.path.join({str(tmp_path)!r}, 'pid' + os.environ['RANK'])\n"
                      "open(path + '.tmp', 'w').write(str(os.getpid()))\n"
                      "os.replace(path + '.tmp', path)\n"
                      "time.sleep(600)\n")
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    started = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    pids = []
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"pid{rank}").is_file() for rank in (0, 1)) and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = [int((tmp_path / f"pid{rank}").read_text()) for rank in (0, 1)]  # both hang now
        start = time.perf_counter()
        kill_launch(started)
        took, left = time.perf_counter() - start, [pid for pid in pids if alive(pid)]
    finally:
        for pid in pids:  # whatever happened, no process of this test outlives it
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        if started.poll() is None:
            started.kill()
            started.wait()
    assert took < 30 and started.returncode is not None
    assert left == []
