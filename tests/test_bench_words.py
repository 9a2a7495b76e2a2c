"""bench's lines say a count with its noun agreeing (wavegen.progress.counted): "1 sample per stream", "1 run",
"1 logical CPU", "1 timed step" (they said "1 samples per stream", "1 run(s)", "1 logical CPUs"). --json is data
and keeps its keys."""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace

import pytest
import torch

import wavegen.bench
from bench_helpers import Instant
from wavegen import generate
from wavegen.bench import _say_long_row, bench_generation, format_table, say_slow_start, set_threads
from wavegen.bench_profile import profile_generation
from wavegen.bench_train import _say_long_batch, bench_training, format_training_table
from wavegen.cli.options import check_device
from wavegen.config import ConfigError
from wavegen.progress import counted


def test_counted_says_one_and_more():
    assert [counted(1, "sample"), counted(2, "sample"), counted(0, "run"), counted(1, "logical CPU"),
            counted(3, "process", "processes")] == ["1 sample", "2 samples", "0 runs", "1 logical CPU", "3 processes"]


@pytest.mark.parametrize("n, said", [(1, "1 sample per stream"), (2, "2 samples per stream")])
def test_a_rows_progress_line_says_its_samples(monkeypatch, n, said):
    monkeypatch.setitem(generate._ENGINES, "torch", {"wavenet": Instant})
    monkeypatch.setitem(generate._ENGINES, "instant", {"wavenet": Instant})
    lines = []
    result = bench_generation("wavenet-tiny", ["torch", "instant"], [1], samples=n, torch_samples=n, repeats=1,
                              progress=lines.append)
    assert lines == [f"torch batch 1: {said}", f"instant batch 1: {said}"]
    assert [r["samples"] for r in result["rows"]] == [n, n]


@pytest.mark.parametrize("cpus, said", [(1, "1 logical CPU;"), (2, "2 logical CPUs;")])
def test_the_table_says_the_logical_cpus_and_the_torch_rows_samples(monkeypatch, cpus, said):
    monkeypatch.setitem(generate._ENGINES, "torch", {"wavenet": Instant})
    monkeypatch.setitem(generate._ENGINES, "instant", {"wavenet": Instant})
    result = bench_generation("wavenet-tiny", ["torch", "instant"], [1], samples=cpus + 2, torch_samples=cpus,
                              repeats=1)
    result["machine"]["logical_cpus"] = cpus
    table = format_table(result)
    assert f", {said} threads:" in table, table
    noun = "sample" if cpus == 1 else "samples"
    assert f"(torch rows timed on {cpus} {noun} per stream, the others on {cpus + 2};" in table, table


@pytest.mark.parametrize("repeats, samples, said", [
    (1, 1, "1 run of 1 sample per stream takes about 3 min"),
    (2, 2, "2 runs of 2 samples per stream take about 3 min")])
def test_a_long_rows_warning_agrees_with_its_counts(caplog, repeats, samples, said):
    with caplog.at_level("WARNING", logger="wavegen.bench"):
        assert _say_long_row("numba", 1, samples, repeats, 180.0)
    assert caplog.messages == [f"numba batch 1: {said} (measured on a short run); a lower --samples, --repeats or "
                               "--batch takes less"]


@pytest.mark.parametrize("n, repeats, first, runs", [
    (1, 1, "its first 1 sample per stream is", "its 1 run of 16000 samples per stream takes 53 min or more"),
    (2, 2, "its first 2 samples per stream are", "its 2 runs of 16000 samples per stream take 1.8 h or more")])
def test_a_slow_first_calls_lines_agree_with_their_counts(caplog, n, repeats, first, runs):
    with caplog.at_level("WARNING", logger="wavegen.bench"):
        say_slow_start("numba", 1, 16000, repeats, 10.0, n, None)
        say_slow_start("numba", 1, 16000, repeats, 10.0, n, 0.2)
    compiling, pace = caplog.messages
    noun = "sample" if n == 1 else "samples"
    assert compiling.startswith(f"numba batch 1: its first call ({n} {noun} per stream) is still running after "), \
        compiling
    assert pace.startswith(f"numba batch 1: {first} still being made after 10 s (the engine's warm-up; it does not "
                           f"compile): at that pace {runs}; "), pace


def test_a_profile_rows_estimate_says_one_sample(monkeypatch, caplog):
    monkeypatch.setattr(wavegen.bench, "LONG_ROW_SECONDS", 0.0)
    with caplog.at_level("WARNING", logger="wavegen.bench"):
        profile_generation("wavenet-tiny", ["numba"], [1], samples=1, dram_mbytes=8)
    (line,) = [m for m in caplog.messages if "the whole step" in m]
    assert line.startswith("numba batch 1: the whole step is timed on 6 runs of 1 sample per stream: about "), line


@pytest.mark.parametrize("cpus, said", [(1, "1 logical CPU"), (2, "2 logical CPUs")])
def test_threads_beyond_one_or_two_cpus_say_them(monkeypatch, caplog, cpus, said):
    before = torch.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    try:
        with caplog.at_level("WARNING", logger="wavegen.bench"):
            set_threads(cpus + 1)
    finally:
        torch.set_num_threads(before)
    (line,) = caplog.messages
    assert line.startswith(f"--threads {cpus + 1}: this process may use {said}; torch's {cpus + 1} threads share"), \
        line


@pytest.mark.parametrize("steps, said", [(1, "2 warm-up + 1 timed step take about"),
                                         (2, "2 warm-up + 2 timed steps take about")])
def test_a_long_training_rows_warning_agrees_with_its_steps(caplog, steps, said):
    with caplog.at_level(logging.WARNING, logger="wavegen.bench_train"):
        _say_long_batch(SimpleNamespace(batch_size=2), SimpleNamespace(warmup=2, steps=steps), 180.0)
    assert caplog.messages == [f"train batch 2: {said} 3 min (from one step); a lower --steps, --warmup-steps or "
                               "--batch takes less"]


@pytest.mark.parametrize("steps, said", [(1, "1 timed step"), (2, "2 timed steps")])
def test_a_training_rows_progress_and_table_agree_with_their_counts(steps, said):
    lines = []
    result = bench_training("wavenet-tiny", [1], seq_len=32, steps=steps, warmup=0, threads=1, progress=lines.append)
    assert lines == [f"train wavenet-tiny batch 1 x 32 samples: 0 warm-up + {said}"]
    result["machine"]["logical_cpus"] = steps
    cpus = "1 logical CPU," if steps == 1 else "2 logical CPUs,"
    assert f"{result['machine']['cpu']}, {cpus} torch threads" in format_training_table(result)


@pytest.mark.parametrize("count, said", [(1, "this machine has 1 CUDA device"), (2, "this machine has 2 CUDA devices")])
def test_a_cuda_device_past_the_last_says_how_many_there_are(monkeypatch, count, said):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    with pytest.raises(ConfigError) as caught:
        check_device("cuda:5")
    assert str(caught.value) == f"--device cuda:5: {said}"


def test_threads_beyond_one_cpu_share_it(monkeypatch, caplog):
    """On one CPU (taskset -c 0) it said "this process may use 1 logical CPU; torch's 3 threads share them"."""
    import os

    import numba

    before = torch.get_num_threads(), numba.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    try:
        with caplog.at_level("WARNING", logger="wavegen.bench"):
            set_threads(3)
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])
    (said,) = caplog.messages
    assert said.startswith("--threads 3: this process may use 1 logical CPU; torch's 3 threads share it"), said
