"""Where an archive may go (``--archive DIR``): checked before the model loads, so a folder that cannot work
does not cost the load and the timing; and whether one without a snapshot may begin again at 0 over its parts
(:func:`check_nothing_to_lose`)."""

from __future__ import annotations

from pathlib import Path

from wavegen.errors import some_of
from wavegen.fileio import check_writable, ensure_folder
from wavegen.render import PCMWriter
from wavegen.render.writers import flushed_samples
from wavegen.serve.archive import (PART_FRAMES_KEY, SNAPSHOT_FILE, STATE_DIR, UNSNAPSHOT_KEY, Archive, ServeError,
                                   parts_in)


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


def check_nothing_to_lose(archive: Archive, recorded: dict | None) -> None:
    """No snapshot: ``archive`` starts again at 0, over its parts. Right after a server stopped before its first
    snapshot, the parts hold at most the bound of the server that began it (``recorded``, params.json: its
    UNSNAPSHOT_KEY; where it does not say, this command's ``unsnapshot_seconds``; not checked where that is None),
    and its newest part's header counts none of them (a part's header counts its audio after a snapshot, or once
    full); with more audio, or a header counting part of a part, the snapshot was removed (or lost), and starting
    again would write over the archive: ServeError, the folder untouched."""
    sr, parts = archive.sample_rate, [path for _, path in parts_in(archive.folder)]
    frames = sum(max(p.stat().st_size - PCMWriter.HEADER_BYTES, 0) // 2 for p in parts if p.is_file())
    counted = _counted_at_a_snapshot(archive, parts, recorded)
    bound = (recorded or {}).get(UNSNAPSHOT_KEY)
    said = isinstance(bound, (int, float)) and not isinstance(bound, bool) and bound > 0
    if counted is not None:
        why = (f"its newest part, {counted[0].name}, counts {counted[1] / sr:.1f} s in its header, as a snapshot "
               "leaves it: the snapshot was removed or lost since")
    elif archive.unsnapshot_seconds is None or frames <= (bound if said else archive.unsnapshot_seconds) * sr:
        return
    elif said:
        why = (f"the server that began it, stopped before its first snapshot, would have left at most {bound:.1f} s: "
               "the snapshot was removed or lost since")
    else:
        why = (f"removed since? Or the server that wrote them was stopped before its first snapshot with a "
               f"--snapshot-seconds longer than this command's (at most {archive.unsnapshot_seconds:.1f} s of audio "
               "without a snapshot): rerun with that --snapshot-seconds to begin anew")
    raise ServeError(f"{archive.folder} holds {frames / sr:.1f} s of the broadcast in {len(parts)} part(s) but no "
                     f"{STATE_DIR}/{SNAPSHOT_FILE} ({why}): going on from the start would write over them. Bring the "
                     "snapshot back to continue it, or move the parts elsewhere (or choose another --archive) to "
                     "begin anew")


def _counted_at_a_snapshot(archive: Archive, parts: list[Path], recorded: dict | None) -> tuple[Path, int] | None:
    """(the newest part, the samples its header counts) where that is some but not all of a part: only a
    snapshot's flush counts a part begun but not full, once the snapshot is written (:meth:`Archive.snapshot`; a
    new part counts 0, a full one all of it, at its close, snapshot or not); else None. A part is as long as
    params.json (``recorded``) says the archive began with; where it does not say (an older wavegen's), as the
    oldest part counts where there are two or more, else as this command's."""
    if not parts or not parts[-1].is_file():
        return None
    counted, _ = flushed_samples(parts[-1], archive.sample_rate)
    full = (recorded or {}).get(PART_FRAMES_KEY)
    if not isinstance(full, int) or isinstance(full, bool) or full < 1:
        full = flushed_samples(parts[0], archive.sample_rate)[0] if len(parts) >= 2 else 0
    if 0 < counted < (full or archive.part_frames):
        return parts[-1], counted
    return None
