"""Corpus preparation (decode, mono, resample, trim silence, split) and the corpus reader.

A prepared corpus folder holds:
  manifest.json                 sources, splits, skipped files, prep parameters, fingerprint
  {train,val,test}.npy          int16 PCM [T] at the corpus rate, each split's segments end to end
  {train,val,test}_segments.npy int64 [N, 3] rows (start, length, file_index) into that array

Silence is measured on frames of FRAME_LENGTH samples every HOP_LENGTH samples (at the
corpus rate): a frame is silent when its RMS is more than top_db below the loudest frame of
the file. Sound keeps a margin of up to FRAME_LENGTH - HOP_LENGTH samples on each side.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from wavegen.audio import AudioError, float_to_int16, read_audio, resample, to_mono
from wavegen.errors import WavegenError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf"}
)
FRAME_LENGTH = 1024  # 64 ms at 16 kHz: long enough for a stable RMS of low notes
HOP_LENGTH = 256  # silence boundaries are resolved to 16 ms at 16 kHz
MANIFEST = "manifest.json"
_ARRAYS = tuple(f"{s}.npy" for s in SPLITS) + tuple(f"{s}_segments.npy" for s in SPLITS)


class CorpusError(WavegenError):
    """A corpus cannot be prepared or read; the message says what to do."""


# ----------------------------------------------------------------------------- silence


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
    end exclusive; empty when x is silent.
    """
    x = np.asarray(x, dtype=np.float32)
    t = len(x)
    if t == 0:
        return np.zeros((0, 2), dtype=np.int64)
    # Energy per hop block (einsum: no [T] temporary), then frames of K blocks by cumsum.
    full = t // HOP_LENGTH
    blocks = x[: full * HOP_LENGTH].reshape(full, HOP_LENGTH)
    energy = np.einsum("ij,ij->i", blocks, blocks, dtype=np.float64)
    counts = np.full(full, HOP_LENGTH, dtype=np.float64)
    if t > full * HOP_LENGTH:
        tail = x[full * HOP_LENGTH :].astype(np.float64)
        energy = np.append(energy, tail @ tail)
        counts = np.append(counts, len(tail))
    n_blocks = len(energy)
    k = FRAME_LENGTH // HOP_LENGTH
    starts = np.arange(n_blocks)
    ends = np.minimum(starts + k, n_blocks)
    cum_energy = np.concatenate([[0.0], np.cumsum(energy)])
    cum_counts = np.concatenate([[0.0], np.cumsum(counts)])
    frame_energy = np.maximum(cum_energy[ends] - cum_energy[starts], 0.0)
    rms = np.sqrt(frame_energy / (cum_counts[ends] - cum_counts[starts]))
    peak = rms.max()
    if peak <= 0.0:
        return np.zeros((0, 2), dtype=np.int64)
    loud = rms >= peak * 10.0 ** (-top_db / 20.0)
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


# ----------------------------------------------------------------------------- prep


def _discover(inputs: list[str | Path]) -> list[tuple[Path, Path | None]]:
    """Audio files under the inputs, sorted: (absolute path, input folder or None)."""
    found: dict[Path, Path | None] = {}
    for raw in inputs:
        p = Path(os.path.abspath(os.path.expanduser(str(raw))))
        if not p.exists():
            raise FileNotFoundError(f"input not found: {p}")
        if not p.is_dir():
            found.setdefault(p, None)  # named explicitly: let the decoder judge its format
            continue
        n_before = len(found)
        for dirpath, dirnames, filenames in os.walk(p):
            dirnames.sort()
            for name in filenames:
                if os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
                    found.setdefault(Path(dirpath) / name, p)
        if len(found) == n_before:
            logger.warning("no audio files found in %s", p)
    return sorted(found.items(), key=lambda item: str(item[0]))


def _folder_labels(found: list[tuple[Path, Path | None]]) -> list[str]:
    """Label of each file: its top-level subfolder of the input folder it was found in."""
    labels, unlabelled = [], []
    for path, root in found:
        parts = path.relative_to(root).parts if root is not None else ()
        if len(parts) < 2:
            unlabelled.append(str(path))
        labels.append(parts[0] if len(parts) >= 2 else "")
    if unlabelled:
        shown = "\n  ".join(unlabelled[:20]) + ("\n  ..." if len(unlabelled) > 20 else "")
        raise CorpusError(
            f'labels="folders" takes each file\'s label from its subfolder of an input folder, '
            f"but {len(unlabelled)} file(s) are not in a subfolder; move them into one "
            f"(e.g. INPUT/LABEL/file.wav):\n  {shown}"
        )
    return labels


def _fingerprint(params: dict, found: list[tuple[Path, Path | None]]) -> str:
    stats = []
    for path, _ in found:
        try:
            st = path.stat()
            stats.append([str(path), st.st_size, st.st_mtime_ns])
        except OSError:  # e.g. a broken link: prep will skip it and say why
            stats.append([str(path), -1, -1])
    payload = {
        "format_version": FORMAT_VERSION,
        "params": params,
        "silence_frames": [FRAME_LENGTH, HOP_LENGTH],
        "files": sorted(stats),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _existing_manifest(corpus_dir: Path, fingerprint: str) -> dict | None:
    """The manifest already in corpus_dir if it was made from the same inputs and params."""
    try:
        manifest = json.loads((corpus_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("fingerprint") != fingerprint:
        return None
    if manifest.get("format_version") != FORMAT_VERSION:
        return None
    if not all((corpus_dir / name).is_file() for name in _ARRAYS):
        return None
    return manifest


def _assign_file_splits(
    order: list[int], kept: list[int], val_fraction: float, test_fraction: float
) -> dict[int, str]:
    """Give whole files to test, then val, by kept duration; train keeps at least one."""
    total = sum(kept[i] for i in order)
    remaining = list(order)
    assigned = {}
    holdouts = [(name, f) for name, f in (("test", test_fraction), ("val", val_fraction)) if f > 0]
    for n, (name, fraction) in enumerate(holdouts):
        target = fraction * total
        max_files = len(remaining) - 1 - (len(holdouts) - 1 - n)  # leave one for later splits
        chosen, acc = [], 0
        for i in remaining:  # in shuffled order: take a file if it brings us closer to target
            if len(chosen) < max_files and abs(acc + kept[i] - target) < abs(acc - target):
                chosen.append(i)
                acc += kept[i]
        if not chosen and max_files > 0:  # every file overshoots: take the closest one
            chosen.append(min(remaining, key=lambda i: abs(kept[i] - target)))
        for i in chosen:
            assigned[i] = name
            remaining.remove(i)
    for i in remaining:
        assigned[i] = "train"
    return assigned


def _validate_params(inputs, sample_rate, top_db, min_silence_seconds, min_segment_seconds,
                     val_fraction, test_fraction, labels) -> None:
    if not inputs:
        raise ValueError("prepare needs at least one input file or folder")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    if top_db <= 0:
        raise ValueError(f"top_db must be > 0 (dB below the loudest frame), got {top_db!r}")
    if min_silence_seconds < 0 or min_segment_seconds < 0:
        raise ValueError(
            f"min_silence_seconds ({min_silence_seconds}) and min_segment_seconds "
            f"({min_segment_seconds}) must be >= 0"
        )
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {f!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves nothing to train on"
        )
    if labels not in (None, "folders"):
        raise ValueError(f'labels must be None or "folders", got {labels!r}')


def prepare(
    inputs: list[str | Path],
    corpus_dir: str | Path,
    *,
    sample_rate: int = 16000,
    top_db: float = 40.0,
    min_silence_seconds: float = 1.0,
    min_segment_seconds: float = 0.5,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    labels: str | None = None,
    progress: bool = True,
) -> dict:
    """Prepare recordings into a corpus folder and return its manifest (see module doc).

    inputs: audio files or folders (searched recursively). Each file is decoded, mixed to
    mono, resampled to sample_rate Hz and trimmed of silence (split_on_silence). Files go
    whole to train/val/test by duration (shuffled with seed; stratified per label with
    labels="folders"); when there are too few files, each file is cut in time instead.
    Unreadable, empty or silent files are skipped and listed in manifest["skipped"].
    Does nothing when corpus_dir already holds a corpus of the same inputs and params.
    Raises FileNotFoundError for a missing input, CorpusError when no file is usable.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    _validate_params(inputs, sample_rate, top_db, min_silence_seconds, min_segment_seconds,
                     val_fraction, test_fraction, labels)
    sample_rate = int(sample_rate)
    corpus_dir = Path(corpus_dir)
    found = _discover(inputs)
    if not found:
        raise CorpusError(
            f"no audio files ({' '.join(sorted(AUDIO_EXTENSIONS))}) found in: "
            + ", ".join(str(p) for p in inputs)
        )
    file_labels = _folder_labels(found) if labels == "folders" else [None] * len(found)
    params = {
        "inputs": [os.path.abspath(os.path.expanduser(str(p))) for p in inputs],
        "sample_rate": sample_rate,
        "top_db": float(top_db),
        "min_silence_seconds": float(min_silence_seconds),
        "min_segment_seconds": float(min_segment_seconds),
        "val_fraction": float(val_fraction),
        "test_fraction": float(test_fraction),
        "seed": int(seed),
        "labels": labels,
    }
    fingerprint = _fingerprint(params, found)
    existing = _existing_manifest(corpus_dir, fingerprint)
    if existing is not None:
        logger.info("corpus up to date: %s", corpus_dir)
        return existing

    corpus_dir.mkdir(parents=True, exist_ok=True)
    for stale in corpus_dir.glob(".prep-*"):  # left by an interrupted prep
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".prep-", dir=corpus_dir))
    try:
        files, seg_lengths, skipped = _decode_files(
            found, file_labels, tmp, sample_rate, top_db, min_silence_seconds,
            min_segment_seconds, progress,
        )
        if not files:
            reasons = "\n  ".join(f"{s['path']}: {s['reason']}" for s in skipped)
            raise CorpusError(f"no usable audio: every input file was skipped:\n  {reasons}")
        pieces, split_mode = _split(files, seg_lengths, val_fraction, test_fraction, seed)
        splits = _write_arrays(tmp, pieces, sample_rate)
        used_labels = sorted({f["label"] for f in files if f["label"] is not None})
        manifest = {
            "format_version": FORMAT_VERSION,
            "sample_rate": sample_rate,
            "params": params,
            "split_mode": split_mode,
            "labels": used_labels,
            "files": files,
            "skipped": skipped,
            "splits": splits,
            "fingerprint": fingerprint,
        }
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=2)
        # Remove the old manifest first: until the new one lands, the folder is visibly
        # unprepared rather than a manifest describing arrays that are being replaced.
        (corpus_dir / MANIFEST).unlink(missing_ok=True)
        for name in _ARRAYS:
            os.replace(tmp / name, corpus_dir / name)
        os.replace(tmp / MANIFEST, corpus_dir / MANIFEST)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    hours = ", ".join(
        f"{s} {splits[s]['seconds'] / 3600:.2f} h ({splits[s]['seconds']:.0f} s)" for s in SPLITS
    )
    logger.info(
        "prepared %s: %d file(s) used, %d skipped; %s (split by %s)",
        corpus_dir, len(files), len(skipped), hours, split_mode,
    )
    return manifest


def _decode_one(path, sample_rate, top_db, min_silence_seconds, min_segment_seconds):
    """Decode and trim one file: (kept int16 [T], segment lengths, entry) or a skip reason."""
    try:
        digest = _sha256_file(path)
        x, sr_in = read_audio(path)
    except AudioError as e:
        return e.reason
    except OSError as e:
        return f"cannot read file ({e.strerror or e})"
    frames, channels = x.shape
    if frames == 0:
        return "empty: no audio frames"
    mono = resample(to_mono(x), sr_in, sample_rate)
    del x
    if not np.all(np.isfinite(mono)):
        return "contains NaN or infinite samples"
    intervals = split_on_silence(
        mono, sample_rate, top_db=top_db, min_silence_seconds=min_silence_seconds,
        min_segment_seconds=min_segment_seconds,
    )
    if len(intervals) == 0:
        if not np.any(mono):
            return "silent: every sample is zero"
        return f"no stretch of sound of at least {min_segment_seconds} s"
    kept = float_to_int16(np.concatenate([mono[s:e] for s, e in intervals]))
    entry = {
        "path": str(path),
        "duration_seconds": round(frames / sr_in, 6),
        "kept_seconds": round(len(kept) / sample_rate, 6),
        "split": None,
        "sha256": digest,
        "label": None,
        "sample_rate_in": sr_in,
        "channels_in": channels,
    }
    return kept, [int(e - s) for s, e in intervals], entry


def _decode_files(found, file_labels, tmp, sample_rate, top_db, min_silence_seconds,
                  min_segment_seconds, progress):
    """Decode, trim and store each file's kept audio as tmp/<file_index>.pcm (int16).

    Returns (files: manifest entries, seg_lengths: per file the kept segment lengths,
    skipped: [{"path", "reason"}]).
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    files, seg_lengths, skipped = [], [], []
    seen: dict[str, str] = {}  # sha256 -> path: the same recording twice would leak
    # warnings print above the bar, not through it
    with logging_redirect_tqdm() if progress else contextlib.nullcontext():
        bar = tqdm(list(zip(found, file_labels)), unit="file", desc="prep", disable=not progress)
        for (path, _root), label in bar:
            bar.set_postfix_str(path.name, refresh=False)
            result = _decode_one(path, sample_rate, top_db, min_silence_seconds,
                                 min_segment_seconds)
            if not isinstance(result, str) and result[2]["sha256"] in seen:
                result = f"duplicate of {seen[result[2]['sha256']]}"
            if isinstance(result, str):
                logger.warning("skipping %s: %s", path, result)
                skipped.append({"path": str(path), "reason": result})
                continue
            kept, lengths, entry = result
            kept.tofile(tmp / f"{len(files)}.pcm")
            entry["label"] = label
            seen[entry["sha256"]] = str(path)
            seg_lengths.append(lengths)
            files.append(entry)
        bar.close()
    return files, seg_lengths, skipped


def _split(files, seg_lengths, val_fraction, test_fraction, seed):
    """Assign files to splits (sets files[i]["split"]).

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
        order = [members[j] for j in rng.permutation(len(members))]
        if len(members) >= n_holdouts + 1:
            modes.add("file")
            for i, name in _assign_file_splits(order, kept, val_fraction, test_fraction).items():
                files[i]["split"] = name
        else:
            modes.add("time")
            for i in members:
                files[i]["split"] = "time"
    for i, f in enumerate(files):
        offset = 0
        if f["split"] == "time":
            # last test_fraction of the kept audio to test, val_fraction before it to val
            n_test = round(kept[i] * test_fraction)
            n_val = round(kept[i] * val_fraction)
            cuts = [0, kept[i] - n_val - n_test, kept[i] - n_test, kept[i]]
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


def _write_arrays(tmp: Path, pieces: dict, sample_rate: int) -> dict:
    """Write {split}.npy and {split}_segments.npy into tmp; returns manifest["splits"]."""
    summary = {}
    for name in SPLITS:
        rows = np.zeros((len(pieces[name]), 3), dtype=np.int64)
        total = sum(length for _, _, length in pieces[name])
        if total == 0:
            np.save(tmp / f"{name}.npy", np.zeros(0, dtype=np.int16))
        else:
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
        np.save(tmp / f"{name}_segments.npy", rows)
        summary[name] = {
            "samples": int(total),
            "seconds": round(total / sample_rate, 6),
            "segments": len(rows),
        }
    return summary


# ----------------------------------------------------------------------------- reader


class Corpus:
    """A prepared corpus folder: the manifest plus memory-mapped split arrays."""

    def __init__(self, corpus_dir: str | Path):
        self.dir = Path(corpus_dir)
        path = self.dir / MANIFEST
        if not path.is_file():
            raise CorpusError(
                f"{self.dir} is not a prepared corpus (no {MANIFEST}); "
                f"run `wavegen prep` to make one"
            )
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CorpusError(f"{path}: cannot read the manifest ({e}); run `wavegen prep` again")
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        if version != FORMAT_VERSION:
            raise CorpusError(
                f"{path}: corpus format_version {version!r} is not supported (this wavegen "
                f"reads {FORMAT_VERSION}); prepare the corpus again with `wavegen prep`"
            )
        self._manifest = manifest
        self._cache: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        parts = ", ".join(f"{s}={self.seconds(s) / 3600:.2f}h" for s in SPLITS)
        return f"Corpus({str(self.dir)!r}, {self.sample_rate} Hz, {parts})"

    @property
    def manifest(self) -> dict:
        return self._manifest

    @property
    def sample_rate(self) -> int:
        return int(self._manifest["sample_rate"])

    @property
    def labels(self) -> list[str]:
        return list(self._manifest["labels"])

    def _load(self, filename: str, mmap: bool) -> np.ndarray:
        if filename not in self._cache:
            path = self.dir / filename
            try:
                self._cache[filename] = np.load(path, mmap_mode="r" if mmap else None)
            except (OSError, ValueError) as e:
                raise CorpusError(f"{path}: cannot load ({e}); run `wavegen prep` again") from e
        return self._cache[filename]

    @staticmethod
    def _check(name: str) -> None:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of: {', '.join(SPLITS)}")

    def split(self, name: str) -> np.ndarray:
        """The split's audio: int16 [T] PCM at sample_rate, memory-mapped read-only."""
        self._check(name)
        return self._load(f"{name}.npy", mmap=True)

    def segments(self, name: str) -> np.ndarray:
        """The split's segments: int64 [N, 3] rows (start, length, file_index)."""
        self._check(name)
        return self._load(f"{name}_segments.npy", mmap=False)

    def segment_labels(self, name: str) -> np.ndarray:
        """Label index (into .labels) of each segment: int64 [N]; all -1 without labels."""
        labels = self.labels
        file_labels = np.array(
            [labels.index(f["label"]) if f["label"] is not None else -1
             for f in self._manifest["files"]],
            dtype=np.int64,
        )
        return file_labels[self.segments(name)[:, 2]]

    def seconds(self, name: str) -> float:
        """Duration of the split in seconds."""
        self._check(name)
        return float(self._manifest["splits"][name]["samples"]) / self.sample_rate
