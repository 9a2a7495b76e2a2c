"""A rerun of a complete render under torchrun: it is said complete once (by the first process) and its files
listed once, and every process exits cleanly (each said it and listed every file, twice in all)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from render_helpers import ENV, make_model


def torchrun(model, out, *extra) -> list[str]:
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "wavegen", "render", model, "--seconds", 0.25, "--streams", 3, "--out", out,
            "--backend", "torch", "--no-guard", "--no-spectrogram", *extra]
    return list(map(str, args))


@pytest.mark.slow
def test_a_complete_render_rerun_under_torchrun_is_said_once(tmp_path):
    model = make_model(tmp_path / "tiny")
    out = tmp_path / "out"
    first = subprocess.run(torchrun(model, out, "-q"), env=ENV, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    report = (out / "render_report.json").read_bytes()
    again = subprocess.run(torchrun(model, out), env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    said = [line for line in again.stderr.splitlines() if "this render is already complete" in line]
    assert said == [f"{out}: this render is already complete (3 stream(s) x 0.25 s); nothing to do"], again.stderr
    assert again.stdout.split() == [str(out / f"stream_{i:03d}.wav") for i in range(3)]
    assert (out / "render_report.json").read_bytes() == report  # nothing rendered nor written
