"""wavegen serve: a label blend whose weights are too large to add up in float32 is refused, not played.

"bells:1e308,rain:1e308" passed every check of each weight, but their float32 sum is inf, and inf / inf
made a blend of NaN: POST /label answered 200 and the stream played silence from then on, and the archive's
next snapshot recorded a label its engine state could not match, so a restart refused the archive as damaged.
Real servers (the CLI in subprocesses), real HTTP.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import save_tiny_model
from test_serve import ENV, SR, START_TIMEOUT, Server, serve_here
from test_serve_label import LABELS, TOKEN, archived, post


@pytest.fixture(scope="module")
def conditioned(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("label_weights") / "cond", sample_rate=SR, dim=32, emb_size=8,
                           labels=LABELS)


TOO_LARGE = ["bells:1e308,rain:1e308", "bells:1e39", "bells:3e38,rain:3e38"]


@pytest.mark.slow
def test_a_blend_too_large_to_add_up_is_refused_and_the_stream_plays_on(conditioned, tmp_path):
    archive = tmp_path / "archive"
    server = Server(conditioned, "--label", "rain", "--no-guard", "--guard-seconds", "0.5", "--buffer-seconds", "1",
                    "--snapshot-seconds", "1", "--archive", str(archive), "--control-token", TOKEN)
    try:
        for label in TOO_LARGE:
            code, answer = post(server, label)
            assert code == 400 and "weights too large" in answer["error"], (label, code, answer)
        assert server.status()["label"] == "rain" and server.status()["label_switches"] == 0
        server.wait_for(lambda s: s["archive"]["snapshot_seconds"] >= 2.0)
    finally:
        assert server.stop() == 130, "".join(server.stderr)
    assert not any("RuntimeWarning" in line for line in server.stderr), server.stderr
    pcm = archived(archive)
    assert len(pcm) and np.unique(pcm[-len(pcm) // 2:]).size > 1  # sound to the end, not a flat line
    # the archive continues (`serve --label rain --no-guard --archive ARCHIVE`, played in this process)
    serve_here(conditioned, lambda s: s["archive"]["seconds"] > len(pcm) / s["sample_rate"], label="rain", guard=False,
               archive=str(archive))


def test_a_label_too_large_to_add_up_is_refused_at_start_in_one_line(conditioned):
    # a subprocess with a time limit: before the fix it played (a blend of NaN) until stopped
    result = subprocess.run([sys.executable, "-m", "wavegen", "serve", str(conditioned), "--port", "0", "--label",
                             "bells:1e39", "--allow-slow"], capture_output=True, text=True, env=ENV,
                            timeout=START_TIMEOUT)
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1 and "--label 'bells:1e39': weights too large" in err[0], err
