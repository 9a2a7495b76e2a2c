"""A Ctrl-C while `wavegen eval --renders --plot` imports matplotlib (or soxr): "interrupted", exit 130, nothing
written.

matplotlib's ft2font is a pybind11 module whose initialisation runs Python code (its enums): a
KeyboardInterrupt raised there came out as ImportError "initialization failed", which eval took for a
missing matplotlib; the analysis went on, the next import of the half-imported package failed with a
traceback, and the interpreter aborted as it exited. The signal is sent here at the first Python call
inside that initialisation (a profile hook set when the import begins), so it lands there every time. soxr's
extension (nanobind) swallowed a KeyboardInterrupt raised in its initialisation altogether: the eval ran to its end
and exited 0.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_eval_renders_cli import album  # noqa: F401  (the fixture: a corpus and one render)

pytest.importorskip("librosa")
pytest.importorskip("matplotlib")

# Runs wavegen's CLI with a SIGINT sent to itself at the first Python call made while the extension module EXT
# (matplotlib.ft2font, soxr.soxr_ext) initialises; says on stderr where it fired.
DRIVER = textwrap.dedent("""
    import os, signal, sys
    EXT = os.environ["EXT"]

    def inside_init(frame):
        while frame is not None:
            if frame.f_code.co_name in ("create_module", "exec_module") and EXT.rsplit(".", 1)[-1] in repr(
                    frame.f_locals.get("spec") or frame.f_locals.get("module")):
                return True
            frame = frame.f_back
        return False

    def profile(frame, event, arg):
        if event == "call" and "importlib" not in frame.f_code.co_filename and inside_init(frame.f_back):
            sys.setprofile(None)
            sys.stderr.write("SIGINT sent in " + EXT + "'s initialisation, at " + frame.f_code.co_name + "\\n")
            os.kill(os.getpid(), signal.SIGINT)

    class Watch:
        def find_spec(self, name, path=None, target=None):
            if name == EXT:
                sys.meta_path.remove(self)
                sys.setprofile(profile)
            return None

    sys.meta_path.insert(0, Watch())
    from wavegen.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.slow
@pytest.mark.parametrize("ext", ["matplotlib.ft2font", "soxr.soxr_ext"])
def test_a_ctrl_c_inside_an_extensions_import_is_an_interrupt(album, tmp_path, ext):  # noqa: F811
    import os

    import soundfile as sf

    corpus, renders = album
    if ext.startswith("soxr"):  # a render at another rate than the corpus's: resampled, soxr imported
        audio, rate = sf.read(next(renders.iterdir()), dtype="float32")
        renders = tmp_path / "renders"
        renders.mkdir()
        sf.write(renders / "take1.wav", np.repeat(audio, 2), rate * 2)
    plot = tmp_path / "made" / "for" / "compare.png"
    done = subprocess.run([sys.executable, "-c", DRIVER, "-q", "eval", "--renders", str(renders), "--data",
                           str(corpus), "--max-seconds", "1", "--plot", str(plot)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "EXT": ext})
    if "SIGINT sent" not in done.stderr:
        pytest.skip(f"this {ext} runs no Python code as it initialises: nothing to interrupt there")
    lines = done.stderr.strip().splitlines()
    assert (done.returncode, lines[1:]) == (130, ["wavegen eval: interrupted"]), done.stderr[-3000:]
    assert done.stdout == ""  # no comparison printed: the analysis never ran
    assert not (tmp_path / "made").exists()  # the folders made for --plot went again
