"""wavegen eval: NLL of a model on a corpus split (wavegen.evaluate)."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="NLL of a model on a corpus split, in bits per sample",
                       description="NLL in bits per sample of every sample of every segment of a split, each "
                                   "segment scored whole from its start (silence before it, the model's state "
                                   "carried through it).")
    p.add_argument("model", help="model folder or run folder (its best/)")
    p.add_argument("--checkpoint", default=None,
                   help="evaluate a run's kept checkpoint instead of its best/: step_N or last")
    p.add_argument("--data", required=True, help="corpus folder")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--max-seconds", type=float, default=None,
                   help="cap the audio scored (the first part of every segment, the same length from each)")
    p.add_argument("--label", default=None, help="only this label's audio (one label name)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    from wavegen.evaluate import evaluate
    from wavegen.resolve import resolve_model

    ref = resolve_model(args.model, args.checkpoint)
    result = evaluate(ref, args.data, args.split, args.label, args.max_seconds, device=args.device,
                      progress=not args.quiet)
    result["model"] = ref.source
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.split}: {result['nll_bits_per_sample']:.4f} bits/sample over {result['samples']:,} samples "
          f"({result['seconds']:.1f} s; unigram entropy {result['unigram_entropy_bits']:.3f} bits)")
    print(f"  scored: {result['scored']}")
    for name, v in result["per_label"].items():
        print(f"  {name}: {v['nll_bits_per_sample']:.4f} bits/sample over {v['samples']:,} samples")
    return 0
