"""Where an archive may go (``--archive DIR``): checked before the model loads, so a folder that cannot work
does not cost the load and the timing; whether one without a snapshot may begin again at 0 over its parts
(:func:`check_nothing_to_lose`); and what a restart says of its earlier parts (:func:`say_earlier_parts`)."""

from __future__ import annotations

import bisect
import logging
from pathlib import Path

from wavegen import progress
from wavegen.errors import some_of
from wavegen.folders import check_writable, ensure_folder
from wavegen.render import PCMWriter
from wavegen.render.writers import flushed_samples
from wavegen.serve.archive import (PART_FRAMES_KEY, SNAPSHOT_FILE, STATE_DIR, UNSNAPSHOT_KEY, Archive, ServeError,
                                   check_state_dir, part_path, parts_in)

logger = logging.getLogger("wavegen.serve.archive")  # the archive's words, whichever module says them


def check_archive_folder(folder: str | Path) -> None:
    """WavegenError in one line unless ``folder`` (serve's --archive) can be made and written in, holds no other
    wavegen folder's files nor lies inside a model, run or corpus (:func:`wavegen.resolve_why.other_use`), and is no
    folder of recordings (:func:`wavegen.resolve_why.recordings`; render's --out is checked by both too), nor holds
    a ``.state`` that is no folder (:func:`~wavegen.serve.archive.check_state_dir`):
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
    check_state_dir(folder)  # a .state that is no folder: refused before the model loads, nothing written
    ensure_folder(folder, "--archive folder")
    check_writable(folder, "--archive folder")


def closed_part_frames(path: Path, sample_rate: int) -> int:
    """The samples of a part closed full (one before the newest): what its header counts (its close counted all of
    it, and a part cut short since keeps that header), else what its size holds; 0 where neither says."""
    counted, _ = flushed_samples(path, sample_rate)
    if counted > 0:
        return counted
    try:
        return max(Path(path).stat().st_size - PCMWriter.HEADER_BYTES, 0) // 2
    except OSError:
        return 0


def say_earlier_parts(archive: Archive, index: int) -> None:
    """At a restart: the parts before part ``index`` (where the snapshot ends) that are gone (moved away to free
    the disk, or removed) or cut short since they were closed full (a crash, a disk problem), each said in one
    warning, naming them and what they hold; the archive goes on, and keeps them as they are: a part is a WAV of
    its own, not needed to continue. Gone ones do not move ``first_part`` (only the rotation of
    --archive-keep-parts does): one brought back is kept, as if it had never left. A gone one is said once: those
    the snapshot gone on from records as said (``archive.gone_said``) are not said again, and the ones gone now
    become the record its next snapshot keeps (one brought back drops out of it: gone again, it is said again); the
    snapshot gone on from is written again with it (:func:`~wavegen.serve.archive_resume.record_gone_said`)."""
    said_before, gone, gone_now, short = _said_runs(archive.gone_said), [], [], []
    for k in range(archive.first_part, index):
        path = part_path(archive.folder, k)
        if not path.is_file():
            gone_now.append(k)
            if not _in_runs(said_before, k):
                gone.append(k)
            continue
        held = max(path.stat().st_size - PCMWriter.HEADER_BYTES, 0) // 2
        if held < archive.part_frames:
            short.append(f"{path.name} holds {held / archive.sample_rate:.1f} s")
    if gone:
        what = f"{part_path(archive.folder, gone[0]).name}, archived before, is" if len(gone) == 1 else \
            f"{len(gone)} parts archived before ({_runs_said(archive, gone)}) are"
        logger.warning("archive %s: %s gone (moved away or removed); the archive goes on without %s (brought "
                       "back, kept)", archive.folder, what, "it" if len(gone) == 1 else "them")
    archive.gone_said = _runs(gone_now)
    if short:
        listed = ", ".join(short) if len(short) <= 4 else f"{', '.join(short[:4])} and {len(short) - 4} more"
        logger.warning("archive %s: %s of the %.1f s of a part, cut short since it was written (a crash or a disk "
                       "problem?); kept as %s, the archive goes on", archive.folder, listed,
                       archive.part_frames / archive.sample_rate, "it is" if len(short) == 1 else "they are")


def _runs(indices: list[int]) -> list[list[int]]:
    """Part indices, ascending, as runs [first, last]: a snapshot's record of the parts said gone stays short where
    a rotation no record told of removed thousands."""
    runs: list[list[int]] = []
    for k in indices:
        if runs and runs[-1][1] == k - 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    return runs


def _runs_said(archive: Archive, indices: list[int], most: int = 4) -> str:
    """Parts ``indices`` (ascending) as said in a warning: up to ``most``, each by its name; more, each run of parts
    one after another as "FIRST to LAST" (every part between is among them: not the first and last of all, which
    read as a range), a lone part by its name, and past ``most`` runs "and N more" parts, so that an archive with
    thousands gone here and there is said in one short line that names no part that is not gone."""
    if len(indices) <= most:
        return ", ".join(part_path(archive.folder, k).name for k in indices)
    runs = _runs(indices)
    named = [part_path(archive.folder, first).name if first == last else
             f"{part_path(archive.folder, first).name} to {part_path(archive.folder, last).name}"
             for first, last in runs[:most]]
    rest = sum(last - first + 1 for first, last in runs[most:])
    return ", ".join(named) + (f" and {rest} more" if rest else "")


def _said_runs(record) -> tuple[list[int], list[int]]:
    """A snapshot's record of the parts said gone (runs [first, last], :func:`_runs`) → (firsts, lasts) of its runs,
    ascending and apart (overlapping ones joined), for :func:`_in_runs`: read once, so that a restart looks up
    each gone part in time that grows with the log of the runs, not with their number (an archive of thousands of
    parts, thousands of them gone here and there). A record that is not one (an older wavegen's snapshot has
    none), and entries that are no run, hold no part: those gone are said."""
    runs = sorted(run for run in (record if isinstance(record, list) else [])
                  if isinstance(run, list) and len(run) == 2 and all(type(k) is int for k in run) and run[0] <= run[1])
    firsts: list[int] = []
    lasts: list[int] = []
    for first, last in runs:
        if lasts and first <= lasts[-1] + 1:
            lasts[-1] = max(lasts[-1], last)
        else:
            firsts.append(first)
            lasts.append(last)
    return firsts, lasts


def _in_runs(runs: tuple[list[int], list[int]], index: int) -> bool:
    """Whether ``index`` is in the runs :func:`_said_runs` read from a snapshot's record."""
    firsts, lasts = runs
    at = bisect.bisect_right(firsts, index) - 1
    return at >= 0 and index <= lasts[at]


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
    them, which = ("it", "the part") if len(parts) == 1 else ("them", "the parts")
    if counted is not None:
        why = (f"its newest part, {counted[0].name}, counts {counted[1] / sr:.1f} s in its header, as a snapshot "
               "leaves it: the snapshot was removed or lost since")
    elif archive.unsnapshot_seconds is None or frames <= (bound if said else archive.unsnapshot_seconds) * sr:
        return
    elif said:
        why = (f"the server that began it, stopped before its first snapshot, would have left at most {bound:.1f} s: "
               "the snapshot was removed or lost since")
    else:
        why = (f"removed since? Or the server that wrote {them} was stopped before its first snapshot with a "
               f"--snapshot-seconds longer than this command's (at most {archive.unsnapshot_seconds:.1f} s of audio "
               "without a snapshot): rerun with that --snapshot-seconds to begin anew")
    raise ServeError(f"{archive.folder} holds {frames / sr:.1f} s of the broadcast in "
                     f"{progress.counted(len(parts), 'part')} but no {STATE_DIR}/{SNAPSHOT_FILE} ({why}): going on "
                     f"from the start would write over {them}. Bring the snapshot back to continue it, or move "
                     f"{which} elsewhere (or choose another --archive) to begin anew")


def _counted_at_a_snapshot(archive: Archive, parts: list[Path], recorded: dict | None) -> tuple[Path, int] | None:
    """(the newest part, the samples its header counts) where that is some but not all of a part: only a
    snapshot's flush counts a part begun but not full, once the snapshot is written (:meth:`Archive.snapshot`; a
    new part counts 0, a full one all of it, at its close, snapshot or not); else None. A part is as long as
    params.json (``recorded``) says the archive began with; where it does not say (an older wavegen's), as the
    oldest part counts where there are two or more; a lone part, as it counts where that is a count no snapshot
    leaves (:func:`_closed_at_a_count_no_snapshot_leaves`: it was closed full); else as this command's."""
    if not parts or not parts[-1].is_file():
        return None
    counted, _ = flushed_samples(parts[-1], archive.sample_rate)
    full = (recorded or {}).get(PART_FRAMES_KEY)
    if not isinstance(full, int) or isinstance(full, bool) or full < 1:
        if len(parts) >= 2:
            full = closed_part_frames(parts[0], archive.sample_rate)
        else:
            full = counted if _closed_at_a_count_no_snapshot_leaves(archive, parts[0], counted, recorded) else 0
    if 0 < counted < (full or archive.part_frames):
        return parts[-1], counted
    return None


def _closed_at_a_count_no_snapshot_leaves(archive: Archive, part: Path, counted: int, recorded: dict | None) -> bool:
    """Whether ``part``, whose header counts ``counted`` samples, holds just those (nothing written after the
    count) and ``counted`` is no multiple of the station's window, as the archive's parameters (``recorded``)
    record it: every snapshot falls at a window's end (the station's ``_next_window``: its guard's seconds, 1 s
    without a guard), so only a part's close counted it: the part is full, its length the archive's part length.
    False where the parameters do not say, or the count could be a snapshot's (then it is taken for one)."""
    guard = (recorded or {}).get("guard")
    seconds = 1.0 if guard is False else guard.get("seconds") if isinstance(guard, dict) else None
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not seconds > 0:
        return False
    window = max(1, int(round(seconds * archive.sample_rate)))
    try:
        closed = part.stat().st_size == PCMWriter.HEADER_BYTES + 2 * counted
    except OSError:
        return False
    return closed and counted > 0 and counted % window != 0
