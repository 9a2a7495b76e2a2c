"""``wavegen prep|train|render|eval|info|bench|serve``: parses arguments, then calls the modules.

prep: recordings into a corpus; train: a model on a corpus (resumes when rerun); render: audio
from a model (resumes when rerun); eval: a model's NLL on a corpus split; info: what a model, run
or preset is; bench: generation and training speed; serve: a model as an endless live stream
with a web player.

One module per command (``wavegen/cli/render.py`` ...), each with ``add_parser(sub)`` and
``run(args) -> exit code``; this module holds the parser and the error handling: an error the
user can fix (wavegen.errors.WavegenError) prints as one line with exit code 2 (under a launch,
torchrun or accelerate launch, by one process: the launcher ends the others); Ctrl-C exits 130 (said once;
a SIGTERM before the command sets its own handler is one too, and throughout eval and info, which have none);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys


def _is_the_program() -> bool:
    """Whether the program running is wavegen's own: the console script (``wavegen``, launched too) or ``python -m
    wavegen``; not a program or test that imports the CLI as a library."""
    main = sys.modules.get("__main__")
    return (getattr(getattr(main, "__spec__", None), "name", None) == "wavegen.__main__"
            or os.path.basename(getattr(main, "__file__", None) or "") == "wavegen")


def _stopped_while_importing() -> None:
    """A Ctrl-C while the CLI imports (tenths of a second at every command's start, before main says one): where the
    CLI is the program, one line and exit 130, as a Ctrl-C inside main; a library's import gets its KeyboardInterrupt
    (raised again by the caller). Under a launch the first process says it for all, where its rule has imported."""
    signals = sys.modules.get("wavegen.signals")  # (gone where the Ctrl-C came while it imported)
    if signals is None or signals.says_the_interrupt():
        print("wavegen: interrupted", file=sys.stderr)
    if signals is None:
        raise SystemExit(130)
    signals.end_program(130)  # the Ctrl-C may have passed through an import's exec'd string (a dataclass)


def _term_interrupts_while_starting() -> None:
    """Where the CLI is the program, started alone, in the main thread, with SIGTERM at its default: a SIGTERM is a
    Ctrl-C (signals_start.term_as_interrupt: its echo nothing) until the command sets its own handler (train's and
    serve's StopSignals, render's signals_start.launch_term_held, prep's, bench's), which takes its place directly (a
    default set back between the two ended the process by the signal there, without a word), and after it until
    main's end (:func:`_term_as_ever`), except after a render that completed: from there a SIGTERM stops nothing
    (render's ``launch_term_held(late=True)``). Under a launch the launcher's SIGTERM is held instead
    (signals_start.hold_launch_term_early); a library importing the CLI keeps SIGTERM's default."""
    if (_is_the_program() and not launched() and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
        signal.signal(signal.SIGTERM, term_as_interrupt)


def _term_as_ever() -> None:
    """main is over: SIGTERM's default back, where it was a Ctrl-C while the CLI started and none came (one that
    did: its echo is still nothing, as the process says it and exits). After a render that completed the handler is
    render's late one (signals_start.HeldTerm.came_late), kept until the process ends."""
    if (not term_taken_as_interrupt() and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is term_as_interrupt):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


try:
    import signal
    import threading

    from wavegen.signals import expect_the_others, launched, met_the_others, says_the_interrupt
    from wavegen.signals_start import (cli_imported, cli_main_runs, hold_launch_term_early, release_early_term,
                                       term_as_interrupt, term_taken_as_interrupt)

    _term_interrupts_while_starting()  # started alone: a SIGTERM from here to the command's own handler is a Ctrl-C
    hold_launch_term_early()  # a launcher's SIGTERM from here on held for train's and render's handlers (stdlib only)

    import argparse
    import logging
    import re

    from wavegen.cli import bench, evaluate, info, prep, render, serve, train
except KeyboardInterrupt:
    if not _is_the_program():
        raise
    _stopped_while_importing()

cli_imported()  # the hold from here on inside main (a second before it): a library importing the CLI ends by SIGTERM

logger = logging.getLogger("wavegen")

COMMANDS = {"prep": prep, "train": train, "render": render, "eval": evaluate, "info": info, "bench": bench,
            "serve": serve}
# the commands whose handlers take a launcher's SIGTERM held from the CLI's import (StopSignals, launch_term_held)
_TAKE_AN_EARLY_TERM = ("train", "render")


def _takes_an_early_term(args) -> bool:
    """Whether command ``args`` meets the others of a launch before its group (train, render, bench --train)."""
    return args.command in _TAKE_AN_EARLY_TERM or (args.command == "bench" and getattr(args, "train", False))


DESCRIPTION = """Raw-audio neural synthesis: prepare an artist's recordings into a corpus (prep), train a
SampleRNN or WaveNet on it (train; rerun to resume), render audio of any length (render; rerun to
resume), score a model or judge renders against the album (eval), describe a model (info), measure
generation or training speed (bench), or play a model as an endless live stream (serve).
`wavegen COMMAND --help` for each."""


# digits as float() and int() read them: an underscore between two of them (1_000)
_DIGITS = r"\d(?:_?\d)*"


class _Parser(argparse.ArgumentParser):
    """argparse's parser, where a negative number in exponent form (``--seconds -1e-3``) or with underscores
    (``-1_000``) is a value as ``-0.001`` is, and so are ``-inf`` and ``-nan`` (any case, ``-infinity`` too: what
    float() reads), so that the command's own check names it: argparse's pattern of a negative number has none of
    them, and took it for an option ("expected one argument"). Its commands' parsers are of this class too
    (:class:`_CommandParser`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(
            rf"^-(({_DIGITS}(\.({_DIGITS})?)?|\.{_DIGITS})(e[-+]?{_DIGITS})?|inf|infinity|nan)$", re.IGNORECASE)


class _CommandParser(_Parser):
    """A command's parser, which refuses an argument it does not know itself, naming the command as for its other
    errors ("wavegen bench: error: unrecognized arguments: --seconds -1", with its usage): argparse handed them up to
    wavegen's own parser, whose error named no command."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wavegen", description=DESCRIPTION)
    _add_log_options(parser)
    parser.set_defaults(verbose=False, quiet=False)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_CommandParser)
    for name, module in COMMANDS.items():
        module.add_parser(sub)
        _add_log_options(sub.choices[name])  # `wavegen render ... -v` as well
    return parser


def _add_log_options(parser: argparse.ArgumentParser) -> None:
    """-v and -q, before the command or after it (SUPPRESS: where one is not given, it leaves the value)."""
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="debug logging, and the traceback of an error")
    parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="warnings only, no progress bars")


def run() -> int:
    """``wavegen`` as a program (the console script, ``python -m wavegen``, a launched script): :func:`main` on
    ``sys.argv``, then every object left is frozen out of the collector (gc.freeze) before the interpreter exits. Its
    exit's collections then skip torch's and numba's hundreds of thousands of objects (0.7 -> 0.2 s of every exit
    here); exit handlers still run, and what was written is closed by then (main returns after its files are)."""
    import gc

    code = main()
    gc.freeze()
    return code


def main(argv: list[str] | None = None) -> int:
    cli_main_runs()
    args = None
    try:
        args = build_parser().parse_args(argv)
        if _takes_an_early_term(args):
            expect_the_others()  # (under a launch) they meet the others before their group: a held SIGTERM waits
        else:
            release_early_term()
        return _main(args)
    except KeyboardInterrupt:  # a Ctrl-C outside the command's own handling (while the parser is built: tens of ms)
        return _interrupted("wavegen" if args is None else f"wavegen {args.command}")
    finally:
        met_the_others()
        release_early_term()
        _term_as_ever()


def _main(args) -> int:
    _print_any_name()
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s" if args.verbose else "%(message)s")
    for noisy in ("accelerate", "torch", "torch.distributed", "numba"):  # their INFO lines are not for users
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    from wavegen.errors import WavegenError

    # a Ctrl-C while the command's libraries import (seconds, for torch) is an interrupt too, and so is a SIGTERM
    # until the command's own handler takes its place (prep's once its modules have imported; eval and info have none:
    # a KeyboardInterrupt anywhere in them is their stop, --json and --plot written whole or not at all)
    try:
        # numpy before torch imports it: torch's C start-up does, and drops a KeyboardInterrupt raised meanwhile (a
        # Ctrl-C in those 50 ms went unheard: info went on as if none came); here it is a Ctrl-C as any other
        import numpy  # noqa: F401
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():  # log lines print above progress bars, not through them
            try:
                return COMMANDS[args.command].run(args)
            finally:  # SIGTERM's default again before an error is said (the launcher ends a process left waiting)
                release_early_term()
    except WavegenError as err:  # the user's to fix: one line, no traceback (-v shows it)
        if args.verbose:
            raise
        if left_to_another_process(err):
            from wavegen.distributed import wait_for_the_launcher

            wait_for_the_launcher(err)  # ends here once the process that prints it has exited with it
        print(f"wavegen {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemError) as err:
        if not interrupted_inside(err):
            raise
        return _interrupted(f"wavegen {args.command}")
    except BrokenPipeError:  # the reader of stdout went away (| head): nothing more to say, to anyone
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush at exit does not fail again
        return 141  # what a shell reports for a process killed by SIGPIPE


def _interrupted(prog: str) -> int:
    """A Ctrl-C's exit code, said "PROG: interrupted" (under a launch, by the first process for all)."""
    if says_the_interrupt():
        print(f"{prog}: interrupted", file=sys.stderr)
    return 130


def interrupted_inside(err: BaseException) -> bool:
    """Whether ``err`` is a Ctrl-C: a KeyboardInterrupt, or one that landed inside numba's dispatcher (a numba
    function's call or first compile: bench's engines, librosa's pyin), which comes out as a SystemError
    "returned a result with an exception set" caused by it; any other SystemError is a bug."""
    while err is not None and not isinstance(err, KeyboardInterrupt):
        err = err.__cause__ or err.__context__
    return err is not None


def left_to_another_process(err: BaseException) -> bool:
    """Whether this process is one of a launch (torchrun, accelerate launch) that leaves user error
    ``err`` to another process to print, so that it reads once, not once per process (the rule:
    wavegen.distributed.leave_to_another_process). A command that has not imported torch has no
    processes to share with (prep): it prints its own, without the seconds torch takes to import."""
    if "torch" not in sys.modules:
        return False
    from wavegen.distributed import leave_to_another_process

    return leave_to_another_process(err)


def one_line(err: BaseException) -> str:
    """An error's message on one line (a message that lists things keeps them, space-separated)."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def _print_any_name() -> None:
    """A path named in bytes that are not UTF-8 (a Latin-1 folder: surrogate escapes in Python) prints as
    those bytes, as ls does, where the stream's encoding is strict (a UTF-8 locale other than C.UTF-8,
    PYTHONIOENCODING=utf-8): the result line crashed with UnicodeEncodeError after the work was done."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
