"""wavegen bench: a row whose warm-up alone is long says so at once. ``--batch 100000`` of the torch engine showed
nothing for minutes: its 128 warm-up samples per stream (one call) ran before the short run whose estimate
announces a long row. The engine here makes samples at a set pace (a sleep), as a huge batch does."""

import logging
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import wavegen.bench
from wavegen import generate
from wavegen.bench import bench_generation
from wavegen.engine import Engine


class Slow(Engine):
    """A WaveNet engine that takes ``pace`` seconds a sample per stream (``first`` seconds more on its first
    call), noting where it is."""

    backend = "slow"
    pace, first, made, ended_first = 0.0, 0.0, 0, None

    def reset(self, prime_codes=None, label_weights=None):
        pass

    def generate(self, uniforms, temperature=1.0):
        time.sleep(self.pace * uniforms.shape[1] + (self.first if Slow.made == 0 else 0.0))
        Slow.made += uniforms.shape[1]
        if Slow.ended_first is None:
            Slow.ended_first = time.monotonic()
        return np.zeros(uniforms.shape, np.int64)


class Said(Exception):
    pass


class Lines(logging.Handler):
    """Bench's warnings, each with when it came and how many samples the engine had made; the row's estimate ends
    the bench there (the rest of the row would take minutes)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append((record.getMessage(), Slow.made, time.monotonic()))
        if "take about" in record.getMessage() or "the whole step is timed" in record.getMessage():
            raise Said


@pytest.fixture
def slow(monkeypatch):
    for backend in generate.backend_names():
        generate.backend_engines(backend)
    monkeypatch.setattr(generate, "_ENGINES", {**generate._ENGINES, "slow": {"wavenet": Slow}})
    for name, value in (("pace", 0.0), ("first", 0.0), ("made", 0), ("ended_first", None)):
        monkeypatch.setattr(Slow, name, value)
    lines = Lines()
    logging.getLogger("wavegen.bench").addHandler(lines)
    yield lines
    logging.getLogger("wavegen.bench").removeHandler(lines)


def test_a_long_row_is_announced_during_its_warm_up(slow):
    """20 ms a sample: 16000 samples x 3 runs take 16 min; said after a few warm-up calls (64 of its 128 samples),
    not after the whole warm-up and a short run."""
    Slow.pace = 0.02
    with pytest.raises(Said):
        bench_generation("wavenet-tiny", ["slow"], [1], samples=16000, repeats=3)
    ((line, made, _),) = slow.lines
    assert line.startswith("slow batch 1: 3 runs of 16000 samples per stream take about "), line
    assert made < wavegen.bench.WARMUP_SAMPLES, made
    assert 10 <= float(line.split("take about ")[1].split(" min")[0]) <= 25, line  # 16 min at that pace


class SlowTorch(Slow):
    """The same, as an engine that never compiles (the torch engine's, at a huge batch): its first call's time is
    its pace."""

    backend = "torch"


def test_a_first_call_that_runs_long_is_said_while_it_runs(slow, monkeypatch):
    """A first warm-up call still running after FIRST_CALL_SECONDS is said then; of an engine that does not compile,
    with the least the row takes."""
    monkeypatch.setattr(wavegen.bench, "FIRST_CALL_SECONDS", 0.3, raising=False)
    monkeypatch.setitem(generate._ENGINES, "slow", {"wavenet": SlowTorch})
    Slow.pace, Slow.first = 0.02, 1.5
    with pytest.raises(Said):
        bench_generation("wavenet-tiny", ["slow"], [1], samples=16000, repeats=3)
    (first, _, when), (estimate, _, _) = slow.lines
    assert first.startswith("slow batch 1: its first 1 sample per stream is still being made after 0.3 s "
                            "(the engine's warm-up; it does not compile): at that pace its 3 "
                            "runs of 16000 samples per stream take 4.0 h or more"), first
    assert when < Slow.ended_first - 0.5  # said while the call ran
    assert "take about" in estimate


class SlowNumba(Slow):
    """The same as a numba engine already compiled (its first call compiles nothing: its time is its pace), with the
    snapshot a --profile row takes."""

    backend = "numba"

    def snapshot(self):
        return None

    def restore(self, snapshot):
        pass


def test_a_profile_row_s_slow_first_call_names_options_profile_takes(slow, monkeypatch):
    """A --profile row's first call said "a lower --batch, --samples or --repeats takes less": --profile refuses
    --repeats (its step runs are set). It names --samples and --batch, as its estimate does."""
    from wavegen.bench_profile import PROFILE_STEP_RUNS, profile_generation

    monkeypatch.setattr(wavegen.bench, "FIRST_CALL_SECONDS", 0.3, raising=False)
    monkeypatch.setitem(generate._ENGINES, "numba", {"wavenet": SlowNumba})
    Slow.pace, Slow.first = 0.02, 1.5
    with pytest.raises(Said):
        profile_generation("wavenet-tiny", ["numba"], [1], samples=16000, dram_mbytes=8)
    (first, _, _), (estimate, _, _) = slow.lines
    assert first.startswith(f"numba batch 1: its first 1 sample per stream is still being made after 0.3 s "
                            f"(the engine's warm-up; it does not compile): at that pace its {PROFILE_STEP_RUNS} "
                            "runs of 16000 samples per stream take"), first
    assert first.endswith(" or more; a lower --samples or --batch takes less (Ctrl-C twice stops it at once)"), first
    assert "the whole step is timed" in estimate and estimate.endswith("a lower --samples or --batch takes less")


def test_a_first_call_that_may_compile_foretells_nothing(slow, monkeypatch):
    """An engine that may compile in its first call (one bench does not know): still running after
    FIRST_CALL_SECONDS is said, with no pace (a minute of compiling is no pace); the pace comes from the next calls."""
    monkeypatch.setattr(wavegen.bench, "FIRST_CALL_SECONDS", 0.3, raising=False)
    Slow.pace, Slow.first = 0.02, 1.5
    with pytest.raises(Said):
        bench_generation("wavenet-tiny", ["slow"], [1], samples=16000, repeats=3)
    (first, _, when), (estimate, _, _) = slow.lines
    assert first == ("slow batch 1: its first call (1 sample per stream) is still running after 0.3 s; it may be "
                     "compiling the engine's kernels (a first use on this machine takes a minute or so), so the row's "
                     "pace is not known yet (Ctrl-C twice stops it at once)"), first
    assert when < Slow.ended_first - 0.5
    assert 10 <= float(estimate.split("take about ")[1].split(" min")[0]) <= 25, estimate  # 16 min, not hours


def test_a_long_row_said_in_the_warm_up_finishes_it(slow, monkeypatch):
    """The warm-up that says a long row goes on to its end: the timed runs start where bench assumes (it ended there
    after 2 of its 128 samples, its short run and timed runs then made from the wrong place)."""
    monkeypatch.setattr(wavegen.bench, "WARMUP_CALL_SECONDS", 0.0, raising=False)
    monkeypatch.setattr(wavegen.bench, "LONG_ROW_SECONDS", 0.0)
    slow.lines, said = [], []
    slow.emit = lambda record: said.append((record.getMessage(), Slow.made))
    starts = []
    real = wavegen.bench.time_short_run
    monkeypatch.setattr(wavegen.bench, "time_short_run",
                        lambda engine, *a: starts.append((Slow.made, a[-1])) or real(engine, *a))
    Slow.pace = 0.0001
    result = bench_generation("wavenet-tiny", ["slow"], [1], samples=256, repeats=1)
    assert starts == [(wavegen.bench.WARMUP_SAMPLES, wavegen.bench.WARMUP_SAMPLES)], starts
    assert [made for _, made in said] == [2], said  # said once, in the warm-up
    assert Slow.made == 128 + 128 + 256 and result["rows"][0]["samples"] == 256  # short run (256 / 16 -> 1 x 128) + run


@pytest.mark.slow
def test_a_cold_numba_first_call_foretells_nothing(tmp_path):
    """The real numba engine with an empty cache (numba compiles in its first call for a minute): ``take 5.6 h or
    more`` was said of a row that then made 53,731 samples/s. Now: still running, compiling maybe, no pace."""
    code = ("import logging, sys, wavegen.bench as b\n"
            "logging.basicConfig(level=logging.WARNING, format='%(message)s')\n"
            "b.FIRST_CALL_SECONDS = 1.0\n"
            "b.bench_generation('wavenet-tiny', ['numba'], [1], samples=256, repeats=1, threads=1)\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "numba batch 1: its first call (1 sample per stream) is still running after 1.0 s; it may be " \
           "compiling" in done.stderr, done.stderr
    assert "or more" not in done.stderr and "take about" not in done.stderr and "takes about" not in done.stderr, \
        done.stderr


def test_a_quick_row_says_nothing(slow):
    Slow.pace = 0.0001
    result = bench_generation("wavenet-tiny", ["slow"], [1], samples=256, repeats=1)
    assert slow.lines == [] and result["rows"][0]["samples"] == 256


@pytest.mark.slow
def test_a_long_training_bench_is_announced_after_its_second_step(monkeypatch, caplog):
    """``bench --train --steps 1000000`` trained for hours with nothing said: the second step's time foretells all
    of them (the bound is lowered here so that a real tiny run crosses it), said before the timed steps end."""
    from wavegen.bench_train import bench_training

    monkeypatch.setattr(wavegen.bench, "LONG_ROW_SECONDS", 0.0)
    with caplog.at_level(logging.WARNING, logger="wavegen.bench_train"):
        result = bench_training("samplernn-tiny", [2], seq_len=64, steps=3, warmup=2, threads=1)
    (line,) = [r.getMessage() for r in caplog.records if "take about" in r.getMessage()]
    assert line.startswith("train batch 2: 2 warm-up + 3 timed steps take about "), line
    assert "a lower --steps, --warmup-steps or --batch takes less" in line
    assert result["rows"][0]["steps"] == 3
    monkeypatch.setattr(wavegen.bench, "LONG_ROW_SECONDS", 3600.0)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wavegen.bench_train"):
        bench_training("samplernn-tiny", [2], seq_len=64, steps=2, warmup=2, threads=1)
    assert "take about" not in caplog.text


class Loss:
    """A step's loss that notes when it is read (a read waits for the device: a sync)."""

    def __init__(self, step, reads):
        self.step, self.reads = step, reads

    def __float__(self):
        self.reads.append(self.step)
        return 0.5


@pytest.mark.parametrize("warmup", [0, 1, 2])
def test_no_sync_among_the_timed_training_steps(monkeypatch, warmup):
    """``--warmup-steps 0|1``: step 1, timed, was synchronised (its loss read) for the long-run estimate, a device
    wait inside the measured time. Only a warm-up step 1 is read now; the timed steps' loss once, at their end."""
    from wavegen.bench_train import _timed

    monkeypatch.setattr(wavegen.bench, "LONG_ROW_SECONDS", 0.0)
    reads, foretold = [], []
    _timed(lambda step: Loss(step, reads), warmup, 3, torch.device("cpu"), long=foretold.append)
    last = warmup + 2
    assert [r for r in reads if r >= warmup] == [last], reads
    assert len(foretold) == (1 if warmup == 2 else 0), foretold


def test_a_long_profile_row_is_announced_during_its_warm_up(monkeypatch):
    """``--profile`` warmed its row up in one call too before its estimate: the same warm-up as a generation row's
    now (the real numba engine; the bounds lowered so that its second warm-up call foretells a long row)."""
    from wavegen import bench_profile

    lines = Lines()
    logging.getLogger("wavegen.bench").addHandler(lines)
    monkeypatch.setattr(wavegen.bench, "WARMUP_CALL_SECONDS", 0.0, raising=False)
    monkeypatch.setattr(wavegen.bench, "LONG_ROW_SECONDS", 0.0)
    calls = []
    real = wavegen.bench.time_short_run
    monkeypatch.setattr(wavegen.bench, "time_short_run", lambda *a: calls.append(a) or real(*a))
    try:
        with pytest.raises(Said):
            bench_profile.profile_generation("samplernn-tiny", ["numba"], [1], samples=4096, dram_mbytes=8)
    finally:
        logging.getLogger("wavegen.bench").removeHandler(lines)
    ((line, _, _),) = lines.lines
    assert line.startswith("numba batch 1: the whole step is timed on 6 runs of 4096 samples per stream: about "), line
    assert calls == []  # said in the warm-up, before its short run
