"""A folder a command writes into: made, checked and held by one writer (wavegen.fileio writes the files in it).

- :func:`ensure_folder`: a folder made with its parents; a file, or a link to nothing, in its way or above it
  named in one line (:func:`link_to_nothing`, which render's ``--out`` and the ``--json``/``--plot`` checks call too).
- :func:`check_writable`: a folder that cannot be written, found before the work starts.
- :class:`FolderLock`: one writer per folder (a render's ``--out``, a training ``--run``); a
  second process is refused at once with the holder's pid and command. The lock is an
  ``flock`` on ``FOLDER/.lock``, so it dies with its process (``kill -9`` included).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from wavegen.errors import FolderBusyError, WavegenError

LOCK_FILE = ".lock"


def ensure_folder(folder: str | Path, what: str = "folder") -> Path:
    """Create ``folder`` (and its parents); a clear error when it, or a parent, is a file or a link to nothing."""
    folder = Path(folder)
    try:
        if folder.exists() and not folder.is_dir():
            raise WavegenError(f"{folder} is a file, not a folder: give a folder for the {what}")
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        _say_link_to_nothing(folder, what)
        parent = next((p for p in folder.parents if p.exists() and not p.is_dir()), folder)
        raise WavegenError(f"{parent} is a file, not a folder: cannot create the {what} {folder}") from None
    except OSError as err:  # no permission, a read-only or full disk, a parent like /proc that takes no folders
        _say_link_to_nothing(folder, what)
        raise WavegenError(f"cannot create the {what} {folder}: {err.strerror or err}") from None
    return folder


def link_target(path: str | Path) -> str:
    """Where the symbolic link ``path`` leads, as it reads from here (a relative target joined to the link's folder);
    OSError where it is no link or cannot be read."""
    target = os.readlink(path)
    if not os.path.isabs(target) and str(Path(path).parent) != ".":
        target = os.path.join(Path(path).parent, target)
    return target


def link_to_nothing(path: str | Path) -> tuple[str, str] | None:
    """Where ``path`` is a symbolic link that leads to nothing: ("PATH is a link to TARGET, which does not exist",
    what to do: "make that folder"), or for a loop of links ("... which leads back to itself", "point it at a
    folder"), or under a file; a chain of links named to its end. TARGET as the link reads from where it lies.
    None otherwise (no link, or one to something)."""
    path = Path(path)
    try:
        if not path.is_symlink() or path.exists():
            return None
        target = link_target(path)
    except OSError:  # cannot be looked at: the caller's own error says why
        return None
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"{path} is a link to {target}, which leads back to itself (a loop of links)", "point it at a folder"
        if err.errno == errno.ENOTDIR:  # no folder can be made there
            return f"{path} is a link to {target}, which lies under a file, not a folder", "point it at a folder"
        if os.path.islink(target):  # a chain of links: the folder to make is at its end
            return (f"{path} is a link to {target}, a link that leads to {os.path.realpath(path)}, which does not "
                    "exist"), "make that folder"
        return f"{path} is a link to {target}, which does not exist", "make that folder"
    return None


def _say_link_to_nothing(folder: Path, what: str) -> None:
    """WavegenError where ``folder``, or a folder above it, is a link to nothing (:func:`ensure_folder` failed):
    that link and its target named, not "a file"."""
    found = link_to_nothing_on_the_way(folder)
    if found is not None:
        path, (said, todo) = found
        made = f": cannot create the {what} {folder};" if path != folder else ":"
        raise WavegenError(f"{said}{made} {todo}, or give another {what}") from None


def link_to_nothing_on_the_way(folder: Path) -> tuple[Path, tuple[str, str]] | None:
    """The first of ``folder`` and the folders above it that is a link to nothing, with :func:`link_to_nothing`'s
    words; None where none is."""
    for path in (folder, *folder.parents):
        found = link_to_nothing(path)
        if found is not None:
            return path, found
    return None


def missing_folders(folder: str | Path) -> list[Path]:
    """folder and those of its parents that do not exist yet, deepest first: the folders a command makes for it (its
    lock, ensure_folder), to remove again where it wrote nothing there (:func:`remove_unused`)."""
    missing = []
    for f in (Path(folder), *Path(folder).absolute().parents):
        if f.exists() or f.is_symlink():
            break
        missing.append(f)
    return missing


def remove_unused(made: list[Path]) -> None:
    """The folders a command ``made`` (:func:`missing_folders`) removed again where the first holds nothing but its
    lock file: that file is removed while still held (a command started there meanwhile is refused, never
    unlocked), then each folder. A command refused or stopped before it wrote anything leaves no folder; one that
    holds anything else, or cannot be removed (made read-only), stays."""
    if not made:
        return
    with contextlib.suppress(OSError):
        if [entry.name for entry in made[0].iterdir()] == [LOCK_FILE]:
            (made[0] / LOCK_FILE).unlink()
            for folder in made:  # the deepest first
                folder.rmdir()


def check_writable(folder: str | Path, what: str = "folder") -> None:
    """WavegenError naming ``folder`` (the ``what``) unless a file can be created in it: a probe file,
    named by host and pid, made and removed at once. For work that would otherwise find out after
    hours (a training's first checkpoint)."""
    folder = Path(folder)
    probe = folder / f".write-probe.{socket.gethostname()}.{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        probe.unlink()
    except OSError as err:
        raise WavegenError(f"{folder}: cannot write in this folder ({err.strerror or err}): make it writable, or "
                           f"give another {what}") from None


class FolderLock:
    """Exclusive use of ``folder`` by this process while the ``with`` block runs.

    ``what`` names the work in the refusal ("render", "training run"). A second FolderLock on
    the same folder, from any process (this one included), raises FolderBusyError at once,
    naming the holder's pid, host and command. The lock is released on exit, or by the kernel
    when the process dies; ``FOLDER/.lock`` stays (deleting it would race with a new holder).
    """

    def __init__(self, folder: str | Path, what: str = "process"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        ensure_folder(self.folder, self.what)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:  # a folder made read-only: one line, not a traceback
            raise WavegenError(f"{self.path}: cannot open the lock file of this {self.what} "
                               f"({err.strerror or err}): make {self.folder} writable, or choose another "
                               "folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderBusyError(f"{self.folder}: another {self.what} is writing here ({holder}); wait for it "
                                  "to finish (or stop it), or choose another folder") from None
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "FolderLock":
        return self if self.held else self.acquire()  # a lock taken already (acquire) is held by the block

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """What the lock holder wrote about itself, as words (its pid and command when known)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "a process that is just starting"
    return f"process {info['pid']} on {info.get('host', '?')}, started {info.get('started', '?')}: " \
           f"{info.get('command', '?')}"
