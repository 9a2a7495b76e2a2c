"""Write a small album of synthetic songs (stereo, 22.05 kHz WAV) for the demo.

There is no download in the demo, so it makes its own music: each song has a tempo, a key,
a chord progression on a soft pad, a plucked melody over the chords, a bass line and a
noise hi-hat. Structure a model can learn in minutes on a CPU, varied enough to be music.

    python recipes/demo/make_recordings.py OUT_DIR [--songs 8] [--seconds 20]
"""

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 22050
MAJOR = np.array([0, 2, 4, 5, 7, 9, 11])
PROGRESSIONS = [[0, 4, 5, 3], [0, 5, 3, 4], [5, 3, 0, 4], [0, 3, 4, 4]]


def pluck(freq, seconds, decay):
    t = np.arange(int(seconds * RATE)) / RATE
    return np.exp(-t * decay) * (np.sin(2 * np.pi * freq * t) + 0.4 * np.sin(4 * np.pi * freq * t)
                                 + 0.15 * np.sin(6 * np.pi * freq * t))


def song(seed, seconds):
    """Song number ``seed`` → (audio [T, 2] float32 peaking at 0.8, tempo in BPM)."""
    rng = np.random.default_rng(seed)
    bpm = rng.choice([84, 96, 108, 120])
    beat = 60.0 / bpm
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    prog = PROGRESSIONS[seed % len(PROGRESSIONS)]
    n = int(seconds * RATE)
    left, right = np.zeros(n), np.zeros(n)
    step = int(beat / 2 * RATE)  # eighth notes
    for i, start in enumerate(range(0, n, step)):
        bar = (i // 8) % len(prog)
        degree = prog[bar]
        chord = [MAJOR[(degree + k) % 7] + 12 * ((degree + k) // 7) for k in (0, 2, 4)]
        if i % 8 == 0:  # pad chord for the bar
            for semis in chord:
                tone = 0.12 * pluck(root * 2 ** (semis / 12 + 1), 8 * beat / 2 * 2, 0.8)
                stop = min(n, start + len(tone))
                left[start:stop] += tone[: stop - start]
                right[start:stop] += tone[: stop - start]
        if i % 2 == 0:  # bass on the beat
            tone = 0.35 * pluck(root * 2 ** (chord[0] / 12 - 1), beat, 5.0)
            stop = min(n, start + len(tone))
            left[start:stop] += tone[: stop - start]
            right[start:stop] += tone[: stop - start]
        if rng.random() < 0.7:  # melody from the chord, sometimes a passing note
            semis = rng.choice(chord) + (rng.choice([0, 2]) if rng.random() < 0.2 else 0)
            tone = 0.25 * pluck(root * 2 ** (semis / 12 + 2), beat, 7.0)
            stop = min(n, start + len(tone))
            pan = rng.uniform(0.3, 0.7)
            left[start:stop] += (1 - pan) * tone[: stop - start] * 2
            right[start:stop] += pan * tone[: stop - start] * 2
        length = min(int(0.03 * RATE), n - start)
        hat = 0.05 * rng.standard_normal(length) * np.exp(-np.arange(length) / 100)
        left[start:start + len(hat)] += hat
        right[start:start + len(hat)] += hat
    x = np.stack([left, right], 1)
    return (0.8 * x / np.abs(x).max()).astype(np.float32), int(bpm)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--songs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(args.songs):
        audio, _ = song(i, args.seconds)
        sf.write(out / f"song_{i + 1:02d}.wav", audio, RATE)
    print(f"wrote {args.songs} songs of {args.seconds:.0f} s to {out}")


if __name__ == "__main__":
    main()
