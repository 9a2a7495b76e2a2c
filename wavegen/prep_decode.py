"""Decoding prep's inputs into a temporary folder: each file decoded, mixed to mono, resampled
and trimmed of silence (:func:`decode_files`), then the train/val/test arrays written from the
kept pieces (:func:`write_arrays`). wavegen.prep orchestrates: finding the inputs, the lock,
whether the corpus is up to date, and moving the result into place.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wavegen import prep_inputs
from wavegen.audio import AudioError, AudioMemoryError, decode_mono, float_to_int16, scale_to_full_scale
from wavegen.fileio import check_room, write_array
from wavegen.progress import progress_bar
from wavegen.split import SILENCE_FLOOR, SPLITS, channels_cancel, dbfs, split_on_silence, why_no_sound

if TYPE_CHECKING:
    from wavegen.prep import PrepSettings

logger = logging.getLogger("wavegen.prep")
SKIP_LINES = 20  # skipped files named one line each; the rest summed up in one line (all in the manifest)


class MemorySkip(str):
    """The reason a file was skipped for lack of memory: not the file's fault, so not remembered as final
    (its manifest entry says "retry": a rerun of prep, on a machine with more memory say, tries it again)."""


def decode_one(path: Path, settings: PrepSettings, digest: str):
    """Decode and trim one file (digest: its sha256): (kept int16 [T], segment lengths, entry) or a skip reason
    (a MemorySkip for a file too long for this machine's memory: passed over, the others prepared)."""
    try:
        return _decode_one(path, settings, digest)
    except AudioMemoryError as e:
        return MemorySkip(e.reason)
    except MemoryError:
        return MemorySkip("too long to prepare in memory (its audio, mixed to mono and resampled, does not fit in "
                          "this machine's memory beside what prep holds); split it into shorter files")


def _decode_one(path: Path, settings: PrepSettings, digest: str):
    try:
        if path.stat().st_size == 0:
            return "empty: a file of 0 bytes"
        rate = settings.sample_rate
        mono, sr_in, frames, channels, loudest_channel, damage = decode_mono(path, rate)
    except AudioMemoryError:
        raise
    except AudioError as e:
        return e.reason
    except OSError as e:
        return f"cannot read file ({e.strerror or e})"
    if frames == 0:
        return "empty: no audio frames"
    if not np.all(np.isfinite(mono)):
        return "contains NaN or infinite samples"
    intervals = split_on_silence(mono, rate, top_db=settings.top_db,
                                 min_silence_seconds=settings.min_silence_seconds,
                                 min_segment_seconds=settings.min_segment_seconds)
    if len(intervals) == 0:
        return _no_sound(path, loudest_channel, mono, settings.min_segment_seconds)
    kept = np.concatenate([mono[s:e] for s, e in intervals])
    del mono  # a long file: the kept part and its 16-bit copy are what memory holds from here
    peak = float(max(kept.max(), -kept.min()))
    pcm = float_to_int16(kept)
    if not pcm.any():  # sound by its frames' level, yet under half a step in every sample
        return channels_cancel(loudest_channel, kept) + (
            f"silent at 16-bit resolution: peaks at {dbfs(peak)}, under half a 16-bit step "
            f"({dbfs(SILENCE_FLOOR)}): every stored sample would be zero")
    kept, gain_db = scale_to_full_scale(kept)  # float audio above full scale: scaled down rather than clipped
    if gain_db < 0:
        pcm = float_to_int16(kept)
        logger.warning("%s peaks %.1f dB above full scale: scaled down by %.1f dB instead of clipping",
                       path, -gain_db, -gain_db)
    if damage is not None:
        logger.warning("%s is damaged (%s): keeping the %.2f s that decode", path, damage, frames / sr_in)
    entry = {
        "path": str(path),
        "duration_seconds": round(frames / sr_in, 6),
        "kept_seconds": round(len(kept) / rate, 6),
        "split": None,
        "sha256": digest,
        "label": None,
        "sample_rate_in": sr_in,
        "channels_in": channels,
        "gain_db": gain_db,
        "partial": damage is not None,
    }
    if damage is not None:
        entry["partial_reason"] = damage
    return pcm, [int(e - s) for s, e in intervals], entry


def _no_sound(path: Path, loudest_channel: float | None, mono: np.ndarray, min_segment_seconds: float) -> str:
    """Why a file kept no segment: judged on its mono mix at its own rate too (why_no_sound), decoded again
    for it (a file with sound never needs it: not kept in memory beside the resampled mono)."""
    try:
        source = decode_mono(path).samples
    except (AudioError, OSError) as e:  # replaced meanwhile: say what can be said of the resampled mix
        logger.debug("%s: cannot decode it again (%s)", path, e)
        source = mono
    return channels_cancel(loudest_channel, source) + why_no_sound(source, mono, min_segment_seconds)


def decode_files(found, file_labels, tmp: Path, settings: PrepSettings, progress: bool, digests=None):
    """Decode, trim and store each file's kept audio as tmp/<file_index>.pcm (int16).

    digests: the files' sha256 by path where read already. Returns (files: manifest entries,
    seg_lengths: per file the kept segment lengths, skipped: [{"path", "reason"}, with "retry": True where
    memory was lacking (MemorySkip)], the sha256
    of every file by path: None where it cannot be read).
    """
    files, seg_lengths, skipped = [], [], []
    digests = dict(digests or {})
    seen: dict[str, tuple] = {}  # sha256 -> (path, label) kept: the same recording twice would leak
    bar = progress_bar(total=len(found), desc="prep", unit="file") if progress else None
    for (path, _root), label in zip(found, file_labels):
        if bar is not None:
            bar.set_postfix_str(path.name, refresh=False)
        digest = digests.get(str(path))
        result = None
        if digest is None:
            digest, result = prep_inputs.digest(path)
            digests[str(path)] = digest
        if result is None and digest in seen:  # the same bytes as a file kept: not decoded again
            result = _duplicate(seen[digest], label)
        if result is None:
            result = decode_one(path, settings, digest)
        if isinstance(result, str):
            # a line each for the first few; thousands of tiny files would bury every other line in theirs
            logger.log(logging.WARNING if len(skipped) < SKIP_LINES else logging.DEBUG, "skipping %s: %s", path, result)
            skipped.append({"path": str(path), "reason": str(result)})
            if isinstance(result, MemorySkip):
                skipped[-1]["retry"] = True
        else:
            kept, lengths, entry = result
            write_array(tmp / f"{len(files)}.pcm", kept)
            entry["label"] = label
            seen[entry["sha256"]] = (str(path), label)
            seg_lengths.append(lengths)
            files.append(entry)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if len(skipped) > SKIP_LINES:
        logger.warning("skipped %d more file(s) without a line each (%s); --verbose names them, and manifest.json's "
                       '"skipped" lists every skipped file and why', len(skipped) - SKIP_LINES,
                       _most_common_reasons(skipped[SKIP_LINES:]))
    return files, seg_lengths, skipped, digests


def _most_common_reasons(skipped: list[dict], shown: int = 3) -> str:
    """"1990 no stretch of sound of at least 0.5 s; 5 duplicate of ..." for the most common reasons."""
    counts = Counter(item["reason"] for item in skipped)
    text = "; ".join(f"{count}: {reason}" for reason, count in counts.most_common(shown))
    return text + (f"; {len(counts) - shown} other reason(s)" if len(counts) > shown else "")


def _duplicate(kept: tuple, label) -> str:
    """Why a file with the bytes of one kept already is skipped; the labels too where they differ (a
    link in one album folder to a file in another: the recording trains under the first one's label)."""
    path, kept_label = kept
    if kept_label == label:
        return f"duplicate of {path}"
    return f"duplicate of {path}, kept under label {kept_label!r} (not {label!r})"


def write_arrays(tmp: Path, pieces: dict, sample_rate: int) -> dict:
    """Write {split}.npy and {split}_segments.npy into tmp; returns manifest["splits"]."""
    summary = {}
    for name in SPLITS:
        rows = np.zeros((len(pieces[name]), 3), dtype=np.int64)
        total = sum(length for _, _, length in pieces[name])
        if total == 0:
            write_array(tmp / f"{name}.npy", np.zeros(0, dtype=np.int16), npy=True)
        else:
            check_room(tmp / f"{name}.npy", total * 2 + 4096)  # filled through a memory map: room first
            out = np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=np.int16,
                                            shape=(total,))
            start, src_index, src = 0, None, None
            for r, (i, offset, length) in enumerate(pieces[name]):
                if i != src_index:  # pieces come grouped by file
                    src_index, src = i, np.memmap(tmp / f"{i}.pcm", dtype=np.int16, mode="r")
                out[start : start + length] = src[offset : offset + length]
                rows[r] = (start, length, i)
                start += length
            del src
            out.flush()
            del out
        write_array(tmp / f"{name}_segments.npy", rows, npy=True)
        summary[name] = {
            "samples": int(total),
            "seconds": round(total / sample_rate, 6),
            "segments": len(rows),
        }
    return summary
