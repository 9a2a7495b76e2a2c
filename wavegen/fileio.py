"""Writing files so that a crash never leaves half of one: the one place wavegen does it.

- :func:`atomic_write` / :func:`write_json`: a temporary file in the same folder, fsync,
  rename over the target, fsync the folder. After a crash (power loss included) the target
  holds either the old content or the new, never a mix. Only a regular file (or a link to one)
  is replaced: a folder, device, FIFO or socket at the path is refused (:func:`not_a_file`),
  never renamed over.
- :func:`stale_temporaries`: what an :func:`atomic_write` killed before its rename (``kill -9``,
  a power cut) left beside its target, for the folder's next writer to remove.
- :func:`read_json` / :func:`read_json_object`: a JSON file read back (the error says which of the two
  ways it failed: the read, or the content), for callers that each word the refusal their way
  (``config.load_json`` as a ConfigError).
- :func:`replace_dir`: move a finished folder into place; the old one goes only after the swap.
- :func:`sha256_file`: the digest of a file, read in blocks.
- :func:`write_array` / :func:`check_room`: a numpy array written by Python's own file write
  (a failed write says why: "No space left on device", not numpy's "N requested and M
  written"), and room on the disk checked before a file is filled through a memory map (where a
  full disk is a SIGBUS, not an error).
- :func:`write_failure`: torch's or safetensors' failed write (not an OSError) as the OSError it stands for.
- :func:`utf8_path`: a path whose folders are named in bytes that are not UTF-8, as a name the libraries that
  take only UTF-8 paths open (safetensors, soundfile, TensorBoard).

The folder written into (made, checked writable, held by one writer: ``FolderLock``) is wavegen.folders's.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from wavegen.errors import WavegenError


def fsync_dir(folder: str | Path) -> None:
    """fsync a folder, so a rename or a new file in it survives power loss."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class NotAFileError(WavegenError):
    """A file was to be written where something other than a regular file is (a folder, a device, a FIFO)."""


def not_a_file(path: str | Path) -> str | None:
    """What is at ``path`` (a link followed) when it is not a regular file: "folder", "device", "FIFO",
    "socket"; None where there is nothing (or a dangling link) or a regular file. A link to a device
    (``/dev/stdout``) counts as the device: renaming over the link would break it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # nothing there (or nothing that can be looked at: the write itself says why)
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "special file"


def atomic_write(path: str | Path, data: bytes | str | Callable) -> Path:
    """Write ``data`` to ``path`` atomically and durably; returns ``path``.

    ``data`` is bytes, a str (UTF-8), or a function ``write(binary_file)`` that writes the
    content itself (``np.savez``, ``safetensors``' bytes). The temporary name carries the pid,
    so two processes writing the same path never share a temporary file. NotAFileError (nothing
    written) where ``path`` is a folder, device, FIFO or socket: a rename would replace it.
    """
    path = Path(path)
    kind = not_a_file(path)
    if kind is not None:
        raise NotAFileError(f"{path}: is a {kind}, not a regular file; nothing was written (writing would "
                            f"replace the {kind}): give another file name")
    tmp = path.with_name(f"{_temporary_prefix(path)}{os.getpid()}")
    try:
        try:
            f = open(tmp, "wb")
        except OSError as err:  # the folder takes no new file (read-only, immutable, full of inodes)
            raise _about(err, path, f" (cannot create a file in {path.parent})") from None
        with f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.filename not in (str(tmp), os.fsencode(tmp), None):  # about another file: as it is
            raise
        raise _about(err, path, "") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def _about(err: OSError, path: Path, more: str) -> OSError:
    """``err`` (which named atomic_write's temporary file, or nothing) as the same error about ``path``, the
    file the user knows: ``PermissionError: [Errno 1] Operation not permitted: 'run/config.json'``."""
    return OSError(err.errno, f"{err.strerror or err}{more}", str(path)) if err.errno else err


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}.tmp"


def stale_temporaries(folder: str | Path, names=None) -> list[Path]:
    """The temporary files :func:`atomic_write` left in ``folder`` when its process died before the rename
    (``.NAME.tmpPID``: a partial file nothing reads), of the files ``names`` (every file when None). Only
    the folder's one writer (the holder of its :class:`wavegen.folders.FolderLock`) should remove them: another
    process's write may be under way otherwise."""
    try:
        children = list(Path(folder).iterdir())
    except OSError:  # no folder yet: nothing left in it
        return []
    wanted = None if names is None else {_temporary_prefix(Path(name)) for name in names}
    found = []
    for child in children:
        head, sep, pid = child.name.rpartition(".tmp")
        if sep and head.startswith(".") and pid.isdigit() and (wanted is None or head + sep in wanted):
            found.append(child)
    return sorted(found)


NOT_JSON = "not JSON"  # how read_json's ValueError begins when the bytes are not JSON: "not JSON (why)"


def read_file_bytes(path: str | Path) -> bytes:
    """A file's bytes. OSError (as the system gave it) when it cannot be read (a folder: IsADirectoryError);
    ValueError saying what it is when it is a FIFO, socket or device, which is not opened (reading a FIFO would
    wait for a writer)."""
    kind = not_a_file(path)
    if kind not in (None, "folder"):  # a folder: reading it says so
        raise ValueError(f"a {kind}, not a regular file")
    return Path(path).read_bytes()


def read_json(path: str | Path):
    """A JSON file's value (any JSON: object, list, number ...), the one way wavegen reads JSON from a file.
    OSError (as the system gave it) when the file cannot be read; ValueError saying why when it is no
    regular file (:func:`read_file_bytes`) or its bytes are not JSON ("not JSON (why)": not UTF-8 text,
    broken, nested too deep for the parser)."""
    text = read_file_bytes(path)
    try:
        return json.loads(text)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{NOT_JSON} ({err})") from None
    except RecursionError:
        raise ValueError(f"{NOT_JSON} (nested too deep to read)") from None


def read_json_object(path: str | Path) -> dict:
    """A file holding a JSON object → that dict. OSError (as the system gave it) when the file cannot be
    read; ValueError saying why when it holds no JSON object (not JSON, not text, or a JSON list ...) or
    is no regular file (see :func:`read_json`)."""
    data = read_json(path)
    if not isinstance(data, dict):
        kind = {list: "array", str: "string", bool: "true or false", type(None): "null"}.get(type(data), "number")
        raise ValueError(f"a JSON {kind}, not an object")
    return data


def strict_json(value, indent: int | None = None) -> str:
    """``value`` as standard JSON (what a browser's JSON.parse and strict parsers take): a float that
    JSON cannot hold (NaN, +-Infinity: nothing to measure it on) as null, numpy values as plain ones,
    anything else JSON has no type for as its text."""
    return json.dumps(_plain(value), indent=indent, allow_nan=False)


def _plain(value):
    if isinstance(value, dict):
        return {key: _plain(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _plain(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value if value is None or isinstance(value, (str, int)) else str(value)


def write_json(path: str | Path, data, indent: int | None = 2) -> Path:
    """``data`` as JSON (a trailing newline) → ``path``, atomically."""
    return atomic_write(path, json.dumps(data, indent=indent) + "\n")


def replace_dir(tmp: str | Path, final: str | Path) -> Path:
    """Move the finished folder ``tmp`` to ``final``; an old ``final`` is removed only after the swap.

    Between the two renames the old folder is at ``final.old`` (readers fall back to it); it is removed
    out of their sight (:func:`remove_dir`), never seen half deleted. A ``final.old`` with no ``final`` (a
    process killed between the renames) is the only copy: it goes back to ``final`` first, so it is replaced
    like any old folder, never deleted before the new one is in place.
    """
    tmp, final = Path(tmp), Path(final)
    old = final.with_name(final.name + ".old")
    if old.is_dir() and not old.is_symlink() and not final.exists():
        old.rename(final)
    elif old.exists():
        remove_dir(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    fsync_dir(final.parent)
    if old.exists():
        remove_dir(old)
    return final


def free_name(base: Path) -> Path:
    """``base``, else ``base2``, ``base3``, ...: the first that names nothing, not even a link to nothing (a rename
    onto a link would replace it): where a folder is moved aside beside earlier ones kept."""
    target, n = base, 1
    while target.exists() or target.is_symlink():
        n += 1
        target = base.with_name(f"{base.name}{n}")
    return target


REMOVED = ".removed"  # a folder while remove_dir deletes it: .tmp_NAME.removed beside where it was


def remove_dir(folder: Path, aside: Path | None = None) -> None:
    """Delete the folder ``folder`` out of its readers' sight: renamed first (one atomic rename) to ``aside``
    (``.tmp_NAME.removed`` beside it unless given), then deleted there, so a reader that looks it up by its
    name finds it whole or not at all. What an earlier removal cut short left at ``aside`` goes first.
    OSError (naming the file: ``err.filename``) where it cannot be renamed or deleted."""
    if folder.is_symlink() or not folder.is_dir():  # no folder: its own error (naming it), nothing moved
        shutil.rmtree(folder)
        return
    aside = folder.with_name(f".tmp_{folder.name}{REMOVED}") if aside is None else aside
    if aside.exists():
        shutil.rmtree(aside)
    folder.rename(aside)
    shutil.rmtree(aside)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_array(path: str | Path, array, npy: bool = False) -> Path:
    """``array`` → ``path``: its bytes as ``ndarray.tofile`` writes them, or (``npy``) a .npy file as
    ``np.save`` writes it; not atomic. Written by Python's file write, so a failed write raises an
    OSError carrying the OS's reason (ENOSPC: "No space left on device", EFBIG) and the path, where
    numpy's tofile and np.save say only "N requested and M written"."""
    import numpy as np

    array = np.ascontiguousarray(array)
    try:
        with open(path, "wb") as f:
            if npy:
                np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
            f.write(memoryview(array.reshape(-1)).cast("B"))
    except OSError as err:
        if err.filename is None and err.errno:  # a failed flush at close names no file
            raise OSError(err.errno, os.strerror(err.errno), str(path)) from err
        raise
    return Path(path)


def check_room(path: str | Path, nbytes: int) -> None:
    """OSError ENOSPC naming ``path`` unless its folder's file system has ``nbytes`` free: before a file
    is filled through a memory map, where running out of room is a SIGBUS that kills the process."""
    folder = Path(path).parent
    free = shutil.disk_usage(folder).free
    if free < nbytes:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({nbytes:,} bytes needed, {free:,} free)",
                      str(path))


# how torch.save (a RuntimeError) and safetensors (a SafetensorError) say a write failed: torch names no errno
_WRITE_FAILURES = ("PytorchStreamWriter failed", "unexpected pos", "file write failed", "IoError(")
NEARLY_FULL = 1 << 20  # bytes free on the disk of a failed write below which it was full


def write_failure(err: Exception, folder: Path) -> OSError | None:
    """``err``, raised while writing into ``folder``, as the OSError it stands for: itself when it is one;
    torch's or safetensors' failed write as ENOSPC naming ``folder`` when that disk is (nearly) full, as
    the errno safetensors names, else as EIO with their message. None for any other error (a bug: it
    keeps its traceback)."""
    if isinstance(err, OSError):
        return err
    message = str(err)
    if not any(mark in message for mark in _WRITE_FAILURES):
        return None
    try:
        full = shutil.disk_usage(folder if folder.exists() else folder.parent).free < NEARLY_FULL
    except OSError:
        full = False
    code = re.search(r"IoError\(Os \{ code: (\d+)", message)
    number = errno.ENOSPC if full else int(code.group(1)) if code else errno.EIO
    strerror = os.strerror(number) if full or code else f"writing failed ({message.splitlines()[0].strip()})"
    return OSError(number, strerror, str(folder))


def is_utf8(path: str | Path) -> bool:
    """Whether ``path`` is UTF-8: False for a name whose bytes are not (Python holds them as surrogate escapes,
    ``b"r\\xe9un"`` as ``"r\\udce9un"``), which libraries that encode paths strictly (safetensors, soundfile,
    TensorBoard) refuse."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@contextmanager
def utf8_path(path: str | Path):
    """``path`` as a str that encodes as UTF-8 and names the same file or folder, for the ``with`` block: the path
    itself when it is UTF-8; else, where a folder in it is not, ``/proc/self/fd/N/REST``, N a descriptor of the
    deepest such folder (open for the block; REST the UTF-8 names under it, which need not exist yet). The path
    as it is where that cannot be done (no /proc; a file, not a folder, named in other bytes: the library's own
    error then names it)."""
    path = os.fspath(path)
    if is_utf8(path) or not os.path.isdir("/proc/self/fd"):
        yield path
        return
    parts = path.split(os.sep)
    last = max(k for k, part in enumerate(parts) if not is_utf8(part))
    folder, rest = os.sep.join(parts[:last + 1]) or os.sep, parts[last + 1:]
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # no such folder, or a file: the library says so, naming the path
        fd = None
    if fd is None:
        yield path
        return
    try:
        yield "/".join([f"/proc/self/fd/{fd}", *rest])
    finally:
        os.close(fd)
