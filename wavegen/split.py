"""Where prep cuts: the stretches of sound in a recording, and the split each piece goes to.

Silence is measured on frames of FRAME_LENGTH samples every HOP_LENGTH samples (at the
corpus rate): a frame's level is its RMS about the file's DC offset (an offset is not sound), and a
frame is silent when its level is more than top_db below the loudest frame of the file, or
below SILENCE_FLOOR (half a 16-bit step: nothing the corpus's int16 samples can hold). Sound
keeps a margin of up to FRAME_LENGTH - HOP_LENGTH samples on each side. A file left with no
sound is skipped for the reason :func:`why_no_sound` gives.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

SPLITS = ("train", "val", "test")
FRAME_LENGTH = 1024  # 64 ms at 16 kHz: long enough for a stable RMS of low notes
HOP_LENGTH = 256  # silence boundaries are resolved to 16 ms at 16 kHz
# A frame whose level is under half a 16-bit step (-96.3 dBFS) is silent whatever top_db says: the
# corpus stores int16, where it is zeros or a flicker of the last bit. (With the default top_db this
# only decides for files whose loudest frame is under -56 dBFS.)
SILENCE_FLOOR = 0.5 / 32767


def frame_levels(x: np.ndarray) -> np.ndarray:
    """Level of each frame of mono x [T]: float64 [ceil(T / HOP_LENGTH)], its RMS about x's DC offset.

    Frame i covers samples [i * HOP_LENGTH, i * HOP_LENGTH + FRAME_LENGTH) (shorter at the end).
    A DC offset (a cheap converter's, a float file's) is not sound: measured about zero, an offset
    of 0.005 (-46 dBFS) sits within a 40 dB gate of a tone at 0.5, and no frame is ever silent.

    The offset is read where it shows alone, in the quietest whole frame (the least RMS about its
    own mean): that frame's mean, when the mean outweighs the frame's own variation (an offset
    smaller than that raises no frame by more than 3 dB, and is left alone). Not each frame's own
    mean: in a 64 ms frame a low note (30 Hz: under two periods) has a mean of its own, so bass
    would read quieter and the cuts would move in files with no offset at all. Not the file's
    mean: music does not average to exactly zero over a file (a low note cut mid-period), and the
    recording's digital silence, measured about that mean, would no longer be silent. A file
    without an offset (its quietest frame digital silence, or noise about zero) is measured
    about zero, exactly as before; a constant (x = 0.3) is silent throughout.
    """
    x = np.asarray(x, dtype=np.float32)
    t = len(x)
    if t == 0:
        return np.zeros(0, dtype=np.float64)
    # Sum and energy per hop block (einsum: no [T] temporary), then frames of k blocks by a sliding
    # sum (not a running cumsum, whose rounding grows with the file and would swamp a quiet frame).
    full = t // HOP_LENGTH
    blocks = x[: full * HOP_LENGTH].reshape(full, HOP_LENGTH)
    energy = np.einsum("ij,ij->i", blocks, blocks, dtype=np.float64)
    total = blocks.sum(axis=1, dtype=np.float64)
    counts = np.full(full, HOP_LENGTH, dtype=np.float64)
    if t > full * HOP_LENGTH:
        tail = x[full * HOP_LENGTH :].astype(np.float64)
        energy = np.append(energy, tail @ tail)
        total = np.append(total, tail.sum())
        counts = np.append(counts, len(tail))
    k = FRAME_LENGTH // HOP_LENGTH
    frame_energy, frame_total, frame_counts = (
        np.lib.stride_tricks.sliding_window_view(np.concatenate([v, np.zeros(k - 1)]), k).sum(axis=1)
        for v in (energy, total, counts))
    power, mean = frame_energy / frame_counts, frame_total / frame_counts
    offset = 0.0
    whole = np.flatnonzero(frame_counts == FRAME_LENGTH)  # a short last frame (1 sample) is no measure
    if len(whole):
        spread = np.sqrt(np.maximum(power[whole] - mean[whole] ** 2, 0.0))
        quietest = int(np.argmin(spread))
        if abs(mean[whole[quietest]]) > spread[quietest]:
            offset = float(mean[whole[quietest]])
    # mean of (x - offset)^2 per frame; a constant's rounding leaves ~1e-9, far under SILENCE_FLOOR
    return np.sqrt(np.maximum(power - 2.0 * offset * mean + offset * offset, 0.0))


def split_on_silence(
    x: np.ndarray,
    sample_rate: int,
    *,
    top_db: float = 40.0,
    min_silence_seconds: float = 1.0,
    min_segment_seconds: float = 0.5,
) -> np.ndarray:
    """Find the stretches of sound in mono x [T] float32.

    Leading and trailing silence is dropped; a silence longer than min_silence_seconds
    splits the sound (shorter rests stay inside a segment); segments shorter than
    min_segment_seconds are dropped. Returns int64 [N, 2] rows (start, end) in samples,
    end exclusive; empty when x is silent (no frame reaches SILENCE_FLOOR: all zeros, a
    constant, or sound too quiet for 16 bits).
    """
    t = len(x)
    if t == 0:
        return np.zeros((0, 2), dtype=np.int64)
    rms = frame_levels(x)
    n_blocks = len(rms)
    k = FRAME_LENGTH // HOP_LENGTH
    starts = np.arange(n_blocks)
    peak = rms.max()
    if peak < SILENCE_FLOOR:
        return np.zeros((0, 2), dtype=np.int64)
    loud = rms >= max(peak * 10.0 ** (-top_db / 20.0), SILENCE_FLOOR)
    # A block is sound when any frame covering it (frames starting k-1 blocks earlier) is loud.
    cum_loud = np.concatenate([[0], np.cumsum(loud)])
    sound = (cum_loud[starts + 1] - cum_loud[np.maximum(starts - k + 1, 0)]) > 0

    edges = np.diff(np.concatenate([[0], sound.astype(np.int8), [0]]))
    run_starts = np.flatnonzero(edges == 1)
    run_ends = np.flatnonzero(edges == -1)
    min_gap_blocks = min_silence_seconds * sample_rate / HOP_LENGTH
    segments = []
    seg_start, seg_end = run_starts[0], run_ends[0]
    for s, e in zip(run_starts[1:], run_ends[1:]):
        if s - seg_end > min_gap_blocks:  # a long silence: close the segment
            segments.append((seg_start, seg_end))
            seg_start = s
        seg_end = e
    segments.append((seg_start, seg_end))

    out = np.array(segments, dtype=np.int64) * HOP_LENGTH
    out[:, 1] = np.minimum(out[:, 1], t)
    keep = (out[:, 1] - out[:, 0]) >= min_segment_seconds * sample_rate
    return out[keep]


def _assign_file_splits(order: list[int], kept: list[int], val_fraction: float, test_fraction: float,
                        held: dict[str, int] | None = None) -> dict[int, str]:
    """Give whole files of order to test, then val, by kept duration; train keeps at least one.
    held: {split: kept duration} of the label's files that keep an earlier split (a file cut in time counts in
    each split its cut): the fractions are of the whole label, and a split held needs no file of order."""
    held = held or {}
    total = sum(kept[i] for i in order) + sum(held.values())
    remaining = list(order)
    assigned = {}
    holdouts = [(name, f) for name, f in (("test", test_fraction), ("val", val_fraction)) if f > 0]
    for n, (name, fraction) in enumerate(holdouts):
        target = fraction * total - held.get(name, 0)
        later = [s for s, _ in holdouts[n + 1 :] if s not in held] + ([] if "train" in held else ["train"])
        max_files = len(remaining) - len(later)  # leave one for each later split that has none
        chosen, acc = [], 0
        for i in remaining:  # in shuffled order: take a file if it brings us closer to target
            if len(chosen) < max_files and abs(acc + kept[i] - target) < abs(acc - target):
                chosen.append(i)
                acc += kept[i]
        if not chosen and max_files > 0 and name not in held:  # every file overshoots: take the closest one
            chosen.append(min(remaining, key=lambda i: abs(kept[i] - target)))
        for i in chosen:
            assigned[i] = name
            remaining.remove(i)
    for i in remaining:
        assigned[i] = "train"
    return assigned


def _time_cuts(kept: int, val_fraction: float, test_fraction: float) -> list[int]:
    """Where a file cut in time (kept samples long) changes split: [0, end of train, end of val, kept]."""
    n_test = round(kept * test_fraction)
    n_val = round(kept * val_fraction)
    return [0, kept - n_val - n_test, kept - n_test, kept]


def earlier_splits(manifest: dict) -> dict[tuple[str, str], str]:
    """The split of each file of an earlier corpus's manifest, by ("path", its path) and ("sha256", its bytes'
    hash): what assign_splits' earlier takes. Entries that are not a file's (another make) are passed over."""
    out = {}
    for f in manifest.get("files", []):
        if isinstance(f, dict) and f.get("split") in (*SPLITS, "time"):
            out[("path", f.get("path"))] = f["split"]
            out.setdefault(("sha256", f.get("sha256")), f["split"])
    return out


def _held(members: list[int], files: list[dict], kept: list[int], val_fraction: float, test_fraction: float,
          earlier: dict) -> dict[str, int]:
    """The members that keep their earlier split (its "split" set): {split: their kept duration in it}."""
    held: dict[str, int] = {}
    for i in members:
        split = earlier.get(("path", files[i]["path"])) or earlier.get(("sha256", files[i]["sha256"]))
        if split is None:
            continue
        files[i]["split"] = split
        cuts = _time_cuts(kept[i], val_fraction, test_fraction) if split == "time" else None
        for n, name in enumerate(SPLITS):
            share = kept[i] if split == name else 0 if cuts is None else cuts[n + 1] - cuts[n]
            if share or split == name:
                held[name] = held.get(name, 0) + share
    return held


def assign_splits(files: list[dict], seg_lengths: list[list[int]], val_fraction: float,
                  test_fraction: float, seed: int, earlier: dict | None = None) -> tuple[dict, str]:
    """Assign each file to train, val or test (sets files[i]["split"]; "time" for a file cut in time).

    files: manifest entries (their "label" groups them: each label is split on its own);
    seg_lengths: per file the lengths of its kept segments, end to end. Files go whole to
    test, then val, by kept duration (shuffled with seed); a label with too few files has
    each file cut in time instead (the last test_fraction to test, val_fraction before it).
    earlier: earlier_splits of a corpus prepared before with the same fractions and seed: a file it held (the
    same path, or else the same bytes: moved or renamed) keeps its split, even where its audio changed (the same
    recording, remastered); only the others are assigned, toward the fractions of their whole label (a label
    that is still cut in time has its new files cut in time too).
    Returns (pieces: {split: [(file_index, offset, length)]} into each file's kept audio,
    split_mode: "file", "time", or "mixed" when some labels had too few files).
    """
    kept = [sum(lengths) for lengths in seg_lengths]
    groups: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        groups.setdefault(f["label"] or "", []).append(i)
    n_holdouts = (val_fraction > 0) + (test_fraction > 0)
    rng = np.random.default_rng(seed)
    modes = set()
    pieces = {s: [] for s in SPLITS}
    for label in sorted(groups):
        members = groups[label]
        held = _held(members, files, kept, val_fraction, test_fraction, earlier or {})
        new = [i for i in members if files[i]["split"] is None]
        order = [new[j] for j in rng.permutation(len(new))]
        was = {"time" if files[i]["split"] == "time" else "file" for i in members if i not in new}
        modes.update(was)
        if new and (len(members) >= n_holdouts + 1 or "file" in was):
            modes.add("file")
            for i, name in _assign_file_splits(order, kept, val_fraction, test_fraction, held).items():
                files[i]["split"] = name
        elif new:
            modes.add("time")
            for i in new:
                files[i]["split"] = "time"
    for i, f in enumerate(files):
        offset = 0
        if f["split"] == "time":
            # last test_fraction of the kept audio to test, val_fraction before it to val
            cuts = _time_cuts(kept[i], val_fraction, test_fraction)
            for length in seg_lengths[i]:
                for name, lo, hi in zip(SPLITS, cuts[:-1], cuts[1:]):
                    a, b = max(offset, lo), min(offset + length, hi)
                    if b > a:
                        pieces[name].append((i, a, b - a))
                offset += length
        else:
            for length in seg_lengths[i]:
                pieces[f["split"]].append((i, offset, length))
                offset += length
    split_mode = modes.pop() if len(modes) == 1 else "mixed"
    return pieces, split_mode


# ----------------------------------------------------------------------------- why a file has no sound


def dbfs(level: float) -> str:
    """A level (0 .. 1 of full scale) as text in dBFS: "-96.3 dBFS"; "-inf dBFS" for 0."""
    return f"{20.0 * np.log10(level):.1f} dBFS" if level > 0 else "-inf dBFS"


def _silent_reason(mono: np.ndarray, level: float) -> str:
    """Why a file with nonzero samples but no frame at SILENCE_FLOOR (its loudest: level) is silent."""
    dc = float(mono.mean(dtype=np.float64))
    floor = f"half a 16-bit step ({dbfs(SILENCE_FLOOR)})"
    if abs(dc) >= SILENCE_FLOOR:
        over = f" (its loudest frame {dbfs(level)} RMS about the offset, under {floor})" if level > 0 else ""
        return f"silent: a constant DC offset of {dc:+.4g} and no sound over it{over}"
    return (f"silent at 16-bit resolution: peaks at {dbfs(float(np.abs(mono).max()))} (its loudest frame "
            f"{dbfs(level)} RMS), under {floor}")


CANCEL_DB = 40.0  # a mono mix this far under its loudest channel: the channels cancel, it was no quiet file


def channels_cancel(loudest_channel: float | None, mix: np.ndarray) -> str:
    """Where a file's channels have sound that its mono mix lacks (one the other's inverse: a wiring or
    stereo-widening slip), the start of its skip reason saying so; else ""."""
    mix_peak = float(np.abs(mix).max()) if len(mix) else 0.0
    if loudest_channel is None or loudest_channel <= SILENCE_FLOOR or \
            mix_peak > loudest_channel * 10 ** (-CANCEL_DB / 20):
        return ""
    return (f"its channels cancel in the mono mix (out of phase: they peak at {dbfs(loudest_channel)}, the mix "
            f"at {dbfs(mix_peak)}: mix it to mono yourself, one channel alone, say); the mix: ")


def why_no_sound(source: np.ndarray, mono: np.ndarray, min_segment_seconds: float, rate: int | None = None) -> str:
    """Why a file kept no segment. source: its mono audio at its own rate; mono: resampled to the
    corpus's, rate Hz (None: not said). Silence is judged on source first: resampling rings at the first
    and last samples of a constant, so in mono a DC offset alone rose above the floor there ("no stretch
    of sound"). A source whose sound resampling removed (its power CANCEL_DB down or more) has it above
    half the corpus's rate: said so, not that the file is silent."""
    if not np.any(source):
        return "silent: every sample is zero"
    level = float(frame_levels(source).max())
    if level < SILENCE_FLOOR:
        return _silent_reason(source, level)
    if rate is not None and _rms(mono) < _rms(source) * 10 ** (-CANCEL_DB / 20):
        return (f"its sound lies above {rate / 2:g} Hz, half the corpus's rate, which {rate} Hz samples cannot hold "
                f"(resampled, its level falls from {dbfs(_rms(source))} to {dbfs(_rms(mono))} RMS): prepare at a "
                "higher --sample-rate to keep it")
    if not np.any(mono):
        return "silent: every sample is zero"
    level = float(frame_levels(mono).max())
    if level < SILENCE_FLOOR:
        return _silent_reason(mono, level)
    return f"no stretch of sound of at least {min_segment_seconds} s"


def _rms(x: np.ndarray) -> float:
    """The RMS of x [T], summed in float64 a block at a time (no float64 copy of a long file)."""
    energy = sum(float(np.dot(b, b)) for b in (x[i : i + 65536].astype(np.float64) for i in range(0, len(x), 65536)))
    return float(np.sqrt(energy / len(x))) if len(x) else 0.0


class Spikes(NamedTuple):
    """A few samples far louder than all the rest of a file (damaged float audio: one 1e30 among music):
    count, first (the index of the first), value (its sample) and rest_peak (the loudest of the others)."""

    count: int
    first: int
    value: float
    rest_peak: float


SPIKE_DB = 40.0  # a sample this far above every other (and above SPIKE_FLOOR) is damage, not sound
SPIKE_FLOOR = 16.0  # +24 dBFS: above it a sample is no plausible audio (a click at 1.5 is sound, scaled down)


def find_spikes(x: np.ndarray) -> Spikes | None:
    """The samples of mono x [T] above SPIKE_FLOOR (+24 dBFS) and SPIKE_DB or more above every other sample (at
    most one in a thousand of them, 16 in a short file), under which the rest counts as silence, or is scaled far
    down; None where there are none. Over a rest all zero they hide nothing (rest_peak 0), yet are what a skipped
    file holds, named in its reason: "only silence and a spike of 1e+30 at 0.500 s". Sound is never that far above
    itself, nor that loud: a real peak over full scale (hot float audio, a digital click at 1.5 over quiet noise)
    is scaled down with the rest, not taken for a spike."""
    size = len(x)
    if size < 2:
        return None
    level = np.abs(x)
    m = min(size, max(16, size // 1000))
    top = np.sort(np.partition(level, size - m)[size - m:].astype(np.float64))[::-1]  # the m loudest, loudest first
    ratio = 10.0 ** (SPIKE_DB / 20.0)
    gaps = [j for j in range(1, m) if top[j - 1] > SPIKE_FLOOR and top[j - 1] >= ratio * top[j]]
    if not gaps:
        return None
    rest_peak = float(top[gaps[-1]])  # the widest set that leaves sound under it
    loud = np.flatnonzero(level > rest_peak)
    return Spikes(len(loud), int(loud[0]), float(x[loud[0]]), rest_peak)
