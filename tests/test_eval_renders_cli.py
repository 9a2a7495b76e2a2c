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


def test_undecodable_renders_are_skipped_and_counted_in_the_report_and_json(album, tmp_path, capsys):
    """40 renders and one broken file: the others are judged; the table's header and a line per file say
    what was skipped and why, and the JSON lists them; a folder of nothing readable is one line, exit 2."""
    corpus, renders = album
    folder = tmp_path / "renders"
    folder.mkdir()
    (folder / "take1.wav").write_bytes((renders / "take1.wav").read_bytes())
    (folder / "take2.wav").write_text("not audio but text\n")
    assert main(["-q", "eval", "--renders", str(folder), "--data", str(corpus), "--max-seconds", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"renders {folder} (1 file; 1 skipped, see below) against the test")
    assert "\nskipped take2.wav: cannot decode audio (" in out
    assert main(["-q", "eval", "--renders", str(folder), "--data", str(corpus), "--max-seconds", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["render_files"] == ["take1.wav"]
    assert [s["file"] for s in result["skipped_files"]] == ["take2.wav"]
    (folder / "take1.wav").unlink()
    assert main(["-q", "eval", "--renders", str(folder), "--data", str(corpus), "--max-seconds", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{folder}: no audio file can be analysed (take2.wav: cannot decode audio" in err and "\n" not in err


def test_a_folder_of_render_folders_names_them_and_json_with_a_file_name_writes_it(album, tmp_path, capsys):
    """--renders given the folder above two render folders: "no audio files" now names the subfolders
    that hold some. --json out.json took out.json for the model ("no such preset"), then was refused: now
    --json FILE writes the JSON there (as bench's does) and the table prints; a run folder after a bare
    --json is the model, not the file."""
    corpus, renders = album
    for take in ("take_a", "take_b"):
        (tmp_path / "all" / take).mkdir(parents=True)
        (tmp_path / "all" / take / "stream_000.wav").write_bytes((renders / "take1.wav").read_bytes())
    assert main(["-q", "eval", "--renders", str(tmp_path / "all"), "--data", str(corpus)]) == 2
    err = capsys.readouterr().err
    assert "no audio files (.wav" in err and "its subfolders take_a, take_b hold audio files: give one of them" in err
    out = tmp_path / "out" / "compare.json"
    assert main(["-q", "eval", "--renders", str(renders), "--data", str(corpus), "--max-seconds", "2",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"renders {renders} (") and "{" not in printed  # the table, not the JSON
    result = json.loads(out.read_text())
    assert result["model"] is None and result["render_files"] and result["split"] == "test"


def test_a_ctrl_c_inside_numba_is_an_interrupt_not_a_system_error(monkeypatch, capsys):
    """Ctrl-C during pyin (librosa's numba _viterbi loading its cache), or inside a numba engine's call, came out
    of the command as "SystemError: CPUDispatcher(...) returned a result with an exception set", a traceback and
    exit 1: the CLI takes the KeyboardInterrupt it holds as such ("interrupted", 130); another SystemError stays."""
    from wavegen import cli

    def numba_like(cause):
        try:
            raise cause
        except BaseException as err:
            raise SystemError("CPUDispatcher(<function _viterbi>) returned a result with an exception set") from err

    causes = [KeyboardInterrupt(), ValueError("a bug")]
    monkeypatch.setattr(cli.COMMANDS["info"], "run", lambda args: numba_like(causes.pop(0)))
    assert cli.main(["info"]) == 130 and capsys.readouterr().err == "wavegen info: interrupted\n"
    with pytest.raises(SystemError):
        cli.main(["info"])


def test_a_models_corpus_prepared_again_since_is_said_when_taken_as_the_album(album, tmp_path, capsys, caplog):
    """`eval RUN --renders DIR` takes the corpus its config names: prepared again since from other recordings,
    it is not the album the model learnt, and the renders were judged against it without a word."""
    from wavegen.corpus import Corpus

    corpus, renders = album
    model = save_tiny_model(tmp_path / "model", sample_rate=SR, dim=16, emb_size=8)
    config = json.loads((model / "config.json").read_text())
    for corpus_id, said in ((Corpus(corpus).content_id, False), ("0123456789abcdef", True)):
        config["data"].update(corpus=str(corpus), corpus_id=corpus_id)
        (model / "config.json").write_text(json.dumps(config))
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert main(["eval", str(model), "--renders", str(renders), "--max-seconds", "1"]) == 0
        capsys.readouterr()
        warning = (f"{corpus}: the corpus {model} was trained on has been prepared again since (corpus id "
                   f"0123456789abcdef then, {Corpus(corpus).content_id} now)")
        assert (warning in caplog.text) == said, caplog.text
