"""Long-form rendering: blocks from an engine, streamed to one file per stream.

``render(model, out_dir, seconds=..., streams=N)`` writes ``out_dir/stream_000.wav`` ... block
by block, so memory stays flat however long the render. Uniforms come from
:func:`wavegen.generate.uniforms` keyed by (seed, stream, position): the same seed gives
byte-identical files, whatever the block size or backend.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wavegen.audio import dequantize, quantize
from wavegen.checkpoint import load_model
from wavegen.generate import make_engine, temperatures, uniforms

logger = logging.getLogger(__name__)

FORMATS = ("wav", "flac")


@dataclass
class RenderSettings:
    seconds: float
    streams: int = 1
    seed: int = 0
    temperature: list[float] = field(default_factory=lambda: [1.0])  # cycled over streams
    prime: str | None = None
    prime_seconds: float = 2.0  # the last this many seconds of --prime are run through the model
    label: str | None = None  # "name" or a blend "a:0.7,b:0.3"
    backend: str = "auto"
    device: str = "cpu"
    format: str = "wav"
    block_seconds: float = 1.0

    def validate(self) -> None:
        if not self.seconds > 0:
            raise ValueError(f"--seconds {self.seconds}: must be positive")
        if self.streams < 1:
            raise ValueError(f"--streams {self.streams}: need at least one")
        if self.format not in FORMATS:
            raise ValueError(f"--format {self.format!r}: use one of {list(FORMATS)}")
        if not self.block_seconds > 0:
            raise ValueError(f"block_seconds {self.block_seconds}: must be positive")
        temperatures(self.temperature, self.streams)


def parse_label(text: str | None, labels: list[str]) -> np.ndarray | None:
    """``"name"`` or ``"a:0.7,b:0.3"`` → blend weights [n_labels] (None when no label given).

    Weights are normalised to sum to 1. An unknown name is an error listing the known ones.
    """
    if not labels:
        if text:
            raise ValueError(f"--label {text!r}: this model was not trained with labels")
        return None
    if not text:
        raise ValueError(f"this model is conditioned on labels; choose one with --label (known: {labels})")
    weights = np.zeros(len(labels), dtype=np.float32)
    for part in text.split(","):
        name, _, value = part.strip().partition(":")
        name = name.strip()
        if name not in labels:
            raise ValueError(f"--label {name!r} is not one of this model's labels: {labels}")
        try:
            w = float(value) if value else 1.0
        except ValueError:
            raise ValueError(f"--label {part!r}: weight {value!r} is not a number") from None
        if w < 0:
            raise ValueError(f"--label {part!r}: weights must not be negative")
        weights[labels.index(name)] += w
    if weights.sum() <= 0:
        raise ValueError(f"--label {text!r}: weights sum to zero")
    return weights / weights.sum()


def prime_codes(path: str, sample_rate: int, seconds: float, q_levels: int, quantization: str,
                multiple: int = 1) -> np.ndarray:
    """The last ``seconds`` of an audio file (any rate, any channels) → codes [T0] int64,
    T0 trimmed from the front to a multiple of ``multiple`` (a whole top frame)."""
    from wavegen.audio import load_mono

    audio = load_mono(path, sample_rate)
    keep = min(len(audio), int(round(seconds * sample_rate)))
    keep -= keep % multiple
    if keep <= 0:
        raise ValueError(f"--prime {path}: shorter than {multiple} samples at {sample_rate} Hz")
    return quantize(audio[len(audio) - keep:], q_levels, quantization)


def stream_paths(out_dir: Path, streams: int, fmt: str) -> list[Path]:
    return [Path(out_dir) / f"stream_{i:03d}.{fmt}" for i in range(streams)]


def render(model_path: str | Path, out_dir: str | Path, settings: RenderSettings, progress: bool = True) -> dict:
    """Render ``settings.streams`` streams of ``settings.seconds`` each into ``out_dir``.

    Returns a report: paths, seconds, wall time, × real time, backend.
    """
    import soundfile as sf

    settings.validate()
    model, config = load_model(model_path, settings.device)
    sr = int(config["data"]["sample_rate"])
    cfg = model.config
    label_weights = parse_label(settings.label, list(cfg.labels))
    engine = make_engine(model, settings.streams, settings.backend, settings.device)
    prime = None
    if settings.prime:
        codes = prime_codes(settings.prime, sr, settings.prime_seconds, cfg.q_levels, cfg.quantization,
                            model.context_samples)
        prime = np.broadcast_to(codes, (settings.streams, len(codes)))
    logger.info("rendering %d stream(s) x %.1f s at %d Hz with the %s engine", settings.streams,
                settings.seconds, sr, engine.backend)
    engine.reset(prime_codes=prime, label_weights=label_weights)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = stream_paths(out_dir, settings.streams, settings.format)
    total = int(round(settings.seconds * sr))
    block = max(1, int(round(settings.block_seconds * sr)))
    temps = temperatures(settings.temperature, settings.streams)
    ids = np.arange(settings.streams)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=round(total / sr, 2), unit="s", unit_scale=False, dynamic_ncols=True,
                   desc="rendered", bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}{postfix}]")
    files = [sf.SoundFile(str(p), "w", samplerate=sr, channels=1, subtype="PCM_16",
                          format=settings.format.upper()) for p in paths]
    start = time.perf_counter()
    written = 0
    try:
        with torch.inference_mode():
            while written < total:
                n = min(block, total - written)
                codes = engine.generate(uniforms(settings.seed, ids, written, n), temps)
                audio = dequantize(codes, cfg.q_levels, cfg.quantization)
                for fh, row in zip(files, audio):
                    fh.write(row)
                written += n
                if bar is not None:
                    elapsed = time.perf_counter() - start
                    bar.update(n / sr)
                    bar.set_postfix_str(f"{written / sr / max(elapsed, 1e-9):.2f}x real time")
    finally:
        for fh in files:
            fh.close()
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - start
    report = {"paths": [str(p) for p in paths], "seconds": total / sr, "streams": settings.streams,
              "sample_rate": sr, "wall_seconds": wall, "realtime_factor": total / sr / wall if wall else None,
              "backend": engine.backend, "seed": settings.seed}
    logger.info("rendered %.1f s x %d stream(s) in %.1f s (%.2fx real time) → %s", total / sr,
                settings.streams, wall, report["realtime_factor"] or 0, out_dir)
    return report
