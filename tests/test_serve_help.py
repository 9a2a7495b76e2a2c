"""``wavegen serve --help`` against the refusals: an option with a least value says it, so a user reading the help
does not learn it from the error (--archive-part-seconds and --idle-seconds under 1 s are refused)."""

import argparse

from wavegen.cli import build_parser
from wavegen.serve.settings import MIN_IDLE_SECONDS, MIN_PART_SECONDS


def _serve_helps() -> dict[str, str]:
    """serve's options → their help text on one line (as the parser holds it, wrapped nowhere)."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {action.option_strings[-1]: " ".join((action.help or "").split())
            for action in sub.choices["serve"]._actions if action.option_strings}


def test_serve_help_names_the_least_archive_part_and_idle_seconds():
    helps = _serve_helps()
    assert f"{MIN_PART_SECONDS:g} at least" in helps["--archive-part-seconds"], helps["--archive-part-seconds"]
    assert f"{MIN_IDLE_SECONDS:g} at least" in helps["--idle-seconds"], helps["--idle-seconds"]
