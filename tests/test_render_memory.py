"""The memory check's estimate of a render's window (render.loop.window_bytes) against what a real render
holds: numpy's arrays are traced by tracemalloc, so the peak is measured, not guessed. The estimate
must cover the real peak and not say much more (a render refused that would fit)."""

import tracemalloc

import numpy as np
import pytest

from render_helpers import Q, SR, make_model, settings
from wavegen.generate import available_backends
from wavegen.render import loop, render, shard

pytestmark = pytest.mark.skipif(available_backends("samplernn").get("numba") is not None,
                                reason="no numba engine here (the torch engine's tensors are not traced)")


def traced_peak(model, out, s) -> int:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        render(model, out, s, progress=False)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.slow
@pytest.mark.parametrize("guard", [False, True])
@pytest.mark.parametrize("streams", [1, 4])
def test_the_window_estimate_covers_a_real_window_and_not_much_more(tmp_path, monkeypatch, guard, streams):
    """The estimate said 30 bytes a sample of a window where mu-law's dequantize alone took 40 (its float64
    temporaries), and nothing of the chunk being drawn (uniforms' temporaries: 24-32 bytes a value, a whole
    block without the guard). The growth of the peak between two window lengths is compared, so what does
    not grow with the window (model, engine, imports) cancels out; every window of white noise fails the
    guard, so its redraws are measured too."""
    model = make_model(tmp_path / "model", output_bias=np.zeros(Q, dtype=np.float32))
    # a chunk as long as the block (after the first), however busy the machine: the estimate's case
    monkeypatch.setattr(shard, "CHUNK_WALL_SECONDS", 1e9)
    small, large = 4.0, 20.0
    peaks, estimates = [], []
    for seconds in (1.0, small, large):  # the first: numba's compiling and caches, not measured
        kw = dict(guard_seconds=seconds, block_seconds=0.05, guard_attempts=1) if guard else \
            dict(block_seconds=seconds)
        s = settings(seconds, streams=streams, backend="numba", guard=guard, **kw)
        peaks.append(traced_peak(model, tmp_path / f"out{len(peaks)}", s))
        window = int(seconds * SR)
        estimates.append(loop.window_bytes(streams, window, min(s.block_seconds * SR, window), guard))
    real, estimate = peaks[2] - peaks[1], estimates[2] - estimates[1]
    assert real <= estimate <= 2 * real, (estimate / (streams * SR * (large - small)),
                                          real / (streams * SR * (large - small)))

