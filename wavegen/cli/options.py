"""Options several commands share (defined once; no heavy imports at parse time)."""

from __future__ import annotations


def add_threads(parser, what: str = "numba and torch") -> None:
    """``--threads N``: applied by :func:`apply_threads` (wavegen.bench.set_threads)."""
    parser.add_argument("--threads", type=int, default=None, help=f"threads for {what} (default: theirs)")


def apply_threads(args) -> None:
    """Set numba's and torch's thread counts from ``--threads`` (nothing when it was not given)."""
    from wavegen.bench import set_threads

    set_threads(args.threads)
