"""``wavegen prep|train|render|eval|info|bench``: parses arguments, then calls the modules."""

from __future__ import annotations

import argparse
import json
import logging
import sys

logger = logging.getLogger("wavegen")


def _add_prep(sub) -> None:
    p = sub.add_parser("prep", help="decode, resample, trim and split recordings into a corpus",
                       description="Prepare recordings (files or folders, searched recursively) into a corpus.")
    p.add_argument("inputs", nargs="+", help="audio files or folders (WAV, FLAC, OGG, Opus, MP3, ...)")
    p.add_argument("corpus", help="output corpus folder")
    p.add_argument("--sample-rate", type=int, default=16000, help="target rate in Hz (default 16000)")
    p.add_argument("--top-db", type=float, default=40.0,
                   help="frames this many dB under the file's peak count as silence (default 40)")
    p.add_argument("--min-silence-seconds", type=float, default=1.0,
                   help="silent stretches longer than this are cut out (default 1.0)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split")
    p.add_argument("--labels", choices=["folders"], default=None,
                   help="folders: each top-level subfolder of an input is a label (artist, album)")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model on a prepared corpus (resumes when rerun)",
                       description="Train a model. Rerunning the same command resumes from the last checkpoint.")
    p.add_argument("--data", required=True, help="corpus folder made by wavegen prep")
    p.add_argument("--model", required=True, help="preset name (see wavegen info --presets) or a config.json")
    # --run-dir: torchrun's parser refuses "--run" (a prefix of its own --run-path) even after -m
    p.add_argument("--run", "--run-dir", dest="run", required=True, help="run folder: checkpoints, logs, best/")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting: model.dim=512, train.lr=3e-4, seed=3 (repeatable)")


def _add_render(sub) -> None:
    p = sub.add_parser("render", help="render audio from a trained model",
                       description="Render audio from a model folder or a run folder (its best/).")
    p.add_argument("model", help="model folder or run folder")
    p.add_argument("--seconds", type=float, required=True, help="seconds per stream")
    p.add_argument("--streams", type=int, default=1, help="independent streams rendered together")
    p.add_argument("--out", required=True, help="output folder (stream_000.wav, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", default="1.0",
                   help="sampling temperature; a comma list cycles over streams (default 1.0)")
    p.add_argument("--prime", default=None, help="audio file to continue (any rate or channel count)")
    p.add_argument("--prime-seconds", type=float, default=2.0, help="how much of the prime's end to use")
    p.add_argument("--label", default=None, help='a label, or a blend "a:0.7,b:0.3" (conditioned models)')
    p.add_argument("--backend", default="auto", help="auto, torch, numba or cuda")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--format", default="wav", choices=["wav", "flac"])
    p.add_argument("--block-seconds", type=float, default=1.0,
                   help="audio generated between progress updates (the output does not depend on it)")
    p.add_argument("--snapshot-seconds", type=float, default=30.0,
                   help="audio between resumable snapshots under OUT/.state (default 30)")
    p.add_argument("--restart", action="store_true",
                   help="discard a previous or unfinished render in --out and start over")
    p.add_argument("--no-guard", dest="guard", action="store_false",
                   help="do not rewind streams that fall silent, clip or turn to noise")
    p.add_argument("--guard-seconds", type=float, default=2.0, help="guard window (default 2)")
    p.add_argument("--guard-attempts", type=int, default=4,
                   help="redraws of a failing window before keeping it (default 4)")
    p.add_argument("--no-spectrogram", dest="spectrogram", action="store_false",
                   help="skip the spectrogram PNG per stream")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="NLL of a model on a corpus split, in bits per sample")
    p.add_argument("model", help="model folder or run folder")
    p.add_argument("--data", required=True, help="corpus folder")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--max-seconds", type=float, default=None, help="cap the audio evaluated")
    p.add_argument("--label", default=None, help="only this label's audio (conditioned models)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="describe a model (or list presets and backends)")
    p.add_argument("model", nargs="?", default=None, help="model folder, run folder or preset name")
    p.add_argument("--presets", action="store_true", help="list the model presets")
    p.add_argument("--json", action="store_true")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="measure generation speed: backends x batch sizes",
                       description="Generation speed of a preset (random weights) or a trained model folder, "
                                   "for each backend and batch size; warm-up (compilation) excluded.")
    p.add_argument("--model", required=True, help="preset name (random weights) or a model/run folder")
    p.add_argument("--backends", default="torch,numba", help="comma list (default torch,numba)")
    p.add_argument("--batch", default=None,
                   help="comma list of stream counts (default 1,8,64); with --train, global training "
                        "batch sizes (default: the preset's)")
    p.add_argument("--samples", type=int, default=16000, help="timed samples per stream (default 16000)")
    p.add_argument("--torch-samples", type=int, default=None,
                   help="timed samples per stream for the (slow) torch engine (default: min(samples, 1024))")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per row, the fastest is kept (default 3)")
    p.add_argument("--threads", type=int, default=None, help="threads for numba and torch (default: theirs)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of a preset's random weights")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="plot samples/s against batch (matplotlib)")
    p.add_argument("--profile", action="store_true",
                   help="instead: time each part of the numba engines' step against the machine's limits")
    t = p.add_argument_group("training speed (--train)")
    t.add_argument("--train", action="store_true",
                   help="measure training instead: audio samples trained per second and peak memory")
    t.add_argument("--seq-len", type=int, default=None, help="samples per training window (default: the preset's)")
    t.add_argument("--steps", type=int, default=5, help="timed training steps per batch size (default 5)")
    t.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first (default 2)")
    t.add_argument("--precision", default="auto", choices=["auto", "no", "bf16", "fp16"],
                   help="mixed precision (default auto: bf16 on CUDA, none on the CPU)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (train.compile)")
    t.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step (default 1)")
    t.add_argument("--workers", type=int, default=0, help="batch prefetch threads (train.num_workers; default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wavegen", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prep(sub)
    _add_train(sub)
    _add_render(sub)
    _add_eval(sub)
    _add_info(sub)
    _add_bench(sub)
    return parser


def cmd_prep(args) -> int:
    from wavegen.corpus import prepare

    manifest = prepare(args.inputs, args.corpus, sample_rate=args.sample_rate, top_db=args.top_db,
                       min_silence_seconds=args.min_silence_seconds, val_fraction=args.val_fraction,
                       test_fraction=args.test_fraction, seed=args.seed, labels=args.labels,
                       progress=not args.quiet)
    splits = manifest["splits"]
    logger.info("corpus %s: %s; %d file(s) skipped", args.corpus,
                ", ".join(f"{k} {v['seconds'] / 60:.1f} min" for k, v in splits.items()), len(manifest["skipped"]))
    return 0


def _base_config(model: str) -> dict:
    from pathlib import Path

    from wavegen.config import load_json
    from wavegen.models import resolve_preset

    if model.endswith(".json") or Path(model).is_file():
        config = load_json(Path(model))
        config.pop("data", None)
        return config
    return resolve_preset(model)


def cmd_train(args) -> int:
    from wavegen.train import resolve_run_config, train

    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    config = resolve_run_config(_base_config(args.model), args.data, overrides)
    result = train(config, args.run, progress=not args.quiet)
    return 130 if result["status"] == "interrupted" else 0


def cmd_render(args) -> int:
    from wavegen.render import RenderSettings, render

    temps = [float(t) for t in str(args.temperature).split(",") if t.strip()]
    settings = RenderSettings(seconds=args.seconds, streams=args.streams, seed=args.seed, temperature=temps,
                              prime=args.prime, prime_seconds=args.prime_seconds, label=args.label,
                              backend=args.backend, device=args.device, format=args.format,
                              block_seconds=args.block_seconds, snapshot_seconds=args.snapshot_seconds,
                              guard=args.guard, guard_seconds=args.guard_seconds,
                              guard_attempts=args.guard_attempts, spectrogram=args.spectrogram)
    report = render(args.model, args.out, settings, progress=not args.quiet, restart=args.restart)
    if report.get("rank", 0) == 0:  # under torchrun/accelerate, one process lists the files
        for path in report["paths"]:
            print(path)
    return 0


def cmd_eval(args) -> int:
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


def cmd_info(args) -> int:
    from wavegen.info import describe, presets_table

    if args.presets or args.model is None:
        print(presets_table())
        return 0
    info = describe(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            if isinstance(value, dict):
                print(f"{key}:")
                for k, v in value.items():
                    print(f"  {k}: {v}")
            else:
                print(f"{key}: {value}")
    return 0


def _comma_list(text: str, what: str, cast=str) -> list:
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    try:
        values = [cast(x) for x in items]
    except ValueError:
        raise ValueError(f"{what} {text!r}: expected a comma list like 1,8,64") from None
    if not values:
        raise ValueError(f"{what} {text!r} is empty")
    return values


def _write_json(path, result) -> None:
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)
    logger.info("wrote %s", path)


def _bench_profile(args, backends, batches) -> int:
    from wavegen.bench import format_profile, profile_generation

    if args.backends == "torch,numba":  # the default list: profile what can be profiled
        backends = ["numba"]
    result = profile_generation(args.model, backends, batches, samples=args.samples,
                                threads=args.threads if args.threads is not None else 1, seed=args.seed,
                                progress=None if args.quiet else logger.info)
    result["command"] = (f"wavegen bench --profile --model {args.model} --backends {','.join(backends)} "
                         f"--batch {','.join(map(str, batches))} --samples {args.samples}")
    print(format_profile(result))
    if args.json:
        _write_json(args.json, result)
    return 0


def cmd_bench(args) -> int:
    from wavegen.bench import bench_generation, format_table, plot

    if args.train:
        return _cmd_bench_train(args)
    backends = _comma_list(args.backends, "--backends")
    batches = _comma_list(args.batch or ("1" if args.profile else "1,8,64"), "--batch", int)
    if args.profile:
        return _bench_profile(args, backends, batches)
    result = bench_generation(args.model, backends, batches, samples=args.samples, torch_samples=args.torch_samples,
                              repeats=args.repeats, threads=args.threads, device=args.device, seed=args.seed,
                              progress=None if args.quiet else logger.info)
    options = [f"--model {args.model}", f"--backends {','.join(backends)}", f"--batch {','.join(map(str, batches))}",
               f"--samples {args.samples}", f"--repeats {args.repeats}"]
    options += [f"--{name.replace('_', '-')} {getattr(args, name)}" for name in ("torch_samples", "threads", "seed")
                if getattr(args, name) not in (None, 0)]
    options += [f"--device {args.device}"] if args.device != "cpu" else []
    result["command"] = "wavegen bench " + " ".join(options)
    print(format_table(result))
    if args.json:
        _write_json(args.json, result)
    if args.plot:
        logger.info("wrote %s", plot(result, args.plot))
    return 0


def _cmd_bench_train(args) -> int:
    from wavegen.bench import bench_training, format_training_table
    from wavegen.config import save_json
    from wavegen.models import resolve_preset

    batches = _comma_list(args.batch, "--batch", int) if args.batch else \
        [resolve_preset(args.model)["train"]["batch_size"]]
    result = bench_training(args.model, batches, seq_len=args.seq_len, steps=args.steps, warmup=args.warmup_steps,
                            threads=args.threads, device=args.device, mixed_precision=args.precision,
                            compile=args.compile, grad_accum=args.grad_accum, num_workers=args.workers,
                            seed=args.seed, progress=None if args.quiet else logger.info)
    options = [f"--model {args.model}", f"--batch {','.join(map(str, batches))}",
               f"--seq-len {result['rows'][0]['seq_len']}", f"--steps {args.steps}",
               f"--warmup-steps {args.warmup_steps}", f"--precision {args.precision}"]
    options += [f"--threads {args.threads}"] if args.threads else []
    options += [f"--grad-accum {args.grad_accum}"] if args.grad_accum != 1 else []
    options += [f"--workers {args.workers}"] if args.workers else []
    options += ["--compile"] if args.compile else []
    options += [f"--device {args.device}"] if args.device != "cpu" else []
    result["command"] = "wavegen bench --train " + " ".join(options)
    print(format_training_table(result))
    if args.json:
        from pathlib import Path

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        save_json(Path(args.json), result)
        logger.info("wrote %s", args.json)
    return 0


COMMANDS = {"prep": cmd_prep, "train": cmd_train, "render": cmd_render, "eval": cmd_eval, "info": cmd_info, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s" if args.verbose else "%(message)s")
    for noisy in ("accelerate", "torch.distributed", "numba"):  # their INFO lines are not for users
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    from wavegen.audio import AudioError
    from wavegen.config import ConfigError
    from wavegen.corpus import CorpusError

    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():  # log lines print above progress bars, not through them
            return COMMANDS[args.command](args)
    except (ConfigError, CorpusError, AudioError, FileNotFoundError, ValueError, RuntimeError) as err:
        if args.verbose:
            raise
        print(f"wavegen {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wavegen {args.command}: interrupted", file=sys.stderr)
        return 130

