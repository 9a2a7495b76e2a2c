"""wavegen bench: generation and training speed."""

from __future__ import annotations

import logging
import sys

from wavegen.cli.options import (JSON_STDOUT, add_device, add_json, add_threads, check_device, check_json_file,
                                 check_picture_file, emit_json)

logger = logging.getLogger("wavegen")


GENERATION, PROFILE, TRAIN = "generation timing", "--profile", "--train"  # bench's three measurements
# the options that only some measurements use (dest → flag, those measurements); the rest apply to all
MODE_OPTIONS = {
    "backends": ("--backends", (GENERATION, PROFILE)),
    "checkpoint": ("--checkpoint", (GENERATION, PROFILE)),
    "samples": ("--samples", (GENERATION, PROFILE)),
    "torch_samples": ("--torch-samples", (GENERATION,)),
    "repeats": ("--repeats", (GENERATION,)),
    "device": ("--device", (GENERATION, TRAIN)),
    "plot": ("--plot", (GENERATION,)),
    "seq_len": ("--seq-len", (TRAIN,)),
    "steps": ("--steps", (TRAIN,)),
    "warmup_steps": ("--warmup-steps", (TRAIN,)),
    "precision": ("--precision", (TRAIN,)),
    "compile": ("--compile", (TRAIN,)),
    "grad_accum": ("--grad-accum", (TRAIN,)),
    "workers": ("--workers", (TRAIN,)),
    "overrides": ("--set", (TRAIN,)),
}
_WHERE = {(GENERATION,): "generation timing only (not --train or --profile)",
          (GENERATION, PROFILE): "generation timing and --profile (not --train)",
          (GENERATION, TRAIN): "generation timing and --train (not --profile)",
          (TRAIN,): "--train"}
_MEASURING = {GENERATION: "generation timing (bench without --train or --profile)", PROFILE: "bench --profile",
              TRAIN: "bench --train"}


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure speed: generation (backends x batch sizes), --profile, --train",
                       description="Generation speed of a preset or config .json (random weights) or a trained "
                                   "model folder, for each backend and batch size; warm-up (compilation) excluded. "
                                   "--profile times the parts of the numba engines' step instead, --train training "
                                   "speed (of any model wavegen train --model takes, from random weights); "
                                   "an option that the measurement asked for does not use is refused.")
    p.add_argument("--model", required=True,
                   help="preset name or config .json (random weights), or a model/run folder (generation: its "
                        "trained weights; --train: its settings, random weights); --train takes what wavegen "
                        "train --model takes")
    p.add_argument("--checkpoint", default=None, metavar="last|step_N",
                   help="generation timing and --profile: a run's kept checkpoint instead of its best/ "
                        "(--train takes a run's settings, not its weights)")
    p.add_argument("--backends", default="torch,numba",
                   help="generation timing and --profile: comma list of backends, each optionally with a "
                        "precision and engine options (BACKEND[-PRECISION][:OPTION=VALUE]...): torch, numba, "
                        "numba-fp16, numba-bf16, cuda, cuda-bf16, numba:threads=1; cuda:path=small or "
                        "cuda-bf16:path=large forces the cuda backend's small- or large-batch path, otherwise "
                        "chosen by stream count (default torch,numba; with --profile: numba)")
    p.add_argument("--batch", default=None,
                   help="comma list of stream counts (default 1,8,64; with --profile 1); with --train, global "
                        "training batch sizes (default: the model's train.batch_size)")
    p.add_argument("--samples", type=int, default=16000,
                   help="generation timing and --profile: timed samples per stream (default 16000; a SampleRNN's "
                        "rounded up to whole frames of its top tier, said when it is); a row whose runs will take "
                        "over 2 minutes says so first, with an estimate")
    p.add_argument("--torch-samples", type=int, default=None,
                   help="generation timing: timed samples per stream for the (slow) torch engine "
                        "(default: min(samples, 1024))")
    p.add_argument("--repeats", type=int, default=3,
                   help="generation timing: timed runs per row, the fastest is kept (default 3)")
    add_threads(p, "numba and torch; --profile times on 1 unless given")  # (its parts' times are one core's)
    add_device(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (a preset's or config's; with --train, any model's)")
    add_json(p, "the results", model_word=False)
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="generation timing: plot samples/s against batch (matplotlib)")
    p.add_argument("--profile", action="store_true",
                   help="instead: time each part of the numba engines' step against the machine's limits")
    t = p.add_argument_group("training speed (--train; these options go with it only)")
    t.add_argument("--train", action="store_true",
                   help="measure training instead: audio samples trained per second and peak memory")
    t.add_argument("--seq-len", type=int, default=None,
                   help="samples per training window (default: the model's train.seq_len)")
    t.add_argument("--steps", type=int, default=5, help="timed training steps per batch size (default 5)")
    t.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first (default 2)")
    t.add_argument("--precision", default="auto", choices=["auto", "no", "bf16", "fp16"],
                   help="mixed precision of training (default auto: bf16 on CUDA, none on the CPU); a "
                        "generation backend's precision goes in its --backends name: numba-bf16")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (train.compile)")
    t.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step (default 1)")
    t.add_argument("--workers", type=int, default=0, help="batch prefetch threads (train.num_workers; default 0)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change a setting of the model's config as training does: model.rnn_type=lstm, "
                        "train.ema_decay=0.99 (repeatable)")
    # what run() compares against to tell which options were given (--device's help names its default)
    p.set_defaults(bench_defaults={dest: p.get_default(dest) for dest in MODE_OPTIONS})


def _comma_list(text: str, what: str, cast=str) -> list:
    from wavegen.config import ConfigError

    items = [x.strip() for x in str(text).split(",")]
    if len(items) > 1 and not all(items):  # "1,,2" or "1,8,": a slip, not two sizes (as --temperature says)
        raise ConfigError(f"{what} {text}: an empty item (two commas, or one at an end)")
    items = [x for x in items if x]
    try:
        values = [cast(x) for x in items]
    except ValueError:
        raise ConfigError(f"{what} {text!r}: expected a comma list like 1,8,64") from None
    if not values:
        raise ConfigError(f"{what} {text!r} is empty")
    return values


def _mode(args) -> str:
    """The measurement asked for: GENERATION, PROFILE or TRAIN (ConfigError for both of the others)."""
    from wavegen.config import ConfigError

    if args.train and args.profile:
        raise ConfigError("--profile and --train are two different measurements: give one of them")
    return TRAIN if args.train else PROFILE if args.profile else GENERATION


def _unused_options(args, mode: str) -> dict[tuple[str, ...], list[str]]:
    """The options given (not at their defaults) that ``mode`` does not use, by the modes they go with."""
    unused = {}
    for dest, (flag, modes) in MODE_OPTIONS.items():
        if mode not in modes and getattr(args, dest) != args.bench_defaults[dest]:
            unused.setdefault(modes, []).append(flag)
    return unused


def _check_options(args, mode: str) -> None:
    """Every option given that ``mode`` does not use, refused in one line (nothing is silently ignored)."""
    from wavegen.config import ConfigError

    unused = _unused_options(args, mode)
    if not unused:
        return
    parts = [f"{', '.join(flags)} {'works' if len(flags) == 1 else 'work'} with {_WHERE[modes]}"
             for modes, flags in unused.items()]
    them = "it" if sum(map(len, unused.values())) == 1 else "them"
    raise ConfigError(f"{'; '.join(parts)}: {_MEASURING[mode]} does not use {them}; leave {them} out")


def _check_outputs(args, mode: str) -> None:
    """Up front: --json, then every option ``mode`` does not use (:func:`_check_options`), then --plot."""
    check_json_file(args, "bench.json", "wavegen bench result", _is_bench_result)
    _check_options(args, mode)
    if args.plot:
        from wavegen.plotting import SPEED_MARK

        check_picture_file(args.plot, "--plot", "bench.png", SPEED_MARK)  # never a picture of the user's


def _is_bench_result(value) -> bool:
    """Whether a JSON value is what ``wavegen bench --json`` writes (a generation, training or profile run)."""
    return isinstance(value, dict) and value.get("mode") in ("generation", "training", "profile") and "machine" in value


def _write_output(flag: str, path, write) -> None:
    """``write()`` (a measurement's --json or --plot file: True when written); a failed write is one
    line naming ``flag`` and ``path`` (the table printed above keeps the results)."""
    from wavegen.errors import WavegenError

    try:
        written = write()
    except OSError as err:
        raise WavegenError(f"{flag} {path}: cannot write it ({err.strerror or err}); the table above has the "
                           "results") from None
    if written:
        logger.info("wrote %s", path)


def _report(args, result, table: str) -> None:
    """The table on stdout, or with a bare --json the JSON instead; --json FILE writes it as well."""
    if args.json != JSON_STDOUT:
        print(table)
    if args.json:
        emit_json(args, result, kept="the table above has the results" if args.json != JSON_STDOUT else "")


def _bench_profile(args, backends, batches, stop) -> int:
    from wavegen.bench_profile import format_profile, profile_generation

    if args.backends == "torch,numba":  # the default list: profile what can be profiled
        backends = ["numba"]
    result = _measured(args, lambda: profile_generation(
        args.model, backends, batches, samples=args.samples, threads=args.threads if args.threads is not None else 1,
        seed=args.seed, progress=None if args.quiet else logger.info, checkpoint=args.checkpoint, stop=stop),
        format_profile)[0]
    result["command"] = (f"wavegen bench --profile --model {args.model}{_checkpoint(args)} "
                         f"--backends {','.join(backends)} "
                         f"--batch {','.join(map(str, batches))} --samples {args.samples}")
    _report(args, result, format_profile(result))
    return 0


# what the first Ctrl-C or SIGTERM of generation timing and --profile does (StopSignals says it)
STOP_LINE = "stopping the bench before the engine's next call; the rows measured so far are printed"
PROFILE_STOP_LINE = "stopping the profile before its next timed call; the rows profiled so far are printed"


def run(args) -> int:
    mode = _mode(args)
    if mode == TRAIN:
        from wavegen.signals_start import launch_term_held

        # a SIGTERM while torch imports (a launcher's, or a scheduler's): bench_train's StopSignals take it
        with launch_term_held(alone=True) as held:
            code = _run(args, mode, None)
        if held.untaken:  # came as the command returned (its results reported): a stop, as one before (exit 130)
            raise KeyboardInterrupt
        return code
    from wavegen.signals import StopSignals

    # installed before torch imports (seconds): a SIGTERM is a stop, as a Ctrl-C, not a death by the signal (a
    # scheduler's, minutes into a bench of many rows, lost every row measured without a word)
    with StopSignals(PROFILE_STOP_LINE if mode == PROFILE else STOP_LINE) as stop:
        code = _run(args, mode, stop)
    if stop.requested:  # asked once every row was measured (the table printing, --json being written): the results
        raise KeyboardInterrupt  # are whole and reported; the stop is taken as an earlier one is (exit 130; was 0)
    return code


def _run(args, mode: str, stop) -> int:
    """bench's measurement ``mode``; stop: generation timing's or --profile's StopSignals."""
    _check_outputs(args, mode)
    check_device(args.device)
    if mode == TRAIN:
        return _cmd_bench_train(args)
    from wavegen.bench import bench_generation, format_table

    backends = _comma_list(args.backends, "--backends")
    batches = _comma_list(args.batch or ("1" if args.profile else "1,8,64"), "--batch", int)
    if args.profile:
        return _bench_profile(args, backends, batches, stop)
    result = _measured(args, lambda: bench_generation(
        args.model, backends, batches, samples=args.samples, torch_samples=args.torch_samples, repeats=args.repeats,
        threads=args.threads, device=args.device, seed=args.seed, progress=None if args.quiet else logger.info,
        checkpoint=args.checkpoint, stop=stop), format_table)[0]
    options = [f"--model {args.model}{_checkpoint(args)}", f"--backends {','.join(backends)}",
               f"--batch {','.join(map(str, batches))}", f"--samples {args.samples}", f"--repeats {args.repeats}"]
    options += [f"--{name.replace('_', '-')} {getattr(args, name)}" for name in ("torch_samples", "threads", "seed")
                if getattr(args, name) not in (None, 0)]
    options += [f"--device {args.device}"] if args.device != "cpu" else []
    result["command"] = "wavegen bench " + " ".join(options)
    _report(args, result, format_table(result))
    if args.plot:
        _write_plot(result, args.plot)
    return 0


def _measured(args, measure, format_table) -> tuple[dict | None, bool]:
    """(measure()'s result, None in another process of a launch; whether a stop was asked once its every row was
    measured: its results whole, to be reported as a run's, then the stop taken). A stop before that: the rows
    measured said (:func:`_say_stopped`, ``format_table``'s) and BenchStopped raised ("wavegen bench: interrupted",
    exit 130: wavegen.cli)."""
    from wavegen.bench import BenchStopped

    try:
        return measure(), False
    except BenchStopped as stopped:
        if len(_rows(stopped.result)) < stopped.planned:
            _say_stopped(args, stopped, format_table)
            raise
        return stopped.result, True


def _say_stopped(args, stopped, format_table) -> None:
    """The table (``format_table``'s) of the rows measured before a stop (none: nothing), said to be stopped and
    what it leaves unwritten (--json and --plot are a whole run's): on stdout, or stderr where a bare --json has
    stdout."""
    rows = _rows(stopped.result)
    if not rows:
        return
    by = f" by {stopped.by}" if stopped.by else ""
    unwritten = [f"{flag} {path}" for flag, path in (("--json", args.json), ("--plot", args.plot))
                 if path and path != JSON_STDOUT]
    note = (f"(stopped{by}: {len(rows)} of {stopped.planned} rows measured"
            + (f"; {' and '.join(unwritten)} not written" if unwritten else "") + ")")
    print(format_table(stopped.result) + "\n" + note, file=sys.stderr if args.json == JSON_STDOUT else sys.stdout)


def _rows(result: dict) -> list:
    """The rows of a measurement's result (--profile's are its profiles)."""
    return result["profiles" if result["mode"] == "profile" else "rows"]


def _checkpoint(args) -> str:
    return f" --checkpoint {args.checkpoint}" if args.checkpoint else ""


def _write_plot(result, path) -> None:
    from wavegen.plotting import speed_png

    _write_output("--plot", path, lambda: speed_png(result, path) is not None)


def _cmd_bench_train(args) -> int:
    from wavegen.bench_train import STOP_LINE, bench_training, format_training_table
    from wavegen.signals import StopSignals

    batches = _comma_list(args.batch, "--batch", int) if args.batch else None  # None: the model's
    result, asked = _measured(args, lambda: bench_training(
        args.model, batches, seq_len=args.seq_len, steps=args.steps, warmup=args.warmup_steps, threads=args.threads,
        device=args.device, mixed_precision=args.precision, compile=args.compile, grad_accum=args.grad_accum,
        num_workers=args.workers, seed=args.seed, overrides=args.overrides,
        progress=None if args.quiet else logger.info), format_training_table)
    if result is None:  # another process of a launch: the main one prints and writes for the whole job
        return 0
    options = [f"--model {args.model}", f"--batch {','.join(str(row['batch']) for row in result['rows'])}",
               f"--seq-len {result['rows'][0]['seq_len']}", f"--steps {args.steps}",
               f"--warmup-steps {args.warmup_steps}", f"--precision {args.precision}"]
    options += [f"--threads {args.threads}"] if args.threads else []
    options += [f"--grad-accum {args.grad_accum}"] if args.grad_accum != 1 else []
    options += [f"--workers {args.workers}"] if args.workers else []
    options += ["--compile"] if args.compile else []
    options += [f"--set {item}" for item in args.overrides]
    options += [f"--device {args.device}"] if args.device != "cpu" else []
    result["command"] = "wavegen bench --train " + " ".join(options)
    # a SIGTERM while the results are reported (one in the moment before: held for this, run's launch_term_held) is
    # the same stop as one while they were measured, taken once they are out: exit 130 (was dropped: exit 0)
    with StopSignals(STOP_LINE) as stop:
        _report(args, result, format_training_table(result))
    if asked or stop.requested:
        raise KeyboardInterrupt
    return 0
