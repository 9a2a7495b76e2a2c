"""Audio at a stream's name that no snapshot vouches for (shard's _refuse_unvouched_audio): a render that has
started (.state/params.json) but has no snapshot of its own, beside a stream file holding audio. Its snapshots
were removed, or another program wrote the file: refused in one line naming the file and what to do, saying "this
render's" only where a mark (a FLAC render's, left with its first snapshot) vouches for it; nothing overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from render_helpers import SR, make_model, render_cli, settings
from wavegen.render import render


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def params(model, tmp_path_factory) -> dict:
    """format → the parameters a 0.125 s render of ``model`` records (from a finished render's report)."""
    got = {}
    for fmt in ("wav", "flac"):
        out = tmp_path_factory.mktemp(fmt) / "out"
        render(model, out, settings(0.125, format=fmt), progress=False)
        got[fmt] = json.loads((out / "render_report.json").read_text())["params"]
    return got


def started(tmp_path, params: dict) -> Path:
    """A render folder of ``params`` that started and saved no snapshot: .state/params.json alone."""
    out = tmp_path / "out"
    (out / ".state").mkdir(parents=True)
    (out / ".state" / "params.json").write_text(json.dumps(params, indent=1))
    return out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def noise(seconds: float) -> np.ndarray:
    return (np.random.default_rng(1).standard_normal(int(seconds * SR)) * 3000).astype(np.int16)


def test_a_wav_another_program_wrote_is_not_said_to_be_this_renders_audio(model, params, tmp_path, capsys):
    """It was said "holds 0.5 s of this render's audio, but its snapshots ... are gone": no snapshot ever was."""
    out = started(tmp_path, params["wav"])
    wav = out / "stream_000.wav"
    sf.write(wav, noise(0.5), SR, subtype="PCM_16")  # mono, the render's rate and format
    before = wav.read_bytes()
    capsys.readouterr()
    assert render_cli(model, out) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"wavegen render: error: {wav} holds 0.5 s of audio (a mono {SR} Hz 16-bit WAV, as this "
                           "render writes), but there is no snapshot (rank0.npz and rank0.prev.npz under "), line
    assert "this render's audio" not in line and "but its snapshots" not in line
    assert "if this render wrote it, its snapshots are gone (put them back to resume it)" in line
    assert f"if another program did, move it out of {out} to keep it" in line and "--restart" in line
    assert wav.read_bytes() == before


@pytest.mark.parametrize("marked", [False, True])
def test_a_finished_flac_is_said_this_renders_only_where_its_mark_vouches(model, params, tmp_path, capsys, marked):
    out = started(tmp_path, params["flac"])
    flac = out / "stream_000.flac"
    sf.write(flac, noise(0.125), SR, subtype="PCM_16")
    if marked:  # the mark a FLAC render's first snapshot leaves
        (out / ".state" / "rank0.snapshotted").write_bytes(b"")
    before = flac.read_bytes()
    capsys.readouterr()
    assert render_cli(model, out, "--format", "flac") == 2
    line = one_error_line(capsys)
    if marked:
        assert line.startswith(f"wavegen render: error: {flac} is this render's finished stream, but its snapshots "
                               "rank0.npz and rank0.prev.npz under "), line
        assert "are gone, so it cannot be resumed" in line
    else:
        assert line.startswith(f"wavegen render: error: {flac} is a FLAC file where this render writes a stream, but "
                               "there is no snapshot (rank0.npz and rank0.prev.npz under "), line
        assert "this render's finished" not in line and f"move it out of {out} to keep it" in line
    assert "--restart" in line and flac.read_bytes() == before
