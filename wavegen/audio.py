"""Audio I/O, mono mixdown, resampling and sample quantization.

soundfile and soxr are imported inside the functions that use them: machines that only
train or render (and import this module for quantization) may not have them installed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from wavegen.errors import WavegenError

logger = logging.getLogger(__name__)

QUANTIZATIONS = ("linear", "mu-law")
WRITE_FORMATS = ("wav", "flac")


class AudioError(WavegenError):
    """An audio file could not be read or written; the message names the file and why.

    `.path` and `.reason` hold the two parts separately (prep lists skipped files with them).
    """

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


# ----------------------------------------------------------------------------- I/O


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode an audio file with soundfile (WAV, FLAC, OGG/Vorbis, Opus, MP3, AIFF, ...).

    Returns (x [frames, channels] float32 in [-1, 1], sample_rate_hz). Raises AudioError
    naming the path and the reason when the file is missing, unknown or corrupt.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file")
    try:
        x, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile reports every failure as a RuntimeError subclass
        # error_string is libsndfile's reason without the path, which AudioError adds
        reason = getattr(e, "error_string", None) or str(e)
        raise AudioError(path, f"cannot decode audio ({reason.rstrip('.')})") from e
    return np.ascontiguousarray(x), int(sample_rate)


def to_mono(x: np.ndarray) -> np.ndarray:
    """Mix x [frames, channels] down to [frames] float32 (mean of the channels)."""
    x = np.asarray(x)
    if x.ndim == 1:
        return x.astype(np.float32, copy=False)
    if x.ndim != 2:
        raise ValueError(f"to_mono expects [frames, channels], got shape {x.shape}")
    if x.shape[1] == 1:
        return np.ascontiguousarray(x[:, 0], dtype=np.float32)
    return x.mean(axis=1, dtype=np.float32)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample mono x [T] float32 from sr_in to sr_out Hz with soxr (quality "HQ").

    Returns [T'] float32 with T' ~= T * sr_out / sr_in; x itself (as float32) when the
    rates are equal.
    """
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"resample expects mono [T], got shape {x.shape}")
    if sr_in == sr_out:
        return x
    import soxr

    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def load_mono(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read an audio file, mix to mono and resample to sample_rate Hz: [T] float32."""
    x, sr_in = read_audio(path)
    return resample(to_mono(x), sr_in, sample_rate)


def write_audio(
    path: str | Path, x: np.ndarray, sample_rate: int, format: str | None = None
) -> None:
    """Write x [T] or [T, C] float in [-1, 1] (clipped) as 16-bit PCM.

    The format comes from `format` ("wav" | "flac") or else from the suffix of path.
    Raises ValueError naming an unsupported format, AudioError when writing fails.
    """
    import soundfile as sf

    path = Path(path)
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt not in WRITE_FORMATS:
        raise ValueError(
            f"{path}: unsupported audio format {fmt!r}; use one of {', '.join(WRITE_FORMATS)}"
        )
    x = np.asarray(x)
    if x.ndim not in (1, 2):
        raise ValueError(f"write_audio expects [T] or [T, C], got shape {x.shape}")
    # Convert ourselves so rounding and clipping are the same as float_to_int16 everywhere.
    pcm = float_to_int16(x)
    try:
        sf.write(str(path), pcm, int(sample_rate), format=fmt.upper(), subtype="PCM_16")
    except Exception as e:
        raise AudioError(path, f"cannot write audio ({e})") from e


# ----------------------------------------------------------------------------- quantization


def _check_quantization(q_levels: int, kind: str) -> None:
    if kind not in QUANTIZATIONS:
        raise ValueError(
            f"unknown quantization {kind!r}; expected one of: {', '.join(map(repr, QUANTIZATIONS))}"
        )
    if int(q_levels) != q_levels or q_levels < 2:
        raise ValueError(f"q_levels must be an integer >= 2, got {q_levels!r}")


def quantize(x: np.ndarray, q_levels: int, kind: str) -> np.ndarray:
    """Map samples x (any shape, float in [-1, 1]) to codes int64 in [0, q_levels - 1].

    linear: floor((x + 1) * q_levels / 2), clipped. mu-law (mu = q_levels - 1): the same
    on y = sign(x) * log1p(mu |x|) / log1p(mu). Computed in float64.
    """
    _check_quantization(q_levels, kind)
    x = np.asarray(x, dtype=np.float64)
    if kind == "mu-law":
        mu = q_levels - 1
        x = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    codes = np.floor((x + 1.0) * (q_levels / 2.0))
    return np.clip(codes, 0, q_levels - 1).astype(np.int64)


def dequantize(codes: np.ndarray, q_levels: int, kind: str) -> np.ndarray:
    """Map codes (any shape, ints in [0, q_levels - 1]) to float32 samples at bin centres."""
    _check_quantization(q_levels, kind)
    y = (np.asarray(codes, dtype=np.float64) + 0.5) * (2.0 / q_levels) - 1.0
    if kind == "mu-law":
        mu = q_levels - 1
        y = np.sign(y) * (np.power(1.0 + mu, np.abs(y)) - 1.0) / mu
    return y.astype(np.float32)


def silence_code(q_levels: int, kind: str) -> int:
    """The code of the sample 0.0 (q_levels // 2 for both kinds)."""
    return int(quantize(np.zeros(1), q_levels, kind)[0])


def int16_to_float(a: np.ndarray) -> np.ndarray:
    """int16 PCM (any shape) -> float32 in [-1, 1): a / 32768."""
    return np.asarray(a, dtype=np.float32) / np.float32(32768.0)


def float_to_int16(x: np.ndarray) -> np.ndarray:
    """float (any shape, nominally [-1, 1]) -> int16 PCM: round(x * 32767), clipped."""
    y = np.round(np.asarray(x, dtype=np.float64) * 32767.0)
    return np.clip(y, -32768, 32767).astype(np.int16)
