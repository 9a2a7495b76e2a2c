"""What a safetensors file holds, read from its header and bytes alone (nothing loaded into torch).

- :func:`weights_shapes`: the tensor names and shapes (wavegen.memory's estimate of a model folder).
- :func:`tensors_sha256`: a digest of the tensors alone, the same for a run's best/ and the checkpoint
  it was written from though their files differ (wavegen.checkpoint records it; render compares it).

CheckpointError names the file where the header or the data it describes is damaged or cut short.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import threading
from collections import OrderedDict
from pathlib import Path

from wavegen.errors import CheckpointError


def _header(f, size: int) -> tuple[int, dict]:
    """(header length, header) of the safetensors file open as ``f`` (``size`` bytes); ValueError when the
    header or the data it describes does not fit in the file (cut short)."""
    (n,) = struct.unpack("<Q", f.read(8))
    if n > size - 8:
        raise ValueError(f"header of {n} bytes in a file of {size}")
    header = json.loads(f.read(n))
    ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    if ends and 8 + n + max(ends) > size:
        raise ValueError(f"{8 + n + max(ends)} bytes described, {size} present (truncated)")
    return n, header


def weights_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes a safetensors file holds, from its header alone (nothing is
    loaded). CheckpointError naming the file when the header is damaged or the data is cut short."""
    path = Path(path)
    try:
        with open(path, "rb") as f:  # the size of the file open, not of its name (given to another meanwhile)
            _, header = _header(f, os.fstat(f.fileno()).st_size)
        return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (OSError, ValueError, KeyError, TypeError, struct.error) as err:
        raise CheckpointError(f"{path}: damaged or not a safetensors file ({err})") from None


_CHUNK = 1 << 22  # bytes read at a time while hashing a tensor: a big model is never held twice


def _digest_tensors(f, size: int) -> str:
    """:func:`tensors_sha256` of the safetensors file open as ``f`` (``size`` bytes)."""
    from wavegen.resolve import strip_wrappers

    n, header = _header(f, size)
    tensors = strip_wrappers({k: v for k, v in header.items() if k != "__metadata__"})
    digest = hashlib.sha256()
    for name in sorted(tensors):
        info = tensors[name]
        start, end = (int(x) for x in info["data_offsets"])
        digest.update(json.dumps([name, info["dtype"], list(info["shape"]), end - start]).encode() + b"\n")
        f.seek(8 + n + start)
        while start < end:
            chunk = f.read(min(_CHUNK, end - start))
            if not chunk:
                raise ValueError("truncated")
            digest.update(chunk)
            start += len(chunk)
    return digest.hexdigest()


def tensors_sha256(weights: str | Path | bytes) -> str:
    """sha256 of the tensors a safetensors file (a path, or its bytes) holds, whichever writer wrote it:
    each tensor in name order (without the DDP / torch.compile prefixes a checkpoint may carry), its
    name, dtype, shape and raw bytes; the header's metadata, which differs between save_model (best/) and
    accelerate (checkpoints), is left out. So a run's best/ and the checkpoint it was written from have
    the same digest though their files' sha256 differ. Read in chunks, nothing loaded into torch.
    CheckpointError naming the file when it is damaged."""
    if isinstance(weights, bytes):
        try:
            return _digest_tensors(io.BytesIO(weights), len(weights))
        except (ValueError, KeyError, TypeError, struct.error) as err:
            raise CheckpointError(f"weights of {len(weights)} bytes: damaged or not safetensors ({err})") from None
    path = Path(weights)
    try:
        return _cached_digest(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (OSError, ValueError, KeyError, TypeError, struct.error) as err:
        raise CheckpointError(f"{path}: damaged or not a safetensors file ({err})") from None


# A render's checks ask again for the same files (each process, each snapshot). The key is the file as stat sees it:
# an inode number is given again to the next file (ext4), and a mtime can be set back (touch -r, rsync -t, a file
# rewritten in place with its times restored); the ctime cannot: any write, rename or utime sets it to now. Taken of
# the file open (fstat), not of its name: a name replaced between a stat and the open paired one file's size with
# another's bytes (a larger one named "truncated")
_DIGESTS: OrderedDict = OrderedDict()  # (path, device, inode, size, mtime_ns, ctime_ns) -> digest, newest last
_DIGESTS_KEPT = 16
_DIGESTS_LOCK = threading.Lock()


def _cached_digest(path: Path) -> str:
    """The digest of the file open at ``path``, cached by its (device, inode, size, mtime_ns, ctime_ns)."""
    with open(path, "rb") as f:
        stat = os.fstat(f.fileno())
        key = (str(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        with _DIGESTS_LOCK:
            digest = _DIGESTS.get(key)
            if digest is not None:
                _DIGESTS.move_to_end(key)
                return digest
        digest = _digest_tensors(f, stat.st_size)
    with _DIGESTS_LOCK:
        _DIGESTS[key] = digest
        while len(_DIGESTS) > _DIGESTS_KEPT:
            _DIGESTS.popitem(last=False)
    return digest
