"""`wavegen bench --train` (wavegen.bench.bench_training): the trainer's step on synthetic audio."""

import json
import subprocess
import sys

import numpy as np
import pytest

from wavegen.bench import bench_training, synthetic_audio


def test_synthetic_audio_is_loud_int16_and_reproducible():
    a = synthetic_audio(16000, seed=1)
    assert a.dtype == np.int16 and a.shape == (16000,)
    assert 0.2 < np.abs(a / 32768.0).max() < 0.5
    assert np.array_equal(a, synthetic_audio(16000, seed=1))


def test_bench_training_rows_are_consistent(tmp_path):
    result = bench_training("samplernn-tiny", batches=(2, 4), seq_len=64, steps=2, warmup=1, threads=1)
    assert result["mode"] == "training" and result["model"]["mixed_precision"] == "no"
    assert [r["batch"] for r in result["rows"]] == [2, 4]
    for r in result["rows"]:
        assert r["seq_len"] == 64 and r["steps"] == 2
        assert r["samples_per_second"] == pytest.approx(r["batch"] * 64 * 2 / r["seconds"])
        assert r["seconds_per_step"] == pytest.approx(r["seconds"] / 2)
        assert 2**20 < r["peak_memory_bytes"] < 2**40 and "RSS" in r["memory"]
        assert 6.0 < r["loss_bits"] < 8.5  # 256 levels, a few steps from random weights: ~8 bits
    with pytest.raises(ValueError, match="preset"):
        bench_training("no-such-model")


def test_bench_train_cli_writes_json(tmp_path):
    out = tmp_path / "train.json"
    done = subprocess.run([sys.executable, "-m", "wavegen", "-q", "bench", "--train", "--model", "wavenet-tiny",
                           "--batch", "2", "--seq-len", "128", "--steps", "1", "--warmup-steps", "1",
                           "--threads", "1", "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "samples/s" in done.stdout
    result = json.loads(out.read_text())
    assert result["command"].startswith("wavegen bench --train --model wavenet-tiny --batch 2 --seq-len 128")
    assert result["rows"][0]["batch"] == 2 and result["rows"][0]["samples_per_second"] > 0
