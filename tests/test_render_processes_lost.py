"""A process of a torchrun render lost (kill -9) where the survivors are not at a chunk or a window: finishing their
files (FLAC), between a process's arrival at a collective and gloo's exchange, or beside another process's recorded
stop. Each survivor stops promptly with one line naming the lost process, and a rerun resumes the render."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from process_helpers import ended_after_killing, error_lines, raised_under_torchrun, run_launch
from render_helpers import ENV, SR, direct_pcm, file_bytes, make_model, wait_for_file, write_streams

# The CLI, with ``PAUSED`` (module:name of wavegen) taking PAUSE_SECONDS in process 0 after writing PAUSE_MARK: work
# that runs Python code all along (sleeps of 10 ms) but never looks for a lost process, as the FLAC encoding at the end
_CLI_PAUSED = """import importlib, os, pathlib, sys, time
module, name = os.environ["PAUSED"].split(":")
module = importlib.import_module(module)
real = getattr(module, name)

def paused(*args, **kwargs):
    if os.environ["RANK"] == "0":
        pathlib.Path(os.environ["PAUSE_MARK"]).write_text("paused")
        end = time.monotonic() + float(os.environ["PAUSE_SECONDS"])
        while time.monotonic() < end:
            time.sleep(0.01)
    return real(*args, **kwargs)

setattr(module, name, paused)
from wavegen.cli import run
raise SystemExit(run())
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.mark.slow
def test_a_process_killed_while_another_encodes_its_flac_is_said_at_once_and_the_render_resumes(model, tmp_path):
    """Process 1 killed while process 0 encoded its FLAC files at the end (60 s here): torchrun's SIGTERM to process
    0, held, said "SIGTERM: the last window is made: finishing the render ... instead of stopping" 5 s later, and
    torchrun killed it 30 s after its SIGTERM, no line of the loss said (a shorter encoding: the loss met at the
    agreement, unnamed: "another process"). Now the loss is raised once the SIGTERM's time is up: one line naming
    process 1, within seconds; a rerun finishes the render, to the bytes of one never stopped."""
    script, out = tmp_path / "cli_paused.py", tmp_path / "r"
    script.write_text(_CLI_PAUSED)
    env = {**ENV, "PAUSED": "wavegen.render.shard:encode_flac", "PAUSE_MARK": str(tmp_path / "paused"),
           "PAUSE_SECONDS": "60"}
    command = ["-q", "render", str(model), "--seconds", "1", "--streams", "2", "--out", str(out), "--format", "flac",
               "--backend", "torch", "--no-guard", "--no-spectrogram"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    launch = subprocess.Popen([*launcher, str(script), *command], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    stderr, took = ended_after_killing(launch, 1,
                                       lambda: (wait_for_file(launch, tmp_path / "paused"), time.sleep(0.5)))
    errors = error_lines(stderr, "render")
    assert len(errors) == 1, stderr[-3000:]
    assert errors[0].startswith("wavegen render: error: process 1 of this render (2 processes) ended unexpectedly"), \
        errors[0]
    assert errors[0].endswith("rerun the same command to resume"), errors[0]
    assert not [line for line in stderr.splitlines() if line.startswith("SIGTERM")], stderr[-3000:]
    assert took < 20, f"{took:.1f} s: {stderr[-3000:]}"  # LAUNCH_TERM_SECONDS, not torchrun's 30 s
    resumed = run_launch([*launcher, "-m", "wavegen", *command], timeout=240, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = write_streams(tmp_path / "ref", direct_pcm(model, 2, SR), "flac")
    assert file_bytes(out, 2, "flac") == file_bytes(expected, 2, "flac")


def _second_gather(rank_1: str, then: str = "") -> str:
    """A script for raised_under_torchrun: both processes gather once; at the next gather process 1 has come to the
    collective (the store's wait passes) and does ``rank_1`` (indented lines); process 0, after ``then``, gathers
    and prints what it raised. SIGTERM ignored, as a render's StopSignals hold it: torchrun's SIGTERM to the
    survivor."""
    return f"""
import os, signal, sys, time
import torch.distributed as dist
from wavegen.render.processes import Processes

signal.signal(signal.SIGTERM, signal.SIG_IGN)
processes = Processes()
processes.gather(None)
if processes.rank == 1:
    processes._all_here()
{rank_1}
{then}
try:
    processes.gather(None)
except Exception as err:
    print(f"RAISED {{type(err).__name__}} {{err}}", file=sys.stderr, flush=True)
os._exit(0)
"""


# process 1 killed after the store's wait, before gloo's exchange
GLOO_AFTER_THE_STORE = _second_gather("    os._exit(9)", then="time.sleep(1)")


@pytest.mark.slow
def test_a_gloo_error_after_the_store_wait_names_the_lost_process(tmp_path):
    """A process killed after it came to a collective, before gloo's exchange: the survivor's gloo error said
    "another process of this render" (render recorded its pids under keys of its own, which process_lost does not
    read). Now render records them as training does (record_this_process): process 1, named."""
    said, stderr = raised_under_torchrun(tmp_path / "gloo.py", GLOO_AFTER_THE_STORE, ENV)
    assert len(said) == 1, stderr[-3000:]
    assert said[0].startswith("RAISED ProcessLostError process 1 of this render (2 processes) ended unexpectedly "
                              "(killed, or out of memory? the launcher's report says why; Connection closed by peer"), \
        said


STOP_BESIDE_A_KILL = """
import os, signal, sys, time
from wavegen.render.processes import Processes

signal.signal(signal.SIGTERM, signal.SIG_IGN)
processes = Processes()
processes.gather(None)
if processes.rank == 2:
    os._exit(9)  # killed -9
if processes.rank == 1:  # its launcher's SIGTERM (for process 2) taken for a stop: recorded, and it exits 130
    processes.tell_failure(KeyboardInterrupt())
    os._exit(130)
time.sleep(2)
err = processes.failure_elsewhere()
print(f"RAISED {type(err).__name__} {err}", file=sys.stderr, flush=True)
os._exit(0)
"""


@pytest.mark.slow
def test_a_stop_recorded_beside_a_killed_process_is_said_as_the_loss(tmp_path):
    """Process 2 killed -9, process 1 recorded a stop: process 0 read the stop first, and said "process 1 was stopped
    (SIGINT/SIGTERM)", exit 130, the crash unsaid. Now a process seen ended, other than the one that recorded a
    stop, is said instead: process 2, named."""
    script = tmp_path / "stop.py"
    script.write_text(STOP_BESIDE_A_KILL)
    run = run_launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "3",
                      str(script)], timeout=180, env=ENV)
    said = [line for line in run.stderr.splitlines() if line.startswith("RAISED")]
    assert said and said[0].startswith("RAISED ProcessLostError process 2 of this render (3 processes) ended "
                                       "unexpectedly"), run.stderr[-3000:]


RECORDED_THEN_ENDED = """
import os, sys, time
from wavegen.render.loop import news_elsewhere
from wavegen.render.processes import Processes, _store
from wavegen.render.settings import RenderWriteError
from wavegen.signals import StopSignals

processes = Processes()
processes.gather(None)
if processes.rank == 1:  # its own error recorded for the others, then it ends: torchrun's SIGTERM to process 0
    _store().get("ready")
    processes.tell_failure(RenderWriteError("r/stream_001.wav: no space left on the disk"))
    os._exit(1)
try:
    with StopSignals("finishing", lambda: news_elsewhere(processes)):
        _store().set("ready", "1")
        end = time.monotonic() + 60
        while time.monotonic() < end:  # far from any look (a FLAC encoding), behind an except Exception (a store's)
            try:
                time.sleep(0.01)
            except Exception:
                pass
except BaseException as err:
    print(f"RAISED {type(err).__name__} {err}", file=sys.stderr, flush=True)
os._exit(0)
"""


@pytest.mark.slow
def test_a_process_that_recorded_its_error_then_ended_is_said_with_its_error_as_the_held_sigterms_time_is_up(
        tmp_path):
    """Process 1 recorded its own error (a full disk) and ended while process 0 was far from a chunk or window: the
    held SIGTERM's time up asked lost_elsewhere alone and said "process 1 ... ended unexpectedly (killed, or out of
    memory?)", where each chunk and window says process 1's error (failure_elsewhere). Now the same judgement, the
    error passing the except Exception it meets."""
    said, stderr = raised_under_torchrun(tmp_path / "recorded.py", RECORDED_THEN_ENDED, ENV)
    assert len(said) == 1, stderr[-3000:]
    assert said[0].startswith("RAISED RenderWriteError process 1 of 2 failed, and the others stopped with it"), said
    assert "no space left on the disk" in said[0], said


# process 1 closes its connections and runs on
GLOO_CLOSED_BY_A_LIVE_PROCESS = _second_gather("    dist.destroy_process_group()\n    time.sleep(5)\n    os._exit(0)")


@pytest.mark.slow
def test_a_connection_closed_by_a_process_still_running_is_not_said_ended(tmp_path):
    """Process 1 closed its connections (its group destroyed) and ran on: gloo's "Connection closed by peer" made
    process 0 say "another process ... ended unexpectedly", of a process it saw running. Now it says what it knows:
    the process lost its connection (ended, or its machine unreachable)."""
    said, stderr = raised_under_torchrun(tmp_path / "closed.py", GLOO_CLOSED_BY_A_LIVE_PROCESS, ENV)
    assert len(said) == 1, stderr[-3000:]
    assert said[0].startswith("RAISED ProcessLostError another process of this render (2 processes) lost its "
                              "connection (ended, or its machine is unreachable? the launcher's report names it; "), \
        said
    assert "ended unexpectedly" not in said[0], said
