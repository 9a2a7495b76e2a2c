"""recipes/longform/run.sh: stage 1 always lets `wavegen render` decide (a finished render is left
alone, a changed request refused by render itself, not skipped by a stage marker); usage mistakes
are one line, exit code 2, before anything runs or is written; a report without a finished render
is one line; MODEL and --dir are the caller's paths, not the repository root's.

The recipe runs from a copy of recipes/ in a temporary folder (it moves to the copy's root), with
`wavegen` on PATH either the real one (a tiny model at 4 kHz) or a stand-in that records its
arguments and renders nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from process_helpers import kill_launch
from render_helpers import make_model

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

REAL_WAVEGEN = f"""#!/usr/bin/env bash
exec {sys.executable} -m wavegen "$@"
"""
FAKE_WAVEGEN = r"""#!/usr/bin/env bash
printf '%s\x1f' "$@" >> "$FAKE_WAVEGEN_LOG"; echo >> "$FAKE_WAVEGEN_LOG"
"""


def make_repo(tmp_path, wavegen: str) -> Path:
    """tmp/repo/recipes (a copy) and tmp/bin/wavegen (``wavegen``: the script) → tmp/repo."""
    root = tmp_path / "repo"
    shutil.copytree(RECIPES, root / "recipes", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "wavegen").write_text(wavegen)
    (tmp_path / "bin" / "wavegen").chmod(0o755)
    return root


def longform(repo, *args, cwd=None):
    env = {**os.environ, "PATH": f"{repo.parent / 'bin'}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "FAKE_WAVEGEN_LOG": str(repo.parent / "wavegen.log")}
    return subprocess.run(["bash", str(repo / "recipes" / "longform" / "run.sh"), *map(str, args)],
                          cwd=cwd or repo.parent, capture_output=True, text=True, env=env, timeout=300)


def calls(repo) -> list[list[str]]:
    log = repo.parent / "wavegen.log"
    return [line.rstrip("\x1f").split("\x1f") for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def fake(tmp_path):
    return make_repo(tmp_path, FAKE_WAVEGEN)


def test_stage_1_lets_render_decide_and_a_changed_request_is_refused(tmp_path):
    repo = make_repo(tmp_path, REAL_WAVEGEN)
    model = make_model(tmp_path / "tiny")
    out = tmp_path / "out"
    flags = ["--dir", out, "--backend", "torch", "--", "--no-guard", "--no-spectrogram"]
    first = longform(repo, model, "--seconds", 0.25, *flags)
    assert first.returncode == 0, first.stderr
    assert "rendered      1 stream x 0.25 s at 4000 Hz" in first.stdout
    timing = out / ".done" / "time.txt"
    timed = timing.read_bytes() if timing.exists() else None
    changed = longform(repo, model, "--seconds", 0.5, *flags)
    assert changed.returncode == 2
    assert "skipped" not in changed.stdout and "== stage 2" not in changed.stdout
    assert changed.stderr.splitlines()[-1] == (
        f"wavegen render: error: {out} holds a render with seconds=0.25, but this command asks for seconds=0.5. It is "
        "finished: there is nothing to resume; pass --restart to discard it and render anew, or choose another --out")
    again = longform(repo, model, "--seconds", 0.25, *flags)  # complete: render does nothing, the report shows
    assert again.returncode == 0, again.stderr
    assert "this render is already complete" in again.stderr and "rendered      1 stream x 0.25 s" in again.stdout
    if timed is not None:  # the peak memory is that of the session that rendered, not of the rerun
        assert timing.read_bytes() == timed and not (out / ".done" / "time.txt.new").exists()


@pytest.mark.parametrize("args, message", [
    (["m", "--hours", "abc"], "--hours takes a positive number of hours, not 'abc'"),
    (["m", "--hours", "0"], "--hours takes a positive number of hours, not '0'"),
    (["m", "--hours", "1');import os;os.system('touch pwned');print('"], "--hours takes a positive number of hours"),
    (["m", "--seconds", "-5"], "--seconds takes a positive number of seconds, not '-5'"),
    (["m", "--seconds"], "--seconds needs a value; usage: "),
    (["m", "--dir"], "--dir needs a value; usage: "),
    (["m", "--seconds", "--streams", "2"], "--seconds needs a value; usage: "),
    (["m", "--bogus"], "unknown argument --bogus; usage: "),
    (["m", "n"], "one MODEL only, got 'm' and 'n'; usage: "),
    (["--seconds", "5"], "no MODEL given; usage: "),
])
def test_usage_mistakes_are_one_line_before_anything_runs(fake, tmp_path, args, message):
    done = longform(fake, *args, "--dir", tmp_path / "work") if "--dir" not in args else longform(fake, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{fake / 'recipes' / 'longform' / 'run.sh'}: {message}"), lines
    assert done.stdout == "" and calls(fake) == []
    assert not (tmp_path / "work").exists() and not list(tmp_path.rglob("pwned"))


def test_a_report_without_a_finished_render_is_one_line(fake, tmp_path):
    work = tmp_path / "work"
    done = longform(fake, "m", "--dir", work, "--stage", "2")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"{fake / 'recipes' / 'longform' / 'run.sh'}: stage 2: no finished render in "
                                        f"{work} (no render_report.json): run stage 1 first (it resumes an "
                                        "unfinished one)"]
    assert calls(fake) == [] and not work.exists()
    work.mkdir()
    (work / "render_report.json").write_text('{"status": "comp')  # damaged
    done = longform(fake, "m", "--dir", work, "--stage", "2")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"{fake / 'recipes' / 'longform' / 'run.sh'}: stage 2: "
                                                   f"{work / 'render_report.json'} is not a render report")


def test_model_and_dir_are_the_callers_paths(fake, tmp_path):
    caller = tmp_path / "caller"
    caller.mkdir()
    for extra in (["--dir", "out"], []):
        done = longform(fake, "models/tiny", "--seconds", 2, *extra, "--stop-stage", 1, cwd=caller)
        assert done.returncode == 0, done.stderr
    out = [call[call.index("--out") + 1] for call in calls(fake)]
    assert [call[:2] for call in calls(fake)] == [["render", str(caller / "models" / "tiny")]] * 2
    assert out == [str(caller / "out"), str(caller / "renders" / "longform-tiny")]
    assert not (fake / "out").exists() and not (fake / "renders").exists()


def test_hours_are_worked_out_in_decimal(fake, tmp_path):
    """--hours 1.1 was a float's 1.1 * 3600: the recipe said and passed --seconds 3960.0000000000005, and a
    `wavegen render --seconds 3960` could not resume it; now 3960.0 (a render begun so resumes: render binds
    seconds by the sample count, tests/test_render_folder.py)."""
    for hours, seconds in (("1.1", "3960.0"), ("0.7", "2520.0"), ("1e-9", "3.6e-06")):
        done = longform(fake, "m", "--hours", hours, "--dir", tmp_path / hours, "--stop-stage", 1)
        assert done.returncode == 0, done.stderr
        assert f"render 1 stream x {seconds} s into" in done.stdout
        call = calls(fake)[-1]
        assert call[call.index("--seconds") + 1] == seconds


def test_a_render_refused_at_start_leaves_no_folder_behind(tmp_path):
    """`run.sh nosuchmodel --dir lfy` left lfy/.done/ behind (made for the timing before render had
    checked anything); a folder that was there stays."""
    repo = make_repo(tmp_path, REAL_WAVEGEN)
    out = longform(repo, tmp_path / "nosuchmodel", "--seconds", 1, "--dir", "lfy", "--stop-stage", 1)
    assert out.returncode == 2 and "nosuchmodel" in out.stderr, out.stderr
    assert not (repo.parent / "lfy").exists()
    (repo.parent / "mine").mkdir()
    assert longform(repo, tmp_path / "nosuchmodel", "--seconds", 1, "--dir", "mine", "--stop-stage", 1).returncode == 2
    assert (repo.parent / "mine").is_dir() and not (repo.parent / "mine" / ".done").exists()


def test_a_second_recipe_refused_while_one_renders_leaves_the_first_ones_timing(tmp_path):
    """A second `run.sh` into the same --dir, refused (the folder is busy), removed the timing file the
    first one's /usr/bin/time writes (`.done/time.txt.new`, one name for both): the first then ended with
    `mv: cannot stat ...`, exit 1 and no report, after a complete render. The first's render is held
    stopped (SIGSTOP) while the second runs, so a short render is busy for as long as the second needs."""
    import psutil

    if subprocess.run(["bash", "-c", "/usr/bin/time -v true"], capture_output=True).returncode != 0:
        pytest.skip("no GNU time here: the recipe keeps no timing file")
    repo = make_repo(tmp_path, REAL_WAVEGEN)
    model = make_model(tmp_path / "tiny")
    args = [model, "--seconds", 2, "--backend", "torch", "--dir", "busy"]
    env = {**os.environ, "PATH": f"{repo.parent / 'bin'}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(["bash", str(repo / "recipes" / "longform" / "run.sh"), *map(str, args)],
                             cwd=repo.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    held = []
    try:
        params = repo.parent / "busy" / ".state" / "params.json"
        while not params.exists() and first.poll() is None:
            time.sleep(0.05)
        held = [p for p in psutil.Process(first.pid).children(recursive=True)
                if p.name().startswith("python") and "render" in p.cmdline()]  # not /usr/bin/time above it
        assert len(held) == 1, [p.cmdline() for p in psutil.Process(first.pid).children(recursive=True)]
        held[0].suspend()  # the render holds its folder's lock, stopped mid-render
        second = longform(repo, *args)
        held.pop().resume()
        out, err = first.communicate(timeout=300)
    finally:
        for render in held:
            render.resume()
        if first.poll() is None:  # the recipe and the render under it, on a failure
            kill_launch(first)
    assert second.returncode == 2 and "another render is writing here" in second.stderr, second.stderr
    assert first.returncode == 0, err
    assert "x real time" in out and "peak memory" in out
    assert (repo.parent / "busy" / ".done" / "time.txt").is_file()
    assert sorted(p.name for p in (repo.parent / "busy" / ".done").iterdir()) == ["time.txt"]


def test_a_report_written_again_from_the_folder_shows_what_is_not_known(fake, tmp_path):
    """A report render wrote again where its own was damaged records no wall time, speed, sessions or peak memory
    (None): stage 2 failed formatting None (TypeError); a time.txt newer than it is the rerun's that rebuilt it."""
    from wavegen.fileio import write_json
    from wavegen.render.folder_report import rebuilt_report

    work = tmp_path / "work"
    (work / ".done").mkdir(parents=True)
    params = {"sample_rate": 4000, "seconds": 0.25, "streams": 1, "backend": "torch", "precision": "fp32",
              "world_size": 1, "guard": False}
    why = "the render's own report was damaged (kept as render_report.json.damaged); its wall time is not known"
    write_json(work / "render_report.json", rebuilt_report(params, ["stream_000.wav"], [], 1000, why), indent=1)
    (work / ".done" / "time.txt").write_text("\tMaximum resident set size (kbytes): 2048000\n")  # the rebuilding rerun's
    done = longform(fake, "m", "--dir", work, "--stage", "2")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    lines = {line[:14]: line[14:] for line in done.stdout.splitlines()}
    for head in ("generation    ", "x real time   ", "peak memory   ", "guard events  "):
        assert lines[head] == f"not known ({why})", (head, done.stdout)
    assert lines["rendered      "].endswith(f"1 process, not known ({why}))")


def test_the_report_says_the_guard_events_in_words(fake, tmp_path):
    """Stage 2 said the guard's counts as a Python dict ("guard events  {'silence': 16, 'gave up': 5}"): now in
    words, as render's own last line says them; a render without events says none."""
    work = tmp_path / "work"
    work.mkdir()
    report = {"status": "complete", "streams": 2, "seconds": 0.25, "sample_rate": 4000, "backend": "torch",
              "precision": "fp32", "processes": 1, "sessions": 1, "wall_seconds": 1.0, "realtime_factor": 0.5,
              "realtime_factor_all_streams": 1.0, "max_rss_mb": 100.0, "paths": ["stream_000.wav", "stream_001.wav"],
              "guard": {"enabled": True, "counts": {"silence": 2, "noise": 16, "gave up": 5}, "events": []}}
    for counts, said in (({"silence": 2, "noise": 16, "gave up": 5}, "16 noise, 2 silence, 5 windows given up"),
                         ({"stuck tone": 1, "gave up": 1}, "1 stuck tone, 1 window given up"), ({}, "none")):
        (work / "render_report.json").write_text(json.dumps({**report, "guard": {**report["guard"], "counts": counts}}))
        done = longform(fake, "m", "--dir", work, "--stage", "2")
        assert done.returncode == 0, done.stderr
        assert f"\nguard events  {said}\n" in done.stdout, done.stdout


def test_the_report_says_a_long_render_s_length_as_a_plain_number(fake, tmp_path):
    """A --hours 300 render's report said "2 stream(s) x 1.08e+06 s" (%g from a million seconds on)."""
    work = tmp_path / "work"
    work.mkdir()
    report = {"status": "complete", "streams": 2, "seconds": 1080000.0, "sample_rate": 16000, "backend": "numba",
              "precision": "fp32", "processes": 1, "sessions": 3, "wall_seconds": 1.0, "realtime_factor": 0.5,
              "realtime_factor_all_streams": 1.0, "max_rss_mb": 100.0, "paths": ["stream_000.flac"],
              "guard": {"enabled": True, "counts": {}, "events": []}}
    for seconds, said in ((1080000.0, "1080000"), (1080000.25, "1080000.25"), (0.25, "0.25")):
        (work / "render_report.json").write_text(json.dumps({**report, "seconds": seconds}))
        done = longform(fake, "m", "--dir", work, "--stage", "2")
        assert done.returncode == 0, done.stderr
        assert f"\nrendered      2 streams x {said} s at 16000 Hz (" in done.stdout, done.stdout


def test_a_rerun_that_writes_a_damaged_report_again_keeps_the_rendering_sessions_timing(tmp_path):
    """Stage 1 rerun over a render whose report was damaged: render writes the report again from the files,
    rendering nothing, and the recipe replaced .done/time.txt with that rerun's timing (the report newer than it):
    stage 2's peak memory, the rendering session's, was lost."""
    if subprocess.run(["bash", "-c", "/usr/bin/time -v true"], capture_output=True).returncode != 0:
        pytest.skip("no GNU time here: the recipe keeps no timing file")
    import re

    repo = make_repo(tmp_path, REAL_WAVEGEN)
    model = make_model(tmp_path / "tiny")
    out = tmp_path / "out"
    flags = [model, "--seconds", 0.25, "--dir", out, "--backend", "torch"]
    render_flags = ["--", "--no-guard", "--no-spectrogram"]
    assert longform(repo, *flags, "--stop-stage", 1, *render_flags).returncode == 0
    timing = out / ".done" / "time.txt"
    timed, timed_ns = timing.read_bytes(), timing.stat().st_mtime_ns
    report = out / "render_report.json"
    text = report.read_text()
    report.write_text(text[:text.index('"paths"') + 3])  # cut after its parameters: written again from the files
    for _ in range(2):  # the rebuilding rerun, then one over the rebuilt report: neither renders
        again = longform(repo, *flags, *render_flags)
        assert again.returncode == 0, again.stderr
        assert "its 1 stream is complete" in again.stderr or "already complete" in again.stderr
        assert timing.read_bytes() == timed and timing.stat().st_mtime_ns == timed_ns
        assert sorted(p.name for p in (out / ".done").iterdir()) == ["time.txt"]
        kbytes = int(re.search(rb"Maximum resident set size \(kbytes\): (\d+)", timed).group(1))
        assert f"peak memory   {kbytes / 1024:.0f} MB (last session that rendered)" in again.stdout, again.stdout
    assert "rebuilt" in json.loads(report.read_text())


def has_gnu_time() -> bool:
    return subprocess.run(["bash", "-c", "/usr/bin/time -v true"], capture_output=True).returncode == 0


# a stand-in that sleeps while $SLEEP_ONCE exists (removing it: once), then writes the report $REPORT_JSON holds
REPORTING_WAVEGEN = r"""#!/usr/bin/env bash
while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
if [ -n "${SLEEP_ONCE:-}" ] && [ -e "$SLEEP_ONCE" ]; then rm -f "$SLEEP_ONCE"; sleep 120; fi
if [ -n "${REPORT_JSON:-}" ]; then printf '%s' "$REPORT_JSON" > "$out/render_report.json"; fi
"""


def test_the_leftovers_of_a_recipe_killed_with_9_are_removed_by_the_next_run(tmp_path):
    """A recipe killed with -9 while it rendered left .done/began.PID and .done/time.txt.new.PID for good; the next
    run removes those of processes that have ended, and leaves a live one's (a recipe rendering now)."""
    import signal

    if not has_gnu_time():
        pytest.skip("no GNU time here: the recipe keeps no timing file")
    repo = make_repo(tmp_path, REPORTING_WAVEGEN)
    out, sleeping = repo.parent / "out", tmp_path / "sleep_once"
    sleeping.touch()
    env = {**os.environ, "PATH": f"{repo.parent / 'bin'}{os.pathsep}{os.environ['PATH']}", "SLEEP_ONCE": str(sleeping)}
    killed = subprocess.Popen(["bash", str(repo / "recipes" / "longform" / "run.sh"), "m", "--dir", "out",
                               "--stop-stage", "1"], cwd=repo.parent, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while sleeping.exists() and time.monotonic() < deadline:  # the stand-in renders (sleeps) now
            time.sleep(0.05)
        left = sorted(p.name for p in (out / ".done").iterdir())
        assert left == [f"began.{killed.pid}", f"time.txt.new.{killed.pid}"], left
    finally:
        os.killpg(killed.pid, signal.SIGKILL)  # the recipe, GNU time and the stand-in under it
        killed.wait(timeout=60)
    live = [out / ".done" / f"began.{os.getpid()}", out / ".done" / f"time.txt.new.{os.getpid()}"]
    for path in live:  # a recipe that is still running (this process stands in for it)
        path.touch()
    done = longform(repo, "m", "--dir", out, "--stop-stage", 1)
    assert done.returncode == 0, done.stderr
    assert sorted((out / ".done").iterdir()) == sorted(live)


@pytest.mark.parametrize("rebuilt", [True, False])
def test_a_rebuilt_report_is_told_by_its_key_whatever_its_layout(tmp_path, rebuilt):
    """Whether a report was written again from the files (so the rerun rendered nothing and the rendering session's
    timing stays) was told by a grep for `^ "rebuilt": ` (the report's indent of 1): a report laid out otherwise, as
    one line, had its rerun's timing replace the rendering session's."""
    if not has_gnu_time():
        pytest.skip("no GNU time here: the recipe keeps no timing file")
    repo = make_repo(tmp_path, REPORTING_WAVEGEN)
    out = repo.parent / "out"
    (out / ".done").mkdir(parents=True)
    timing = out / ".done" / "time.txt"
    timing.write_text("\tMaximum resident set size (kbytes): 2048000\n")  # the rendering session's
    report = {"status": "complete", "params": {"rebuilt": "a key of params, not of the report"}}
    if rebuilt:
        report["rebuilt"] = "the render's own report was damaged"
    env = {**os.environ, "PATH": f"{repo.parent / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "REPORT_JSON": json.dumps(report)}  # one line: no indent
    done = subprocess.run(["bash", str(repo / "recipes" / "longform" / "run.sh"), "m", "--dir", "out",
                           "--stop-stage", "1"], cwd=repo.parent, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (out / ".done").iterdir()) == ["time.txt"]
    if rebuilt:  # rendered nothing: the rendering session's timing stays
        assert timing.read_text() == "\tMaximum resident set size (kbytes): 2048000\n"
    else:  # rendered: its own timing, GNU time's
        assert "Command being timed" in timing.read_text()


@pytest.mark.slow
def test_a_sigterm_to_the_recipe_stops_its_render_with_a_snapshot(tmp_path):
    """A SIGTERM sent to the recipe's process (kill, a supervisor): bash ended and left GNU time and the render under
    it running, unwatched, holding its folder's lock. The render has it now (not GNU time, which it ends, leaving the
    render), stops as on Ctrl-C with its snapshot (exit 130, the recipe's too), and nothing is left running."""
    import contextlib
    import signal

    import psutil

    repo = make_repo(tmp_path, REAL_WAVEGEN)
    model = make_model(tmp_path / "tiny")
    env = {**os.environ, "PATH": f"{repo.parent / 'bin'}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    with (tmp_path / "out.txt").open("w") as out, (tmp_path / "err.txt").open("w") as err:  # files: no pipe the
        # render, left running, would hold open
        recipe = subprocess.Popen(["bash", str(repo / "recipes" / "longform" / "run.sh"), str(model), "--hours", "1",
                                   "--backend", "torch", "--dir", "out", "--", "--no-guard", "--no-spectrogram"],
                                  cwd=repo.parent, stdout=out, stderr=err, env=env, start_new_session=True)
    try:
        params = repo.parent / "out" / ".state" / "params.json"
        deadline = time.monotonic() + 120
        while not params.exists() and recipe.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert params.exists(), (tmp_path / "err.txt").read_text()  # the render is under way (an hour: not done)
        tree = psutil.Process(recipe.pid).children(recursive=True)
        assert any("render" in p.cmdline() for p in tree), [p.cmdline() for p in tree]
        recipe.send_signal(signal.SIGTERM)
        recipe.wait(timeout=120)
        _, running = psutil.wait_procs(tree, timeout=30)
    finally:
        if recipe.poll() is None:
            kill_launch(recipe)
        with contextlib.suppress(ProcessLookupError):  # whatever the recipe left running (the old one: the render)
            os.killpg(recipe.pid, signal.SIGKILL)
    err = (tmp_path / "err.txt").read_text()
    assert not running, f"left running: {[p.cmdline() for p in running]}"
    assert recipe.returncode == 130, err
    assert "snapshot saved" in err, err
    assert not (repo.parent / "out" / "render_report.json").exists()  # stopped, not finished


@pytest.mark.parametrize("n, streams, processes, sessions", [(1, "1 stream", "1 process", "1 session"),
                                                             (2, "2 streams", "2 processes", "2 sessions")])
def test_the_recipe_s_counts_agree_with_their_nouns(fake, tmp_path, n, streams, processes, sessions):
    """Stage 1's line and stage 2's "rendered" line said "1 stream(s)", "1 process(es)", "1 session(s)"."""
    work = tmp_path / "work"
    work.mkdir()
    report = {"status": "complete", "streams": n, "seconds": 0.25, "sample_rate": 4000, "backend": "torch",
              "precision": "fp32", "processes": n, "sessions": n, "wall_seconds": 1.0, "realtime_factor": 0.5,
              "realtime_factor_all_streams": 1.0, "max_rss_mb": 100.0, "paths": ["stream_000.wav"],
              "guard": {"enabled": False, "counts": {}, "events": []}}
    (work / "render_report.json").write_text(json.dumps(report))
    done = longform(fake, "m", "--dir", work, "--streams", n, "--seconds", 0.25)
    assert done.returncode == 0, done.stderr
    assert f"== stage 1: render {streams} x 0.25 s into " in done.stdout, done.stdout
    assert (f"\nrendered      {streams} x 0.25 s at 4000 Hz (torch backend fp32, {processes}, {sessions})\n"
            in done.stdout), done.stdout
