"""The broadcast's encoder: PCM blocks → Ogg Opus pages, encoded once for every listener.

Why Ogg Opus through libsndfile (the ``soundfile`` package wavegen already depends on):

- nothing new to install: soundfile's wheels carry libsndfile with libopus and libogg, on
  Linux, macOS and Windows;
- libsndfile writes Opus pages by time (about one second of audio each, whatever the audio),
  so a page is a unit of air time the server can pace. Its Ogg Vorbis writer pages by size
  instead: a quiet passage becomes one page of many seconds, which a live stream cannot pace;
- Opus is the codec browsers (``<audio>``), VLC, mpv and ffplay all play from an HTTP stream.

The bitrate is set to ~64 kb/s (libsndfile's default for 16 kHz mono is ~28 kb/s): model audio
is often noisy, which Opus codes poorly at low rates, and browsers buffer ~32 KB before they
start playing, so a higher rate also makes a new listener hear the stream sooner.

A listener who joins late gets the header pages (OpusHead, OpusTags) and then pages from the
live edge, as Icecast does; Opus frames are 20 ms and need no earlier packet, so any page
that does not start with a continued packet is a join point.

Opus codes 8, 12, 16, 24 and 48 kHz; a model at another rate is resampled to 48 kHz (soxr,
streaming) before encoding.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np

from wavegen.errors import WavegenError

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
GRANULE_RATE = 48000  # Opus granule positions always count 48 kHz samples
CONTENT_TYPE = "audio/ogg"
_CONTINUED = 0x01  # Ogg header_type flag: the page starts with the rest of a packet
BITRATE_KBPS = 64
# libsndfile maps soundfile's compression_level in [0, 1] to Opus bitrates from 256 kb/s down to 6 kb/s
_LEVEL = min(max(1.0 - (BITRATE_KBPS - 6) / 250, 0.0), 1.0)


@dataclass
class Page:
    """One Ogg page: its bytes and the stretch of broadcast it carries, in seconds."""

    data: bytes
    start_seconds: float
    end_seconds: float
    joinable: bool  # starts with a whole packet: a late listener may begin here
    seq: int = 0  # set by the broadcast when the page goes on air


def split_pages(buffer: bytearray) -> list[tuple[bytes, int, int, int]]:
    """Remove every complete Ogg page from the front of ``buffer``.

    → [(page bytes, header_type, granule position, page sequence number)]; an incomplete page
    stays in ``buffer`` for the next call.
    """
    pages, offset = [], 0
    while len(buffer) - offset >= 27:
        if buffer[offset:offset + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {offset} of the encoder's output")
        n_segments = buffer[offset + 26]
        if len(buffer) - offset < 27 + n_segments:
            break
        size = 27 + n_segments + sum(buffer[offset + 27:offset + 27 + n_segments])
        if len(buffer) - offset < size:
            break
        header_type = buffer[offset + 5]
        granule, = struct.unpack_from("<q", buffer, offset + 6)
        sequence, = struct.unpack_from("<I", buffer, offset + 18)
        pages.append((bytes(buffer[offset:offset + size]), header_type, granule, sequence))
        offset += size
    del buffer[:offset]
    return pages


class _Sink(io.RawIOBase):
    """A write-only file for libsndfile's virtual I/O: bytes collect in ``buffer``.

    libsndfile asks for the length and position at open (it never rewrites an Opus header),
    so only seeks that go nowhere are answered.
    """

    def __init__(self):
        super().__init__()
        self.buffer = bytearray()
        self.position = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def write(self, data) -> int:
        data = bytes(data)
        self.buffer += data
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if offset == 0 and whence in (io.SEEK_CUR, io.SEEK_END) or (whence == io.SEEK_SET and offset == self.position):
            return self.position
        raise OSError("the broadcast encoder's output cannot seek")


class OggOpusEncoder:
    """int16 PCM blocks at ``sample_rate`` → Ogg Opus pages (:class:`Page`), timed from ``start_seconds``.

    ``header`` holds the header pages once the first block is encoded; every later page is an
    audio page with its stretch of broadcast time. ``title`` goes into the stream's tags.
    """

    def __init__(self, sample_rate: int, start_seconds: float = 0.0, title: str = "wavegen"):
        import soundfile as sf

        if "OPUS" not in sf.available_subtypes("OGG"):
            raise WavegenError(f"this soundfile's libsndfile ({sf.__libsndfile_version__}) cannot write Ogg Opus; "
                               "pip install -U soundfile (its wheels carry a libsndfile that can)")
        self.sample_rate = int(sample_rate)
        self.rate = self.sample_rate if self.sample_rate in OPUS_RATES else GRANULE_RATE
        self._resampler = None
        if self.rate != self.sample_rate:
            from wavegen.audio import load_soxr

            self._resampler = load_soxr().ResampleStream(self.sample_rate, self.rate, 1, dtype="float32")
        self.start_seconds = float(start_seconds)
        self.header = b""
        self._pre_skip = 0  # samples (48 kHz) the decoder drops at the start
        self._audio_started = False
        self._page_start = self.start_seconds
        self._sink = _Sink()
        try:
            self._file = sf.SoundFile(self._sink, "w", samplerate=self.rate, channels=1, format="OGG",
                                      subtype="OPUS", compression_level=_LEVEL)
        except TypeError:  # soundfile < 0.13 cannot set it: libsndfile's default rate
            self._file = sf.SoundFile(self._sink, "w", samplerate=self.rate, channels=1, format="OGG",
                                      subtype="OPUS")
        self._file.title = title[:200]
        self._file.software = "wavegen serve"

    def encode(self, pcm: np.ndarray) -> list[Page]:
        """pcm [n] int16 → the pages completed by it (often none: a page is about a second)."""
        x = np.asarray(pcm, dtype=np.int16)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x.astype(np.float32) / 32768.0)
        self._file.write(x)
        return self._pages()

    def close(self) -> list[Page]:
        """Flush the encoder: the last pages."""
        if self._resampler is not None:
            self._file.write(self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        self._file.close()
        return self._pages()

    def _pages(self) -> list[Page]:
        out = []
        for data, header_type, granule, _ in split_pages(self._sink.buffer):
            if not self._audio_started and granule == 0:  # OpusHead and OpusTags
                body = 27 + data[26]
                if data[body:body + 8] == b"OpusHead":
                    self._pre_skip, = struct.unpack_from("<H", data, body + 10)
                self.header += data
                continue
            self._audio_started = True
            end = self.start_seconds + max(granule - self._pre_skip, 0) / GRANULE_RATE
            out.append(Page(data, self._page_start, end, joinable=not header_type & _CONTINUED))
            self._page_start = end
        return out
