"""A process of a torchrun render killed (kill -9) while the render starts: the survivor still importing torch (no
handler of its own yet), or waiting for it before gloo's group exists. It says, in one line, that the process ended,
naming it, within seconds, and the render's folder is as it was."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from process_helpers import killed_at_start
from render_helpers import ENV, make_model

# The CLI, process 0 writing STARTED once wavegen's CLI is imported and torch not yet (the render's import of it)
_CLI_MARKED = """import os, pathlib, sys
from wavegen.cli import run
assert "torch" not in sys.modules
if os.environ["RANK"] == "0":
    pathlib.Path(os.environ["STARTED"]).write_text("started")
raise SystemExit(run())
"""


@pytest.mark.slow
def test_a_process_killed_while_the_render_starts_is_named_by_the_survivor(tmp_path):
    """Process 1 killed a second into process 0's start (torch importing, seconds; then the group's connect): torchrun's
    SIGTERM ended process 0 at once, without a word (its handlers were not set yet), or, where it waited in gloo's
    connect (deaf to signals), said "SIGTERM: stopping once the model and engine are ready" and was killed 30 s
    later. Now the SIGTERM is held from the command's start, and the processes meet in the store before the group:
    one line naming process 1, within seconds, nothing written."""
    model = make_model(tmp_path / "tiny")
    script, out, started = tmp_path / "cli_marked.py", tmp_path / "r", tmp_path / "started"
    script.write_text(_CLI_MARKED)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = ["-q", "render", str(model), "--seconds", "1", "--streams", "2", "--out", str(out), "--backend", "torch",
               "--no-guard", "--no-spectrogram"]
    launch = subprocess.Popen([*launcher, str(script), *command], env={**ENV, "STARTED": str(started)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed_at_start(launch, started, "render", "process 1 of this render (2 processes) ended unexpectedly (killed, "
                    "or out of memory? the launcher's report says why)", "nothing was written yet (not every process "
                    "had come): rerun the same command", within=25)
    assert not out.exists()  # nothing written: a rerun renders it whole


GROUP_STORE = """
import sys
import torch.distributed as dist
from torch.distributed.distributed_c10d import _get_default_store
from wavegen.render.processes import Processes

processes = Processes()
inner, raw = None, _get_default_store()
while isinstance(raw, dist.PrefixStore):  # down to the launcher's store itself
    inner, raw = raw, raw.underlying_store
inner.set(f"wavegen/probe/{processes.rank}", "1")  # by the store wrapped around it
print(f"RAISED {raw.check([f'default_pg/wavegen/probe/{processes.rank}'])}", file=sys.stderr, flush=True)
processes.close()
"""


def test_the_group_a_render_makes_has_the_store_init_process_group_gives_it(tmp_path):
    """Render's processes meet in the store before making the group, and give it that store: init_process_group
    takes a given store as it is (the keys of render, of gloo, of wavegen.distributed outside "default_pg/", beside
    the launcher's own), where it wraps its own rendezvous's in PrefixStore("default_pg"). Now the same store."""
    from process_helpers import raised_under_torchrun

    _, stderr = raised_under_torchrun(tmp_path / "store.py", GROUP_STORE, ENV)
    assert stderr.count("RAISED True") == 2 and "RAISED False" not in stderr, stderr[-3000:]


# A render's start under a launcher without an agent's store (MASTER_ADDR and the ranks set by hand, as MPI-style
# launchers do): process 0 holds the store; process 1 writes CAME once it waits for the others in the store
_STARTS = """import os, pathlib, sys
from wavegen.render import processes

real = processes.Processes._all_came

def came(self, store):
    if self.rank == 1:
        pathlib.Path(os.environ["CAME"]).write_text("came")
    return real(self, store)

processes.Processes._all_came = came
try:
    processes.Processes()
except BaseException as err:
    print(f"RAISED {type(err).__name__}: {err}", file=sys.stderr, flush=True)
"""


def test_a_store_gone_before_the_group_is_said_in_one_line(tmp_path):
    """Process 0, which held the store (no launcher's agent), killed while process 1 waited there for process 2:
    process 1 ended with torch's DistNetworkError "Connection reset by peer" and its C++ trace. Now one line."""
    import socket

    from process_helpers import kill_launch

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script, came = tmp_path / "starts.py", tmp_path / "came"
    script.write_text(_STARTS)
    env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "3", "CAME": str(came)}
    started = [subprocess.Popen([sys.executable, str(script)], env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    try:
        deadline = time.monotonic() + 120
        while not came.exists() and time.monotonic() < deadline and started[1].poll() is None:
            time.sleep(0.1)
        assert came.exists(), started[1].communicate(timeout=10)[1][-3000:]
        time.sleep(0.5)
        started[0].kill()
        _, stderr = started[1].communicate(timeout=60)
    finally:
        for process in started:
            if process.poll() is None:
                kill_launch(process)
    said = [line for line in stderr.splitlines() if line.startswith("RAISED")]
    assert said and said[0].startswith("RAISED ProcessLostError: another process of this render (3 processes) lost "
                                       "its connection (ended, or its machine is unreachable?"), stderr[-3000:]
    assert said[0].endswith("nothing was written yet (not every process had come): rerun the same command"), said
