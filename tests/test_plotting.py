"""Spectrogram pictures (wavegen/plotting.py): the summary finds a tone; the PNG is a real image."""

from __future__ import annotations

import struct

import numpy as np
import soundfile as sf

from wavegen.plotting import spectrogram_png, spectrogram_summary


def test_spectrogram_summary_finds_the_tone_and_png_is_valid(tmp_path):
    path = tmp_path / "tone.wav"
    t = np.arange(8000 * 12) / 8000
    sf.write(str(path), (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 8000, subtype="PCM_16")
    db, seconds, sr = spectrogram_summary(path, n_fft=1024, columns=40)
    assert (seconds, sr) == (12.0, 8000)
    assert db.shape == (40, 513)
    peak_hz = db.argmax(axis=1) * sr / 1024
    assert np.all(np.abs(peak_hz - 1000) <= sr / 1024)
    png = spectrogram_png(path, tmp_path / "tone.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1000, 400)
