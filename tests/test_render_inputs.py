"""What a render reads and what it removes: --prime checked (and scaled) before anything is written,
--restart removing only the files a render writes, windows too big for memory refused up front, and a
resume whose model changed since it began told so."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from render_helpers import (QUICK_FLAGS, Q, SR, direct_pcm, make_model, read_pcm, render_cli, run_with_step_5,
                            settings)
from wavegen import memory
from wavegen.audio import quantize
from wavegen.audio_decode import load_mono
from wavegen.checkpoint import load_model
from wavegen.cli import main
from wavegen.config import ConfigError
from wavegen.fileio import sha256_file
from wavegen.render import RenderFolder, RenderStateError, render

@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "tiny")


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ----- --restart removes only what a render writes ------------------------------------------------

USER_FILES = ("stream_000_my_favourite_take.wav", "stream_2024-live.wav", "stream_0001.wav", "stream_000.txt",
              "stream_001.wav.bak", "notes.png")


def test_restart_removes_only_the_exact_files_a_render_wrote(model, tmp_path, capsys):
    out = tmp_path / "rw"
    assert render_cli(model, out, "--streams", 3, "--format", "flac") == 0  # more streams, another format
    for name in USER_FILES:  # the user's, beside the render (a folder of audio without one is refused: test_render_out)
        (out / name).write_bytes(b"mine")
    assert render_cli(model, out, "--seed", 5, "--restart") == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*USER_FILES, ".lock", "render_report.json", "stream_000.wav"])


def test_restart_after_an_unfinished_render_removes_its_recorded_streams_by_name(tmp_path):
    out = tmp_path / "r"
    (out / ".state").mkdir(parents=True)
    (out / ".state" / "params.json").write_text(json.dumps({"streams": 4, "format": "wav"}))
    written = [f"stream_{i:03d}.{ext}" for i in range(4) for ext in ("wav", "png")]
    for name in (*written, *USER_FILES):
        (out / name).write_bytes(b"a file")
    RenderFolder(out, 1, "flac").wipe()
    assert sorted(p.name for p in out.iterdir()) == sorted(USER_FILES)


# ----- --prime ------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["all", "one"])
def test_a_prime_with_nan_or_inf_is_refused_by_name_before_anything_is_written(model, tmp_path, make_audio,
                                                                               capsys, where):
    x = np.full(SR, np.nan, np.float32) if where == "all" else 0.3 * np.sin(np.arange(SR) * 0.1)
    if where == "one":
        x[100] = np.inf
    prime = make_audio(tmp_path / "nan.wav", x, SR, subtype="FLOAT")
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning on the way
        assert render_cli(model, out, "--prime", prime) == 2
    assert one_error_line(capsys) == f"wavegen render: error: --prime {prime}: holds NaN or infinite samples; " \
                                     "give an audio file of finite samples"
    assert not out.exists()
    good = make_audio(tmp_path / "good.wav", 0.3 * np.sin(np.arange(SR) * 0.1), SR)
    assert render_cli(model, out, "--prime", good) == 0  # the corrected command is not refused


def test_a_prime_above_full_scale_is_scaled_down_with_a_warning(model, tmp_path, make_audio, caplog):
    loud = 5.0 * np.sin(np.arange(SR) * 0.1).astype(np.float32)
    prime = make_audio(tmp_path / "loud.wav", loud, SR, subtype="FLOAT")
    with caplog.at_level("WARNING", logger="wavegen.render"):
        render(model, tmp_path / "p", settings(0.125, prime=str(prime), prime_seconds=0.5), progress=False)
    assert f"--prime {prime} peaks 14.0 dB above full scale: scaled down by 14.0 dB" in caplog.text
    audio = load_mono(prime, SR)
    keep = 2000 - 2000 % load_model(model)[0].context_samples
    scaled = quantize((audio * np.float32(1 / np.abs(audio).max()))[-keep:], Q, "mu-law")
    expected = direct_pcm(model, 1, SR // 8, prime=scaled[None])[0]
    assert np.array_equal(read_pcm(tmp_path / "p" / "stream_000.wav"), expected)
    clipped = quantize(audio[-keep:], Q, "mu-law")
    assert not np.array_equal(expected, direct_pcm(model, 1, SR // 8, prime=clipped[None])[0])


def test_prime_mistakes_name_the_right_value(model, tmp_path, make_tone, capsys):
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    make_tone(tmp_path / "ok.wav", 2.0, SR)
    make_tone(tmp_path / "tiny.wav", 0.001, SR)  # 4 samples: less than the model's frame of 16
    (tmp_path / "garbage.wav").write_bytes(b"RIFF\0\0\0\0WAVEjunk")  # a header, no audio
    out = tmp_path / "out"
    cases = [
        (["--prime", tmp_path / "folder"], f"--prime {tmp_path / 'folder'}: is a folder, not an audio file"),
        (["--prime", tmp_path / "fifo"], f"--prime {tmp_path / 'fifo'}: is a FIFO, not a regular file"),
        (["--prime", tmp_path / "none.wav"], f"--prime {tmp_path / 'none.wav'}: no such file"),
        (["--prime", ""], "--prime: give an audio file"),
        (["--prime", tmp_path / "ok.wav", "--prime-seconds", "0.0005"],
         "--prime-seconds 0.0005: less than the model's frame of 16 samples at 4000 Hz; give at least 0.004 s"),
        (["--prime", tmp_path / "tiny.wav"], f"--prime {tmp_path / 'tiny.wav'}: shorter than 16 samples"),
        (["--prime", tmp_path / "garbage.wav"], f"--prime {tmp_path / 'garbage.wav'}: cannot decode audio"),
    ]
    for extra, message in cases:
        assert render_cli(model, out, *extra) == 2, extra
        assert one_error_line(capsys).startswith(f"wavegen render: error: {message}")
        assert not out.exists()


# ----- memory -------------------------------------------------------------------------------------

def test_a_window_or_prime_too_big_for_memory_is_refused_before_anything_is_written(model, tmp_path, make_tone,
                                                                                  monkeypatch, capsys):
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": (2**30, "available RAM"))
    out = tmp_path / "g"
    big = ["--seconds", 2000, "--streams", 10]
    assert main(["-q", "render", str(model), "--out", str(out), "--backend", "torch", "--no-spectrogram",
                 *map(str, big), "--guard-seconds", "2000"]) == 2
    assert one_error_line(capsys) == ("wavegen render: error: the guard window of 10 streams (--guard-seconds "
                                      "2000) needs about 1.19 GiB, more than the 1.00 GiB available RAM: lower "
                                      "--guard-seconds or --streams")
    # without the guard a window holds less: its codes and PCM (tests/test_render_memory.py)
    assert render_cli(model, out, "--seconds", 3000, "--streams", 10, "--block-seconds", 3000) == 2
    assert "a block of 10 streams (--block-seconds 3000) needs about 1.26 GiB" in one_error_line(capsys)
    make_tone(tmp_path / "long.wav", 4000, SR)
    assert render_cli(model, out, "--streams", 40, "--prime", tmp_path / "long.wav", "--prime-seconds", 4000) == 2
    assert "the prime of 40 streams (4000 s of --prime" in one_error_line(capsys)
    assert not out.exists()
    # a render shorter than its guard window holds only its own length
    assert main(["-q", "render", str(model), "--out", str(out), "--backend", "torch", "--no-spectrogram",
                 "--seconds", "0.125", "--guard-seconds", "100000"]) == 0


# ----- a model changed since the render began -----------------------------------------------------

FINISHED = ". It is finished: there is nothing to resume; pass --restart to render it anew from the model as it is " \
           "now, or choose another --out"


def stopped_copy(out: Path, to: Path) -> Path:
    """A copy of the finished render ``out`` as if stopped before its end: its report's parameters in
    .state/params.json, the report gone."""
    shutil.copytree(out, to)
    params = json.loads((to / "render_report.json").read_text())["params"]
    (to / "render_report.json").unlink()
    (to / ".state").mkdir()
    (to / ".state" / "params.json").write_text(json.dumps(params))
    return to


def test_a_resume_whose_model_changed_says_so_and_names_the_checkpoint_it_began_with(model, tmp_path, capsys):
    """A stopped render is pointed at the kept checkpoint holding the weights it began with; a finished one, which
    a rerun has nothing to resume of (one with that checkpoint only says it is complete), is said to be finished
    (it was told "resume it with --checkpoint step_5")."""
    run, out = run_with_step_5(model, tmp_path / "run"), tmp_path / "out"
    assert render_cli(run, out) == 0
    other = make_model(tmp_path / "other", seed=3)
    for name in ("model.safetensors", "weights.json"):  # trained further: best/ written again, its record too
        shutil.copy(other / name, run / "best")
    capsys.readouterr()
    assert render_cli(run, out) == 2
    err = one_error_line(capsys)
    assert f"{out} holds a render begun from the model in {(run / 'best').resolve()}, which changed since " \
           "(trained further or replaced" in err
    assert err.endswith(f"is now {sha256_file(other / 'model.safetensors')[:12]}...){FINISHED}"), err
    stopped = stopped_copy(out, tmp_path / "stopped")
    assert render_cli(run, stopped) == 2
    err = one_error_line(capsys)
    assert "changed since" in err and "Rerun the original command" not in err and \
        err.endswith("; resume it with --checkpoint step_5 (the weights it began with), pass --restart to render it "
                     "anew from the model as it is now, or choose another --out"), err
    assert main(["-q", "render", str(run), "--checkpoint", "step_5", "--out", str(out), *QUICK_FLAGS]) == 0
    shutil.rmtree(run / "checkpoints")
    capsys.readouterr()
    assert render_cli(run, out) == 2
    err = one_error_line(capsys)
    assert "which changed since" in err and "--checkpoint" not in err and err.endswith(FINISHED)
    assert render_cli(run, stopped) == 2
    err = one_error_line(capsys)
    assert "which changed since" in err and "--checkpoint" not in err and \
        err.endswith("; pass --restart to render it anew from the model as it is now, or choose another --out"), err
    (out / "render_report.json").unlink()  # an unfinished render begun from the first weights: the same
    (out / ".state").mkdir()
    (out / ".state" / "params.json").write_text(json.dumps(
        {"model": str((run / "best").resolve()), "model_sha256": sha256_file(model / "model.safetensors")}))
    with pytest.raises(RenderStateError, match="changed since"):
        render(run, out, settings(0.125), progress=False)


def test_a_render_begun_from_best_resumes_from_the_checkpoint_it_was_chosen_from(model, tmp_path, capsys):
    """best/ (checkpoint.save_model) and a training checkpoint (accelerate's save_state) hold the same
    weights in files of other bytes (other header metadata): a render begun from best/, refused once the
    model changed, is pointed at that checkpoint where it stopped before its end, and --checkpoint step_N
    resumes it (a finished one: says it complete)."""
    from accelerate.utils import save as accelerate_save

    run = tmp_path / "run"
    shutil.copytree(model, run / "best")
    shutil.copy(model / "config.json", run / "config.json")
    kept = run / "checkpoints" / "step_5"
    kept.mkdir(parents=True)
    weights, _ = load_model(model)
    accelerate_save(weights.state_dict(), kept / "model.safetensors", safe_serialization=True)  # as training does
    assert sha256_file(kept / "model.safetensors") != sha256_file(model / "model.safetensors")
    (kept / "trainer_state.json").write_text(json.dumps({"step": 5}))
    out = tmp_path / "out"
    assert render_cli(run, out, "--seconds", 0.25) == 0
    other = make_model(tmp_path / "other", seed=3)
    for name in ("model.safetensors", "weights.json"):  # trained further: best/ written again
        shutil.copy(other / name, run / "best")
    capsys.readouterr()
    assert render_cli(run, out, "--seconds", 0.25) == 2
    assert one_error_line(capsys).endswith(FINISHED)
    stopped = stopped_copy(out, tmp_path / "stopped")
    assert render_cli(run, stopped, "--seconds", 0.25) == 2
    assert "resume it with --checkpoint step_5 (the weights it began with)" in one_error_line(capsys)
    assert main(["-q", "render", str(run), "--checkpoint", "step_5", "--out", str(out), *QUICK_FLAGS,
                 "--seconds", "0.25"]) == 0, capsys.readouterr().err
    assert not capsys.readouterr().err  # the same weights: complete, nothing to do
    assert np.array_equal(read_pcm(out / "stream_000.wav"), direct_pcm(model, 1, SR // 4)[0])


@pytest.mark.parametrize("typed, says", [
    ("0", "--temperature 0: every temperature must be a positive number (0 is not)"),
    ("1,-0.5", "--temperature 1,-0.5: every temperature must be a positive number (-0.5 is not)"),
    ("1,,2", "--temperature 1,,2: an empty item (two commas, or one at an end)"),
    ("1,", "--temperature 1,: an empty item"),
    ("1,warm", "--temperature 1,warm: 'warm' is not a number"),
    # beyond float32's range, the engines': inf there, every draw uniform noise; below it 0, the engine's error
    ("1,1e300", "--temperature 1,1e300: every temperature must lie within float32's range, the engines' (1e300 is "
                "not)"),
    ("1e-50", "--temperature 1e-50: every temperature must lie within float32's range"),
])
def test_a_temperature_mistake_names_the_value_as_typed(model, tmp_path, capsys, typed, says):
    """--temperature as the user typed it (not "[0.0]"), and an empty item is refused, not skipped."""
    out = tmp_path / "out"
    assert main(["-q", "render", str(model), "--out", str(out), f"--temperature={typed}", "--seconds", "0.05"]) == 2
    assert one_error_line(capsys).startswith(f"wavegen render: error: {says}")
    assert not out.exists()


def test_temperatures_are_read_as_typed():
    from wavegen.render.settings import parse_temperatures

    assert parse_temperatures("0.8, 1,1.25") == [0.8, 1.0, 1.25]
    assert parse_temperatures("2") == [2.0]
    with pytest.raises(ConfigError, match=r"^--temperature 0.5,0: every temperature must be a positive number"):
        settings(0.1, temperature=[0.5, 0.0]).validate()


def test_more_temperatures_than_streams_is_refused(model, tmp_path, capsys):
    """--temperature 0.8,0.9,1.0 with --streams 2 rendered 0.8 and 0.9 and dropped 1.0 unsaid: refused in one
    line naming both values, before anything is written; as many as the streams, or fewer (cycled), render."""
    out = tmp_path / "out"
    assert main(["-q", "render", str(model), "--out", str(out), "--temperature", "0.8,0.9,1.0", "--streams", "2",
                 "--seconds", "0.05"]) == 2
    assert one_error_line(capsys).startswith("wavegen render: error: --temperature 0.8,0.9,1: 3 temperatures for "
                                             "--streams 2; give at most 2")
    assert not out.exists()
    settings(0.1, streams=2, temperature=[0.8, 0.9]).validate()
    settings(0.1, streams=3, temperature=[0.8, 0.9]).validate()
