"""Where prep cuts: the stretches of sound in a recording, and the split each piece goes to.

Silence is measured on frames of FRAME_LENGTH samples every HOP_LENGTH samples (at the
corpus rate): a frame's level is its RMS about the file's DC offset (an offset is not sound), and a
frame is silent when its level is more than top_db below the loudest frame of the file, or
below SILENCE_FLOOR (half a 16-bit step: nothing the corpus's int16 samples can hold). Sound
keeps a margin of up to FRAME_LENGTH - HOP_LENGTH samples on each side. A file left with no
sound is skipped for the reason :func:`why_no_sound` gives.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

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


def manifest_seconds(value) -> float | None:
    """A manifest's number of seconds as a float; None for anything else (text, a bool, NaN, an integer too large
    for a float, as a damaged manifest may hold)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if np.isfinite(value) else None


CUT_SLACK_SECONDS = 0.01  # a recorded cut this little past the file's recorded end is at its end (rounding)


def _recorded_cuts(entry: dict | None) -> list[float] | None:
    """An earlier entry's "time_cuts_seconds" ([end of train, end of val] in the file's own time), None where it
    records none (a manifest from before they were recorded) or not two ordered times within the file (damaged:
    text, NaN, an integer beyond a float's range, a time past the entry's duration_seconds: prep records none)."""
    entry = entry or {}
    cuts = entry.get("time_cuts_seconds")
    if not isinstance(cuts, list) or len(cuts) != 2:
        return None
    cuts = [manifest_seconds(c) for c in cuts]
    if None in cuts or not 0 <= cuts[0] <= cuts[1]:
        return None
    duration = manifest_seconds(entry.get("duration_seconds"))
    return None if duration is not None and cuts[1] > duration + CUT_SLACK_SECONDS else cuts


class _TimeCuts:
    """Where each file cut in time changes split, in its kept audio (of): the fractions' cuts, or, for a file held
    in "time" whose earlier entry records its cuts in the file's time, those times' places in its kept audio now, so
    another --top-db (or a remaster) moves no earlier val or test audio into train. record(i): the cuts in the
    file's time, seconds from its start, for its entry's "time_cuts_seconds" (None where its segments' starts are
    not known). starts: per file its kept segments' first samples in the file (at sample_rate), None where unknown."""

    def __init__(self, seg_lengths: list, starts: list | None, sample_rate: int | None, val_fraction: float,
                 test_fraction: float, olds: list):
        self.lengths, self.rate, self.fractions = seg_lengths, sample_rate, (val_fraction, test_fraction)
        self.starts = starts if starts is not None and sample_rate else [None] * len(seg_lengths)
        self.olds = olds  # earlier_entries; a file drawn again is forgotten (its old cut no longer holds)

    def held(self, i: int) -> list[float] | None:
        old = self.olds[i]
        return _recorded_cuts(old) if old is not None and old["split"] == "time" and self.starts[i] is not None \
            else None

    def of(self, i: int) -> list[int]:
        kept, times = sum(self.lengths[i]), self.held(i)
        if times is None:
            return _time_cuts(kept, *self.fractions)
        end = self.starts[i][-1] + self.lengths[i][-1]  # a cut past the kept audio's end is at it (no overflow)
        at = [round(min(t * self.rate, end)) for t in times]
        return [0, *(sum(min(max(a - s, 0), n) for s, n in zip(self.starts[i], self.lengths[i])) for a in at), kept]

    def record(self, i: int, duration: float | None = None) -> list[float] | None:
        """The cuts for file i's entry; duration: the file's length in seconds now, where known: a held cut past it
        (the file shortened) is recorded at its end, so it stays a time of the file and its val and test audio,
        should the longer file come back, goes to test, never to train."""
        if self.starts[i] is None:
            return None
        times = self.held(i) or [round(self._file_sample(i, c) / self.rate, 6) for c in self.of(i)[1:3]]
        return times if duration is None else [min(t, duration) for t in times]

    def short_hold(self, i: int) -> str | None:
        """Where file i holds its recorded cut (held) yet its kept audio now gives a split under half of what its
        fractions would (it begins after or just before the end of train: another --top-db trimmed a long quiet
        intro; or it ends before or just after the end of train or val: a quiet tail trimmed, a shorter remaster),
        words saying so, with what each split holds, and what to do; else None."""
        times = self.held(i)
        if times is None:
            return None
        at, fair = self.of(i), _time_cuts(sum(self.lengths[i]), *self.fractions)
        now = [(at[n + 1] - at[n]) / self.rate for n in range(3)]
        would = [(fair[n + 1] - fair[n]) / self.rate for n in range(3)]
        if not any(w > 0 and h < w / 2 for h, w in zip(now, would)):
            return None
        begin, end = self.starts[i][0] / self.rate, (self.starts[i][-1] + self.lengths[i][-1]) / self.rate
        return (f"cut in time before at {times[0]:.3f} s and {times[1]:.3f} s of the file, and held there (no val or "
                f"test audio moves into train), but its kept audio now lies between {begin:.3f} s and {end:.3f} s "
                f"of it (another --top-db, or the file changed): train holds {now[0]:.3f} s of it, val {now[1]:.3f} s "
                f"and test {now[2]:.3f} s, where its fractions would give {would[0]:.3f} s, {would[1]:.3f} s and "
                f"{would[2]:.3f} s; to cut it again by its fractions, prepare with another --seed (every file's split "
                "is drawn again) or into a new folder")

    def _file_sample(self, i: int, position: int) -> int:
        """The file's sample where its kept audio's position lies (between two segments: the earlier one's end)."""
        for s, n in zip(self.starts[i], self.lengths[i]):
            if position <= n:
                return s + position
            position -= n
        return self.starts[i][-1] + self.lengths[i][-1]


def earlier_splits(manifest: dict) -> dict[str, dict] | None:
    """The files of an earlier corpus's manifest by their bytes' hash and by path: {"sha256": {hash: entry},
    "path": {path: entry}}, what assign_splits' earlier takes (earlier_entries matches them); None where it holds
    none. Entries that are not a file's (another make, damaged: a path or sha256 not a string) are passed over."""
    by_sha, by_path = {}, {}
    for f in manifest.get("files", []):
        if isinstance(f, dict) and f.get("split") in (*SPLITS, "time") and isinstance(f.get("path"), str) \
                and isinstance(f.get("sha256"), str):
            by_path[f["path"]] = f
            by_sha.setdefault(f["sha256"], f)
    return {"sha256": by_sha, "path": by_path} if by_path else None


def earlier_entries(files: list[dict], earlier: dict | None) -> list[dict | None]:
    """Per file of files the earlier entry (earlier_splits) it continues: the one with its bytes (moved, renamed,
    or copied over another file); else the one at its path whose bytes are no longer among files (the same
    recording, remastered); None for a new file. Bytes first: renumbered takes keep their audio's split."""
    if not earlier:
        return [None] * len(files)
    now = {f["sha256"] for f in files}
    out = []
    for f in files:
        old = earlier["sha256"].get(f["sha256"])
        if old is None:
            old = earlier["path"].get(f["path"])
            old = None if old is None or old["sha256"] in now else old
        out.append(old)
    return out


def _held(members: list[int], files: list[dict], kept: list[int], cuts: _TimeCuts) -> dict[str, int]:
    """The members that keep their earlier split (cuts.olds: earlier_entries; its "split" set): {split: their kept
    duration in it}. A file cut in time keeps its recorded cut (_TimeCuts); one from a manifest that records none,
    whose kept length changed, is named: its cut moved with it."""
    held: dict[str, int] = {}
    for i in members:
        old = cuts.olds[i]
        if old is None:
            continue
        split = files[i]["split"] = old["split"]
        at = cuts.of(i) if split == "time" else None
        if split == "time" and cuts.held(i) is None:
            _say_unheld_cut(files[i], old)
        for n, name in enumerate(SPLITS):
            share = kept[i] if split == name else 0 if at is None else at[n + 1] - at[n]
            if share or split == name:
                held[name] = held.get(name, 0) + share
    return held


def _say_unheld_cut(entry: dict, old: dict) -> None:
    """Name a file cut in time before whose earlier entry (old) gives no cut to hold: a damaged "time_cuts_seconds"
    always, one from a prep that recorded none where its kept length changed (its cut, at fractions of it, moved)."""
    was, now = old.get("kept_seconds"), entry.get("kept_seconds")
    if "time_cuts_seconds" in old:
        logger.warning("%s: cut in time before, and the earlier corpus's \"time_cuts_seconds\" for it is damaged (%s: "
                       "not two ordered times in seconds within the file): cut at its fractions of its kept audio "
                       "now, so a run begun on the earlier corpus may train on audio it validated on",
                       entry["path"], str(old["time_cuts_seconds"])[:80])
    elif isinstance(was, (int, float)) and isinstance(now, (int, float)) and abs(was - now) > 1e-3:
        logger.warning("%s: cut in time before, its kept audio is %.3f s now, was %.3f s (another --top-db, or the "
                       "file changed), and the earlier corpus records no time of its cuts (an older prep): its val and "
                       "test parts moved, and a run begun on the earlier corpus may train on audio it validated on",
                       entry["path"], now, was)


def _assign_label(members: list[int], order: list[int], files: list[dict], kept: list[int], val_fraction: float,
                  test_fraction: float, held: dict[str, int]) -> set[str]:
    """Assign order (the label's members not held, shuffled); returns the label's split modes."""
    n_holdouts = (val_fraction > 0) + (test_fraction > 0)
    new = set(order)
    was = {"time" if files[i]["split"] == "time" else "file" for i in members if i not in new}
    if order and (len(members) >= n_holdouts + 1 or "file" in was):
        for i, name in _assign_file_splits(order, kept, val_fraction, test_fraction, held).items():
            files[i]["split"] = name
        return was | {"file"}
    for i in order:
        files[i]["split"] = "time"
    return was | ({"time"} if order else set())


def _say_empty_holdouts(label: str, splits: list[str], val_fraction: float, test_fraction: float) -> None:
    """Name val or test left with no audio of a label whose files kept their earlier splits (the files held there
    gone, none new sent there), though its fraction asks for some: a fresh prep would fill them, and training
    (val: no validation, best/ the latest model) and eval (test) would otherwise meet the empty split later."""
    empty = [name for name, fraction in (("val", val_fraction), ("test", test_fraction))
             if fraction > 0 and name not in splits and "time" not in splits]
    if empty:
        logger.warning("%s: %s now %s no audio: no file held there is left and the files kept their earlier "
                       "splits (none new went there); add recordings, or prepare with another --seed to draw every "
                       "split again (a run begun on the earlier corpus may then be scored on audio it trained on)",
                       f"label {label!r}" if label else "the corpus", " and ".join(empty),
                       "holds" if len(empty) == 1 else "hold")


def _train_share(members: list[int], files: list[dict], kept: list[int], cuts: _TimeCuts) -> int:
    """How much of the members' kept audio is in train."""
    return sum(kept[i] if files[i]["split"] == "train" else cuts.of(i)[1] if files[i]["split"] == "time" else 0
               for i in members)


def assign_splits(files: list[dict], seg_lengths: list[list[int]], val_fraction: float,
                  test_fraction: float, seed: int, earlier: dict | None = None, seg_starts: list | None = None,
                  sample_rate: int | None = None) -> tuple[dict, str, set[int]]:
    """Assign each file to train, val or test (sets files[i]["split"]; "time" for a file cut in time).

    files: manifest entries (their "label" groups them: each label is split on its own);
    seg_lengths: per file the lengths of its kept segments, end to end. Files go whole to
    test, then val, by kept duration (shuffled with seed); a label with too few files has
    each file cut in time instead (the last test_fraction to test, val_fraction before it).
    seg_starts (with sample_rate, the rate of both): per file its kept segments' first samples in the file (None
    where not known): a file cut in time records its cuts in the file's own time, its entry's "time_cuts_seconds".
    earlier: earlier_splits of a corpus prepared before with the same fractions, seed and labels: a file it held
    (earlier_entries: the same bytes, or else the same path whose old bytes are gone: remastered) keeps its split,
    one cut in time its recorded cuts (where its kept audio changed, another --top-db say, the audio of each moment
    of the file goes where it went); only the others are assigned, toward the fractions of their whole label (a
    label that is still cut in time has its new files cut in time too). A label left with no train audio (only
    files held in val or test, none new) is drawn again as a fresh prep draws it, said. A held cut that leaves the
    file's train, val or test under half its fractions' share (its kept audio now begins after or ends before a
    cut, or near it) is said.
    Returns (pieces: {split: [(file_index, offset, length)]} into each file's kept audio,
    split_mode: "file", "time", or "mixed" when some labels had too few files,
    kept: the indexes of the files that kept their earlier split (not those of a label drawn again)).
    """
    kept = [sum(lengths) for lengths in seg_lengths]
    groups: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        groups.setdefault(f["label"] or "", []).append(i)
    cuts = _TimeCuts(seg_lengths, seg_starts, sample_rate, val_fraction, test_fraction, earlier_entries(files, earlier))
    rng = np.random.default_rng(seed)
    modes = set()
    pieces = {s: [] for s in SPLITS}
    for label in sorted(groups):
        members = groups[label]
        shuffled = [members[j] for j in rng.permutation(len(members))]  # a fresh prep's order
        held = _held(members, files, kept, cuts)
        order = [i for i in shuffled if files[i]["split"] is None]
        label_modes = _assign_label(members, order, files, kept, val_fraction, test_fraction, held)
        if held and not _train_share(members, files, kept, cuts):
            for i in members:
                files[i]["split"] = cuts.olds[i] = None
            label_modes = _assign_label(members, shuffled, files, kept, val_fraction, test_fraction, {})
            logger.warning("%s: every file left was in val or test before and none is new: drawn again as a fresh "
                           "prep draws it (train needs audio); a run begun on the earlier corpus validated on audio "
                           "it may train on now", f"label {label!r}" if label else "the corpus")
        elif held:
            _say_empty_holdouts(label, [files[i]["split"] for i in members], val_fraction, test_fraction)
        for i in members:
            short = cuts.short_hold(i) if files[i]["split"] == "time" else None
            if short is not None:
                logger.warning("%s: %s", files[i]["path"], short)
        modes |= label_modes
    for i, f in enumerate(files):
        offset = 0
        if f["split"] == "time":
            # last test_fraction of the kept audio to test, val_fraction before it to val (or the recorded cuts)
            at, record = cuts.of(i), cuts.record(i, manifest_seconds(f.get("duration_seconds")))
            if record is not None:
                f["time_cuts_seconds"] = record
            for length in seg_lengths[i]:
                for name, lo, hi in zip(SPLITS, at[:-1], at[1:]):
                    a, b = max(offset, lo), min(offset + length, hi)
                    if b > a:
                        pieces[name].append((i, a, b - a))
                offset += length
        else:
            for length in seg_lengths[i]:
                pieces[f["split"]].append((i, offset, length))
                offset += length
    split_mode = modes.pop() if len(modes) == 1 else "mixed"
    return pieces, split_mode, {i for i, old in enumerate(cuts.olds) if old is not None}


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
