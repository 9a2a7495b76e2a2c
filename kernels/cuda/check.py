"""The compile check: every shipped kernel built for sm_90 and sm_80 on a machine with no GPU.

``python -m wavegen.kernels.cuda --check [--arch 90,80] [--only NAME,...] [--kind numba|triton] [--json [FILE]]``

Imports every module of :data:`wavegen.kernels.cuda.KERNEL_MODULES` (each registers its
kernels, see :mod:`wavegen.kernels.cuda`), then per kernel and architecture:

- numba-cuda kernels: ``cuda.compile_ptx`` with the registered signature, then ``ptxas -v``
  (the CUDA toolkit's; numba-cuda must be pinned to CUDA 13.0, whose PTX that ptxas reads);
- Triton kernels: ``triton.compile`` with a ``GPUTarget``, the registered constexprs and, as a
  launch would, every pointer argument taken as 16-byte aligned (without that, Triton cannot
  vectorise loads and builds a different, register-hungrier kernel than the one that runs),
  then Triton's own ``ptxas -v`` on its PTX (sm_90 code is emitted as sm_90a);

and prints registers, spill stores/loads (bytes), static shared memory (numba kernels take
their dynamic shared memory at launch: not counted here; Triton's is its total), stack frame
and the number of float64 instructions in the PTX. Exit status 1 on any spill or float64
instruction (or a failed build), 0 otherwise; 130 on Ctrl-C. ``--json`` as in ``wavegen bench``
(:func:`wavegen.cli.options.add_json`): alone, the rows as JSON on stdout at the end (the text on
stderr); ``--json FILE`` checked before the first build and written after every row. Needs no GPU,
but the real compilers: with numba-cuda's simulator (NUMBA_ENABLE_CUDASIM) or Triton's interpreter
(TRITON_INTERPRET) on, as the tests run the engines, it is refused in one line (exit 2), as are an
unknown ``--only`` name (the known ones listed) and an ``--arch`` that is not a compute capability.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wavegen.errors import WavegenError
from wavegen.kernels.cuda import KERNEL_MODULES, KERNELS

PROG = "python -m wavegen.kernels.cuda"

# instructions on float64 operands (declarations of .f64 registers are not instructions)
_F64 = re.compile(r"^\s*(?!\.reg\b|\.param\b|\.local\b|\.shared\b|\.global\b|//)[a-z][\w.]*\.f64\b", re.M)
_REGS = re.compile(r"Used (\d+) registers")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_STACK = re.compile(r"(\d+) bytes stack frame")
_SMEM = re.compile(r"(\d+) bytes smem")


def float64_instructions(ptx: str) -> int:
    """How many PTX instructions take or produce float64 values (add.f64, cvt.f64.f32, ...)."""
    return len(_F64.findall(ptx))


def ptxas_report(ptx: str, arch: str, ptxas: str) -> dict:
    """``ptxas -v`` on ``ptx`` for ``arch`` (e.g. sm_90a): registers, spills, stack, static smem."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "kernel.ptx"
        src.write_text(ptx)
        run = subprocess.run([ptxas, "-v", f"-arch={arch}", str(src), "-o", str(Path(tmp) / "kernel.cubin")],
                             capture_output=True, text=True)
    text = run.stdout + run.stderr
    if run.returncode:
        raise RuntimeError(f"ptxas failed for {arch}: {text.strip()[-2000:]}")
    spills = _SPILLS.findall(text)
    return {"registers": max((int(r) for r in _REGS.findall(text)), default=0),
            "spill_stores": sum(int(s) for s, _ in spills), "spill_loads": sum(int(load) for _, load in spills),
            "stack_bytes": max((int(s) for s in _STACK.findall(text)), default=0),
            "static_smem_bytes": max((int(s) for s in _SMEM.findall(text)), default=0)}


def _system_ptxas() -> str:
    path = shutil.which("ptxas") or "/usr/local/cuda/bin/ptxas"
    if not os.path.exists(path):
        raise RuntimeError("ptxas not found (the CUDA 13.0 toolkit's): install it or put it on PATH")
    return path


class _NoDevice:
    """Stands in for the current device while device functions are compiled without a GPU:
    numba-cuda asks the driver for its compute capability there (and only that)."""

    def __init__(self, cc: int):
        self.compute_capability = (cc // 10, cc % 10)


def build_numba(entry, cc: int) -> dict:
    from numba import cuda
    from numba.cuda import dispatcher

    stock = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: _NoDevice(cc)
    try:
        ptx, _ = cuda.compile_ptx(entry.fn.py_func, entry.signature, cc=(cc // 10, cc % 10))
    finally:
        dispatcher.get_current_device = stock
    return {"ptx": ptx, "arch": f"sm_{cc}", "ptxas": _system_ptxas(), "shared_extra": 0}


def build_triton(entry, cc: int) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource

    fn = entry.fn
    signature = {**entry.signature, **{name: "constexpr" for name in entry.constexprs}}
    constexprs = {(fn.arg_names.index(name),): value for name, value in entry.constexprs.items()}
    # as at a launch: Triton specialises every pointer to a 16-byte-aligned tensor (every torch
    # allocation) as such, which is what lets it vectorise loads; integers are assumed nothing
    attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name, ty in entry.signature.items()
             if ty.startswith("*")}
    kernel = triton.compile(ASTSource(fn, signature, constexprs=constexprs, attrs=attrs),
                            target=GPUTarget("cuda", cc, 32), options={"num_warps": entry.num_warps, "num_stages": 1})
    arch = re.search(r"\.target\s+(sm_\w+)", kernel.asm["ptx"]).group(1)
    return {"ptx": kernel.asm["ptx"], "arch": arch, "ptxas": get_ptxas(cc).path,
            "shared_extra": int(kernel.metadata.shared)}


def check_kernel(entry, cc: int) -> dict:
    """One kernel for one compute capability (80, 90): the report row."""
    started = time.monotonic()
    built = (build_numba if entry.kind == "numba" else build_triton)(entry, cc)
    row = {"kernel": entry.name, "kind": entry.kind, "arch": built["arch"],
           **ptxas_report(built["ptx"], built["arch"], built["ptxas"]),
           "float64_instructions": float64_instructions(built["ptx"])}
    if built["shared_extra"]:
        row["static_smem_bytes"] = max(row["static_smem_bytes"], built["shared_extra"])
    row["seconds"] = round(time.monotonic() - started, 1)
    row["ok"] = row["spill_stores"] == 0 and row["spill_loads"] == 0 and row["float64_instructions"] == 0
    return row


def format_row(row: dict) -> str:
    if "error" in row:
        return f"{row['kernel']:<28} {row['arch']:<8} FAILED: {row['error']}"
    return (f"{row['kernel']:<28} {row['arch']:<8} {row['registers']:>4} regs  "
            f"spills {row['spill_stores']}/{row['spill_loads']} B  stack {row['stack_bytes']} B  "
            f"smem {row['static_smem_bytes']} B  f64 {row['float64_instructions']}  "
            f"{'ok' if row['ok'] else 'REFUSED'}  ({row['seconds']} s)")


class CheckError(WavegenError):
    """A check that cannot run as asked: a simulator on, a kernel name or architecture unknown."""


def simulators_on() -> list[str]:
    """The simulators switched on in this environment, as ``NAME=value``, asked of numba and Triton themselves
    (they read their variables their own ways: numba's as an integer, Triton's as a yes/no word)."""
    on = []
    if os.environ.get("NUMBA_ENABLE_CUDASIM") is not None:
        from numba import config

        if config.ENABLE_CUDASIM:
            on.append(f"NUMBA_ENABLE_CUDASIM={os.environ['NUMBA_ENABLE_CUDASIM']}")
    if os.environ.get("TRITON_INTERPRET") is not None:
        try:
            import triton

            interpret = triton.knobs.runtime.interpret
        except (ImportError, AttributeError):  # no Triton (its kernels fail as builds), or one without knobs
            interpret = os.environ["TRITON_INTERPRET"].strip().lower() in ("1", "true", "on", "yes")
        if interpret:
            on.append(f"TRITON_INTERPRET={os.environ['TRITON_INTERPRET']}")
    return on


def refuse_simulators() -> None:
    """CheckError where numba-cuda's simulator or Triton's interpreter is on: the check builds the kernels with
    the real compilers (no GPU needed), which those replace with Python; what it measures (registers, spills,
    float64 instructions in the PTX) does not exist there, so it cannot run under them."""
    on = simulators_on()
    if on:
        names = " and ".join(item.split("=")[0] for item in on)
        raise CheckError(f"{' and '.join(on)}: the compile check builds the real kernels with numba-cuda's and "
                         "Triton's compilers (it needs no GPU) and measures their registers and spills, which a "
                         f"simulator has none of; unset {names} (e.g. env -u {' -u '.join(names.split(' and '))} "
                         f"{PROG} --check)")


def parse_archs(text: str) -> list[int]:
    """``--arch`` "90,80" → [90, 80]; CheckError naming a value that is not a compute capability."""
    archs = []
    for item in text.split(","):
        item = item.strip().removeprefix("sm_")
        if not (item.isdigit() and 50 <= int(item) <= 129):
            what = repr(item) if item else "an empty item"
            raise CheckError(f"--arch {text}: {what} is not a compute capability; give numbers such as 90,80 (sm_90 "
                             "and sm_80)")
        archs.append(int(item))
    return archs


def load_kernels() -> dict:
    """Import every kernel module (each registers its kernels) → the registry; CheckError where one cannot be."""
    for module in KERNEL_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise CheckError(f"{module} cannot be imported ({type(err).__name__}: {err}); the check needs the "
                             "cuda extra: pip install 'wavegen[cuda]'") from None
    return KERNELS


def kernel_names(only=None, kind=None) -> list[str]:
    """The registered kernels to build: those named in ``only`` (a name, or its base name before "[" for all
    its variants), of ``kind`` "numba" or "triton"; CheckError naming one that is no kernel, or not of ``kind``."""
    def named(name):
        return only is None or name in only or name.split("[")[0] in only

    names = [n for n in KERNELS if named(n) and (kind is None or KERNELS[n].kind == kind)]
    for asked in only or ():
        matches = [n for n in KERNELS if asked in (n, n.split("[")[0])]
        if not matches:
            bases = sorted({n.split("[")[0] for n in KERNELS})
            raise CheckError(f"--only {asked}: no such kernel; the kernels are {', '.join(bases)} (a name alone "
                             "builds all its [variants])")
        if not any(n in names for n in matches):
            raise CheckError(f"--only {asked}: a {KERNELS[matches[0]].kind} kernel, and --kind {kind} leaves it out")
    return names


def run_check(archs=(90, 80), only=None, kind=None):
    """Build every registered kernel (or those named in ``only``, or of ``kind`` "numba" or
    "triton") for each compute capability: yields one report row per build as it finishes.
    CheckError (before any build) where a simulator is on or a name is unknown."""
    refuse_simulators()
    load_kernels()
    names = kernel_names(only, kind)
    for name in names:
        for cc in archs:
            try:
                yield check_kernel(KERNELS[name], cc)
            except Exception as err:  # noqa: BLE001 - a kernel that does not build is reported and fails the check
                yield {"kernel": name, "arch": f"sm_{cc}", "error": f"{type(err).__name__}: {err}"[:600], "ok": False}


def _is_rows(value) -> bool:
    """Whether a JSON value is what ``--check --json`` writes: its rows (a kernel and an arch each)."""
    return isinstance(value, list) and all(isinstance(r, dict) and {"kernel", "arch"} <= r.keys() for r in value)


def main(argv=None) -> int:
    from wavegen.cli.options import add_json, check_json_file  # the options every wavegen command shares

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     epilog="--json FILE is written after every row: a check cut short leaves what "
                                            "it found. With --json alone the rows print on stderr as they finish, "
                                            "the JSON on stdout at the end.")
    parser.add_argument("--check", action="store_true", help="compile every shipped kernel (the only action)")
    parser.add_argument("--arch", default="90,80", help="compute capabilities, comma-separated (default 90,80)")
    parser.add_argument("--only", default=None, help="kernel names, comma-separated (default: all)")
    parser.add_argument("--kind", choices=["numba", "triton"], default=None, help="only kernels of this kind")
    add_json(parser, "the rows", model_word=False)
    args = parser.parse_args(argv)
    if not args.check:
        parser.error("nothing to do: give --check")
    try:
        archs = parse_archs(args.arch)
        only = [name.strip() for name in args.only.split(",") if name.strip()] if args.only is not None else None
        if only == []:
            raise CheckError(f"--only {args.only!r}: give kernel names, comma-separated")
        refuse_simulators()  # before the kernel modules are imported: the simulator would replace their compilers
        load_kernels()
        kernel_names(only, args.kind)  # an unknown name: said before the first build
        check_json_file(args, "check.json", "kernel check's rows", _is_rows)  # before the first build, not after it
        return _check(args, archs, only)
    except WavegenError as err:  # a simulator on, a name unknown, a --json FILE that cannot be written
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2


def _check(args, archs: list[int], only: list[str] | None) -> int:
    """The rows as they finish, printed (on stderr where a bare --json prints them on stdout as JSON at the
    end) and written to --json FILE after each one. Ctrl-C: the rows so far kept, one line, 130."""
    from wavegen.cli.options import JSON_STDOUT, emit_json, json_file

    text = sys.stderr if args.json == JSON_STDOUT else sys.stdout
    rows = []
    try:
        for row in run_check(archs, only, args.kind):
            rows.append(row)
            print(format_row(row), file=text, flush=True)
            if json_file(args):  # after every row: a check cut short still leaves what it found
                emit_json(args, rows, indent=1, kept="the rows above have the results")
    except KeyboardInterrupt:
        if args.json == JSON_STDOUT:
            emit_json(args, rows, indent=1)
        print(f"{PROG}: interrupted after {len(rows)} kernel build(s)" +
              (f" (in {args.json})" if json_file(args) and rows else ""), file=sys.stderr)
        return 130
    if args.json == JSON_STDOUT:
        emit_json(args, rows, indent=1)
    bad = [row for row in rows if not row["ok"]]
    print(f"{len(rows) - len(bad)} of {len(rows)} kernel builds clean" + (": FAILED" if bad else ""), file=text)
    return 1 if bad else 0


if __name__ == "__main__":
    from wavegen.signals import end_program

    end_program(main())
