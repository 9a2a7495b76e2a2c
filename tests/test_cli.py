"""The command line as a person uses it: prep → train → render → eval → info, for SampleRNN
and WaveNet; errors as one line (exit 2) for the user, a traceback for a bug."""

import hashlib
import os
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import TINY_SAMPLERNN, TINY_WAVENET, melody, prepared_corpus, write_audio_file

from wavegen.checkpoint import load_model, save_model
from wavegen.cli import main
from wavegen.config import load_json
from wavegen.corpus import Corpus
from wavegen.errors import WavegenError
from wavegen.models import build_model, preset_names, resolve_preset
from wavegen.models.wavenet import WaveNet
from wavegen.train import read_metrics, resolve_run_config, train


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def sets(*items):
    return [a for s in items for a in ("--set", s)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Recordings in several formats and rates → corpus → a briefly trained tiny model."""
    root = tmp_path_factory.mktemp("cli")
    rec = root / "recordings"
    write_audio_file(rec / "a.wav", np.stack([melody(5, 44100, seed=1)] * 2, 1), 44100)  # stereo 44.1k
    write_audio_file(rec / "b.flac", melody(5, 22050, seed=2), 22050)
    write_audio_file(rec / "album" / "c.ogg", melody(5, 32000, seed=3), 32000, format="OGG", subtype="VORBIS")
    write_audio_file(rec / "d.wav", melody(5, 16000, seed=4), 16000)
    (rec / "broken.wav").write_bytes(b"RIFF not really a wave file")
    assert main(["-q", "prep", str(rec), str(root / "corpus"), "--val-fraction", "0.25",
                 "--test-fraction", "0.25"]) == 0
    assert main(["-q", "train", "--data", str(root / "corpus"), "--model", "samplernn-tiny", "--run",
                 str(root / "run"), "--max-steps", "48"] + sets(*TINY_SAMPLERNN, "train.val_interval=24",
                                                               "train.checkpoint_interval=24", "train.lr=1e-2")) == 0
    return root


def untrained_copy(run, folder):
    """A model folder of the run's exact config with its initial (random) weights."""
    config = load_json(run / "best" / "config.json")
    torch.manual_seed(config["train"]["seed"])
    return save_model(build_model(config), config, folder)


def eval_json(model, corpus, capsys, *extra):
    capsys.readouterr()
    assert main(["-q", "eval", str(model), "--data", str(corpus), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_prep_lists_the_broken_file_and_keeps_the_rest(trained):
    manifest = json.loads((trained / "corpus" / "manifest.json").read_text())
    assert [s["path"].endswith("broken.wav") for s in manifest["skipped"]] == [True]
    assert len(manifest["files"]) == 4 and manifest["sample_rate"] == 16000
    assert {f["split"] for f in manifest["files"]} == {"train", "val", "test"}


def test_render_is_reproducible_and_seed_dependent(trained, capsys):
    out = trained / "renders"
    args = ["-q", "render", str(trained / "run"), "--seconds", "0.5", "--streams", "2"]
    assert main(args + ["--out", str(out / "a"), "--seed", "7"]) == 0
    assert main(args + ["--out", str(out / "b"), "--seed", "7", "--block-seconds", "0.13"]) == 0
    assert main(args + ["--out", str(out / "c"), "--seed", "8"]) == 0
    printed = capsys.readouterr().out.split()
    assert str(out / "a" / "stream_000.wav") in printed
    for name in ("stream_000.wav", "stream_001.wav"):
        assert digest(out / "a" / name) == digest(out / "b" / name)
        assert digest(out / "a" / name) != digest(out / "c" / name)
    assert digest(out / "a" / "stream_000.wav") != digest(out / "a" / "stream_001.wav")
    audio, rate = sf.read(out / "a" / "stream_000.wav")
    assert rate == 16000 and len(audio) == 8000 and np.abs(audio).max() > 0


def test_render_continues_a_prime_of_any_rate_and_channels(trained):
    prime = write_audio_file(trained / "prime.wav", np.stack([melody(1, 48000, seed=9)] * 2, 1), 48000)
    out = trained / "primed"
    assert main(["-q", "render", str(trained / "run" / "best"), "--seconds", "0.25", "--out", str(out),
                 "--prime", str(prime), "--prime-seconds", "0.1", "--format", "flac"]) == 0
    audio, rate = sf.read(out / "stream_000.flac")
    assert rate == 16000 and len(audio) == 4000
    plain = trained / "unprimed"
    main(["-q", "render", str(trained / "run"), "--seconds", "0.25", "--out", str(plain), "--format", "flac"])
    assert not np.array_equal(audio, sf.read(plain / "stream_000.flac")[0])


def test_eval_nll_beats_the_unigram_entropy_and_the_untrained_model(trained, capsys):
    result = eval_json(trained / "run", trained / "corpus", capsys, "--split", "test")
    untrained = eval_json(untrained_copy(trained / "run", trained / "untrained"), trained / "corpus", capsys,
                          "--split", "test")
    assert result["samples"] == untrained["samples"] > 0
    assert 0 < result["unigram_entropy_bits"] <= 8
    # 48 steps: under 7.2 bits against 7.36 for the histogram of the test codes and ~8.9 untrained (the
    # fan-in init starts with confident logits, so it needs more steps than 24 to pass the histogram)
    assert result["nll_bits_per_sample"] < result["unigram_entropy_bits"] - 0.2
    assert result["nll_bits_per_sample"] < untrained["nll_bits_per_sample"] - 0.8


def test_info_describes_a_run_its_checkpoints_and_a_preset(trained, capsys):
    def info(*args):
        capsys.readouterr()
        assert main(["info", *args, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    best = info(str(trained / "run"))
    assert best["model_type"] == "samplernn" and best["frame_sizes"] == [16, 4]
    assert best["sample_rate"] == 16000 and best["parameters"] > 1000
    assert best["backends"]["torch"] == "available" and best["model"] == str(trained / "run" / "best")
    last = info(str(trained / "run"), "--checkpoint", "last")
    assert last["model"].endswith("step_48 (step 48)") and last["parameters"] == best["parameters"]
    assert info(str(trained / "run"), "--checkpoint", "step_24")["model"].endswith("(step 24)")
    preset = info("wavenet-tiny")
    assert preset["model"] == "preset wavenet-tiny (random weights)"
    assert preset["sample_rate"] == resolve_preset("wavenet-tiny")["data"]["sample_rate"]


def one_error_line(capsys, command) -> str:
    """The error a command printed: one line, the last on stderr (warnings may come before it)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines[-1].startswith(f"wavegen {command}: error: "), lines
    assert sum(line.startswith("wavegen ") for line in lines) == 1, lines
    return lines[-1]


def test_user_errors_are_one_line_with_exit_code_2(trained, tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.wav").write_bytes(b"garbage")
    assert main(["-q", "prep", str(tmp_path / "junk"), str(tmp_path / "c")]) == 2
    line = one_error_line(capsys, "prep")
    assert "no usable audio" in line and str(tmp_path / "junk" / "x.wav") in line
    (tmp_path / "taken").write_text("a file")
    assert main(["prep", str(trained / "recordings"), str(tmp_path / "taken")]) == 2
    assert f"{tmp_path / 'taken'} is a file, not a folder" in one_error_line(capsys, "prep")
    assert main(["render", str(tmp_path / "nothing"), "--seconds", "1", "--out", str(tmp_path / "o")]) == 2
    assert str(tmp_path / "nothing") in one_error_line(capsys, "render")
    assert main(["train", "--data", str(trained / "corpus"), "--model", "samplernn-huge", "--run",
                 str(tmp_path / "r")]) == 2
    assert "samplernn-huge: no such preset, model folder or run folder" in one_error_line(capsys, "train")
    assert main(["render", str(trained / "run"), "--seconds", "1", "--out", str(tmp_path / "o"),
                 "--label", "metal"]) == 2
    assert "not trained with labels" in one_error_line(capsys, "render")
    assert main(["info", str(trained / "run"), "--checkpoint", "step_7"]) == 2
    line = one_error_line(capsys, "info")
    assert "step_7" in line and "step_24" in line  # what was asked, and what there is


def test_a_device_or_config_that_cannot_work_is_one_line_before_any_work(trained, tmp_path, capsys):
    corpus = str(trained / "corpus")
    bad_devices = [("bogus", "not a device (cpu, cuda or cuda:N)"), ("mps", "wavegen runs on cpu or cuda")]
    if not torch.cuda.is_available():
        bad_devices.append(("cuda", "no CUDA GPU is available here"))
    for device, message in bad_devices:
        out = tmp_path / "out"
        for command in (["eval", str(trained / "run"), "--data", corpus], ["bench", "--model", "samplernn-tiny"],
                        ["render", str(trained / "run"), "--seconds", "1", "--out", str(out)],
                        ["bench", "--train", "--model", "samplernn-tiny"], ["serve", str(trained / "run")]):
            assert main(command + ["--device", device]) == 2
            assert f"--device {device}: {message}" in one_error_line(capsys, command[0])
        assert not out.exists()  # refused before the render made its folder
    config = load_json(trained / "run" / "best" / "config.json")
    damaged = {"empty": {}, "a list": [1, 2], "no model": {k: v for k, v in config.items() if k != "model"},
               "rate as text": {**config, "data": {**config["data"], "sample_rate": "abc"}},
               "rate 0": {**config, "data": {**config["data"], "sample_rate": 0}}}
    for name, content in damaged.items():
        folder = tmp_path / name
        shutil.copytree(trained / "run" / "best", folder)
        (folder / "config.json").write_text(json.dumps(content))
        for command in (["info", str(folder)], ["eval", str(folder), "--data", corpus]):
            assert main(command) == 2, name
            line = one_error_line(capsys, command[0])
            assert str(folder / "config.json") in line, name
            assert ("not a wavegen model config" if "rate" not in name else "is not a sample rate") in line


def test_a_bug_keeps_its_traceback_and_a_user_error_does_not(trained, tmp_path):
    """Real processes: a plain RuntimeError deep inside prep (as a torch or numpy failure would be)
    is a bug and shows its traceback; a user error is one line, exit code 2."""
    bug = ("import sys, wavegen.prep_decode\n"
           "def split_on_silence(*args, **kwargs):\n"
           "    raise RuntimeError('a bug deep inside prep')\n"
           "wavegen.prep_decode.split_on_silence = split_on_silence\n"
           "from wavegen.cli import main\n"
           "sys.exit(main(sys.argv[1:]))\n")
    rec = str(trained / "recordings")
    out = subprocess.run([sys.executable, "-c", bug, "prep", rec, str(tmp_path / "c")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "Traceback (most recent call last)" in out.stderr and "in decode_one" in out.stderr
    assert out.stderr.strip().endswith("RuntimeError: a bug deep inside prep") and "error:" not in out.stderr
    (tmp_path / "taken").write_text("a file")
    out = subprocess.run([sys.executable, "-m", "wavegen", "prep", rec, str(tmp_path / "taken")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"wavegen prep: error: {tmp_path / 'taken'} is a file, not a folder: give a folder for the corpus"]


def test_console_script_and_module_entry_points(trained):
    exe = shutil.which("wavegen")
    assert exe, "the wavegen console script is not installed (pip install -e .)"
    for cmd in ([exe], [sys.executable, "-m", "wavegen"]):
        out = subprocess.run(cmd + ["info", "--presets"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "samplernn-3tier" in out.stdout


def test_the_program_entry_freezes_what_is_left_for_its_exit_and_still_runs_the_exit_handlers(tmp_path):
    """``run`` (the console script's and ``python -m wavegen``'s entry) returns main's exit status with the objects
    left frozen out of the collector (gc.freeze: the exit's collections skip them), and the exit handlers still run
    after it: one registered before the command records the frozen count as the interpreter exits."""
    mark = tmp_path / "exit_handler_ran"
    script = ("import atexit, gc, os, pathlib, sys\n"
              "from wavegen.cli import run\n"
              "atexit.register(lambda: pathlib.Path(os.environ['MARK']).write_text(str(gc.get_freeze_count())))\n"
              "raise SystemExit(run())\n")
    out = subprocess.run([sys.executable, "-c", script, "info", "--presets"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "MARK": str(mark)})
    assert out.returncode == 0 and "samplernn-3tier" in out.stdout, out.stderr
    assert int(mark.read_text()) > 1000, mark.read_text()


def test_a_reader_that_stops_reading_is_no_traceback():
    """``wavegen info --presets --json | head -c 300``: a BrokenPipeError traceback. (The pipe's reading
    end closes before the command writes: every write fails, as after head's exit.)"""
    proc = subprocess.Popen([sys.executable, "-m", "wavegen", "info", "--presets", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(120) == 141 and err == "", err


# ----- WaveNet through the trainer, render, eval, info ---------------------------------------------

@pytest.fixture(scope="module")
def trained_wavenet(tmp_path_factory):
    """A tiny WaveNet trained 20 steps, with its corpus: (run folder, corpus folder, config)."""
    root = tmp_path_factory.mktemp("wavenet")
    corpus = prepared_corpus(root, files=4, seconds=3.0, sample_rate=8000, val_fraction=0.25,
                             test_fraction=0.25)
    config = resolve_run_config(resolve_preset("wavenet-tiny"), corpus, TINY_WAVENET + ["train.max_steps=20"])
    train(config, root / "run", progress=False)
    return root / "run", corpus, config


def test_wavenet_training_lowers_the_loss_and_saves_a_model(trained_wavenet):
    run, corpus, config = trained_wavenet
    rows = [r for r in read_metrics(run) if "loss_bits" in r]
    assert [r["step"] for r in rows] == list(range(1, 21))
    first, last = np.mean([r["loss_bits"] for r in rows[:3]]), np.mean([r["loss_bits"] for r in rows[-3:]])
    assert first > 5.5  # ~log2(64) bits at the start
    assert last < first - 0.25
    model, saved = load_model(run)
    assert isinstance(model, WaveNet) and saved == config
    assert saved["model_type"] == "wavenet" and saved["model"]["layers"] == 5


def test_wavenet_resume_continues_like_an_uninterrupted_run(trained_wavenet, tmp_path):
    """Train 10 steps, stop, rerun to 20: the losses of steps 11..20 match the 20-step run."""
    run, corpus, config = trained_wavenet
    half = json.loads(json.dumps(config))
    half["train"]["max_steps"] = 10
    train(half, tmp_path / "run", progress=False)
    train(config, tmp_path / "run", progress=False)
    want = {r["step"]: r["loss_bits"] for r in read_metrics(run) if "loss_bits" in r}
    got = {r["step"]: r["loss_bits"] for r in read_metrics(tmp_path / "run") if "loss_bits" in r}
    assert sorted(got) == list(range(1, 21))
    for step in range(11, 21):
        assert got[step] == pytest.approx(want[step], abs=1e-5), step


def test_wavenet_cli_render_with_prime_and_eval(trained_wavenet, tmp_path, capsys):
    run, corpus, config = trained_wavenet
    sr = 8000
    prime = write_audio_file(tmp_path / "prime.wav", 0.3 * np.sin(np.arange(sr // 2) * 0.05), 22050)
    outs = []
    for name, extra in (("a", []), ("b", []), ("primed", ["--prime", str(prime), "--prime-seconds", "0.1"])):
        assert main(["-q", "render", str(run), "--seconds", "0.1", "--out", str(tmp_path / name),
                     "--seed", "3", "--backend", "torch", *extra]) == 0
        audio, rate = sf.read(tmp_path / name / "stream_000.wav", dtype="float32")
        assert rate == sr and audio.shape == (800,) and np.all(np.isfinite(audio))
        outs.append(audio)
    assert np.array_equal(outs[0], outs[1])  # the same seed: the same audio
    assert not np.array_equal(outs[0], outs[2])  # the prime changes what follows
    result = eval_json(run, corpus, capsys, "--split", "val")
    untrained = eval_json(untrained_copy(run, tmp_path / "untrained"), corpus, capsys, "--split", "val")
    val_samples = int(Corpus(corpus).segments("val")[:, 1].sum())
    assert result["samples"] == untrained["samples"] == val_samples > 0  # every sample of every segment
    # 20 steps: about 5.2 bits against 5.5 for the histogram of the val codes and 6.0 untrained
    assert result["nll_bits_per_sample"] < result["unigram_entropy_bits"] - 0.15
    assert result["nll_bits_per_sample"] < untrained["nll_bits_per_sample"] - 0.5


def test_wavenet_info_shows_receptive_field_in_samples_and_seconds(trained_wavenet, capsys):
    run, _, _ = trained_wavenet
    rf = 1 + 2 + 4 + 8 + 1 + 1  # dilations 1 2 4 8 1
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"receptive_field: {rf} samples = {rf / 8000:.4f} s at 8000 Hz" in out
    assert "dilations: 1 x 1..8 + 1" in out


def test_info_presets_json_is_json(capsys):
    """``info --presets --json`` printed the text table."""
    capsys.readouterr()
    assert main(["info", "--presets", "--json"]) == 0
    presets = json.loads(capsys.readouterr().out)
    assert sorted(presets) == sorted(preset_names())
    tiny = presets["wavenet-tiny"]
    assert tiny["model_type"] == "wavenet" and tiny["layers"] == 12 and 0 < tiny["parameters"] < 10**6
    assert tiny["sample_rate"] == resolve_preset("wavenet-tiny")["data"]["sample_rate"]
    assert presets["samplernn-tiny"]["frame_sizes"] == [16, 4]


def test_v_and_q_work_after_the_command_as_before_it(tmp_path, capsys):
    """`wavegen info x -v` was "unrecognized arguments: -v": the options went before the command only."""
    missing = str(tmp_path / "nothere")
    for argv in (["-v", "info", missing], ["info", missing, "-v"], ["info", "--verbose", missing]):
        with pytest.raises(WavegenError, match="no such preset, model folder or run folder"):
            main(argv)  # -v: the error is raised (its traceback shown), not printed as one line
    for argv in (["info", missing], ["-q", "info", missing], ["info", missing, "-q"]):
        assert main(argv) == 2
        assert capsys.readouterr().err.startswith("wavegen info: error: ")
    out = subprocess.run([sys.executable, "-m", "wavegen", "info", missing, "-v"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1 and "Traceback (most recent call last)" in out.stderr
    assert "unrecognized arguments" not in out.stderr


@pytest.mark.parametrize("argv, unknown", [(["bench", "--model", "samplernn-tiny", "--seconds", "-1"], "--seconds -1"),
                                           (["info", "samplernn-tiny", "--bogus"], "--bogus")])
def test_an_unknown_option_is_refused_naming_the_command(argv, unknown, capsys):
    """An option the command does not have: its own usage and error, as for its other mistakes (was wavegen's usage
    and "wavegen: error: unrecognized arguments: ...", which named no command)."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(f"usage: wavegen {argv[0]} ")
    assert err.splitlines()[-1] == f"wavegen {argv[0]}: error: unrecognized arguments: {unknown}"


# ----- cli.options.check_output_file: an output that cannot be written, refused before the work --------

@pytest.mark.parametrize("target", ["/sys/kernel/wavegen-out.json", "/proc/wavegen-out.json"])
def test_an_output_folder_that_takes_no_file_is_refused_even_for_root(target):
    """os.access says root may write anywhere, /sys and /proc included, where no file can be made:
    the check tries to make one, and refuses the path up front, naming it."""
    from pathlib import Path

    from wavegen.cli.options import check_output_file
    from wavegen.config import ConfigError

    if not Path(target).parent.is_dir():
        pytest.skip(f"no {Path(target).parent} here")
    with pytest.raises(ConfigError, match=f"--json {target}: its folder {Path(target).parent} takes no new file"):
        check_output_file(target, "--json", "out.json")
    assert not Path(target).exists()


def test_an_output_under_a_regular_file_is_refused_and_an_existing_output_is_untouched(tmp_path):
    """A path whose parent is a regular file is refused naming the file; an output file that is there
    already keeps its bytes and time stamp through the check, and no probe file is left beside it."""
    import os

    from wavegen.cli.options import check_output_file
    from wavegen.config import ConfigError

    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=f"--json {blocker / 'out.json'}: {blocker} is a file, not a folder"):
        check_output_file(blocker / "out.json", "--json", "out.json")
    existing = tmp_path / "results" / "out.json"
    existing.parent.mkdir()
    existing.write_text('{"kept": true}')
    os.utime(existing, (1_000_000_000, 1_000_000_000))
    check_output_file(existing, "--json", "out.json")
    assert existing.read_text() == '{"kept": true}'
    assert existing.stat().st_mtime == 1_000_000_000
    assert sorted(p.name for p in existing.parent.iterdir()) == ["out.json"]


def test_a_result_naming_a_folder_in_bytes_that_are_not_utf8_prints_where_stdout_is_strict(tmp_path):
    """info of a model in a Latin-1 folder with PYTHONIOENCODING=utf-8 (strict, as most UTF-8 locales but
    C.UTF-8): the result line crashed with UnicodeEncodeError; the name prints as its bytes, as ls does."""
    from conftest import save_tiny_model

    folder = tmp_path / os.fsdecode(b"r\xe9un")
    save_tiny_model(folder / "best")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run([sys.executable, "-m", "wavegen", "info", str(folder)], capture_output=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"r\xe9un" in proc.stdout
