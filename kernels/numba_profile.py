"""Where a numba engine's time goes, and how close each part runs to the machine's limits.

:func:`profile_engine` times every matrix product of one engine step alone, on the engine's
own packed weights, and divides by how often the step runs it (a SampleRNN tier runs once per
frame), giving microseconds per sample beside each part's multiply-adds and weight bytes per
sample. The full engine is timed too; the difference ("everything else") is activations,
gathers, copies, and the cache misses the parts do not suffer alone (alone, a part that fits
in a cache stays there; in the engine every part evicts the others).

:func:`machine_rates` measures one core's read bandwidth from DRAM, L3 and L2 and its
multiply-add rate on cached data: the roofline the parts are compared with.

Times are CPU seconds of this process (``time.process_time``), so other work on a shared
machine inflates them less than wall time; memory bandwidth is shared all the same.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from wavegen.engine import uniforms
from wavegen.kernels.numba_common import FASTMATH, affine, sample_code
from wavegen.kernels.packing import (SRNN_BHH, SRNN_BIH, SRNN_HIDB, SRNN_HIDW, SRNN_OUTB, SRNN_OUTW, SRNN_UPB,
                                     SRNN_UPW, SRNN_WHH, SRNN_WIH, SRNN_WIH0, WN_CONV, WN_CONVB, WN_OUT1, WN_OUT1B,
                                     WN_OUT2, WN_OUT2B, WN_RES, WN_RESB, WN_SKIP, WN_SKIPB)


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _sum_passes(a, passes):
    total = np.float32(0.0)
    for _ in range(passes):
        s = np.float32(0.0)
        for i in range(a.shape[0]):
            s += a[i]
        total += s
    return total


@njit(fastmath=FASTMATH, cache=True, error_model="numpy")
def _affine_reps(M, w_off, V, b_off, n_out, n_in, x, y, reps):
    for _ in range(reps):
        affine(M, w_off, V, b_off, n_out, n_in, x, y, 0, x.shape[0])


@njit(cache=True, error_model="numpy")
def _sample_reps(logits, reps, scratch):
    total = 0
    for i in range(reps):
        total += sample_code(logits, np.float32((i % 997) / 997.0), np.float32(1.0), scratch)
    return total


_WARMUP = 64  # samples per stream generated untimed before the whole step is timed


def _best_cpu_seconds(fn, repeats: int = 5) -> float:
    """The least CPU time of ``repeats`` calls of ``fn`` after a warm-up call: a shared machine
    only ever adds time, so the least of several is the nearest to the undisturbed figure."""
    fn()  # compile / warm
    best = np.inf
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def machine_rates(dram_mbytes: int = 512) -> dict:
    """One core: read GB/s from DRAM (``dram_mbytes``, far more than any L3), L3 (8 MB), L2
    (512 KB); GFLOP/s of the affine kernel on cached weights at batch 8 (its best case)."""
    out = {}
    for name, mbytes, passes in (("dram", dram_mbytes, 2), ("l3", 8, 64), ("l2", 0.5, 1024)):
        a = np.ones(int(mbytes * 2**20) // 4, np.float32)
        seconds = _best_cpu_seconds(lambda a=a, p=passes: _sum_passes(a, p))
        out[f"read_gb_per_s_{name}"] = a.nbytes * passes / seconds / 1e9
    rng = np.random.default_rng(0)
    M = rng.standard_normal(256 * 1024).astype(np.float32)
    x = rng.standard_normal((8, 1024)).astype(np.float32)
    y = np.zeros((8, 256), np.float32)
    seconds = _best_cpu_seconds(lambda: _affine_reps(M, 0, M, -1, 256, 1024, x, y, 200))
    out["affine_gflops_cached_batch8"] = 2 * 256 * 1024 * 8 * 200 / seconds / 1e9
    return out


def _parts(engine) -> list[tuple[str, float, int, int, int, int, int]]:
    """Matrix products of one step: (name, runs per sample, w_off, b_off, n_out, n_in, rows per stream)."""
    p = engine.packed
    if "tier_off" in p:  # SampleRNN
        dim, gd = p["dim"], p["gates"] * p["dim"]
        fs = [int(f) for f in p["tier_int"][:, 0]]
        ratios = [int(r) for r in p["tier_int"][:, 1]]
        parts = []
        for k, f in enumerate(fs):
            for j in range(p["n_layers"]):
                if j > 0:
                    parts.append((f"tier {k} (frame {f}) layer {j} input", 1 / f, p["layer_off"][k, j, SRNN_WIH],
                                  p["layer_off"][k, j, SRNN_BIH], gd, dim, 1))
                parts.append((f"tier {k} (frame {f}) layer {j} recurrent", 1 / f, p["layer_off"][k, j, SRNN_WHH],
                              p["layer_off"][k, j, SRNN_BHH], gd, dim, 1))
            parts.append((f"tier {k} (frame {f}) upsampling x{ratios[k]}", 1 / f, p["tier_off"][k, SRNN_UPW],
                          p["tier_off"][k, SRNN_UPB], ratios[k] * dim, dim, 1))
            if k > 0:
                parts.append((f"tier {k} (frame {f}) hoisted input projections", 1 / fs[k - 1],
                              p["tier_off"][k, SRNN_WIH0], -1, gd, dim, ratios[k - 1]))
        parts.append(("MLP hidden", 1.0, p["mlp_off"][SRNN_HIDW], p["mlp_off"][SRNN_HIDB], dim, dim, 1))
        parts.append(("MLP output", 1.0, p["mlp_off"][SRNN_OUTW], p["mlp_off"][SRNN_OUTB], p["tier_int"][0, 2], dim, 1))
        return parts
    R, S, A, q, L = p["R"], p["S"], p["A"], p["q"], len(p["dil"])
    return [(f"dilated convs ({L} x {2 * R}x{2 * R})", L, p["layer_off"][0, WN_CONV], p["layer_off"][0, WN_CONVB], 2 * R, 2 * R, 1),
            (f"residual 1x1 ({L - 1} x {R}x{R})", L - 1, p["layer_off"][0, WN_RES], p["layer_off"][0, WN_RESB], R, R, 1),
            (f"skip 1x1, fused ({S}x{L * R})", 1.0, p["head"][WN_SKIP], p["head"][WN_SKIPB], S, L * R, 1),
            (f"output 1 ({A}x{S})", 1.0, p["head"][WN_OUT1], p["head"][WN_OUT1B], A, S, 1),
            (f"output 2 ({q}x{A})", 1.0, p["head"][WN_OUT2], p["head"][WN_OUT2B], q, A, 1)]


def _step_cpu_seconds(engine, samples: int, stop=None) -> float:
    """The least CPU time of the whole step's runs of ``samples`` per stream (:func:`_best_cpu_seconds`), each
    run in generate calls of about wavegen.bench.INTERRUPT_SECONDS as a bench row's are: a numba call returns
    to Python only at its end, where a Ctrl-C is taken, and one call a run kept it waiting for minutes. stop: see
    :func:`profile_engine`."""
    from wavegen import bench  # its slicing of a timed run (imported here: bench sits above the engines)

    ids = np.arange(engine.streams)
    seconds, position = bench.time_short_run(engine, samples, _WARMUP, 0, _WARMUP)
    block = bench.interruptible_block(samples, _WARMUP, seconds)
    calls = [uniforms(0, ids, position + start, min(block, samples - start)) for start in range(0, samples, block)]

    def run():
        for u in calls:
            bench.stop_if_asked(stop)
            engine.generate(u)

    return _best_cpu_seconds(run)


def profile_engine(engine, samples: int = 4096, stop=None) -> dict:
    """Per-part and full-engine CPU time per sample step (all ``engine.streams`` streams).

    Returns ``{"streams", "precision", "full_us", "parts": [{"name", "us", "share", "macs",
    "weight_bytes", "gflops", "gb_per_s"}], "other_us"}``; macs and weight_bytes are per
    sample step, for all streams (weights are read once per step whatever the batch).
    Convolutions that repeat per layer are timed on the first layer's weights. Every call returns
    to Python within about a second (a Ctrl-C stops it there); the engine's state is restored. stop: a
    StopSignals (None: none) whose stop asked for is a KeyboardInterrupt before the next part or call
    (wavegen.bench.stop_if_asked: bench --profile's first Ctrl-C or SIGTERM).
    """
    from wavegen.bench import stop_if_asked  # (imported here: bench sits above the engines)

    p = engine.packed
    B = engine.streams
    M, V = p["M"], p["V"]
    bytes_per_weight = M.itemsize
    rows = []
    for name, per_sample, w_off, b_off, n_out, n_in, rows_per_stream in _parts(engine):
        stop_if_asked(stop)
        x = np.random.default_rng(1).standard_normal((B * rows_per_stream, int(n_in))).astype(np.float32) * 0.1
        y = np.zeros((B * rows_per_stream, int(n_out)), np.float32)
        reps = max(2, int(2e7 // (n_out * n_in * B * rows_per_stream)))
        seconds = _best_cpu_seconds(lambda: _affine_reps(M, int(w_off), V, int(b_off), int(n_out), int(n_in), x, y, reps))
        us = seconds / reps * per_sample * 1e6
        macs = n_out * n_in * B * rows_per_stream * per_sample
        weight_bytes = n_out * n_in * bytes_per_weight * per_sample
        rows.append({"name": name, "us": us, "macs": macs, "weight_bytes": weight_bytes,
                     "gflops": 2 * macs / us / 1e3, "gb_per_s": weight_bytes / us / 1e3})
    logits = np.random.default_rng(2).standard_normal(engine.q_levels).astype(np.float32)
    scratch = np.zeros(engine.q_levels, np.float32)
    stop_if_asked(stop)
    seconds = _best_cpu_seconds(lambda: _sample_reps(logits, 20000, scratch))
    rows.append({"name": "sampling (softmax + inverse CDF)", "us": seconds / 20000 * B * 1e6, "macs": 0,
                 "weight_bytes": 0, "gflops": None, "gb_per_s": None})
    snap = engine.snapshot()
    try:
        engine.generate(uniforms(0, np.arange(B), 0, _WARMUP))
        full = _step_cpu_seconds(engine, samples, stop) / samples * 1e6
    finally:  # a Ctrl-C too leaves the engine as it came
        engine.restore(snap)
    for r in rows:
        r["share"] = r["us"] / full
    other = full - sum(r["us"] for r in rows)
    return {"streams": B, "precision": engine.precision, "full_us": full,
            "samples_per_second": B / full * 1e6, "parts": rows, "other_us": other,
            "macs_per_step": sum(r["macs"] for r in rows),
            "weight_bytes_per_step": sum(r["weight_bytes"] for r in rows)}
