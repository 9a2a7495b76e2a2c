"""recipes/demo/make_recordings.py: the demo's album is pitched songs with a beat, as the demo
claims (its render is judged against this album's periodic fraction)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from wavegen.analysis_features import PERIODIC_THRESHOLD, SILENT_DB, frame_size, periodicity

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "demo" / "make_recordings.py"


def _module():
    spec = importlib.util.spec_from_file_location("make_recordings", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _eighth_note_seconds(mono: np.ndarray, rate: int) -> float:
    """The lag (s, 0.2-0.45) where the onset envelope (10 ms hops) best repeats itself."""
    hop = rate // 100
    energy = np.add.reduceat(mono.astype(np.float64) ** 2, np.arange(0, len(mono), hop)) / hop
    onsets = np.maximum(np.diff(np.log(np.sqrt(energy) + 1e-4)), 0.0)
    onsets -= onsets.mean()
    acf = np.correlate(onsets, onsets, "full")[len(onsets) - 1:]
    return (20 + int(np.argmax(acf[20:46]))) / 100


def test_album_is_pitched_songs_with_their_tempo(tmp_path):
    subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--songs", "3", "--seconds", "6"],
                   check=True, capture_output=True)
    files = sorted(tmp_path.glob("*.wav"))
    assert [f.name for f in files] == ["song_01.wav", "song_02.wav", "song_03.wav"]
    make = _module()
    tempos = []
    for i, path in enumerate(files):
        audio, rate = sf.read(path, dtype="float32")
        assert rate == make.RATE and audio.shape == (6 * rate, 2)
        assert 0.79 < np.abs(audio).max() <= 0.81  # normalised, never clipped
        expected, bpm = make.song(i, 6.0)
        np.testing.assert_allclose(audio, expected, atol=1e-4)  # the file is song(i) (16-bit PCM)
        mono = audio.mean(axis=1)
        n_fft, hop = frame_size(rate)
        frames = np.lib.stride_tricks.sliding_window_view(np.pad(mono, n_fft // 2), n_fft)[::hop]
        sounding = 10 * np.log10(np.maximum((frames ** 2).mean(axis=1), 1e-12)) > SILENT_DB
        peaks = periodicity(mono, rate, n_fft, hop)[: len(frames)]
        assert sounding.mean() > 0.95
        assert (peaks[sounding] > PERIODIC_THRESHOLD).mean() > 0.9  # pitched (the demo's render aims at >= 0.5)
        # rhythm: notes start every eighth note of the song's own tempo
        assert abs(_eighth_note_seconds(mono, rate) - 30.0 / bpm) <= 0.015, (path.name, bpm)
        tempos.append(bpm)
    assert len(set(tempos)) > 1  # not one song three times
