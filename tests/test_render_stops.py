"""A render stopped near its end, by a real signal to a real `wavegen render` process: what it says,
its exit status, what it leaves, and what a rerun makes of it.

- a Ctrl-C while the last window is judged by the guard: that window is rewound, exit 130, a rerun
  finishes with the bytes of a render never stopped;
- a Ctrl-C once the last window is written: the render finishes, says it is complete (no claim of
  a stop), exit 0;
- a FLAC render stopped while its files are encoded: a first signal lets it finish; a second one,
  or kill -9, leaves no FLAC file that is not whole (a partial one is removed by the rerun), and
  the rerun finishes the files without generating again;
- a SIGTERM outside the render's StopSignals (the command starting, torch importing; its folder checked between
  them): held for the next, said and stopped cleanly (130), a resumed render's files untouched; one that meets
  a complete render is said so (exit 0).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from render_helpers import ENV, SR, direct_pcm, file_bytes, make_model, paused_cli, wait_for_file, write_streams
from wavegen.cli import main

pytestmark = pytest.mark.slow

SECONDS, STREAMS = 0.5, 2
TOTAL = round(SECONDS * SR)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "tiny")


def flags(out: Path, fmt: str = "wav", guard: bool = False) -> list[str]:
    """An unguarded torch render (or one whose guard never fires: a window is the render) of SECONDS."""
    guard_flags = ["--guard-seconds", SECONDS, "--guard-attempts", 0, "--no-album-guard"] if guard else ["--no-guard"]
    return ["--seconds", SECONDS, "--streams", STREAMS, "--out", out, "--format", fmt, "--backend", "torch",
            "--no-spectrogram", "--block-seconds", 0.05, *guard_flags]


def stopped(model, tmp_path, hook, fmt, signals, pause=3.0, guard=False) -> tuple[subprocess.CompletedProcess, Path]:
    """Run the render pausing at ``hook``, send ``signals`` (real ones) there; → (its outcome, --out)."""
    out, sentinel = tmp_path / "out", tmp_path / "paused"
    proc = subprocess.Popen(paused_cli(hook, sentinel, TOTAL, pause, model, *flags(out, fmt, guard)), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_file(proc, sentinel)
    for sig in signals:
        proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), out


def reference(model, tmp_path, fmt) -> list[bytes]:
    return file_bytes(write_streams(tmp_path / "ref", direct_pcm(model, STREAMS, TOTAL), fmt), STREAMS, fmt)


def rerun(model, out, fmt="wav", guard=False) -> dict:
    assert main(["-q", "render", str(model), *map(str, flags(out, fmt, guard))]) == 0
    return json.loads((out / "render_report.json").read_text())


def test_a_ctrl_c_while_the_last_window_is_judged_rewinds_it_and_exits_130(model, tmp_path):
    done, out = stopped(model, tmp_path, "guard", "wav", [signal.SIGINT], pause=1.0, guard=True)
    assert done.returncode == 130, done.stderr
    assert "SIGINT: rewinding to the start of the window and saving a snapshot" in done.stderr
    assert "SIGINT: stopped at 0.0 s; snapshot saved. Rerun the same command to resume" in done.stderr
    assert "complete" not in done.stderr
    assert not (out / "render_report.json").exists()
    assert rerun(model, out, guard=True)["sessions"] == 2
    assert file_bytes(out, STREAMS) == reference(model, tmp_path, "wav")


def test_a_ctrl_c_once_the_last_window_is_written_finishes_and_says_so(model, tmp_path):
    done, out = stopped(model, tmp_path, "write", "wav", [signal.SIGINT])
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == ("SIGINT: the last window is made: finishing the render (its files and report) instead of "
                        "stopping (Ctrl-C again to stop at once)"), done.stderr
    assert lines[-1] == ("SIGINT came after the last window was made: the render finished and is complete; "
                         "nothing to resume"), done.stderr
    assert "rewinding" not in done.stderr and "interrupted" not in done.stderr
    assert done.stdout.split() == [str(p) for p in sorted(out.glob("stream_*.wav"))]
    report = json.loads((out / "render_report.json").read_text())
    assert report["status"] == "complete" and report["sessions"] == 1
    assert file_bytes(out, STREAMS) == reference(model, tmp_path, "wav")


def test_a_flac_render_signalled_while_encoding_finishes_whole_files(model, tmp_path):
    done, out = stopped(model, tmp_path, "encode", "flac", [signal.SIGTERM], pause=1.0)
    assert done.returncode == 0, done.stderr
    assert "SIGTERM: the last window is made: finishing the render" in done.stderr
    assert "SIGTERM came after the last window was made: the render finished and is complete" in done.stderr
    assert file_bytes(out, STREAMS, "flac") == reference(model, tmp_path, "flac")
    assert sorted(p.name for p in out.iterdir()) == [".lock", "render_report.json", "stream_000.flac",
                                                     "stream_001.flac"]


@pytest.mark.parametrize("how", ["two signals", "kill -9"])
def test_a_flac_render_stopped_while_encoding_leaves_no_partial_file_and_a_rerun_finishes(model, tmp_path, how):
    signals = [signal.SIGINT, signal.SIGTERM] if how == "two signals" else [signal.SIGKILL]
    done, out = stopped(model, tmp_path, "encode", "flac", signals, pause=5.0)
    partial = sorted(p.name for p in out.iterdir() if ".tmp" in p.name)
    if how == "kill -9":
        assert done.returncode == -signal.SIGKILL
        assert partial == [f".stream_000.flac.tmp{done_pid(out)}"]  # what atomic_write could not remove
    else:
        assert done.returncode == 130, done.stderr
        assert "stopped while the render's files were being finished: every window is made and saved" in done.stderr
        assert "rerun the same command to finish them (nothing is generated again)" in done.stderr
        assert partial == []
        assert "Traceback" not in done.stderr and "cffi" not in done.stderr  # not raised inside the encoder
    assert not (out / "render_report.json").exists() and not list(out.glob("*.flac"))
    report = rerun(model, out, "flac")
    assert report["sessions"] == 2  # the snapshot was complete: encoded, not generated again
    assert file_bytes(out, STREAMS, "flac") == reference(model, tmp_path, "flac")
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def done_pid(out: Path) -> int:
    """The pid of the render that held ``out`` (its lock file names it)."""
    return json.loads((out / ".lock").read_text())["pid"]


# `wavegen render` whose engine build (make_engine, numba's compiler on a CPU) takes PAUSE seconds: it writes
# SENTINEL when the build begins and BUILT when it returned whole
BUILD_RUNNER = r"""
import pathlib, sys, time
from wavegen.render import loop
sentinel, built, pause = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), float(sys.argv[3])
real = loop.make_engine

def slow_build(*args, **kwargs):
    sentinel.write_text("building")
    time.sleep(pause)
    engine = real(*args, **kwargs)
    built.write_text("built")
    return engine

loop.make_engine = slow_build
from wavegen.cli import main
sys.exit(main(["-q", "render", *sys.argv[4:]]))
"""


def test_a_ctrl_c_while_the_engine_is_built_waits_for_it_then_stops_before_anything_is_written(model, tmp_path):
    """A Ctrl-C raised inside numba's compiler (or an import it made) was not always passed on: the render
    went on with numpy half imported and died later with a traceback (exit 1). The first Ctrl-C now waits
    for the model and engine, then stops cleanly."""
    import sys

    out, sentinel, built = tmp_path / "out", tmp_path / "building", tmp_path / "built"
    proc = subprocess.Popen([sys.executable, "-c", BUILD_RUNNER, *map(str, (sentinel, built, 1.0, model, *flags(out)))],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_file(proc, sentinel)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert built.is_file()  # the build was not cut short
    assert stderr.splitlines() == ["SIGINT: stopping once the model and engine are ready, before anything is "
                                   "written (Ctrl-C again to stop at once)", "wavegen render: interrupted"]
    assert not out.exists() and not stdout


# `wavegen render` pausing PAUSE seconds at HOOK, outside the render's StopSignals, and writing SENTINEL as it
# gets there: "start" (the command begun, before its imports: torch's seconds) or "prepare" (the folder checked,
# lock held: between the StopSignals of the start and of the windows)
GAP_RUNNER = r"""
import pathlib, sys, time
hook, sentinel, pause = sys.argv[1], pathlib.Path(sys.argv[2]), float(sys.argv[3])

def paused(real):
    def hooked(*args, **kwargs):
        sentinel.write_text(hook)
        time.sleep(pause)
        return real(*args, **kwargs)
    return hooked

if hook == "start":
    from wavegen.cli import render as command
    command._run = paused(command._run)
else:
    from wavegen.render.folder import RenderFolder
    RenderFolder.prepare = paused(RenderFolder.prepare)
from wavegen.cli import main
sys.exit(main(["-q", "render", *sys.argv[4:]]))
"""


def stopped_in_gap(model, tmp_path, hook, out) -> subprocess.CompletedProcess:
    """The render into ``out`` (flags), sent a real SIGTERM while it pauses at ``hook`` (GAP_RUNNER): 3 s, so a
    test process stalled a second or two on a loaded machine still signals inside the pause."""
    import sys

    sentinel = tmp_path / f"paused-{hook}"
    sentinel.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", GAP_RUNNER, hook, str(sentinel), "3.0", str(model),
                             *map(str, flags(out))], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_file(proc, sentinel)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_a_sigterm_while_the_render_starts_is_said_and_stops_before_anything_is_written(model, tmp_path):
    """A plain render's SIGTERM before its first StopSignals (torch importing) ended it by the signal's default:
    exit -15, not a word. It is now held for that StopSignals: said, and a stop as a Ctrl-C's then."""
    out = tmp_path / "out"
    done = stopped_in_gap(model, tmp_path, "start", out)
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == ["SIGTERM: stopping once the model and engine are ready, before anything is "
                                        "written (the signal again to stop at once)", "wavegen render: interrupted"]
    assert not out.exists() and not done.stdout


def test_a_sigterm_while_a_resumed_render_checks_its_folder_keeps_it_resumable(model, tmp_path):
    """A SIGTERM between the render's two StopSignals (its folder checked, the lock held) ended it by the signal's
    default, without a word. Now the windows' StopSignals take it: said, a snapshot where the render stood, 130;
    the files written before are untouched and the rerun finishes the render never stopped."""
    from render_helpers import settings, stopped_render

    out = tmp_path / "out"
    stopped_render(model, out, settings(SECONDS, streams=STREAMS, block_seconds=0.05), windows=3)
    before = file_bytes(out, STREAMS)
    written = len(before[0])
    assert written > 44  # an unfinished render: some audio past the WAV header, not all of it
    done = stopped_in_gap(model, tmp_path, "prepare", out)
    assert done.returncode == 130, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == ("SIGTERM: rewinding to the start of the window and saving a snapshot (the signal again to "
                        "stop at once)"), done.stderr
    assert lines[-2].startswith("SIGTERM: stopped at ") and "Rerun the same command to resume" in lines[-2]
    assert lines[-1] == "wavegen render: interrupted"
    assert file_bytes(out, STREAMS) == before and not (out / "render_report.json").exists()
    assert rerun(model, out)["status"] == "complete"
    assert file_bytes(out, STREAMS) == reference(model, tmp_path, "wav")


def test_a_sigterm_while_a_complete_render_is_checked_ends_it_as_complete(model, tmp_path):
    """A rerun of a finished render takes no window: a SIGTERM while it checks the folder is taken by no StopSignals.
    It is said as meeting a complete render (exit 0, the files listed), not the signal's silent death."""
    out = tmp_path / "out"
    rerun(model, out)
    before = file_bytes(out, STREAMS)
    done = stopped_in_gap(model, tmp_path, "prepare", out)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["SIGTERM came once the render was complete: nothing to stop or resume"]
    assert done.stdout.split() == [str(p) for p in sorted(out.glob("stream_*.wav"))]
    assert file_bytes(out, STREAMS) == before


# wavegen as the program (a script named wavegen: the CLI's start takes a SIGTERM for a Ctrl-C), its render sent a
# SIGTERM (and its echo) once the command's run has returned: main's last microseconds, the files whole
_LATE_TERM_RUNNER = r"""import os, signal, sys
from wavegen.cli import render as command
real = command.run

def then_a_sigterm(args):
    code = real(args)
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)  # its echo (a wrapper that forwards it)
    return code

command.run = then_a_sigterm
from wavegen.cli import run
sys.exit(run())
"""


def test_a_sigterm_once_a_render_is_complete_and_main_ends_is_no_interrupt(model, tmp_path):
    """Between the render's handlers set back and main's end, the CLI start's Ctrl-C (term_as_interrupt) took a
    SIGTERM: "wavegen render: interrupted", exit 130, of a render whose files were whole. It stops nothing: exit 0."""
    import sys

    out, program = tmp_path / "out", tmp_path / "wavegen"
    program.write_text(_LATE_TERM_RUNNER)
    done = subprocess.run([sys.executable, str(program), "-q", "render", str(model), *map(str, flags(out))], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr[-2000:]
    assert done.stdout.split() == [str(p) for p in sorted(out.glob("stream_*.wav"))]
    assert json.loads((out / "render_report.json").read_text())["status"] == "complete"


def test_a_second_sigterm_before_the_render_stopsignals_stops_at_once(monkeypatch):
    """Held for the render's StopSignals (launch_term_held alone), a process started alone's first SIGTERM waits for
    them; the same one handed on twice (within TERM_ECHO_SECONDS) asks nothing more; another stops at once, as a
    second signal does under them. A SIGTERM that has a handler already keeps it."""
    import os

    from wavegen import signals
    from wavegen.signals_start import launch_term_held

    monkeypatch.setenv("WORLD_SIZE", "1")
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with launch_term_held(alone=True) as held:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)  # its echo
            monkeypatch.setattr(signals, "TERM_ECHO_SECONDS", 0.0)
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGTERM)
        assert held.untaken  # the first, which no StopSignals took (the block ended well: its interrupt caught)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        def mine(signum, frame):
            pass

        signal.signal(signal.SIGTERM, mine)
        with launch_term_held(alone=True):
            assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_second_sigterm_soon_after_the_render_stopsignals_take_a_held_one_stops_at_once(monkeypatch):
    """A SIGTERM held while the render started (launch_term_held alone) is taken by its StopSignals: another, past
    TERM_ECHO_SECONDS after the first, is the user's "again" and stops at once. Its echo window ran from when the
    StopSignals took it, not from when it came: a second signal soon after they began was lost as an echo."""
    import os
    import time

    from wavegen import signals
    from wavegen.signals import StopSignals
    from wavegen.signals_start import launch_term_held

    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setattr(signals, "TERM_ECHO_SECONDS", 0.2)
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with launch_term_held(alone=True):
            os.kill(os.getpid(), signal.SIGTERM)  # held: torch importing
            time.sleep(0.4)  # the start goes on, past the first's echo window
            with pytest.raises(KeyboardInterrupt), StopSignals("stopping") as stop:
                assert stop.signum == signal.SIGTERM  # the held one, taken as its own
                os.kill(os.getpid(), signal.SIGTERM)  # the user's second, 0.4 s after the first
                time.sleep(1.0)  # (where it was taken for an echo: no interrupt, the assertion fails)
    finally:
        signal.signal(signal.SIGTERM, previous)
