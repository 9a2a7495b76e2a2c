"""Where the numba engines' time goes: ``wavegen bench --profile``.

Each numba backend x batch is built as :mod:`wavegen.bench` builds a row's engine, then
:func:`wavegen.kernels.numba_profile.profile_engine` times the whole step and each of its parts
on one core by default; the table (:func:`format_profile`) sets them against the machine's
measured bandwidth and multiply-add rate. A row that will run long is said first, with an
estimate from a short run.
"""

from __future__ import annotations

from wavegen import bench
from wavegen.config import ConfigError
from wavegen.progress import counted

PROFILE_STEP_RUNS = 6  # kernels.numba_profile.profile_engine runs the whole step on --samples 1 + 5 times


def profile_generation(model: str, backends=("numba",), batches=(1,), samples: int = 4096,
                       threads: int | None = 1, seed: int = 0, progress=None, dram_mbytes: int = 512,
                       checkpoint: str | None = None, stop=None) -> dict:
    """Where the numba engines' time goes: ``{"mode": "profile", "machine" (+ "rates"), "model",
    "profiles": [{"backend", "batch", ...kernels.numba_profile.profile_engine}]}``.

    Only numba backends (``numba``, ``numba-fp16``, ``numba-bf16``) have parts to time; one
    thread by default, so a part's time is one core's. ``stop``: a StopSignals (None: none); a stop asked of it is
    taken before the next timed call, as generation timing's: :class:`bench.BenchStopped`, with the result of the
    rows profiled before it.
    """
    from wavegen.kernels.numba_profile import machine_rates, profile_engine

    bad = [b for b in backends if bench.parse_backend(b)[0] != "numba"]
    if bad:
        raise ConfigError(f"--backends {','.join(bad)}: --profile times the parts of the numba engines (numba, "
                          f"numba-fp16, numba-bf16); {', '.join(bad)} cannot be profiled")
    batches = [int(b) for b in batches]  # --samples 0 was a ZeroDivisionError, --batch 0 "streams=0" after
    bench.check_counts([("--samples", samples, 1), *(("--batch", b, 1) for b in batches)])  # the machine's measuring
    bench.check_seed(seed)
    bench.set_threads(threads)
    spec, facts = bench.load_bench_model(model, seed, checkpoint)
    bench.check_draws_fit([("--samples", samples)], max(batches))
    bench.check_backends(spec, backends, batches)
    result = {"mode": "profile", "machine": None, "model": {"name": model, **facts}, "profiles": []}
    rounded = bench.frames_said(spec, "--samples", samples)
    if rounded is not None and progress is not None:
        progress(rounded)
    try:
        bench.stop_if_asked(stop)  # one asked already (torch importing): the machine not measured, nor said to be
        if progress is not None:
            progress("measuring the machine (bandwidth, multiply-add rate)")
        result["machine"] = {**bench.machine_info("cpu"), "rates": machine_rates(dram_mbytes)}
        for backend in backends:
            for batch in batches:
                bench.stop_if_asked(stop)
                if progress is not None:
                    progress(f"profiling {backend} batch {batch}")
                engine = bench.build_engine(spec, batch, backend)
                n, warmup = bench.whole_frames(spec, samples), bench.whole_frames(spec, bench.WARMUP_SAMPLES)
                _say_long_profile(engine, backend, batch, n, warmup, bench.whole_frames(spec, 1), stop)
                result["profiles"].append({"backend": backend, "batch": batch, **profile_engine(engine, n, stop)})
    except KeyboardInterrupt:  # a Ctrl-C or SIGTERM: the rows profiled before it kept
        raise bench.BenchStopped(result, len(backends) * len(batches), None if stop is None else stop.name) from None
    return result


def _say_long_profile(engine, backend: str, batch: int, samples: int, warmup: int, step: int, stop=None) -> None:
    """A profile row whose step timing (PROFILE_STEP_RUNS runs of ``samples`` per stream) will take over
    bench.LONG_ROW_SECONDS, said before it starts with an estimate from a short run (the engine's state restored
    after it): ``--profile --samples 576000000`` ran for hours with nothing said. The warm-up before it goes as
    generation timing's (bench.warm_up, in calls of ``step`` samples and up): one that is long itself is said
    during it (``--batch 100000``). stop: see :func:`profile_generation`."""
    def say(seconds: float) -> bool:
        if seconds <= bench.LONG_ROW_SECONDS:
            return False
        bench.logger.warning("%s batch %d: the whole step is timed on %s of %s per stream: about %s "
                             "(measured on a short run); a lower --samples or --batch takes less", backend, batch,
                             counted(PROFILE_STEP_RUNS, "run"), counted(samples, "sample"), bench.duration(seconds))
        return True

    snap = engine.snapshot()
    said = bench.warm_up(engine, warmup, step, 0, lambda per_sample: say(per_sample * samples * PROFILE_STEP_RUNS),
                         lambda seconds, n, pace: bench.say_slow_start(backend, batch, samples, PROFILE_STEP_RUNS,
                                                                       seconds, n, pace, "--samples or --batch"),
                         stop)
    if not said:
        bench.stop_if_asked(stop)
        seconds = bench.time_short_run(engine, samples, warmup, 0, warmup)[0]
        bench.stop_if_asked(stop)  # one asked during the short run: no estimate said after the stop's line
        say(seconds * PROFILE_STEP_RUNS)
    engine.restore(snap)


def format_profile(result: dict) -> str:
    """The per-part table of :func:`profile_generation`."""
    rates = result["machine"]["rates"]
    lines = [f"{result['model']['name']}: one core of {result['machine']['cpu']}: read "
             f"{rates['read_gb_per_s_dram']:.0f} GB/s from DRAM, {rates['read_gb_per_s_l3']:.0f} from L3, "
             f"{rates['read_gb_per_s_l2']:.0f} from L2; affine kernel {rates['affine_gflops_cached_batch8']:.0f} "
             "GFLOP/s on cached weights (batch 8). CPU time per sample step, all streams."]
    for prof in result["profiles"]:
        lines += ["", f"{prof['backend']} batch {prof['batch']} ({prof['precision']} weights): "
                      f"{prof['full_us']:.1f} us per step = {prof['samples_per_second']:,.0f} samples/s; "
                      f"{prof['macs_per_step'] / 1e6:.2f} M multiply-adds and "
                      f"{prof['weight_bytes_per_step'] / 1e6:.2f} MB of weights per step",
                  f"  {'part':48s} {'us/step':>8s} {'share':>6s} {'GFLOP/s':>8s} {'GB/s':>6s}"]
        for part in prof["parts"]:
            gf = f"{part['gflops']:.0f}" if part["gflops"] is not None else "-"
            gb = f"{part['gb_per_s']:.0f}" if part["gb_per_s"] is not None else "-"
            lines.append(f"  {part['name']:48s} {part['us']:8.2f} {part['share']:6.1%} {gf:>8s} {gb:>6s}")
        lines.append(f"  {'everything else (gates, gathers, cache misses)':48s} {prof['other_us']:8.2f} "
                     f"{prof['other_us'] / prof['full_us']:6.1%}")
    return "\n".join(lines)
