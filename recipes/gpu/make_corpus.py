"""Write a small synthetic corpus in wavegen's corpus format without soundfile (the GPU image
has none): int16 melodies in {train,val,test}.npy, one segment each, and the manifest that
wavegen.corpus.Corpus reads.  python make_corpus.py OUT [--seconds 20] [--sample-rate 16000]"""

import argparse
import json
from pathlib import Path

import numpy as np


def melody(samples: int, sample_rate: int, seed: int) -> np.ndarray:
    """Random notes of a pentatonic scale with decaying envelopes: int16 [samples]."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / sample_rate
    note = int(0.25 * sample_rate)
    freqs = 220.0 * 2 ** (np.array([0, 2, 4, 7, 9, 12]) / 12)
    f = freqs[rng.integers(len(freqs), size=samples // note + 1)].repeat(note)[:samples]
    env = np.exp(-6.0 * (np.arange(samples) % note) / sample_rate)
    x = 0.4 * env * np.sin(2 * np.pi * f * t) + 0.003 * rng.standard_normal(samples)
    return (x * 32767).astype(np.int16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of the train split (val, test: a quarter)")
    parser.add_argument("--sample-rate", type=int, default=16000)
    args = parser.parse_args()
    out, rate = Path(args.out), args.sample_rate
    out.mkdir(parents=True, exist_ok=True)
    files, splits = [], {}
    for index, (split, seconds) in enumerate([("train", args.seconds), ("val", args.seconds / 4),
                                              ("test", args.seconds / 4)]):
        audio = melody(int(seconds * rate), rate, seed=index)
        np.save(out / f"{split}.npy", audio)
        np.save(out / f"{split}_segments.npy", np.array([[0, audio.size, index]], np.int64))
        files.append({"path": f"synthetic/{split}.wav", "duration_seconds": seconds, "kept_seconds": seconds,
                      "split": split, "sha256": "0" * 64, "label": None, "sample_rate_in": rate,
                      "channels_in": 1, "gain_db": 0.0, "partial": False})
        splits[split] = {"samples": int(audio.size), "seconds": seconds, "segments": 1}
    manifest = {"format_version": 1, "sample_rate": rate, "params": {"synthetic": True}, "split_mode": "file",
                "labels": [], "files": files, "skipped": [], "splits": splits, "fingerprint": "synthetic"}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
