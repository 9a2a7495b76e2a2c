"""The compile check (python -m wavegen.kernels.cuda --check) without a GPU: every numba-cuda kernel
(both families) builds for sm_90 and sm_80 with no spill and no float64 instruction, and a
kernel with a bare float literal is refused. Runs in subprocesses: the check needs the real
numba.cuda, the other cuda tests its simulator. (The Triton kernels take minutes each to build
on a 2-core machine: the full check runs in recipes/gpu/check.sh and by hand.)"""

import json
import os
import subprocess
import sys

import pytest

from wavegen.kernels.cuda.check import float64_instructions

ENV = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "TRITON_INTERPRET")}


def run_python(*args, timeout=600):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=ENV, timeout=timeout)


def test_float64_instructions_are_counted_and_declarations_are_not():
    ptx = ".reg .f64 %fd<3>;\n\tcvt.f64.f32 %fd1, %f1;\n\tadd.rn.f64 %fd2, %fd1, %fd1;\n\tadd.f32 %f2, %f1, %f1;\n"
    assert float64_instructions(ptx) == 2


@pytest.mark.slow
def test_every_numba_kernel_builds_clean_for_sm90_and_sm80(tmp_path):
    # one process per architecture, side by side (NVVM is single-threaded)
    runs = {arch: subprocess.Popen([sys.executable, "-m", "wavegen.kernels.cuda", "--check", "--kind", "numba",
                                    "--arch", arch, "--json", str(tmp_path / f"{arch}.json")],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
            for arch in ("90", "80")}
    rows = []
    for arch, run in runs.items():
        output, _ = run.communicate(timeout=600)
        assert run.returncode == 0, output
        rows += json.loads((tmp_path / f"{arch}.json").read_text())
    kernels = {row["kernel"] for row in rows}
    assert "wavenet_persistent" in kernels
    assert sorted(row["arch"] for row in rows) == sorted(["sm_80", "sm_90"] * len(kernels))
    for row in rows:
        assert row["spill_stores"] == row["spill_loads"] == row["float64_instructions"] == 0, row
        assert 0 < row["registers"] <= 255, row


BAD_KERNEL = """
from numba import cuda
from wavegen.kernels.cuda import KERNELS, register_numba_kernel
from wavegen.kernels.cuda import check

@cuda.jit
def scale(x):
    i = cuda.grid(1)
    if i < x.size:
        x[i] = x[i] / 3.1 + 0.7  # bare literals: float64 arithmetic

register_numba_kernel("scale", scale, "void(float32[::1])")
row = check.check_kernel(KERNELS["scale"], 90)
print(row["float64_instructions"], row["ok"])
"""


def test_a_bare_float_literal_is_refused():
    run = run_python("-c", BAD_KERNEL, timeout=300)
    assert run.returncode == 0, run.stderr
    count, ok = run.stdout.split()
    assert int(count) > 0 and ok == "False"
