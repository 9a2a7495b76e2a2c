"""wavegen.audio: sample arrays (quantization, 16-bit PCM, mono, resampling); files: test_audio_decode.py."""

import math
import subprocess
import sys

import numpy as np
import pytest

from wavegen.audio import (QUANTIZATIONS, dequantize, float_to_int16, int16_to_float, quantize, resample,
                           silence_code, to_mono)


def peak_hz(x, sample_rate):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * sample_rate / len(x)


# ----------------------------------------------------------------------------- quantization


@pytest.mark.parametrize("kind", QUANTIZATIONS)
@pytest.mark.parametrize("q_levels", [2, 3, 16, 256, 65536])
def test_quantize_known_codes(kind, q_levels):
    codes = quantize(np.array([-1.0, 0.0, 1.0]), q_levels, kind)
    assert codes.dtype == np.int64
    assert codes.tolist() == [0, q_levels // 2, q_levels - 1]
    assert silence_code(q_levels, kind) == q_levels // 2


def test_quantize_linear_bin_edges():
    # Q=4: bins [-1,-.5) [-.5,0) [0,.5) [.5,1]
    x = np.array([-1.0, -0.51, -0.5, -1e-9, 0.0, 0.49, 0.5, 0.999, 1.0, 7.0, -7.0])
    assert quantize(x, 4, "linear").tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 3, 3, 0]


def test_quantize_mu_law_values_by_hand():
    mu = 255
    for x in (0.5, -0.5, 0.01, -0.003, 0.9):
        y = math.copysign(math.log1p(mu * abs(x)) / math.log1p(mu), x)
        expected = min(max(math.floor((y + 1) * 256 / 2), 0), 255)
        assert quantize(np.array([x]), 256, "mu-law")[0] == expected
    assert quantize(np.array([0.5]), 256, "mu-law")[0] == 240


def test_quantize_keeps_shape_and_range():
    x = np.random.default_rng(0).uniform(-1.5, 1.5, size=(3, 5, 7)).astype(np.float32)
    for kind in QUANTIZATIONS:
        codes = quantize(x, 256, kind)
        assert codes.shape == x.shape and codes.min() >= 0 and codes.max() <= 255
        assert np.all(np.diff(quantize(np.sort(x.ravel()), 256, kind)) >= 0)  # monotonic


def test_linear_round_trip_within_half_bin():
    x = np.linspace(-1, 1, 100_001)
    for q in (256, 1024):
        x_hat = dequantize(quantize(x, q, "linear"), q, "linear")
        assert x_hat.dtype == np.float32
        assert np.abs(x_hat - x).max() <= 1.0 / q + 1e-6


def test_mu_law_round_trip_bounds():
    q, mu = 256, 255
    x = np.linspace(-1, 1, 100_001)
    x_hat = dequantize(quantize(x, q, "mu-law"), q, "mu-law").astype(np.float64)
    # half a bin in the companded domain ...
    compand = lambda v: np.sign(v) * np.log1p(mu * np.abs(v)) / np.log1p(mu)
    assert np.abs(compand(x_hat) - compand(x)).max() <= 1.0 / q + 1e-6
    # ... which in the sample domain is ln(1+mu) (|x| + 1/mu) / q, times the slope growth
    bound = math.log1p(mu) * (np.abs(x) + 1 / mu) * (1 + mu) ** (1 / q) / q
    assert np.all(np.abs(x_hat - x) <= bound + 1e-6)
    near_zero = np.abs(x) < 0.01
    assert np.abs(x_hat - x)[near_zero].max() < 0.2 / q  # far finer than linear's 1/q


def test_mu_law_spacing_finer_near_zero():
    q = 256
    centres = dequantize(np.arange(q), q, "mu-law")
    steps = np.diff(centres)
    assert np.all(steps > 0)
    mid = silence_code(q, "mu-law")
    assert steps[mid] < steps[-1] / 50
    assert steps[mid] < 2.0 / q  # the linear step
    linear = dequantize(np.arange(q), q, "linear")
    np.testing.assert_allclose(np.diff(linear), 2.0 / q, rtol=1e-5)


@pytest.mark.parametrize("kind", QUANTIZATIONS)
def test_dequantize_symmetric_and_codes_fixed_points(kind):
    q = 256
    centres = dequantize(np.arange(q), q, kind)
    np.testing.assert_allclose(centres, -centres[::-1], atol=1e-7)
    assert np.array_equal(quantize(centres, q, kind), np.arange(q))


def test_unknown_quantization_lists_kinds():
    with pytest.raises(ValueError, match="linear.*mu-law"):
        quantize(np.zeros(3), 256, "alaw")
    with pytest.raises(ValueError, match="linear.*mu-law"):
        dequantize(np.zeros(3, dtype=np.int64), 256, "mulaw")
    with pytest.raises(ValueError, match="q_levels"):
        quantize(np.zeros(3), 1, "linear")


def test_int16_conversions():
    a = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    f = int16_to_float(a)
    assert f.dtype == np.float32
    assert f.tolist() == [-1.0, -1 / 32768, 0.0, 1 / 32768, 32767 / 32768]
    b = float_to_int16(np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], dtype=np.float32))
    assert b.dtype == np.int16
    assert b.tolist() == [-32768, -32767, -16384, 0, 16384, 32767, 32767]
    assert np.abs(float_to_int16(int16_to_float(a)).astype(int) - a).max() <= 1


def test_audio_module_imports_without_soundfile_or_soxr():
    code = (
        "import sys; sys.modules['soundfile'] = None; sys.modules['soxr'] = None\n"
        "import numpy as np, wavegen.audio as a\n"
        "assert a.quantize(np.zeros(2), 256, 'mu-law').tolist() == [128, 128]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- signal ops


def test_to_mono_is_channel_mean():
    x = np.stack([np.linspace(-1, 1, 100), np.full(100, 0.5), np.zeros(100)], axis=1)
    m = to_mono(x.astype(np.float32))
    assert m.shape == (100,) and m.dtype == np.float32
    np.testing.assert_allclose(m, (x[:, 0] + 0.5) / 3, atol=1e-7)
    one = np.arange(10, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(to_mono(one), one[:, 0])


def test_resample_keeps_frequency_and_length_ratio():
    sr_in, sr_out = 44100, 16000
    x = (0.5 * np.sin(2 * np.pi * 440 * np.arange(2 * sr_in) / sr_in)).astype(np.float32)
    y = resample(x, sr_in, sr_out)
    assert y.dtype == np.float32
    assert abs(len(y) - 2 * sr_out) <= 1
    assert abs(peak_hz(y, sr_out) - 440) < 1.0
    core = y[1000:-1000]  # amplitude preserved away from the filter's edges
    assert abs(np.abs(core).max() - 0.5) < 0.01


def test_resample_identity_and_empty():
    x = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)
    assert resample(np.zeros(0, np.float32), 44100, 16000).shape == (0,)


def test_float_to_int16_in_blocks_equals_the_formula(monkeypatch):
    import wavegen.audio

    monkeypatch.setattr(wavegen.audio, "_INT16_BLOCK", 1000)
    x = np.random.default_rng(3).uniform(-1.2, 1.2, (2501, 2)).astype(np.float32)
    want = np.clip(np.round(x.astype(np.float64) * 32767.0), -32768, 32767).astype(np.int16)
    got = float_to_int16(x)
    assert got.shape == x.shape and got.dtype == np.int16
    np.testing.assert_array_equal(got, want)
