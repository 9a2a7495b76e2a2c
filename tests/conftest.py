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


def melody(seconds, sample_rate, seed=0, amplitude=0.4) -> np.ndarray:
    """A little learnable music: random notes of a pentatonic scale with decaying envelopes.

    float32 [round(seconds * sample_rate)]; deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    out = np.zeros(n, dtype=np.float64)
    note = int(0.25 * sample_rate)
    t = np.arange(note) / sample_rate
    env = np.exp(-t * 6.0)
    scale = 220.0 * 2 ** (np.array([0, 2, 4, 7, 9, 12]) / 12)
    for start in range(0, n, note):
        f = scale[rng.integers(len(scale))]
        seg = env * (np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t))
        out[start:start + note] += seg[: n - start]
    out += 0.003 * rng.standard_normal(n)
    return (amplitude * out / np.abs(out).max()).astype(np.float32)


def prepared_corpus(folder, files=4, seconds=6.0, sample_rate=16000, **prep_kwargs) -> Path:
    """Write ``files`` melody WAVs under folder/rec and prepare them into folder/corpus."""
    from wavegen.corpus import prepare

    folder = Path(folder)
    for i in range(files):
        write_audio_file(folder / "rec" / f"song{i}.wav", melody(seconds, sample_rate, seed=i), sample_rate)
    prep_kwargs.setdefault("progress", False)
    prepare([folder / "rec"], folder / "corpus", sample_rate=sample_rate, **prep_kwargs)
    return folder / "corpus"


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    """A prepared corpus of four 6-second melodies at 16 kHz (train/val/test by file)."""
    return prepared_corpus(tmp_path, val_fraction=0.25, test_fraction=0.25)


# Small enough for a test to train in seconds; used with wavegen.train.resolve_run_config.
TINY_SAMPLERNN = ["model.dim=32", "model.emb_size=8", "train.batch_size=4", "train.seq_len=64",
                  "train.tbptt_windows=2", "train.val_seconds=2", "train.log_interval=1"]
