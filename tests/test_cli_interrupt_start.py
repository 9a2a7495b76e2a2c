"""A Ctrl-C in the first tenths of a second of a wavegen command, while the CLI imports its commands' modules or
builds its parser (before main's own handling), is said in one line with exit code 130, as one later is; a program
that imports the CLI as a library still gets its KeyboardInterrupt. A SIGTERM then (process started alone) is said
as that Ctrl-C (it ended the process by the signal without a word); once the command runs it is the command's own.

The Ctrl-C is a real SIGINT, raised by an import hook as the CLI looks for a module (or by argparse as it begins to
parse), so it lands at the same point every run; the program is started as the console script and ``python -m
wavegen`` start it (runpy, as the interpreter does)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# SIGINT (or INTERRUPT_SIGNAL) raised as module INTERRUPT_AT is looked for (a KeyboardInterrupt out of that import),
# or as argparse begins to parse where INTERRUPT_AT is "parse"; then RUN (python code) starts the program. ECHO: the
# signal raised again as the interpreter exits (a SIGTERM handed on twice: a recipe's forwarding, its sender's)
_HOOK = """import argparse, atexit, importlib.abc, os, signal, sys
at = os.environ["INTERRUPT_AT"]
sig = signal.Signals[os.environ.get("INTERRUPT_SIGNAL", "SIGINT")]
if os.environ.get("ECHO"):
    atexit.register(signal.raise_signal, sig)

class Interrupt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == at:
            signal.raise_signal(sig)
        return None

sys.meta_path.insert(0, Interrupt())
real_parse = argparse.ArgumentParser.parse_known_args

def parse(self, *args, **kwargs):
    if at == "parse":
        signal.raise_signal(sig)
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


def interrupted(tmp_path, entry: str, at: str, env: dict | None = None,
                args: tuple = ("render", "--help")) -> subprocess.CompletedProcess:
    script = tmp_path / "wavegen"
    script.write_text(_SCRIPT)
    code = _HOOK + f"sys.argv[:] = [sys.argv[1], *{list(args)!r}]\n" + ENTRIES[entry]
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


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("at, command", [("wavegen.cli.render", "prep"), ("parse", "eval"), ("parse", "info")])
def test_a_sigterm_while_the_cli_starts_is_said_as_a_ctrl_c(tmp_path, entry, at, command):
    """A SIGTERM then (a kill, a scheduler, a recipe stopped) ended every command by the signal without a word
    (-15), where a Ctrl-C at the same moment is said and exits 130, and one a moment later is the command's stop."""
    done = interrupted(tmp_path, entry, at, {"INTERRUPT_SIGNAL": "SIGTERM"}, (command, "--help"))
    assert (done.returncode, done.stderr, done.stdout) == (130, "wavegen: interrupted\n", "")


def test_a_sigterm_handed_on_twice_while_the_cli_starts_is_said_once(tmp_path):
    """The same SIGTERM again as the process exits (a recipe forwarding it beside its sender's): nothing more, not
    the signal's death after 'interrupted' was said."""
    done = interrupted(tmp_path, "console script", "parse", {"INTERRUPT_SIGNAL": "SIGTERM", "ECHO": "1"})
    assert (done.returncode, done.stderr) == (130, "wavegen: interrupted\n")


def test_once_the_command_runs_a_sigterm_is_its_own(tmp_path):
    """Past the start the command's own handling takes a SIGTERM: info has none, and its SIGTERM is a Ctrl-C
    throughout (was the signal's default: -15 without a word); prep's is a Ctrl-C throughout, its modules' import too
    (a quarter of a second before its handler: it ended by the signal there, without a word), said once."""
    done = interrupted(tmp_path, "console script", "wavegen.info", {"INTERRUPT_SIGNAL": "SIGTERM"},
                       ("info", "samplernn-tiny"))
    assert (done.returncode, done.stderr, done.stdout) == (130, "wavegen info: interrupted\n", "")
    done = interrupted(tmp_path, "console script", "wavegen.prep", {"INTERRUPT_SIGNAL": "SIGTERM"},
                       ("prep", str(tmp_path), str(tmp_path / "corpus")))
    assert (done.returncode, done.stderr) == (130, "wavegen prep: interrupted\n")
    assert not (tmp_path / "corpus").exists()


def test_a_library_that_imports_the_cli_still_ends_by_a_sigterm(tmp_path):
    """Not wavegen's program: SIGTERM keeps its default while it imports the CLI (the process ends by it)."""
    done = subprocess.run([sys.executable, "-c", _HOOK + "import wavegen.cli\nprint('not stopped')"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "INTERRUPT_AT": "wavegen.cli.render", "INTERRUPT_SIGNAL": "SIGTERM"})
    assert (done.returncode, done.stdout, done.stderr) == (-15, "", "")


@pytest.mark.slow
def test_a_sigterm_while_eval_scores_is_said_as_a_ctrl_c_and_writes_nothing(tmp_path):
    """eval has no stop of its own: a SIGTERM once it ran (torch, the model loaded, a minute's NLL or --renders
    analysis) ended it by the signal, -15 without a word, where a Ctrl-C says "interrupted" and exits 130, the
    folder made for --json FILE gone again. Now a SIGTERM there is that Ctrl-C."""
    from conftest import prepared_corpus, save_tiny_model

    corpus, model = prepared_corpus(tmp_path / "album"), save_tiny_model(tmp_path / "model", sample_rate=16000)
    result = tmp_path / "made" / "eval.json"
    done = interrupted(tmp_path, "python -m wavegen", "wavegen.data", {"INTERRUPT_SIGNAL": "SIGTERM"},
                       ("eval", str(model), "--data", str(corpus), "--json", str(result), "--threads", "1"))
    assert (done.returncode, done.stderr, done.stdout) == (130, "wavegen eval: interrupted\n", "")
    assert not (tmp_path / "made").exists()


@pytest.mark.slow
def test_a_sigterm_once_render_runs_is_still_its_own_stop(tmp_path):
    """A SIGTERM as render's run imports torch (seconds) is render's own to hold and say, its StopSignals' stop
    (the CLI's start gave SIGTERM back to it), not the start's bare 'interrupted'."""
    from render_helpers import make_model

    model, out = make_model(tmp_path / "model"), tmp_path / "out"
    done = interrupted(tmp_path, "python -m wavegen", "torch", {"INTERRUPT_SIGNAL": "SIGTERM"},
                       ("render", str(model), "--seconds", "0.5", "--out", str(out), "--backend", "torch",
                        "--no-spectrogram", "--threads", "1"))
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == ["SIGTERM: stopping once the model and engine are ready, before anything is "
                                        "written (the signal again to stop at once)", "wavegen render: interrupted"]
    assert not out.exists()
