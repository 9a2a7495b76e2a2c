"""wavegen bench: engine options in a backend name (``cuda-bf16:path=large``), which is how a GPU
run forces the cuda backend's small- or large-batch path at any stream count; every name (backend,
precision, options and their values) checked before anything is timed."""

import re

import numpy as np
import pytest

from wavegen import cli, generate
from wavegen.bench import bench_generation, duration, parse_backend
from wavegen.config import ConfigError
from wavegen.engine import BackendUnavailableError, Engine
from wavegen.errors import WavegenError


class Recorder(Engine):
    """An engine that takes the cuda WaveNet engine's path options and notes what it was built with."""

    backend = "recorder"
    precisions = ("fp32", "bf16")
    options = ("path", "block_streams")
    built = []

    def __init__(self, spec, streams, device="cpu", precision="fp32", **options):
        super().__init__(spec, streams, device, precision)
        Recorder.built.append((streams, precision, options))

    def reset(self, prime_codes=None, label_weights=None):
        self.t = 0

    def generate(self, uniforms, temperature=1.0):
        self.t += uniforms.shape[1]
        return np.zeros(uniforms.shape, np.int64)


@pytest.fixture
def recorder(monkeypatch):
    for backend in generate.backend_names():  # imported (registered) into the real table, not the patched copy
        generate.backend_engines(backend)
    monkeypatch.setattr(generate, "_ENGINES", {**generate._ENGINES, "recorder": {"wavenet": Recorder}})
    monkeypatch.setattr(Recorder, "built", [])
    return Recorder


def test_backend_names_carry_a_precision_and_options():
    assert parse_backend("numba") == ("numba", "fp32", {})
    assert parse_backend("numba-fp16") == ("numba", "fp16", {})
    assert parse_backend("cuda-bf16:path=large") == ("cuda", "bf16", {"path": "large"})
    assert parse_backend("cuda:path=small:block_streams=32:graph=false") == \
        ("cuda", "fp32", {"path": "small", "block_streams": 32, "graph": False})
    for bad in ("cuda:path", "cuda:=large", "cuda:path="):
        with pytest.raises(ConfigError, match="is not KEY=VALUE"):
            parse_backend(bad)


def test_every_row_is_built_with_its_options_and_keeps_its_name(recorder):
    names = ["recorder-bf16:path=large:block_streams=32", "recorder:path=small"]
    result = bench_generation("wavenet-tiny", names, [3, 2], samples=20, repeats=1)
    assert [(r["backend"], r["batch"]) for r in result["rows"]] == [(n, b) for n in names for b in (3, 2)]
    large, small = ("bf16", {"path": "large", "block_streams": 32}), ("fp32", {"path": "small"})
    assert recorder.built == [(1, *large), (2, *large), (1, *small), (2, *small),  # every name checked first:
                              (3, *large), (2, *large), (3, *small), (2, *small)]  # its state, the smallest batch


def test_every_backend_name_is_checked_before_anything_is_timed(recorder, monkeypatch):
    timed, told = [], []
    monkeypatch.setattr(Recorder, "generate", lambda self, u, temperature=1.0: timed.append(u.shape) or
                        np.zeros(u.shape, np.int64))
    for names, message in ((["recorder", "foo"], "--backends foo: unknown backend 'foo'; use auto or one of"),
                           (["recorder", "recorder-fp16"], "--backends recorder-fp16: precision fp16 is not "
                                                           "supported by recorder"),
                           (["recorder", "torch-bf16"], "--backends torch-bf16: precision bf16 is not supported by "
                                                        "torch"),
                           (["recorder", "numba-int8"], "--backends numba-int8: unknown backend 'numba-int8'"),
                           (["recorder", "numba:threads=0"], "--backends numba:threads=0: threads=0: give a whole "
                                                             "number, at least 1")):
        with pytest.raises(WavegenError) as caught:
            bench_generation("wavenet-tiny", names, [1, 2], samples=20, repeats=1, progress=told.append)
        assert str(caught.value).startswith(message)
        assert timed == [] and told == []  # the valid row before it was not measured (and then thrown away)
    assert cli.main(["bench", "--model", "wavenet-tiny", "--backends", "recorder,foo", "--batch", "1"]) == 2
    assert timed == []


def test_a_real_engine_option_on_the_cpu_and_refusals_before_anything_runs(recorder):
    rows = bench_generation("wavenet-tiny", ["numba:threads=1"], [2], samples=50, repeats=1)["rows"]
    assert rows[0]["backend"] == "numba:threads=1" and rows[0]["samples_per_second"] > 0
    # an option the engine does not take: refused before the first (valid) backend is measured
    with pytest.raises(ConfigError, match="numba engine for wavenet takes no option 'path'.*threads"):
        bench_generation("wavenet-tiny", ["recorder:path=large", "numba:path=large"], [1], samples=20, repeats=1)
    assert recorder.built == []
    # the cuda backend's path on a machine without a GPU: unavailable, with the reason
    if generate.available_backends("wavenet", device="cpu")["cuda"] is not None:
        with pytest.raises(BackendUnavailableError, match="cuda"):
            bench_generation("wavenet-tiny", ["cuda:path=large"], [1], samples=20, repeats=1)


def test_cli_refuses_an_unknown_option_in_one_line(capsys):
    assert cli.main(["bench", "--model", "wavenet-tiny", "--backends", "numba:path=large", "--batch", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "takes no option 'path'" in err


# ----- which options each measurement uses: one given to a measurement that ignores it is refused -------

class Measured(Exception):
    """Raised by a patched measurement: the options were accepted and the measurement began."""


@pytest.fixture
def measured(monkeypatch, tmp_path):
    """Every measurement of wavegen bench patched to raise Measured; the tests run in tmp_path."""
    import wavegen.bench
    import wavegen.bench_profile
    import wavegen.bench_train

    def measure(*args, **kwargs):
        raise Measured

    for module, name in ((wavegen.bench, "bench_generation"), (wavegen.bench_profile, "profile_generation"),
                         (wavegen.bench_train, "bench_training")):
        monkeypatch.setattr(module, name, measure)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused(capsys, *argv: str) -> str:
    """``wavegen bench ARGV``: exit 2 and one line (returned), nothing measured."""
    assert cli.main(["bench", "--model", "samplernn-tiny", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("wavegen bench: error: "), err
    return err


def test_the_reported_commands_are_refused_up_front_naming_every_ignored_option(measured, capsys):
    err = refused(capsys, "--train", "--batch", "2", "--seq-len", "64", "--steps", "1", "--warmup-steps", "0",
                  "--plot", "bt/x.png", "--backends", "cuda", "--repeats", "9")
    assert err == ("wavegen bench: error: --backends works with generation timing and --profile (not --train); "
                   "--repeats, --plot work with generation timing only (not --train or --profile): bench --train "
                   "does not use them; leave them out")
    err = refused(capsys, "--profile", "--batch", "1", "--samples", "64", "--plot", "prof/p.png")
    assert err.endswith("--plot works with generation timing only (not --train or --profile): bench --profile "
                        "does not use it; leave it out")
    err = refused(capsys, "--backends", "numba", "--batch", "1", "--samples", "64", "--compile", "--precision", "bf16",
                  "--grad-accum", "4", "--seq-len", "7")
    assert err.endswith("--seq-len, --precision, --compile, --grad-accum work with --train: generation timing "
                        "(bench without --train or --profile) does not use them; leave them out")
    assert "--set works with --train" in refused(capsys, "--set", "train.ema_decay=0.99")
    assert refused(capsys, "--train", "--profile").endswith("--profile and --train are two different measurements: "
                                                            "give one of them")
    assert sorted(p.name for p in measured.iterdir()) == []  # no bt/, no prof/


# a value other than the default for each option that only some measurements use
GIVEN = {"--backends": ["numba"], "--checkpoint": ["last"], "--samples": ["64"], "--torch-samples": ["32"],
         "--repeats": ["1"], "--device": ["cuda"], "--plot": ["p.png"], "--seq-len": ["64"], "--steps": ["1"], "--warmup-steps": ["0"],
         "--precision": ["no"], "--compile": [], "--grad-accum": ["2"], "--workers": ["1"],
         "--set": ["train.ema_decay=0.99"]}
MODES = {"generation timing": [], "--profile": ["--profile"], "--train": ["--train"]}


def test_every_mode_option_is_refused_where_unused_and_taken_where_used(measured, capsys):
    from wavegen.cli.bench import MODE_OPTIONS

    assert sorted(flag for flag, _ in MODE_OPTIONS.values()) == sorted(GIVEN)
    for flag, modes in MODE_OPTIONS.values():
        for mode, mode_args in MODES.items():
            argv = [*mode_args, flag, *GIVEN[flag]]
            if mode not in modes:
                assert refused(capsys, *argv).startswith(f"wavegen bench: error: {flag} work"), argv
            elif flag != "--device":  # no GPU needed to tell it apart: --device cuda is refused here when absent
                with pytest.raises(Measured):
                    cli.main(["bench", "--model", "samplernn-tiny", *argv])
    capsys.readouterr()


def test_help_says_which_measurement_each_option_goes_with(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("generation timing: plot samples/s", "generation timing: timed runs per row",
                   "generation timing and --profile: comma list of backends", "training speed (--train; these "
                   "options go with it only)", "an option that the measurement asked for does not use is refused"):
        assert phrase in text, phrase


@pytest.mark.parametrize("batch", ["1,,2", "1,8,", ",1"])
def test_an_empty_item_in_a_comma_list_is_refused_not_dropped(measured, capsys, batch):
    """``--batch 1,,2`` timed batches 1 and 2 as if the slip were not there."""
    err = refused(capsys, "--batch", batch)
    assert f"--batch {batch}: an empty item (two commas, or one at an end)" in err
    assert "an empty item" in refused(capsys, "--backends", "torch,,numba")
    with pytest.raises(Measured):  # one size, and spaces about the commas, are taken as before
        cli.main(["bench", "--model", "samplernn-tiny", "--batch", "1, 8"])


@pytest.mark.parametrize("mode, most", [([], 2**64 - 1), (["--profile"], 2**64 - 1), (["--train"], 2**32 - 1)])
def test_a_seed_out_of_range_is_refused_in_one_line_naming_it(capsys, mode, most):
    """``--seed -1`` was numpy's OverflowError from the first row's warm-up (a traceback), ``--seed 2**64`` torch's,
    and with --train "train.seed=-1", a key the user never wrote. Each measurement refuses it before anything runs."""
    for seed in (-1, most + 1):
        err = refused(capsys, *mode, "--seed", str(seed), "--batch", "1")
        assert err == f"wavegen bench: error: --seed {seed}: must be a whole number from 0 to {most}"


def test_a_row_that_will_take_long_is_announced_with_an_estimate_before_it_runs(monkeypatch, caplog):
    """``--samples 100000000`` ran for 40 minutes with nothing said: the estimate comes from a short run
    timed before the row's runs; here the bound is lowered so that a real row of a second crosses it."""
    import wavegen.bench

    monkeypatch.setattr(wavegen.bench, "LONG_ROW_SECONDS", 0.0)
    with caplog.at_level("WARNING", logger="wavegen.bench"):
        result = bench_generation("samplernn-tiny", backends=["torch"], batches=[1], samples=512, repeats=2,
                                  threads=1)
    (line,) = [r.getMessage() for r in caplog.records if "take about" in r.getMessage()]
    assert line.startswith("torch batch 1: 2 runs of 512 samples per stream take about ")
    estimate = float(line.split("take about ")[1].split(" s ")[0])
    measured = sum(result["rows"][0]["all_seconds"])
    assert measured / 5 - 0.1 <= estimate <= measured * 5 + 1, (estimate, measured)
    monkeypatch.setattr(wavegen.bench, "LONG_ROW_SECONDS", 3600.0)
    caplog.clear()
    with caplog.at_level("WARNING", logger="wavegen.bench"):
        bench_generation("samplernn-tiny", backends=["torch"], batches=[1], samples=256, repeats=1, threads=1)
    assert "take about" not in caplog.text  # a row of seconds is not announced


def test_an_absurd_rows_estimate_is_said_short(caplog):
    """``--repeats 100000000000000000000``: its row's estimate said "take about 10709323908211822.0 h"; from 100000
    hours on it is said as progress lines say numbers (wavegen.progress.number_said), past 1e15 in exponent form.
    The bench is stopped once it has said it (as a Ctrl-C would)."""
    class StopOnceSaid:
        name = "SIGINT"
        looks = 0

        @property
        def requested(self):  # at the latest after many looks: a row not announced fails here, not runs 1e30 times
            self.looks += 1
            return self.looks > 1000 or any("take about" in r.getMessage() for r in caplog.records)

    with caplog.at_level("WARNING", logger="wavegen.bench"), pytest.raises(KeyboardInterrupt):
        bench_generation("wavenet-tiny", backends=["numba"], batches=[1], samples=64, repeats=10**30, threads=1,
                         stop=StopOnceSaid())
    said = [r.getMessage() for r in caplog.records if "take about" in r.getMessage()]
    assert len(said) == 1, caplog.text
    (line,) = said
    estimate = line.split("take about ")[1].split(" (measured")[0]
    # three significant figures as %g writes them: "1.07e+23 h", and "1.6e+23 h" where the third is a 0 (timed here)
    assert re.fullmatch(r"\d(\.\d\d?)?e\+\d\d h", estimate), line
    assert [duration(s) for s in (0.4, 45, 700, 3.1 * 3600, 99999 * 3600, 360000000, 1e12, 3.855e19)] == [
        "0.4 s", "45 s", "12 min", "3.1 h", "99999.0 h", "100000 h", "277777778 h", "1.07e+16 h"]


@pytest.mark.slow
@pytest.mark.alone  # times how soon the Ctrl-C is met: no other test's processes beside it
def test_a_long_row_names_the_option_that_sets_its_samples(monkeypatch, caplog):
    """A torch row's warning said "a lower --samples, --repeats or --batch takes less": its samples are
    --torch-samples, and a lower --samples left a --torch-samples given as it was."""
    import wavegen.bench

    monkeypatch.setattr(wavegen.bench, "LONG_ROW_SECONDS", 0.0)
    with caplog.at_level("WARNING", logger="wavegen.bench"):
        bench_generation("wavenet-tiny", backends=["torch", "numba"], batches=[1], samples=256, torch_samples=128,
                         repeats=1, threads=1)
    torch_line, numba_line = [r.getMessage() for r in caplog.records if "takes about" in r.getMessage()]
    assert torch_line.startswith("torch batch 1: 1 run of 128 samples per stream takes about "), torch_line
    assert torch_line.endswith("; a lower --torch-samples, --repeats or --batch takes less"), torch_line
    assert numba_line.startswith("numba batch 1: 1 run of 256 samples per stream takes about "), numba_line
    assert numba_line.endswith("; a lower --samples, --repeats or --batch takes less"), numba_line


def test_ctrl_c_stops_a_long_profile_within_a_second_or_two():
    """``bench --profile`` timed the whole step in one generate call a run (numba returns to Python only at its
    end): a Ctrl-C 6 s into a run of 6 million samples waited for it, about half a minute. Now the run goes
    in calls of about a second, and the Ctrl-C stops it as it stops ``wavegen bench``: said, exit 130."""
    import signal
    import subprocess
    import sys
    import time

    cmd = [sys.executable, "-m", "wavegen", "bench", "--profile", "--model", "samplernn-tiny", "--samples",
           "6000000", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said = []
    for line in proc.stderr:  # said after the short run, before the parts (a second or two) and the whole step
        said.append(line)
        if "the whole step is timed" in line:
            break
    assert proc.poll() is None, said
    time.sleep(6)  # into the whole step's runs
    stopped = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    waited = time.monotonic() - stopped
    assert proc.returncode == 130 and out == "", (out, err)
    assert err.strip().splitlines() == ["SIGINT: stopping the profile before its next timed call; the rows profiled "
                                        "so far are printed (Ctrl-C again to stop at once)",
                                        "wavegen bench: interrupted"], err  # (its one row unfinished: no table)
    assert waited < 8, waited  # calls of about a second, on a shared machine


def test_the_threads_help_says_a_profile_runs_one_thread_unless_given():
    """--threads' help said "(default: all cores)" alone, where --profile times on one thread unless given."""
    import argparse

    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    (threads,) = [a for a in sub.choices["bench"]._actions if "--threads" in a.option_strings]
    assert threads.help == "threads for numba and torch; --profile times on 1 unless given (default: all cores)"
