"""Collect what check.sh wrote under OUTDIR: OUTDIR/summary.json (everything), OUTDIR/summary.md
(stages, compile check, speed) and OUTDIR/benchmarks_rows.md, the GPU rows for
docs/BENCHMARKS.md (GPU model, driver, torch version, the command, samples/s per backend and
batch, the issue-12 targets checked).  python recipes/gpu/summary.py OUTDIR"""

import json
import sys
from pathlib import Path

COMMAND = "bash recipes/gpu/check.sh OUTDIR"
# (model, backend prefix, batch or None for the best batch, minimum samples/s, what issue 12 asks)
TARGETS = [("wavenet-medium", "cuda", 1, 150_000, "one stream >= 150,000 samples/s"),
           ("samplernn-3tier", "cuda", 1, 100_000, "one stream >= 100,000 samples/s"),
           ("wavenet-medium", "cuda", None, 30_000_000, "all streams >= 30,000,000 samples/s"),
           ("samplernn-3tier", "cuda", None, 10_000_000, "all streams >= 10,000,000 samples/s")]


def load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect(out: Path) -> dict:
    stages = []
    if (out / "stages.jsonl").exists():
        stages = [json.loads(line) for line in (out / "stages.jsonl").read_text().splitlines() if line.strip()]
    bench = {}  # model → {"rows": [...]} merged over the per-backend runs (bench_<model>__<backend>.json)
    for path in sorted(out.glob("bench_*.json")):
        result = load(path)
        if result:
            bench.setdefault(path.stem[len("bench_"):].split("__")[0], {"rows": []})["rows"] += result.get("rows", [])
    for result in bench.values():
        torch_rate = {r["batch"]: r["samples_per_second"] for r in result["rows"] if r["backend"] == "torch"}
        for r in result["rows"]:
            if r.get("speedup_vs_torch") is None and r["batch"] in torch_rate and r["backend"] != "torch":
                r["speedup_vs_torch"] = r["samples_per_second"] / torch_rate[r["batch"]]
    crossover = {}  # model → rows, merged over the per-path runs (crossover_<model>__<path>.json)
    for path in sorted(out.glob("crossover_*.json")):
        crossover.setdefault(path.stem[len("crossover_"):].split("__")[0], []).extend((load(path) or {}).get("rows", []))
    variants = {path.stem[len("variants_"):]: (load(path) or {}).get("rows", [])  # model → rows by option
                for path in sorted(out.glob("variants_*.json"))}
    return {"machine": load(out / "machine.json") or {}, "stages": stages, "check": load(out / "check.json") or [],
            "bench": bench, "crossover": crossover, "variants": variants, "ncu": ncu_figures(out),
            "train": {p.stem[len("train_"):]: load(p) for p in sorted(out.glob("train_*.json"))}}


NCU_METRICS = ("Duration", "Memory Throughput", "DRAM Throughput", "Compute (SM) Throughput", "Achieved Occupancy",
               "Registers Per Thread", "Block Size", "Grid Size", "Warp Cycles Per Issued Instruction")


def ncu_figures(out: Path) -> dict:
    """ncu_<case>.log → {metric: "value unit"} for the metrics above (the first of each)."""
    figures = {}
    for path in sorted(out.glob("ncu_*.log")):
        found = {}
        for line in path.read_text(errors="replace").splitlines():
            for metric in NCU_METRICS:
                if line.strip().startswith(metric + " ") and metric not in found:
                    rest = line.split()[len(metric.split()):]  # ncu's columns: [unit] value
                    found[metric] = " ".join(rest[::-1])
        figures[path.stem[len("ncu_"):]] = found
    return figures


def crossover_rows(crossover: dict) -> list[str]:
    """Per model and stream count, samples/s of each path (bench names), and the faster in fp32."""
    lines = []
    for model, rows in crossover.items():
        backends = sorted({r["backend"] for r in rows}, key=lambda b: ("path=small" not in b, b))  # small first
        rate = {(r["backend"], r["batch"]): r["samples_per_second"] for r in rows}
        lines += ["", f"{model}: samples/s (all streams) by path", "",
                  "| streams | " + " | ".join(backends) + " | faster in fp32 |",
                  "| ---: | " + " | ".join("---:" for _ in backends) + " | --- |"]
        for batch in sorted({r["batch"] for r in rows}):
            cells = [f"{rate[(b, batch)]:,.0f}" if (b, batch) in rate else "-" for b in backends]
            small, large = rate.get(("cuda:path=small", batch)), rate.get(("cuda:path=large", batch))
            faster = "-" if small is None or large is None else "small" if small >= large else "large"
            lines.append(f"| {batch} | " + " | ".join(cells) + f" | {faster} |")
    return lines


def variant_rows(variants: dict) -> list[str]:
    """Per model, samples/s of the persistent kernel with each of its options (bench names
    cuda:path=small:OPTION=VALUE...; without one, the defaults) at each stream count."""
    lines = []
    for model, rows in variants.items():
        lines += ["", f"{model}: the persistent kernel's options", "",
                  "| options | streams | samples/s (all) |", "| --- | ---: | ---: |"]
        for r in rows:
            options = ", ".join(r["backend"].split(":")[2:]) or "defaults"
            lines.append(f"| {options} | {r['batch']} | {r['samples_per_second']:,.0f} |")
    return lines


def best(rows: list[dict], backend: str, batch: int | None) -> dict | None:
    """The fastest row of ``backend`` (any precision suffix) at ``batch`` (None: any batch)."""
    hits = [r for r in rows if r["backend"].split("-")[0] == backend and (batch is None or r["batch"] == batch)]
    return max(hits, key=lambda r: r["samples_per_second"], default=None)


def benchmark_rows(summary: dict) -> list[str]:
    """Markdown for docs/BENCHMARKS.md: where it ran, generation, training, targets."""
    m = summary["machine"]
    lines = [f"GPU: {m.get('gpu')}, driver {m.get('driver')}, CUDA {m.get('cuda')}; torch {m.get('torch')}, "
             f"triton {m.get('triton')}, numba-cuda {m.get('numba_cuda')}; command: `{COMMAND}`", "",
             "| model | backend | batch | samples/s (all) | samples/s per stream | vs torch |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for model, result in summary["bench"].items():
        for r in (result or {}).get("rows", []):
            speedup = f"{r['speedup_vs_torch']:.1f}x" if r.get("speedup_vs_torch") else "-"
            lines.append(f"| {model} | {r['backend']} | {r['batch']} | {r['samples_per_second']:,.0f} | "
                         f"{r['samples_per_second_per_stream']:,.0f} | {speedup} |")
    lines += ["", "| training | batch x seq_len | s/step | samples/s | peak memory |", "| --- | --- | ---: | ---: | ---: |"]
    for model, result in summary["train"].items():
        decay = ((result or {}).get("model") or {}).get("ema_decay")
        label = f"{model} (average of the weights, decay {decay})" if decay else model
        for r in (result or {}).get("rows", []):
            lines.append(f"| {label} | {r['batch']} x {r['seq_len']} | {r['seconds_per_step']:.3f} | "
                         f"{r['samples_per_second']:,.0f} | {r['peak_memory_bytes'] / 2**30:.2f} GiB |")
    lines += crossover_rows(summary.get("crossover", {}))
    lines += variant_rows(summary.get("variants", {}))
    lines += ["", "| target (issue 12) | measured | met |", "| --- | ---: | --- |"]
    for model, backend, batch, minimum, what in TARGETS:
        r = best((summary["bench"].get(model) or {}).get("rows", []), backend, batch)
        got = f"{r['samples_per_second']:,.0f} ({r['backend']}, batch {r['batch']})" if r else "not measured"
        lines.append(f"| {model}: {what} | {got} | {'-' if r is None else 'yes' if r['samples_per_second'] >= minimum else 'no'} |")
    return lines


def main(outdir: str) -> None:
    out = Path(outdir)
    summary = collect(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    rows = benchmark_rows(summary)
    (out / "benchmarks_rows.md").write_text("\n".join(rows) + "\n")
    lines = ["# GPU check", "", "| stage | exit status | seconds |", "| --- | --- | ---: |"]
    lines += [f"| {s['stage']} | {s['status']} | {s['seconds']} |" for s in summary["stages"]]
    lines += ["", "Compile check:"]
    for row in summary["check"]:
        lines.append(f"- {row.get('kernel')} {row.get('arch')}: " + ", ".join(
            f"{k}={row[k]}" for k in ("registers", "spill_stores", "spill_loads", "static_smem_bytes",
                                      "float64_instructions", "error") if k in row))
    for case, found in summary.get("ncu", {}).items():
        lines += ["", f"ncu {case}: " + ("; ".join(f"{k} {v}" for k, v in found.items()) or "no figures (see the log)")]
    lines += [""] + rows
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1])
