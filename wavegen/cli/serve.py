"""wavegen serve: a model as an endless live stream, with a web player."""

from __future__ import annotations

from wavegen.cli.options import add_device, add_threads, apply_threads, check_device


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="play a model as an endless live stream with a web player",
                       description="Play a model forever: a web player at /, the audio (Ogg Opus over HTTP) at "
                                   "/stream for browsers, VLC, mpv and ffplay, /status (JSON) and /metrics "
                                   "(Prometheus). Ctrl-C or SIGTERM stops it (exit 130).")
    p.add_argument("model", help="run folder, model folder, preset or config .json")
    p.add_argument("--checkpoint", default=None, help='a run checkpoint instead of best/: "last" or "step_N"')
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    p.add_argument("--seed", type=int, default=0, help="the same seed plays the same stream (default 0)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature: lower is more predictable, higher noisier (default 1.0)")
    p.add_argument("--label", default=None, help='a label, or a blend "a:0.7,b:0.3" (conditioned models)')
    p.add_argument("--backend", default="auto", help="auto, torch, numba or cuda (default auto: the fastest installed)")
    add_device(p)
    p.add_argument("--pitch-sync", type=float, default=0.0, metavar="RHO",
                   help="draws that repeat with the stream's pitch period, by RHO in [0, 1), as render's (default 0: "
                        "off)")
    p.add_argument("--postfilter", type=float, default=0.0, metavar="G",
                   help="the played audio averaged with the model's sample a pitch period before, by G in [0, 1], as "
                        "render's (default 0: off)")
    add_threads(p, "the engine (torch, and numba's stream groups: one here, so the audio does not depend on the count)")
    p.add_argument("--archive", default=None, metavar="DIR",
                   help="also write the broadcast to DIR (WAV parts, resumable): a restart with the same "
                        "arguments continues it")
    p.add_argument("--archive-part-seconds", type=float, default=3600.0,
                   help="length of each archive WAV part, 1 at least (default 3600; a new archive's: one continued "
                        "keeps its own)")
    p.add_argument("--archive-keep-parts", type=int, default=0, metavar="N",
                   help="keep only the newest N archive parts, removing older ones as the broadcast goes on, so "
                        "the archive's disk stays bounded (default 0: keep all; at 16 kHz an hour's part is "
                        "115 MB, 2.8 GB a day)")
    p.add_argument("--snapshot-seconds", type=float, default=30.0, help="archived audio between snapshots (default 30)")
    p.add_argument("--buffer-seconds", type=float, default=4.0, help="audio rendered ahead of the live edge (default 4)")
    p.add_argument("--burst-seconds", type=float, default=6.0,
                   help="audio a new listener receives at once, so playback starts at once (default 6; "
                        "browsers wait for ~32 KB)")
    p.add_argument("--max-listeners", type=int, default=100, help="listeners at once; more are refused (503) (default 100)")
    p.add_argument("--max-listeners-per-client", type=int, default=None, metavar="N",
                   help="listeners at once from one address (an IPv6 /64); more are refused (429), so one client "
                        "cannot take every place (0: no limit; default 4 where --host reaches beyond this machine, "
                        "no limit on loopback, where listeners come through a reverse proxy with its one address)")
    p.add_argument("--stall-seconds", type=float, default=10.0,
                   help="a listener that takes no data for this long (and at least --lag-seconds) is dropped "
                        "(default 10)")
    p.add_argument("--lag-seconds", type=float, default=30.0,
                   help="a listener this far behind the live edge skips ahead to it (default 30)")
    p.add_argument("--idle-seconds", type=float, default=15.0,
                   help="a connection with no request under way (none yet, one half sent, or idle between two) is "
                        "closed after this long, so idle ones cannot hold the server's file descriptors (default 15, 1 "
                        "at least; more behind a proxy that keeps its connections open, less on a busy public server)")
    p.add_argument("--allow-slow", action="store_true",
                   help="play a model slower than real time (with a growing delay) instead of refusing it")
    p.add_argument("--no-guard", dest="guard", action="store_false",
                   help="do not redraw windows that fall silent, clip or turn to noise")
    p.add_argument("--guard-seconds", type=float, default=2.0, help="guard window (default 2)")
    p.add_argument("--guard-attempts", type=int, default=4, help="redraws of a failing window (default 4)")
    control = p.add_mutually_exclusive_group()
    control.add_argument("--control-token", default=None, metavar="TOKEN",
                         help="let an operator switch the label while it plays: POST /label with the label text and "
                              "'Authorization: Bearer TOKEN' (conditioned models; default: off, nobody can)")
    control.add_argument("--control-token-file", default=None, metavar="FILE",
                         help="--control-token read from FILE's first line (not shown in the process list)")


def run(args) -> int:
    from wavegen.signals import StopSignals

    # installed before torch imports (seconds): a SIGTERM then is a clean stop (130), not a death by the signal
    with StopSignals("stopping before the server listens") as stop:
        from wavegen.serve import serve

        apply_threads(args)
        check_device(args.device)
        token = args.control_token
        if args.control_token_file is not None:
            from wavegen.serve.control import read_token_file

            token = read_token_file(args.control_token_file)
        settings = _settings(args, token)

        def ready(url: str) -> None:  # on stdout, so a script can read where to listen
            print(f"listening: {url}", flush=True)

        serve(args.model, settings, checkpoint=args.checkpoint, on_ready=ready, stop=stop)
    # it plays until stopped: a stop on request exits 130, as train's and render's do, so a supervisor tells it
    # from an end it did not ask for
    return 130 if stop.requested else 0


def _settings(args, token: str | None):
    from wavegen.serve import ServeSettings

    return ServeSettings(host=args.host, port=args.port, seed=args.seed, temperature=args.temperature,
                          label=args.label, backend=args.backend, device=args.device, archive=args.archive,
                          archive_part_seconds=args.archive_part_seconds,
                          archive_keep_parts=args.archive_keep_parts, snapshot_seconds=args.snapshot_seconds,
                          buffer_seconds=args.buffer_seconds, burst_seconds=args.burst_seconds,
                          max_listeners=args.max_listeners,
                          max_listeners_per_client=args.max_listeners_per_client, stall_seconds=args.stall_seconds,
                          lag_seconds=args.lag_seconds, idle_seconds=args.idle_seconds, allow_slow=args.allow_slow,
                          guard=args.guard, guard_seconds=args.guard_seconds, guard_attempts=args.guard_attempts,
                          control_token=token, pitch_sync=args.pitch_sync,
                          postfilter=args.postfilter)
