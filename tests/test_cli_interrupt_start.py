"""A Ctrl-C in the first tenths of a second of a wavegen command, while the CLI imports its commands' modules or
builds its parser (before main's own handling), is said in one line with exit code 130, as one later is; a program
that imports the CLI as a library still gets its KeyboardInterrupt.

The Ctrl-C is a real SIGINT, raised by an import hook as the CLI looks for a module (or by argparse as it begins to
parse), so it lands at the same point every run; the program is started as the console script and ``python -m
wavegen`` start it (runpy, as the interpreter does)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# SIGINT raised as module INTERRUPT_AT is looked for (a KeyboardInterrupt out of that import), or as argparse
# begins to parse where INTERRUPT_AT is "parse"; then RUN (python code) starts the program
_HOOK = """import argparse, importlib.abc, os, signal, sys
at = os.environ["INTERRUPT_AT"]

class Interrupt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == at:
            signal.raise_signal(signal.SIGINT)
        return None

sys.meta_path.insert(0, Interrupt())
real_parse = argparse.ArgumentParser.parse_known_args

def parse(self, *args, **kwargs):
    if at == "parse":
        signal.raise_signal(signal.SIGINT)
    return real_parse(self, *args, **kwargs)

argparse.ArgumentParser.parse_known_args = parse
"""

# how each entry runs: the console script (a file named wavegen, as pip writes it) and python -m wavegen
_SCRIPT = """import sys
from wavegen.cli import run
if __name__ == "__main__":
    sys.exit(run())
"""
ENTRIES = {"console script": "import runpy; runpy.run_path(sys.argv[0], run_name='__main__')",
           "python -m wavegen": "import runpy; runpy.run_module('wavegen', run_name='__main__', alter_sys=True)"}


def interrupted(tmp_path, entry: str, at: str, env: dict | None = None) -> subprocess.CompletedProcess:
    script = tmp_path / "wavegen"
    script.write_text(_SCRIPT)
    code = _HOOK + "sys.argv[:] = [sys.argv[1], 'render', '--help']\n" + ENTRIES[entry]
    return subprocess.run([sys.executable, "-c", code, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "INTERRUPT_AT": at, **(env or {})})


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("at", ["wavegen.cli.render", "parse"])
def test_a_ctrl_c_while_the_cli_starts_is_one_line_and_exit_130(tmp_path, entry, at):
    """It printed a KeyboardInterrupt traceback (the commands' imports, the parser: tenths of a second of every
    command), exit code 1 or the signal's, where one a moment later was said as 'interrupted' with 130."""
    done = interrupted(tmp_path, entry, at)
    assert (done.returncode, done.stderr) == (130, "wavegen: interrupted\n")
    assert done.stdout == ""  # stopped before the help it was asked for


def test_under_a_launch_the_first_process_says_it_for_all(tmp_path):
    """Every process of a launch gets the terminal's Ctrl-C: the others exit 130 without a word, as later."""
    done = interrupted(tmp_path, "console script", "wavegen.cli.render",
                       {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
    assert (done.returncode, done.stderr) == (130, "")


def test_a_library_that_imports_the_cli_still_gets_the_keyboard_interrupt(tmp_path):
    """Not wavegen's program (a test, a notebook importing wavegen.cli): the Ctrl-C is its own to handle."""
    done = subprocess.run([sys.executable, "-c", _HOOK + "import wavegen.cli\nprint('not stopped')"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "INTERRUPT_AT": "wavegen.cli.render"})
    assert done.returncode != 130 and "not stopped" not in done.stdout
    assert done.stderr.rstrip().endswith("KeyboardInterrupt") and "interrupted" not in done.stderr
