"""The compile check (python -m wavegen.kernels.cuda --check) without a GPU: every shipped kernel,
numba-cuda and Triton, both families, builds for sm_90 and sm_80 with no spill and no float64
instruction; a numba kernel with a bare float literal and a Triton kernel too big for its
registers are refused; ``--json [FILE]`` as wavegen's commands take it, a cut-short check keeping its
rows. Runs in subprocesses: the check needs the real numba.cuda and Triton
compilers, the other cuda tests their simulators (what it refuses before any build runs in this process).
Cost on a 2-core machine: about 80 s of CPU for the numba kernels (NVVM) and 50 s for the 42 Triton
builds, in two processes side by side."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import cudasim  # noqa: F401  (the simulators on, as in every cuda test: the kernel modules load under them here)
from wavegen.kernels.cuda import check
from wavegen.kernels.cuda.check import float64_instructions

SIMULATORS = ("NUMBA_ENABLE_CUDASIM", "TRITON_INTERPRET")
ENV = {k: v for k, v in os.environ.items() if k not in SIMULATORS}


def run_python(*args, timeout=600):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=ENV, timeout=timeout)


def check_here(monkeypatch, capsys, *args):
    """``python -m wavegen.kernels.cuda --check ARGS`` in this process, for what the check refuses before any build
    (a subprocess imports every kernel module, seconds each): the modules loaded first, as every cuda test loads
    them, then the simulator variables unset as in ENV → (exit status, stdout, stderr). A build begun would print
    its row on stdout."""
    check.load_kernels()
    for name in SIMULATORS:
        monkeypatch.delenv(name, raising=False)
    capsys.readouterr()
    status = check.main(["--check", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_float64_instructions_are_counted_and_declarations_are_not():
    ptx = ".reg .f64 %fd<3>;\n\tcvt.f64.f32 %fd1, %f1;\n\tadd.rn.f64 %fd2, %fd1, %fd1;\n\tadd.f32 %f2, %f1, %f1;\n"
    assert float64_instructions(ptx) == 2


@pytest.mark.slow
def test_every_kernel_builds_clean_for_sm90_and_sm80(tmp_path):
    # one process per architecture, side by side (NVVM and ptxas are single-threaded)
    runs = {arch: subprocess.Popen([sys.executable, "-m", "wavegen.kernels.cuda", "--check", "--arch", arch,
                                    "--json", str(tmp_path / f"{arch}.json")],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
            for arch in ("90", "80")}
    rows = {}
    for arch, run in runs.items():
        output, _ = run.communicate(timeout=900)
        assert run.returncode == 0, output
        rows[arch] = json.loads((tmp_path / f"{arch}.json").read_text())
    kernels = {row["kernel"] for row in rows["90"]}
    assert kernels == {row["kernel"] for row in rows["80"]}
    assert {"wavenet_persistent", "samplernn_persistent"} <= kernels
    assert {f"wavenet_large_{part}[{p}]" for part in ("layers", "head") for p in ("fp32", "fp16", "bf16")} <= kernels
    assert {row["kind"] for row in rows["90"]} == {"numba", "triton"}
    for row in rows["90"] + rows["80"]:
        assert row["arch"] in ("sm_90", "sm_90a", "sm_80"), row
        assert row["spill_stores"] == row["spill_loads"] == row["float64_instructions"] == 0, row
        assert 0 < row["registers"] <= 255, row


ONE_KERNEL = ["-m", "wavegen.kernels.cuda", "--check", "--arch", "90", "--kind", "triton", "--only"]
CHEAP = "srnn_out_sample[fp32]"  # a Triton kernel that builds in about a second


@pytest.mark.slow
def test_a_bare_json_prints_the_rows_on_stdout_and_a_file_takes_them_as_they_finish(tmp_path):
    """``--json [FILE]`` as in wavegen eval/info/bench (wavegen.cli.options): alone, the rows as JSON on stdout
    (the text on stderr); with FILE, the text on stdout and the rows in FILE. It took only ``--json FILE``."""
    bare = run_python(*ONE_KERNEL, CHEAP, "--json", timeout=300)
    assert bare.returncode == 0, bare.stderr
    rows = json.loads(bare.stdout)
    assert [(row["kernel"], row["arch"], row["ok"]) for row in rows] == [(CHEAP, "sm_90a", True)]
    assert f"{CHEAP:<28} sm_90a" in bare.stderr and "1 of 1 kernel builds clean" in bare.stderr
    out = tmp_path / "deep" / "check.json"  # its folder made, as every --json FILE's
    written = run_python(*ONE_KERNEL, CHEAP, "--json", str(out), timeout=300)
    assert written.returncode == 0, written.stderr
    assert json.loads(out.read_text())[0]["registers"] == rows[0]["registers"]
    assert written.stdout.splitlines()[0].startswith(f"{CHEAP:<28} sm_90a") and "1 of 1 kernel builds clean" in \
        written.stdout


def test_a_json_file_that_cannot_be_written_is_refused_before_any_build(tmp_path, monkeypatch, capsys):
    """A folder, or a file under a file, as --json FILE: one line naming it, exit 2, no kernel built
    (it was an IsADirectoryError traceback after the first kernel's build)."""
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "config.json").write_text('{"model_type": "wavenet"}')  # a model's config: never written over
    for path, why in ((tmp_path, "is a folder; give a file name (e.g. "),
                      (tmp_path / "a_file" / "check.json", "is a file, not a folder"),
                      (tmp_path / "config.json", "holds JSON that is not a kernel check's rows; not overwritten")):
        status, out, err = check_here(monkeypatch, capsys, *ONE_KERNEL[3:], CHEAP, "--json", str(path))
        assert status == 2 and out == "", (out, err)
        assert err.startswith(f"python -m wavegen.kernels.cuda: error: --json {path}: ") and why in \
            err and len(err.splitlines()) == 1, err
    assert (tmp_path / "a_file").read_text() == "not a folder"
    assert (tmp_path / "config.json").read_text() == '{"model_type": "wavenet"}'


def test_a_check_cut_short_leaves_the_rows_it_found(tmp_path):
    """Ctrl-C after the first build: --json FILE holds its row (written after every row), a bare --json prints the
    rows so far; one line says so, exit 130 (it was a traceback)."""
    kernels = [CHEAP, "srnn_mlp_input[fp32]", "srnn_linear[relu-fp32]", "srnn_linear[nobias-fp32]"]
    for target in (str(tmp_path / "check.json"), None):
        cmd = [sys.executable, *ONE_KERNEL, ",".join(kernels), "--json", *([target] if target else [])]
        run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        text = run.stdout if target else run.stderr  # the rows as they finish
        first = text.readline().split()
        assert first and first[0] in kernels, first  # built in the order they were registered
        if target:  # the file is written right after the row prints
            deadline = time.monotonic() + 30
            while not (tmp_path / "check.json").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=120)
        assert run.returncode == 130, (out, err)
        rows = json.loads((tmp_path / "check.json").read_text() if target else out)
        assert rows[0]["kernel"] == first[0] and len(rows) < 4, rows
        assert err.strip().splitlines()[-1].startswith("python -m wavegen.kernels.cuda: interrupted after "), err
        assert "Traceback" not in err, err


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


SPILLING_TRITON_KERNEL = """
import triton
import triton.language as tl
from wavegen.kernels.cuda import KERNELS, register_triton_kernel
from wavegen.kernels.cuda import check

@triton.jit
def hold(x, y, N: tl.constexpr):
    r = tl.arange(0, N)
    a = tl.load(x + r[:, None] * N + r[None, :])
    b = tl.load(x + N * N + r[:, None] * N + r[None, :])
    s = tl.sum(a, axis=0) + tl.sum(b, axis=1)  # every value of both tiles read before any is used again
    tl.store(y + r[:, None] * N + r[None, :], a * s[None, :] + b * s[:, None])

register_triton_kernel("hold", hold, {"x": "*fp32", "y": "*fp32"}, {"N": 64}, num_warps=1)  # 256 floats a thread
row = check.check_kernel(KERNELS["hold"], 90)
print(row["spill_stores"], row["ok"])
"""


def test_a_triton_kernel_that_spills_is_refused(tmp_path):
    script = tmp_path / "spilling.py"  # Triton reads a kernel's source from its file
    script.write_text(SPILLING_TRITON_KERNEL)
    run = run_python(str(script), timeout=300)
    assert run.returncode == 0, run.stderr
    spilled, ok = run.stdout.split()
    assert int(spilled) > 0 and ok == "False"


def test_a_compiler_that_cannot_load_its_registries_makes_the_backend_unavailable():
    # On the GPU machine (numpy 2.5.2, numba-cuda 0.30.4) the cuda engines built and then failed at
    # their first kernel compile (np.row_stack, removed in numpy 2.5). The availability check loads
    # the same registries first: here they load; without row_stack they do not, and it says why.
    probe = ("import sys, numpy\n"
             "if sys.argv[1] == 'old-numba-cuda-on-new-numpy': del numpy.row_stack\n"
             "from wavegen.kernels.cuda.engines import compiler_loads\n"
             "print(compiler_loads())\n")
    assert run_python("-c", probe, "as-installed").stdout.strip() == "None"
    why = run_python("-c", probe, "old-numba-cuda-on-new-numpy").stdout.strip()
    assert "fails to load its compiler" in why and "row_stack" in why and "numpy < 2.5" in why, why


@pytest.mark.parametrize("variables", [{"NUMBA_ENABLE_CUDASIM": "1"}, {"TRITON_INTERPRET": "1"},
                                       {"NUMBA_ENABLE_CUDASIM": "1", "TRITON_INTERPRET": "true"}])
def test_a_simulator_switched_on_is_refused_in_one_line(tmp_path, variables):
    """With the tests' simulator variables set (numba-cuda's simulator, Triton's interpreter), the check has no
    compiler to build with: one line naming each variable and what to do, exit 2, no --json FILE written (it was
    a RuntimeError traceback after the first build began, exit 1)."""
    out = tmp_path / "check.json"
    run = subprocess.run([sys.executable, *ONE_KERNEL, CHEAP, "--json", str(out)], capture_output=True, text=True,
                         env={**ENV, **variables}, timeout=120)
    assert run.returncode == 2 and run.stdout == "", (run.stdout, run.stderr)
    line, = run.stderr.splitlines()
    named = " and ".join(f"{name}={value}" for name, value in variables.items())
    assert line.startswith(f"python -m wavegen.kernels.cuda: error: {named}: the compile check builds the real "
                           "kernels"), line
    assert f"unset {' and '.join(variables)} (e.g. env -u {' -u '.join(variables)} " in line, line
    assert not out.exists()


def test_a_simulator_variable_set_to_off_is_no_refusal():
    """NUMBA_ENABLE_CUDASIM=0 and TRITON_INTERPRET=0 are the simulators off, as numba and Triton read them: the
    check goes on to its arguments (here an unknown kernel, so that nothing is built)."""
    run = subprocess.run([sys.executable, "-m", "wavegen.kernels.cuda", "--check", "--only", "nosuch"],
                         capture_output=True, text=True, env={**ENV, "NUMBA_ENABLE_CUDASIM": "0",
                                                              "TRITON_INTERPRET": "0"}, timeout=300)
    assert run.returncode == 2 and "--only nosuch: no such kernel" in run.stderr, run.stderr


def test_unknown_names_and_architectures_are_refused_in_one_line_before_any_build(monkeypatch, capsys):
    """An --only name no kernel has (the known ones listed, by base name), one left out by --kind, an --arch that
    is not a compute capability: one line each, exit 2 (a name was a SystemExit of exit 1 listing every variant,
    one of the other kind was called 'no such kernel', an --arch a ValueError traceback)."""
    prefix = "python -m wavegen.kernels.cuda: error: "
    cases = {("--only", "nosuch,wavenet_persistent"): (
                 "--only nosuch: no such kernel; the kernels are samplernn_persistent, srnn_layer, srnn_linear, "),
             ("--kind", "triton", "--only", "samplernn_persistent"): (
                 "--only samplernn_persistent: a numba kernel, and --kind triton leaves it out"),
             ("--arch", "9x"): "--arch 9x: '9x' is not a compute capability; give numbers such as 90,80",
             ("--arch", "90,"): "--arch 90,: an empty item is not a compute capability",
             ("--only", ","): "--only ',': give kernel names, comma-separated"}
    for args, said in cases.items():
        status, out, err = check_here(monkeypatch, capsys, *args)
        assert status == 2 and out == "", (args, out, err)
        line, = err.splitlines()
        assert line.startswith(prefix + said), (args, line)
        if args[0] == "--only" and args[1].startswith("nosuch"):
            assert line.endswith("wavenet_large_layers, wavenet_persistent (a name alone builds all its [variants])")
