"""A WAV whose header a recorder never finished (killed before it wrote the sizes: its data chunk declares 0
bytes, so libsndfile reads no frame of it), found from its header (:func:`unfinished_wav`) and read as the
finished file would be, through a view that gives the header the sizes its audio has (:class:`FinishedView`),
no copy made. wavegen.prep_decode decodes such a file through the view and keeps it as `recovered`.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import NamedTuple

# a WAV whose data chunk declares 0 bytes: libsndfile reads no frame of it, whatever follows
UNFINISHED_WAV = ("unfinished WAV header: its data chunk size is 0, as a recorder stopped before it closed the file "
                  "leaves it")
WAV_SIZE_LIMIT = 0xFFFFFFFF  # the largest RIFF chunk size; an unfinished WAV past it is read as RF64


class UnfinishedWav(NamedTuple):
    """A RIFF WAV whose header was never finished (unfinished_wav): path, the offset of its first audio byte,
    the bytes of whole frames from there to the end of the file, and the bytes of one frame."""

    path: Path
    data_start: int
    audio_bytes: int
    block_align: int

    def finished_header(self, f) -> bytes:
        """path's header, read from its open file f, with the sizes its audio has (an RF64 header past a RIFF
        size's 4 GiB). EOFError when path is cut shorter meanwhile."""
        pad = self.audio_bytes & 1  # a chunk of an odd size is followed by a pad byte
        f.seek(0)
        header = bytearray(f.read(self.data_start))
        if len(header) < self.data_start:
            raise EOFError("it became shorter while it was read")
        if self.data_start - 8 + self.audio_bytes + pad <= WAV_SIZE_LIMIT:
            header[4:8] = struct.pack("<I", self.data_start - 8 + self.audio_bytes + pad)
            header[self.data_start - 4 : self.data_start] = struct.pack("<I", self.audio_bytes)
            return bytes(header)
        return self._rf64_header(header, pad)

    def _rf64_header(self, header: bytearray, pad: int) -> bytes:
        """header as RF64 (EBU Tech 3306): its sizes 0xFFFFFFFF, the 64-bit ones in a ds64 chunk first."""
        chunks = bytes(header[12 : self.data_start - 8])  # fmt and the rest, as they were
        head_bytes = 12 + 36 + len(chunks) + 8
        ds64 = struct.pack("<4sIQQQI", b"ds64", 28, head_bytes - 8 + self.audio_bytes + pad, self.audio_bytes,
                           self.audio_bytes // self.block_align, 0)
        return (b"RF64" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + ds64 + chunks + b"data"
                + struct.pack("<I", 0xFFFFFFFF))


class FinishedView:
    """An unfinished WAV read as a finished copy of it would be, with no copy made: its header with the sizes its
    audio has, then its audio (whole frames) read from its open file f where it lies, then the pad byte of an odd
    size. A binary file object (readinto, seek, tell) for soundfile's virtual I/O, whose callbacks cannot raise: a
    read error of f is kept in `error` and reads as the end of the file, as does a file cut shorter meanwhile."""

    def __init__(self, wav: UnfinishedWav, f):
        self._header, self._f, self._data_start = wav.finished_header(f), f, wav.data_start
        self._audio_end = len(self._header) + wav.audio_bytes
        self._size = self._audio_end + (wav.audio_bytes & 1)
        self._pos, self.error = 0, None

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._pos = max(0, offset + (0, self._pos, self._size)[whence])
        return self._pos

    def readinto(self, buffer) -> int:
        out, n = memoryview(buffer).cast("B"), 0
        while n < len(out) and self._pos < self._size:
            if self._pos < len(self._header):
                part = self._header[self._pos : self._pos + len(out) - n]
            elif self._pos < self._audio_end:
                part = self._audio(min(len(out) - n, self._audio_end - self._pos))
                if not part:
                    break
            else:
                part = b"\0"
            out[n : n + len(part)] = part
            n, self._pos = n + len(part), self._pos + len(part)
        return n

    def _audio(self, count: int) -> bytes:
        try:
            self._f.seek(self._data_start + self._pos - len(self._header))
            return self._f.read(count)
        except OSError as err:
            self.error = err
            return b""


def read_finished(path: Path, wav: UnfinishedWav, read):
    """``read(view)`` of the WAV ``path`` whose header was never finished (``wav``: :func:`unfinished_wav`'s)
    through its :class:`FinishedView`: (read's result, None), or (None, why it cannot be read: "cannot read
    file (...)") where opening or reading it fails."""
    try:
        with open(path, "rb") as f:
            view = FinishedView(wav, f)
            result = read(view)
    except (EOFError, OSError) as e:
        return None, f"cannot read file ({getattr(e, 'strerror', None) or e})"
    if view.error is not None:
        return None, f"cannot read file ({view.error.strerror or view.error})"
    return result, None


def unfinished_wav(path: Path, max_chunks: int = 64) -> UnfinishedWav | None:
    """path as an UnfinishedWav when it is a RIFF WAV whose data chunk declares 0 bytes and whose RIFF size
    is not the file's (a recorder killed before it wrote the sizes: its samples lie after the header), else
    None (a finished WAV whose data chunk is empty: what follows it is other chunks). Reads the header only."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size, block_align = os.fstat(f.fileno()).st_size, 0
        if struct.unpack("<I", head[4:8])[0] == size - 8:  # finished: the RIFF size written last
            return None
        for _ in range(max_chunks):
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            name, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"data":
                if length != 0 or block_align == 0:
                    return None
                start = f.tell()
                return UnfinishedWav(path, start, (size - start) - (size - start) % block_align, block_align)
            if name == b"fmt " and length >= 14:
                fmt = f.read(14)
                if len(fmt) < 14:  # a header cut short: libsndfile says what it makes of it
                    return None
                block_align, length = struct.unpack("<H", fmt[12:14])[0], length - 14  # bytes per frame, all channels
            f.seek(length + (length & 1), os.SEEK_CUR)
    return None
