"""Launched processes that report, as they exit, which threads they leave behind.

A process whose gloo process group outlives it ends gloo's worker threads during interpreter
exit, racing it (now and then a SIGABRT, "terminate called without an active exception"):
every multi-process command must have ended its group, and its threads, before it exits
(wavegen.distributed says how, and why ending it elsewhere can deadlock instead).
"""

from __future__ import annotations

from pathlib import Path

# the CLI, then the names of the threads still alive in this process, into THREADS_DIR/RANK
_CLI_THEN_THREADS = """import os, sys
from wavegen.cli import main
code = main(sys.argv[1:])
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
open(os.path.join(os.environ["THREADS_DIR"], os.environ["RANK"]), "w").write(" ".join(sorted(names)))
raise SystemExit(code)
"""


def cli_recording_threads(folder: Path) -> tuple[list[str], dict]:
    """→ (what replaces ``-m wavegen`` in a launch, the environment to add): each process runs the
    CLI, then writes the names of its remaining threads into ``folder/RANK``."""
    script = folder / "cli_then_threads.py"
    script.write_text(_CLI_THEN_THREADS)
    return [str(script)], {"THREADS_DIR": str(folder)}


def gloo_threads_left(folder: Path, processes: int) -> dict[int, list[str]]:
    """Every process's gloo threads still alive after its command returned (asserts each reported)."""
    left = {}
    for rank in range(processes):
        names = (folder / str(rank)).read_text().split()
        assert names, f"process {rank} reported no threads at all"
        left[rank] = [name for name in names if "gloo" in name]
    return left
