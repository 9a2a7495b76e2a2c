"""The GPU check's recipe without a GPU: check.sh's dry run lists every stage and runs the CPU-safe
ones; summary.py turns what the stages write into the rows of docs/BENCHMARKS.md (speed against
the torch engine of the same run, the crossover of the cuda backend's two paths, ncu's figures,
the issue's targets)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes" / "gpu"))
import summary  # noqa: E402 - recipes/gpu/summary.py

NCU_LOG = """==PROF== Connected to process 123
  samplernn_persistent (132, 1, 1)x(256, 1, 1), Context 1, Stream 7, Device 0, CC 9.0
    Section: GPU Speed Of Light Throughput
    ----------------------- ----------- ------------
    Metric Name             Metric Unit Metric Value
    ----------------------- ----------- ------------
    Memory Throughput                 %        12.34
    DRAM Throughput                   %         1.23
    Duration                         ms         3.45
    Compute (SM) Throughput           %         7.89
    Section: Launch Statistics
    Block Size                                   256
    Registers Per Thread     register/thread     148
"""


def bench_json(path: Path, rows: list[tuple[str, int, float]]) -> None:
    path.write_text(json.dumps({"rows": [{"backend": b, "batch": n, "samples_per_second": rate,
                                          "samples_per_second_per_stream": rate / n} for b, n, rate in rows]}))


def test_the_summary_puts_speed_crossover_and_profile_side_by_side(tmp_path):
    (tmp_path / "machine.json").write_text(json.dumps({"gpu": "NVIDIA H200", "driver": "580", "torch": "2.11.0"}))
    bench_json(tmp_path / "bench_samplernn-3tier__cuda.json", [("cuda", 1, 150_000.0), ("cuda-bf16", 4096, 9_000_000.0)])
    bench_json(tmp_path / "bench_samplernn-3tier__torch.json", [("torch", 1, 1_000.0), ("torch", 4096, 2_000_000.0)])
    bench_json(tmp_path / "crossover_samplernn-3tier__small.json",
               [("cuda:path=small", 1, 20_000.0), ("cuda:path=small", 16, 30_000.0)])
    bench_json(tmp_path / "crossover_samplernn-3tier__large.json",
               [("cuda:path=large", 1, 5_000.0), ("cuda:path=large", 16, 90_000.0), ("cuda:path=large", 64, 1e6)])
    bench_json(tmp_path / "variants_samplernn-3tier.json",
               [("cuda:path=small:blocks=16", 1, 40_000.0), ("cuda:path=small", 1, 20_000.0)])
    bench_json(tmp_path / "variants_wavenet-medium.json", [("cuda:path=small:layers_per_block=2", 16, 64_000.0)])
    (tmp_path / "ncu_samplernn_x1.log").write_text(NCU_LOG)
    train_row = {"batch": 128, "seq_len": 512, "seconds_per_step": 0.05, "samples_per_second": 1_310_720.0,
                 "peak_memory_bytes": 2**31}
    for name, decay in (("samplernn-3tier", 0.0), ("samplernn-3tier_ema", 0.99)):
        (tmp_path / f"train_{name}.json").write_text(json.dumps({"model": {"ema_decay": decay}, "rows": [train_row]}))
    summary.main(str(tmp_path))
    result = json.loads((tmp_path / "summary.json").read_text())
    rows = {(r["backend"], r["batch"]): r for r in result["bench"]["samplernn-3tier"]["rows"]}
    assert rows[("cuda", 1)]["speedup_vs_torch"] == pytest.approx(150.0)  # against torch of the same run
    assert rows[("cuda-bf16", 4096)]["speedup_vs_torch"] == pytest.approx(4.5)
    assert result["ncu"]["samplernn_x1"] == {"Duration": "3.45 ms", "Memory Throughput": "12.34 %",
                                             "DRAM Throughput": "1.23 %", "Compute (SM) Throughput": "7.89 %",
                                             "Block Size": "256", "Registers Per Thread": "148 register/thread"}
    md = (tmp_path / "benchmarks_rows.md").read_text()
    assert "| 1 | 20,000 | 5,000 | small |" in md and "| 16 | 30,000 | 90,000 | large |" in md
    assert "| 64 | - | 1,000,000 | - |" in md  # measured on one path only
    assert "| blocks=16 | 1 | 40,000 |" in md and "| defaults | 1 | 20,000 |" in md  # the persistent kernels' options
    assert "| layers_per_block=2 | 16 | 64,000 |" in md
    assert "| samplernn-3tier: one stream >= 100,000 samples/s | 150,000 (cuda, batch 1) | yes |" in md
    assert "| samplernn-3tier: all streams >= 10,000,000 samples/s | 9,000,000 (cuda-bf16, batch 4096) | no |" in md
    assert "| wavenet-medium: one stream >= 150,000 samples/s | not measured | - |" in md
    assert "| samplernn-3tier | 128 x 512 | 0.050 | 1,310,720 | 2.00 GiB |" in md
    assert "| samplernn-3tier_ema (average of the weights, decay 0.99) | 128 x 512 |" in md
    assert "ncu samplernn_x1: Memory Throughput 12.34 %; DRAM Throughput 1.23 %; Duration 3.45 ms" in (tmp_path / "summary.md").read_text()


def test_the_dry_run_lists_every_stage_and_runs_the_cpu_safe_ones(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "TRITON_INTERPRET")}
    run = subprocess.run(["bash", str(REPO / "recipes" / "gpu" / "check.sh"), str(tmp_path)], capture_output=True,
                         text=True, env={**env, "DRY_RUN": "1"}, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    stages = {s["stage"]: s["status"] for s in map(json.loads, (tmp_path / "stages.jsonl").read_text().splitlines())}
    for name in ("tests", "bench_wavenet-medium__cuda", "bench_samplernn-3tier__torch", "train_samplernn-3tier",
                 "train_samplernn-3tier_ema", "train_run", "racecheck", "crossover_samplernn-3tier__small", "crossover_wavenet-medium__large",
                 "ncu_samplernn_x1", "ncu_samplernn_x16", "variants_samplernn-3tier", "variants_wavenet-medium", "check"):
        assert stages.get(name) == "dry-run", (name, stages)
    assert stages["machine"] == 0 and stages["corpus"] == 0  # the CPU-safe stages ran
    from wavegen.corpus import Corpus

    assert len(Corpus(tmp_path / "corpus").split("train")) > 0, "the corpus stage wrote no training audio"
    assert (tmp_path / "summary.md").exists() and not (REPO / "wavegen" / "kernels").is_symlink()
