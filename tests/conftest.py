"""Shared test helpers: tests make their own audio in tmp_path.

Fixtures return plain functions (factory fixtures), so a test asks for `make_tone` and calls
it as often as it needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_audio_file(path, x, sample_rate, format=None, subtype=None) -> Path:
    """Write float x [T] or [T, C] with soundfile (format/subtype as soundfile names them)."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(x, dtype=np.float32), sample_rate, format=format, subtype=subtype)
    return path


def tone(seconds, sample_rate, freq=440.0, channels=1, amplitude=0.5) -> np.ndarray:
    """A sine: float32 [round(seconds * sample_rate), channels], the same in every channel."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    x = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1)


def write_tone(path, seconds, sample_rate, freq=440.0, channels=1, subtype=None, format=None,
               amplitude=0.5) -> np.ndarray:
    """Write tone(...) to path; returns the float32 [T, channels] that was written."""
    x = tone(seconds, sample_rate, freq, channels, amplitude)
    write_audio_file(path, x, sample_rate, format=format, subtype=subtype)
    return x


@pytest.fixture
def make_tone():
    """make_tone(path, seconds, sample_rate, freq=440, channels=1, subtype=None, format=None)."""
    return write_tone


@pytest.fixture
def make_audio():
    """make_audio(path, x, sample_rate, format=None, subtype=None): write any float array."""
    return write_audio_file
