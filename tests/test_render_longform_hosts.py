"""recipes/longform/run.sh's removal of the leftovers of a recipe killed with -9 (.done/began.PID,
.done/time.txt.new.PID) judges a PID on the host whose recipe wrote it (began.PID names it): a second recipe
into a shared OUT on another host, refused by the folder's lock, left the live recipe's files alone before the
removal came, and must again (the live one then failed at its `mv` after a complete render)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from test_render_longform_recipe import has_gnu_time, longform, make_repo

# a stand-in: refuses as a busy folder where $REFUSE is set; else waits while $HOLD exists, then writes a report
HOLDING_WAVEGEN = r"""#!/usr/bin/env bash
while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
if [ -n "${REFUSE:-}" ]; then echo "wavegen render: error: $out is busy" >&2; exit 2; fi
while [ -n "${HOLD:-}" ] && [ -e "$HOLD" ]; do sleep 0.05; done
printf '{"status": "complete", "max_rss_mb": 1}' > "$out/render_report.json"
"""


def dead_pids(n: int) -> list[int]:
    """``n`` PIDs no process of this host has now."""
    pids, pid = [], int(Path("/proc/sys/kernel/pid_max").read_text()) - 1
    while len(pids) < n:
        if not Path(f"/proc/{pid}").exists():
            pids.append(pid)
        pid -= 1
    return pids


def test_a_dead_pid_of_another_host_is_not_judged_here(tmp_path):
    """began.PID naming another host: its recipe may be rendering there now (its PID is nothing here); its files
    stay. This host's dead recipe's, and an older recipe's (an empty began.PID), are removed."""
    if not has_gnu_time():
        pytest.skip("no GNU time here: the recipe keeps no timing file")
    repo = make_repo(tmp_path, HOLDING_WAVEGEN)
    done = repo.parent / "out" / ".done"
    done.mkdir(parents=True)
    pid, mine, older = dead_pids(3)
    other = [done / f"began.{pid}", done / f"time.txt.new.{pid}"]
    other[0].write_text("a-host-that-is-not-this-one\n")
    other[1].touch()
    (done / f"began.{mine}").write_text(socket.gethostname() + "\n")
    (done / f"time.txt.new.{mine}").touch()
    (done / f"began.{older}").touch()
    (done / f"time.txt.new.{older}").touch()
    run = longform(repo, "m", "--dir", repo.parent / "out", "--stop-stage", 1)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in done.iterdir()) == sorted(["time.txt"] + [p.name for p in other])


def test_a_refused_recipe_on_another_host_leaves_the_rendering_ones_files(tmp_path):
    """The real race: a recipe renders (this host); another, in a PID and UTS namespace of its own (another host
    sharing OUT), is refused by the busy folder; the first then finishes and keeps its timing (exit 0)."""
    if not has_gnu_time():
        pytest.skip("no GNU time here: the recipe keeps no timing file")
    if subprocess.run(["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "--uts", "true"],
                      capture_output=True).returncode != 0:
        pytest.skip("no unprivileged PID/UTS namespaces here to stand in for another host")
    repo = make_repo(tmp_path, HOLDING_WAVEGEN)
    out, hold = repo.parent / "out", tmp_path / "hold"
    hold.touch()
    env = {**os.environ, "PATH": f"{repo.parent / 'bin'}{os.pathsep}{os.environ['PATH']}", "HOLD": str(hold)}
    recipe = ["bash", str(repo / "recipes" / "longform" / "run.sh"), "m", "--dir", "out", "--stop-stage", "1"]
    first = subprocess.Popen(recipe, cwd=repo.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / ".done" / f"time.txt.new.{first.pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (out / ".done" / f"began.{first.pid}").exists()
        other_host = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "--uts", "bash",
                      "-c", 'hostname another-host && exec "$@"', "-", *recipe]
        refused = subprocess.run(other_host, cwd=repo.parent, env={**env, "REFUSE": "1"}, capture_output=True,
                                 text=True, timeout=120)
        assert refused.returncode == 2, refused.stderr
        assert sorted(p.name for p in (out / ".done").iterdir()) == [f"began.{first.pid}",
                                                                      f"time.txt.new.{first.pid}"]
    finally:
        hold.unlink()
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert sorted(p.name for p in (out / ".done").iterdir()) == ["time.txt"]
    assert "Command being timed" in (out / ".done" / "time.txt").read_text()
