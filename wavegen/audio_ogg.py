"""Ogg files' page headers walked from the start, for what libsndfile does not say of them: a last page cut short or
without its end-of-stream mark (:func:`ogg_end_damage`), a Vorbis stream decoded to its end mark though libsndfile
declares more frames (:func:`vorbis_end_reached`), and a chained file, several streams one after another, of which
libsndfile decodes only the first (:func:`ogg_links`, :func:`ogg_chain_unread`). wavegen.audio_decode calls them.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from wavegen.progress import counted

OGG_PAGE_HEADER = 27  # "OggS", version, flags, granule, serial, sequence, CRC, segment count; the lacing values follow
_OGG_LAST_PAGE = 4  # the header flag of a stream's last page (end of stream)
OGG_UNMARKED = "the last Ogg page has no end-of-stream mark"  # what the page walk and libsndfile's log both find


def ogg_end_damage(name) -> str | None:
    """What is missing at the end of the Ogg file ``name`` (a path, str or bytes; anything else, a file object, is
    not looked at): its last page cut short ("its last Ogg page declares 4283 bytes, the file holds 4273"), or a last
    whole page with no end-of-stream mark; None for a whole file, or one that cannot be read again.

    Its pages' headers walked from the start (one small read a page). libsndfile decodes such a file to the end of
    its last whole page and, for one cut inside its last page, says only "Junk after the last page": a download cut
    a few bytes short was kept as whole, where a WAV or FLAC cut short is marked so."""
    return _end_walked(name)[0]


def ogg_end_marked(name) -> bool:
    """Whether the walk of :func:`ogg_end_damage` read the Ogg file ``name`` to a whole last page carrying the
    end-of-stream mark (bytes after it that are no page, zeros or a tag, left out). libsndfile's log says "lacks an
    end-of-stream" of such a file followed by zero bytes (a preallocated or padded download): whole, not cut short."""
    damage, ended = _end_walked(name)
    return damage is None and ended is True


def _end_walked(name) -> tuple[str | None, bool | None]:
    """(ogg_end_damage's text, whether the last whole page read carries the end mark: None where no page was read)."""
    if not isinstance(name, (str, bytes, os.PathLike)):
        return None, None
    try:
        with open(name, "rb") as f:
            size, at, ended = os.fstat(f.fileno()).st_size, 0, None
            for at, header, length in ogg_pages(f, size):
                if at + length > size:
                    return f"its last Ogg page declares {length} bytes, the file holds {size - at}", ended
                ended, at = bool(header[5] & _OGG_LAST_PAGE), at + length
            if at < size and ended is not None:
                f.seek(at)
                tail = f.read(OGG_PAGE_HEADER + 255)
                if tail[:4] == b"OggS" or (len(tail) < 4 and b"OggS".startswith(tail)):
                    return f"its last Ogg page is cut short in its header: {counted(size - at, 'byte')} of it", ended
    except OSError:
        return None, None
    return (OGG_UNMARKED if ended is False else None), ended


def ogg_pages(f, size: int):
    """(offset, header, length) of each page of the open Ogg file f (size bytes), to the first place holding no page
    or one whose lacing the file cuts short; the last may run past the file's end: its caller's to judge."""
    at = 0
    while at + OGG_PAGE_HEADER <= size:
        f.seek(at)
        header = f.read(OGG_PAGE_HEADER)
        if header[:4] != b"OggS":
            return  # not a page (a tag appended): judged by the last page before it
        lacing = f.read(header[26])
        if len(lacing) < header[26]:
            return
        length = OGG_PAGE_HEADER + len(lacing) + sum(lacing)
        yield at, header, length
        at += length


_OGG_FIRST_PAGE = 2  # the header flag of a stream's first page (beginning of stream)
UNKNOWN_FRAMES = 2**62  # frames at or above this: libsndfile's "not known" (SF_COUNT_MAX), not a length


class OggLink(NamedTuple):
    """One stream of an Ogg file in which several follow one another (a chained file: radio rips, some players'
    exports, `cat a.ogg b.ogg`): its first page's offset, and its audio's length in seconds by its last granule
    (None for a codec not known here: neither Vorbis nor Opus); granule: that last granule."""

    start: int
    seconds: float | None
    granule: int


CHAINED_OGG = "a chained Ogg file"  # how ogg_chain_unread's text begins (prep counts such files by it)


class UnreadStreams(str):
    """decode's `damage` for a chained Ogg file (ogg_chain_unread): not damage (the file may be whole), but all that
    follows its first stream is not decoded; said as it is, without "cut short"."""


def ogg_links(name) -> list[OggLink]:
    """The streams of the Ogg file ``name`` (a path, str or bytes; anything else is not looked at: []) one after
    another: one for an ordinary file, more for a chained one; [] where it cannot be read. Its pages' headers walked
    from the start (ogg_pages); streams multiplexed side by side (their first pages together) count as one."""
    if not isinstance(name, (str, bytes, os.PathLike)):
        return []
    links, heads, past_heads = [], [], False  # heads: per link (serial, rate, pre-skip) of its first stream
    try:
        with open(name, "rb") as f:
            for at, header, _ in ogg_pages(f, os.fstat(f.fileno()).st_size):
                first_page = bool(header[5] & _OGG_FIRST_PAGE)
                if first_page and (past_heads or not links):  # a first page after others: the next link
                    links.append([at, None, -1])
                    heads.append((header[14:18], *_audio_head(f.read(19))))
                    past_heads = False  # its other streams' first pages, multiplexed with it, follow at once
                past_heads = past_heads or not first_page
                if links and header[14:18] == heads[-1][0]:
                    links[-1][2] = max(links[-1][2], int.from_bytes(header[6:14], "little", signed=True))
    except OSError:
        return []
    return [OggLink(at, None if rate is None else (granule - skip) / rate, granule)
            for (at, _, granule), (_, rate, skip) in zip(links, heads)]


def _audio_head(packet: bytes) -> tuple[int | None, int]:
    """(the rate a stream's granules count at, the frames its first granules count before its audio) from the
    start of its first packet: a Vorbis or Opus identification header; (None, 0) for another."""
    if packet[:7] == b"\x01vorbis" and len(packet) >= 16:
        return int.from_bytes(packet[12:16], "little") or None, 0
    if packet[:8] == b"OpusHead" and len(packet) >= 12:
        return 48000, int.from_bytes(packet[10:12], "little")  # Opus granules count at 48 kHz, its pre-skip first
    return None, 0


def ogg_chain_unread(name, seconds_read: float) -> UnreadStreams | None:
    """What is not decoded of the Ogg file ``name`` where it chains several streams, of which libsndfile decodes
    only the first (seconds_read of it): how many there are, the seconds they hold where known, and the bytes; None
    for a file of one stream, or one that cannot be read again."""
    links = ogg_links(name)
    if len(links) < 2:
        return None
    size = _file_size(name)
    rest = [link.seconds for link in links[1:]]
    held = "" if None in rest else f" of the {seconds_read + sum(rest):.2f} s it holds"
    return UnreadStreams(
        f"{CHAINED_OGG} ({len(links)} streams one after another): only its first stream decodes, "
        f"{seconds_read:.2f} s{held} ({links[1].start:,} of its {size:,} bytes); split it into one file per stream "
        "to use the rest")


def _file_size(name) -> int:
    try:
        return os.stat(name).st_size
    except OSError:
        return 0


def vorbis_end_reached(f, n: int) -> bool:
    """Whether n frames decoded of the open soundfile f, an Ogg Vorbis file, reach its stream's end mark: the
    granule of the page marked last in its first stream, the frames that stream holds. libsndfile declares more
    where the stream starts before granule 0 (three of hyperrogue's songs: 104 frames) or pages follow its end
    mark (wesnoth's northerners.ogg): such a file decodes whole and is not cut short. False for another file."""
    if f.subtype != "VORBIS":
        return False
    try:
        with open(f.name, "rb") as file:
            serial = None
            for _, header, _ in ogg_pages(file, os.fstat(file.fileno()).st_size):
                serial = header[14:18] if serial is None else serial
                if header[5] & _OGG_LAST_PAGE and header[14:18] == serial:
                    return n >= int.from_bytes(header[6:14], "little", signed=True)
    except (OSError, TypeError):  # gone meanwhile; f read from a file object: not looked at
        return False
    return False
