"""A Ctrl-C that reached one process of a torchrun render (recorded in the store), that process then ended (a second
Ctrl-C), while another was far from its next chunk: the survivor's held SIGTERM's time up meets the recorded stop.
It ends as a chunk that meets it does: a snapshot saved where it was, "process 1 was stopped", interrupted."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from process_helpers import ended_after, launched_process, wait_until
from render_helpers import ENV, make_model


def second_stopped_at_its_chunk(launch, out: Path) -> None:
    """Wait until process 1, Ctrl-C'd, has met the stop at its next chunk: its snapshot saved (its first: the render's
    snapshots are 30 s apart), its stop recorded right after; then a second for it to wait for process 0 at the
    agreement."""
    wait_until(launch, (out / ".state" / "rank1.npz").exists, "process 1's snapshot of its stop")
    time.sleep(1.0)


# The CLI, process 0 pausing PAUSE_SECONDS (sleeps of 10 ms: Python code that never looks for news) inside its fourth
# draw of uniforms (inside a window, away from a chunk's look), after writing PAUSE_MARK
_CLI_PAUSED = """import os, pathlib, sys, time
from wavegen.render import shard
real, calls = shard.uniforms, []

def paused(*args, **kwargs):
    calls.append(1)
    if os.environ["RANK"] == "0" and len(calls) == 4:
        pathlib.Path(os.environ["PAUSE_MARK"]).write_text("paused")
        end = time.monotonic() + float(os.environ["PAUSE_SECONDS"])
        while time.monotonic() < end:
            time.sleep(0.01)
    return real(*args, **kwargs)

shard.uniforms = paused
from wavegen.cli import run
raise SystemExit(run())
"""


@pytest.mark.slow
def test_a_recorded_stop_met_as_the_held_sigterms_time_is_up_saves_and_says_it_as_a_chunk_does(tmp_path):
    """Process 0 paused inside a window; process 1 Ctrl-C'd (its stop recorded), then Ctrl-C'd again (it ends):
    torchrun's SIGTERM to process 0, held, found the recorded stop as its time was up and raised a bare
    KeyboardInterrupt: no snapshot of process 0 saved, no "process 1 was stopped". Now as a chunk meeting it."""
    model = make_model(tmp_path / "tiny")
    script, out, mark = tmp_path / "cli_paused.py", tmp_path / "r", tmp_path / "paused"
    script.write_text(_CLI_PAUSED)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               "render", str(model), "--seconds", "60", "--streams", "2", "--out", str(out), "--backend", "torch",
               "--no-guard", "--no-spectrogram", "--block-seconds", "0.05"]
    launch = subprocess.Popen(command, env={**ENV, "PAUSE_MARK": str(mark), "PAUSE_SECONDS": "25"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop_twice():
        second = launched_process(launch, 1)
        wait_until(launch, mark.exists, "process 0 paused")
        second.send_signal(signal.SIGINT)
        second_stopped_at_its_chunk(launch, out)
        second.send_signal(signal.SIGINT)

    stderr, _ = ended_after(launch, stop_twice, timeout=60)
    said = [line for line in stderr.splitlines() if line.startswith("process 1 was stopped")]
    assert len(said) == 1, stderr[-3000:]
    assert "snapshot saved. Rerun the same command to resume" in said[0], said
    assert (out / ".state" / "rank0.npz").is_file(), stderr[-3000:]  # where process 0 was, saved
    assert "wavegen render: interrupted" in stderr, stderr[-3000:]


# The CLI, process 0 pausing FLAC_SECONDS in its FLAC encoding (after writing PAUSE_MARK), process 1 in its first draw
# of uniforms until the file GO exists (sleeps of 10 ms: Python code that never looks for news)
_CLI_PAUSED_IN_FLAC = """import os, pathlib, sys, time
from wavegen.render import shard
real_flac, real_uniforms, calls = shard.encode_flac, shard.uniforms, []

def encoding(*args, **kwargs):
    if os.environ["RANK"] == "0":
        pathlib.Path(os.environ["PAUSE_MARK"]).write_text("paused")
        end = time.monotonic() + float(os.environ["FLAC_SECONDS"])
        while time.monotonic() < end:
            time.sleep(0.01)
    return real_flac(*args, **kwargs)

def drawing(*args, **kwargs):
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == 1:
        while not pathlib.Path(os.environ["GO"]).exists():
            time.sleep(0.01)
    return real_uniforms(*args, **kwargs)

shard.encode_flac, shard.uniforms = encoding, drawing
from wavegen.cli import run
raise SystemExit(run())
"""


@pytest.mark.slow
def test_a_recorded_stop_met_as_the_held_sigterms_time_is_up_in_the_flac_encoding_names_the_stopped_process(tmp_path):
    """Process 0 encoding its FLAC files (all its audio in its snapshot); process 1 Ctrl-C'd mid-render (its stop
    recorded), then Ctrl-C'd again (it ends): torchrun's SIGTERM to process 0, held, met the recorded stop as its time
    was up, and the render ended "interrupted" without saying which process was stopped. Now it says it."""
    model = make_model(tmp_path / "tiny")
    script, out, mark, go = tmp_path / "cli_paused.py", tmp_path / "r", tmp_path / "paused", tmp_path / "go"
    script.write_text(_CLI_PAUSED_IN_FLAC)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               "render", str(model), "--seconds", "1", "--streams", "2", "--out", str(out), "--format", "flac",
               "--backend", "torch", "--no-guard", "--no-spectrogram", "--block-seconds", "0.05"]
    launch = subprocess.Popen(command, env={**ENV, "PAUSE_MARK": str(mark), "FLAC_SECONDS": "40", "GO": str(go)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop_twice():
        second = launched_process(launch, 1)
        wait_until(launch, mark.exists, "process 0 encoding")
        second.send_signal(signal.SIGINT)
        time.sleep(0.5)
        go.write_text("go")
        second_stopped_at_its_chunk(launch, out)
        second.send_signal(signal.SIGINT)

    stderr, took = ended_after(launch, stop_twice, timeout=60)
    said = [line for line in stderr.splitlines() if line.startswith("process 1 was stopped")]
    assert len(said) == 1, stderr[-3000:]
    assert "Rerun the same command to resume" in said[0], said
    assert "wavegen render: interrupted" in stderr, stderr[-3000:]
    assert took < 20, f"{took:.1f} s: {stderr[-3000:]}"
