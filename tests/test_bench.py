"""wavegen bench: rows against engines of known speed, presets and model folders, profiles, the CLI."""

import json
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import save_tiny_model
from wavegen import bench as bench_module
from wavegen import cli, generate
from wavegen.bench import bench_generation, build_engine, format_table, load_bench_model
from wavegen.bench_profile import format_profile, profile_generation
from wavegen.engine import Engine, uniforms
from wavegen.errors import WavegenError
from wavegen.resolve import resolve_model
from wavegen.models import build_model, resolve_preset

ROW_KEYS = {"backend", "batch", "samples", "seconds", "cpu_seconds", "samples_per_second",
            "samples_per_second_per_stream", "realtime_factor", "audio_seconds_per_second", "speedup_vs_torch"}


class Sleeper(Engine):
    """An engine of known speed: each generate call sleeps ``seconds_per_sample`` per sample, whatever the
    batch, and uses no CPU; so the rates a bench row must report are known in advance."""

    seconds_per_sample = 0.001

    def __init__(self, spec, streams, device="cpu", precision="fp32"):
        super().__init__(spec, streams, device, precision)

    def reset(self, prime_codes=None, label_weights=None):
        self.t = 0

    def generate(self, uniforms, temperature=1.0):
        time.sleep(self.seconds_per_sample * uniforms.shape[1])
        self.t += uniforms.shape[1]
        return np.zeros(uniforms.shape, np.int64)


class SlowSleeper(Sleeper):
    seconds_per_sample = 0.004


def test_bench_rows_report_the_known_speed_of_an_engine(monkeypatch):
    engines = {**generate._ENGINES, "torch": {"wavenet": SlowSleeper}, "sleeper": {"wavenet": Sleeper}}
    monkeypatch.setattr(generate, "_ENGINES", engines)  # "torch" 4x slower than "sleeper", by construction
    rate = resolve_model("wavenet-tiny").sample_rate
    result = bench_generation("wavenet-tiny", ["torch", "sleeper"], [1, 4], samples=50, torch_samples=50, repeats=2)
    rows = {(r["backend"], r["batch"]): r for r in result["rows"]}
    assert list(rows) == [("torch", 1), ("torch", 4), ("sleeper", 1), ("sleeper", 4)]
    for (backend, batch), r in rows.items():
        assert ROW_KEYS <= set(r)
        per_stream = 1 / (SlowSleeper if backend == "torch" else Sleeper).seconds_per_sample
        assert 0.6 * per_stream < r["samples_per_second_per_stream"] <= 1.01 * per_stream  # a sleep only overshoots
        assert 0.6 * per_stream * batch < r["samples_per_second"] <= 1.01 * per_stream * batch
        assert 0.6 * per_stream / rate < r["realtime_factor"] <= 1.01 * per_stream / rate
        assert 0.6 * per_stream * batch / rate < r["audio_seconds_per_second"] <= 1.01 * per_stream * batch / rate
        assert r["cpu_seconds"] < 0.5 * r["seconds"]  # CPU time, not wall time: a sleep costs none
        assert 3.0 < r["speedup_vs_torch"] < 5.0 if backend == "sleeper" else r["speedup_vs_torch"] == 1.0


def test_bench_generation_rows_of_the_real_engines():
    start = time.perf_counter()
    result = bench_generation("wavenet-tiny", ["torch", "numba"], [1, 3], samples=400, torch_samples=60,
                              repeats=2, threads=1)
    wall = time.perf_counter() - start
    rows = result["rows"]
    assert [(r["backend"], r["batch"]) for r in rows] == [("torch", 1), ("torch", 3), ("numba", 1), ("numba", 3)]
    assert [r["samples"] for r in rows] == [60, 60, 400, 400]  # the torch rows time fewer samples
    assert all(len(r["all_seconds"]) == 2 and r["seconds"] == min(r["all_seconds"]) for r in rows)
    assert sum(sum(r["all_seconds"]) for r in rows) < wall  # measured within the call, in seconds
    assert all(r["speedup_vs_torch"] > 1 for r in rows if r["backend"] == "numba")
    m = result["machine"]
    assert m["torch_threads"] == 1 and m["numba_threads"] == 1
    assert m["torch"] == torch.__version__ and m["numba"] and m["python"] and m["cpu"]
    assert result["model"]["sample_rate"] == 16000 and result["model"]["model_type"] == "wavenet"
    assert result["model"]["parameters"] == sum(p.numel() for p in build_model(resolve_preset("wavenet-tiny")).parameters())
    table = format_table(result)
    assert table.count("\n") >= 6 and "torch rows timed on 60 samples" in table


def test_samplernn_samples_are_whole_top_frames_and_a_precision_is_a_backend_suffix():
    result = bench_generation("samplernn-tiny", ["numba", "numba-fp16", "numba-bf16"], [2], samples=100, repeats=1,
                              threads=1)
    assert [r["samples"] for r in result["rows"]] == [112, 112, 112]  # frames of 16: 100 → 7 frames
    assert [r["backend"] for r in result["rows"]] == ["numba", "numba-fp16", "numba-bf16"]
    assert all(r["speedup_vs_torch"] is None and r["samples_per_second"] > 0 for r in result["rows"])
    for backend, message in (("numba-int4", "unknown backend 'numba-int4'"), ("torch-fp16", "not supported by torch")):
        with pytest.raises(WavegenError, match=message):
            bench_generation("samplernn-tiny", [backend], [1], samples=16, repeats=1)


def test_a_preset_has_deterministic_random_weights_and_a_folder_its_own(tmp_path, monkeypatch):
    a, _ = load_bench_model("wavenet-tiny", seed=3)
    b, _ = load_bench_model("wavenet-tiny", seed=3)
    c, _ = load_bench_model("wavenet-tiny", seed=4)
    assert torch.equal(a["embed"], b["embed"]) and not torch.equal(a["embed"], c["embed"])
    folder = save_tiny_model(tmp_path / "model", "wavenet-tiny", sample_rate=8000, seed=11)
    spec, facts = load_bench_model(str(folder))
    assert torch.equal(spec["embed"], load_file(folder / "model.safetensors")["embed.weight"])
    assert facts["sample_rate"] == 8000 and facts["source"].endswith("model")
    monkeypatch.setattr(generate, "_ENGINES", {**generate._ENGINES, "sleeper": {"wavenet": Sleeper}})
    result = bench_generation(str(tmp_path / "model"), ["sleeper"], [2], samples=100, repeats=1)
    assert result["model"]["sample_rate"] == 8000
    known = 1 / Sleeper.seconds_per_sample / 8000  # x real time of an engine of known speed at the model's rate
    assert 0.6 * known < result["rows"][0]["realtime_factor"] <= 1.01 * known


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
    assert [(r["backend"], r["batch"], r["samples"]) for r in result["rows"]] == \
        [("torch", 1, 50), ("torch", 2, 50), ("numba", 1, 300), ("numba", 2, 300)]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_cli_refuses_bad_lists(capsys):
    assert cli.main(["bench", "--model", "wavenet-tiny", "--batch", "1,x"]) == 2
    assert "--batch" in capsys.readouterr().err
    assert cli.main(["bench", "--model", "wavenet-tiny", "--backends", "numba", "--batch", "0"]) == 2


@pytest.fixture
def timings(monkeypatch):
    """Every generation timed from now on (none, where a mistake is found first)."""
    calls = []
    real = bench_module.time_generation
    monkeypatch.setattr(bench_module, "time_generation", lambda *a, **k: calls.append(a[1:]) or real(*a, **k))
    return calls


def test_a_bad_count_is_named_with_its_flag_and_value(capsys, timings):
    for flags, message in ((["--batch", "1,0"], "--batch 0: must be at least 1"),
                           (["--samples", "-5"], "--samples -5: must be at least 1"),
                           (["--repeats", "0"], "--repeats 0: must be at least 1"),
                           (["--torch-samples", "-1"], "--torch-samples -1: must be at least 1")):
        assert cli.main(["bench", "--model", "wavenet-tiny", "--backends", "numba", *flags]) == 2
        assert capsys.readouterr().err.strip() == f"wavegen bench: error: {message}"
    assert timings == []


def test_json_and_plot_files_are_checked_before_anything_is_timed(tmp_path, capsys, timings):
    (tmp_path / "r").mkdir()
    (tmp_path / "afile").write_text("x")
    base = ["bench", "--model", "wavenet-tiny", "--backends", "numba", "--batch", "1", "--samples", "50"]
    for flags, message in (
            (["--json", tmp_path / "r"], f"--json {tmp_path / 'r'}: is a folder; give a file name"),
            (["--json", tmp_path / "afile" / "x.json"], f"--json {tmp_path / 'afile' / 'x.json'}: "
                                                        f"{tmp_path / 'afile'} is a file, not a folder"),
            (["--plot", tmp_path / "p.txt"], f"--plot {tmp_path / 'p.txt'}: matplotlib cannot write .txt pictures; "
                                             "end the name with one of "),
            (["--plot", tmp_path / "r"], f"--plot {tmp_path / 'r'}: is a folder; give a file name for the picture"),
            (["--train", "--json", tmp_path / "r"], f"--json {tmp_path / 'r'}: is a folder"),
            (["--profile", "--json", tmp_path / "r"], f"--json {tmp_path / 'r'}: is a folder")):
        assert cli.main([*base, *map(str, flags)]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith(f"wavegen bench: error: {message}"), err
    assert timings == [] and sorted(p.name for p in tmp_path.iterdir()) == ["afile", "r"]
    assert cli.main([*base, "--plot", str(tmp_path / "speed.svg"), "--json", str(tmp_path / "new" / "b.json")]) == 0
    assert len(timings) == 1 and b"<svg" in (tmp_path / "speed.svg").read_bytes()[:400]
    assert json.loads((tmp_path / "new" / "b.json").read_text())["rows"][0]["batch"] == 1
    assert cli.main([*base, "--json", str(tmp_path / "new" / "b.json")]) == 0  # an earlier result: replaced
    assert cli.main([*base, "--plot", str(tmp_path / "speed.svg")]) == 0  # an earlier plot (its mark): replaced
    capsys.readouterr()
    # --plot onto a picture bench did not draw (a user's photo, another command's plot): refused, left whole
    from wavegen.plotting import COMPARISON_MARK, mark_metadata, save_figure
    from matplotlib.figure import Figure

    save_figure(Figure(), tmp_path / "compare.png", **mark_metadata(tmp_path / "compare.png", COMPARISON_MARK))
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n a user's photo")
    for name in ("compare.png", "photo.png"):
        before = (tmp_path / name).read_bytes()
        assert cli.main([*base, "--plot", str(tmp_path / name)]) == 2
        assert capsys.readouterr().err.strip() == (
            f"wavegen bench: error: --plot {tmp_path / name}: holds a picture or file that wavegen bench --plot did "
            f"not draw; not overwritten: give --plot a new file name (or remove {tmp_path / name} first)")
        assert (tmp_path / name).read_bytes() == before
    assert len(timings) == 3
    # --json FILE onto a file that is no bench result (a model's config.json, a WAV): refused, left whole
    (tmp_path / "config.json").write_text('{"model_type": "wavenet", "sample_rate": 8000}')
    (tmp_path / "take.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    for name, holds in (("config.json", "JSON that is not"), ("take.wav", "something other than JSON, not")):
        before = (tmp_path / name).read_bytes()
        assert cli.main([*base, "--json", str(tmp_path / name)]) == 2
        assert capsys.readouterr().err == (f"wavegen bench: error: --json {tmp_path / name}: holds {holds} a wavegen "
                                           f"bench result; not overwritten: give --json a new file name (or remove "
                                           f"{tmp_path / name} first)\n")
        assert (tmp_path / name).read_bytes() == before
    assert len(timings) == 3


def test_a_json_file_that_would_replace_a_fifo_is_refused_before_anything_is_timed(tmp_path, capsys, timings):
    """--json at a FIFO was refused only by the write, after the timing (its results lost with it)."""
    import os

    os.mkfifo(tmp_path / "pipe")
    assert cli.main(["bench", "--model", "wavenet-tiny", "--backends", "numba", "--batch", "1", "--samples", "50",
                     "--json", str(tmp_path / "pipe")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"wavegen bench: error: --json {tmp_path / 'pipe'}: is a FIFO, not a regular file; give a file name"
    assert timings == [] and (tmp_path / "pipe").is_fifo()


def _cpu_us_per_step(backend, batch, samples=2000):
    """An independent timing of the engine a profile row describes: CPU microseconds per sample step."""
    spec, _ = load_bench_model("wavenet-tiny")
    engine = build_engine(spec, batch, backend)
    engine.generate(uniforms(0, range(batch), 0, 200))
    best = np.inf
    for i in range(3):
        u = uniforms(0, range(batch), 200 + i * samples, samples)
        start = time.process_time()
        engine.generate(u)
        best = min(best, time.process_time() - start)
    return best / samples * 1e6


def test_profile_parts_count_the_model_and_time_the_engine():
    result = profile_generation("wavenet-tiny", ["numba", "numba-fp16"], [1, 2], samples=300, dram_mbytes=32,
                                threads=1)
    rates = result["machine"]["rates"]
    assert all(v > 0 for v in rates.values()) and rates["read_gb_per_s_l2"] > rates["read_gb_per_s_dram"]
    # wavenet-tiny: 12 layers, R 24, S 48, A 64, Q 256 → multiply-adds per sample
    macs = 12 * 48 * 48 + 11 * 24 * 24 + 48 * 12 * 24 + 64 * 48 + 256 * 64
    for prof in result["profiles"]:
        assert prof["macs_per_step"] == pytest.approx(macs * prof["batch"])
        bytes_per_weight = 2 if prof["backend"] == "numba-fp16" else 4
        assert prof["weight_bytes_per_step"] == pytest.approx(macs * bytes_per_weight)  # read once per step
        assert prof["precision"] == ("fp16" if prof["backend"] == "numba-fp16" else "fp32")
        assert all(p["us"] > 0 for p in prof["parts"])
        assert sum(p["us"] for p in prof["parts"]) < 2 * prof["full_us"]  # parts alone: within the whole step
        independent = _cpu_us_per_step(prof["backend"], prof["batch"])
        assert 1 / 3 < prof["full_us"] / independent < 3, (prof["full_us"], independent)
    assert "dilated convs (12 x 48x48)" in format_profile(result)
    with pytest.raises(WavegenError) as caught:
        profile_generation("wavenet-tiny", ["torch", "numba", "numba-int8"], [1])
    assert str(caught.value) == ("--backends torch,numba-int8: --profile times the parts of the numba engines (numba, "
                                 "numba-fp16, numba-bf16); torch, numba-int8 cannot be profiled")


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


def test_samples_or_batch_too_large_for_memory_is_refused_before_anything_is_timed(capsys, timings):
    """--samples 10000000000 was a numpy ArrayMemoryError traceback from the random draws."""
    assert cli.main(["bench", "--model", "wavenet-tiny", "--backends", "numba", "--batch", "1",
                     "--samples", "10000000000"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("wavegen bench: error: --samples 10000000000 x --batch 1 ")
    assert "lower --samples or --batch" in err and timings == []


def test_a_batch_whose_engine_state_does_not_fit_names_batch_not_the_backend(capsys, timings, monkeypatch):
    """--batch 100000000 was "backend 'numba' is not available: building ... failed (MemoryError ...)"."""
    from wavegen import memory

    spec, _ = load_bench_model("wavenet-tiny")
    per_stream = build_engine(spec, 1, "numba").state_nbytes()
    assert per_stream > 0
    # room for the draws and codes of 1000 streams, not for their engine state
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": (1000 * per_stream - 1, "available RAM"))
    assert cli.main(["bench", "--model", "wavenet-tiny", "--backends", "numba", "--batch", "1,1000",
                     "--samples", "100"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"wavegen bench: error: --batch 1000 of the numba engine's state ({per_stream:,} bytes "
                          "per stream) needs about") and "lower --batch" in err and "not available" not in err
    assert timings == []
    assert cli.main(["bench", "--model", "wavenet-tiny", "--backends", "numba", "--batch", "1",  # not marked broken
                     "--samples", "50", "--repeats", "1"]) == 0


def test_the_backend_check_builds_no_engine_the_rows_do_not_need(monkeypatch):
    """check_backends built a 1-stream engine for the state-per-stream figure and then the smallest batch's
    (1 again, with the default 1,8,64): the 1-stream engine now serves both; the check still refuses what
    it refused (a batch whose state does not fit, an unknown precision) before anything is timed."""
    from wavegen import bench_backends, memory

    spec, _ = load_bench_model("samplernn-tiny")
    built = []
    real = bench_backends.build_engine
    monkeypatch.setattr(bench_backends, "build_engine",
                        lambda spec, streams, backend, device="cpu": built.append((backend, streams))
                        or real(spec, streams, backend, device))
    bench_module.check_backends(spec, ["torch", "numba"], [1, 8, 64])
    assert built == [("torch", 1), ("numba", 1)]
    built.clear()
    bench_module.check_backends(spec, ["numba"], [8, 64])  # the smallest batch is still built: its own check
    assert built == [("numba", 1), ("numba", 8)]
    built.clear()
    bench_module.check_backends(spec, ["numba"], [1])
    assert built == [("numba", 1)]
    per_stream = real(spec, 1, "numba").state_nbytes()
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": (64 * per_stream - 1, "available RAM"))
    with pytest.raises(memory.OutOfMemoryError, match=rf"^--batch 64 of the numba engine's state \({per_stream:,} "
                                                       "bytes per stream\\)"):
        bench_module.check_backends(spec, ["numba"], [1, 8, 64])
    with pytest.raises(WavegenError, match=r"^--backends numba-int9: "):
        bench_module.check_backends(spec, ["numba-int9"], [1, 8])


def test_a_bare_json_prints_the_results_instead_of_the_table(capsys):
    """--json alone (nargs="?") prints one JSON object on stdout, as eval's and info's do; --json FILE keeps
    writing the file beside the table (above). A bare --json before --model takes no word from it."""
    assert cli.main(["-q", "bench", "--json", "--model", "wavenet-tiny", "--backends", "numba", "--batch", "1",
                     "--samples", "50", "--repeats", "1", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)  # the whole of stdout: no table beside it
    assert result["mode"] == "generation" and [(r["backend"], r["batch"]) for r in result["rows"]] == [("numba", 1)]


def test_profile_counts_are_named_before_the_machine_is_measured(capsys):
    """--profile --samples 0 was a ZeroDivisionError traceback; --batch 0 said "streams=0: need at least one"
    after the machine's measurement (seconds)."""
    told = []
    for kwargs, message in (({"samples": 0}, "--samples 0: must be at least 1"),
                            ({"batches": [1, -1]}, "--batch -1: must be at least 1")):
        with pytest.raises(WavegenError) as caught:
            profile_generation("wavenet-tiny", ["numba"], **{"batches": [1], **kwargs}, progress=told.append)
        assert str(caught.value) == message
    assert told == []
    assert cli.main(["bench", "--profile", "--model", "wavenet-tiny", "--samples", "0"]) == 2
    assert capsys.readouterr().err == "wavegen bench: error: --samples 0: must be at least 1\n"


def test_a_profile_that_will_take_long_is_announced_with_an_estimate_before_it_runs(monkeypatch, caplog):
    """--profile --samples of hours said nothing while the step's runs went on: the estimate comes from a
    short run, as generation timing's rows; the bound is lowered here so that a real row crosses it."""
    monkeypatch.setattr(bench_module, "LONG_ROW_SECONDS", 0.0)
    with caplog.at_level("WARNING", logger="wavegen.bench"):
        result = profile_generation("samplernn-tiny", ["numba"], [1], samples=4096, dram_mbytes=32)
    (line,) = [r.getMessage() for r in caplog.records if "about" in r.getMessage()]
    assert line.startswith("numba batch 1: the whole step is timed on 6 runs of 4096 samples per stream: about ")
    estimate = float(line.split("about ")[1].split(" s ")[0])
    step_seconds = result["profiles"][0]["full_us"] * 1e-6 * 4096 * 6  # CPU time: the same work as the estimate's
    assert step_seconds / 5 - 0.1 <= estimate <= step_seconds * 5 + 1, (estimate, step_seconds)
    monkeypatch.setattr(bench_module, "LONG_ROW_SECONDS", 3600.0)
    caplog.clear()
    with caplog.at_level("WARNING", logger="wavegen.bench"):
        profile_generation("samplernn-tiny", ["numba"], [1], samples=256, dram_mbytes=32)
    assert "about" not in caplog.text


@pytest.mark.slow
def test_ctrl_c_stops_a_long_timed_run_within_seconds_and_writes_no_json(tmp_path):
    """A timed run was one generate call (numba returns to Python only at its end): a Ctrl-C 12 s into a
    26 s run waited for the rest of it. Now a run goes in calls of about a second."""
    import signal
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    proc = subprocess.Popen([sys.executable, "-m", "wavegen", "bench", "--model", "samplernn-tiny", "--backends",
                             "numba", "--batch", "1", "--samples", "3000000", "--repeats", "1", "--threads", "1",
                             "--json", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert "samples per stream" in proc.stderr.readline()  # the row begins: engine, warm-up, then the run
    time.sleep(6)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().endswith("wavegen bench: interrupted")
    assert time.monotonic() - sent < 8, time.monotonic() - sent
    assert list(tmp_path.iterdir()) == []


def test_threads_beyond_the_cores_are_said_with_what_runs(caplog):
    """--threads 64 on 2 cores: numba ran 2 threads silently (its most), torch 64 on 2 cores."""
    import os

    import numba

    from wavegen.bench import set_threads

    before = torch.get_num_threads(), numba.get_num_threads()
    cpus = len(os.sched_getaffinity(0))  # the CPUs this process may run on (taskset, cgroups), not the machine's
    try:
        with caplog.at_level("WARNING", logger="wavegen.bench"):
            set_threads(cpus)
            assert caplog.text == ""
            set_threads(cpus + 3)
        most = min(cpus + 3, numba.config.NUMBA_NUM_THREADS)
        them = "them" if cpus > 1 else "it"
        assert caplog.messages == [f"--threads {cpus + 3}: this process may use {cpus} logical CPU{'s' * (cpus > 1)}; "
                                   f"torch's {cpus + 3} threads share {them}, numba runs {most}"]
        assert numba.get_num_threads() == most
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])


def test_torch_samples_without_a_torch_row_is_refused_not_ignored(capsys, timings):
    assert cli.main(["bench", "--model", "wavenet-tiny", "--backends", "numba", "--batch", "1",
                     "--torch-samples", "5"]) == 2
    assert capsys.readouterr().err == ("wavegen bench: error: --torch-samples 5: it sets the torch rows' samples, "
                                       "and --backends numba has none; leave it out (or add torch to --backends)\n")
    assert timings == []


def test_an_auto_row_names_the_engine_it_measured():
    """--backends auto made a row named "auto": what was measured was not said."""
    from wavegen.generate import choose_backend

    result = bench_generation("wavenet-tiny", ["auto", "torch"], [2], samples=64, repeats=1, threads=1)
    chosen = choose_backend("wavenet", 2)
    assert [r["backend"] for r in result["rows"]] == [f"auto ({chosen})", "torch"]
    assert f"auto ({chosen})" in format_table(result)


def test_a_small_models_parameters_are_counted_not_rounded_to_nothing(tmp_path, capsys):
    """Both tables said a model's parameters in millions to one decimal: a config of 24,560 read "0.0M
    parameters" (generation timing and --train alike). They say the count now."""
    config = tmp_path / "small.json"
    config.write_text(json.dumps({"model_type": "wavenet", "data": {"sample_rate": 16000},
                                  "model": {"layers": 6, "max_dilation": 32, "residual_channels": 16,
                                            "skip_channels": 32, "end_channels": 32}}))
    count = sum(p.numel() for p in resolve_model(str(config)).build().parameters())
    assert count < 50_000
    assert cli.main(["bench", "--model", str(config), "--backends", "numba", "--batch", "1", "--samples", "64",
                     "--repeats", "1", "--threads", "1", "-q"]) == 0
    assert cli.main(["bench", "--train", "--model", str(config), "--batch", "2", "--seq-len", "64", "--steps", "1",
                     "--warmup-steps", "0", "--threads", "1", "-q"]) == 0
    firsts = [line for line in capsys.readouterr().out.splitlines() if "parameters" in line]
    assert len(firsts) == 2 and all(f"; {count:,} parameters" in line for line in firsts), firsts
