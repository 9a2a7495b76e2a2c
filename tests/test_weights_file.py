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
