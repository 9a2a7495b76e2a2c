"""wavegen eval: NLL of a model on a corpus split (wavegen.evaluate), or rendered audio judged
against the album (``--renders``: wavegen.analysis). It runs in one process: under a launch
(torchrun, accelerate launch) the first process does the work, and the others exit at once."""

from __future__ import annotations

import logging
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from wavegen.cli.options import (JSON_STDOUT, add_device, add_json, add_threads, apply_threads, check_device,
                                 check_json_file, check_picture_file, emit_json, json_file, settle_json_word)
from wavegen.progress import counted

logger = logging.getLogger("wavegen.eval")


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="NLL of a model on a corpus split; or renders judged against the album",
                       description="NLL in bits per sample of every sample of every segment of a split, each "
                                   "segment scored whole from its start (silence before it, the model's state "
                                   "carried through it). With --renders DIR: the audio files in DIR compared with "
                                   "the corpus's split (librosa features and a Frechet distance), beside the "
                                   "training split (what the album scores) and white and pink noise (what noise "
                                   "scores); a single audio file is judged alone; docs/QUALITY.md says what each "
                                   "number means.")
    p.add_argument("model", nargs="?", default=None,
                   help="model folder or run folder (its best/; its corpus is the default --data); with --renders "
                        "optional")
    p.add_argument("--checkpoint", default=None,
                   help="evaluate a run's kept checkpoint instead of its best/: step_N or last")
    p.add_argument("--data", default=None,
                   help="corpus folder (default: the corpus the model was trained on, its config's data.corpus)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="the split scored (default test); with --renders: the split the renders are compared "
                        "with, test or val (train is the album reference beside them)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="cap the audio scored (the first part of every segment, the same length from each); "
                        "with --renders: the most audio analysed per set (default 120; under 10 s, one "
                        "excerpt that long)")
    p.add_argument("--label", default=None,
                   help="only this label's audio (one label, written as render takes it); on a corpus without "
                        "labels, every segment scored conditioned on this label; with --renders: the renders "
                        "judged against this label's audio alone")
    add_device(p)
    add_json(p, "the result (one line)")
    p.add_argument("--renders", default=None, metavar="DIR|FILE",
                   help="judge the audio files in DIR (or one audio FILE alone) against the corpus instead of "
                        "scoring a model's NLL")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="with --renders: draw the feature distributions of every set side by side, and a "
                        "render's spectrogram beside the album's")
    p.add_argument("--pyin", action="store_true", help="with --renders: also pyin's voiced fraction (slow)")
    add_threads(p, "torch")


def run(args) -> int:
    if not _first_process():
        return 0
    settle_json_word(args)  # `wavegen eval --json RUN --data C`: RUN is the model, not --json's file
    # the folders made for --plot and --json FILE (before the work) go again if it stops before writing there
    with _folders_made_for(args.plot, json_file(args)):
        return _eval(args)


def _eval(args) -> int:
    """The command, once settled: the NLL of a model, or --renders."""
    from wavegen.config import ConfigError

    apply_threads(args)
    if args.renders is not None:
        return _renders(args)
    for flag, given in (("--plot", args.plot), ("--pyin", args.pyin)):
        if given:
            raise ConfigError(f"{flag} goes with --renders DIR (judging rendered audio)")
    if args.model is None:
        took = json_file(args)
        raise ConfigError("give a model (or run folder) to score its NLL (on the corpus it was trained on, or "
                          "--data CORPUS), or --renders DIR to judge rendered audio"
                          + (f" (--json took {took} as the file to write: give the model before --json)"
                             if took else ""))
    from wavegen.evaluate import evaluate
    from wavegen.resolve import resolve_model

    check_device(args.device)
    check_json_file(args, "eval.json", "wavegen eval result", _is_eval_result)
    ref = resolve_model(args.model, args.checkpoint)
    data = args.data if args.data is not None else _trained_corpus(ref)
    if data is None:
        raise ConfigError(f"{ref.source} names no corpus it was trained on: give --data CORPUS to score its NLL")
    if args.data is None:  # a config file's random weights were trained on none: the corpus is its config's
        logger.info("scoring the %s split of %s, the corpus %s %s", args.split, data, ref.source,
                    "was trained on" if ref.trained else "names in its config (data.corpus)")
    if not ref.trained:  # its source says "random weights", but the printed result does not name it
        logger.warning("%s: scoring untrained weights (a preset or config file): a baseline, not a model's score",
                       ref.source)
    _warn_if_prepared_again(ref, data, args.split)
    result = evaluate(ref, data, args.split, args.label, args.max_seconds, device=args.device,
                      progress=not args.quiet)
    # the corpus scored named in the result itself (--json too), not only in the INFO line -q hides: two results
    # of one model on two corpora told apart (the split is the result's own "split")
    result["model"], result["corpus"] = ref.source, str(data)
    bits = result["nll_bits_per_sample"]
    if not math.isfinite(bits):
        from wavegen.errors import WavegenError

        raise WavegenError(f"{ref.source}: its NLL on the {args.split} split of {data} is not finite ({bits}): "
                           "the model's weights or outputs hold NaN or inf; evaluate another checkpoint "
                           "(--checkpoint step_N) or model")
    if args.json == JSON_STDOUT:
        emit_json(args, result, indent=None)
        return 0
    _print_nll(args.split, result)
    if args.json:
        emit_json(args, result, indent=None, kept="the result is printed above")
    return 0


def _trained_corpus(ref) -> str | None:
    """The corpus a model's config names (data.corpus: the one it was trained on), the default --data; None where
    it names none (a preset, a config file). ConfigError where that corpus is no prepared corpus now."""
    from wavegen.config import ConfigError

    data = ref.config.get("data", {}).get("corpus")
    if data is not None and not (Path(data) / "manifest.json").is_file():
        raise ConfigError(f"{ref.source}: the corpus it was trained on, {data} (its config's data.corpus), "
                          "is no prepared corpus now (no manifest.json): give --data CORPUS")
    return data


def _warn_if_prepared_again(ref, data: str, split: str | None = None) -> None:
    """A warning where ``data`` is the corpus a model's config names and it holds other recordings or settings
    now than the model was trained on (its config's data.corpus_id). split None: it was taken as the album for
    --renders; else its split scores the NLL, and prep draws the splits again where --seed, a fraction or the
    labels changed (else each earlier file keeps its split): where the split's files differ from those the
    model's config recorded (data.split_ids: other recordings, or the same ones re-encoded, which that record
    cannot tell apart; a model older than that record: may have), it may hold recordings the model trained on."""
    from wavegen.corpus import Corpus
    from wavegen.runconfig import split_ids

    trained = ref.config.get("data", {})
    trained_on, folder = trained.get("corpus_id"), trained.get("corpus")
    if not trained_on or folder is None or not _same_folder(folder, data):
        return
    corpus = Corpus(data)
    now = corpus.content_id
    if trained_on == now:
        return
    changed = (f"{data}: the corpus {ref.source} was trained on has been prepared again since (corpus id "
               f"{trained_on} then, {now} now)")
    if split is None:
        logger.warning("%s: the renders are judged against what it holds now; give --data for another album", changed)
        return
    recorded = trained.get("split_ids")
    recorded = recorded.get(split) if isinstance(recorded, dict) else None
    if recorded == split_ids(corpus.manifest).get(split):
        return  # the same recordings held out as then: none trained on (the train split: trained on, as ever)
    # the run records a digest of the split's files' bytes, not their paths: a file remastered at its path (prep
    # keeps its split) differs as much as another recording does, and which it is cannot be told
    drawn = ("differs from then's (other recordings, or the same ones re-encoded)" if recorded is not None
             else "may have been drawn again")
    logger.warning("%s: its %s split %s and may hold recordings the model trained on, which would score better "
                   "than new audio", changed, split, drawn)


def _same_folder(a: str, b: str) -> bool:
    """Whether folders a and b are one (either missing: False)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextmanager
def _folders_made_for(*files):
    """The folders missing now on the way to ``files`` (None: no file) are removed again, where still empty,
    when the block stops by an error or a Ctrl-C: check_output_file makes a --plot's or --json FILE's folder
    before the work, and an eval stopped before writing there left it behind. A folder that was there (the
    user's) is never touched, nor one that holds anything. Not folders.remove_unused: that one keeps a folder
    unless its lock file is all it holds, and eval takes no lock."""
    from wavegen.folders import missing_folders

    missing = []
    for file in files:
        if file is not None:
            missing += [f for f in missing_folders(Path(file).expanduser().absolute().parent) if f not in missing]
    try:
        yield
    except BaseException:
        for folder in sorted(missing, key=lambda f: len(f.parts), reverse=True):  # the deepest first
            try:
                folder.rmdir()
            except OSError:  # not made after all, or it holds something now
                pass
        raise


def _is_eval_result(value) -> bool:
    """Whether a JSON value is what ``wavegen eval --json`` writes: an NLL or a comparison of renders."""
    return isinstance(value, dict) and ("nll_bits_per_sample" in value or {"verdict", "sets"} <= value.keys())


def _print_nll(split: str, result: dict) -> None:
    seconds = f"{result['seconds']:.1f}" if result["seconds"] >= 1 else f"{result['seconds']:.3g}"  # not "0.0"
    samples = counted(result["samples"], "sample", grouped=True)  # "1 sample", "12,000 samples"
    print(f"{split}: {result['nll_bits_per_sample']:.4f} bits/sample over {samples} of {result['corpus']}"
          f" ({seconds} s; unigram entropy {result['unigram_entropy_bits']:.3f} bits)")
    print(f"  model: {result['model']}")  # which checkpoint: two outputs of one run told apart
    print(f"  scored: {result['scored']}")
    if result.get("label") is not None:  # which label's: two outputs of one model told apart (per_label is
        print(f"  label: {result['label']}")  # empty for a model not conditioned on labels)
    for name, v in result["per_label"].items():
        print(f"  {name}: {v['nll_bits_per_sample']:.4f} bits/sample over "
              f"{counted(v['samples'], 'sample', grouped=True)}")


def _first_process() -> bool:
    """Whether this process does the eval: alone, or the first of a launch (which says that the others
    have nothing to do: the work is not shared, and every process would print the same result)."""
    from wavegen.signals import launch_rank

    rank, _ = launch_rank()
    world = os.environ.get("WORLD_SIZE", "")
    if rank == 0 and world.isdigit() and int(world) > 1:
        logger.info("wavegen eval runs in one process: the first of this launch's %s does the work; the others "
                    "exit", world)
    return rank == 0


def _renders(args) -> int:
    """--renders DIR: wavegen.analysis.compare_renders, a table (or --json), --plot."""
    from wavegen.analysis import MIN_RENDER_SECONDS, compare_renders
    from wavegen.analysis_report import format_comparison
    from wavegen.config import ConfigError
    from wavegen.plotting import plot_comparison

    if args.device != "cpu":
        raise ConfigError(f"--device {args.device} does not apply to --renders (librosa analyses the audio on the CPU)")
    if args.checkpoint is not None and args.model is None:
        raise ConfigError(f"--checkpoint {args.checkpoint} goes with a run folder (give it before --renders)")
    source, data = None, args.data
    if args.model is not None:
        from wavegen.resolve import resolve_model

        ref = resolve_model(args.model, args.checkpoint)
        source = ref.source
        if data is None:
            data = _trained_corpus(ref)
            if data is not None:
                _warn_if_prepared_again(ref, data)
    if data is None:
        raise ConfigError("--renders: give --data CORPUS (or a run folder whose config names its corpus)")
    max_seconds = 120.0 if args.max_seconds is None else args.max_seconds
    if not (math.isfinite(max_seconds) and max_seconds > 0):
        raise ConfigError(f"--max-seconds {args.max_seconds}: give a positive number of seconds")
    if max_seconds < MIN_RENDER_SECONDS:  # said before the renders are read and resampled
        raise ConfigError(f"--max-seconds {max_seconds:g}: the analysis needs at least {MIN_RENDER_SECONDS} s of "
                          "audio per set")
    if args.plot:  # checked and its folder made now: a plot that cannot be written must not cost the analysis
        from wavegen.plotting import COMPARISON_MARK

        check_picture_file(args.plot, "--plot", "compare.png", COMPARISON_MARK)  # never a picture of the user's
    check_json_file(args, "compare.json", "wavegen eval result", _is_eval_result)
    result = compare_renders(args.renders, data, split=args.split, max_seconds=max_seconds, pyin=args.pyin,
                             examples=bool(args.plot), label=args.label)
    result["model"] = source
    examples = result.pop("examples", None)  # audio for the plot's spectrograms, not for the JSON
    unwritten = None
    if args.plot:
        try:
            drawn = plot_comparison(result, args.plot, examples)
        except OSError as err:  # the folder took no file after all (a read-only or special file system)
            drawn, unwritten = None, err
        result["plot"] = str(drawn) if drawn is not None else None
    if args.json == JSON_STDOUT:
        emit_json(args, result, indent=None)
    else:
        skipped = result["skipped_files"]
        if Path(args.renders).is_file():  # one file named: it is judged alone, not the folder that holds it
            judged = f"render file {args.renders} (it alone)"
        else:
            judged = (f"renders {args.renders} ({counted(len(result['render_files']), 'file')}"
                      + (f"; {len(skipped)} skipped, see below" if skipped else "") + ")")
        album = f"label {result['label']!r} of " if result["label"] is not None else ""
        print(f"{judged} against the {args.split} split of {album}{data}" + (f"; model {source}" if source else ""))
        print(format_comparison(result))
        for item in skipped:
            print(f"skipped {item['file']}: {item['reason']}")
        if result.get("plot"):
            print(f"plot: {result['plot']}")
        elif args.plot and unwritten is None:
            print("no plot: matplotlib is not installed", file=sys.stderr)
        if args.json:
            emit_json(args, result, indent=None, kept="the comparison is printed above")
    if unwritten is not None:  # after the result: the analysis it took is printed, not lost
        raise ConfigError(f"--plot {args.plot}: cannot be written ({unwritten.strerror or unwritten}); the "
                          "comparison is printed above; give --plot a file in a writable folder")
    return 0

