"""Where `wavegen serve --archive` may write, beyond another command's own folder (test_serve_archive_use): a folder
of recordings, and a folder inside a run, a model folder or a corpus, are refused in one line before the model
loads, left as they were; the same checks as render's --out (resolve_why.other_use and resolve_why.recordings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import prepared_corpus
from process_helpers import error_lines
from test_render_model_gone import make_run
from test_serve import SR, make_model
from test_serve_archive import PARAMS, _contents


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("serve_archive_folder") / "tiny")


MIX = ("an archive there would mix its files (.state/, .lock, broadcast parts) into it: choose another folder, e.g. "
       "an empty one")


def _serve_error(model: Path, archive: Path, capsys) -> str:
    from wavegen.cli import main

    assert main(["serve", str(model), "--port", "0", "--archive", str(archive)]) == 2
    lines = error_lines(capsys.readouterr().err, "serve")
    assert len(lines) == 1, lines
    return lines[0]


def _everything(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_a_folder_of_recordings_is_refused_untouched_before_the_model_loads(model, tmp_path, capsys, monkeypatch):
    """--archive naming the user's recordings was taken: the broadcast's parts, .state/ and .lock went among the
    songs (a prep of the folder then took the broadcast for a recording). A folder whose only audio is an archive's
    parts is the archive's, as before."""
    from wavegen.serve import station

    def loaded(ref):
        raise AssertionError("the model loaded before the archive folder was checked")

    songs = tmp_path / "songs"
    songs.mkdir()
    for name in ("a.flac", "b.wav", "c.mp3"):
        sf.write(str(songs / name), np.zeros(SR // 10, dtype=np.float32), SR, format="MP3" if name.endswith("mp3")
                 else None)
    before = _everything(songs)
    monkeypatch.setattr(station, "_load_model", loaded)
    assert _serve_error(model, songs, capsys) == (
        f"wavegen serve: error: --archive {songs} holds audio files (a.flac, b.wav, c.mp3) and no archive: its "
        "broadcast parts and .state/ would go among them, and a wavegen prep of the folder would take the broadcast "
        "for recordings: choose another folder, e.g. an empty one")
    assert _everything(songs) == before

    from wavegen.resolve_why import recordings  # render's --out is checked by the same

    parts = tmp_path / "parts"  # a server stopped before its first snapshot: parts alone
    parts.mkdir()
    sf.write(str(parts / "broadcast_00000.wav"), np.zeros(SR // 10, dtype=np.float32), SR, subtype="PCM_16")
    assert recordings(parts, "archive") == [] and recordings(songs, "archive") == ["a.flac", "b.wav", "c.mp3"]
    assert recordings(parts, "render") == ["broadcast_00000.wav"]  # render's --out: not its own streams
    (songs / "stream_000.wav").write_bytes((parts / "broadcast_00000.wav").read_bytes())
    assert recordings(songs, "render") == ["a.flac", "b.wav", "c.mp3"]  # a render's name is not a recording


def test_a_folder_inside_a_run_a_model_or_a_corpus_is_refused_untouched(model, tmp_path, capsys, monkeypatch):
    """--archive RUN/checkpoints (the archive's parts among the checkpoints a training prunes), a folder in best/
    (replaced by a training), inside a model folder or a prepared corpus: refused, naming the folder it lies in;
    nothing made."""
    from wavegen.serve import station

    def loaded(ref):
        raise AssertionError("the model loaded before the archive folder was checked")

    run = make_run(model, tmp_path / "run")
    corpus = prepared_corpus(tmp_path / "prep", files=2, seconds=1.0)
    played = tmp_path / "played"  # a copy: the model played is not the one the archive would go inside
    played.mkdir()
    for path in model.iterdir():
        (played / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(station, "_load_model", loaded)
    # the folder itself is said to be that folder (was: 'it lies inside RUN/checkpoints', naming it as its own parent)
    inside = {run / "checkpoints": f"it is checkpoints/ of the training run {run} (what wavegen train writes)",
              run / "best" / "archive": f"it lies inside {run / 'best'}, of the training run {run} (what wavegen "
                                        "train writes)",
              model / "archive": f"it lies inside the model folder {model} (model.safetensors)",
              corpus / "archive": f"it lies inside the prepared corpus {corpus} (what wavegen prep wrote)"}
    for folder, what in inside.items():
        before = {path: _contents(path) | {".lock": (path / ".lock").exists()} for path in (run, model, corpus)}
        assert _serve_error(played, folder, capsys) == f"wavegen serve: error: --archive {folder}: {what}; " \
                                                       f"{MIX.replace('e.g. an empty one', 'outside it')}"
        assert {path: _contents(path) | {".lock": (path / ".lock").exists()} for path in (run, model, corpus)} == \
            before, folder
        assert not folder.exists() or folder == run / "checkpoints", folder


@pytest.mark.parametrize("part_seconds, said, them, which", [(10.0, "1 part", "it", "the part"),
                                                             (2.0, "2 parts", "them", "the parts")])
def test_parts_without_their_snapshot_are_counted_with_their_noun_agreeing(tmp_path, part_seconds, said, them, which):
    """The refusal of parts whose snapshot is gone said "in 1 part(s)": the count agrees with its noun, and what
    it says of them with the count."""
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    a = Archive(tmp_path, SR, PARAMS, part_seconds=part_seconds)
    a.open()
    a.write(np.arange(3 * SR + SR // 2, dtype=np.int16))
    a.snapshot({"t": np.zeros(1)}, {})
    a.close()
    (tmp_path / ".state" / "snapshot.npz").unlink()
    with pytest.raises(ServeError) as refused:
        Archive(tmp_path, SR, PARAMS, part_seconds=part_seconds, unsnapshot_seconds=3.0).open()
    line = str(refused.value)
    assert f"holds 3.5 s of the broadcast in {said} but no .state/snapshot.npz (" in line, line
    assert f"going on from the start would write over {them}. Bring the snapshot back to continue it, or move " \
           f"{which} elsewhere (or choose another --archive) to begin anew" in line, line
