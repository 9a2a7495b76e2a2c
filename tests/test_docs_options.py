"""The docs against the CLI: every option of every ``wavegen`` command is named somewhere a user reads
(README.md or docs/*.md), not only in its --help."""

import argparse
import re
from pathlib import Path

from wavegen.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def _docs_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def _commands_options():
    """(command, its long option names) for every subcommand of the parser wavegen runs."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        yield name, [[s for s in action.option_strings if s.startswith("--")] for action in command._actions
                     if action.option_strings and "--help" not in action.option_strings]


def test_every_command_option_is_documented():
    text = _docs_text()
    missing = [f"wavegen {name} {longs[0]}" for name, options in _commands_options() for longs in options
               if longs and not any(re.search(re.escape(o) + r"(?![\w-])", text) for o in longs)]
    assert not missing, f"options named only in --help: {missing}"


def test_the_check_sees_the_options():
    """The walk above reads the real parser: it finds render's --out and serve's --port (so an empty walk cannot pass)."""
    found = {name: {o for longs in options for o in longs} for name, options in _commands_options()}
    assert {"prep", "train", "render", "eval", "info", "bench", "serve"} <= set(found)
    assert "--out" in found["render"] and "--port" in found["serve"] and "--warmup-steps" in found["bench"]


def test_the_threads_default_is_said_in_each_commands_help():
    """--threads' help said "(default: theirs)" (numba's and torch's own), where README says what that is: all
    cores. Each command that takes it says so."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = {name: next(a.help for a in command._actions if "--threads" in a.option_strings)
             for name, command in sub.choices.items() if "--threads" in command._option_string_actions}
    assert {"render", "train", "eval", "bench"} <= set(helps)
    for name, text in helps.items():
        assert text.endswith("(default: all cores)"), (name, text)
