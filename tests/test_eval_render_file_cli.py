"""`wavegen eval --renders FILE`: one render file is judged alone (it was refused: "give the folder")."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tone, write_audio_file
from test_eval_renders_cli import album  # noqa: F401  (the fixture: a corpus and one render)

from wavegen.cli import main

pytest.importorskip("librosa")

SR = 8000


def test_one_render_file_is_judged_alone_not_its_folder(album, tmp_path, capsys):  # noqa: F811
    corpus, renders = album
    folder = tmp_path / "renders"
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, SR).astype(np.float32)
    write_audio_file(folder / "a_noise.wav", noise, SR)  # in the folder, not judged
    one = write_audio_file(folder / "b_tone.wav", tone(1.0, SR), SR)
    (folder / "c_broken.wav").write_text("not audio\n")  # never read: only the file named is judged
    args = ["-q", "eval", "--renders", str(one), "--data", str(corpus), "--max-seconds", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"render file {one} (it alone) against the test split of {corpus}"
    assert "skipped" not in out
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["render_files"] == ["b_tone.wav"] and result["skipped_files"] == []
    assert result["renders_dir"] == str(one)
    # the same audio as the folder holding it alone: the same numbers
    assert main(["-q", "eval", "--renders", str(renders), "--data", str(corpus), "--max-seconds", "1", "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert alone["sets"]["renders"] == result["sets"]["renders"]


def test_a_file_that_is_no_audio_is_refused_naming_it(album, tmp_path, capsys):  # noqa: F811
    corpus, _ = album
    notes = tmp_path / "notes.txt"
    notes.write_text("a render's notes\n")
    assert main(["-q", "eval", "--renders", str(notes), "--data", str(corpus)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"wavegen eval: error: {notes}: not an audio file (.wav, .flac") and \
        err.endswith("give a render's audio file or the folder of renders"), err
