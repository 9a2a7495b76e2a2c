"""Sample arrays: mono mixdown, resampling, quantization to codes and back, 16-bit PCM.

Files are decoded into samples by wavegen.audio_decode. soxr is imported inside resample: machines
that only train or render (and import this module for quantization) may not have it installed.
"""

from __future__ import annotations

import numpy as np

QUANTIZATIONS = ("linear", "mu-law")


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


def load_soxr():
    """The soxr module, imported with SIGINT and SIGTERM held until it is (signals.signals_held): its nanobind
    extension swallows a KeyboardInterrupt raised while it initialises, and the Ctrl-C was lost (eval ran on to
    the end and exited 0). ImportError where it is not installed."""
    from wavegen.signals import import_held

    return import_held("soxr")


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
    return load_soxr().resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


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


def scale_to_full_scale(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Float audio that peaks above full scale (|x| > 1), scaled down to peak at 1 rather than be
    clipped: (x, gain_db), gain_db < 0 where scaled (rounded to 0.001 dB), else (x, 0.0)."""
    peak = float(np.abs(x).max()) if np.size(x) else 0.0
    if not peak > 1.0:
        return x, 0.0
    return x * np.float32(1.0 / peak), round(-20.0 * np.log10(peak), 3)


def int16_to_float(a: np.ndarray) -> np.ndarray:
    """int16 PCM (any shape) -> float32 in [-1, 1): a / 32768."""
    return np.asarray(a, dtype=np.float32) / np.float32(32768.0)


def float_to_int16(x: np.ndarray) -> np.ndarray:
    """float (any shape, nominally [-1, 1]) -> int16 PCM: round(x * 32767), clipped.

    Computed in float64 a block at a time: an hour of audio needs no float64 copies of its whole."""
    x = np.asarray(x)
    out = np.empty(x.shape, dtype=np.int16)
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    for i in range(0, flat_x.size, _INT16_BLOCK):
        y = flat_x[i : i + _INT16_BLOCK].astype(np.float64)
        y *= 32767.0
        flat_out[i : i + _INT16_BLOCK] = np.clip(np.round(y, out=y), -32768, 32767, out=y)
    return out


_INT16_BLOCK = 1 << 18  # samples: float64 temporaries of 2 MiB
