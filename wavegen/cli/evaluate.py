"""wavegen eval: NLL of a model on a corpus split."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="NLL of a model on a corpus split, in bits per sample")
    p.add_argument("model", help="model folder or run folder")
    p.add_argument("--data", required=True, help="corpus folder")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--max-seconds", type=float, default=None, help="cap the audio evaluated")
    p.add_argument("--label", default=None, help="only this label's audio (conditioned models)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    from wavegen.checkpoint import load_model
    from wavegen.config import ConfigError, TrainConfig, from_dict
    from wavegen.corpus import Corpus
    from wavegen.render import parse_label
    from wavegen.train import evaluate_nll

    model, config = load_model(args.model, args.device)
    corpus = Corpus(args.data)
    if corpus.sample_rate != config["data"]["sample_rate"]:
        raise ConfigError(f"corpus {args.data} is at {corpus.sample_rate} Hz, the model at "
                          f"{config['data']['sample_rate']} Hz")
    audio, segments = corpus.split(args.split), corpus.segments(args.split)
    seg_labels = corpus.segment_labels(args.split)
    labels = list(model.config.labels)
    if args.label is not None:
        weights = parse_label(args.label, labels)
        keep = seg_labels == int(weights.argmax())
        segments, seg_labels = segments[keep], seg_labels[keep]
    if len(segments) == 0:
        raise ConfigError(f"the {args.split} split of {args.data} has no audio"
                          + (f" for label {args.label!r}" if args.label else ""))
    train_cfg = from_dict(TrainConfig, config["train"], "train")
    max_samples = int(args.max_seconds * corpus.sample_rate) if args.max_seconds else None
    result = evaluate_nll(model, audio, segments, seg_labels, piece_len=model.eval_length(train_cfg),
                          max_samples=max_samples, device=args.device, n_labels=len(labels))
    if result["samples"] == 0:
        raise ConfigError(f"the {args.split} split has no stretch long enough for one evaluation piece "
                          f"({model.context_samples + model.eval_length(train_cfg)} samples)")
    out = {"nll_bits_per_sample": result["nll_bits_per_sample"], "samples": result["samples"],
           "split": args.split, "unigram_entropy_bits": result["unigram_entropy_bits"]}
    if labels:
        out["per_label"] = {labels[k]: v for k, v in result["per_label"].items()}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.split}: {out['nll_bits_per_sample']:.4f} bits/sample over {out['samples']} samples "
              f"(unigram entropy {out['unigram_entropy_bits']:.3f} bits)")
        for name, v in out.get("per_label", {}).items():
            print(f"  {name}: {v['nll_bits_per_sample']:.4f} bits/sample over {v['samples']} samples")
    return 0
