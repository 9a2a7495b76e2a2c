"""Corpus preparation: ``wavegen prep`` (decode, mono, resample, trim silence, split).

:func:`prepare` finds the audio files under its inputs, decodes each one (mixed to mono,
resampled, silence trimmed), assigns them to train/val/test and writes the arrays and the
manifest that :class:`wavegen.corpus.Corpus` reads (the folder's layout is described there).
All is written into a temporary folder inside the corpus folder, under its lock, and moved
into place at the end, the manifest last. Finding the input files and fingerprinting them live
in wavegen.prep_inputs; decoding them and writing the arrays in wavegen.prep_decode (a rerun after a memory
skip takes the other files from the corpus it left: wavegen.prep_earlier); moving the
finished corpus into place (and finishing a move a stopped prep left) in wavegen.prep_publish;
silence detection (and why a skipped file has no sound) and the train/val/test assignment in
wavegen.split; whether a corpus's arrays are whole in wavegen.corpus.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from wavegen import prep_decode, prep_earlier, prep_inputs
from wavegen.audio_ogg import CHAINED_OGG
from wavegen.config import ConfigError
from wavegen.corpus import FORMAT_VERSION, MANIFEST, CorpusError, content_id, damaged_array
from wavegen.errors import FolderBusyError, WavegenError
from wavegen.fileio import write_json
from wavegen.folders import FolderLock, ensure_folder, missing_folders
from wavegen.prep_publish import (ARRAYS, CORPUS_MARKER, TMP_PREFIX, finish_interrupted_publish, gone_unless_made,
                                  make_temporary, publish, read_manifest, remove_stale_temporaries, why_not_written)
from wavegen.progress import counted
from wavegen.split import FRAME_LENGTH, HOP_LENGTH, SPLITS, assign_splits, earlier_entries, earlier_splits

logger = logging.getLogger(__name__)

# In the fingerprints: a corpus made by an older prep is redone (2: loud files were clipped; 3: a DC
# offset kept silence from being trimmed, and audio too quiet for 16 bits was kept as zeros).
PREP_VERSION = 3
# Below 1000 Hz a corpus holds nothing above 500 Hz (not even a voice's or an instrument's
# fundamental range), and prep's silence frames (FRAME_LENGTH = 1024 samples) last over a second,
# longer than the rests they are meant to find; such a rate is a slip (--sample-rate 16 for 16k).
MIN_SAMPLE_RATE = 1000


@dataclass(frozen=True)
class PrepSettings:
    """Everything that decides a corpus; .params() is the manifest's "params".

    inputs: the audio files and folders, as absolute paths. Files are decoded, mixed to mono,
    resampled to sample_rate Hz, trimmed of silence (frames top_db below the file's loudest
    frame, rests longer than min_silence_seconds cut out, pieces shorter than
    min_segment_seconds dropped) and split val_fraction / test_fraction (shuffled with seed).
    labels: None, or "folders" (each file's label is its top-level subfolder of an input).
    Raises ConfigError naming the setting that cannot work: before any file is read.
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
        if not _is_whole(self.sample_rate) or self.sample_rate <= 0:
            raise ConfigError(f"sample_rate={self.sample_rate!r}: must be a positive whole number of Hz")
        if self.sample_rate < MIN_SAMPLE_RATE:
            raise ConfigError(f"sample_rate={self.sample_rate!r}: must be at least {MIN_SAMPLE_RATE} Hz (it keeps "
                              f"only sound below half the rate; 16000 is usual)")
        if not _is_whole(self.seed) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r}: must be a whole number >= 0 (it seeds the train/val/test shuffle)")
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


def _is_whole(value) -> bool:
    """Whether value is a whole number (an int, or a float such as 16000.0; not a bool, nan or inf)."""
    if isinstance(value, bool):
        return False
    try:
        return int(value) == value
    except (TypeError, ValueError, OverflowError):
        return False


# ----------------------------------------------------------------------------- what decides a corpus


def _recipe(settings: PrepSettings, skipped: list[dict]) -> dict:
    """What decides a corpus besides its input files' bytes: prep's version, the settings, the
    silence frames, and what the search skipped (a FIFO, an unreadable folder: listed in the manifest)."""
    return {
        "format_version": FORMAT_VERSION,
        "prep_version": PREP_VERSION,
        "params": settings.params(),
        "silence_frames": [FRAME_LENGTH, HOP_LENGTH],
        "skipped": sorted([s["path"], s["reason"]] for s in skipped),
    }


def _whole_corpus(corpus_dir: Path, say: bool = False) -> dict | None:
    """The manifest in corpus_dir when it is of this format and its arrays are whole; else None.
    say: warn, naming it, when an array is not whole (the corpus is then prepared again)."""
    manifest = read_manifest(corpus_dir)
    if manifest is None or manifest.get("format_version") != FORMAT_VERSION:
        return None
    damaged = damaged_array(corpus_dir, manifest)
    if damaged is not None:
        if say and damaged != MANIFEST:
            logger.warning("%s is not the array %s describes (cut short, replaced or missing): preparing the "
                           "corpus again", corpus_dir / damaged, corpus_dir / MANIFEST)
        return None
    return manifest


def _up_to_date(corpus_dir: Path, settings: PrepSettings, found, skipped: list[dict], fingerprint: str,
                progress: bool) -> tuple[dict | None, dict[str, str | None] | None]:
    """(the corpus's manifest if it was made from these inputs and settings, else None; the inputs'
    sha256 by path if they were read to find out, else None: the decoding reuses them). A corpus that
    skipped files for lack of memory is returned too: prepare decodes those files again, and no other.

    An equal fingerprint says so with no file read. Otherwise, when the corpus records a
    content fingerprint, the inputs are rehashed: the same bytes (a copy, chmod or touch of the
    same files) keep the corpus, and its manifest records the new fingerprint.
    """
    manifest = _whole_corpus(corpus_dir, say=True)
    if manifest is None:
        return None, None
    if manifest.get("fingerprint") == fingerprint:
        return manifest, None
    if "content_fingerprint" not in manifest:  # made by an older prep: rebuilt
        return None, None
    try:
        listed = {f["path"] for f in manifest["files"]} | {s["path"] for s in manifest["skipped"]}
    except (KeyError, TypeError):
        return None, None
    wanted = {str(path) for path, _ in found} | {s["path"] for s in skipped}
    if manifest.get("params") != settings.params() or listed != wanted:  # no need to read the files to know
        return None, None
    logger.info("%s: the inputs' file times or sizes differ from the corpus's: comparing their content", corpus_dir)
    digests = prep_inputs.hash_inputs(found, progress)
    if prep_inputs.content_fingerprint(_recipe(settings, skipped), found, digests) != manifest["content_fingerprint"]:
        return None, digests
    try:
        with FolderLock(corpus_dir, "prep"):
            if _whole_corpus(corpus_dir) != manifest:  # replaced meanwhile: do the work
                return None, digests
            write_json(corpus_dir / MANIFEST, dict(manifest, fingerprint=fingerprint))
            manifest = dict(manifest, fingerprint=fingerprint)
    except FolderBusyError:  # another prep is replacing it: refused, as any prep there is
        raise
    except (OSError, WavegenError) as err:  # a read-only corpus (no lock file either): still up to date, rehashed
        logger.warning("cannot record in %s that its inputs are unchanged (%s): the next prep will read "
                       "them again", corpus_dir / MANIFEST, why_not_written(err))
    return manifest, digests


def _skipped_for_memory(corpus_dir: Path, manifest: dict) -> bool:
    """Whether the corpus skipped a file for lack of memory ("retry" in manifest["skipped"]): not the
    file's fault, so the corpus is not up to date: saying so would keep the file out on a machine that
    has the memory. Says so when it is."""
    retry = prep_earlier.retries(manifest)
    if retry:
        logger.info("%s skipped %s for lack of memory (%s%s): trying again", corpus_dir, counted(len(retry), "file"),
                    retry[0], ", ..." if len(retry) > 1 else "")
    return bool(retry)


def _earlier(corpus_dir: Path, existing: dict | None) -> prep_earlier.Earlier | None:
    """The corpus in corpus_dir as a prep_earlier.Earlier when it is still existing (a corpus of these inputs
    that skipped files for lack of memory, read before the lock), else None: every file is decoded."""
    if existing is None or _whole_corpus(corpus_dir) != existing:
        return None
    try:
        return prep_earlier.Earlier(corpus_dir, existing)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:  # not arrays this prep reads back
        logger.info("%s: decoding every file again (cannot read its arrays back: %s)", corpus_dir, err)
        return None


def _refuse_foreign_files(corpus_dir: Path) -> None:
    """Raise CorpusError when corpus_dir holds a file by a corpus file's name that prep did not
    write (no corpus marker, no wavegen manifest): prep would replace it."""
    present = [name for name in (MANIFEST, *ARRAYS) if (corpus_dir / name).exists()]
    if not present or (corpus_dir / CORPUS_MARKER).is_file():
        return
    manifest = read_manifest(corpus_dir)
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
    few files, each file is cut in time instead; a file of the corpus already in corpus_dir (split with the same
    fractions, seed and labels) keeps its split (split.assign_splits). Unreadable, empty or silent files (all zeros, a
    DC offset alone, or too quiet for 16 bits), and FIFOs, sockets or devices named like audio
    (never opened), are skipped and listed in manifest["skipped"]; a file above full scale is
    scaled down, a damaged one keeps the part that decodes (both said in the log and the
    manifest). Does nothing when corpus_dir already holds a corpus of the same inputs and
    settings (its arrays whole, no file skipped for lack of memory: that one is tried again): known
    from the files' size, mtime and ctime, or, when those changed, from their bytes (rehashed, not decoded: see prep_inputs.fingerprint). Never deletes or
    replaces anything of the user's (a folder holding a file by a corpus file's name that prep
    did not write is refused). Raises ConfigError for a setting (before any file is read),
    CorpusError for a missing input or one that is not a file or folder, an output that is not
    a folder or holds such files, or no usable file.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    settings = PrepSettings(inputs=tuple(inputs), **settings)
    corpus_dir = Path(corpus_dir)
    finish_interrupted_publish(corpus_dir)  # before anything is judged: the corpus there is whole again
    found, skipped_folders = prep_inputs.discover(settings.inputs)
    if not found:
        more = f" ({len(skipped_folders)} skipped: see the warnings above)" if skipped_folders else ""
        raise CorpusError(f"no audio files ({' '.join(sorted(prep_inputs.AUDIO_EXTENSIONS))}) found in: "
                          + ", ".join(map(prep_inputs.printable_name, settings.inputs)) + more)
    file_labels = prep_inputs.folder_labels(found) if settings.labels == "folders" else [None] * len(found)
    if settings.labels == "folders":
        prep_inputs.warn_empty_label_folders(settings.inputs, found)
    fingerprint = prep_inputs.fingerprint(_recipe(settings, skipped_folders), found)
    existing, digests = _up_to_date(corpus_dir, settings, found, skipped_folders, fingerprint, progress)
    if existing is not None and not _skipped_for_memory(corpus_dir, existing):
        logger.info("corpus up to date: %s", corpus_dir)
        return existing
    made = missing_folders(corpus_dir)
    ensure_folder(corpus_dir, "corpus")
    need = None  # the room the work may take: known once the folder is locked
    try:
        _refuse_foreign_files(corpus_dir)  # before the lock too: a folder refused is left as it was (no .lock)
        lock = _lock(corpus_dir, existing)
        if lock is None:  # read-only: the corpus there, of these inputs, stands
            return existing
        with lock, gone_unless_made(made):  # stopped or refused, a new corpus leaves no folder
            _refuse_foreign_files(corpus_dir)
            remove_stale_temporaries(corpus_dir)
            need = _check_room(corpus_dir, found, settings.sample_rate)
            earlier = _earlier(corpus_dir, existing)
            tmp = make_temporary(corpus_dir)
            try:
                manifest = _prepare_in(tmp, corpus_dir, settings, found, file_labels, skipped_folders, progress,
                                       digests, earlier)
                if manifest is None:
                    logger.info("%s: still too long for this machine's memory: the corpus stays as it was (the next "
                                "prep tries again)", ", ".join(map(str, prep_earlier.retries(existing))))
                    return existing
                manifest["fingerprint"] = fingerprint
                _say_what_is_replaced(corpus_dir, manifest)
                publish(tmp, corpus_dir, manifest)
            finally:
                if (tmp / MANIFEST).is_file() and not (corpus_dir / MANIFEST).exists():  # stopped inside publish
                    logger.warning("%s: stopped while the corpus was moved into place: the next prep there finishes "
                                   "the move (%s holds the rest)", corpus_dir, tmp.name)
                else:
                    shutil.rmtree(tmp, ignore_errors=True)
    except OSError as err:  # a full disk, a read-only folder: until publish, the old corpus is untouched
        if err.errno in (errno.ENOSPC, errno.EDQUOT) and need is not None:
            raise CorpusError(f"cannot write the corpus in {corpus_dir}: {os.strerror(err.errno)}: "
                              f"{_room_words(need)}, {_amount(_free_bytes(corpus_dir))} are free now; the corpus "
                              "there, if any, is kept as it was") from err
        # the temporary folder prep could not make is no name to give: the corpus folder, named, says it
        made = err.filename and not os.path.basename(os.fsdecode(err.filename)).startswith(TMP_PREFIX)
        where = f" ({err.filename})" if made else ""
        raise CorpusError(f"cannot write the corpus in {corpus_dir}: {err.strerror or err}{where}") from err
    _log_summary(corpus_dir, manifest)
    return manifest


def _lock(corpus_dir: Path, existing: dict | None) -> FolderLock | None:
    """corpus_dir's lock, taken; None when its lock file cannot be opened (a read-only folder or disk) and
    existing is a corpus of these inputs that skipped files for lack of memory: those cannot be tried again
    there, and that corpus is kept as it is (said). Raises FolderBusyError for another prep at work there, and
    the lock's WavegenError when there is no such corpus."""
    lock = FolderLock(corpus_dir, "prep")
    try:
        lock.acquire()
    except FolderBusyError:
        raise
    except WavegenError as err:
        if existing is None:
            raise
        retry = prep_earlier.retries(existing)
        one = len(retry) == 1
        logger.warning("%s: cannot take its lock (%s): the %s it skipped for lack of memory (%s%s) cannot be "
                       "tried again; the corpus there is kept as it is (make the folder writable to try %s again)",
                       corpus_dir, why_not_written(err), "file" if one else "files", retry[0] if retry else "",
                       ", ..." if len(retry) > 1 else "", "it" if one else "them")
        return None
    return lock


def _check_room(corpus_dir: Path, found, sample_rate: int) -> int:
    """The bytes preparing found into corpus_dir may take (prep_decode.room_needed); a warning, before any
    file is decoded, when the disk there has less free (an upper bound: trimmed silence needs none)."""
    need = prep_decode.room_needed(found, sample_rate)
    free = _free_bytes(corpus_dir)
    if free < need:
        logger.warning("%s: %s, %s are free: prep may stop when the disk is full (the corpus there, if any, is "
                       "kept as it was)", corpus_dir, _room_words(need), _amount(free))
    return need


def _room_words(need: int) -> str:
    return (f"preparing it takes up to {_amount(need)} free there (its audio as 16-bit samples twice over: "
            "the decoded files, then the arrays made of them)")


def _amount(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f} MB" if nbytes >= 100_000 else f"{nbytes:,} bytes"


def _free_bytes(folder: Path) -> int:
    """The bytes free on folder's disk; where folder is gone (a new corpus's, removed as prep stopped:
    prep_publish.gone_unless_made), on the disk of the nearest folder above it that is there."""
    there = next((f for f in (folder, *folder.absolute().parents) if f.exists()), folder)
    try:
        return shutil.disk_usage(there).free
    except OSError:
        return 0


def _prepare_in(tmp, corpus_dir, settings, found, file_labels, skipped_folders, progress, digests=None,
                earlier=None) -> dict | None:
    """Decode, split and write every array into tmp; returns the manifest (no fingerprint yet).

    digests: the inputs' sha256 by path where they were read already (None: read them here). earlier: a
    corpus of these inputs that skipped files for lack of memory (prep_earlier.Earlier): only those are
    decoded; None is returned, and nothing written, when each is skipped so again (that corpus stands)."""
    decoded = prep_decode.decode_files(found, file_labels, tmp, settings, progress, digests, earlier)
    files, digests = decoded.files, decoded.digests
    skipped = skipped_folders + decoded.skipped
    if earlier is not None:
        if earlier.unchanged(files, skipped):
            return None
        earlier.write_audio(tmp, decoded.from_earlier)
    content_fingerprint = prep_inputs.content_fingerprint(_recipe(settings, skipped_folders), found, digests)
    for label in sorted({lb for lb in file_labels if lb is not None} - {f["label"] for f in files}):
        logger.warning("every file of label folder %r was skipped: there will be no label %r", label, label)
    if not files:
        listed = "; ".join(prep_inputs.printable_name(f"{s['path']}: {s['reason']}") for s in skipped[:5])
        more = f"; and {len(skipped) - 5} more (see the warnings above)" if len(skipped) > 5 else ""
        raise CorpusError(f"no usable audio, every input was skipped: {listed}{more}")
    before = _splits_before(corpus_dir, settings)
    pieces, split_mode, held = assign_splits(files, decoded.seg_lengths, settings.val_fraction,
                                             settings.test_fraction, settings.seed, before, decoded.seg_starts,
                                             settings.sample_rate)
    if before:
        kept, new = len(held), earlier_entries(files, before).count(None)
        again = f", {len(files) - kept - new} drawn again" if len(files) - kept - new else ""
        logger.info("%s: %s kept %s split, %s assigned%s", corpus_dir, counted(kept, "earlier file"),
                    "its" if kept == 1 else "their", counted(new, "new file"), again)
    splits = prep_decode.write_arrays(tmp, pieces, settings.sample_rate)
    return {
        "format_version": FORMAT_VERSION,
        "sample_rate": settings.sample_rate,
        "params": settings.params(),
        "split_mode": split_mode,
        "labels": sorted({f["label"] for f in files if f["label"] is not None}),
        "files": files,
        "skipped": skipped,
        "splits": splits,
        "content_fingerprint": content_fingerprint,
    }


def _splits_before(corpus_dir: Path, settings: PrepSettings) -> dict | None:
    """The splits of the corpus in corpus_dir (split.earlier_splits) when it was split with these fractions, seed
    and labels: its files keep them, so a run resumed on the prepared corpus never trains on what it validated on.
    None where there is none (or its manifest is not one this wavegen reads); None, said, where --seed, a fraction
    or the labels (None or "folders": other groups to split) changed: every file's split is drawn again."""
    old = read_manifest(corpus_dir)
    if not isinstance(old, dict) or not isinstance(old.get("params"), dict) or not isinstance(old.get("files"), list):
        return None
    keys = ("val_fraction", "test_fraction", "seed", "labels")
    changed = [f"{k} {old['params'].get(k)!r} → {getattr(settings, k)!r}" for k in keys
               if old["params"].get(k) != getattr(settings, k)]
    if changed:
        logger.info("%s: %s: every file's split is drawn again", corpus_dir, ", ".join(changed))
        return None
    return earlier_splits(old)


def _say_what_is_replaced(corpus_dir: Path, manifest: dict) -> None:
    """A warning when the corpus about to be replaced holds other audio (its content id differs): the
    settings that changed and the sources added or removed, and that runs begun on it stop resuming."""
    old = read_manifest(corpus_dir)
    if old is None:  # no corpus there
        return
    try:
        was_id, now_id = content_id(old), content_id(manifest)
        if was_id == now_id:
            return
        was, now = old.get("params", {}), manifest["params"]
        what = [f"{k} {was.get(k)!r} → {now.get(k)!r}" for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)]
        what += _sources_changed(old, manifest)
    except (AttributeError, TypeError):  # not a manifest this wavegen reads
        return
    logger.warning("replacing the corpus in %s (corpus id %s → %s: %s); a training run that began on it will "
                   "not resume on the new one", corpus_dir, was_id, now_id,
                   "; ".join(what) or "the same sources and settings, split or cut otherwise")


def _sources_changed(old: dict, new: dict) -> list[str]:
    """How the sources of two manifests differ: changed (the same path, other bytes; named), new, and
    gone (or skipped now). One file edited counted as one new and one gone before."""
    was, now = ({f.get("path"): f.get("sha256") for f in m.get("files", [])} for m in (old, new))
    changed = sorted(p for p in was.keys() & now.keys() if was[p] != now[p])
    rest = [{sha for path, sha in m.items() if path not in changed} for m in (was, now)]
    first = {}  # each earlier source's bytes: the first path that held them
    for path in sorted((p for p in was if p not in changed), key=str):
        first.setdefault(was[path], path)
    gone = sorted((first[sha] for sha in rest[0] - rest[1]), key=str)
    counts = ((len(changed), f"changed ({_first_names(changed)})"), (len(rest[1] - rest[0]), "new"),
              (len(gone), f"gone or skipped now ({_first_names(gone)})"))
    return [f"{counted(n, 'source')} {how}" for n, how in counts if n]


def _first_names(paths: list, shown: int = 3) -> str:
    """The file names of the first ``shown`` paths, and how many more: which sources a re-prep found changed or
    gone, in one line however many there are."""
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return ", ".join(os.path.basename(str(p)) for p in paths[:shown]) + more


def _log_summary(corpus_dir: Path, manifest: dict) -> None:
    files, splits = manifest["files"], manifest["splits"]
    hours = ", ".join(f"{s} {splits[s]['seconds'] / 3600:.2f} h ({splits[s]['seconds']:.0f} s)" for s in SPLITS)
    split_by = f"split by {manifest['split_mode']}"
    if manifest["split_mode"] == "mixed":  # some labels had too few files to hold one out
        timed = [f for f in files if f["split"] == "time"]
        cut = sorted({f["label"] for f in timed if f["label"] is not None})
        split_by = f"split by file; by time for the {'label' if len(cut) == 1 else 'labels'} with too few files: " \
                   f"{', '.join(cut)}"
        if len(cut) < len({f["label"] for f in timed}) or any(f["label"] in cut for f in files if f["split"] != "time"):
            split_by = (f"split by file; by time for {counted(len(timed), 'file')} of labels with too few files, "
                        "or cut in time before and kept so")  # a label that had too few files when prepared before
    logger.info("prepared %s: %s used, %d skipped; %s (%s)",
                corpus_dir, counted(len(files), "file"), len(manifest["skipped"]), hours, split_by)
    scaled, partial = sum(f["gain_db"] < 0 for f in files), sum(f["partial"] for f in files)
    chained = sum(f.get("partial_reason", "").startswith(CHAINED_OGG) for f in files)  # whole, read in part
    recovered = sum("recovered" in f for f in files)
    notes = ([f"{counted(scaled, 'file')} scaled down to full scale (gain_db)"] if scaled else []) + \
            ([f"{counted(recovered, 'unfinished WAV file')} recovered (recovered)"] if recovered else []) + \
            ([f"{counted(partial - chained, 'damaged file')} kept in part (partial)"] if partial > chained else []) + \
            ([f"{counted(chained, 'chained Ogg file')} kept in part: {'its' if chained == 1 else 'their'} first "
              "stream (partial)"] if chained else [])
    if notes:
        logger.warning("%s: see %s", "; ".join(notes), corpus_dir / MANIFEST)
