"""Ogg Vorbis files whose pages make libsndfile count more frames than the stream holds: whole files, not damaged.

Three of the 17 hyperrogue songs (Debian's hyperrogue-music) start their stream at granule -104: libsndfile
declares 104 frames more than its decoder gives (the stream's end mark is at the frame the decode reaches), and
prep said "is damaged (cut short: only 62.31 s of the 62.31 s its header declares decode)", marking the file
partial; eval's load warned the same. The tests build such a file by moving the first audio packet of a Vorbis
file onto a page of its own whose granule is -104, as those songs' encoder did."""

import io
import logging
import os
import struct

import numpy as np
import soundfile as sf
from test_prep_inputs import SR, prep, tones

from wavegen.audio_decode import decode_mono, load_mono


def _crc(data: bytes) -> int:
    """Ogg's page checksum (CRC-32, polynomial 0x04C11DB7, not reflected), over a page with its CRC field zero."""
    r = 0
    for b in data:
        r ^= b << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if r & 0x80000000 else (r << 1) & 0xFFFFFFFF
    return r


def _pages(data: bytes) -> list[bytes]:
    out, at = [], 0
    while at + 27 <= len(data) and data[at:at + 4] == b"OggS":
        n = data[at + 26]
        size = 27 + n + sum(data[at + 27:at + 27 + n])
        out.append(data[at:at + size])
        at += size
    return out


def _packets(page: bytes) -> list[bytes]:
    """The packets a page (that continues none and ends each) holds."""
    n, out, at, cur = page[26], [], 27 + page[26], b""
    for size in page[27:27 + n]:
        cur, at = cur + page[at:at + size], at + size
        if size < 255:
            out.append(cur)
            cur = b""
    return out


def _page(flags: int, granule: int, serial: int, sequence: int, packets: list[bytes]) -> bytes:
    lacing = b"".join(bytes([255] * (len(p) // 255) + [len(p) % 255]) for p in packets)
    page = bytearray(b"OggS\0" + bytes([flags]) + struct.pack("<qII", granule, serial, sequence) + bytes(4)
                     + bytes([len(lacing)]) + lacing + b"".join(packets))
    page[22:26] = struct.pack("<I", _crc(bytes(page)))
    return bytes(page)


def _renumbered(page: bytes, sequence: int) -> bytes:
    granule, serial = struct.unpack("<qI", page[6:18])
    return _page(page[5], granule, serial, sequence, _packets(page)) if page[5] & 1 == 0 else None


def vorbis_starting_at(first_granule: int, seconds: float = 10.0) -> bytes:
    """A Vorbis file of a tone whose first audio packet is alone on a page of granule first_granule (its other
    pages as libsndfile wrote them, renumbered)."""
    buffer = io.BytesIO()
    t = np.arange(int(seconds * SR)) / SR
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR, format="OGG", subtype="VORBIS")
    pages = _pages(buffer.getvalue())
    audio = pages[2]
    granule, serial, sequence = struct.unpack("<qII", audio[6:22])
    first, *rest = _packets(audio)
    out = [*pages[:2], _page(0, first_granule, serial, sequence, [first]),
           _page(audio[5], granule, serial, sequence + 1, rest)]
    out += [_renumbered(page, sequence + 2 + i) for i, page in enumerate(pages[3:])]
    assert None not in out  # no page continues a packet: each one renumbered whole
    return b"".join(out)


def test_a_vorbis_stream_starting_before_granule_0_is_whole_not_cut_short(tmp_path, make_tone, caplog):
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    (rec / "early.ogg").write_bytes(vorbis_starting_at(-104))
    info = sf.info(rec / "early.ogg")
    assert info.frames == 10 * SR + 104  # what libsndfile declares: 104 frames more than the stream holds
    decoded = decode_mono(rec / "early.ogg")
    assert decoded.damage is None and decoded.frames == 10 * SR, decoded.damage
    with caplog.at_level(logging.WARNING):
        assert len(load_mono(rec / "early.ogg", SR)) == 10 * SR
        manifest = prep([rec], tmp_path / "c")
    assert "damaged" not in caplog.text and "cut short" not in caplog.text, caplog.text
    files = {os.path.basename(f["path"]): f for f in manifest["files"]}
    assert not files["early.ogg"]["partial"] and "partial_reason" not in files["early.ogg"], files["early.ogg"]
    assert files["early.ogg"]["duration_seconds"] == 10.0


def test_a_vorbis_stream_that_ends_before_its_end_mark_is_still_cut_short(tmp_path):
    """A granule past what the packets hold (the end mark's page declaring 0.2 s more): the decode stops short of
    the stream's own end, and that is said as before."""
    data = vorbis_starting_at(0)
    pages = _pages(data)
    last = pages[-1]
    granule, serial, sequence = struct.unpack("<qII", last[6:22])
    assert last[5] & 4  # the end-of-stream mark
    longer = b"".join(pages[:-1]) + _page(last[5], granule + SR // 5, serial, sequence, _packets(last))
    (tmp_path / "long.ogg").write_bytes(longer)
    damage = decode_mono(tmp_path / "long.ogg").damage
    assert damage is not None and damage.startswith("cut short: only 10.0"), damage


def test_a_whole_vorbis_file_followed_by_zero_bytes_is_whole_and_one_without_its_end_mark_is_not(tmp_path):
    """libsndfile's log says "lacks an end-of-stream" of a whole file followed by zero bytes (preallocated, or
    padded by a download tool), and that was said as damage: "the last Ogg page has no end-of-stream mark", though
    it has. The page walk reads the mark and overrules the log; a last page truly without it is still said."""
    data = vorbis_starting_at(0)
    (tmp_path / "padded.ogg").write_bytes(data + bytes(5000))
    padded = decode_mono(tmp_path / "padded.ogg")
    assert padded.damage is None and padded.frames == 10 * SR, padded.damage
    pages = _pages(data)
    last = pages[-1]
    granule, serial, sequence = struct.unpack("<qII", last[6:22])
    unmarked = b"".join(pages[:-1]) + _page(last[5] & ~4, granule, serial, sequence, _packets(last))
    for name, tail in (("unmarked.ogg", b""), ("unmarked_padded.ogg", bytes(5000))):
        (tmp_path / name).write_bytes(unmarked + tail)
        damage = decode_mono(tmp_path / name).damage
        assert damage == "cut short: the last Ogg page has no end-of-stream mark", (name, damage)
