"""A corpus prep made before that skipped files for lack of memory, read back (:class:`Earlier`): a rerun of prep
on the same inputs and settings decodes only the files it skipped so and takes every other file's outcome from it
(kept audio read back from its arrays, a segment at a time). wavegen.prep_decode decodes the rest.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from wavegen.split import CUT_SLACK_SECONDS, SPLITS, manifest_seconds

# a skip's reason for lack of memory, in a manifest written before "retry" was recorded
_MEMORY_REASONS = ("too long to decode in memory", "too long to prepare in memory")
# a file's manifest entry as prep_decode makes it (+ "partial_reason" where "partial"), and the keys it may have
# besides: "recovered" where mended, "clipped", "segment_starts_seconds" (none in a corpus of an older prep)
_ENTRY_KEYS = frozenset({"path", "duration_seconds", "kept_seconds", "split", "sha256", "label", "sample_rate_in",
                         "channels_in", "gain_db", "partial"})
_ENTRY_KEYS_MAYBE = frozenset({"recovered", "clipped", "segment_starts_seconds"})


def is_retry(skip: dict) -> bool:
    """Whether a manifest's "skipped" entry is a file skipped for lack of memory (tried again by the next prep)."""
    return skip.get("retry") is True or str(skip.get("reason", "")).startswith(_MEMORY_REASONS)


def retries(manifest: dict) -> list:
    """The paths of a manifest's files skipped for lack of memory (is_retry), in its order; [] for a
    manifest whose "skipped" is not a list of entries."""
    skipped = manifest.get("skipped")
    return [s.get("path") for s in skipped if isinstance(s, dict) and is_retry(s)] if isinstance(skipped, list) else []


class EarlierAudio(NamedTuple):
    """A file's kept audio as an Earlier corpus holds it (Earlier.outcome), not yet read: its index there."""

    index: int


class Earlier:
    """A corpus prepared from the same inputs with the same settings (its fingerprint or content fingerprint
    is theirs) that skipped files for lack of memory: what it made of every other file is taken again, not
    decoded again (kept audio read back from its arrays, a skip's reason), so a rerun decodes only those
    files, and keeps what a prep that never skipped keeps, byte for byte (its files keeping their splits).

    A file cut in time (its "split": "time") is decoded again: where a segment was cut at a split's
    boundary, the arrays no longer say. Raises OSError or ValueError when the arrays cannot be read."""

    def __init__(self, corpus_dir: Path, manifest: dict):
        self.dir, self.manifest = Path(corpus_dir), manifest
        self._kept = {f["path"]: i for i, f in enumerate(manifest["files"])}
        self._skips = {s["path"]: s for s in manifest["skipped"]}
        self._rate = int(manifest["sample_rate"])
        self._rows: dict[int, list] = {}  # file index -> [(split, int64 [n, 2] rows (start, length))]
        for name in SPLITS:
            seg = np.load(self.dir / f"{name}_segments.npy")
            if len(seg):  # a file's rows lie together (write_arrays takes its pieces in turn)
                for part in np.split(seg, np.flatnonzero(np.diff(seg[:, 2])) + 1):
                    self._rows.setdefault(int(part[0, 2]), []).append((name, part[:, :2]))

    def digests(self) -> dict[str, str]:
        """The sha256 of every file kept, by path."""
        return {f["path"]: f["sha256"] for f in self.manifest["files"]}

    def outcome(self, path: str):
        """What the corpus made of path: (EarlierAudio, its segments [(start, length)]: start where each began in
        the file, at the corpus rate, from its entry's "segment_starts_seconds", None where a corpus of an older
        prep records none; its entry less "split") for a file kept, the reason for one skipped (not for lack of
        memory nor as a duplicate: decode_files judges those again), or None: decode it (its starts damaged too)."""
        skip = self._skips.get(path)
        if skip is not None:
            reason = skip.get("reason")
            return None if is_retry(skip) or not isinstance(reason, str) or reason.startswith("duplicate of ") \
                else reason
        i = self._kept.get(path)
        entry = {} if i is None else self.manifest["files"][i]
        parts = self._rows.get(i, [])
        if set(entry) - _ENTRY_KEYS_MAYBE != _ENTRY_KEYS | ({"partial_reason"} if entry.get("partial") else set()) or \
                len(parts) != 1 or parts[0][0] != entry["split"]:
            return None  # not kept, cut in time, or an entry of another make
        lengths = [int(n) for n in parts[0][1][:, 1]]
        if abs(sum(lengths) / self._rate - entry["kept_seconds"]) > 1e-6:
            return None
        starts = self._starts(entry, lengths)
        if starts is None:
            return None
        return EarlierAudio(i), list(zip(starts, lengths)), dict(entry, split=None)

    def _starts(self, entry: dict, lengths: list[int]) -> list | None:
        """Where each kept segment (lengths) of entry's file began in it, in samples at the corpus rate: its
        "segment_starts_seconds"; [None] * len(lengths) where it records none (a corpus of an older prep: a file
        cut in time from this audio records no cut); None where they are damaged (not one time per segment, each
        at or after the end of the one before, the last segment ending within the file's "duration_seconds": a cut
        recorded from starts past its end would be clipped to it, moving its val and test audio into train later)."""
        if "segment_starts_seconds" not in entry:
            return [None] * len(lengths)
        times, duration = entry["segment_starts_seconds"], manifest_seconds(entry["duration_seconds"])
        if not isinstance(times, list) or len(times) != len(lengths) or duration is None:
            return None
        starts, end = [], 0
        for seconds, length in zip(map(manifest_seconds, times), lengths):
            at = None if seconds is None else seconds * self._rate  # inf for 1e308 s: refused, not rounded
            if at is None or not end - 0.5 <= at < 2**62:
                return None
            starts.append(round(at))
            end = starts[-1] + length
        return starts if end <= (duration + CUT_SLACK_SECONDS) * self._rate else None

    def unchanged(self, files: list[dict], skipped: list[dict]) -> bool:
        """Whether files and skipped (every skip, the search's too) are the corpus's: the same files kept, the
        same skipped, each file it skipped for lack of memory skipped so again (and recorded so: a manifest
        from before "retry" is written again). Its arrays are then the ones this prep would write."""
        def kinds(skips):
            return [(s["path"], s.get("retry") is True) for s in skips]

        return [f["path"] for f in files] == list(self._kept) and kinds(skipped) == kinds(self.manifest["skipped"])

    def audio_sha256(self, index: int) -> str:
        """The sha256 of the kept audio of the corpus's file index, as write_audio writes it (a segment at a time)."""
        ((name, rows),) = self._rows[index]
        digest = hashlib.sha256()
        for segment in _segments(np.load(self.dir / f"{name}.npy", mmap_mode="r"), rows):
            digest.update(segment)
        return digest.hexdigest()

    def write_audio(self, tmp: Path, indices: dict[int, int]) -> None:
        """tmp/<i>.pcm (int16) for each file index i of indices: the kept audio of the corpus's file indices[i],
        as write_array writes it (raw samples, no header). Written a segment at a time from the memory-mapped
        arrays: a file's whole kept audio is never held in memory (a rerun after a memory skip is on a machine
        short of it)."""
        arrays: dict[str, np.ndarray] = {}
        for here, there in indices.items():
            ((name, rows),) = self._rows[there]
            if name not in arrays:
                arrays[name] = np.load(self.dir / f"{name}.npy", mmap_mode="r")
            _write_segments(tmp / f"{here}.pcm", arrays[name], rows)


def _segments(audio: np.ndarray, rows: np.ndarray):
    """The bytes of audio[start : start + length] for each (start, length) of rows [n, 2], one after another: each
    one's view of the (memory-mapped) audio, never copied."""
    for start, length in rows:
        yield memoryview(np.ascontiguousarray(audio[start : start + length])).cast("B")


def _write_segments(path: Path, audio: np.ndarray, rows: np.ndarray) -> None:
    """path: audio[start : start + length] for each (start, length) of rows [n, 2], one after another, in
    write_array's format (the samples' bytes as tofile writes them), a segment at a time: each one's view
    of the memory-mapped audio written as it is, never copied. An OSError names path, as write_array's does."""
    try:
        with open(path, "wb") as f:
            for segment in _segments(audio, rows):
                f.write(segment)
    except OSError as err:
        if err.filename is None and err.errno:  # a failed flush at close names no file
            raise OSError(err.errno, os.strerror(err.errno), str(path)) from err
        raise
