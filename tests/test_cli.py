"""The command line as a person uses it: prep → train → render → eval → info."""

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import TINY_SAMPLERNN, melody, write_audio_file

from wavegen.cli import main


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
                 str(root / "run"), "--max-steps", "12"] + sets(*TINY_SAMPLERNN, "train.val_interval=6")) == 0
    return root


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


def test_eval_prints_nll_json(trained, capsys):
    capsys.readouterr()
    assert main(["eval", str(trained / "run"), "--data", str(trained / "corpus"), "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] > 0
    assert 0 < result["nll_bits_per_sample"] < 8.5
    assert 0 < result["unigram_entropy_bits"] <= 8


def test_info_describes_the_model(trained, capsys):
    capsys.readouterr()
    assert main(["info", str(trained / "run"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model_type"] == "samplernn" and info["frame_sizes"] == [16, 4]
    assert info["sample_rate"] == 16000 and info["parameters"] > 1000
    assert info["backends"]["torch"] == "available"


def test_errors_are_clear_and_exit_non_zero(trained, tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.wav").write_bytes(b"garbage")
    assert main(["prep", str(tmp_path / "junk"), str(tmp_path / "c")]) == 2
    assert "no usable" in capsys.readouterr().err.lower()
    assert main(["render", str(tmp_path / "nothing"), "--seconds", "1", "--out", str(tmp_path / "o")]) == 2
    assert "no such model or run folder" in capsys.readouterr().err
    assert main(["train", "--data", str(trained / "corpus"), "--model", "samplernn-huge", "--run",
                 str(tmp_path / "r")]) == 2
    assert "unknown model preset 'samplernn-huge'" in capsys.readouterr().err
    assert main(["render", str(trained / "run"), "--seconds", "1", "--out", str(tmp_path / "o"),
                 "--label", "metal"]) == 2
    assert "not trained with labels" in capsys.readouterr().err


def test_console_script_and_module_entry_points(trained):
    exe = shutil.which("wavegen")
    assert exe, "the wavegen console script is not installed (pip install -e .)"
    for cmd in ([exe], [sys.executable, "-m", "wavegen"]):
        out = subprocess.run(cmd + ["info", "--presets"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "samplernn-3tier" in out.stdout
