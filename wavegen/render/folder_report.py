"""A finished render's render_report.json found damaged: what the folder still proves of it.

The report is written atomically once every stream is finished, then ``.state/`` goes; a report damaged since
(cut short by a copy, a full disk elsewhere, edited) leaves streams that are complete. Rendering them again (hours
for a long render) is needed only where the folder does not prove that: the parameters the render was made with
(the damaged report's own ``"params"``, which it writes first, read where that part is whole; else
``.state/params.json`` or a snapshot, where a kill left them) and every stream file holding its full length (a WAV's
header and size, a FLAC decoded to the end) whose audio is the render's: where the report records each stream's
CRC-32 (``"stream_crc32"``, written right after ``"params"`` so a cut report keeps it too; else the finished
snapshots a kill left in ``.state/``), each stream is read to the end and checked against it, and one that differs
(another program's file at its name) is refused naming it; a report of an older wavegen, without them, is judged by
the length alone. :func:`recorded_in` and :func:`measure_stream` judge;
:func:`mend_damaged_report` (the render's first process, its lock held) writes :func:`rebuilt_report` in its
place: what the render measured (wall time, sessions, guard events) from the finished snapshots a kill while
``.state/`` was removed left (:func:`measured`, which the render's own report is made with too), else not known
(None), as its peak memory always is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

from wavegen.fileio import atomic_write, free_name, read_json_object, write_json
from wavegen.progress import counted, plain_seconds, progress_bar
from wavegen.render.params_check import check_params
from wavegen.render.settings import WAV_HEADER_BYTES, RenderStateError, check_length, duration
from wavegen.render.writers import flushed_samples, recorded_meta

logger = logging.getLogger("wavegen.render")

# how render_report.json begins (write_json, indent=1, loop.finish's key order)
_REPORT_HEAD = re.compile(r'\{\s*"status"\s*:\s*"complete"\s*,\s*"params"\s*:\s*')
# and what follows its params object (folder.write_report: with_stream_crc32)
_CRC_HEAD = re.compile(r'\s*,\s*"stream_crc32"\s*:\s*')


def recorded_in(path: Path) -> tuple[dict | None, list[int] | None]:
    """(The ``"params"`` object a damaged report ``path`` still holds whole, where it begins as a finished render's
    report does, else None; the ``"stream_crc32"`` list right after it where that is whole too, else None: a report
    of an older wavegen, or cut inside it)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, None
    head = _REPORT_HEAD.match(text)
    if head is None:
        return None, None
    decoder = json.JSONDecoder()
    try:
        params, end = decoder.raw_decode(text, head.end())
    except ValueError:
        return None, None
    if not isinstance(params, dict):
        return None, None
    crcs = _CRC_HEAD.match(text, end)
    try:
        crcs = None if crcs is None else decoder.raw_decode(text, crcs.end())[0]
    except ValueError:
        crcs = None
    return params, crcs if _crc_list(crcs) else None


def recorded_params_in(path: Path) -> dict | None:
    """The ``"params"`` of :func:`recorded_in`."""
    return recorded_in(path)[0]


def _crc_list(value) -> bool:
    return isinstance(value, list) and all(type(c) is int and 0 <= c < 1 << 32 for c in value)


def with_stream_crc32(report: dict, crcs: list[int] | None) -> None:
    """``report`` gains ``"stream_crc32"``: ``crcs``, each stream's CRC-32 of its 16-bit PCM (as writers.PCMWriter
    computes it), placed right after its ``"params"`` (in place), so a report cut after them keeps both; none where
    ``crcs`` is None."""
    if crcs is None:
        return
    keys = list(report)
    after = {k: report.pop(k) for k in keys[keys.index("params") + 1:]} if "params" in keys else {}
    report["stream_crc32"] = list(crcs)
    report.update(after)


def stream_crc32s(metas: list[dict], streams: int) -> list[int] | None:
    """Each of ``streams`` streams' CRC-32 as the finished snapshots ``metas`` (one per process: "streams" ids,
    "crc32" per file) record; None where one is not known (a snapshot of an older wavegen, or none)."""
    known: dict[int, int] = {}
    for meta in metas:
        ids, crcs = meta.get("streams"), meta.get("crc32")
        if meta.get("complete") is True and isinstance(ids, list) and _crc_list(crcs) and len(crcs) == len(ids):
            known.update(zip(ids, crcs))
    return [known[i] for i in range(streams)] if all(i in known for i in range(streams)) else None


def measure_stream(path: Path, fmt: str, total: int, sample_rate: int, decoded=None,
                   crc: bool = False) -> tuple[str | None, int | None]:
    """(None where the stream file ``path`` (``fmt``) holds ``total`` samples of a mono ``sample_rate`` render, as a
    finished render leaves it, else what it holds instead, as a person reads it; the CRC-32 of its 16-bit PCM where
    ``crc`` and it holds them, else None). A FLAC is decoded to the end, a WAV's audio read only where ``crc``.
    ``decoded``: called with the samples read so far, after each block (a progress bar moves), or None."""
    if not path.is_file():
        return "is gone", None
    if fmt == "wav":
        held, other = flushed_samples(path, sample_rate)
        size = path.stat().st_size
        if other is not None:
            return f"is {other}", None
        if held != total or size != WAV_HEADER_BYTES + 2 * total:
            held_seconds = min(held, (size - WAV_HEADER_BYTES) // 2) / sample_rate
            return f"holds {held_seconds:.1f} s, not {plain_seconds(total / sample_rate)} s", None
        if not crc:
            return None, None
        try:
            return None, _wav_crc32(path, decoded)
        except OSError as err:
            return f"cannot be read ({getattr(err, 'strerror', None) or err})", None
    frames, value = 0, 0
    try:  # decoded to the end: a FLAC cut short may still declare its full length in its header
        with sf.SoundFile(path) as f:
            if (f.samplerate, f.channels) != (sample_rate, 1):
                return f"is a {f.channels}-channel {f.samplerate} Hz file, not this render's", None
            for block in f.blocks(blocksize=1 << 20, dtype="int16"):
                frames += len(block)
                if crc:
                    value = zlib.crc32(np.ascontiguousarray(block, dtype="<i2"), value)
                if decoded is not None:
                    decoded(frames)
    except (OSError, RuntimeError, sf.LibsndfileError) as err:
        return f"cannot be decoded ({err})", None
    if frames != total:
        return f"holds {frames / sample_rate:.1f} s, not {plain_seconds(total / sample_rate)} s", None
    return None, value if crc else None


def _wav_crc32(path: Path, read=None) -> int:
    """The CRC-32 of a render's WAV's samples (the bytes after its header); ``read``: called with the samples read so
    far after each block, or None."""
    value, done = 0, 0
    with open(path, "rb") as f:
        f.seek(WAV_HEADER_BYTES)
        for block in iter(lambda: f.read(1 << 22), b""):
            value, done = zlib.crc32(block, value), done + len(block)
            if read is not None:
                read(done // 2)
    return value


def measured(metas: list[dict], seconds: float, streams: int) -> dict:
    """What a render's snapshots' ``metas`` (one per process: events, wall_seconds, sessions) measured, as its report
    records it: wall_seconds (the longest process's), realtime_factor, realtime_factor_all_streams (None for no wall
    time), sessions, and the guard's counts and events (every process's, in time order)."""
    events = sorted((e for meta in metas for e in meta["events"]), key=lambda e: (e["seconds"], e["stream"], e["attempt"]))
    counts: dict[str, int] = {}
    for e in events:
        counts[e["kind"]] = counts.get(e["kind"], 0) + 1
    wall = max((meta["wall_seconds"] for meta in metas), default=0.0)
    return {"wall_seconds": wall, "realtime_factor": seconds / wall if wall else None,
            "realtime_factor_all_streams": seconds * streams / wall if wall else None,
            "sessions": max((meta["sessions"] for meta in metas), default=1), "counts": counts, "events": events}


def measured_by(metas: list[dict], streams: int, seconds: float) -> tuple[dict | None, str]:
    """What the finished snapshots ``metas`` of a render of ``streams`` streams x ``seconds`` that a kill left
    measured (:func:`measured`; None where there are none), and what of it is not known, as the rebuilt report says."""
    if not metas:
        return None, "its wall time, sessions, guard events and peak memory are not known"
    covered = {i for meta in metas for i in meta.get("streams", [])}
    missing = [str(i) for i in range(streams) if i not in covered]
    which = f"stream {missing[0]}" if len(missing) == 1 else f"streams {', '.join(missing)}"
    theirs = "it" if len(missing) == 1 else "theirs"
    partly = f" (those of {which} are not known: no snapshot of {theirs} is readable)" if missing else ""
    return (measured(metas, seconds, streams), f"its wall time, sessions and guard events{partly} are from the "
            "snapshots its end left in .state/; its peak memory is not known")


def rebuilt_report(params: dict, names: list[str], spectrograms: list[str], total: int, why: str,
                   measures: dict | None = None, crcs: list[int] | None = None) -> dict:
    """A finished render's report of ``params`` (its files ``names`` and ``spectrograms`` in OUT, ``total`` samples
    per stream), written where the render's own was damaged: ``why``. ``measures``: :func:`measured` of the
    snapshots it left; None where none is readable: what only the render measured is None (its peak memory always).
    ``crcs``: the streams' CRC-32s its files were checked against (:func:`with_stream_crc32`), or None."""
    sample_rate = params["sample_rate"]
    m = measures or dict.fromkeys(("wall_seconds", "realtime_factor", "realtime_factor_all_streams", "sessions",
                                   "counts", "events"))
    report = {
        "status": "complete", "params": params, "paths": names, "spectrograms": spectrograms,
        "seconds": total / sample_rate, "streams": params["streams"], "sample_rate": sample_rate,
        "wall_seconds": m["wall_seconds"], "realtime_factor": m["realtime_factor"],
        "realtime_factor_all_streams": m["realtime_factor_all_streams"],
        "backend": params.get("backend"), "precision": params.get("precision"), "processes": params.get("world_size"),
        "sessions": m["sessions"], "max_rss_mb": None,
        "guard": {"enabled": bool(params.get("guard")), "counts": m["counts"], "events": m["events"]},
        "rebuilt": why,
    }
    with_stream_crc32(report, crcs)
    return report


def mend_damaged_report(folder, params: dict, progress: bool = False) -> None:
    """The first process of a render into RenderFolder ``folder``, its lock held: a report that is unreadable, where
    the folder proves the render of these ``params`` finished: written again (the damaged one kept beside it; what the render measured
    from the finished snapshots a kill left in .state/), said in one line naming it. Where a stream is short and
    .state/ holds snapshots of these ``params`` (an unfinished render): the report set aside, said, and the
    render resumes. RenderStateError naming it where the folder shows neither. The streams' measuring is said
    first (a FLAC is decoded to the end: minutes for hours of audio), with a progress bar where ``progress``."""
    try:
        if folder.report_path.is_file():
            read_json_object(folder.report_path)
        return
    except (OSError, ValueError) as err:
        damaged = f"{folder.report_path}: unreadable render report ({getattr(err, 'strerror', None) or err})"
    (recorded, crcs), source = recorded_in(folder.report_path), "its readable part"
    # a report is written only once its render finished: the parameters its readable part records are a finished
    # render's, which a rerun has nothing to resume of; whether those .state/ holds are is not known (None)
    finished = True if recorded is not None else None
    if recorded is None:
        try:
            recorded, source = folder._recorded_params()[0], f"{folder.state_dir.name}/ (a kill left it)"
        except RenderStateError:
            recorded = None
    if recorded is None:
        raise RenderStateError(f"{damaged}, and nothing else in {folder.out_dir} records the parameters its streams "
                               "were made with; put a good copy of it back, or rerun with --restart to render "
                               "it again")
    check_params(recorded, params, folder.out_dir, folder.backend_asked, finished=finished)
    total = check_length(params["seconds"], params["sample_rate"], params["format"])
    metas = _finished_metas(folder, params)
    crcs = (crcs, "the report's readable part") if crcs is not None and len(crcs) == folder.streams else \
        (stream_crc32s(metas, folder.streams), f"the snapshots its end left in {folder.state_dir.name}/")
    short = _first_short_stream(folder, total, params["sample_rate"], progress, crcs, damaged)
    if short is not None:
        _set_aside_to_resume(folder, damaged, short, params)
        return
    aside = free_name(folder.report_path.with_name(folder.report_path.name + ".damaged"))
    spectrograms = [p.with_suffix(".png").name for p in folder.paths if p.with_suffix(".png").is_file()]
    measures, unknown = measured_by(metas, folder.streams, total / params["sample_rate"])
    report = rebuilt_report(params, [p.name for p in folder.paths], spectrograms, total,
                            f"the render's own report was damaged (kept as {aside.name}); {unknown}", measures, crcs[0])
    report["file_bytes"] = [p.stat().st_size for p in folder.paths]
    try:
        atomic_write(aside, folder.report_path.read_bytes())
        write_json(folder.report_path, report, indent=1)
    except OSError as err:
        raise folder.io_error(Path(err.filename or folder.report_path), err) from err
    one = len(folder.paths) == 1
    checked = "" if crcs[0] is None else f" ({'its' if one else 'their'} audio checked against the CRC-32s " \
        f"{crcs[1]} records)"
    complete = f"{counted(len(folder.paths), 'stream')} {'is' if one else 'are'} complete"
    logger.warning("%s; its %s%s and the parameters %s records are this render's: written again from them (the "
                   "damaged one kept as %s)", damaged, complete, checked, source, aside.name)


def _first_short_stream(folder, total: int, sample_rate: int, progress: bool, crcs: tuple[list[int] | None, str],
                        damaged: str) -> str | None:
    """The first of ``folder``'s streams that does not hold ``total`` samples, said as "PATH holds ..."; None where
    every one does. ``crcs``: (each stream's CRC-32, where they are recorded, as said), or (None, ...): each stream
    read to the end and checked against its own; RenderStateError naming the first that differs (``damaged``: the
    report, as said). Said first in one line; the reading of every stream's audio shown by a progress bar."""
    streams, expected = len(folder.paths), crcs[0]
    seconds = duration(streams * total / sample_rate)
    one = streams == 1  # its file, its WAV header; or their files, their WAV headers
    how = f"decoding {seconds} of FLAC to the end" if folder.format == "flac" else \
        f"reading {'its WAV header' if one else 'their WAV headers'}" if expected is None else \
        f"reading {seconds} of WAV audio to the end"
    checked = "" if expected is None else f", checked against the CRC-32s {crcs[1]} records"
    logger.info("%s is damaged: measuring its %s from %s (%s%s) to see whether the render is complete and write "
                "the report again", folder.report_path, counted(streams, "stream"),
                "its file" if one else "their files", how, checked)
    if not progress or (folder.format != "flac" and expected is None):
        bar = None
    else:  # seconds to a tenth, as the render's bar shows them (a block's are not exact: 2621.4400000000005)
        bar = progress_bar(total=streams * total / sample_rate, unit="s",
                           desc="decoded" if folder.format == "flac" else "read",
                           bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}, {rate_fmt}]")
    with bar if bar is not None else contextlib.nullcontext():
        for i, path in enumerate(folder.paths):
            # moved to the seconds decoded in all, not by each block's: a sum of them ran past the total
            # (0.1 + 0.1 + 0.1 of 0.3 s), and a terminal's bar showed 0.30000000000000004/0.3 and an ETA of -00:00
            moved = None if bar is None else \
                (lambda frames, before=i * total: bar.update((before + frames) / sample_rate - bar.n))
            short, crc = measure_stream(path, folder.format, total, sample_rate, moved, crc=expected is not None)
            if short is not None:
                return f"{path} {short}"
            if expected is not None and crc != expected[i]:
                raise RenderStateError(
                    f"{damaged}, and {path} is not the stream this render wrote (its audio's CRC-32 differs from the "
                    f"one {crcs[1]} records: another program's file, or changed since); put the render's own file "
                    f"back, or move it out of {folder.out_dir} to keep it and rerun with --restart to render every "
                    "stream again")
    return None


def _set_aside_to_resume(folder, damaged: str, short: str, params: dict) -> None:
    """The damaged report beside a stream that is ``short``: where .state/ holds snapshots of these ``params`` (a
    render not finished), the report is renamed aside, said, and the render resumes from them (--restart would
    lose what they hold); else RenderStateError naming both."""
    recorded, name = folder._snapshot_params()
    if recorded is None:
        raise RenderStateError(f"{damaged}, and {short}: the folder does not show a finished render; rerun "
                               "with --restart to render it again")
    check_params(folder.with_recorded_tensors(recorded), params, folder.out_dir, folder.backend_asked)
    aside = free_name(folder.report_path.with_name(folder.report_path.name + ".damaged"))
    try:
        folder.report_path.rename(aside)
    except OSError as err:
        raise folder.io_error(Path(err.filename or folder.report_path), err) from err
    logger.warning("%s, and %s, but its snapshot %s/%s is this render's: it was not finished; the damaged report "
                   "is set aside as %s and the render resumes from its snapshots", damaged, short, folder.state_dir.name,
                   name, aside.name)

def _finished_metas(folder, params: dict) -> list[dict]:
    """The metas of the snapshots of a finished render's processes' end that a kill while .state/ was removed left
    (each newest, else the one it replaced, read only; those of these ``params``, finished): what it measured (wall
    time, sessions, guard events: :func:`measured_by`) and each stream's CRC-32 (:func:`stream_crc32s`)."""
    metas = []
    for rank in range(params.get("world_size") or 1):
        meta = recorded_meta(folder.snapshot_path(rank))[0]
        if not isinstance(meta, dict) or meta.get("complete") is not True:
            continue
        try:
            check_params(folder.with_recorded_tensors(meta.get("params") or {}), params, folder.out_dir)
        except RenderStateError:
            continue
        metas.append(meta)
    return metas
