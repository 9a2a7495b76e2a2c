"""wavegen render: audio from a model, long and resumable."""

from __future__ import annotations

from wavegen.cli.options import add_device, add_threads, apply_threads, check_device


def add_parser(sub) -> None:
    p = sub.add_parser("render", help="render audio from a trained model",
                       description="Render audio from a model folder or a run folder (its best/).")
    p.add_argument("model", help="model folder or run folder")
    p.add_argument("--checkpoint", default=None,
                   help="render a run's kept checkpoint instead of its best/: step_N or last")
    p.add_argument("--seconds", type=float, required=True, help="seconds per stream")
    p.add_argument("--streams", type=int, default=1, help="independent streams rendered together (default 1)")
    p.add_argument("--out", required=True, help="output folder (stream_000.wav, ...)")
    p.add_argument("--seed", type=int, default=0, help="the same seed renders the same audio (default 0)")
    p.add_argument("--temperature", default="1.0",
                   help="sampling temperature; a comma list cycles over streams (default 1.0)")
    p.add_argument("--prime", default=None, help="audio file to continue (any rate or channel count); resuming, the render has it "
                        "recorded and needs the file no more")
    p.add_argument("--prime-seconds", type=float, default=2.0, help="how much of the prime's end to use (default 2)")
    p.add_argument("--label", default=None, help='a label, or a blend "a:0.7,b:0.3" (conditioned models)')
    p.add_argument("--backend", default="auto", help="auto, torch, numba or cuda (default auto: the fastest installed)")
    add_device(p)
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"],
                   help="engine precision (changes the audio; not every backend has every one; default fp32)")
    p.add_argument("--format", default="wav", choices=["wav", "flac"], help="file format (default wav)")
    p.add_argument("--block-seconds", type=float, default=1.0,
                   help="audio generated between progress updates (default 1; the output does not depend on it)")
    p.add_argument("--snapshot-seconds", type=float, default=30.0,
                   help="audio between resumable snapshots under OUT/.state (default 30)")
    p.add_argument("--restart", action="store_true",
                   help="discard a previous or unfinished render in --out and start over")
    p.add_argument("--no-guard", dest="guard", action="store_false",
                   help="do not rewind streams that fall silent, clip or turn to noise")
    p.add_argument("--guard-seconds", type=float, default=2.0, help="guard window (default 2)")
    p.add_argument("--guard-attempts", type=int, default=4,
                   help="redraws of a failing window before keeping it (default 4)")
    p.add_argument("--no-album-guard", dest="guard_album", action="store_false",
                   help="fixed guard thresholds even where the model has an album profile (album.json)")
    p.add_argument("--pitch-sync", type=float, default=0.0, metavar="RHO",
                   help="draws that repeat with each stream's pitch period, by RHO in [0, 1) (default 0: off)")
    p.add_argument("--postfilter", type=float, default=0.0, metavar="G",
                   help="write each sample averaged with the model's sample a pitch period before, weight G in [0, 1] "
                        "(default 0: off); the model, the guard and --pitch-sync hear its own audio")
    p.add_argument("--no-spectrogram", dest="spectrogram", action="store_false",
                   help="skip the spectrogram PNG per stream")
    add_threads(p, "the numba engine's stream groups and torch; the numba engine's audio depends on the count, "
                   "so a render records it and resumes only on the same count")


def run(args) -> int:
    import logging

    from wavegen.signals_start import launch_term_held

    # a SIGTERM while torch imports or between the render's StopSignals (its folder checked): theirs to take, said
    # and stopped cleanly as one inside them, not the signal's silent death (a launcher's, or a user's kill); one
    # once the render is complete (late: until the process ends) stops nothing either, nor says "interrupted"
    with launch_term_held(alone=True, late=True) as held:
        code = _run(args)
    if held.untaken:  # came once the render was complete (or with nothing left to render): it stopped nothing
        logging.getLogger("wavegen.render").warning("SIGTERM came once the render was complete: nothing to stop or "
                                                    "resume")
    return code


def _run(args) -> int:
    from wavegen.render import RenderSettings, render
    from wavegen.render.settings import parse_temperatures

    apply_threads(args)
    check_device(args.device)
    settings = RenderSettings(seconds=args.seconds, streams=args.streams, seed=args.seed,
                              temperature=parse_temperatures(args.temperature),
                              prime=args.prime, prime_seconds=args.prime_seconds, label=args.label,
                              backend=args.backend, device=args.device, precision=args.precision, format=args.format,
                              block_seconds=args.block_seconds, snapshot_seconds=args.snapshot_seconds,
                              guard=args.guard, guard_seconds=args.guard_seconds,
                              guard_attempts=args.guard_attempts, guard_album=args.guard_album,
                              spectrogram=args.spectrogram, pitch_sync=args.pitch_sync,
                              postfilter=args.postfilter)
    report = render(args.model, args.out, settings, progress=not args.quiet, restart=args.restart,
                    checkpoint=args.checkpoint)
    if report.get("rank", 0) == 0:  # under torchrun/accelerate, one process lists the files
        for path in report["paths"]:
            print(path)
    return 0
