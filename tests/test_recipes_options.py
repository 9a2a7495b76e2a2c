"""The recipes' option parsing, run with bash for real: an option that takes a value, given without
one (last on the line, followed by another option, or empty), is "OPTION needs a value", exit code 2,
before any stage runs or anything is written (it was bash's "$2: unbound variable", exit 1). The
Python recipes' ``--json [FILE]`` is wavegen's (wavegen.cli.options): alone it prints the JSON, a
FILE that cannot be written is refused before the work."""

import importlib.util
import json
import runpy
import subprocess
import sys

import pytest
import torch
from conftest import save_tiny_model

from test_recipes_stages import RECIPES, _calls, _recipe, repo  # noqa: F401  (repo: the fixture)

# every option that takes a value, per recipe (longform needs its MODEL besides)
VALUE_OPTIONS = {
    "bench": ["--stage", "--stop-stage", "--threads", "--out"],
    "demo": ["--stage", "--stop-stage", "--dir", "--steps"],
    "accelerate": ["--stage", "--stop-stage", "--model", "--config", "--dir", "--recordings", "--steps",
                   "--num-processes", "--machine-rank", "--main-ip", "--set"],
    "conditioned": ["--input", "--work", "--model", "--steps", "--seconds", "--eval-seconds", "--sample-rate",
                    "--set", "--stage", "--stop-stage"],
    "stream": ["--model", "--dir", "--steps", "--port", "--host", "--seed", "--archive", "--stage", "--stop-stage"],
    "longform": ["--hours", "--seconds", "--streams", "--dir", "--backend", "--device", "--precision", "--format",
                 "--seed", "--stage", "--stop-stage"],
}
CASES = [(name, option) for name, options in VALUE_OPTIONS.items() for option in options]


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*"))


@pytest.mark.parametrize("name, option", CASES, ids=[f"{name}{option}" for name, option in CASES])
def test_a_value_option_without_its_value_is_a_usage_error(repo, name, option):  # noqa: F811
    before = _files(repo.parent)
    model = ["some-model"] if name == "longform" else []
    # last on the line; followed by another option (it was taken as the value); an empty value
    for tail in ([option], [option, "--stage", "1"], [option, ""]):
        out = _recipe(repo, name, *model, *tail)
        assert out.returncode == 2, (tail, out.stdout, out.stderr)
        assert f"{option} needs a value" in out.stderr, (tail, out.stderr)
        assert "unbound variable" not in out.stderr and out.stdout == "", (tail, out.stdout, out.stderr)
    assert _calls(repo) == [] and _files(repo.parent) == before  # no stage ran, nothing was written


def test_every_value_option_of_the_recipes_is_covered():
    """A value option added to a recipe later is listed above (else its check goes untested)."""
    import re
    from test_recipes_stages import RECIPES

    for name, options in VALUE_OPTIONS.items():
        text = (RECIPES / name / "run.sh").read_text()
        loop = text[text.index("while [ $# -gt 0 ]"):text.index("\ndone\n")]
        found = set(re.findall(r"^\s+(--[a-z-]+)\) need_value", loop, re.M))
        found |= {o for line in re.findall(r"^\s+(--[a-z|-]+)\)\n\s+if \[ \$# -lt 2 \]", loop, re.M)
                  for o in line.split("|")}
        assert found == set(options), name


FOLD_SPEED = [str(RECIPES / "quality" / "fold_speed.py"), "--config", "tiny", "--batch", "1", "--seq-len", "64",
              "--rounds", "1", "--steps", "1", "--threads", "1"]
MEASURE = [sys.executable, str(RECIPES / "stream" / "measure.py")]


def _run(cmd, timeout=300):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _fold_speed(monkeypatch, capsys, *args):
    """``python fold_speed.py ARGS`` run in this process as ``__main__`` (a subprocess spends its seconds importing
    torch) → (exit status, stdout, stderr). What the script changes here is put back: the model's fold switch
    (it times both paths), torch's thread count and random state."""
    from wavegen.models import samplernn

    monkeypatch.setattr(samplernn, "FOLD_MIN_SAMPLES_PER_LEVEL", samplernn.FOLD_MIN_SAMPLES_PER_LEVEL)
    monkeypatch.setattr(sys, "argv", [*FOLD_SPEED, *args])
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    capsys.readouterr()
    try:
        runpy.run_path(FOLD_SPEED[0], run_name="__main__")
        status = 0
    except SystemExit as stopped:
        status = stopped.code
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
    out, err = capsys.readouterr()
    return status, out, err


def test_fold_speed_takes_json_as_wavegen_does(tmp_path, monkeypatch, capsys):
    """A bare --json prints the figures (it was "expected one argument"); --json FILE prints them and writes the
    file (its folder made); a folder as FILE is one line before the timing (it was IsADirectoryError after it)."""
    status, out, err = _fold_speed(monkeypatch, capsys, "--json")
    assert status == 0, err
    figures = json.loads(out)
    assert figures["config"] == "tiny" and figures["rounds"] == 1 and figures["conv"]["cpu_s_per_step"] > 0
    file = tmp_path / "deep" / "fold.json"
    status, out, err = _fold_speed(monkeypatch, capsys, "--json", str(file))
    assert status == 0, err
    assert json.loads(out) == json.loads(file.read_text())
    status, out, err = _fold_speed(monkeypatch, capsys, "--json", str(tmp_path))
    assert status == 2 and out == "", (out, err)
    assert err == (f"fold_speed.py: error: --json {tmp_path}: is a folder; give a file name (e.g. "
                   f"{tmp_path / 'fold_speed.json'})\n")


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "--steps 0: must be at least 1"),
    (["--rounds", "0"], "--rounds 0: must be at least 1"),
    (["--batch", "0"], "--batch 0: must be at least 1"),
    (["--threads", "0"], "--threads 0: must be at least 1"),
    (["--seq-len", "10"], "--seq-len 10: must be a positive multiple of 16 (--config tiny's top frame)"),
    (["--seq-len", "0"], "--seq-len 0: must be a positive multiple of 16 (--config tiny's top frame)")])
def test_fold_speed_refuses_a_count_it_cannot_time_in_one_line(monkeypatch, capsys, args, message):
    """--steps 0 was a ZeroDivisionError after the warm-up, --rounds 0 min() of nothing, --batch 0 and a --seq-len
    that is not whole frames the model's errors, --threads 0 torch's: tracebacks, each now one line first."""
    status, out, err = _fold_speed(monkeypatch, capsys, *args)
    assert (status, out, err) == (2, "", f"fold_speed.py: error: {message}\n")


def _measure_module():
    spec = importlib.util.spec_from_file_location("measure_recipe", RECIPES / "stream" / "measure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measure_reads_json_as_wavegen_does(tmp_path, capsys):
    """``--json`` before the model takes the model for its FILE (settle_json_word gives it back: a model config
    is never overwritten); a FILE that cannot be written, or no model at all, stops before the server starts."""
    measure = _measure_module()
    model = save_tiny_model(tmp_path / "model")
    config = tmp_path / "my_config.json"
    config.write_text(json.dumps({"preset": "samplernn-tiny"}))
    for argv, expected in (([str(model), "--json"], (str(model), "-")),
                           (["--json", str(model)], (str(model), "-")),
                           (["--json", str(config)], (str(config), "-")),
                           ([str(model), "--json", "live.json"], (str(model), "live.json")),
                           ([str(model)], (str(model), None))):
        args, extra = measure.parse_args([*argv, "--listeners", "3", "--", "--backend", "numba"])
        assert (args.model, args.json, args.listeners, extra) == (*expected, 3, ["--backend", "numba"]), argv
    assert json.loads(config.read_text()) == {"preset": "samplernn-tiny"}
    for argv, message in (([str(model), "--json", str(tmp_path)], f"--json {tmp_path}: is a folder; give a file "
                                                                   f"name (e.g. {tmp_path / 'live.json'})"),
                          (["--json", "out.json"], "give the MODEL to serve (--json took out.json as the file to "
                                                   "write: give the model before --json)")):
        with pytest.raises(SystemExit) as stopped:
            measure.parse_args(argv)
        assert stopped.value.code == 2 and capsys.readouterr().err.endswith(f"error: {message}\n"), argv


@pytest.mark.slow
def test_measure_with_a_bare_json_prints_the_report_alone_on_stdout(tmp_path):
    """A real server and two listeners for 4 s a phase (about 25 s): the report on stdout, the lines on stderr."""
    model = save_tiny_model(tmp_path / "model")
    run = _run([*MEASURE, "--json", str(model), "--listeners", "2", "--seconds", "4"], timeout=180)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert [phase["listeners"] for phase in report["phases"]] == [1, 2] and report["model"] == str(model)
    assert all(phase["all_continuous"] and phase["refused"] == 0 for phase in report["phases"]), report
    assert "   2 listeners x 4 s: server CPU" in run.stderr and "listeners / 1 listener:" in run.stderr
    assert "    1 listener x 4 s: server CPU" in run.stderr, run.stderr  # each count agrees with its noun


# (option, bad value, what the line says it takes): each used to pass the loop and fail only at the stage that
# reads it (--seconds at stage 3, after the training; --sample-rate as a Python traceback at stage 0)
CONDITIONED_NUMBERS = [
    ("--steps", "abc", "a whole number, 1 or more"), ("--steps", "0", "a whole number, 1 or more"),
    ("--steps", "2.5", "a whole number, 1 or more"), ("--seconds", "abc", "a positive number of seconds"),
    ("--seconds", "0", "a positive number of seconds"), ("--seconds", "-1", "a positive number of seconds"),
    ("--seconds", "inf", "a positive number of seconds"), ("--eval-seconds", "nan", "a positive number of seconds"),
    ("--sample-rate", "abc", "a whole number, 1 or more"), ("--sample-rate", "16k", "a whole number, 1 or more"),
]


@pytest.mark.parametrize("option, value, takes", CONDITIONED_NUMBERS,
                         ids=[f"{o}={v}" for o, v, _ in CONDITIONED_NUMBERS])
def test_the_conditioned_recipe_refuses_a_number_no_stage_takes_before_any_stage(repo, option, value, takes):  # noqa: F811
    work = repo.parent / "work"
    out = _recipe(repo, "conditioned", "--work", str(work), option, value)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"run.sh: {option} takes {takes}, not '{value}'"), lines
    assert out.stdout == "" and _calls(repo) == [] and not work.exists()  # no stage ran, nothing written


def test_the_conditioned_recipe_takes_the_numbers_it_can_use(repo):  # noqa: F811
    work = repo.parent / "work"
    out = _recipe(repo, "conditioned", "--work", str(work), "--input", str(work / "in"), "--steps", "020",
                  "--seconds", "0.5", "--eval-seconds", "1e1", "--sample-rate", "8000", "--stage", "1",
                  "--stop-stage", "2")
    assert out.returncode == 0, out.stderr
    prep, train = _calls(repo)
    assert prep[0] == "prep" and prep[prep.index("--sample-rate") + 1] == "8000"
    assert train[0] == "train" and train[train.index("--max-steps") + 1] == "020"


@pytest.mark.parametrize("value", ["abc", "0", "2.5", ""])
def test_the_demo_refuses_a_step_count_no_training_takes_before_any_stage(repo, value):  # noqa: F811
    """--steps abc went through the set-up, the album and the prep before wavegen train refused it."""
    demo = repo.parent / "demo"
    out = _recipe(repo, "demo", "--dir", str(demo), "--stage", "1", "--steps", value)
    assert out.returncode == 2, (out.stdout, out.stderr)
    want = "--steps needs a value" if value == "" else f"run.sh: --steps takes a whole number, 1 or more, not '{value}'"
    assert out.stderr.strip().endswith(want), out.stderr
    assert out.stdout == "" and _calls(repo) == [] and not demo.exists()


@pytest.mark.parametrize("listeners, said", [(1, "server CPU, 1 listener / 1 listener: 1.000"),
                                             (100, "server CPU, 100 listeners / 1 listener: 2.500")])
def test_measures_last_line_counts_its_listeners_with_the_noun_agreeing(listeners, said):
    """measure.py --listeners 1 ended on 'server CPU, 1 listeners / 1 listener'."""
    line = _measure_module().ratio_line(listeners, 1.0 if listeners == 1 else 2.5, [0.0039, 0.0121])
    assert line == f"{said} (all rounds; outside the station thread: 0.39% -> 1.21% of a core)", line


@pytest.mark.parametrize("value", ["1", "0", "-3"])
def test_measure_refuses_fewer_than_two_listeners_before_the_server_starts(tmp_path, capsys, value):
    """--listeners 1 measured one listener against one listener: a ratio of exactly 1.000 whatever the server did."""
    model = save_tiny_model(tmp_path / "model")
    with pytest.raises(SystemExit) as stopped:
        _measure_module().parse_args([str(model), "--listeners", value])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1, err
    assert err.endswith(f"error: --listeners {value}: the server's CPU with that many listeners is measured "
                        "against one listener's; give 2 or more\n"), err
    assert _measure_module().parse_args([str(model), "--listeners", "2"])[0].listeners == 2


@pytest.mark.parametrize("value", ["2", "3.5", "nan"])
def test_measure_refuses_seconds_too_short_to_measure_before_the_server_starts(tmp_path, capsys, value):
    """Each phase measures from 3 s after its listeners connect: --seconds 2 measured nothing, and after both phases
    (and a server's start-up) the last line ended on a ZeroDivisionError."""
    model = save_tiny_model(tmp_path / "model")
    with pytest.raises(SystemExit) as stopped:
        _measure_module().parse_args([str(model), "--seconds", value, "--listeners", "2"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1, err
    assert err.endswith(f"error: --seconds {value}: each phase measures from 3 s after its listeners connect; "
                        "give 4 or more\n"), err
    args, _ = _measure_module().parse_args([str(model), "--seconds", "4"])  # the least that measures a second
    assert args.seconds == 4.0
