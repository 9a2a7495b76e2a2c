"""wavegen train: train (or resume) a run."""

from __future__ import annotations

import logging
import os

from wavegen.cli.options import add_threads, apply_threads
from wavegen.progress import counted


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model on a prepared corpus (resumes when rerun)",
                       description="Train a model. Rerunning the same command resumes from the last checkpoint.")
    p.add_argument("--data", required=True, help="corpus folder made by wavegen prep")
    p.add_argument("--model", required=True,
                   help="a preset name (see wavegen info --presets), a config .json, or a model or run folder "
                        "(its settings only: training starts from new weights)")
    # --run-dir: torchrun's parser refuses "--run" (a prefix of its own --run-path) even after -m
    p.add_argument("--run", "--run-dir", dest="run", required=True, help="run folder: checkpoints, logs, best/")
    p.add_argument("--max-steps", type=int, default=None,
                   help="train to this step (a larger one trains a finished run on; default train.max_steps: "
                        "100000 unless set)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting: model.dim=512, train.lr=3e-4, seed=3 (repeatable)")
    p.add_argument("--balance-labels", action="store_true",
                   help="draw every label of a labelled corpus equally often, however much audio each has "
                        "(--set train.label_balance=1; default 0: as often as its audio; between, partly)")
    add_threads(p, "torch in each process")


def run(args) -> int:  # a refusal under a launch is printed by one process: wavegen.cli.main
    from wavegen.signals import StopSignals, first_process_says, says_the_interrupt
    from wavegen.signals import logger as signals_logger

    # installed before torch imports (seconds): a SIGTERM then is a clean stop (130), not a death by the signal;
    # under a launch its line said by the first process (a Ctrl-C reaches every process)
    with StopSignals() as stop, first_process_says(signals_logger.name):
        from wavegen.resolve import resolve_settings
        from wavegen.resolve_config import check_rate_given
        from wavegen.train import resolve_run_config, train

        log = logging.getLogger("wavegen.train")
        too_many = threads_warning(args.threads)
        if too_many:
            log.warning("%s", too_many)
        apply_threads(args)
        overrides = (["train.label_balance=1"] if args.balance_labels else []) + list(args.overrides)
        if args.max_steps is not None:
            overrides.append(f"train.max_steps={args.max_steps}")
        settings = resolve_settings(args.model)
        config = resolve_run_config(settings.config, args.data, overrides)
        check_rate_given(args.model, settings.rate_given, args.data)  # a config file's own rate is not the corpus's
        if stop.requested:  # nothing written yet, nothing to save
            if says_the_interrupt():
                log.warning("%s: stopped before the run started", stop.name)
            return 130
        result = train(config, args.run, progress=not args.quiet, stop=stop)
    return 130 if result["status"] == "interrupted" else 0


def threads_warning(threads: int | None) -> str | None:
    """A warning where ``--threads`` (times this machine's processes of a launch) is more than the CPUs this
    process may run on: torch's threads then wait on one another, and training runs several times slower
    (measured: a GRU step 8x slower with 32 threads on 2 CPUs than with 2). Said, not refused: it works."""
    if threads is None or threads < 1:  # none given; below 1: set_threads's refusal
        return None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    most = max(1, cpus // processes)
    if threads <= most:
        return None
    asked = (f"in each of the {processes} processes of this launch on this machine, "
             f"{threads * processes} threads, more" if processes > 1 else "more")
    return (f"--threads {threads}: {asked} than the {counted(cpus, 'CPU')} this training may use; threads beyond the "
            f"{'CPU' if cpus == 1 else 'CPUs'} wait on one another and training runs several times slower (at most "
            f"{most} runs best)")
