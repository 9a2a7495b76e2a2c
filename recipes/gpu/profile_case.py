"""One engine run to profile on the GPU (check.sh runs it under ncu): a bench model with random
weights, one cuda backend (a bench name, e.g. ``cuda:path=small``), a warm-up call that
compiles the kernels, then one measured call of SAMPLES samples per stream. ncu is pointed at
the launches of the measured call (``--launch-skip``); this script checks nothing itself.

    python recipes/gpu/profile_case.py MODEL BACKEND STREAMS SAMPLES
    ncu --launch-skip N --launch-count 1 ... python recipes/gpu/profile_case.py samplernn-3tier cuda:path=small 1 64
"""

import sys
import time

import numpy as np
import torch

from wavegen.bench import build_engine, load_bench_model
from wavegen.generate import uniforms

model, backend, streams, samples = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
spec, _ = load_bench_model(model)
engine = build_engine(spec, streams, backend, "cuda")
ids = np.arange(streams)
engine.generate(uniforms(0, ids, 0, samples))  # compiles
torch.cuda.synchronize()
start = time.perf_counter()
engine.generate(uniforms(0, ids, samples, samples))
torch.cuda.synchronize()
seconds = time.perf_counter() - start
print(f"{model} {backend} x{streams}: {samples} samples in {seconds * 1e3:.2f} ms = "
      f"{streams * samples / seconds:,.0f} samples/s ({seconds / samples * 1e6:.1f} us per step)")
