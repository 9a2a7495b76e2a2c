"""Pictures of audio and of its generation speed, shared by render, bench and training samples.

matplotlib is imported only when a picture is drawn (and only its object API, no pyplot, so
no global backend state): a machine without it renders audio and says why there is no PNG.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def spectrogram_summary(audio_path: str | Path, n_fft: int = 1024,
                        columns: int = 1200) -> tuple[np.ndarray, float, int]:
    """An audio file of any length, read block by block (memory flat) → (db [cols, n_fft/2 + 1], seconds, rate).

    Power of non-overlapping Hann frames, averaged into ``cols = min(columns, frames)`` equal
    time columns, in dB. ``n_fft`` shrinks (to a power of two, at least 16) for short files.
    """
    import soundfile as sf

    info = sf.info(str(audio_path))
    total, sr = int(info.frames), int(info.samplerate)
    n_fft = max(16, min(n_fft, 1 << int(math.log2(max(total, 1)))))
    n_frames = max(1, total // n_fft)
    cols = min(columns, n_frames)
    power = np.zeros((cols, n_fft // 2 + 1))
    counts = np.zeros(cols)
    window = np.hanning(n_fft)
    index = 0
    for block in sf.blocks(str(audio_path), blocksize=n_fft * 64, dtype="float32", fill_value=0.0):
        if index >= n_frames:
            break
        k = min(64, n_frames - index)  # blocks are padded to full length with zeros
        seg = block[: k * n_fft].reshape(k, n_fft)
        col = np.arange(index, index + k) * cols // n_frames
        np.add.at(power, col, np.abs(np.fft.rfft(seg * window, axis=1)) ** 2)
        np.add.at(counts, col, 1)
        index += k
    return 10 * np.log10(power / np.maximum(counts, 1)[:, None] + 1e-12), total / sr, sr


def spectrogram_png(audio_path: str | Path, png_path: str | Path) -> Path | None:
    """Draw :func:`spectrogram_summary` of an audio file (80 dB range) as a 1000 x 400 PNG.

    Returns the PNG path, or None (with a warning) where matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed: no spectrogram (pip install matplotlib)")
        return None
    db, seconds, sr = spectrogram_summary(audio_path)
    scale, unit = (60.0, "min") if seconds > 600 else (1.0, "s")
    fig = Figure(figsize=(10, 4), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(db.T, origin="lower", aspect="auto", cmap="magma", vmin=db.max() - 80, vmax=db.max(),
                      extent=(0, seconds / scale, 0, sr / 2))
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("frequency (Hz)")
    ax.set_title(f"{Path(audio_path).name}: {seconds:.1f} s at {sr} Hz")
    fig.colorbar(image, ax=ax, label="dB")
    fig.tight_layout()
    fig.savefig(str(png_path))
    return Path(png_path)


def speed_png(results: list[dict] | dict, png_path: str | Path) -> Path | None:
    """Generation speed (:func:`wavegen.bench.bench_generation` results) as a PNG: aggregate samples/s
    against batch, one line per backend, log axes, one panel per result (model).

    The dashed line is real time for every stream at the model's rate (rate x batch). The PNG's
    folder is made if missing. Returns the PNG path, or None (with a warning) without matplotlib.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed: no speed plot (pip install matplotlib)")
        return None
    results = [results] if isinstance(results, dict) else list(results)
    fig = Figure(figsize=(5.2 * len(results), 4.2))
    axes = fig.subplots(1, len(results), squeeze=False)
    markers = {"torch": "s", "numba": "o", "numba-fp16": "D", "cuda": "^"}
    for ax, result in zip(axes[0], results):
        for backend in dict.fromkeys(r["backend"] for r in result["rows"]):
            rows = sorted((r for r in result["rows"] if r["backend"] == backend), key=lambda r: r["batch"])
            ax.plot([r["batch"] for r in rows], [r["samples_per_second"] for r in rows],
                    marker=markers.get(backend, "x"), label=backend)
        batches = sorted({r["batch"] for r in result["rows"]})
        rate = result["model"]["sample_rate"]
        ax.plot(batches, [rate * b for b in batches], "k--", linewidth=0.8, label=f"real time ({rate} Hz), every stream")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("streams (batch)")
        ax.set_ylabel("samples / s, all streams")
        ax.set_title(result["model"]["name"], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    m = results[0]["machine"]
    where = m["cpu"] if m["device"] == "cpu" else m.get("gpu")
    threads = f"numba {m.get('numba_threads')} / torch {m['torch_threads']} threads"
    fig.suptitle(f"generation speed: {where}, {threads}", fontsize=9)
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(png_path), dpi=110)
    return png_path
