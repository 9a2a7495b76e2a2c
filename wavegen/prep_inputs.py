"""What ``wavegen prep`` reads: the audio files under its inputs, their labels, and the
fingerprints that tell whether a corpus is up to date.

:func:`discover` finds the files (links followed, link loops searched once, FIFOs, sockets and
devices never opened); :func:`folder_labels` gives each file its label under ``--labels
folders``; :func:`fingerprint` hashes the inputs' metadata (no file read) and
:func:`content_fingerprint` their bytes (:func:`hash_inputs`), each with the recipe that
wavegen.prep builds from its settings.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
import unicodedata
from collections import Counter
from pathlib import Path

from wavegen.corpus import CorpusError
from wavegen.errors import some_of
from wavegen.fileio import sha256_file
from wavegen.progress import counted, progress_bar

logger = logging.getLogger("wavegen.prep")  # one logger for all that prep says


def printable_name(text) -> str:
    """text (a path, a name, a reason naming one) as one line can show it: its control characters and line or
    paragraph separators written as Python's repr writes them ("a\\nb.wav" for a name holding a newline), the
    rest as it is. A name with a newline split prep's skip line in two, the second looking like another line."""
    text = str(text)
    if all(ch.isprintable() or ch == " " or unicodedata.category(ch) == "Cs" for ch in text):
        return text  # every ordinary name, a name in bytes that are not UTF-8 (its surrogate escapes) too
    return "".join(ch if ch.isprintable() or ch == " " or unicodedata.category(ch) == "Cs" else repr(ch)[1:-1]
                   for ch in text)


class _OneLine(logging.Filter):
    """Every prep message written by one_line: one line, whatever the files it names are called (no message of
    prep's means a line break)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        shown = printable_name(message)
        if shown != message:
            record.msg, record.args = shown, ()
        return True


logger.addFilter(_OneLine())
SKIP_LINES = 20  # skipped files named one line each; the rest summed up in one line (all in the manifest)

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf"}
)
# audio that libsndfile cannot decode (AAC and ALAC in MP4, WMA, APE, WavPack, ...): passed over, with a warning
# (an iTunes library is mostly .m4a: a corpus of its few other files, silently, would surprise)
OTHER_AUDIO_EXTENSIONS = frozenset(
    {".m4a", ".m4b", ".aac", ".alac", ".mp4", ".wma", ".ape", ".wv", ".mpc", ".mka", ".webm", ".ac3", ".amr", ".dsf"}
)


def audio_names(folder: Path) -> list[str]:
    """The names of the audio files (by extension, as prep finds them) directly in ``folder``, sorted."""
    return sorted(entry.name for entry in folder.iterdir() if entry.suffix.lower() in AUDIO_EXTENSIONS)


def not_regular(path: Path) -> str | None:
    """What path is when it is not a regular file (after links): "a FIFO", ...; None otherwise
    (a regular file, or nothing there: a broken link is the decoder's to report)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    for test, kind in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return kind
    return "not a regular file"


def discover(inputs: tuple[str, ...]) -> tuple[list[tuple[Path, Path | None]], list[dict]]:
    """Audio files under the inputs, sorted: ([(path, input folder or None)], skipped: [{"path", "reason"}]).

    Folders are searched recursively, following symbolic links (a folder reached twice, as in
    a link loop, is searched once). A path keeps the names it was found under, so a label
    comes from a link's name, not its target's. Only regular files are taken: a FIFO, socket
    or device named like audio is skipped with a warning (never opened: reading a FIFO waits
    for a writer forever); one named as an input is refused (CorpusError).
    """
    found: dict[Path, Path | None] = {}
    skipped: list[dict] = []
    passed: list[str] = []  # the reason for each thing the search passed over (listed in skipped or not)
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            shown = printable_name(p)
            raise CorpusError(f"input {shown} is a link in a loop" if _loops(p) else f"input not found: {shown}")
        if not p.is_dir():
            kind = not_regular(p)
            if kind is not None:
                raise CorpusError(f"input {printable_name(p)} is {kind}, not a file: give audio files or folders")
            found.setdefault(p, None)  # named explicitly: let the decoder judge its format
            continue
        n_here, others = 0, []
        for n_here, path in enumerate(_walk_audio(p, skipped, others, passed), 1):
            found.setdefault(path, p)  # an input given twice, or inside another: its files found once
        if others:
            _warn_other_audio(others)
        if n_here == 0:
            logger.warning("no audio files found in %s", p)
    if len(passed) > SKIP_LINES:  # a moved library's thousand links to nothing: not a line each
        kinds = Counter(reason.split(" (")[0] for reason in passed[SKIP_LINES:])
        more = len(passed) - SKIP_LINES
        logger.warning("passed over %d more %s without a line%s (%s); --verbose names %s", more,
                       "link, file or folder" if more == 1 else "links, files or folders", "" if more == 1 else " each",
                       "; ".join(f"{n}: {kind}" for kind, n in kinds.most_common()), "it" if more == 1 else "them")
    return sorted(found.items(), key=lambda item: str(item[0])), skipped


def _pass_over(path, reason: str, passed: list[str], skipped: list[dict] | None) -> None:
    """Say the search passes over path (a line each for the first SKIP_LINES) and why; listed in skipped unless None."""
    logger.log(logging.WARNING if len(passed) < SKIP_LINES else logging.DEBUG, "skipping %s: %s", path, reason)
    passed.append(reason)
    if skipped is not None:
        skipped.append({"path": str(path), "reason": reason})


def _loops(path: Path) -> bool:
    """Whether path is a link that leads round in a loop (to itself, or through other links back to it)."""
    try:
        os.stat(path)
    except OSError as err:
        return err.errno == errno.ELOOP
    return False


def _warn_other_audio(others: list[Path]) -> None:
    counts: dict[str, int] = {}
    for path in others:
        counts[path.suffix.lower()] = counts.get(path.suffix.lower(), 0) + 1
    them = "it" if len(others) == 1 else "them"
    logger.warning("passing over %s in formats prep cannot decode (%s; e.g. %s): convert %s to FLAC or WAV to use "
                   "%s", counted(len(others), "audio file"),
                   ", ".join(f"{n} {ext}" for ext, n in sorted(counts.items())), others[0], them, them)


def _walk_audio(root: Path, skipped: list[dict], others: list[Path], passed: list[str]):
    """Yield the audio files under root (links followed); unreadable folders, and FIFOs, sockets
    and devices named like audio, go to skipped (with a warning, see _pass_over); audio in a format
    prep cannot decode (.m4a ...) to others."""
    def unreadable(err: OSError) -> None:
        _pass_over(err.filename, f"cannot read folder ({err.strerror or err})", passed, skipped)

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
            path = Path(dirpath) / name
            if os.path.islink(path) and not os.path.exists(path):  # os.walk lists a link to nothing as a file
                _dangling(path, skipped, passed)
            elif os.path.splitext(name)[1].lower() in OTHER_AUDIO_EXTENSIONS:
                others.append(path)
            elif os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS:
                kind = not_regular(path)
                if kind is None:
                    yield path
                else:
                    _pass_over(path, f"not a regular file: {kind}", passed, skipped)


def _dangling(path: Path, skipped: list[dict], passed: list[str]) -> None:
    """Warn of a link to nothing, or in a loop (a moved album's link, say: silently passed over, its label
    was just missing); one named like audio goes to skipped as well, as a file that cannot be read would."""
    what = "a link in a loop" if _loops(path) else "a link to nothing"
    audio = os.path.splitext(path.name)[1].lower() in AUDIO_EXTENSIONS
    _pass_over(path, f"{what} ({os.readlink(path)})", passed, skipped if audio else None)


def folder_labels(found: list[tuple[Path, Path | None]]) -> list[str]:
    """Label of each file: its top-level subfolder of the input folder it was found in."""
    labels, unlabelled = [], []
    for path, root in found:
        parts = path.relative_to(root).parts if root is not None else ()
        if len(parts) < 2:
            unlabelled.append(str(path))
        labels.append(parts[0] if len(parts) >= 2 else "")
    if unlabelled:
        shown = some_of(unlabelled)
        raise CorpusError(
            f"--labels folders takes each file's label from its subfolder of an input folder, but "
            f"{counted(len(unlabelled), 'file')} {'is' if len(unlabelled) == 1 else 'are'} in no subfolder ({shown}): "
            f"move {'it' if len(unlabelled) == 1 else 'them'} into one (INPUT/LABEL/file.wav)"
        )
    for label in sorted(set(labels)):
        if label != label.encode("utf-8", "replace").decode("utf-8"):  # bytes that are not UTF-8, kept as they were
            logger.warning("the label folder %r has a name that is not UTF-8: its label is those bytes, which "
                           "--label takes only as they are (tab completion of the folder name gives them); rename "
                           "the folder to UTF-8 to type its label", label)
    return labels


def warn_empty_label_folders(inputs: tuple[str, ...], found: list[tuple[Path, Path | None]]) -> None:
    """With --labels folders: a warning for each top-level subfolder of an input folder that holds
    no audio file, so gives no label (hidden folders, .git and the like, are passed over)."""
    labelled = {(str(root), path.relative_to(root).parts[0]) for path, root in found if root is not None}
    for raw in inputs:
        root = Path(raw)
        if not root.is_dir():
            continue
        try:
            entries = sorted(os.scandir(root), key=lambda e: e.name)
        except OSError:  # unreadable: the search has said so
            continue
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows links, as the search does
            except OSError:
                continue
            if is_dir and not entry.name.startswith(".") and (str(root), entry.name) not in labelled:
                logger.warning("label folder %s holds no audio files (%s): there will be no label %r",
                               entry.path, " ".join(sorted(AUDIO_EXTENSIONS)), entry.name)




def fingerprint(recipe: dict, found: list[tuple[Path, Path | None]]) -> str:
    """The inputs and settings as one hash, from file metadata alone (no file is read): the recipe
    and, per input file, its path, size, mtime and ctime (st_ctime_ns).

    The rule: an equal fingerprint means the same corpus, with no file read. ctime is there because
    size and mtime are not enough: touch -r, rsync -t and tag editors put a file's mtime back after
    changing its bytes, but every write sets the ctime to the time of the change, and no tool can
    set it back. A copy (cp -a), chmod, chown or touch of unchanged files changes the fingerprint
    too: prepare then rehashes the inputs and compares content_fingerprint, and keeps the corpus
    (recording the new fingerprint) when their bytes are the same, so only a change of content or
    settings rebuilds it.
    """
    stats = []
    for path, _ in found:
        try:
            st = path.stat()
            stats.append([str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns])
        except OSError:  # e.g. a broken link: prep will skip it and say why
            stats.append([str(path), -1, -1, -1])
    payload = dict(recipe, files=sorted(stats))
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def content_fingerprint(recipe: dict, found: list[tuple[Path, Path | None]],
                        digests: dict[str, str | None]) -> str:
    """The inputs and settings as one hash, from the files' bytes: the recipe and, per input file,
    its path and sha256 (None where it cannot be read). The manifest's "content_fingerprint"."""
    files = sorted([str(path), digests.get(str(path))] for path, _ in found)
    payload = dict(recipe, files=files)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def digest(path: Path) -> tuple[str | None, str | None]:
    """(sha256 of the file's bytes, None), or (None, why it cannot be read): a FIFO, socket or
    device is never opened (a FIFO would wait for a writer forever)."""
    kind = not_regular(path)
    if kind is not None:
        return None, f"not a regular file: {kind}"
    try:
        return sha256_file(path), None
    except OSError as e:
        return None, f"cannot read file ({e.strerror or e})"


def hash_inputs(found: list[tuple[Path, Path | None]], progress: bool) -> dict[str, str | None]:
    """sha256 of every input file (None where it cannot be read), by path."""
    digests = {}
    bar = progress_bar(total=len(found), desc="checking", unit="file") if progress else None
    for path, _ in found:
        digests[str(path)] = digest(path)[0]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return digests
