"""Audio files decoded into samples with soundfile (libsndfile), damaged ones as far as they decode.

decode_audio and decode_mono read a file in blocks (MP3 whole); a file cut short gives what decodes and
says what is missing; what the decoder libraries print is kept off the console and quoted; room is made
for no more frames than the file's size can hold (frames_held). soundfile and soxr are imported inside
the functions that use them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np

from wavegen.audio import load_soxr, to_mono
from wavegen.audio_ogg import (OGG_UNMARKED, UNKNOWN_FRAMES, UnreadStreams, ogg_chain_unread, ogg_end_damage,
                               ogg_end_marked, ogg_links, vorbis_end_reached)
from wavegen.errors import WavegenError
from wavegen.progress import counted
from wavegen.spikes import SPIKE_FLOOR

logger = logging.getLogger("wavegen.audio")  # its warnings keep the name they had before this module was split out


class AudioError(WavegenError):
    """An audio file could not be read or written; the message names the file and why.

    `.path` and `.reason` hold the two parts separately (prep lists skipped files with them).
    """

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class AudioMemoryError(AudioError):
    """A file too long to decode in this machine's memory: not damaged, and a machine with more takes it."""


DECODE_BLOCK_FRAMES = 16384
SALVAGE_BLOCK_FRAMES = 1024  # after a decoding error: re-read in small blocks to keep all that decodes
# libsndfile 1.2's MPEG decoder returns runs of zeros at the start of every read after the
# first (measured: a 10 s tone read in 16384-frame blocks came back 10% zeros, in 1024-frame
# blocks 96%), so an MP3 is read in one call, which decodes it whole
WHOLE_READ_SUBTYPES = ("MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III")
# libsndfile's log line for a chunk whose declared size runs past the end of the file:
# "data : 384000 (should be 230368)"; AU's and RF64's (its ds64 chunk's) say "Data Size" and "Riff size"
# (a size field's name, "size" dropped in what is said; AIFF's mended "Sample Size" is no chunk's).
# 0 and 0xFFFFFFFF are placeholders of streaming writers.
_SHORT_CHUNK = re.compile(r"^\s*(\w+)(?:(?<=Data) Size|(?<=Riff) size)?\s*:\s*(\d+)\s*\(should be (\d+)\)",
                          re.MULTILINE)
_SIZE_PLACEHOLDERS = (0, 0xFFFFFFFF)
_SOURCE_PLACE = re.compile(r"^\[[^\]]*\]\s*")  # mpg123's "[src/libmpg123/parse.c:wetwork():1349] " before a note


class DecodedAudio(NamedTuple):
    """What decode_audio returns: samples [frames, channels] float32, the file's rate in Hz, and
    `damage`: None for a whole file, else what is missing (the samples are the part that decoded)."""

    samples: np.ndarray
    sample_rate: int
    damage: str | None


class DecodedMono(NamedTuple):
    """What decode_mono returns: samples [T] float32, the file's channels mixed to mono and resampled;
    sample_rate_in, frames and channels: the file's own rate in Hz, and the frames and channels decoded;
    loudest_channel: the largest |sample| of any channel (None for one channel); damage as DecodedAudio's;
    nonfinite_frames: the frames with a NaN or infinite sample in any channel (a damaged float file; samples then
    holds NaNs about them), first_nonfinite: the first such frame (None where there is none); peak_in: the largest
    |sample| of any channel at the file's own rate, one channel too (prep judges spikes by it, not by the resampled
    mix); channel_peaks: per channel its largest |sample| at or under SPIKE_FLOOR (None for one channel): its sound
    with any spike passed over (a channel of music and a 1e30 spike peaks at the music's level), so prep can say what
    the channels hold where their sound cancels in the mix under spikes in every channel."""

    samples: np.ndarray
    sample_rate_in: int
    frames: int
    channels: int
    loudest_channel: float | None
    damage: str | None
    nonfinite_frames: int = 0
    first_nonfinite: int | None = None
    peak_in: float = 0.0
    channel_peaks: tuple[float, ...] | None = None


def decode_audio(path: str | Path) -> DecodedAudio:
    """Decode an audio file with soundfile (WAV, FLAC, OGG/Vorbis, Opus, MP3, AIFF, ...).

    Float files keep their values, including any above full scale. A file cut short (a
    truncated download or copy) returns the part that decodes, with `damage` saying what is
    wrong. Raises AudioError naming the path and the reason when the file is missing, of an
    unknown format, or has nothing that decodes.
    """
    with _open_decoder(path) as (f, notes, reopen):
        out = _decode_buffer(path, f)
        n, damage = _read_into(out, f, reopen=reopen)
        sample_rate = int(f.samplerate)
    damage = _damage_with_notes(path, n, damage, notes)
    samples = out if n == len(out) else out[:n].copy()
    return DecodedAudio(samples, sample_rate, damage)


def decode_mono(path: str | Path, sample_rate: int | None = None, source=None) -> DecodedMono:
    """Decode an audio file mixed to mono and resampled to sample_rate Hz (None: its own rate): the same
    samples as resample(to_mono(decode_audio(path).samples), ...), the same damage and AudioErrors.

    Read block by block where the format allows (all but MP3, see WHOLE_READ_SUBTYPES): each block is
    mixed and resampled as it comes, so memory holds the mono result, not the file's channels at its rate.
    source: a binary file object (read or readinto, seek, tell) to decode from its start instead of the file at
    path, which still names it in messages (prep reads an unfinished WAV through one that mends its header).
    """
    with _open_decoder(path, source) as (f, notes, reopen):
        rate_in, channels = int(f.samplerate), int(f.channels)
        mono = _MonoStream(Path(path), f, sample_rate or rate_in)
        if f.subtype in WHOLE_READ_SUBTYPES:
            whole = _decode_buffer(Path(path), f)
            n, damage = _read_into(whole, f)
            mono.add(whole[:n])
            del whole
        else:
            n, damage = _read_into(np.empty((DECODE_BLOCK_FRAMES, channels), np.float32), f, sink=mono.add,
                                   reopen=reopen)
        samples = mono.finish()
    damage = _damage_with_notes(path, n, damage, notes)
    multi = channels > 1
    return DecodedMono(samples, rate_in, n, channels, mono.loudest if multi else None, damage, mono.nonfinite_frames,
                       mono.first_nonfinite, mono.loudest, tuple(map(float, mono.sound_peaks)) if multi else None)


@contextmanager
def _open_decoder(path: str | Path, source=None):
    """(the open soundfile of path, or of the file object source (path naming it), the DecoderNotes kept
    meanwhile: their text once the block ends, reopen(frame): a fresh soundfile of the same file at that frame, or
    None where it cannot be had; libsndfile cannot seek one whose decoding failed). AudioError when the file is
    missing, will not open, or has no audio header."""
    import soundfile as sf

    path = Path(path)
    if source is None and not path.is_file():
        raise AudioError(path, "no such file")

    def opened():
        if source is not None:
            source.seek(0)
        return sf.SoundFile(os.fsencode(path) if source is None else source)  # bytes: a name not UTF-8 opens too

    with DecoderNotes() as notes:  # mpg123 writes its "Note: ..." lines to stderr itself
        try:
            f = opened()
        except Exception as e:  # libsndfile reports every failure as a RuntimeError subclass
            notes.close()
            raise AudioError(path, f"cannot decode audio ({_open_failure(e, path, notes)})") from e
        with f, ExitStack() as reopened:
            if f.format == "RAW":  # libsndfile reads a .au without its ".snd" magic as headerless 8 kHz u-law
                raise AudioError(path, "cannot decode audio (no audio header: not audio, or damaged; headerless "
                                       "raw samples are not read)")

            def reopen(frame: int):
                try:
                    again = reopened.enter_context(opened())
                    again.seek(frame)
                    return again
                except Exception:
                    return None

            yield f, notes, reopen


def _damage_with_notes(path, n: int, damage: str | None, notes: DecoderNotes) -> str | None:
    """decode's `damage` ("cut short: ...", with what the decoder said; an UnreadStreams as it is), None for a whole
    file; AudioError when nothing decodes (n == 0 frames) of a damaged file."""
    if isinstance(damage, UnreadStreams):  # whole, as far as it is read: nothing of the decoder's to add
        return damage
    if notes.text:
        logger.debug("%s: the decoder said: %s", path, notes.text)
        if damage is not None:  # libsndfile's own reason ("Unspecified internal error") says little
            damage += notes.said()
    if n == 0 and damage is not None:
        raise AudioError(path, f"cannot decode audio (cut short: {damage})")
    return None if damage is None else f"cut short: {damage}"


class _MonoStream:
    """Blocks [frames, channels] float32 of the open soundfile f in (add), mixed to mono and resampled to
    rate as they come (soxr's stream: the same samples as one resample of the whole); finish(): [T] float32.
    `loudest`: the largest |sample| of any channel so far, `peaks` [channels] float64 each channel's, `sound_peaks`
    [channels] float64 each channel's largest at or under SPIKE_FLOOR (spikes passed over);
    `nonfinite_frames`, `first_nonfinite`: the frames so far with a NaN or infinite sample, and the first of them
    (None: none)."""

    def __init__(self, path: Path, f, rate: int):
        rate_in = int(f.samplerate)
        self.loudest, self._n, self._stream = 0.0, 0, None
        self.peaks = np.zeros(int(f.channels), np.float64)
        self.sound_peaks = np.zeros(int(f.channels), np.float64)
        self._frames_in, self.nonfinite_frames, self.first_nonfinite = 0, 0, None
        if rate != rate_in:
            self._stream = load_soxr().ResampleStream(rate_in, rate, 1, dtype="float32", quality="HQ")
        self._out = _room(path, f, (int(_frames_held(path, f) * rate // rate_in) + 1,), f"mono at {rate} Hz")

    def add(self, block: np.ndarray) -> None:
        if len(block) == 0:
            return
        self._count_nonfinite(block)
        peaks = np.fmax(block.max(axis=0), -block.min(axis=0))
        self.peaks = np.fmax(self.peaks, peaks)  # fmax: a NaN passed over
        self.loudest = float(self.peaks.max())
        over = ~(peaks <= SPIKE_FLOOR)  # a channel above the floor (or NaN) in this block: the rare one looked into
        if over.any():
            level = np.abs(block[:, over])
            peaks[over] = np.where(level <= SPIKE_FLOOR, level, 0.0).max(axis=0)
        self.sound_peaks = np.fmax(self.sound_peaks, peaks)
        mono = to_mono(block)
        self._put(mono if self._stream is None else self._stream.resample_chunk(mono, last=False))

    def _count_nonfinite(self, block: np.ndarray) -> None:
        if not np.isfinite(block.sum(dtype=np.float64)):  # the rare file with one: a pass over the block to find them
            bad = np.flatnonzero(~np.isfinite(block).all(axis=1))
            if len(bad):
                if self.first_nonfinite is None:
                    self.first_nonfinite = self._frames_in + int(bad[0])
                self.nonfinite_frames += len(bad)
        self._frames_in += len(block)

    def finish(self) -> np.ndarray:
        if self._stream is not None:
            self._put(self._stream.resample_chunk(np.zeros(0, np.float32), last=True))
        return self._out[: self._n]

    def _put(self, y: np.ndarray) -> None:
        end = self._n + len(y)
        if end > len(self._out):  # more than the header declared (a streamed file's placeholder size)
            grown = np.empty(max(end, 2 * len(self._out)), np.float32)
            grown[: self._n] = self._out[: self._n]
            self._out = grown
        self._out[self._n : end] = y
        self._n = end


def _decode_buffer(path: Path, f) -> np.ndarray:
    """Room for the frames the open soundfile f declares (no more than its file can hold: _frames_held):
    float32 [frames, channels]; see _room."""
    return _room(path, f, (_frames_held(path, f), f.channels), "decoded")


# The most frames one byte of a file can hold (a header declaring more lies: damaged, or a streaming writer's
# placeholder). Uncompressed, by subtype: samples of one channel a byte. Compressed, every channel together: an Ogg
# packet (Vorbis, Opus) holds at most 5760 frames (Opus's 120 ms at 48 kHz) in 2 bytes or more (with its lacing
# value), an MPEG frame at most 1152 after a 4-byte header; a FLAC frame (its subtype names its samples, PCM_16)
# at most 65535 in 8 bytes and one a channel or more (header, CRCs, a constant subframe each).
_SAMPLES_PER_BYTE = {"PCM_S8": 1, "PCM_U8": 1, "ULAW": 1, "ALAW": 1, "PCM_16": 1 / 2, "PCM_24": 1 / 3,
                     "PCM_32": 1 / 4, "FLOAT": 1 / 4, "DOUBLE": 1 / 8, "IMA_ADPCM": 2, "MS_ADPCM": 2, "G721_32": 2}
_FRAMES_PER_BYTE = {"VORBIS": 5760 / 2, "OPUS": 5760 / 2, "MPEG_LAYER_I": 1152 / 4, "MPEG_LAYER_II": 1152 / 4,
                    "MPEG_LAYER_III": 1152 / 4}


def frames_held(declared: int, size_bytes: int, file_format: str, subtype: str, channels: int) -> int:
    """The frames a file of size_bytes whose header declares `declared` (of `channels` channels, in soundfile's
    `file_format` and `subtype`) can hold at most: declared, or fewer where its size cannot hold them (a header that
    lies); declared for a subtype whose bound is not known here."""
    if file_format == "FLAC":
        most = size_bytes * 65535 / (8 + channels)
    elif subtype in _FRAMES_PER_BYTE:
        most = size_bytes * _FRAMES_PER_BYTE[subtype]
    elif subtype in _SAMPLES_PER_BYTE:
        most = size_bytes * _SAMPLES_PER_BYTE[subtype] / max(channels, 1)
    else:
        return declared
    return min(declared, int(most) + 1)


def _frames_held(path: Path, f) -> int:
    """frames_held of the open soundfile f of path (its header's frames where its size cannot be read)."""
    declared = declared_frames(f.name, int(f.frames), f.format)
    try:
        size = Path(path).stat().st_size
    except OSError:
        return declared
    return frames_held(declared, size, f.format, f.subtype, int(f.channels))


def declared_frames(name, frames: int, file_format: str) -> int:
    """The frames libsndfile declares (`frames`) of the file `name` (as ogg_links takes it), or for an Ogg file
    where it declares none it knows (its largest count: a chained file whose last stream is not its first's) the
    frames of its first stream, the only one it decodes, by that stream's last granule: room was made for the
    most its size could hold (a 23 MB file was passed over as 'too long to decode in memory: its header declares
    58,096,321,723.7 h')."""
    if file_format != "OGG" or frames < UNKNOWN_FRAMES:
        return frames
    links = ogg_links(name)
    return max(links[0].granule, 0) + 1 if links else frames


def _room(path: Path, f, shape: tuple[int, ...], what: str) -> np.ndarray:
    """float32 of shape for the open soundfile f's audio (what: which form, for the message). AudioMemoryError
    when memory cannot hold it (a recording of many hours, or a damaged header declaring them): the file is
    named and passed over, not a traceback that ends the whole prep."""
    try:
        return np.empty(shape, dtype=np.float32)
    except MemoryError:
        need = int(np.prod(shape)) * 4
        hours = f.frames / f.samplerate / 3600
        size = f"{need / 2**30:,.1f} GiB" if need >= 2**30 else f"{need / 2**20:,.1f} MiB"  # not "0.0 GiB"
        raise AudioMemoryError(path, f"too long to decode in memory: its header declares {hours:,.1f} h of "
                                     f"{counted(f.channels, 'channel')}, {size} {what}; split it into "
                                     "shorter files (one much shorter than that has a damaged header)") from None


def _read_into(out: np.ndarray, f, sink=None, reopen=None) -> tuple[int, str | None]:
    """Decode the open soundfile f into out [frames, channels]: (frames decoded, damage or None).

    sink: out is a block's room instead, reused, and each block read is handed to sink(block [k, channels]).
    reopen(frame): f afresh at frame (_open_decoder's), for a decoding error after which f cannot seek back:
    the frames between the last whole block and the damage are read from it."""
    declared, sample_rate = f.frames, int(f.samplerate)
    n, damage, block, error = 0, None, DECODE_BLOCK_FRAMES, None
    whole = f.subtype in WHOLE_READ_SUBTYPES
    if whole and sink is not None:
        raise ValueError(f"{f.subtype} is read whole, not in blocks")
    if whole:
        block = max(declared, 1)
        out.fill(np.nan)  # a failed whole read leaves what decoded before the damage: found by the NaNs after it
    while n < declared:
        try:
            at = n if sink is None else 0
            got = len(f.read(out=out[at : at + block]))
        except Exception as e:
            error = error or _libsndfile_reason(e)  # the first error says why; later ones echo it
            if whole:
                n = int(np.argmax(np.isnan(out[:, 0]))) if np.isnan(out[-1, 0]) else len(out)
            elif SALVAGE_BLOCK_FRAMES < block:
                again = f if _seek(f, n) else (reopen(n) if reopen is not None else None)
                if again is not None:
                    f, block = again, SALVAGE_BLOCK_FRAMES  # go on in small steps to the damage
                    continue
            damage = f"decoding stops at {n / sample_rate:.2f} s ({error})"
            break
        if got == 0:
            break
        if sink is not None:
            sink(out[:got])
        n += got
    if damage is None and f.format == "OGG":  # a chain's end, damaged or not, is past what was read
        damage = ogg_chain_unread(f.name, n / sample_rate)  # (an Opus one may declare 2**63 - 1 frames)
    if damage is None and n < declared and not vorbis_end_reached(f, n):
        damage = f"only {n / sample_rate:.2f} s of the {declared / sample_rate:.2f} s its header declares decode"
    return n, damage or _end_damage(f)


class DecoderNotes:
    """What the decoder libraries print to the process's stderr (mpg123's "Note: Illegal Audio-MPEG-Header
    ...", "Warning: ..."), kept off the console while a file decodes: `text` once closed, for a message.

    File descriptor 2 is pointed at a temporary file for the while (C libraries write there, not to
    sys.stderr); where there is no descriptor 2, nothing is captured."""

    LIMIT = 300  # characters of the notes a message quotes

    def __init__(self):
        self.text, self._saved, self._file = "", None, None

    def __enter__(self) -> "DecoderNotes":
        import tempfile

        try:
            self._file = tempfile.TemporaryFile()
            self._saved = os.dup(2)
        except OSError:  # no stderr at all (nothing to keep off it), or no room for the notes: as it was
            return self
        sys.stderr.flush()
        os.dup2(self._file.fileno(), 2)  # close() puts back self._saved, whenever it is called from here on
        return self

    def close(self) -> None:
        """Give stderr back and read what was written meanwhile (again: nothing more)."""
        if self._saved is None:
            if self._file is not None:
                self._file.close()
            return
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._saved = None
        with self._file:
            self._file.seek(0)
            lines = self._file.read(64 * 1024).decode(errors="replace").splitlines()
        lines = (_SOURCE_PLACE.sub("", line.removeprefix("Note: ")).strip().rstrip(".") for line in lines)
        self.text = "; ".join(line for line in lines if line)

    def said(self) -> str:
        """"; the decoder said: ..." (cut to LIMIT characters), or "" when it said nothing."""
        if not self.text:
            return ""
        text = self.text if len(self.text) <= self.LIMIT else self.text[: self.LIMIT] + " ..."
        return f"; the decoder said: {text}"

    def __exit__(self, *exc) -> None:
        self.close()


def _open_failure(error: Exception, path: Path, notes: DecoderNotes) -> str:
    """Why a file that exists would not open, in words that are true of it."""
    reason = _libsndfile_reason(error)
    # libsndfile 1.2 says this of a regular file named .mp3 in which mpg123 finds no MPEG audio
    if reason.startswith("File does not exist or is not a regular file"):
        kind = "MP3" if path.suffix.lower() == ".mp3" else "audio"
        reason = f"not decodable as {kind}: not audio, or damaged"
    return reason + notes.said()


def _seek(f, frame: int) -> bool:
    try:
        f.seek(frame)
        return True
    except Exception:  # the decoder cannot go back: keep what was read
        return False


def _libsndfile_reason(error: Exception) -> str:
    # error_string is libsndfile's reason without the path, which AudioError adds
    return (getattr(error, "error_string", None) or str(error)).removeprefix("Error : ").rstrip(".")


def _end_damage(f) -> str | None:
    """What is missing at the end of the open soundfile f, whose decode read all it declares: libsndfile's log, and
    for an Ogg file its page walk (ogg_end_damage), which overrules the log's "lacks an end-of-stream" where it read
    a last page carrying the mark (a whole file followed by zero bytes)."""
    said = damage_in_log(f.extra_info)
    if f.format != "OGG":
        return said
    if said == OGG_UNMARKED and ogg_end_marked(f.name):
        return None
    return said or ogg_end_damage(f.name)


def damage_in_log(log: str) -> str | None:
    """What libsndfile's log (soundfile's extra_info) says is missing from a file that otherwise decodes
    (a chunk declaring more bytes than the file holds, an Ogg stream with no end mark), or None."""
    for chunk, declared, present in _SHORT_CHUNK.findall(log):
        declared, present = int(declared), int(present)
        if present < declared and declared not in _SIZE_PLACEHOLDERS:
            return f"its {chunk} chunk declares {declared} bytes, the file holds {present}"
    if "lacks an end-of-stream" in log:  # Ogg (Vorbis, Opus): the last page of a whole file is marked
        return OGG_UNMARKED
    return None


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode an audio file: (x [frames, channels] float32, sample_rate_hz); see decode_audio.

    A file cut short gives the part that decodes, with a warning naming the file.
    """
    samples, sample_rate, damage = decode_audio(path)
    if damage is not None:
        _warn_partial(path, damage, len(samples) / sample_rate)
    return samples, sample_rate


def load_mono(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read an audio file, mix to mono and resample to sample_rate Hz: [T] float32 (decode_mono; a file cut
    short gives the part that decodes, with a warning naming the file)."""
    decoded = decode_mono(path, sample_rate)
    if decoded.damage is not None:
        _warn_partial(path, decoded.damage, decoded.frames / decoded.sample_rate_in)
    return decoded.samples


def _warn_partial(path, damage: str, seconds: float) -> None:
    """The warning that only `seconds` of path decode (damage: decode's, an UnreadStreams saying them itself)."""
    if isinstance(damage, UnreadStreams):
        logger.warning("%s: %s", path, damage)
    else:
        logger.warning("%s: %s; using the %.2f s that decode", path, damage, seconds)
