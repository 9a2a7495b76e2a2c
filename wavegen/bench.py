"""Speed measurement: ``wavegen bench``.

Generation (:func:`bench_generation`): one model (a preset with random weights, or a trained
model folder) × backends × batch sizes. Each engine is built, warmed up (numba compiles on
first use; a short untimed run follows), then timed on ``samples`` samples per stream,
best of ``repeats``. A row reports aggregate and per-stream samples/s, the multiple of real
time at the model's sample rate, and the speed-up over the torch engine measured in the same
run at the same batch. The torch engine is slow, so its rows may time fewer samples
(``torch_samples``); every rate is per second, so rows stay comparable.

A backend is named as make_engine names it, optionally with a precision and engine options
(``numba-fp16``, ``cuda-bf16:path=large``); its name is read, its engine built and every row checked
before anything is timed by :mod:`wavegen.bench_backends`, and a row keeps the name it was given.

Profile (``--profile``, where the numba engines' time goes) is :mod:`wavegen.bench_profile`.
Training speed (``wavegen bench --train``) is :mod:`wavegen.bench_train`; the plot of samples/s
against batch is :func:`wavegen.plotting.speed_png`. Generation and profile need torch, numpy
and numba only; the sample rate of a model comes from :func:`wavegen.resolve.resolve_model`.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from wavegen.bench_backends import (build_engine, check_backends, is_torch,  # noqa: F401 (bench.X for them too)
                                    parse_backend)
from wavegen.bench_first_call import first_call
from wavegen.config import ConfigError
from wavegen.generate import uniforms
from wavegen.progress import counted
from wavegen.render.settings import SEED_MAX

logger = logging.getLogger(__name__)

WARMUP_SAMPLES = 128  # per stream, untimed, before a row's timed runs
# a row whose timed runs are estimated to take longer is announced with its estimate (from a short run
# timed first): --samples 1e8 ran for 40 minutes with nothing said
LONG_ROW_SECONDS = 120.0
FIRST_CALL_SECONDS = 10.0  # a first warm-up call still running after this long is said (with the least it foretells)
WARMUP_CALL_SECONDS = 0.5  # a warm-up call this long is timed for an early estimate (a shorter one is overheads)
INTERRUPT_SECONDS = 1.0  # a timed run goes in generate calls of about this long: Ctrl-C is taken between two


class BenchStopped(KeyboardInterrupt):
    """A Ctrl-C or SIGTERM that stopped :func:`bench_generation` (or bench_train's bench_training): ``result``, what
    it returns, of the rows measured before it (none, some); ``planned``, the rows it was to measure; ``by``, the
    signal's name (None: not known). A bench of many rows runs for minutes: a scheduler's SIGTERM lost every row
    measured (the process ended by the signal, without a word)."""

    def __init__(self, result: dict, planned: int, by: str | None = None):
        super().__init__()
        self.result, self.planned, self.by = result, planned, by


# ----- the machine ---------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def set_threads(threads: int | None) -> None:
    """Threads for numba's parallel loops and torch's intra-op pool (None: leave the defaults)."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads {threads}: need at least one")
    torch.set_num_threads(threads)
    numba_most = None
    try:
        import numba

        numba_most = numba.config.NUMBA_NUM_THREADS
        numba.set_num_threads(min(threads, numba_most))
    except ImportError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()  # taskset, cgroups
    if cpus is not None and threads > cpus:  # said: the rates measured are not those of `threads` cores
        logger.warning("--threads %d: this process may use %s; torch's %d threads share %s%s", threads,
                       counted(cpus, "logical CPU"), threads, "it" if cpus == 1 else "them",
                       "" if numba_most is None else f", numba runs {min(threads, numba_most)}")


def machine_info(device: str = "cpu") -> dict:
    """What the numbers were measured on: CPU/GPU model, threads, library versions, load."""
    info = {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "device": str(device)}
    try:
        import numba

        info["numba"] = numba.__version__
        info["numba_threads"] = numba.get_num_threads()
    except ImportError:
        info["numba"] = None
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


# ----- the model -----------------------------------------------------------------------------------

def load_bench_model(model: str, seed: int = 0, checkpoint: str | None = None) -> tuple[dict, dict]:
    """A preset or config (random weights from ``seed``) or a model/run folder (a run's ``checkpoint``,
    "last" or "step_N", instead of its best/) → (inference spec, facts).

    facts: ``source``, ``model_type``, ``sample_rate`` (the model's, from resolve_model),
    ``parameters``, ``preset``.
    """
    from wavegen.resolve import resolve_model

    ref = resolve_model(model, checkpoint)
    if ref.trained:
        net, source = ref.load("cpu"), str(ref.folder if ref.kind == "model" else ref.source)
    else:
        torch.manual_seed(seed)
        net = ref.build().eval()
        source = f"{ref.kind} {model}, random weights (seed {seed})"
    config = ref.config
    facts = {"source": source, "preset": config.get("preset"), "sample_rate": ref.sample_rate,
             "model_type": config["model_type"], "parameters": sum(p.numel() for p in net.parameters())}
    return net.inference_spec(), facts


def parameters_said(count: int) -> str:
    """A model's parameter count as bench's tables say it, exact: "24,560 parameters" (they said it in millions to
    one decimal, where a model under 50,000 read "0.0M parameters")."""
    return f"{count:,} parameters"


def whole_frames(spec: dict, n: int) -> int:
    """SampleRNN: round n up to whole top frames, so every tier runs its share of the time."""
    if spec["family"] != "samplernn":
        return n
    top = int(spec["frame_sizes"][0])
    return max(top, -(-n // top) * top)


def frames_said(spec: dict, flag: str, asked: int | None) -> str | None:
    """The line that says ``flag``'s ``asked`` samples per stream are timed as more (:func:`whole_frames`):
    "--samples 100 timed as 112: whole frames of 16 (the model's top tier)"; None where they are timed as asked
    (or ``asked`` is None: not given). The rows' samples differed from --samples without a word."""
    if asked is None or whole_frames(spec, asked) == asked:
        return None
    return (f"{flag} {asked} timed as {whole_frames(spec, asked)}: whole frames of {int(spec['frame_sizes'][0])} "
            "(the model's top tier)")


# ----- generation ----------------------------------------------------------------------------------

def check_draws_fit(counts, batch: int) -> None:
    """OutOfMemoryError naming the flag when ``batch`` streams x a count of ``counts`` (``(flag, samples
    per stream)`` pairs) of random draws and codes, made whole for each run (the warm-up's at least), do not fit."""
    from wavegen.engine import GENERATE_BYTES_PER_SAMPLE
    from wavegen.memory import check_fits

    for flag, samples in counts:
        check_fits(batch * max(samples, WARMUP_SAMPLES) * GENERATE_BYTES_PER_SAMPLE,
                   f"{flag} {samples} x --batch {batch} of random draws and codes", f"lower {flag} or --batch")


def check_counts(counts) -> None:
    """``counts``: ``(flag, value, least)`` triples; ConfigError naming the first flag whose value is
    under its least (``--batch 0: must be at least 1``)."""
    for flag, value, least in counts:
        if value < least:
            raise ConfigError(f"{flag} {value}: must be at least {least}")


def check_seed(seed: int, most: int = SEED_MAX) -> None:
    """ConfigError naming ``--seed`` unless it is a whole number from 0 to ``most``: the engines' draws key on it
    as a uint64, and the random weights' torch.manual_seed takes no more (--seed -1 was numpy's OverflowError
    deep in the first row's warm-up, 2**64 torch's); training's seed is numpy's, at most 2**32 - 1."""
    if not 0 <= seed <= most:
        raise ConfigError(f"--seed {seed}: must be a whole number from 0 to {most}")


def time_generation(engine, samples: int, warmup: int, repeats: int, seed: int = 0, estimate=None,
                    step: int | None = None, slow=None, stop=None) -> dict:
    """Warm the engine up (untimed), then time ``repeats`` runs of ``samples`` per stream.

    estimate: called as ``estimate(seconds)`` with how long the timed runs will take, about: from a short run,
    of up to 8 x ``warmup`` samples, timed after the warm-up; or sooner, during the warm-up, where a call of it
    takes a while (WARMUP_CALL_SECONDS) and foretells a long row (over LONG_ROW_SECONDS): ``--batch 100000`` of
    the torch engine warmed up for minutes before its estimate. None: no such run. With it, the warm-up goes in
    calls of ``step`` samples (whole frames; None: one call), then 2, 4, ... x ``step``, and each run in calls of
    about INTERRUPT_SECONDS, so a Ctrl-C stops the bench within one. slow: called as ``slow(seconds, n, pace)`` (from
    another thread) where the warm-up's first call, of n samples per stream, is still running after
    FIRST_CALL_SECONDS: a call so long that the warm-up itself is long; pace: its seconds a sample per stream, or
    None where that call may be compiling (its time then no pace). stop: a StopSignals (None: none), whose stop
    asked for is a KeyboardInterrupt before the engine's next call (:func:`stop_if_asked`).
    Returns the best run's wall and CPU seconds and every run's wall seconds.
    """
    streams = np.arange(engine.streams)
    said = False
    if estimate is None or not step:
        engine.generate(uniforms(seed, streams, 0, warmup))
    else:
        said = warm_up(engine, warmup, step, seed, lambda seconds: estimate(seconds * samples * repeats), slow, stop)
    position, walls, cpus, block = warmup, [], [], samples
    if estimate is not None:
        stop_if_asked(stop)
        seconds, position = time_short_run(engine, samples, warmup, seed, position)
        stop_if_asked(stop)
        if not said:
            estimate(seconds * repeats)
        block = interruptible_block(samples, warmup, seconds)
    for _ in range(repeats):
        blocks = [uniforms(seed, streams, position + start, min(block, samples - start))
                  for start in range(0, samples, block)]
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for u in blocks:
            stop_if_asked(stop)
            engine.generate(u)
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
        position += samples
    best = int(np.argmin(walls))
    return {"seconds": walls[best], "cpu_seconds": cpus[best], "all_seconds": walls}


def warm_up(engine, warmup: int, step: int, seed: int, estimate, slow=None, stop=None) -> bool:
    """The warm-up of time_generation (and of a --profile row's estimate) in calls of step, step, 2 x step,
    4 x step, ... samples per stream (warmup in all); after a call other than the first (which may compile) that
    took WARMUP_CALL_SECONDS or more, ``estimate(seconds per sample)`` where the timed runs look long (it is said
    at once, not minutes later), once: whether it said so. The warm-up goes on to its end either way (the timed
    runs start where it ends). slow(seconds, n, pace) and stop: see time_generation."""
    streams, position, size, calls, said = np.arange(engine.streams), 0, step, 0, False
    while position < warmup:
        n = min(size, warmup - position)
        stop_if_asked(stop)
        wall0 = time.perf_counter()
        if calls == 0 and slow is not None:
            first_call(engine, uniforms(seed, streams, position, n), FIRST_CALL_SECONDS, lambda compiling: slow(
                FIRST_CALL_SECONDS, n, None if compiling else FIRST_CALL_SECONDS / n))
        else:
            engine.generate(uniforms(seed, streams, position, n))
        seconds, position, calls = time.perf_counter() - wall0, position + n, calls + 1
        stop_if_asked(stop)  # one asked during that call: no estimate said after the stop's line
        if calls > 1:
            size *= 2
            if not said and seconds >= WARMUP_CALL_SECONDS:
                said = bool(estimate(seconds / n))
    return said


def stop_if_asked(stop) -> None:
    """KeyboardInterrupt where ``stop`` (a StopSignals; None: none) was asked to stop: a first Ctrl-C or SIGTERM
    stops the bench before the engine's next call (a timed run's calls take about INTERRUPT_SECONDS each)."""
    if stop is not None and stop.requested:
        raise KeyboardInterrupt


def time_short_run(engine, samples: int, warmup: int, seed: int, position: int) -> tuple[float, int]:
    """About how long a run of ``samples`` per stream takes, from a short run at ``position`` (whole warm-ups,
    up to 8: a 16th of a run at most, where it can), and the position after it."""
    probe = warmup * min(max(samples // (16 * warmup), 1), 8)
    wall0 = time.perf_counter()
    engine.generate(uniforms(seed, np.arange(engine.streams), position, probe))
    return (time.perf_counter() - wall0) * samples / probe, position + probe


def interruptible_block(samples: int, warmup: int, run_seconds: float) -> int:
    """Samples per generate call in a timed run of ``samples`` per stream that takes about ``run_seconds``:
    calls of about INTERRUPT_SECONDS, in whole warm-ups (whole frames). A numba or CUDA call returns to
    Python only at its end, and Ctrl-C is taken there: one call of a long run kept it waiting for minutes."""
    calls = max(1, int(run_seconds / INTERRUPT_SECONDS))
    return min(samples, max(warmup, -(-samples // calls // warmup) * warmup))


def lower_options(backend: str) -> str:
    """The options that shorten a generation row of ``backend``: the torch rows' samples are --torch-samples
    (the long-row warnings told a torch row to lower --samples, which a --torch-samples given leaves as it is)."""
    return f"{'--torch-samples' if is_torch(backend) else '--samples'}, --repeats or --batch"


def _say_long_row(backend: str, batch: int, samples: int, repeats: int, seconds: float) -> bool:
    """The warning of a row whose timed runs take about ``seconds``, over LONG_ROW_SECONDS: whether it was said."""
    if seconds > LONG_ROW_SECONDS:
        logger.warning("%s batch %d: %s of %s per stream %s about %s (measured on a short run); a lower %s takes "
                       "less", backend, batch, counted(repeats, "run"), counted(samples, "sample"),
                       "takes" if repeats == 1 else "take", duration(seconds), lower_options(backend))
        return True
    return False


def say_slow_start(backend: str, batch: int, samples: int, repeats: int, seconds: float, n: int,
                   pace: float | None, lower: str | None = None) -> None:
    """A row whose first warm-up call, of n samples per stream, has run ``seconds``: said. pace: seconds a sample
    per stream where that call is known not to compile, and then the least its timed runs take at that pace, where
    that is over LONG_ROW_SECONDS; None: a call that may be compiling (numba's first use on this machine takes a
    minute): said to be running, with no pace (the growing warm-up's next calls give it). lower: the options that
    shorten the row (None: a generation row's, :func:`lower_options`; --profile takes no --repeats). A first Ctrl-C
    stops generation timing once that call ends (its StopSignals), so the line says what stops it at once."""
    if pace is None:
        logger.warning("%s batch %d: its first call (%s per stream) is still running after %s; it may be "
                       "compiling the engine's kernels (a first use on this machine takes a minute or so), so the "
                       "row's pace is not known yet (Ctrl-C twice stops it at once)", backend, batch,
                       counted(n, "sample"), duration(seconds))
        return
    least = pace * samples * repeats
    if least > LONG_ROW_SECONDS:
        logger.warning("%s batch %d: its first %s per stream %s still being made after %s (the engine's "
                       "warm-up; it does not compile): at that pace its %s of %s per stream %s %s "
                       "or more; a lower %s takes less (Ctrl-C twice stops it at once)", backend, batch,
                       counted(n, "sample"), "is" if n == 1 else "are", duration(seconds), counted(repeats, "run"),
                       counted(samples, "sample"), "takes" if repeats == 1 else "take", duration(least),
                       lower or lower_options(backend))


def duration(seconds: float) -> str:
    """"0.4 s", "45 s", "12 min", "3.1 h"; from CLOCK_MOST_HOURS on as progress lines say it, "2.78e+16 h" (an
    absurd --repeats' estimate was "10709323908211822.0 h")."""
    from wavegen.progress import CLOCK_MOST_HOURS, number_said

    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours < CLOCK_MOST_HOURS else f"{number_said(hours, 3)} h"


def bench_generation(model: str, backends=("torch", "numba"), batches=(1, 8, 64), samples: int = 16000,
                     torch_samples: int | None = None, repeats: int = 3, threads: int | None = None,
                     device: str = "cpu", seed: int = 0, progress=None, checkpoint: str | None = None,
                     stop=None) -> dict:
    """Generation speed of ``model`` for every backend × batch: ``{"machine", "model", "rows"}``.

    rows: ``backend``, ``batch``, ``samples`` (timed per stream), ``seconds``, ``cpu_seconds``,
    ``samples_per_second`` (all streams), ``samples_per_second_per_stream``, ``realtime_factor``
    (per stream, at the model's rate), ``audio_seconds_per_second`` (all streams) and
    ``speedup_vs_torch`` (aggregate rate over the torch row of the same batch; None without one).
    Backends: make_engine's, each optionally with a precision and options (``numba-fp16``,
    ``cuda-bf16:path=large``: :func:`parse_backend`); every (backend, batch) row is checked
    (:func:`check_backends`: an unknown backend, a precision, option or option value it does not take,
    a backend that cannot run here, a batch over the engine's limits, such as the cuda small-batch
    path's 64 streams) before anything is timed.
    ``progress(message)`` is called before each measurement. ``stop``: a StopSignals (None: none); a stop asked of
    it is taken before the engine's next call. A stop (that, or a KeyboardInterrupt) is :class:`BenchStopped`,
    with the result of the rows measured before it.
    """
    backends, batches = list(backends), [int(b) for b in batches]
    if not backends or not batches:
        raise ConfigError("give at least one backend and one batch size")
    check_counts([("--samples", samples, 1), *(("--batch", b, 1) for b in batches), ("--repeats", repeats, 1),
                  *([] if torch_samples is None else [("--torch-samples", torch_samples, 1)])])
    check_seed(seed)
    if torch_samples is not None and not any(map(is_torch, backends)):  # it was ignored without a word
        raise ConfigError(f"--torch-samples {torch_samples}: it sets the torch rows' samples, and --backends "
                          f"{','.join(backends)} has none; leave it out (or add torch to --backends)")
    draws = [("--samples", samples)] if not all(map(is_torch, backends)) else []
    if any(map(is_torch, backends)):
        draws.append(("--torch-samples", torch_samples or min(samples, 1024)))
    check_draws_fit(draws, max(batches))
    set_threads(threads)
    spec, facts = load_bench_model(model, seed, checkpoint)
    check_backends(spec, backends, batches, device)
    rate = facts["sample_rate"]
    # said of an option some row is timed on: a torch row takes --samples only without --torch-samples, up to 1024
    torch_on_samples = torch_samples is None and samples <= 1024
    asked = [("--samples", samples)] if not all(map(is_torch, backends)) or torch_on_samples else []
    for line in [frames_said(spec, flag, n) for flag, n in asked + [("--torch-samples", torch_samples)]]:
        if line is not None and progress is not None:
            progress(line)
    samples = whole_frames(spec, samples)
    torch_samples = whole_frames(spec, torch_samples if torch_samples else min(samples, 1024))
    warmup = whole_frames(spec, WARMUP_SAMPLES)
    model_info = {"name": model, **facts, "samples_per_stream": samples, "torch_samples_per_stream": torch_samples,
                  "warmup_samples": warmup, "repeats": repeats}
    rows = []
    try:
        for backend in backends:
            for batch in batches:
                stop_if_asked(stop)
                n = torch_samples if is_torch(backend) else samples
                if progress is not None:
                    progress(f"{backend} batch {batch}: {counted(n, 'sample')} per stream")
                rows.append(_measure_row(spec, backend, batch, n, warmup, repeats, seed, device, rate, stop))
    except KeyboardInterrupt:  # a Ctrl-C or SIGTERM: the rows measured before it kept
        raise BenchStopped(_result(rows, device, model_info), len(backends) * len(batches),
                           None if stop is None else stop.name) from None
    return _result(rows, device, model_info)


def _measure_row(spec: dict, backend: str, batch: int, n: int, warmup: int, repeats: int, seed: int, device: str,
                 rate: int, stop) -> dict:
    """One row of :func:`bench_generation`: ``backend``'s engine of ``batch`` streams built and timed on ``n``
    samples per stream (best of ``repeats``), its rates at the model's ``rate``."""
    engine = build_engine(spec, batch, backend, device)
    with torch.inference_mode():
        timing = time_generation(engine, n, warmup, repeats, seed, step=whole_frames(spec, 1),
                                 estimate=lambda seconds: _say_long_row(backend, batch, n, repeats, seconds),
                                 slow=lambda seconds, k, pace: say_slow_start(backend, batch, n, repeats, seconds, k,
                                                                               pace), stop=stop)
    aggregate = batch * n / timing["seconds"]  # "auto" alone did not say what was measured: auto (numba)
    name = f"{backend} ({engine.backend})" if parse_backend(backend)[0] == "auto" else backend
    logger.debug("%s batch %d: %.0f samples/s", backend, batch, aggregate)
    return {"backend": name, "batch": batch, "samples": n, **timing,
            "samples_per_second": aggregate, "samples_per_second_per_stream": aggregate / batch,
            "realtime_factor": aggregate / batch / rate,
            "audio_seconds_per_second": aggregate / rate, "speedup_vs_torch": None}


def _result(rows: list, device: str, model_info: dict) -> dict:
    """bench_generation's result of ``rows``: each one's speed-up over the torch row of its batch, the machine."""
    torch_rate = {}  # (the first torch row of each batch, where --backends names it twice: torch,torch-fp32)
    for r in rows:
        if is_torch(r["backend"]):
            torch_rate.setdefault(r["batch"], r["samples_per_second"])
    for r in rows:
        if r["batch"] in torch_rate:
            r["speedup_vs_torch"] = r["samples_per_second"] / torch_rate[r["batch"]]
    return {"mode": "generation", "machine": machine_info(device), "model": model_info, "rows": rows}


# ----- reporting -----------------------------------------------------------------------------------

def format_table(result: dict) -> str:
    """The rows of :func:`bench_generation` as a fixed-width text table."""
    m, model = result["machine"], result["model"]
    width = max([10] + [len(r["backend"]) for r in result["rows"]])
    lines = [f"{model['name']} ({model['source']}; {parameters_said(model['parameters'])}, "
             f"{model['sample_rate']} Hz)",
             f"{m['cpu']}, {counted(m['logical_cpus'], 'logical CPU')}; threads: numba {m.get('numba_threads')}, "
             f"torch {m['torch_threads']}; torch {m['torch']}, numba {m.get('numba')}"
             + (f"; load average {m['load_average_1min']}" if "load_average_1min" in m else ""),
             "",
             f"{'backend':{width}s} {'batch':>5s} {'samples':>8s} {'samples/s/stream':>17s} {'samples/s (all)':>16s} "
             f"{'x real time':>12s} {'vs torch':>9s}"]
    for r in result["rows"]:
        speedup = f"{r['speedup_vs_torch']:.1f}x" if r["speedup_vs_torch"] is not None else "-"
        lines.append(f"{r['backend']:{width}s} {r['batch']:5d} {r['samples']:8d} {r['samples_per_second_per_stream']:17,.0f} "
                     f"{r['samples_per_second']:16,.0f} {r['realtime_factor']:11.2f}x {speedup:>9s}")
    # said where the table holds torch rows and others timed on another count (torch rows alone: no others)
    kinds = {is_torch(r["backend"]) for r in result["rows"]}
    if kinds == {True, False} and model["torch_samples_per_stream"] != model["samples_per_stream"]:
        lines.append(f"(torch rows timed on {counted(model['torch_samples_per_stream'], 'sample')} per stream, the "
                     f"others on {model['samples_per_stream']}; rates are per second, best of {model['repeats']})")
    lines.append("x real time: per stream, at the model's rate; vs torch: aggregate rate over the torch "
                 "engine's at the same batch, in this run")
    return "\n".join(lines)
