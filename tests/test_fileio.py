"""wavegen.fileio: atomic writes, folder replacement, digests; wavegen.folders: the one-writer folder lock."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

from wavegen.errors import FolderBusyError, WavegenError
from wavegen.fileio import (atomic_write, is_utf8, read_json_object, replace_dir, sha256_file, stale_temporaries,
                            utf8_path, write_json)
from wavegen.folders import FolderLock, ensure_folder


def test_atomic_write_replaces_content_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"x": 1})
    write_json(path, {"x": 2})
    atomic_write(tmp_path / "b.bin", lambda f: f.write(b"\x00\x01"))
    assert json.loads(path.read_text()) == {"x": 2}
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write(path, "old")

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_never_replaces_what_is_not_a_regular_file(tmp_path):
    """A FIFO (a device, a socket), a folder, or a link to one at the path is refused before anything is
    written: a rename would put the file where the FIFO was (eval --plot /dev/full replaced the device)."""
    fifo, folder = tmp_path / "pipe", tmp_path / "folder"
    os.mkfifo(fifo)
    folder.mkdir()
    (tmp_path / "link").symlink_to(fifo)
    for path, kind in ((fifo, "FIFO"), (folder, "folder"), (tmp_path / "link", "FIFO")):
        with pytest.raises(WavegenError, match=rf"^{path}: is a {kind}, not a regular file; nothing was written"):
            write_json(path, {"x": 1})
    assert fifo.is_fifo() and folder.is_dir() and (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "link", "pipe"]  # no temporary left
    (tmp_path / "file").write_text("old")  # a regular file, and a link to one, are still replaced
    (tmp_path / "to_file").symlink_to(tmp_path / "file")
    atomic_write(tmp_path / "to_file", "new")
    assert (tmp_path / "to_file").read_text() == "new"


def test_replace_dir_swaps_and_removes_the_old(tmp_path):
    final, tmp = tmp_path / "best", tmp_path / "best.tmp"
    final.mkdir()
    (final / "v").write_text("1")
    tmp.mkdir()
    (tmp / "v").write_text("2")
    replace_dir(tmp, final)
    assert (final / "v").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_sha256_file(tmp_path):
    data = os.urandom(3 << 20)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_ensure_folder_names_a_file_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WavegenError, match="is a file, not a folder"):
        ensure_folder(tmp_path / "file", "render output")
    with pytest.raises(WavegenError, match=r"file is a file, not a folder: cannot create"):
        ensure_folder(tmp_path / "file" / "sub", "render output")


def test_ensure_folder_names_a_link_to_nothing_and_its_target_not_a_file(tmp_path, monkeypatch):
    """A link to nothing where the folder (or one above it) goes was "a file, not a folder"; a loop of links too.
    Nothing is made at the link's target."""
    os.symlink(tmp_path / "gone", tmp_path / "link")
    with pytest.raises(WavegenError) as err:
        ensure_folder(tmp_path / "link", "training run")
    assert str(err.value) == (f"{tmp_path / 'link'} is a link to {tmp_path / 'gone'}, which does not exist: make that "
                              "folder, or give another training run")
    with pytest.raises(WavegenError) as err:
        ensure_folder(tmp_path / "link" / "a" / "b", "corpus")
    assert str(err.value) == (f"{tmp_path / 'link'} is a link to {tmp_path / 'gone'}, which does not exist: cannot "
                              f"create the corpus {tmp_path / 'link' / 'a' / 'b'}; make that folder, or give another "
                              "corpus")
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(WavegenError) as err:
        ensure_folder(tmp_path / "loop", "--archive folder")
    assert str(err.value) == (f"{tmp_path / 'loop'} is a link to {tmp_path / 'loop'}, which leads back to itself (a "
                              "loop of links): point it at a folder, or give another --archive folder")
    monkeypatch.chdir(tmp_path)  # a relative link, given relative: its target as it reads from here
    os.symlink("elsewhere", tmp_path / "rel")
    with pytest.raises(WavegenError, match=r"^rel is a link to elsewhere, which does not exist: make that folder"):
        ensure_folder("rel", "corpus")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "loop", "rel"]
    os.mkdir(tmp_path / "gone")  # made: the link is a folder's
    assert ensure_folder(tmp_path / "link" / "a", "corpus").is_dir()


def test_ensure_folder_names_a_folder_the_system_will_not_create():
    """/proc takes no new folders (ENOENT, not a permission error): a raw traceback in wavegen serve --archive."""
    with pytest.raises(WavegenError, match=r"cannot create the serve archive /proc/wavegen-test/a: "):
        ensure_folder("/proc/wavegen-test/a", "serve archive")


def test_ensure_folder_names_a_folder_name_too_long(tmp_path):
    with pytest.raises(WavegenError, match=r"cannot create the render output .*: File name too long"):
        ensure_folder(tmp_path / ("x" * 300), "render output")


def test_lock_refuses_a_second_holder_in_this_process(tmp_path):
    with FolderLock(tmp_path / "out", "render"):
        with pytest.raises(FolderBusyError, match=rf"another render is writing here \(process {os.getpid()}"):
            FolderLock(tmp_path / "out", "render").acquire()
    with FolderLock(tmp_path / "out", "render") as again:  # released on exit
        assert again.held


def test_lock_held_by_another_process_then_released_by_its_death(tmp_path):
    folder = tmp_path / "run"
    script = textwrap.dedent(f"""
        import sys, time
        from wavegen.folders import FolderLock
        lock = FolderLock({str(folder)!r}, "training run").acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(FolderBusyError) as info:
            FolderLock(folder, "training run").acquire()
        assert f"process {child.pid}" in str(info.value) and "another training run" in str(info.value)
    finally:
        child.kill()  # kill -9: the kernel drops the lock with the process
        child.wait()
    with FolderLock(folder, "training run") as lock:
        assert lock.held


def _refuse_writes_in(monkeypatch, folder):
    """os.open refusing to create files in ``folder`` (what a read-only or `chattr +i` folder does; as
    root, which writes anywhere, only a stand-in shows it)."""
    real = os.open

    def fake(path, flags, *args, **kwargs):
        if os.path.dirname(os.fspath(path)) == os.fspath(folder) and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake)


def test_check_writable_names_a_folder_that_cannot_be_written(tmp_path, monkeypatch):
    from wavegen.folders import check_writable

    check_writable(tmp_path, "--run folder")
    assert list(tmp_path.iterdir()) == []  # the probe is gone
    with monkeypatch.context() as patch:
        _refuse_writes_in(patch, tmp_path)
        with pytest.raises(WavegenError, match=rf"^{tmp_path}: cannot write in this folder \(Permission denied\): "
                                               r"make it writable, or give another --run folder$"):
            check_writable(tmp_path, "--run folder")
    if os.geteuid() != 0:  # a real read-only folder (root writes anywhere)
        os.chmod(tmp_path, 0o555)
        try:
            with pytest.raises(WavegenError, match="cannot write in this folder"):
                check_writable(tmp_path)
        finally:
            os.chmod(tmp_path, 0o755)


def test_a_lock_in_a_folder_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    _refuse_writes_in(monkeypatch, folder)
    with pytest.raises(WavegenError, match=rf"{folder / '.lock'}: cannot open the lock file of this training run "
                                           r"\(Permission denied\): make .* writable"):
        FolderLock(folder, "training run").acquire()


def test_strict_json_writes_what_json_cannot_hold_as_null():
    """NaN and infinities are not JSON (a browser's JSON.parse refuses the whole answer; eval --json printed
    "tempo_bpm": NaN, serve's /status "temperature": Infinity): null; numpy values as plain ones."""
    import numpy as np

    from wavegen.fileio import strict_json

    def not_json(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    text = strict_json({"a": float("inf"), "b": [float("nan"), 1.5], "c": {"d": -float("inf"), "e": None},
                        "f": np.float32(0.5), "g": np.array([1, 2]), "h": (np.nan, "x")})
    assert json.loads(text, parse_constant=not_json) == {"a": None, "b": [None, 1.5], "c": {"d": None, "e": None},
                                                         "f": 0.5, "g": [1, 2], "h": [None, "x"]}


def test_write_array_writes_what_numpy_writes_and_a_failed_write_says_why(tmp_path):
    import errno
    import io
    import resource
    import signal

    import numpy as np

    from wavegen.fileio import write_array

    for a in (np.zeros(0, np.int16), np.arange(12, dtype=np.int64).reshape(4, 3), np.arange(-5, 5, dtype=np.int16)):
        saved = io.BytesIO()
        np.save(saved, a)
        assert write_array(tmp_path / "a.npy", a, npy=True).read_bytes() == saved.getvalue()
        assert write_array(tmp_path / "a.pcm", a).read_bytes() == a.tobytes()

    def limit():  # files may not grow past 50,000 bytes: a write past it fails (EFBIG), as on a full disk (ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))

    code = ("import sys, numpy as np\nfrom wavegen.fileio import write_array\n"
            "try:\n    write_array(sys.argv[1], np.zeros(64000, np.int16))\n"
            "except OSError as err:\n    print(err.errno, err.filename)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "big.pcm")], preexec_fn=limit,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == [str(errno.EFBIG), str(tmp_path / "big.pcm")], out.stderr


def test_a_write_killed_before_its_rename_leaves_a_temporary_that_is_found_by_name(tmp_path):
    """kill -9 in the middle of atomic_write: the target is untouched, the partial temporary is found
    (for the folder's next writer to remove), and nothing else is taken for one."""
    target = tmp_path / "stream_000.flac"
    target.write_bytes(b"old")
    code = textwrap.dedent(f"""
        import os, signal
        from wavegen.fileio import atomic_write
        def write(f):
            f.write(b"partial")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write({str(target)!r}, write)
    """)
    done = subprocess.run([sys.executable, "-c", code])
    assert done.returncode == -9
    assert target.read_bytes() == b"old"
    for name in (".stream_000.flac.tmpx", ".other.tmp12", "stream_000.flac.tmp5", ".stream_000.flac.tmp"):
        (tmp_path / name).write_bytes(b"")
    left = stale_temporaries(tmp_path, ["stream_000.flac", "stream_001.flac"])
    assert [p.name for p in left] == [f".stream_000.flac.tmp{done_pid(left[0])}"]
    assert left[0].read_bytes() == b"partial"
    assert sorted(p.name for p in stale_temporaries(tmp_path)) == sorted([left[0].name, ".other.tmp12"])
    assert stale_temporaries(tmp_path / "missing") == []


def done_pid(path) -> int:
    return int(path.name.rpartition(".tmp")[2])


def test_read_json_object_says_which_way_it_failed(tmp_path):
    path = tmp_path / "r.json"
    with pytest.raises(FileNotFoundError):
        read_json_object(path)
    for content, why in ((b"{\"a\": ", "not JSON"), (b"\xff\xfe\xfa", "not JSON"),
                         (b"[1, 2]", "a JSON array, not an object"), (b"null", "a JSON null, not an object"),
                         (b"4", "a JSON number, not an object"), (b"[" * 100_000 + b"]" * 100_000, "not JSON")):
        path.write_bytes(content)
        with pytest.raises(ValueError, match=f"^{why}"):
            read_json_object(path)
    path.write_text('{"files": {"a": 1}}')
    assert read_json_object(path) == {"files": {"a": 1}}
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # not opened: reading it would wait for a writer that never comes
    with pytest.raises(ValueError, match="^a FIFO, not a regular file"):
        read_json_object(fifo)
    with pytest.raises(IsADirectoryError):
        read_json_object(tmp_path)


def _chattr(path, flag):
    """`chattr +i` / `-i` on path; False where it cannot be set (no chattr, not root, a file system without it)."""
    try:
        return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.mark.parametrize("immutable", ["file", "folder"])
def test_a_write_refused_names_the_file_and_the_folder_not_the_temporary(tmp_path, immutable):
    """A config.json made immutable (chattr +i) said "Operation not permitted: '.config.json.tmp4711' ->
    'config.json'", and an immutable folder named only the temporary file, a name the user never saw."""
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / "config.json"
    write_json(path, {"old": 1})
    target = path if immutable == "file" else folder
    if not _chattr(target, "+i"):
        pytest.skip("chattr +i is not available here")
    try:
        with pytest.raises(OSError) as info:
            write_json(path, {"new": 2})
    finally:
        _chattr(target, "-i")
    err = info.value
    assert err.filename == str(path) and ".tmp" not in str(err), str(err)
    if immutable == "folder":
        assert f"cannot create a file in {folder}" in err.strerror
    assert json.loads(path.read_text()) == {"old": 1} and os.listdir(folder) == ["config.json"]


def test_utf8_path_names_a_folder_not_named_in_utf8_in_utf8_alone(tmp_path):
    """r\\xe9un/inner/x.bin (the folder's bytes Latin-1): the name given is UTF-8 and reaches the same file, for
    writing (a file not there yet) and reading; it is the path itself where the path is UTF-8."""
    latin1 = tmp_path / os.fsdecode(b"r\xe9un")
    (latin1 / "inner").mkdir(parents=True)
    assert not is_utf8(latin1) and is_utf8(tmp_path)
    with utf8_path(latin1 / "inner" / "x.bin") as name:
        name.encode("utf-8")  # a library's strict encoding takes it
        assert name.endswith("/inner/x.bin")
        with open(name, "wb") as f:
            f.write(b"abc")
    assert (latin1 / "inner" / "x.bin").read_bytes() == b"abc"
    with utf8_path(latin1) as name:  # the folder itself
        assert sorted(os.listdir(name)) == ["inner"]
    with utf8_path(tmp_path / "plain") as name:
        assert name == str(tmp_path / "plain")


def test_utf8_path_closes_what_it_opened(tmp_path):
    latin1 = tmp_path / os.fsdecode(b"r\xe9un")
    latin1.mkdir()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with utf8_path(latin1 / "a") as name:
            assert os.path.isdir(os.path.dirname(name))
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_path_not_in_utf8_written_into_json_reads_back_as_the_same_path(tmp_path):
    """json escapes the name's surrogates (\\udce9): ASCII on disk, the same str read back."""
    path = str(tmp_path / os.fsdecode(b"r\xe9un") / "corpus")
    write_json(tmp_path / "a.json", {"corpus": path})
    assert read_json_object(tmp_path / "a.json") == {"corpus": path}
    (tmp_path / "a.json").read_bytes().decode("ascii")


def test_replace_dir_removes_the_old_folder_out_of_its_readers_sight(tmp_path, monkeypatch):
    """replace_dir deleted ``final.old`` (which readers fall back to while ``final`` is missing: best.old, step_N.old)
    in place: a reader could find it half deleted, its weights gone. Now it is renamed out of the names readers look
    up before it is deleted (fileio.remove_dir), both the one an earlier replacement left and the one it makes."""
    import shutil
    from pathlib import Path

    from wavegen import fileio

    final, tmp, old = tmp_path / "best", tmp_path / "best.tmp1", tmp_path / "best.old"
    for folder, text in ((final, "now"), (tmp, "next"), (old, "left by a replacement cut short")):
        folder.mkdir()
        (folder / "model.safetensors").write_text(text)
    real, deleted = shutil.rmtree, []

    def watching(path, *args, **kwargs):
        deleted.append((Path(path).name, old.exists()))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(fileio.shutil, "rmtree", watching)
    fileio.replace_dir(tmp, final)
    assert deleted == [(".tmp_best.old.removed", False)] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    assert (final / "model.safetensors").read_text() == "next"


def test_remove_dir_moves_no_file_of_the_users_where_a_folder_was_expected(tmp_path):
    """A file where replace_dir's ``.old`` folder goes (the user's): refused with its own error naming it, left where
    it is (it was renamed to the hidden .tmp_NAME.removed, then not removed: the error named that name)."""
    from wavegen.fileio import remove_dir

    (tmp_path / "best.old").write_text("mine")
    with pytest.raises(NotADirectoryError) as err:
        remove_dir(tmp_path / "best.old")
    assert str(err.value.filename) == str(tmp_path / "best.old")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.old"] and (tmp_path / "best.old").read_text() == "mine"


def test_replace_dir_never_deletes_an_old_folder_that_is_the_only_copy(tmp_path):
    """A kill between replace_dir's renames leaves ``best.old`` alone (best/ missing): the only copy, which readers
    resolve. The next replace_dir puts it back before its swap, so a swap that then fails (here: the new folder is
    gone) still leaves it; one that succeeds replaces it as any old folder."""
    final, old, tmp = tmp_path / "best", tmp_path / "best.old", tmp_path / "best.tmp"
    old.mkdir()
    (old / "v").write_text("1")
    with pytest.raises(FileNotFoundError):
        replace_dir(tmp, final)
    kept = [folder for folder in (final, old) if (folder / "v").is_file()]
    assert [(folder / "v").read_text() for folder in kept] == ["1"]
    tmp.mkdir()
    (tmp / "v").write_text("2")
    replace_dir(tmp, final)
    assert (final / "v").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]
