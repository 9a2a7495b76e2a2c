"""recipes/stream/run.sh, stage 4 (serve), stopped as a supervisor or ``kill`` stops it: a SIGTERM sent to the
recipe's process. The server ran under the script's pipeline then, and bash, ended by the signal, left it playing,
its port and archive held (a rerun refused: a second server on the same --archive). A real server on a tiny model.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from test_serve import ENV, START_TIMEOUT, make_model

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "stream" / "run.sh"


def _gone(pid: int) -> bool:
    """Whether no process has ``pid`` (or only a zombie of one)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.slow
def test_a_sigterm_to_the_stream_recipe_stops_its_server_with_the_archive_snapshot(tmp_path):
    model = make_model(tmp_path / "tiny")
    servers: list[str] = []
    recipe = subprocess.Popen(["bash", str(RECIPE), "--model", str(model), "--stage", "4", "--port", "0",
                               "--archive", "archive", "--", "--allow-slow", "--no-guard"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        lines: list[str] = []

        def read() -> None:  # until the server listens, or the recipe ended ("")
            while not any(line.startswith("listening: ") for line in lines) and (not lines or lines[-1]):
                lines.append(recipe.stdout.readline())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        assert any(line.startswith("listening: ") for line in lines), lines
        # the server: wavegen serve on this test's model (the recipe's own process, or a child of it)
        servers += subprocess.run(["pgrep", "-f", f"serve {model} "], capture_output=True, text=True).stdout.split()
        assert len(servers) == 1, servers
        recipe.send_signal(signal.SIGTERM)
        assert recipe.wait(60) == 130  # the server's own stop, as Ctrl-C gives
        deadline = time.monotonic() + 30
        while not all(_gone(int(pid)) for pid in servers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(_gone(int(pid)) for pid in servers), f"the server goes on playing: {servers}"
        assert "snapshot saved" in recipe.stderr.read()
        assert (tmp_path / "archive" / ".state" / "snapshot.npz").is_file()
    finally:
        for pid in [recipe.pid] * (recipe.poll() is None) + [int(p) for p in servers if not _gone(int(p))]:
            os.kill(pid, signal.SIGKILL)  # none left playing after the test, passed or failed
        recipe.wait()
