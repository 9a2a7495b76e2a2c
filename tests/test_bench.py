"""wavegen bench: rows and JSON that agree with themselves, presets and model folders, the CLI."""

import json

import pytest
import torch

from wavegen import cli
from wavegen.bench import bench_generation, format_profile, format_table, load_bench_model, profile_generation
from wavegen.checkpoint import save_model
from wavegen.models import build_model, resolve_preset

ROW_KEYS = {"backend", "batch", "samples", "seconds", "cpu_seconds", "samples_per_second",
            "samples_per_second_per_stream", "realtime_factor", "audio_seconds_per_second", "speedup_vs_torch"}


def check_rows(result, rate):
    rows = result["rows"]
    torch_rate = {r["batch"]: r["samples_per_second"] for r in rows if r["backend"] == "torch"}
    for r in rows:
        assert ROW_KEYS <= set(r)
        assert r["seconds"] > 0 and r["samples"] > 0
        assert r["samples_per_second"] == pytest.approx(r["batch"] * r["samples"] / r["seconds"])
        assert r["samples_per_second_per_stream"] == pytest.approx(r["samples_per_second"] / r["batch"])
        assert r["realtime_factor"] == pytest.approx(r["samples_per_second_per_stream"] / rate)
        assert r["audio_seconds_per_second"] == pytest.approx(r["samples_per_second"] / rate)
        if r["batch"] in torch_rate:
            assert r["speedup_vs_torch"] == pytest.approx(r["samples_per_second"] / torch_rate[r["batch"]])
        else:
            assert r["speedup_vs_torch"] is None
    return rows


def test_bench_generation_rows_are_consistent():
    result = bench_generation("wavenet-tiny", ["torch", "numba"], [1, 3], samples=400, torch_samples=60,
                              repeats=2, threads=1)
    rows = check_rows(result, 16000)
    assert [(r["backend"], r["batch"]) for r in rows] == [("torch", 1), ("torch", 3), ("numba", 1), ("numba", 3)]
    assert [r["samples"] for r in rows] == [60, 60, 400, 400]  # the torch rows time fewer samples
    assert all(r["speedup_vs_torch"] == 1.0 for r in rows if r["backend"] == "torch")
    assert all(len(r["all_seconds"]) == 2 and r["seconds"] == min(r["all_seconds"]) for r in rows)
    m = result["machine"]
    assert m["torch_threads"] == 1 and m["numba_threads"] == 1
    assert m["torch"] == torch.__version__ and m["numba"] and m["python"] and m["cpu"]
    assert result["model"]["sample_rate"] == 16000 and result["model"]["model_type"] == "wavenet"
    assert result["model"]["parameters"] == sum(p.numel() for p in build_model(resolve_preset("wavenet-tiny")).parameters())
    table = format_table(result)
    assert table.count("\n") >= 6 and "torch rows timed on 60 samples" in table


def test_samplernn_samples_are_whole_top_frames_and_fp16_is_a_backend():
    result = bench_generation("samplernn-tiny", ["numba", "numba-fp16"], [2], samples=100, repeats=1, threads=1)
    assert [r["samples"] for r in result["rows"]] == [112, 112]  # frames of 16: 100 → 7 frames
    assert [r["backend"] for r in result["rows"]] == ["numba", "numba-fp16"]
    assert result["rows"][0]["speedup_vs_torch"] is None
    check_rows(result, 16000)
    with pytest.raises(ValueError, match="unknown backend"):
        bench_generation("samplernn-tiny", ["numba-int4"], [1], samples=16, repeats=1)


def test_a_preset_has_deterministic_random_weights_and_a_folder_its_own(tmp_path):
    a, _ = load_bench_model("wavenet-tiny", seed=3)
    b, _ = load_bench_model("wavenet-tiny", seed=3)
    c, _ = load_bench_model("wavenet-tiny", seed=4)
    assert torch.equal(a["embed"], b["embed"]) and not torch.equal(a["embed"], c["embed"])
    config = resolve_preset("wavenet-tiny")
    config["data"] = {"sample_rate": 8000}
    torch.manual_seed(11)
    model = build_model(config)
    save_model(model, config, tmp_path / "model")
    spec, facts = load_bench_model(str(tmp_path / "model"))
    assert torch.equal(spec["embed"], model.embed.weight.detach())
    assert facts["sample_rate"] == 8000 and facts["source"].endswith("model")
    result = bench_generation(str(tmp_path / "model"), ["numba"], [1], samples=200, repeats=1, threads=1)
    check_rows(result, 8000)


def test_cli_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "bench.json"
    png = tmp_path / "plot" / "bench.png"
    assert cli.main(["-q", "bench", "--model", "wavenet-tiny", "--backends", "torch,numba", "--batch", "1,2",
                     "--samples", "300", "--torch-samples", "50", "--repeats", "1", "--threads", "1",
                     "--json", str(out), "--plot", str(png)]) == 0
    table = capsys.readouterr().out
    assert "samples/s/stream" in table and "numba" in table
    result = json.loads(out.read_text())
    assert set(result) >= {"machine", "rows", "model", "command"}
    assert result["command"].startswith("wavegen bench --model wavenet-tiny --backends torch,numba --batch 1,2")
    check_rows(result, 16000)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_cli_refuses_bad_lists(capsys):
    assert cli.main(["bench", "--model", "wavenet-tiny", "--batch", "1,x"]) == 2
    assert "--batch" in capsys.readouterr().err
    assert cli.main(["bench", "--model", "wavenet-tiny", "--backends", "numba", "--batch", "0"]) == 2


def test_profile_parts_add_up_and_count_the_model():
    result = profile_generation("wavenet-tiny", ["numba", "numba-fp16"], [1, 2], samples=300, dram_mbytes=32)
    rates = result["machine"]["rates"]
    assert all(v > 0 for v in rates.values()) and rates["read_gb_per_s_l2"] > rates["read_gb_per_s_dram"]
    # wavenet-tiny: 12 layers, R 24, S 48, A 64, Q 256 → multiply-adds per sample
    macs = 12 * 48 * 48 + 11 * 24 * 24 + 48 * 12 * 24 + 64 * 48 + 256 * 64
    for prof in result["profiles"]:
        assert prof["macs_per_step"] == pytest.approx(macs * prof["batch"])
        bytes_per_weight = 2 if prof["backend"] == "numba-fp16" else 4
        assert prof["weight_bytes_per_step"] == pytest.approx(macs * bytes_per_weight)  # read once per step
        assert prof["precision"] == ("fp16" if prof["backend"] == "numba-fp16" else "fp32")
        parts = sum(p["us"] for p in prof["parts"])
        assert parts + prof["other_us"] == pytest.approx(prof["full_us"])
        assert prof["samples_per_second"] == pytest.approx(prof["batch"] / prof["full_us"] * 1e6)
        assert all(p["us"] > 0 for p in prof["parts"])
    assert "dilated convs (12 x 48x48)" in format_profile(result)
    with pytest.raises(ValueError, match="cannot be profiled"):
        profile_generation("wavenet-tiny", ["torch"], [1])


def test_profile_of_samplernn_counts_every_tier():
    result = profile_generation("samplernn-tiny", ["numba"], [1], samples=64, dram_mbytes=32)
    names = [p["name"] for p in result["profiles"][0]["parts"]]
    # frames 16/4, 1-layer GRU dim 128: recurrent + upsampling per tier, hoisted projections below the top
    assert names == ["tier 0 (frame 16) layer 0 recurrent", "tier 0 (frame 16) upsampling x4",
                     "tier 1 (frame 4) layer 0 recurrent", "tier 1 (frame 4) upsampling x4",
                     "tier 1 (frame 4) hoisted input projections", "MLP hidden", "MLP output",
                     "sampling (softmax + inverse CDF)"]
    d, g = 128, 3 * 128
    macs = g * d / 16 + 4 * d * d / 16 + g * d / 4 + 4 * d * d / 4 + 4 * g * d / 16 + d * d + 256 * d
    assert result["profiles"][0]["macs_per_step"] == pytest.approx(macs)


def test_cli_profile(tmp_path, capsys):
    out = tmp_path / "profile.json"
    assert cli.main(["-q", "bench", "--profile", "--model", "wavenet-tiny", "--samples", "200",
                     "--json", str(out)]) == 0
    assert "everything else" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["mode"] == "profile" and [p["backend"] for p in result["profiles"]] == ["numba"]
    assert result["command"].startswith("wavegen bench --profile --model wavenet-tiny")
