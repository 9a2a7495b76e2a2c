"""Training step time of SampleRNN with the MLP's first layer as a convolution or folded into tables.

    python recipes/quality/fold_speed.py [--config issue13|tiny] [--batch 32] [--seq-len 1024]
                                         [--rounds 3] [--steps 2] [--threads 1] [--json [FILE]]

One process, one model, the same batches: each round times ``steps`` optimizer steps (forward,
backward, Adam) with the convolution path, then ``steps`` with the folded path (the order
alternates from round to round), so both see the same machine load and the ratio is measured
in the same run. Reports wall and CPU seconds per step (on a shared machine CPU seconds are the
fairer figure). The path is chosen by ``wavegen.models.samplernn.FOLD_MIN_SAMPLES_PER_LEVEL``
(0: always fold, a huge value: never), the switch the model itself reads.

Configs: ``issue13`` is the side-by-side comparison's model (frames 64/16, GRU 256, emb 256,
linear 8-bit, learned h0, weight norm; docs/QUALITY.md), ``tiny`` the samplernn-tiny preset.

The figures print as JSON; ``--json FILE`` also writes them there (checked before the model is
built), as wavegen's commands take ``--json [FILE]`` (wavegen.cli.options; ``--json`` alone: stdout).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from wavegen.bench import check_counts
from wavegen.cli.options import add_json, check_json_file, emit_json, json_file
from wavegen.config import ConfigError
from wavegen.errors import WavegenError
from wavegen.fileio import strict_json
from wavegen.models import samplernn
from wavegen.models.samplernn import SampleRNN, SampleRNNConfig

CONFIGS = {
    "issue13": {"frame_sizes": [64, 16], "n_rnn": 1, "dim": 256, "emb_size": 256, "q_levels": 256,
                "quantization": "linear"},
    "tiny": {"frame_sizes": [16, 4], "n_rnn": 1, "dim": 128, "emb_size": 32, "q_levels": 256, "quantization": "mu-law"},
}
PATHS = {"conv": 10 ** 12, "folded": 0}


def timed_steps(model, optimizer, batches, steps: int) -> tuple[float, float, float]:
    """→ (wall s/step, CPU s/step, last loss in nats) over ``steps`` full optimizer steps."""
    state = None
    wall, cpu = time.perf_counter(), time.process_time()
    for step in range(steps):
        loss, state = model(batches[step % len(batches)], state)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps, float(loss.detach())


def check_sizes(args, frame: int) -> None:
    """ConfigError for a count it cannot time: --batch, --rounds, --steps and --threads at least 1 (as
    wavegen bench's counts, bench.check_counts), --seq-len a positive multiple of the config's top frame
    (``frame`` samples), as the model reads its windows."""
    check_counts([("--batch", args.batch, 1), ("--rounds", args.rounds, 1), ("--steps", args.steps, 1),
                  ("--threads", args.threads, 1)])
    if args.seq_len < 1 or args.seq_len % frame:
        raise ConfigError(f"--seq-len {args.seq_len}: must be a positive multiple of {frame} "
                          f"(--config {args.config}'s top frame)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="issue13")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per path per round")
    ap.add_argument("--threads", type=int, default=1)
    add_json(ap, "the figures", model_word=False)
    args = ap.parse_args()
    try:
        check_json_file(args, "fold_speed.json", "fold_speed result",  # before the minutes of timing, not after them
                        lambda v: isinstance(v, dict) and {"config", "conv_over_folded_cpu"} <= v.keys())
        # before the model and the timing, one line (they were tracebacks: 0 steps divided by zero)
        check_sizes(args, CONFIGS[args.config]["frame_sizes"][0])
    except WavegenError as err:
        ap.exit(2, f"{ap.prog}: error: {err}\n")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SampleRNN(SampleRNNConfig(**CONFIGS[args.config])).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    ctx, q = model.context_samples, model.config.q_levels
    gen = torch.Generator().manual_seed(0)
    batches = [{"codes": torch.randint(0, q, (args.batch, ctx + args.seq_len), generator=gen),
                "reset": torch.full((args.batch,), i == 0)} for i in range(2)]
    times = {name: [] for name in PATHS}
    for name, threshold in PATHS.items():  # warm-up, untimed: allocator, first-call costs
        samplernn.FOLD_MIN_SAMPLES_PER_LEVEL = threshold
        timed_steps(model, optimizer, batches, 1)
    for r in range(args.rounds):
        for name in (list(PATHS) if r % 2 == 0 else list(PATHS)[::-1]):
            samplernn.FOLD_MIN_SAMPLES_PER_LEVEL = PATHS[name]
            times[name].append(timed_steps(model, optimizer, batches, args.steps)[:2])
    result = {"config": args.config, "model": CONFIGS[args.config], "batch": args.batch, "seq_len": args.seq_len,
              "rounds": args.rounds, "steps_per_round": args.steps, "threads": args.threads,
              "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
    for name, rows in times.items():
        result[name] = {"s_per_step": min(w for w, _ in rows), "cpu_s_per_step": min(c for _, c in rows),
                        "all": rows}
    result["conv_over_folded_cpu"] = result["conv"]["cpu_s_per_step"] / result["folded"]["cpu_s_per_step"]
    result["conv_over_folded_wall"] = result["conv"]["s_per_step"] / result["folded"]["s_per_step"]
    if json_file(args) is not None:  # the figures print whatever --json says
        print(strict_json(result, indent=1))
    try:
        emit_json(args, result, indent=1, kept="the figures are printed above")
    except WavegenError as err:
        ap.exit(2, f"{ap.prog}: error: {err}\n")


if __name__ == "__main__":
    main()
