"""A SIGTERM between the CLI's start and a command's own handler (train's and serve's StopSignals, render's
launch_term_held) is the start's Ctrl-C: one line, exit 130, nothing written. The CLI set SIGTERM's default back
before it called the command, so one there ended the process by the signal, without a word (-15).

The SIGTERM is a real one, raised as the command's run asks wavegen.signals (signals_start) for its handler (the
statement before the handler is set), so it lands in that gap every run; the program is started as ``python -m
wavegen`` does."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# SIGTERM raised as code imports GAP_NAME from wavegen.signals or signals_start (a command's run, before it sets its
# handler); then the program runs as python -m wavegen (runpy, as the interpreter does) on the arguments after the
# script's name
_HOOK = """import builtins, os, runpy, signal, sys
name, real = os.environ["GAP_NAME"], builtins.__import__

def hooked(module, globals=None, locals=None, fromlist=(), level=0):
    if module in ("wavegen.signals", "wavegen.signals_start") and name in (fromlist or ()):
        builtins.__import__ = real
        signal.raise_signal(signal.SIGTERM)
    return real(module, globals, locals, fromlist, level)

builtins.__import__ = hooked
sys.argv[:] = ["wavegen", *sys.argv[1:]]
runpy.run_module("wavegen", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("command, handler", [("train", "StopSignals"), ("render", "launch_term_held"),
                                              ("serve", "StopSignals")])
def test_a_sigterm_before_the_commands_own_handler_is_said_as_a_ctrl_c(tmp_path, command, handler):
    args = {"train": ["--data", str(tmp_path / "corpus"), "--model", "samplernn-tiny", "--run", str(tmp_path / "run")],
            "render": [str(tmp_path / "model"), "--seconds", "1", "--out", str(tmp_path / "out")],
            "serve": [str(tmp_path / "model"), "--port", "0"]}[command]
    done = subprocess.run([sys.executable, "-c", _HOOK, command, *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "GAP_NAME": handler})
    assert (done.returncode, done.stderr, done.stdout) == (130, f"wavegen {command}: interrupted\n", "")
    assert sorted(os.listdir(tmp_path)) == []  # no run, output or model folder made


# SIGINT raised as numpy is first looked for (torch's C start-up imports it where nothing did before); then the program
# runs as python -m wavegen on the arguments after the script's name
_CTRL_C_AT_NUMPY = """import importlib.abc, runpy, signal, sys

class Interrupt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            sys.meta_path.remove(self)
            signal.raise_signal(signal.SIGINT)
        return None

sys.meta_path.insert(0, Interrupt())
sys.argv[:] = ["wavegen", *sys.argv[1:]]
runpy.run_module("wavegen", run_name="__main__", alter_sys=True)
"""


def test_a_ctrl_c_as_numpy_imports_is_heard():
    """info imported torch before numpy: torch's C start-up imports numpy and dropped the KeyboardInterrupt of a
    Ctrl-C meanwhile, and info went on and printed as if none came (exit 0)."""
    done = subprocess.run([sys.executable, "-c", _CTRL_C_AT_NUMPY, "info", "samplernn-tiny"], capture_output=True,
                          text=True, timeout=120)
    assert (done.returncode, done.stderr, done.stdout) == (130, "wavegen info: interrupted\n", "")
