"""`wavegen eval --renders` at its edges: bad --plot and --max-seconds said before the renders are analysed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import prepared_corpus, save_tiny_model, tone, write_audio_file

from wavegen.cli import main

SR = 8000


@pytest.fixture(scope="module")
def album(tmp_path_factory):
    """(corpus, renders folder of one 1 s tone)."""
    root = tmp_path_factory.mktemp("album")
    corpus = prepared_corpus(root, files=4, seconds=2.0, sample_rate=SR, val_fraction=0.25, test_fraction=0.25)
    write_audio_file(root / "renders" / "take1.wav", tone(1.0, SR), SR)
    return corpus, root / "renders"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, a folder that takes no new file")
def test_a_plot_folder_that_takes_no_file_is_refused_before_the_analysis(album, capsys, caplog):
    """/proc passes os.access as root, yet no file can be made there: refused at once, not after the
    analysis with a traceback (which lost the comparison)."""
    corpus, renders = album
    with caplog.at_level("INFO"):
        code = main(["eval", "--renders", str(renders), "--data", str(corpus), "--plot", "/proc/compare.png"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "--plot /proc/compare.png: its folder /proc takes no new file" in err
    assert out == "" and "analysing" not in caplog.text


def test_max_seconds_too_short_to_analyse_is_refused_before_the_renders_are_read(album, tmp_path, capsys):
    corpus, _ = album
    (tmp_path / "broken.wav").write_bytes(b"RIFF not audio")  # reading the renders would fail on it first
    assert main(["eval", "--renders", str(tmp_path), "--data", str(corpus), "--max-seconds", "0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--max-seconds 0.1: the analysis needs at least 0.25 s of audio per set"), err


def test_a_model_whose_corpus_is_gone_asks_for_data(album, tmp_path, capsys):
    """--renders without --data takes the model's corpus from its config: where that corpus is gone, the
    error says where the path came from and what to give, not only "not a prepared corpus"."""
    corpus, renders = album
    model = save_tiny_model(tmp_path / "model", sample_rate=SR, dim=16, emb_size=8)
    config = json.loads((model / "config.json").read_text())
    config["data"]["corpus"] = str(tmp_path / "moved")
    (model / "config.json").write_text(json.dumps(config))
    assert main(["eval", str(model), "--renders", str(renders)]) == 2
    err = capsys.readouterr().err
    assert f"the corpus it was trained on, {tmp_path / 'moved'} (its config's data.corpus), is no prepared " \
           "corpus now (no manifest.json): give --data CORPUS" in err
