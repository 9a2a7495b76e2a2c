"""Moving a finished corpus into its folder (prep's last step), and finishing that move when a prep was
stopped inside it: the temporary folder prep writes in, the corpus marker, the manifest read back; the folders a
prep made for a new corpus, gone again when it made none."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from wavegen.corpus import MANIFEST, damaged_array
from wavegen.errors import FolderBusyError, WavegenError
from wavegen.fileio import fsync_dir, write_json
from wavegen.folders import FolderLock, remove_unused
from wavegen.split import SPLITS

logger = logging.getLogger("wavegen.prep")

ARRAYS = tuple(f"{s}.npy" for s in SPLITS) + tuple(f"{s}_segments.npy" for s in SPLITS)
TMP_PREFIX = ".prep-"
TMP_MARKER = ".wavegen-prep-temporary"  # inside every temporary folder prep makes, and only there
CORPUS_MARKER = ".wavegen-corpus"  # in a corpus folder from before prep first moves arrays into it


def read_manifest(corpus_dir: Path) -> dict | None:
    """The manifest in corpus_dir; None when there is none or it is not a JSON object."""
    try:
        manifest = json.loads((corpus_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def why_not_written(err: Exception) -> str:
    """The OS's reason a write in the corpus folder failed ("Read-only file system"), from the OSError itself
    or from the one FolderLock's error stands for; else the error's own words."""
    for cause in (err, err.__context__):
        if getattr(cause, "strerror", None):
            return cause.strerror
    return str(err)


@contextlib.contextmanager
def gone_unless_made(made: list[Path]):
    """Entered under the corpus folder's lock: a prep stopped (Ctrl-C, SIGTERM) or refused (no usable audio) in the
    folders it ``made`` (folders.missing_folders) leaves none of them where it wrote nothing there
    (folders.remove_unused); a folder holding anything else (the rest of a stopped move into place, said) stays."""
    try:
        yield
    except BaseException:
        remove_unused(made)
        raise


def make_temporary(corpus_dir: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=corpus_dir))
    (tmp / TMP_MARKER).write_text(f"{os.getpid()}\n")
    return tmp


def temporaries(corpus_dir: Path) -> list[Path]:
    """prep's temporary folders in corpus_dir: only folders carrying its marker."""
    return [t for t in corpus_dir.glob(TMP_PREFIX + "*") if t.is_dir() and not t.is_symlink() and
            (t / TMP_MARKER).is_file()]


def remove_stale_temporaries(corpus_dir: Path) -> None:
    """Remove what an interrupted prep left (we hold the lock)."""
    for stale in temporaries(corpus_dir):
        shutil.rmtree(stale, ignore_errors=True)


def publish(tmp: Path, corpus_dir: Path, manifest: dict) -> None:
    """Move the finished arrays into corpus_dir, durably, then the manifest that describes them. Every file is
    written in tmp first: what is left is renames, so a full disk stops prep with the old corpus as it was."""
    for name in ARRAYS:
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    write_json(tmp / MANIFEST, manifest)
    # Mark the folder as a corpus, then remove the old manifest: until the new one lands, the
    # folder is visibly unprepared rather than a manifest describing arrays being replaced.
    marker = corpus_dir / CORPUS_MARKER
    if not marker.is_file():
        marker.write_text("made by wavegen prep: the arrays and manifest.json here are prep's to replace\n")
        fsync_dir(corpus_dir)
    (corpus_dir / MANIFEST).unlink(missing_ok=True)
    for name in ARRAYS:
        os.replace(tmp / name, corpus_dir / name)
    fsync_dir(corpus_dir)
    os.replace(tmp / MANIFEST, corpus_dir / MANIFEST)
    fsync_dir(corpus_dir)


def finish_interrupted_publish(corpus_dir: Path) -> None:
    """Finish the publish of a prep killed between the old manifest's removal and the new one's rename: corpus_dir
    holds new arrays (some perhaps still in the temporary folder) and no manifest, the finished one lies in that
    prep's temporary folder. Moved into place under the lock once the arrays are the ones it describes: the corpus
    is readable again and, its inputs unchanged, up to date. A folder that cannot be written is said."""
    if not (corpus_dir / CORPUS_MARKER).is_file() or (corpus_dir / MANIFEST).exists():
        return
    finished = [tmp for tmp in temporaries(corpus_dir) if (tmp / MANIFEST).is_file()]
    if not finished:
        return
    try:
        with FolderLock(corpus_dir, "prep"):
            for tmp in sorted(finished, key=lambda tmp: (tmp / MANIFEST).stat().st_mtime_ns, reverse=True):
                manifest = read_manifest(tmp)
                if (corpus_dir / MANIFEST).exists() or manifest is None:  # finished meanwhile, or not prep's
                    continue
                for name in ARRAYS:
                    if (tmp / name).is_file():  # killed before this one was moved
                        os.replace(tmp / name, corpus_dir / name)
                fsync_dir(corpus_dir)
                if damaged_array(corpus_dir, manifest) is None:
                    os.replace(tmp / MANIFEST, corpus_dir / MANIFEST)
                    fsync_dir(corpus_dir)
                    logger.warning("%s: a prep was stopped while it moved the corpus into place: finished (its "
                                   "manifest moved there from %s)", corpus_dir, tmp.name)
                    remove_stale_temporaries(corpus_dir)
    except FolderBusyError:
        raise
    except (OSError, WavegenError) as err:
        logger.warning("%s holds no manifest (a prep was stopped while it moved the corpus into place) and its "
                       "finished manifest cannot be moved there (%s)", corpus_dir, why_not_written(err))
