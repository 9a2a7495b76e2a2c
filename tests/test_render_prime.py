"""A render begun with --prime, resumed: the snapshot carries what the prime did to the engine and
params.json its sha256, so a prime file that is gone does not block the resume (nor the rerun of a
finished render); one that differs is refused; a render that starts from the prime needs the file."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from render_helpers import ENV, SR, cli, file_bytes, make_model, render_cli, wait_for_file, wait_for_snapshot


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model") / "tiny")


PRIME = ["--prime-seconds", "0.5"]
FLAGS = ["--backend", "torch", "--no-guard", "--no-spectrogram", *PRIME]  # render_cli's, and PRIME


def killed(model, out, prime, seconds, snapshot_seconds, wait_for) -> None:
    """``wavegen render`` with ``prime``, killed (-9) once ``wait_for`` (a path under OUT/.state) exists."""
    proc = subprocess.Popen(cli(model, "--out", out, "--seconds", seconds, "--snapshot-seconds", snapshot_seconds,
                                "--prime", prime, *FLAGS), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if wait_for.suffix == ".npz":
            wait_for_snapshot(proc, wait_for)
        else:
            wait_for_file(proc, wait_for)
    finally:
        proc.kill()
        proc.communicate(timeout=60)


def test_a_resume_needs_no_prime_file_and_refuses_a_different_one(model, tmp_path, make_tone, caplog, capsys):
    prime = tmp_path / "prime.wav"
    make_tone(prime, 1.0, SR, freq=300.0)
    assert render_cli(model, tmp_path / "whole", "--seconds", 2, "--prime", prime, *PRIME) == 0  # uninterrupted
    out = tmp_path / "r"
    killed(model, out, prime, 2, 0.25, out / ".state" / "rank0.npz")
    assert not (out / "render_report.json").exists()  # stopped halfway
    kept = prime.read_bytes()
    make_tone(prime, 1.0, SR, freq=500.0)  # another recording under the same name: refused by the rerun check
    args = ["--seconds", 2, "--snapshot-seconds", 0.25, "--prime", prime, *PRIME]
    assert render_cli(model, out, *args) == 2
    assert f"wavegen render: error: {out} holds a render begun with another prime (--prime, or --prime-seconds: " \
           "its codes' sha256 was " in capsys.readouterr().err
    prime.unlink()  # gone: the resume goes on with the prime recorded, byte for byte what one run made
    with caplog.at_level("INFO", logger="wavegen.render"):
        assert render_cli(model, out, *args) == 0
        assert f"--prime {prime} is gone: resuming {out} with the prime it began with" in caplog.text
        assert f"resuming {out} at " in caplog.text and file_bytes(out, 1) == file_bytes(tmp_path / "whole", 1)
        caplog.clear()
        assert render_cli(model, out, *args) == 0  # finished: nothing to do, without the file either
        assert "this render is already complete" in caplog.text
    assert render_cli(model, out, *args, "--restart") == 2  # starts over from the prime: the file is needed
    assert capsys.readouterr().err.endswith(f"--prime {prime}: no such file\n")
    prime.write_bytes(kept)
    assert render_cli(model, out, *args) == 0 and file_bytes(out, 1) == file_bytes(tmp_path / "whole", 1)


def test_a_render_with_no_snapshot_yet_needs_its_prime_file(model, tmp_path, make_tone, capsys):
    prime = tmp_path / "prime.wav"
    make_tone(prime, 1.0, SR, freq=300.0)
    out = tmp_path / "r"
    killed(model, out, prime, 60, 1000, out / ".state" / "params.json")  # recorded, no snapshot yet
    assert not list((out / ".state").glob("*.npz"))
    moved = shutil.move(prime, tmp_path / "elsewhere.wav")
    assert render_cli(model, out, "--seconds", 60, "--snapshot-seconds", 1000, "--prime", prime, *PRIME) == 2
    assert capsys.readouterr().err == (f"wavegen render: error: --prime {prime}: no such file; the render in {out} "
                                       "began with it but has no snapshot to resume from yet, so it starts from the "
                                       "prime again: give the file\n")
    assert render_cli(model, tmp_path / "new", "--prime", prime) == 2  # a new render, as ever
    assert capsys.readouterr().err == f"wavegen render: error: --prime {prime}: no such file\n"
    shutil.move(moved, prime)
    assert render_cli(model, out, "--seconds", 0.5, "--prime", prime, *PRIME, "--restart") == 0
