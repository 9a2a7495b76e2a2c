"""Decoding prep's inputs into a temporary folder: each file decoded, mixed to mono, resampled
and trimmed of silence (:func:`decode_files`), then the train/val/test arrays written from the
kept pieces (:func:`write_arrays`). A corpus of the same inputs that skipped files for lack of
memory is an Earlier (wavegen.prep_earlier): the rerun decodes only those files and takes the rest from it.
wavegen.prep orchestrates: finding the inputs, the lock, whether the corpus is up to date, and
moving the result into place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from wavegen import prep_inputs
from wavegen.audio import float_to_int16, resample, scale_to_full_scale
from wavegen.audio_decode import AudioError, AudioMemoryError, decode_mono, declared_frames
from wavegen.audio_ogg import UnreadStreams
from wavegen.fileio import check_room, write_array
from wavegen.prep_earlier import Earlier, EarlierAudio
from wavegen.prep_wav import UNFINISHED_WAV, FinishedView, read_finished, unfinished_wav
from wavegen.progress import counted, progress_bar
from wavegen.spikes import SPIKE_FLOOR, find_spikes
from wavegen.split import SILENCE_FLOOR, SPLITS, channels_cancel, dbfs, split_on_silence, why_no_sound

if TYPE_CHECKING:
    from wavegen.prep import PrepSettings

logger = logging.getLogger("wavegen.prep")
SKIP_LINES = prep_inputs.SKIP_LINES  # skipped files named one line each; the rest summed up in one line


class MemorySkip(str):
    """The reason a file was skipped for lack of memory: not the file's fault, so not remembered as final
    (its manifest entry says "retry": a rerun of prep, on a machine with more memory say, tries it again)."""


class Decoded(NamedTuple):
    """What decode_files made: files (manifest entries), seg_lengths (per file its kept segments' lengths),
    skipped ([{"path", "reason"}], "retry": True where memory was lacking), digests (every input's sha256 by
    path, None where it cannot be read), from_earlier ({file index: its index in the Earlier corpus}: kept
    audio taken from that corpus, written into the temporary folder by Earlier.write_audio, not yet there), and
    seg_starts (per file its kept segments' first samples in the file at the corpus rate, where its time is cut:
    split.assign_splits; for audio taken from an Earlier corpus, from its entry's "segment_starts_seconds": None
    where it records none, a corpus of an older prep)."""

    files: list
    seg_lengths: list
    skipped: list
    digests: dict
    from_earlier: dict
    seg_starts: list


def decode_one(path: Path, settings: PrepSettings, digest: str):
    """Decode and trim one file (digest: its sha256): (kept int16 [T], segments, entry) or a skip reason (a
    MemorySkip for a file too long for this machine's memory: passed over, the others prepared). segments: per
    kept segment (start, length) in samples at the corpus rate, its start in the file's (resampled) audio."""
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
        unfinished = unfinished_wav(path)
    except OSError as e:
        return f"cannot read file ({e.strerror or e})"
    if unfinished is None:
        return _decode_source(path, settings, digest)
    if unfinished.audio_bytes == 0:
        return f"empty: {UNFINISHED_WAV} and no whole frame of audio follows it"
    result, why = read_finished(path, unfinished, lambda view: _decode_source(
        path, settings, digest, view, UNFINISHED_WAV + "; the audio after it read to its last whole frame"))
    return result if why is None else why


def _decode_source(path: Path, settings: PrepSettings, digest: str, view: FinishedView | None = None,
                   recovered: str | None = None):
    """_decode_one for path, its audio decoded from path itself or from view (an unfinished WAV read as finished;
    recovered: what was wrong with path's header that view mends, kept as the entry's "recovered": not damage,
    its audio is all there)."""
    try:
        rate = settings.sample_rate
        decoded = decode_mono(path, rate, view)
    except AudioMemoryError:
        raise
    except AudioError as e:
        return e.reason
    except OSError as e:
        return f"cannot read file ({e.strerror or e})"
    mono, sr_in, frames, channels, loudest_channel, damage = decoded[:6]
    if frames == 0:
        return "empty: no audio frames"
    if len(mono) == 0:  # its header's rate so high that its frames last under one sample at the corpus's
        return (f"its {counted(frames, 'frame', grouped=True)} at {sr_in:,} Hz, the rate its header says, "
                f"{'lasts' if frames == 1 else 'last'} {frames / sr_in:.3g} s: not one sample at {rate} Hz "
                "(a damaged header?)")
    if decoded.nonfinite_frames:
        return _nonfinite(decoded.nonfinite_frames, decoded.first_nonfinite, frames, sr_in)
    found, decoded = _sound_found(path, view, decoded, settings), None
    if isinstance(found, str):
        return found
    (mono, intervals, clipped), found = found, None  # mono's last reference, deleted below
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
        # under 0.05 dB to the 0.001 dB gain_db keeps: "scaled down by 0.0 dB" said a scaling by nothing
        amount = f"{-gain_db:.1f}" if -gain_db >= 0.05 else f"{-gain_db:.3f}"
        logger.warning("%s peaks %s dB above full scale: scaled down by %s dB instead of clipping", path, amount,
                       amount)
    if recovered is not None:
        logger.warning("%s recovered (%s): keeping its %.2f s", path, recovered, frames / sr_in)
    if isinstance(damage, UnreadStreams):  # not damaged, but kept in part as a damaged file is ("partial")
        logger.warning("%s: %s", path, damage)
    elif damage is not None:
        logger.warning("%s is damaged (%s): keeping the %.2f s that decode", path, damage, frames / sr_in)
    entry = {
        "path": str(path),
        "duration_seconds": round(frames / sr_in, 6),
        "kept_seconds": round(len(kept) / rate, 6),
        # where each kept stretch begins in the file: a rerun that takes this audio from the corpus (prep_earlier)
        # reads them back, so a cut in time made there is recorded in the file's time
        "segment_starts_seconds": [round(int(s) / rate, 6) for s, _ in intervals],
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
    if recovered is not None:
        entry["recovered"] = recovered
    if clipped is not None:
        entry["clipped"] = clipped
    return pcm, [(int(s), int(e - s)) for s, e in intervals], entry


def _sound_found(path: Path, view: FinishedView | None, decoded, settings: PrepSettings):
    """(mono, its stretches of sound, what was clipped or None) of a file's resampled mono mix (decoded: its
    decode_mono), or why it is skipped. A mix with no sound, samples too large to resample, or a source whose
    peak at its own rate (decoded.peak_in) is above SPIKE_FLOOR, is looked at again at its own rate for spikes
    (spikes.find_spikes; in a mix, at the level one channel's spike has there), which hide or dim its sound: judged
    on the source, not on the resampled mix, whose peak resampling lowers (a spike of +26 dBFS at 192 kHz comes
    under +6 dBFS at 16 kHz), so a file gets the same verdict at any corpus rate; a mix merely hot is not decoded
    again: it is scaled down after."""
    mono, rate_in, frames = decoded.samples, decoded.sample_rate_in, decoded.frames
    intervals, clipped = _sound(mono, settings), None
    if intervals is not None and len(intervals) and not decoded.peak_in > SPIKE_FLOOR:
        return mono, intervals, None
    source = mono if rate_in == settings.sample_rate else _own_rate(path, view, mono)
    spikes = find_spikes(source, decoded.channels if decoded.peak_in > SPIKE_FLOOR else 1) if len(source) else None
    if spikes is not None:
        source = np.clip(source, -spikes.rest_peak, spikes.rest_peak)
        mono = source if rate_in == settings.sample_rate else resample(source, rate_in, settings.sample_rate)
        intervals = _sound(mono, settings)
        clipped = (f"{counted(spikes.count, 'sample')} above {dbfs(spikes.floor)} and at least "
                   f"{spikes.above_db:.0f} dB above all the rest{_in_the_mix(spikes)} "
                   f"({'at' if spikes.count == 1 else 'the first at'} {spikes.first / rate_in:.3f} s: "
                   f"{spikes.value:.3g}) clipped to the rest's peak ({dbfs(spikes.rest_peak)})")
    if intervals is None:
        return _nonfinite(0, None, frames, rate_in)
    if len(intervals) == 0:
        # a spike is the loudest channel's peak, not sound the mix lost: the channels without one are what may cancel
        why = channels_cancel(decoded.loudest_channel if spikes is None else _loudest_unspiked(decoded), source) + \
            why_no_sound(source, mono, settings.min_segment_seconds, settings.sample_rate)
        return why if spikes is None else _spike_and_no_sound(spikes, rate_in, why)
    if clipped is not None:  # one sample: "a damaged sample ... replace it" (not "the first", "them")
        one = spikes.count == 1
        logger.warning("%s: %s: %s, under which its sound would have counted as silence or been scaled down; "
                       "replace %s in the file to keep it unclipped", path, clipped,
                       "a damaged sample" if one else "damaged samples", "it" if one else "them")
    return mono, intervals, clipped


def _loudest_unspiked(decoded) -> float | None:
    """The largest |sample| at or under SPIKE_FLOOR of any of a file's channels (decoded: its decode_mono), None for
    one channel: the sound its mix may have lost to channels cancelling, the spikes passed over (in every channel
    that holds one: two channels of a tone and its inverse, each with a spike, hold that tone, not silence)."""
    if decoded.channel_peaks is None:
        return None
    return max(decoded.channel_peaks, default=0.0)


def _spike_and_no_sound(spikes, rate_in: int, why: str) -> str:
    """Why a file whose spikes (spikes.Spikes) hid no sound is skipped: the spike (the first of several) named, then
    why the rest is none (in a mix of channels, the mix's rest: its channels may hold sound that cancels there, said
    where they do)."""
    one = spikes.count == 1  # more: a spike in each of two channels, say, the first named
    spike = (f"{'a spike' if one else 'spikes, the first'} of {spikes.value:.3g} at {spikes.first / rate_in:.3f} s "
             f"({counted(spikes.count, 'sample')} above {dbfs(spikes.floor)}{_in_the_mix(spikes)}: "
             "damaged float audio)")
    holds = "it holds" if spikes.channels == 1 else "its mono mix holds"
    without = "without it" if one else "without them"
    if why.startswith("silent"):
        return f"{holds} only silence and {spike}; {without}, {why}"
    return f"{holds} {spike} and, {without}, {why}"


def _in_the_mix(spikes) -> str:
    """Where spikes (spikes.Spikes) were found in a mix of channels, words saying that their level, value and the
    thresholds said are the mix's (a channel's sample above SPIKE_FLOOR has 1/n of it there); "" for one channel."""
    if spikes.channels == 1:
        return ""
    floor = dbfs(spikes.floor)
    return f" in the mono mix of its {spikes.channels} channels, where a channel's {dbfs(SPIKE_FLOOR)} is {floor}"


def _nonfinite(n: int, first: int | None, frames: int, rate_in: int) -> str:
    """Why a file with NaN or infinite samples in n of its frames (the first: frame first, at rate_in Hz) is
    skipped: how many, where the first is, and what to do (they have no level, nor a 16-bit value; around them
    resampling makes NaNs too)."""
    if not n:  # finite in the file, not once resampled (values near float32's largest)
        return ("its samples are too large for float32 arithmetic (beyond 1e38) once resampled: damaged float "
                "audio; re-export the file to use it")
    where = "at" if n == 1 else "the first at"  # one frame: not "the first" of one
    return (f"contains NaN or infinite samples in {n:,} of its {frames:,} frames, {where} "
            f"{first / rate_in:.3f} s (damaged float audio, or values beyond float32's range): "
            "re-export the file, or replace those samples, to use it")


def _sound(mono: np.ndarray, settings: PrepSettings):
    """The stretches of sound of mono (split_on_silence), or None where it holds NaN or infinite samples (float
    samples near float32's largest, finite in the file, overflow in resampling)."""
    if not np.all(np.isfinite(mono)):
        return None
    return split_on_silence(mono, settings.sample_rate, top_db=settings.top_db,
                            min_silence_seconds=settings.min_silence_seconds,
                            min_segment_seconds=settings.min_segment_seconds)


def _own_rate(path: Path, view: FinishedView | None, mono: np.ndarray) -> np.ndarray:
    """A file that kept no sound (or peaks above full scale), its mono mix at its own rate (the reason is judged
    there too: why_no_sound; spikes are found there), decoded again for it (from view where it is an unfinished
    WAV; an ordinary file never needs it: not kept in memory beside the resampled mono)."""
    try:
        return decode_mono(path, None, view).samples
    except (AudioError, OSError) as e:  # replaced meanwhile: say what can be said of the resampled mix
        logger.debug("%s: cannot decode it again (%s)", path, e)
        return mono


def decode_files(found, file_labels, tmp: Path, settings: PrepSettings, progress: bool, digests=None,
                 earlier: Earlier | None = None) -> Decoded:
    """Decode, trim and store each file's kept audio as tmp/<file_index>.pcm (int16); see Decoded.

    digests: the files' sha256 by path where read already. earlier: a corpus of these inputs and settings
    that skipped files for lack of memory: every other file is taken from it (Earlier.outcome), its audio
    left to Earlier.write_audio (Decoded.from_earlier).
    """
    files, seg_lengths, seg_starts, skipped, from_earlier = [], [], [], [], {}
    digests = dict(earlier.digests() if earlier is not None else {}, **(digests or {}))
    seen: dict[str, tuple] = {}  # sha256 -> (path, label) kept: the same recording twice would leak
    heard: dict[str, tuple] = {}  # the kept audio's sha256 -> (path, label): the same, retagged or in another container
    bar = progress_bar(total=len(found), desc="prep", unit="file") if progress else None
    for (path, _root), label in zip(found, file_labels):
        if bar is not None:
            bar.set_postfix_str(prep_inputs.printable_name(path.name), refresh=False)
        digest = digests.get(str(path))
        result = None
        if digest is None:
            digest, result = prep_inputs.digest(path)
            digests[str(path)] = digest
        if result is None and digest in seen:  # the same bytes as a file kept: not decoded again
            result = _duplicate(seen[digest], label)
        if result is None and earlier is not None:
            result = earlier.outcome(str(path))
        if result is None:
            result = decode_one(path, settings, digest)
        if not isinstance(result, str):
            audio = _audio_sha256(result[0], earlier)
            if audio in heard:
                result = _duplicate(heard[audio], label, " (the same audio: other tags or another container)")
        if isinstance(result, str):
            # a line each for the first few; thousands of tiny files would bury every other line in theirs
            logger.log(logging.WARNING if len(skipped) < SKIP_LINES else logging.DEBUG, "skipping %s: %s", path, result)
            skipped.append({"path": str(path), "reason": str(result)})
            if isinstance(result, MemorySkip):
                skipped[-1]["retry"] = True
        else:
            kept, segments, entry = result
            if isinstance(kept, EarlierAudio):
                from_earlier[len(files)] = kept.index
            else:
                write_array(tmp / f"{len(files)}.pcm", kept)
            entry["label"] = label
            seen[entry["sha256"]] = heard[audio] = (str(path), label)
            seg_lengths.append([n for _, n in segments])
            starts = [start for start, _ in segments]
            seg_starts.append(None if None in starts else starts)
            files.append(entry)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if len(skipped) > SKIP_LINES:
        more = len(skipped) - SKIP_LINES
        logger.warning("skipped %s without a line%s (%s); --verbose names %s, and manifest.json's "
                       '"skipped" lists every skipped file and why', counted(more, "more file", "more files"),
                       "" if more == 1 else " each", _most_common_reasons(skipped[SKIP_LINES:]),
                       "it" if more == 1 else "them")
    return Decoded(files, seg_lengths, skipped, digests, from_earlier, seg_starts)


def _most_common_reasons(skipped: list[dict], shown: int = 3) -> str:
    """"1990: no stretch of sound of at least 0.5 s; 5: duplicate of a file kept" for the most common reasons
    (duplicates counted as one reason: each names its own original; reasons that differ only in their figures,
    a file's own levels or frame counts, as one, each figure written "…" where they differ)."""
    keys = [_reason_key(item["reason"]) for item in skipped]
    worded: dict[str, set] = {}
    for key, item in zip(keys, skipped):
        worded.setdefault(key, set()).add(item["reason"])
    said = {key: key if key == _DUPLICATES else _common_words(reasons) for key, reasons in worded.items()}
    counts = Counter(keys)
    text = "; ".join(f"{count}: {said[key]}" for key, count in counts.most_common(shown))
    return text + (f"; {counted(len(counts) - shown, 'other reason')}" if len(counts) > shown else "")


_DUPLICATES = "duplicate of a file kept"
_FIGURE = re.compile(r"(\d[\d,]*(?:\.\d+)?)")


def _common_words(reasons: set) -> str:
    """Reasons that differ only in their figures, as one: each figure kept where every reason has it, else "…"."""
    pieces = [_FIGURE.split(reason) for reason in sorted(reasons)]  # words, figure, words, ... alike in each
    first = pieces[0]
    return "".join(piece if i % 2 == 0 or all(other[i] == piece for other in pieces) else "…"
                   for i, piece in enumerate(first))


def _reason_key(reason: str) -> str:
    """What a skip reason is counted under in the summary: duplicates as one, the rest with their figures masked."""
    return _DUPLICATES if reason.startswith("duplicate of ") else _FIGURE.sub("…", reason)


def _duplicate(kept: tuple, label, how: str = "") -> str:
    """Why a file with the bytes (or, how says, the audio) of one kept already is skipped; the labels too where
    they differ (a link in one album folder to a file in another: the recording trains under the first one's label)."""
    path, kept_label = kept
    if kept_label == label:
        return f"duplicate of {path}{how}"
    return f"duplicate of {path}{how}, kept under label {kept_label!r} (not {label!r})"


def _audio_sha256(kept, earlier: Earlier | None) -> str:
    """The sha256 of a file's kept audio (int16, as its .pcm holds it): decode_one's array, or an Earlier
    corpus's (EarlierAudio), read from its arrays. Two files that differ only in their tags (a track in its
    album and in a compilation, retagged) or container (WAV and FLAC) decode to the same: one would train
    and the other be tested on."""
    if isinstance(kept, EarlierAudio):
        return earlier.audio_sha256(kept.index)
    return hashlib.sha256(memoryview(np.ascontiguousarray(kept)).cast("B")).hexdigest()


def room_needed(found, sample_rate: int) -> int:
    """Bytes a prep of found ([(path, root)]) may need free in the corpus folder: each file's audio as its
    header declares it (no more than the file's size can hold: audio_decode.frames_held), at sample_rate in int16,
    twice over (the decoded pieces, then the split arrays made of them, while the corpus there stays until the new
    one is whole). An upper bound: silence trimmed and files skipped need less. A file whose header does not open
    counts 0. Reads the headers only."""
    import soundfile as sf

    from wavegen.audio_decode import DecoderNotes, frames_held

    total = 64 * 1024  # the manifest, the segment arrays, the .npy headers
    with DecoderNotes():  # mpg123's notes on a damaged MP3 kept off the console: its decoding says them
        for path, _root in found:
            try:
                info = sf.info(os.fsencode(path))
                size = path.stat().st_size
                declared = declared_frames(os.fsencode(path), info.frames, info.format)  # a chained Ogg's unknown
                frames = frames_held(declared, size, info.format, info.subtype, info.channels)
                if frames == 0 and info.format == "WAV":  # unfinished, perhaps: a byte a sample at least
                    frames = size // info.channels
                total += 4 * (frames * sample_rate // info.samplerate + 1)
            except Exception:  # libsndfile's failures are RuntimeErrors; the file is skipped with why when decoded
                continue
    return total


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
