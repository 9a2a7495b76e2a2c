"""The --run folder a training may write in: not the corpus folder (nor one inside it), not another prepared
corpus, not a folder of recordings or renders. Each was trained into: the run's files mixed with the corpus's,
and the run's samples (WAV) with the recordings, which the next `wavegen prep` of that folder took for
recordings, the model's own output in its next corpus. Each is one line naming the folder, exit code 2, and
nothing is written there; a folder of other files is trained into as before."""

import shutil

import pytest
from conftest import TINY_SAMPLERNN

from wavegen.cli import main


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _train(corpus, run, *extra):
    args = ["-q", "train", "--data", str(corpus), "--model", "samplernn-tiny", "--run", str(run), "--max-steps", "1",
            "--threads", "1", *extra]
    return main(args + [a for s in TINY_SAMPLERNN for a in ("--set", s)])


def _refused(capsys, corpus, run, says):
    capsys.readouterr()
    assert _train(corpus, run) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err and f"--run {run}" in err, err


def test_the_corpus_folder_and_a_folder_inside_it_are_refused(tiny_corpus, capsys):
    before = _files(tiny_corpus)
    _refused(capsys, tiny_corpus, tiny_corpus, f"is the corpus folder {tiny_corpus.resolve()} (--data)")
    _refused(capsys, tiny_corpus, tiny_corpus / "run", "is inside the corpus folder")
    assert _files(tiny_corpus) == before


def test_another_prepared_corpus_is_refused(tiny_corpus, tmp_path, capsys):
    other = tmp_path / "other_corpus"
    shutil.copytree(tiny_corpus, other)
    before = _files(other)
    _refused(capsys, tiny_corpus, other, "is a prepared corpus (it holds manifest.json)")
    assert _files(other) == before


@pytest.mark.parametrize("names", [["song0.wav"], ["stream_000.wav", "stream_000.png", "render_report.json"],
                                   ["a.FLAC", "b.mp3", "c.ogg", "d.wav", "notes.txt"]])
def test_a_folder_of_audio_files_is_refused(tiny_corpus, tmp_path, capsys, names):
    folder = tmp_path / "recordings"
    folder.mkdir()
    for name in names:
        shutil.copy(tmp_path / "rec" / "song0.wav", folder / name)
    before = _files(folder)
    _refused(capsys, tiny_corpus, folder, "holds audio files (")
    assert _files(folder) == before  # not even the lock file


def test_a_new_folder_a_run_and_a_folder_of_other_files_train(tiny_corpus, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a run for the album")
    (mine / "old_renders").mkdir()  # audio below its top level is not looked for
    shutil.copy(tmp_path / "rec" / "song0.wav", mine / "old_renders" / "take1.wav")
    assert _train(tiny_corpus, mine) == 0 and (mine / "config.json").is_file()
    assert _train(tiny_corpus, mine, "--max-steps", "2") == 0  # a run: its own samples do not refuse it


def test_a_folder_inside_another_runs_own_folders_or_a_model_folder_is_refused(tiny_corpus, tmp_path, capsys):
    """--run OTHER/best/new was trained into: the other run's next best model replaces best/ whole, and this run
    with it; the same inside its checkpoints/ or a model folder. Refused in one line, nothing written; a folder of
    the user's beside the other run's own (OTHER/experiments/b) is a run's as before."""
    other = tmp_path / "other"
    assert _train(tiny_corpus, other) == 0
    before = _files(other)
    for run in (other / "best" / "new", other / "checkpoints" / "new"):
        _refused(capsys, tiny_corpus, run, f"it lies inside {other / run.parent.name}, of the training run {other}")
    _refused(capsys, tiny_corpus, other / "best" / "new" / "deeper", f"it lies inside {other / 'best'}")
    assert _files(other) == before
    assert _train(tiny_corpus, other / "experiments" / "b") == 0
