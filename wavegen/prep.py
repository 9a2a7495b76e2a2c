"""Corpus preparation: ``wavegen prep`` (decode, mono, resample, trim silence, split).

:func:`prepare` finds the audio files under its inputs, decodes each one (mixed to mono,
resampled, silence trimmed), assigns them to train/val/test and writes the arrays and the
manifest that :class:`wavegen.corpus.Corpus` reads (the folder's layout is described there).
All is written into a temporary folder inside the corpus folder, under its lock, and moved
into place at the end, the manifest last. Silence detection and the train/val/test assignment
live in wavegen.split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wavegen.audio import AudioError, decode_audio, float_to_int16, resample, to_mono
from wavegen.config import ConfigError
from wavegen.corpus import FORMAT_VERSION, MANIFEST, CorpusError, content_id
from wavegen.fileio import FolderLock, ensure_folder, fsync_dir, sha256_file, write_json
from wavegen.progress import progress_bar
from wavegen.split import FRAME_LENGTH, HOP_LENGTH, SPLITS, assign_splits, split_on_silence

logger = logging.getLogger(__name__)

PREP_VERSION = 2  # in the fingerprint: a corpus made by an older prep (loud files clipped) is redone
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf"}
)
_ARRAYS = tuple(f"{s}.npy" for s in SPLITS) + tuple(f"{s}_segments.npy" for s in SPLITS)
_TMP_PREFIX = ".prep-"
_TMP_MARKER = ".wavegen-prep-temporary"  # inside every temporary folder prep makes, and only there
_CORPUS_MARKER = ".wavegen-corpus"  # in a corpus folder from before prep first moves arrays into it


@dataclass(frozen=True)
class PrepSettings:
    """Everything that decides a corpus; .params() is the manifest's "params".

    inputs: the audio files and folders, as absolute paths. Files are decoded, mixed to mono,
    resampled to sample_rate Hz, trimmed of silence (frames top_db below the file's loudest
    frame, rests longer than min_silence_seconds cut out, pieces shorter than
    min_segment_seconds dropped) and split val_fraction / test_fraction (shuffled with seed).
    labels: None, or "folders" (each file's label is its top-level subfolder of an input).
    Raises ConfigError naming the setting that cannot work.
    """

    inputs: tuple[str, ...]
    sample_rate: int = 16000
    top_db: float = 40.0
    min_silence_seconds: float = 1.0
    min_segment_seconds: float = 0.5
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    labels: str | None = None

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("prep needs at least one input file or folder")
        if isinstance(self.sample_rate, bool) or int(self.sample_rate) != self.sample_rate or self.sample_rate <= 0:
            raise ConfigError(f"sample_rate={self.sample_rate!r}: must be a positive whole number of Hz")
        if not self.top_db > 0:
            raise ConfigError(f"top_db={self.top_db!r}: must be > 0 (dB below the loudest frame)")
        for name in ("min_silence_seconds", "min_segment_seconds"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be >= 0")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction}: "
                              "leaves nothing to train on")
        if self.labels not in (None, "folders"):
            raise ConfigError(f'labels={self.labels!r}: use "folders" (or leave it unset)')
        # one JSON form for the manifest and the fingerprint: floats as floats, ints as ints
        for name, kind in (("sample_rate", int), ("top_db", float), ("min_silence_seconds", float),
                           ("min_segment_seconds", float), ("val_fraction", float),
                           ("test_fraction", float), ("seed", int)):
            object.__setattr__(self, name, kind(getattr(self, name)))
        object.__setattr__(self, "inputs", tuple(os.path.abspath(os.path.expanduser(str(p))) for p in self.inputs))

    def params(self) -> dict:
        """The settings as the manifest's "params" (JSON values: inputs as a list)."""
        return dict(dataclasses.asdict(self), inputs=list(self.inputs))


# ----------------------------------------------------------------------------- finding files


def _discover(inputs: tuple[str, ...]) -> tuple[list[tuple[Path, Path | None]], list[dict]]:
    """Audio files under the inputs, sorted: ([(path, input folder or None)], skipped folders).

    Folders are searched recursively, following symbolic links (a folder reached twice, as in
    a link loop, is searched once). A path keeps the names it was found under, so a label
    comes from a link's name, not its target's.
    """
    found: dict[Path, Path | None] = {}
    skipped: list[dict] = []
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            raise CorpusError(f"input not found: {p}")
        if not p.is_dir():
            found.setdefault(p, None)  # named explicitly: let the decoder judge its format
            continue
        n_before = len(found)
        for path in _walk_audio(p, skipped):
            found.setdefault(path, p)
        if len(found) == n_before:
            logger.warning("no audio files found in %s", p)
    return sorted(found.items(), key=lambda item: str(item[0])), skipped


def _walk_audio(root: Path, skipped: list[dict]):
    """Yield the audio files under root (links followed); unreadable folders go to skipped."""
    def unreadable(err: OSError) -> None:
        reason = f"cannot read folder ({err.strerror or err})"
        logger.warning("skipping %s: %s", err.filename, reason)
        skipped.append({"path": str(err.filename), "reason": reason})

    searched: dict[tuple[int, int], str] = {}  # (device, inode) of each folder searched -> its path
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in searched:
            logger.warning("not searching %s again: it leads to %s, searched already (a link loop?)",
                           dirpath, searched[(st.st_dev, st.st_ino)])
            dirnames[:] = []
            continue
        searched[(st.st_dev, st.st_ino)] = dirpath
        dirnames.sort()
        for name in filenames:
            if os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
                yield Path(dirpath) / name


def _folder_labels(found: list[tuple[Path, Path | None]]) -> list[str]:
    """Label of each file: its top-level subfolder of the input folder it was found in."""
    labels, unlabelled = [], []
    for path, root in found:
        parts = path.relative_to(root).parts if root is not None else ()
        if len(parts) < 2:
            unlabelled.append(str(path))
        labels.append(parts[0] if len(parts) >= 2 else "")
    if unlabelled:
        shown = ", ".join(unlabelled[:3]) + (f" and {len(unlabelled) - 3} more" if len(unlabelled) > 3 else "")
        raise CorpusError(
            f"--labels folders takes each file's label from its subfolder of an input folder, but "
            f"{len(unlabelled)} file(s) are in no subfolder ({shown}): move them into one (INPUT/LABEL/file.wav)"
        )
    return labels


def _fingerprint(settings: PrepSettings, found: list[tuple[Path, Path | None]]) -> str:
    stats = []
    for path, _ in found:
        try:
            st = path.stat()
            stats.append([str(path), st.st_size, st.st_mtime_ns])
        except OSError:  # e.g. a broken link: prep will skip it and say why
            stats.append([str(path), -1, -1])
    payload = {
        "format_version": FORMAT_VERSION,
        "prep_version": PREP_VERSION,
        "params": settings.params(),
        "silence_frames": [FRAME_LENGTH, HOP_LENGTH],
        "files": sorted(stats),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _read_manifest(corpus_dir: Path) -> dict | None:
    """The manifest in corpus_dir; None when there is none or it is not a JSON object."""
    try:
        manifest = json.loads((corpus_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _existing_manifest(corpus_dir: Path, fingerprint: str) -> dict | None:
    """The manifest already in corpus_dir if it was made from the same inputs and settings."""
    manifest = _read_manifest(corpus_dir)
    if manifest is None or manifest.get("fingerprint") != fingerprint:
        return None
    if manifest.get("format_version") != FORMAT_VERSION:
        return None
    if not _arrays_match(corpus_dir, manifest):
        return None
    return manifest


def _arrays_match(corpus_dir: Path, manifest: dict) -> bool:
    """Whether every array is the whole file the manifest describes (a truncated, replaced or
    missing one is not): its header's shape and dtype, and the file's length, are checked."""
    try:
        for name in SPLITS:
            split = manifest["splits"][name]
            if not (_npy_is(corpus_dir / f"{name}.npy", (split["samples"],), np.int16)
                    and _npy_is(corpus_dir / f"{name}_segments.npy", (split["segments"], 3), np.int64)):
                return False
    except (KeyError, TypeError):
        return False
    return True


def _npy_is(path: Path, shape: tuple, dtype) -> bool:
    """Whether the .npy file at path holds an array of this shape and dtype, and nothing less."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            found_shape, _, found_dtype = read_header(f)
            data_at = f.tell()
        size = path.stat().st_size
    except (OSError, ValueError):
        return False
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return found_shape == tuple(shape) and found_dtype == np.dtype(dtype) and size == data_at + nbytes


def _refuse_foreign_files(corpus_dir: Path) -> None:
    """Raise CorpusError when corpus_dir holds a file by a corpus file's name that prep did not
    write (no corpus marker, no wavegen manifest): prep would replace it."""
    present = [name for name in (MANIFEST, *_ARRAYS) if (corpus_dir / name).exists()]
    if not present or (corpus_dir / _CORPUS_MARKER).is_file():
        return
    manifest = _read_manifest(corpus_dir)
    if manifest is not None and "fingerprint" in manifest and "format_version" in manifest:
        return  # a corpus from before the marker
    raise CorpusError(f"{corpus_dir} is not a wavegen corpus but holds {', '.join(present)}, which prep "
                      f"would replace; prepare into another folder, or move those files away")


# ----------------------------------------------------------------------------- prep


def prepare(inputs: list[str | Path] | str | Path, corpus_dir: str | Path, *, progress: bool = True,
            **settings) -> dict:
    """Prepare recordings into a corpus folder and return its manifest (its layout: wavegen.corpus).

    inputs: audio files or folders (searched recursively, links followed); settings: the other
    fields of PrepSettings (sample_rate=16000, top_db=40.0, ..., labels=None). Files go whole to
    train/val/test by duration (stratified per label with labels="folders"); when there are too
    few files, each file is cut in time instead. Unreadable, empty or silent files are skipped
    and listed in manifest["skipped"]; a file above full scale is scaled down, a damaged one
    keeps the part that decodes (both said in the log and the manifest). Does nothing when
    corpus_dir already holds a corpus of the same inputs and settings (its arrays whole); never
    deletes or replaces anything of the user's (a folder holding a file by a corpus file's name
    that prep did not write is refused). Raises ConfigError for a setting, CorpusError for a
    missing input, an output that is not a folder or holds such files, or no usable file.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    settings = PrepSettings(inputs=tuple(inputs), **settings)
    corpus_dir = Path(corpus_dir)
    found, skipped_folders = _discover(settings.inputs)
    if not found:
        raise CorpusError(f"no audio files ({' '.join(sorted(AUDIO_EXTENSIONS))}) found in: "
                          + ", ".join(settings.inputs))
    file_labels = _folder_labels(found) if settings.labels == "folders" else [None] * len(found)
    fingerprint = _fingerprint(settings, found)
    existing = _existing_manifest(corpus_dir, fingerprint)
    if existing is not None:
        logger.info("corpus up to date: %s", corpus_dir)
        return existing
    ensure_folder(corpus_dir, "corpus")
    try:
        with FolderLock(corpus_dir, "prep"):
            _refuse_foreign_files(corpus_dir)
            _remove_stale_temporaries(corpus_dir)
            tmp = _make_temporary(corpus_dir)
            try:
                manifest = _prepare_in(tmp, corpus_dir, settings, found, file_labels, skipped_folders, progress)
                manifest["fingerprint"] = fingerprint
                _say_what_is_replaced(corpus_dir, manifest)
                _publish(tmp, corpus_dir, manifest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except OSError as err:  # a full disk, a read-only folder: until _publish, the old corpus is untouched
        where = f" ({err.filename})" if err.filename else ""
        raise CorpusError(f"cannot write the corpus in {corpus_dir}: {err.strerror or err}{where}") from err
    _log_summary(corpus_dir, manifest)
    return manifest


def _make_temporary(corpus_dir: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=corpus_dir))
    (tmp / _TMP_MARKER).write_text(f"{os.getpid()}\n")
    return tmp


def _remove_stale_temporaries(corpus_dir: Path) -> None:
    """Remove what an interrupted prep left: only folders carrying prep's marker (we hold the lock)."""
    for stale in corpus_dir.glob(_TMP_PREFIX + "*"):
        if stale.is_dir() and not stale.is_symlink() and (stale / _TMP_MARKER).is_file():
            shutil.rmtree(stale, ignore_errors=True)


def _prepare_in(tmp, corpus_dir, settings, found, file_labels, skipped_folders, progress) -> dict:
    """Decode, split and write every array into tmp; returns the manifest (no fingerprint yet)."""
    files, seg_lengths, skipped = _decode_files(found, file_labels, tmp, settings, progress)
    skipped = skipped_folders + skipped
    if not files:
        listed = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5])
        more = f"; and {len(skipped) - 5} more (see the warnings above)" if len(skipped) > 5 else ""
        raise CorpusError(f"no usable audio, every input was skipped: {listed}{more}")
    pieces, split_mode = assign_splits(files, seg_lengths, settings.val_fraction, settings.test_fraction,
                                       settings.seed)
    splits = _write_arrays(tmp, pieces, settings.sample_rate)
    return {
        "format_version": FORMAT_VERSION,
        "sample_rate": settings.sample_rate,
        "params": settings.params(),
        "split_mode": split_mode,
        "labels": sorted({f["label"] for f in files if f["label"] is not None}),
        "files": files,
        "skipped": skipped,
        "splits": splits,
    }


def _say_what_is_replaced(corpus_dir: Path, manifest: dict) -> None:
    """A warning when the corpus about to be replaced holds other audio (its content id differs): the
    settings that changed and the sources added or removed, and that runs begun on it stop resuming."""
    old = _read_manifest(corpus_dir)
    if old is None:  # no corpus there
        return
    try:
        was_id, now_id = content_id(old), content_id(manifest)
        if was_id == now_id:
            return
        was, now = old.get("params", {}), manifest["params"]
        what = [f"{k} {was.get(k)!r} → {now.get(k)!r}" for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)]
        sources = [{f.get("sha256") for f in m.get("files", [])} for m in (old, manifest)]
        added, removed = len(sources[1] - sources[0]), len(sources[0] - sources[1])
        what += [f"{n} source(s) {how}" for n, how in ((added, "new or changed"), (removed, "gone or changed")) if n]
    except (AttributeError, TypeError):  # not a manifest this wavegen reads
        return
    logger.warning("replacing the corpus in %s (corpus id %s → %s: %s); a training run that began on it will "
                   "not resume on the new one", corpus_dir, was_id, now_id,
                   "; ".join(what) or "the same sources and settings, split or cut otherwise")


def _publish(tmp: Path, corpus_dir: Path, manifest: dict) -> None:
    """Move the finished arrays into corpus_dir, durably, then the manifest that describes them."""
    for name in _ARRAYS:
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    # Mark the folder as a corpus, then remove the old manifest: until the new one lands, the
    # folder is visibly unprepared rather than a manifest describing arrays being replaced.
    marker = corpus_dir / _CORPUS_MARKER
    if not marker.is_file():
        marker.write_text("made by wavegen prep: the arrays and manifest.json here are prep's to replace\n")
        fsync_dir(corpus_dir)
    (corpus_dir / MANIFEST).unlink(missing_ok=True)
    for name in _ARRAYS:
        os.replace(tmp / name, corpus_dir / name)
    fsync_dir(corpus_dir)
    write_json(corpus_dir / MANIFEST, manifest)


def _log_summary(corpus_dir: Path, manifest: dict) -> None:
    files, splits = manifest["files"], manifest["splits"]
    hours = ", ".join(f"{s} {splits[s]['seconds'] / 3600:.2f} h ({splits[s]['seconds']:.0f} s)" for s in SPLITS)
    logger.info("prepared %s: %d file(s) used, %d skipped; %s (split by %s)",
                corpus_dir, len(files), len(manifest["skipped"]), hours, manifest["split_mode"])
    scaled, partial = sum(f["gain_db"] < 0 for f in files), sum(f["partial"] for f in files)
    notes = ([f"{scaled} file(s) scaled down to full scale (gain_db)"] if scaled else []) + \
            ([f"{partial} damaged file(s) kept in part (partial)"] if partial else [])
    if notes:
        logger.warning("%s: see %s", "; ".join(notes), corpus_dir / MANIFEST)


def _decode_one(path: Path, settings: PrepSettings):
    """Decode and trim one file: (kept int16 [T], segment lengths, entry) or a skip reason."""
    try:
        digest = sha256_file(path)
        x, sr_in, damage = decode_audio(path)
    except AudioError as e:
        return e.reason
    except OSError as e:
        return f"cannot read file ({e.strerror or e})"
    frames, channels = x.shape
    if frames == 0:
        return "empty: no audio frames"
    rate = settings.sample_rate
    mono = resample(to_mono(x), sr_in, rate)
    del x
    if not np.all(np.isfinite(mono)):
        return "contains NaN or infinite samples"
    intervals = split_on_silence(mono, rate, top_db=settings.top_db,
                                 min_silence_seconds=settings.min_silence_seconds,
                                 min_segment_seconds=settings.min_segment_seconds)
    if len(intervals) == 0:
        if not np.any(mono):
            return "silent: every sample is zero"
        return f"no stretch of sound of at least {settings.min_segment_seconds} s"
    kept = np.concatenate([mono[s:e] for s, e in intervals])
    peak = float(np.abs(kept).max())
    gain_db = 0.0
    if peak > 1.0:  # float audio above full scale: scale it down rather than clip it
        kept *= np.float32(1.0 / peak)
        gain_db = round(-20.0 * np.log10(peak), 3)
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
    return float_to_int16(kept), [int(e - s) for s, e in intervals], entry


def _decode_files(found, file_labels, tmp: Path, settings: PrepSettings, progress: bool):
    """Decode, trim and store each file's kept audio as tmp/<file_index>.pcm (int16).

    Returns (files: manifest entries, seg_lengths: per file the kept segment lengths,
    skipped: [{"path", "reason"}]).
    """
    files, seg_lengths, skipped = [], [], []
    seen: dict[str, str] = {}  # sha256 -> path: the same recording twice would leak
    bar = progress_bar(total=len(found), desc="prep", unit="file") if progress else None
    for (path, _root), label in zip(found, file_labels):
        if bar is not None:
            bar.set_postfix_str(path.name, refresh=False)
        result = _decode_one(path, settings)
        if not isinstance(result, str) and result[2]["sha256"] in seen:
            result = f"duplicate of {seen[result[2]['sha256']]}"
        if isinstance(result, str):
            logger.warning("skipping %s: %s", path, result)
            skipped.append({"path": str(path), "reason": result})
        else:
            kept, lengths, entry = result
            kept.tofile(tmp / f"{len(files)}.pcm")
            entry["label"] = label
            seen[entry["sha256"]] = str(path)
            seg_lengths.append(lengths)
            files.append(entry)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return files, seg_lengths, skipped


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
