"""Where `wavegen render --out` may write, as a user meets it: a folder another wavegen command wrote (a model
folder, best/, a checkpoint, a run, a corpus, a live stream's archive) is refused in one line naming what it holds,
before the model loads, and left as it was (--restart too: it would have removed an archive's snapshot); so are a
folder of recordings, a file and a link to nothing. A new folder, one of other files, or a link to a folder is a
render's as before. serve's --archive is checked by the same function (test_serve_archive_use)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import prepared_corpus
from render_helpers import SR, direct_pcm, make_model, read_pcm, render_cli
from test_render_model_gone import make_run

MIX = ("a render there would mix its files (stream_000.wav ..., render_report.json, .state/, .lock) into it: "
       "choose another --out, e.g. a new folder")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("render_out") / "tiny")


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _everything(folder: Path) -> dict[str, bytes | None]:
    """Every file under ``folder`` (its .lock too: a refused render must not take it) → its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def _archive(model: Path, folder: Path) -> Path:
    """A live stream's archive as a server leaves it once begun: params.json, a part, the lock file."""
    from wavegen.serve import ServeSettings, Station

    station = Station(str(model), ServeSettings(archive=str(folder), guard=False))
    station.archive.open()
    station.archive.close()
    return folder


def test_a_folder_another_wavegen_command_wrote_is_refused_untouched_before_the_model_loads(model, tmp_path, capsys,
                                                                                          monkeypatch):
    """A render into a model folder, a run (whose .lock is training's), a corpus wrote its stream, report and .lock
    among their files; into a live stream's archive it said "holds a render with seconds=None", and --restart
    there removed the archive's .state/ (its snapshot)."""
    from wavegen.resolve import ModelRef

    run = make_run(model, tmp_path / "run")
    archive = _archive(model, tmp_path / "archive")
    held = {model: "it holds a model (model.safetensors)",
            run / "best": "it holds a model (model.safetensors)",
            run / "checkpoints" / "step_5": "it holds a model (model.safetensors)",
            run: "it holds a training run (what wavegen train --run wrote)",
            prepared_corpus(tmp_path / "prep", files=2, seconds=1.0): "it holds a prepared corpus (what wavegen prep "
                                                                       "wrote)",
            archive: f"it holds a live stream's archive (what wavegen serve --archive wrote: wavegen serve "
                     f"{model.resolve()} --archive {archive} continues it)"}

    def loaded(self, *args, **kwargs):
        raise AssertionError("the model loaded before --out was checked")

    monkeypatch.setattr(ModelRef, "load", loaded)
    for folder, what in held.items():
        before = _everything(folder)
        for extra in ((), ("--restart",)):
            assert render_cli(model, folder, *extra) == 2
            assert _error_line(capsys) == f"wavegen render: error: --out {folder}: {what}; {MIX}"
            assert _everything(folder) == before, (folder, extra)


def test_recordings_a_file_and_a_link_to_nothing_are_refused_other_files_are_kept(model, tmp_path, capsys):
    """A folder of recordings took the render's stream beside them (eval --renders then judged both, a prep took the
    stream for a recording); a link to nothing was called "a file, not a folder", a FIFO "a file". A folder of other
    files, and a link to a folder, take the render as before, their files kept."""
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    for name in ("song0.wav", "song1.flac"):
        sf.write(str(recordings / name), np.zeros(SR, dtype=np.float32), SR)
    before = _everything(recordings)
    assert render_cli(model, recordings) == 2
    assert _error_line(capsys) == (
        f"wavegen render: error: --out {recordings} holds audio files (song0.wav, song1.flac) and no render: eval "
        "--renders would judge them as the render's, and a wavegen prep of the folder would take the render's streams "
        "for recordings: choose another --out, e.g. a new folder")
    assert _everything(recordings) == before
    os.symlink(tmp_path / "nowhere", tmp_path / "broken")
    assert render_cli(model, tmp_path / "broken") == 2
    assert _error_line(capsys) == (f"wavegen render: error: --out {tmp_path / 'broken'} is a link to "
                                   f"{tmp_path / 'nowhere'}, which does not exist: make that folder, or give another "
                                   "--out")
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "a-file").write_text("mine")
    os.mkfifo(tmp_path / "a-fifo")
    for path, kind in ((tmp_path / "a-file", "file"), (tmp_path / "a-fifo", "FIFO")):  # a FIFO was "a file"
        assert render_cli(model, path) == 2
        assert _error_line(capsys) == (f"wavegen render: error: --out {path} is a {kind}, not a folder: give a folder "
                                       "for the render's stream_000.wav ... (a new name is created)")
    assert (tmp_path / "a-file").read_text() == "mine"

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("other files")
    (notes / "config.json").write_text("{}")  # another program's settings: not a run's
    os.symlink(notes, tmp_path / "link")
    assert render_cli(model, tmp_path / "link") == 0
    assert render_cli(model, notes) == 0  # the same folder by its own name: complete
    assert (notes / "todo.txt").read_text() == "other files" and (notes / "config.json").read_text() == "{}"
    assert np.array_equal(read_pcm(notes / "stream_000.wav"), direct_pcm(model, 1, round(0.125 * SR))[0])


def test_a_folder_inside_a_run_a_model_or_a_corpus_is_refused_before_the_model_loads(model, tmp_path, capsys,
                                                                                      monkeypatch):
    """--out RUN/checkpoints (or a new folder in it, in best/ or samples/: what a training rewrites), a folder inside
    a model folder or a prepared corpus, or a render's .state/ was taken: the render's files went among the
    checkpoints a training prunes, into best/ that a training replaces, into prep's or the model's folder. Refused in one line naming the
    folder it lies in, before the model loads, nothing made; a link into a run is seen through. A folder beside the
    run, a folder of the user's in the run (RUN/renders), or inside a render's folder (not its .state/), is a
    render's as before."""
    from wavegen.resolve import ModelRef

    run = make_run(model, tmp_path / "run")
    corpus = prepared_corpus(tmp_path / "prep", files=2, seconds=1.0)
    assert render_cli(model, tmp_path / "rendered") == 0
    os.symlink(run / "checkpoints", tmp_path / "link")
    in_run = {name: f"it lies inside {run / name}, of the training run {run} (what wavegen train writes)"
              for name in ("checkpoints", "best", "samples")}
    # the folder itself is said to be that folder (was: 'it lies inside RUN/checkpoints', naming it as its own parent)
    inside = {run / "checkpoints": f"it is checkpoints/ of the training run {run} (what wavegen train writes)",
              run / "checkpoints" / "new": in_run["checkpoints"],
              run / "best" / "sub": in_run["best"],
              run / "samples" / "x": in_run["samples"],
              tmp_path / "link" / "x": in_run["checkpoints"],
              model / "out": f"it lies inside the model folder {model} (model.safetensors)",
              corpus / "out" / "a": f"it lies inside the prepared corpus {corpus} (what wavegen prep wrote)",
              tmp_path / "rendered" / ".state": f"it is .state/ of {tmp_path / 'rendered'}, a render's snapshots "
                                                "(removed or replaced as it goes)",
              tmp_path / "rendered" / ".state" / "x": f"it lies inside {tmp_path / 'rendered' / '.state'}, a "
                                                      "render's snapshots (removed or replaced as it goes)"}

    def loaded(self, *args, **kwargs):
        raise AssertionError("the model loaded before --out was checked")

    with monkeypatch.context() as patch:
        patch.setattr(ModelRef, "load", loaded)
        for folder, what in inside.items():
            before = {path: _everything(path) for path in (run, model, corpus)}
            assert render_cli(model, folder) == 2, folder
            assert _error_line(capsys) == f"wavegen render: error: --out {folder}: {what}; " \
                                          f"{MIX.replace('e.g. a new folder', 'outside it')}"
            assert {path: _everything(path) for path in (run, model, corpus)} == before, folder
            assert not folder.exists() or folder == run / "checkpoints", folder
    assert not (tmp_path / "rendered" / ".state").exists()  # the finished render's, never made
    # a folder of the user's in the run, beside its own (the run's own folders are the ones a training rewrites)
    for folder in (tmp_path / "beside-the-run", tmp_path / "rendered" / "sub", run / "renders" / "take1"):
        assert render_cli(model, folder) == 0
        assert np.array_equal(read_pcm(folder / "stream_000.wav"), direct_pcm(model, 1, round(0.125 * SR))[0])


def test_a_folder_inside_a_project_that_only_looks_like_a_run_or_a_corpus_is_a_render(model, tmp_path):
    """A folder above --out is taken for a run, a model folder or a corpus by what its JSON holds, not by its names
    alone: a user's project with its own config.json beside checkpoints/ and best/, or a dataset's manifest.json,
    is none of wavegen's (refusing every render below it would be wrong)."""
    project = tmp_path / "project"
    for name in ("checkpoints", "best", "data"):
        (project / name).mkdir(parents=True)
    # another trainer's settings ("model" and "train" sections, no model_type), a hub model's (model_type alone)
    (project / "config.json").write_text('{"train": {"lr": 0.001}, "data": {}, "model": {"hidden": 192}}')
    (project / "metrics.jsonl").write_text('{"loss": 1.0}\n')
    (project / "data" / "manifest.json").write_text('{"name": "my dataset", "files": []}')
    (project / "data" / "model.safetensors").write_bytes(b"not wavegen's")
    (project / "data" / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    for folder in (project / "checkpoints" / "renders", project / "data" / "renders"):
        assert render_cli(model, folder) == 0, folder
        assert np.array_equal(read_pcm(folder / "stream_000.wav"), direct_pcm(model, 1, round(0.125 * SR))[0])


def test_the_state_folder_of_a_render_that_has_only_begun_is_refused(model, tmp_path, capsys):
    """A render folder holding its .state/params.json alone (begun, stopped before its first window) was not told
    from other files: --out R/.state was taken, its files among the snapshots a resume replaces."""
    begun = tmp_path / "begun"
    (begun / ".state").mkdir(parents=True)
    (begun / ".state" / "params.json").write_text('{"model": "m", "streams": 1}')
    assert render_cli(model, begun / ".state") == 2
    assert _error_line(capsys) == (f"wavegen render: error: --out {begun / '.state'}: it is .state/ of {begun}, "
                                   "a render's snapshots (removed or replaced as it goes); "
                                   f"{MIX.replace('e.g. a new folder', 'outside it')}")
    assert sorted(p.name for p in (begun / ".state").iterdir()) == ["params.json"]


def test_the_stream_names_resolve_why_restates_are_the_ones_a_render_writes():
    """resolve_why.recordings (render's --out and serve's --archive) tells a render's streams from recordings by
    their names, restated there (resolve lies below render)."""
    from wavegen.render.settings import FORMATS, stream_paths
    from wavegen.resolve_why import RENDER_STREAM_NAME

    names = [path.name for fmt in FORMATS for path in stream_paths(Path(), 1001, fmt)]
    assert names[-1] == "stream_1000.flac" and all(RENDER_STREAM_NAME.fullmatch(name) for name in names)
    assert not any(RENDER_STREAM_NAME.fullmatch(name) for name in ("stream_00.wav", "stream_0001.wav", "song.wav"))
