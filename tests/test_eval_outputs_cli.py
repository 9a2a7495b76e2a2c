"""`wavegen eval --renders` and its output files: --plot replaces only a plot of an earlier eval, and the
folders eval made for --plot and --json FILE go again when it stops before writing there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import tone, write_audio_file
from test_eval_renders_cli import album  # noqa: F401  (the fixture: a corpus and one render)

from wavegen.cli import main

pytest.importorskip("librosa")
pytest.importorskip("matplotlib")

SR = 8000


def _eval(album, *extra: str) -> int:
    corpus, renders = album
    return main(["-q", "eval", "--renders", str(renders), "--data", str(corpus), "--max-seconds", "1", *extra])


def test_a_plot_replaces_an_earlier_plot_but_never_a_users_picture(album, tmp_path, capsys, caplog):
    """--plot FILE wrote over whatever was at FILE (a user's own PNG lost). A plot is marked in its metadata
    (a PNG's tEXt chunk) and only a file so marked, or an empty one, is replaced; anything else is refused
    before the analysis, the file left as it was."""
    from PIL import Image

    from wavegen.plotting import COMPARISON_MARK, holds_mark

    theirs = tmp_path / "holiday.png"
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(theirs)
    before = theirs.read_bytes()
    with caplog.at_level("INFO"):
        assert main(["eval", "--renders", str(album[1]), "--data", str(album[0]), "--plot", str(theirs)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"wavegen eval: error: --plot {theirs}: holds a picture or file that wavegen eval --plot did not draw; not "
        f"overwritten: give --plot a new file name (or remove {theirs} first)")
    assert theirs.read_bytes() == before and "analysing" not in caplog.text
    ours = tmp_path / "compare.png"
    ours.write_bytes(b"")  # empty: nothing to lose
    for _ in range(2):  # made, then replaced: an earlier plot is known by its mark
        assert _eval(album, "--plot", str(ours)) == 0
        assert capsys.readouterr().out.rstrip().endswith(f"plot: {ours}")
        assert holds_mark(ours, COMPARISON_MARK) and Image.open(ours).text["Description"] == COMPARISON_MARK
    assert not holds_mark(theirs, COMPARISON_MARK)


def test_only_formats_that_carry_a_mark_are_replaced(album, tmp_path, capsys):
    """An SVG, PDF or EPS plot carries the mark too; a JPEG cannot, so a JPEG already there is never replaced
    (it may be a photo), and the error says which formats can be."""
    from wavegen.plotting import COMPARISON_MARK, holds_mark

    svg = tmp_path / "compare.svg"  # every marked format: tests/test_plotting.py
    assert _eval(album, "--plot", str(svg)) == 0 and _eval(album, "--plot", str(svg)) == 0
    assert holds_mark(svg, COMPARISON_MARK)
    capsys.readouterr()
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 a user's photo")
    assert _eval(album, "--plot", str(photo)) == 2
    assert "a .jpg picture carries no mark of what drew it (a .png, .svg, .pdf or .eps does)" in capsys.readouterr().err
    assert photo.read_bytes() == b"\xff\xd8\xff\xe0 a user's photo"


def test_folders_made_for_the_outputs_go_when_eval_stops_before_writing_there(album, tmp_path, capsys):
    """--plot and --json FILE have their folders made before the analysis (so that one that cannot be written
    is said at once): an eval that then stopped (an error, a Ctrl-C) left them behind. Those it made go; a
    folder that was there stays, and so does anything in it."""
    corpus, _ = album
    empty = tmp_path / "no_audio"
    empty.mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine\n")
    plot, json_out = tmp_path / "mine" / "plots" / "a" / "compare.png", tmp_path / "out" / "b" / "compare.json"
    assert main(["-q", "eval", "--renders", str(empty), "--data", str(corpus), "--plot", str(plot),
                 "--json", str(json_out)]) == 2
    assert "no audio files" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "no_audio"]
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    assert _eval(album, "--plot", str(plot), "--json", str(json_out)) == 0  # written: kept
    assert plot.is_file() and json_out.is_file()


@pytest.mark.slow  # a subprocess importing librosa and torch: ~9 s on a busy 2-core machine
def test_a_ctrl_c_during_the_analysis_removes_the_plot_folder_it_made(album, tmp_path):
    """A real SIGINT while eval analyses (a subprocess; librosa imported before, so that the signal lands in
    the analysis, not in an import): exit 130, and the --plot folder it made is gone."""
    import os
    import signal
    import subprocess
    import sys

    corpus, _ = album
    renders = tmp_path / "renders"
    write_audio_file(renders / "long.wav", tone(60.0, SR), SR)  # a minute: seconds of analysis to land in
    plot = tmp_path / "made" / "compare.png"
    argv = ["eval", "--renders", str(renders), "--data", str(corpus), "--plot", str(plot)]
    code = ("import librosa, librosa.feature, librosa.onset, matplotlib.figure, sys; from wavegen.cli import main; "
            "raise SystemExit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, text=True)
    seen = []
    for line in proc.stdout:  # "analysing renders: ...": the folder is made and the analysis under way
        seen.append(line)
        if line.startswith("analysing renders"):
            assert (tmp_path / "made").is_dir()
            proc.send_signal(signal.SIGINT)
            break
    out = "".join(seen) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 130 and "wavegen eval: interrupted" in out, out
    assert not (tmp_path / "made").exists()
