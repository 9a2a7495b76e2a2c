"""A Ctrl-C or SIGTERM during generation timing: the rows measured before it printed, said to be stopped, exit 130.

A bench of many rows runs for minutes; a job scheduler's SIGTERM ended it by the signal (exit -15) without a word,
and a Ctrl-C said "interrupted": every row measured so far was lost either way.
"""

import json
import signal
import subprocess
import sys
import time

import pytest

from wavegen.bench import BenchStopped, bench_generation


class Stop:
    """A StopSignals as bench_generation reads it: asked to stop once ``requested`` is set."""

    requested, name = False, "SIGTERM"


@pytest.mark.parametrize("at", ["between rows", "inside a row"])
def test_a_stop_keeps_the_rows_measured_before_it(at, monkeypatch):
    from wavegen import bench as bench_module

    stop, said = Stop(), []
    if at == "between rows":
        progress = lambda line: said.append(line) or setattr(stop, "requested", len(said) == 2)  # noqa: E731
    else:  # asked while the second row times its runs: taken before the engine's next call
        progress = said.append
        real = bench_module.time_generation

        def timed(*args, **kwargs):
            if len(said) == 2:
                kwargs["estimate"] = lambda seconds: setattr(stop, "requested", True)
            return real(*args, **kwargs)

        monkeypatch.setattr(bench_module, "time_generation", timed)
    with pytest.raises(BenchStopped) as stopped:
        bench_generation("wavenet-tiny", ["numba"], [1, 2, 3], samples=64, repeats=1, threads=1, progress=progress,
                         stop=stop)
    assert isinstance(stopped.value, KeyboardInterrupt)  # a stop, as a Ctrl-C is
    result = stopped.value.result
    assert [(r["backend"], r["batch"]) for r in result["rows"]] == [("numba", 1)]
    assert result["rows"][0]["samples_per_second"] > 0 and stopped.value.planned == 3
    assert result["mode"] == "generation" and result["model"]["name"] == "wavenet-tiny" and "cpu" in result["machine"]


def _sigterm_1s_after(mark: str, args: list[str]) -> tuple[str, str]:
    """``wavegen bench ARGS`` sent a SIGTERM 1 s after a stderr line that starts with ``mark`` (a row begun that
    cannot end within that second): its stdout and stderr, once it has stopped within 8 s with exit 130."""
    proc = subprocess.Popen([sys.executable, "-m", "wavegen", "bench", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    said = []
    for line in proc.stderr:
        said.append(line)
        if line.startswith(mark):
            break
    assert proc.poll() is None, said
    time.sleep(1)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert time.monotonic() - sent < 8
    assert proc.returncode == 130, (proc.returncode, stdout, stderr)
    return stdout, stderr


def test_a_stop_before_the_first_row_keeps_none():
    stop = Stop()
    stop.requested = True
    with pytest.raises(BenchStopped) as stopped:
        bench_generation("wavenet-tiny", ["numba"], [1], samples=64, repeats=1, threads=1, stop=stop)
    assert stopped.value.result["rows"] == [] and stopped.value.planned == 1


def test_a_sigterm_prints_the_rows_measured_says_it_stopped_and_writes_no_json(tmp_path):
    """SIGTERM 1 s into the second row (a long one): the first row's table on stdout with what stopped it, the
    --json file (a whole run's) not written; the stop said on stderr; exit 130, as a Ctrl-C's."""
    out = tmp_path / "bench.json"
    stdout, stderr = _sigterm_1s_after("numba batch 32:", [
        "--model", "samplernn-tiny", "--backends", "numba", "--batch", "1,32", "--samples", "16000", "--repeats", "1",
        "--threads", "1", "--json", str(out)])
    lines = stdout.strip().splitlines()
    assert [line.split()[:2] for line in lines if line.startswith("numba ")] == [["numba", "1"]], stdout
    assert lines[-1] == f"(stopped by SIGTERM: 1 of 2 rows measured; --json {out} not written)", stdout
    assert stderr.strip().splitlines() == ["SIGTERM: stopping the bench before the engine's next call; the rows "
                                           "measured so far are printed (the signal again to stop at once)",
                                           "wavegen bench: interrupted"], stderr
    assert list(tmp_path.iterdir()) == []


def test_a_sigterm_to_bench_train_prints_the_batch_sizes_measured():
    """bench --train alone had no handler: a SIGTERM ended it by the signal without a word (exit -15), every batch
    size measured lost. Now it stops before the next training step as generation timing does."""
    stdout, stderr = _sigterm_1s_after("train samplernn-tiny batch 32 ", [
        "--train", "--model", "samplernn-tiny", "--batch", "2,32", "--seq-len", "256", "--steps", "30",
        "--warmup-steps", "1", "--threads", "1"])
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("training samplernn-tiny (preset samplernn-tiny, random weights (seed 0); "), stdout
    assert [line.split()[:3] for line in lines if line.startswith("    2 ")] == [["2", "256", "30"]], stdout
    assert not any(line.startswith("   32 ") for line in lines), stdout
    assert lines[-1] == "(stopped by SIGTERM: 1 of 2 rows measured)", stdout
    assert stderr.strip().splitlines() == ["SIGTERM: stopping the bench before the next training step; the rows "
                                           "measured so far are printed (the signal again to stop at once)",
                                           "wavegen bench: interrupted"], stderr


@pytest.mark.parametrize("at", ["between rows", "inside a row"])
def test_a_stop_of_a_profile_keeps_the_rows_profiled_before_it(at, monkeypatch):
    """bench --profile had no stop of its own: a SIGTERM ended it by the signal without a word (exit -15)."""
    from wavegen import bench_profile
    from wavegen.kernels import numba_profile

    stop, said = Stop(), []
    if at == "between rows":
        progress = lambda line: said.append(line) or setattr(stop, "requested", len(said) == 3)  # noqa: E731
    else:  # asked while the second row times its parts: taken before the next part
        progress = said.append
        real = numba_profile._affine_reps

        def part(*args):
            if len(said) == 3:
                stop.requested = True
            return real(*args)

        monkeypatch.setattr(numba_profile, "_affine_reps", part)
    with pytest.raises(BenchStopped) as stopped:
        bench_profile.profile_generation("wavenet-tiny", ["numba"], [1, 2, 3], samples=64, dram_mbytes=8,
                                         progress=progress, stop=stop)
    assert said[1:] == ["profiling numba batch 1", "profiling numba batch 2"][:len(said) - 1]
    result = stopped.value.result
    assert [(p["backend"], p["batch"]) for p in result["profiles"]] == [("numba", 1)]
    assert result["profiles"][0]["full_us"] > 0 and stopped.value.planned == 3 and stopped.value.by == "SIGTERM"
    assert result["mode"] == "profile" and result["machine"]["rates"]["read_gb_per_s_l2"] > 0


@pytest.mark.slow
def test_a_sigterm_to_bench_profile_prints_the_rows_profiled_and_writes_no_json(tmp_path):
    """SIGTERM 1 s into the second row (256 streams: a long step): the first row's profile on stdout with what
    stopped it, the --json file not written; exit 130, as a Ctrl-C's."""
    out = tmp_path / "profile.json"
    stdout, stderr = _sigterm_1s_after("profiling numba batch 256", [
        "--profile", "--model", "samplernn-tiny", "--batch", "1,256", "--samples", "8000", "--json", str(out)])
    lines = stdout.strip().splitlines()
    assert [line.split(" (")[0] for line in lines if line.startswith("numba batch ")] == ["numba batch 1"], stdout
    assert lines[-1] == f"(stopped by SIGTERM: 1 of 2 rows measured; --json {out} not written)", stdout
    assert stderr.strip().splitlines()[-2:] == ["SIGTERM: stopping the profile before its next timed call; the rows "
                                                "profiled so far are printed (the signal again to stop at once)",
                                                "wavegen bench: interrupted"], stderr
    assert list(tmp_path.iterdir()) == []


def test_a_stop_asked_before_a_profile_measures_the_machine_is_taken_there():
    """A stop asked before profile_generation's work (a SIGTERM while torch imports): the machine was measured,
    and said to be ("measuring the machine"), after the stop's line, before the first row took the stop."""
    from wavegen import bench_profile

    stop, said = Stop(), []
    stop.requested = True
    with pytest.raises(BenchStopped) as stopped:
        bench_profile.profile_generation("wavenet-tiny", ["numba"], [1], samples=64, dram_mbytes=8,
                                         progress=said.append, stop=stop)
    assert said == [] and stopped.value.result["profiles"] == [] and stopped.value.planned == 1


def test_a_stop_asked_during_the_short_run_says_no_estimate_after_it():
    """A SIGTERM during the short run that foretells a row's length: the row's "take about 2 min" was said after
    the stop's line, of runs that were never to be made."""
    from wavegen.bench import time_generation

    stop, estimates = Stop(), []

    class Engine:
        streams, calls = 1, 0

        def generate(self, u):
            self.calls += 1
            stop.requested = self.calls == 2  # the warm-up's one call, then the short run's

    with pytest.raises(KeyboardInterrupt):
        time_generation(Engine(), 16000, 128, 3, estimate=estimates.append, stop=stop)
    assert estimates == []


def test_a_sigterm_to_bench_train_while_torch_imports_is_a_stop():
    """bench --train imported torch (wavegen.bench, --device's check: seconds) before its SIGTERMs were held for
    its StopSignals: one then ended it by the signal without a word (exit -15), where generation timing's stopped.
    The SIGTERM is sent here from --device's check, inside that window, so it lands there every time."""
    driver = ("import os, signal, sys\n"
              "from wavegen.cli import bench, run\n"
              "real = bench.check_device\n"
              "bench.check_device = lambda device: os.kill(os.getpid(), signal.SIGTERM) or real(device)\n"
              "sys.exit(run())\n")
    proc = subprocess.run([sys.executable, "-c", driver, "bench", "--train", "--model", "samplernn-tiny",
                           "--batch", "2", "--seq-len", "256", "--steps", "3", "--warmup-steps", "1",
                           "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""  # stopped before its first row: no table
    said = proc.stderr.strip().splitlines()
    assert said[-1] == "wavegen bench: interrupted" and ("SIGTERM: stopping the bench before the next training step; "
                                                         "the rows measured so far are printed (the signal again to "
                                                         "stop at once)") in said, proc.stderr
    # taken before the first batch size's line and model (its line came after the stop's, its warm-up step ran)
    assert not any(line.startswith("train samplernn-tiny batch") for line in said), proc.stderr


# `wavegen bench ARGS` that sends itself a SIGTERM as MODULE.FUNCTION is called ("before") or has returned ("after"):
# a point in its code path that every run passes, so the signal lands in the same window every time
_SIGTERM_AT = ("import importlib, os, signal, sys\n"
               "from wavegen.cli import run\n"
               "module, name, when = sys.argv.pop(1).split(':')\n"
               "module = importlib.import_module(module)\n"
               "real = getattr(module, name)\n"
               "def kill():\n"
               "    os.kill(os.getpid(), signal.SIGTERM)\n"
               "def called(*args, **kwargs):\n"
               "    if when == 'before':\n"
               "        kill()\n"
               "    result = real(*args, **kwargs)\n"
               "    if when == 'after':\n"
               "        kill()\n"
               "    return result\n"
               "setattr(module, name, called)\n"
               "sys.exit(run())\n")
_TRAIN = ["--train", "--model", "samplernn-tiny", "--batch", "2", "--seq-len", "256", "--steps", "1", "--warmup-steps",
          "0", "--threads", "1"]


@pytest.mark.parametrize("at, args, row, line", [
    ("wavegen.bench_train:_whole_job:before", _TRAIN, "    2 ", "the next training step"),  # the last row, measured
    ("wavegen.bench_train:_result:before", _TRAIN, "    2 ", "the next training step"),  # after its look for a stop
    ("wavegen.bench_train:bench_training:after", _TRAIN, "    2 ", "the next training step"),  # its stops ended
    ("wavegen.bench_train:format_training_table:before", _TRAIN, "    2 ", "the next training step"),
    ("wavegen.bench:format_table:before", ["--model", "wavenet-tiny", "--backends", "numba", "--batch", "1",
                                           "--samples", "64", "--repeats", "1", "--threads", "1"],
     "numba ", "the engine's next call"),
    pytest.param("wavegen.bench_profile:format_profile:before", ["--profile", "--model", "wavenet-tiny", "--batch",
                                                                  "1", "--samples", "64"],
                 "numba batch 1 ", "its next timed call", marks=pytest.mark.slow),
], ids=["train last row measured", "train after its look", "train returned", "train table", "generation table",
        "profile table"])
def test_a_sigterm_once_every_row_is_measured_is_the_same_stop(at, args, row, line, tmp_path):
    """A SIGTERM after the last row was measured (while the table was made or printed, before bench returned) was
    dropped: its line said "stopping ...", the command went on and exited 0 (--train's, once its stops had ended,
    not even said). It is the same stop as one before: exit 130, "interrupted"; every row was measured, so the
    results are whole and reported as a run's (--train's last row, stopped at its end, said "1 of 1 rows measured;
    --json not written")."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-c", _SIGTERM_AT, at, "bench", *args, "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, (proc.returncode, proc.stdout, proc.stderr)
    said = proc.stderr.strip().splitlines()
    assert said[-1] == "wavegen bench: interrupted", proc.stderr
    assert any(text.startswith("SIGTERM: stopping the ") and f" before {line}; " in text for text in said), said
    assert sum(text.startswith(row) for text in proc.stdout.splitlines()) == 1 and "(stopped" not in proc.stdout
    written = json.loads(out.read_text())
    assert len(written["profiles" if "--profile" in args else "rows"]) == 1 and written["command"].startswith(
        "wavegen bench ")
