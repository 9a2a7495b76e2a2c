"""The CLI under a launch (torchrun): a user error reads once, said by the first process, while the
others wait for the launcher to end them (one exiting first would have the launcher end the first
before it printed); a process that no launcher ends says it after all. eval runs in one process."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import prepared_corpus, save_tiny_model
from process_helpers import kill_launch

from render_helpers import ENV
from wavegen import distributed
from wavegen.cli import main

SR = 8000


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", sample_rate=SR, dim=16, emb_size=8)


def launched(*args, processes=2) -> list[str]:
    """``torchrun --nproc_per_node N -m wavegen ARGS``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            "-m", "wavegen", *map(str, args)]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["prime", "out"])
def test_a_render_refused_under_torchrun_is_said_once(model, tmp_path, case):
    (tmp_path / "a_file").write_text("mine")
    extra, message = {
        "prime": (["--out", tmp_path / "r", "--prime", tmp_path / "none.wav"], f"--prime {tmp_path / 'none.wav'}: "
                  "no such file"),
        "out": (["--out", tmp_path / "a_file"], f"--out {tmp_path / 'a_file'} is a file, not a folder"),
    }[case]
    tick = time.monotonic()
    run = subprocess.run(launched("render", model, "--seconds", 0.1, "--backend", "torch", *extra), env=ENV,
                         capture_output=True, text=True, timeout=240)
    took = time.monotonic() - tick
    assert run.returncode != 0
    assert run.stderr.count("wavegen render: error:") == 1, run.stderr[-3000:]
    assert f"wavegen render: error: {message}" in run.stderr
    # the second process waited for the launcher (which ended it once the first exited), not its wait out
    assert "exitcode  : -15" in run.stderr and took < 120
    assert (tmp_path / "a_file").read_text() == "mine" and not (tmp_path / "r").exists()


def test_a_process_no_launcher_ends_says_its_error_after_the_wait(model, tmp_path, monkeypatch, capsys):
    """RANK 1 without a launcher around it: no first process prints, so this one does, after waiting."""
    monkeypatch.setattr(distributed, "LAUNCHER_WAIT_SECONDS", 1.5)
    argv = ["render", str(model), "--out", str(tmp_path / "r"), "--seconds", "0.1", "--prime", str(tmp_path / "no.wav")]
    message = f"wavegen render: error: --prime {tmp_path / 'no.wav'}: no such file\n"
    took = {}
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("LOCAL_RANK", rank)
        tick = time.monotonic()
        assert main(argv) == 2
        took[rank] = time.monotonic() - tick
        assert capsys.readouterr().err == message  # said, once, by the first process and by the one left alone
    assert took["0"] < 1.5 <= took["1"], took


@pytest.mark.slow
def test_eval_under_torchrun_scores_in_one_process(model, tmp_path, capsys):
    corpus = prepared_corpus(tmp_path, files=4, seconds=2.0, sample_rate=SR, val_fraction=0.25, test_fraction=0.25)
    # the two launches side by side (each is mostly seconds of importing torch), the one process's eval in this one
    launches = [subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for args in (launched("eval", model, "--data", corpus, "--json"),
                             launched("eval", model, "--data", tmp_path / "none"))]
    try:
        capsys.readouterr()
        assert main(["eval", str(model), "--data", str(corpus), "--json"]) == 0
        alone = capsys.readouterr().out
        (out, err), (_, refused) = (launch.communicate(timeout=240) for launch in launches)
    finally:
        for launch in launches:
            if launch.poll() is None:
                kill_launch(launch)
    assert launches[0].returncode == 0, err[-3000:]
    assert out == alone  # one result, not one per process
    assert "wavegen eval runs in one process: the first of this launch's 2 does the work" in err
    assert launches[1].returncode != 0 and refused.count("wavegen eval: error:") == 1, refused[-3000:]
    assert f"wavegen eval: error: {tmp_path / 'none'}" in refused


# A library's program under torchrun: it imports the CLI (its parser, one_line ...) and never calls main
_IMPORTS_THE_CLI = """import os, pathlib, time
import wavegen.cli
if os.environ["RANK"] == "0":
    pathlib.Path(os.environ["READY"]).write_text("ready")
time.sleep(120)
"""


@pytest.mark.slow
def test_a_program_that_imports_the_cli_without_its_main_ends_by_the_launchers_sigterm(tmp_path):
    """torchrun SIGTERMed while its processes, which imported wavegen.cli and never called main, waited: they kept
    the CLI's early hold of SIGTERM (meant for train's and render's handlers) and ignored it, until torchrun killed
    them 30 s later. Now the hold applies inside main alone: they end by the SIGTERM at once."""
    from process_helpers import ended_after
    from render_helpers import wait_for_file

    script, ready = tmp_path / "imports_the_cli.py", tmp_path / "ready"
    script.write_text(_IMPORTS_THE_CLI)
    launch = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               str(script)], env={**ENV, "READY": str(ready)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    stderr, took = ended_after(launch, lambda: (wait_for_file(launch, ready), time.sleep(0.5), launch.terminate()))
    assert launch.returncode != 0, stderr[-3000:]
    assert took < 15, f"{took:.1f} s (torchrun's 30 s: the SIGTERM was held): {stderr[-3000:]}"
