"""wavegen.weights_file: the tensors' digest of a weights file, cached by the file as stat sees it."""

from __future__ import annotations

import os

import torch
from safetensors.torch import save_file

from wavegen.weights_file import tensors_sha256


def test_a_file_rewritten_in_place_with_its_times_set_back_is_hashed_again(tmp_path):
    """A weights file hashed, then rewritten in place (same inode, same size: the same architecture) with other
    tensors, and its mtime set back as touch -r or rsync -t would: the cache, keyed by inode, mtime and size, gave
    the first file's digest for the second's tensors (render would take them for the model it began with). The
    ctime is in the key: no call sets it back."""
    path, other = tmp_path / "model.safetensors", tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(64)}, str(path))
    save_file({"w": torch.ones(64)}, str(other))
    before = os.stat(path)
    first = tensors_sha256(path)
    new = other.read_bytes()
    assert len(new) == before.st_size and first != tensors_sha256(new)
    with open(path, "r+b") as f:  # in place: the inode stays
        f.write(new)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert tensors_sha256(path) == tensors_sha256(new) != first
    assert tensors_sha256(path) == tensors_sha256(path.read_bytes())  # asked again: the cache holds the new one


def test_a_file_replaced_under_its_name_while_it_is_read_is_never_called_damaged(tmp_path):
    """The name replaced (os.replace, as a save does) by a larger weights file between the stat that gave the size
    and the open that read the bytes: the other file's header described more bytes than the size taken, and an intact
    file was called "damaged (... truncated)". The size is the file open's (fstat). A real replacer, in another
    process, swaps a small and a large file under the name while both readers ask, for 3 seconds."""
    import subprocess
    import sys
    import time

    from wavegen.errors import CheckpointError
    from wavegen.weights_file import weights_shapes

    small, large, path = tmp_path / "small", tmp_path / "large", tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(16)}, str(small))
    save_file({"w": torch.zeros(4096)}, str(large))
    save_file({"w": torch.zeros(16)}, str(path))
    digests = {tensors_sha256(small.read_bytes()), tensors_sha256(large.read_bytes())}
    replacer = subprocess.Popen([sys.executable, "-c", f"""
import os, shutil
for i in range(10 ** 7):
    shutil.copyfile({str(large)!r} if i % 2 else {str(small)!r}, {str(path)!r} + ".tmp")
    os.replace({str(path)!r} + ".tmp", {str(path)!r})
"""])
    errors, calls, end = [], 0, time.monotonic() + 3
    try:
        while time.monotonic() < end and len(errors) < 5:
            calls += 1
            try:
                assert tensors_sha256(path) in digests
                assert weights_shapes(path)["w"] in ((16,), (4096,))
            except CheckpointError as err:
                errors.append(str(err))
    finally:
        replacer.kill()
        replacer.wait()
    assert calls > 100 and errors == [], (calls, errors)
