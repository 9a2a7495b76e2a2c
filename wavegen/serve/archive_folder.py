"""Where an archive may go (``--archive DIR``): checked before the model loads, so a folder that cannot work
does not cost the load and the timing."""

from __future__ import annotations

from pathlib import Path

from wavegen.errors import some_of
from wavegen.fileio import check_writable, ensure_folder
from wavegen.serve.archive import ServeError


def check_archive_folder(folder: str | Path) -> None:
    """WavegenError in one line unless ``folder`` (serve's --archive) can be made and written in, holds no other
    wavegen folder's files nor lies inside a model, run or corpus (:func:`wavegen.resolve_why.other_use`), and is no
    folder of recordings (:func:`wavegen.resolve_why.recordings`; render's --out is checked by both too):
    serve calls it before the model loads, so a folder that cannot work does not cost the load and the timing."""
    from wavegen.resolve_why import other_use, recordings

    held = other_use(Path(folder), "archive")
    if held is not None:
        where = "outside it" if held.lies_inside else "e.g. an empty one"
        raise ServeError(f"--archive {folder}: {held.words}; an archive there would mix its files (.state/, .lock, "
                         f"broadcast parts) into it: choose another folder, {where}")
    audio = recordings(Path(folder), "archive")
    if audio:  # the user's recordings: the parts among them, a prep of the folder taking the broadcast for one
        raise ServeError(f"--archive {folder} holds audio files ({some_of(audio)}) and no archive: its broadcast parts "
                         "and .state/ would go among them, and a wavegen prep of the folder would take the broadcast "
                         "for recordings: choose another folder, e.g. an empty one")
    ensure_folder(folder, "--archive folder")
    check_writable(folder, "--archive folder")
