"""wavegen prep: recordings → a corpus."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("prep", help="decode, resample, trim and split recordings into a corpus",
                       description="Prepare recordings (files or folders, searched recursively, links followed) "
                                   "into a corpus.")
    p.add_argument("inputs", nargs="+", help="audio files or folders (WAV, FLAC, OGG, Opus, MP3, ...)")
    p.add_argument("corpus", help="output corpus folder")
    p.add_argument("--sample-rate", type=int, default=16000, help="target rate in Hz (default 16000)")
    p.add_argument("--top-db", type=float, default=40.0,
                   help="frames this many dB under the file's peak count as silence (default 40)")
    p.add_argument("--min-silence-seconds", type=float, default=1.0,
                   help="silent stretches longer than this are cut out (default 1.0)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the recordings held out for validation (default 0.1; by file, or by time "
                        "for a single file)")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="share held out for the test split (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split (default 0)")
    p.add_argument("--labels", choices=["folders"], default=None,
                   help="folders: each top-level subfolder of an input is a label (artist, album)")


def run(args) -> int:
    import signal
    import threading

    from wavegen.prep import prepare
    from wavegen.signals_start import term_as_interrupt

    # SIGTERM (kill, a scheduler, timeout) means what Ctrl-C means (wavegen.signals): it killed prep, leaving
    # its temporary folder (gigabytes for a large corpus) in the corpus folder until the next prep there. Now
    # that folder is removed and the old corpus kept, as for a Ctrl-C (or, stopped while the new one was moved
    # into place, the rest of the move left for the next prep to finish); its echo (a recipe's forwarding) does
    # not cut that short
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, term_as_interrupt) if main else None
    try:
        # prepare says what it made (or that the corpus is up to date): one summary
        prepare(args.inputs, args.corpus, progress=not args.quiet, sample_rate=args.sample_rate,
                top_db=args.top_db, min_silence_seconds=args.min_silence_seconds,
                val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                labels=args.labels)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
    return 0
