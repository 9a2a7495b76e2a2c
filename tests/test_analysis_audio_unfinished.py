"""wavegen.analysis_audio: a render WAV whose header was never finished (its data size 0, as a recorder or a
tool killed before it closed the file leaves it) is judged on its audio, as prep reads it, not skipped as
"shorter than 0.25 s (0.000 s)"."""

import logging
import struct

import numpy as np
from conftest import melody, write_audio_file

from wavegen.analysis_audio import read_renders

RATE = 8000


def unfinish(path, data_size=0):
    """Zero the RIFF and data chunk sizes of the WAV at path (its samples left where they lie)."""
    raw = bytearray(path.read_bytes())
    at = raw.find(b"data")
    raw[4:8] = struct.pack("<I", 0)
    raw[at + 4: at + 8] = struct.pack("<I", data_size)
    path.write_bytes(bytes(raw))


def test_an_unfinished_wav_render_is_judged_on_its_audio_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "renders"
    x = melody(2.0, RATE, seed=3)
    write_audio_file(folder / "a.wav", x, RATE, subtype="PCM_16")
    finished = read_renders(folder, RATE, None)
    unfinish(folder / "a.wav")
    with caplog.at_level(logging.WARNING):
        renders = read_renders(folder, RATE, None)
    assert renders.names == ["a.wav"] and renders.skipped == []
    assert sum(len(e) for e in renders.excerpts) == sum(len(e) for e in finished.excerpts) > 0
    for got, want in zip(renders.excerpts, finished.excerpts):
        np.testing.assert_array_equal(got, want)
    assert "a.wav" in caplog.text and "unfinished WAV header" in caplog.text


def test_an_unfinished_wav_with_no_audio_after_its_header_is_skipped_saying_so(tmp_path):
    folder = tmp_path / "renders"
    write_audio_file(folder / "good.wav", melody(2.0, RATE, seed=1), RATE)
    write_audio_file(folder / "empty.wav", np.zeros(0, np.float32), RATE, subtype="PCM_16")
    unfinish(folder / "empty.wav")
    renders = read_renders(folder, RATE, None)
    assert renders.names == ["good.wav"]
    assert [s["file"] for s in renders.skipped] == ["empty.wav"]
    assert "unfinished WAV header" in renders.skipped[0]["reason"]
