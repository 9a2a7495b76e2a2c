"""A finished render's render_report.json found damaged: what the folder still proves of it.

The report is written atomically once every stream is finished, then ``.state/`` goes; a report damaged since
(cut short by a copy, a full disk elsewhere, edited) leaves streams that are complete. Rendering them again (hours
for a long render) is needed only where the folder does not prove that: the parameters the render was made with
(the damaged report's own ``"params"``, which it writes first, read where that part is whole; else
``.state/params.json`` or a snapshot, where a kill left them) and every stream file holding its full length (a WAV's
header and size, a FLAC decoded to the end). :func:`recorded_params_in` and :func:`short_stream` judge;
:func:`rebuilt_report` is what is written in its place: what the render measured (wall time, sessions, guard events)
from the finished snapshots a kill while ``.state/`` was removed left (:func:`measured`, which the render's own report
is made with too), else not known (None), as its peak memory always is.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import soundfile as sf

from wavegen.render.settings import WAV_HEADER_BYTES
from wavegen.render.writers import flushed_samples

# how render_report.json begins (write_json, indent=1, loop.finish's key order)
_REPORT_HEAD = re.compile(r'\{\s*"status"\s*:\s*"complete"\s*,\s*"params"\s*:\s*')


def recorded_params_in(path: Path) -> dict | None:
    """The ``"params"`` object a damaged report ``path`` still holds whole, where it begins as a finished render's
    report does; None where it does not (garbage, cut inside the parameters, unreadable)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    head = _REPORT_HEAD.match(text)
    if head is None:
        return None
    try:
        params = json.JSONDecoder().raw_decode(text, head.end())[0]
    except ValueError:
        return None
    return params if isinstance(params, dict) else None


def short_stream(path: Path, fmt: str, total: int, sample_rate: int) -> str | None:
    """None where the stream file ``path`` (``fmt``) holds ``total`` samples of a mono ``sample_rate`` render, as a
    finished render leaves it; else what it holds instead, as a person reads it."""
    if not path.is_file():
        return "is gone"
    if fmt == "wav":
        held, other = flushed_samples(path, sample_rate)
        size = path.stat().st_size
        if other is not None:
            return f"is {other}"
        if held != total or size != WAV_HEADER_BYTES + 2 * total:
            return f"holds {min(held, (size - WAV_HEADER_BYTES) // 2) / sample_rate:.1f} s, not {total / sample_rate:g} s"
        return None
    frames = 0
    try:  # decoded to the end: a FLAC cut short may still declare its full length in its header
        with sf.SoundFile(path) as f:
            if (f.samplerate, f.channels) != (sample_rate, 1):
                return f"is a {f.channels}-channel {f.samplerate} Hz file, not this render's"
            for block in f.blocks(blocksize=1 << 20, dtype="int16"):
                frames += len(block)
    except (OSError, RuntimeError, sf.LibsndfileError) as err:
        return f"cannot be decoded ({err})"
    if frames != total:
        return f"holds {frames / sample_rate:.1f} s, not {total / sample_rate:g} s"
    return None


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
    partly = f" (those of stream(s) {', '.join(missing)} are not known: no snapshot of theirs is readable)" \
        if missing else ""
    return (measured(metas, seconds, streams), f"its wall time, sessions and guard events{partly} are from the "
            "snapshots its end left in .state/; its peak memory is not known")


def rebuilt_report(params: dict, names: list[str], spectrograms: list[str], total: int, why: str,
                   measures: dict | None = None) -> dict:
    """A finished render's report of ``params`` (its files ``names`` and ``spectrograms`` in OUT, ``total`` samples
    per stream), written where the render's own was damaged: ``why``. ``measures``: :func:`measured` of the
    snapshots it left; None where none is readable: what only the render measured is None (its peak memory always)."""
    sample_rate = params["sample_rate"]
    m = measures or dict.fromkeys(("wall_seconds", "realtime_factor", "realtime_factor_all_streams", "sessions",
                                   "counts", "events"))
    return {
        "status": "complete", "params": params, "paths": names, "spectrograms": spectrograms,
        "seconds": total / sample_rate, "streams": params["streams"], "sample_rate": sample_rate,
        "wall_seconds": m["wall_seconds"], "realtime_factor": m["realtime_factor"],
        "realtime_factor_all_streams": m["realtime_factor_all_streams"],
        "backend": params.get("backend"), "precision": params.get("precision"), "processes": params.get("world_size"),
        "sessions": m["sessions"], "max_rss_mb": None,
        "guard": {"enabled": bool(params.get("guard")), "counts": m["counts"], "events": m["events"]},
        "rebuilt": why,
    }
