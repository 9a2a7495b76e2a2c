"""Chained Ogg files: several logical streams one after another (`cat a.ogg b.ogg`, radio rips, some players'
exports), of which libsndfile decodes only the first. prep kept the first stream as the whole file ("partial":
false, not a word said) and `wavegen eval --renders` judged it so; where the last stream is long and not the first's,
libsndfile declares 2**63 - 1 frames: prep made room for the most the file's size could hold (a 23 MB file of four
songs was skipped as "too long to decode in memory: its header declares 58,096,321,723.7 h") and eval planned
excerpts over those frames until memory ran out. Now each says in one line how much of the file was read."""

import io
import json
import logging

import numpy as np
import soundfile as sf
from test_prep_inputs import SR, prep

import wavegen.analysis_audio as analysis_audio
from wavegen.analysis_audio import read_renders
from wavegen.audio_decode import decode_mono
from wavegen.prep_decode import room_needed


def _vorbis(seconds: float, noise: bool = False, subtype: str = "VORBIS", rate: int = SR) -> bytes:
    """An Ogg Vorbis (or subtype) file of a 220 Hz tone (or, noise, of white noise: many more bytes a second), mono."""
    t = np.arange(int(seconds * rate)) / rate
    x = 0.1 * np.random.default_rng(0).standard_normal(len(t)) if noise else 0.3 * np.sin(2 * np.pi * 220 * t)
    buffer = io.BytesIO()
    sf.write(buffer, x.astype(np.float32), rate, format="OGG", subtype=subtype)
    return buffer.getvalue()


def _chained(path, long_last: bool = False):
    """A chained Ogg file at path: 2 s of a tone, then 6 s of another stream; long_last: 20 s of noise instead (over
    64 KB: libsndfile no longer finds the first stream's end from the file's end and declares 2**63 - 1 frames).
    Returns the first stream's size in bytes and the file's."""
    first, second = _vorbis(2.0), _vorbis(20.0, noise=True) if long_last else _vorbis(6.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(first + second)
    return len(first), len(first) + len(second)


def test_prep_says_a_chained_ogg_file_is_read_to_its_first_stream_and_marks_it_partial(tmp_path, caplog):
    first, size = _chained(tmp_path / "in" / "chained.ogg")
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        prep([tmp_path / "in"], tmp_path / "corpus")
    said = [r.getMessage() for r in caplog.records if "chained.ogg: " in r.getMessage()]
    assert said == [f"{tmp_path / 'in' / 'chained.ogg'}: a chained Ogg file (2 streams one after another): only its "
                    f"first stream decodes, 2.00 s of the 8.00 s it holds ({first:,} of its {size:,} bytes); split "
                    "it into one file per stream to use the rest"], caplog.text
    entry, = json.loads((tmp_path / "corpus" / "manifest.json").read_text())["files"]
    assert entry["partial"] is True and entry["partial_reason"] == said[0].split(": ", 1)[1]
    assert entry["duration_seconds"] == 2.0
    # said as what it is in the summary, not as a damaged file
    assert "1 chained Ogg file kept in part: its first stream (partial)" in caplog.text
    assert "damaged" not in caplog.text


def test_a_chained_ogg_file_without_a_declared_length_is_given_room_for_its_first_stream(tmp_path, caplog):
    path = tmp_path / "chained.ogg"
    _chained(path, long_last=True)
    assert sf.SoundFile(path).frames == 2**63 - 1  # what libsndfile declares of it: the case looked at
    # room for 2 s at SR, twice over in int16, not the 2880 frames a byte an Ogg file's size could hold (1.1 GB)
    assert room_needed([(path, tmp_path)], SR) < 64 * 1024 + 4 * 3 * SR
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        decoded = decode_mono(path, SR)
    assert decoded.frames == 2 * SR and decoded.damage.startswith("a chained Ogg file (2 streams")
    assert "of the 22.00 s it holds" in decoded.damage


def test_a_chained_opus_file_is_said_chained_not_cut_short(tmp_path):
    """libsndfile declares 2**63 - 1 frames of it too, and Opus has no Vorbis end mark to look for: it was said
    "cut short: only 2.00 s of the 192153584304148.83 s its header declares decode"."""
    path = tmp_path / "chained.opus"
    path.write_bytes(_vorbis(2.0, subtype="OPUS", rate=48000) + _vorbis(12.0, True, "OPUS", 48000))
    assert sf.SoundFile(path).frames == 2**63 - 1
    decoded = decode_mono(path, SR)
    assert decoded.damage.startswith("a chained Ogg file (2 streams one after another): only its first stream "
                                     "decodes, 2.00 s of the 14.00 s it holds"), decoded.damage


def test_eval_renders_say_a_chained_ogg_file_and_judge_its_first_stream(tmp_path, caplog, monkeypatch):
    folder = tmp_path / "renders"
    _chained(folder / "chained.ogg")
    _chained(folder / "long.ogg", long_last=True)
    planned = []

    def plan(lengths, *args, **kwargs):  # excerpts planned over 2**63 - 1 frames took minutes, then all memory
        planned.append(list(lengths))
        assert max(lengths) < 10**9, lengths
        return plan_excerpts(lengths, *args, **kwargs)

    plan_excerpts = analysis_audio.plan_excerpts
    monkeypatch.setattr(analysis_audio, "plan_excerpts", plan)
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        renders = read_renders(folder, SR, 10.0)
    assert renders.names == ["chained.ogg", "long.ogg"] and planned[-1] == [2 * SR, 2 * SR]
    for name, held in (("chained.ogg", 8.0), ("long.ogg", 22.0)):
        line, = [r.getMessage() for r in caplog.records if f"{name}: " in r.getMessage()]
        assert line.startswith(f"{folder / name}: a chained Ogg file (2 streams one after another): only its first "
                               f"stream decodes, 2.00 s of the {held:.2f} s it holds"), line


def _pages(data: bytes) -> list[bytes]:
    """The pages of the Ogg file data, as they are (their CRCs kept whole)."""
    from wavegen.audio_ogg import ogg_pages
    return [data[at:at + length] for at, _, length in ogg_pages(io.BytesIO(data), len(data))]


def _multiplexed(a: bytes, b: bytes) -> bytes:
    """One link of two streams side by side (as a video's sound and picture are): the Ogg files a and b (of other
    serial numbers) with their first pages together, then their other pages in turn."""
    first, second = _pages(a), _pages(b)
    assert first[0][14:18] != second[0][14:18]  # libsndfile draws each file's serial number
    rest = [page for pair in zip(first[1:], second[1:]) for page in pair]
    longer = first if len(first) > len(second) else second
    return b"".join([first[0], second[0], *rest, *longer[min(len(first), len(second)):]])


def test_a_chain_whose_second_link_multiplexes_two_streams_counts_that_link_once(tmp_path):
    """A link of two streams side by side opens with both first pages: the second was counted as a link of its
    own ("3 streams one after another", its 0 s in what the file holds) once any page of the first link had passed."""
    from wavegen.audio_ogg import ogg_links
    path = tmp_path / "chained.ogg"
    path.write_bytes(_vorbis(2.0) + _multiplexed(_vorbis(3.0), _vorbis(4.0, noise=True)))
    assert [round(link.seconds, 2) for link in ogg_links(path)] == [2.0, 3.0]
    assert decode_mono(path, SR).damage.startswith("a chained Ogg file (2 streams one after another): only its "
                                                   "first stream decodes, 2.00 s of the 5.00 s it holds")
    alone = tmp_path / "multiplexed.ogg"  # such a link alone is one stream's file, not a chain
    alone.write_bytes(_multiplexed(_vorbis(3.0), _vorbis(4.0, noise=True)))
    assert len(ogg_links(alone)) == 1 and decode_mono(alone, SR).damage is None
