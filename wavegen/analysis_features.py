"""The features wavegen.analysis compares: measured on one excerpt of audio (:func:`excerpt_features`),
gathered over a set of excerpts (:func:`set_features`), and a set's summary (:func:`summarize`).

Features are computed per frame (``n_fft`` ~64 ms, hop a quarter of it; spectral shape up to
90% of Nyquist) with librosa, imported here only (machines that only train or render need not
have it):

- loudness: frame RMS in dBFS; its median and its range (95th - 5th percentile, dB);
- spectral centroid and bandwidth (Hz), flatness (0 tone .. 1 white noise), contrast (dB);
- onset rate (per second) and tempo (BPM) per excerpt;
- chroma: per-frame entropy of the 12 pitch classes (bits; 3.58 is no pitch class preferred)
  and the correlation of the mean chroma profile with the test split's;
- periodicity: the fraction of sounding frames whose normalized autocorrelation peaks above
  0.6 at a lag of 1-16 ms (a pitch between 62.5 Hz and 1 kHz); optionally pyin's voiced fraction.
"""

from __future__ import annotations

import math

import numpy as np

from wavegen.errors import WavegenError

SILENT_DB = -60.0  # frames under this RMS (dBFS) count as silent: no periodicity judged there
PERIODIC_THRESHOLD = 0.6
PERIOD_LAGS_MS = (1.0, 16.0)
BAND_TOP = 0.9  # spectral features use frequencies up to this fraction of Nyquist
TEMPO_SECONDS = 4.0  # the shortest excerpt a tempo is estimated on
CONTRAST_FMIN_HZ, CONTRAST_BANDS = 100.0, 6  # spectral contrast's octave bands: the lowest edge, how many
MIN_SAMPLE_RATE = 3000  # below it, contrast's lowest octave bands (under ~20 Hz) hold no frequency bin

# Frame features compared as distributions (Wasserstein distance / test split's spread, plots).
FRAME_FEATURES = {
    "rms_db": ("dBFS", "loudness: RMS level of each frame"),
    "centroid_hz": ("Hz", "spectral centroid: where the energy sits (brightness)"),
    "bandwidth_hz": ("Hz", "spectral bandwidth: spread of the energy around the centroid"),
    "log10_flatness": ("log10", "spectral flatness (log10): -inf tone .. 0 white noise"),
    "contrast_db": ("dB", "spectral contrast: peak-to-valley, mean over 7 bands"),
    "chroma_entropy_bits": ("bits", "entropy of the 12 pitch classes (3.58: no pitch class preferred)"),
    "periodicity": ("", "peak normalized autocorrelation at lags 1-16 ms"),
}
SUMMARY_FEATURES = {
    "rms_db_median": ("dBFS", "median frame loudness"),
    "loudness_range_db": ("dB", "dynamics: 95th - 5th percentile of frame loudness"),
    "centroid_hz_median": ("Hz", "median spectral centroid"),
    "bandwidth_hz_median": ("Hz", "median spectral bandwidth"),
    "flatness_median": ("", "median spectral flatness (0 tone .. 1 white noise)"),
    "contrast_db_median": ("dB", "median spectral contrast"),
    "onset_rate_per_s": ("1/s", "note or event onsets per second"),
    "tempo_bpm": ("BPM", "median tempo estimate over the excerpts of 4 s or more"),
    "chroma_entropy_bits_median": ("bits", "median pitch-class entropy"),
    "chroma_profile_similarity": ("r", "correlation of the mean chroma profile with the test split's "
                                       "(1: same key profile, 0: unrelated)"),
    "periodic_fraction": ("", "sounding frames with an autocorrelation peak > 0.6 at 1-16 ms"),
    "silent_fraction": ("", "frames under -60 dBFS"),
    "voiced_fraction": ("", "pyin's voiced fraction of sounding frames (with pyin=True)"),
}


class AnalysisError(WavegenError):
    """Renders or a corpus that cannot be compared; the message names the folder or file."""


def _librosa():
    try:
        import librosa
    except ImportError:
        raise AnalysisError("comparing renders needs librosa: pip install librosa "
                            "(or pip install -e '.[analysis]')") from None
    return librosa


def frame_size(sample_rate: int) -> tuple[int, int]:
    """(n_fft, hop): the power of two nearest 64 ms at ``sample_rate``, hop a quarter of it."""
    n_fft = 1 << int(round(math.log2(0.064 * sample_rate)))
    return n_fft, n_fft // 4


def contrast_fmin(sample_rate: int) -> float:
    """The lowest edge (Hz) of spectral contrast's octave bands: CONTRAST_FMIN_HZ where its bands fit under
    Nyquist (above 6400 Hz), else the edge that puts them under 90% of it (librosa refuses a band past Nyquist)."""
    if CONTRAST_FMIN_HZ * 2 ** (CONTRAST_BANDS - 1) < sample_rate / 2:
        return CONTRAST_FMIN_HZ
    return BAND_TOP * sample_rate / 2 / 2 ** CONTRAST_BANDS


def check_sample_rate(sample_rate: int, what: str) -> None:
    """AnalysisError where audio at ``sample_rate`` (``what``'s) is too coarse to analyse (MIN_SAMPLE_RATE)."""
    if sample_rate < MIN_SAMPLE_RATE:
        raise AnalysisError(f"{what} is at {sample_rate} Hz: comparing renders needs audio at {MIN_SAMPLE_RATE} Hz "
                            "or more (the spectral features' lowest bands hold no frequency below it)")


# ----- per-excerpt features -------------------------------------------------------------------------

def periodicity(y: np.ndarray, sample_rate: int, n_fft: int, hop: int) -> np.ndarray:
    """Peak normalized autocorrelation per frame over lags 1-16 ms: y [T] → [frames] in [-1, 1].

    Each frame (mean removed) is compared with itself shifted by each lag over their overlap:
    r(l) = sum x[n] x[n+l] / sqrt(sum x[n]^2 · sum x[n+l]^2), n over the overlap. A periodic
    frame with a period in the range scores near 1; white noise near 0. Silent frames score 0.
    """
    lo = max(1, int(round(PERIOD_LAGS_MS[0] * sample_rate / 1000)))
    hi = min(n_fft // 2, int(round(PERIOD_LAGS_MS[1] * sample_rate / 1000)))
    frames = frame_signal(y, n_fft, hop)
    x = frames - frames.mean(axis=1, keepdims=True)
    spec = np.fft.rfft(x, 2 * n_fft, axis=1)
    acf = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, lo: hi + 1]
    energy = np.cumsum(x ** 2, axis=1)
    total = energy[:, -1:]
    lags = np.arange(lo, hi + 1)
    head = energy[:, n_fft - 1 - lags]  # sum of x[n]^2 for n < N - l
    tail = total - energy[:, lags - 1]  # sum of x[n]^2 for n >= l
    r = acf / np.sqrt(np.maximum(head * tail, 1e-20))
    peak = r.max(axis=1)
    peak[total[:, 0] < 1e-10 * n_fft] = 0.0
    return peak


def frame_signal(y: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Centered frames like librosa's STFT (reflect-free: zero padding): y [T] → [frames, n_fft]."""
    padded = np.pad(y, (n_fft // 2, n_fft // 2))
    count = 1 + (len(padded) - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(count)[:, None]
    return padded[index]


def excerpt_features(y: np.ndarray, sample_rate: int, pyin: bool = False) -> dict:
    """Features of one excerpt y [T] float32 (mono, -1..1).

    Returns per-frame arrays (``FRAME_FEATURES`` keys, each [frames]; ``vectors`` [frames, 39]:
    MFCC 20 + chroma 12 + contrast 7; ``chroma`` [frames, 12]) and per-excerpt scalars
    ``onsets`` (count), ``seconds``, ``tempo_bpm``, ``voiced``/``sounding`` (pyin frame counts).
    """
    librosa = _librosa()
    y = np.ascontiguousarray(y, dtype=np.float32)
    n_fft, hop = frame_size(sample_rate)
    magnitude = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop, center=True, pad_mode="constant"))
    power = magnitude ** 2
    # from the samples: librosa's rms(S=...) would carry the Hann window's -4.3 dB
    rms = librosa.feature.rms(y=y, frame_length=n_fft, hop_length=hop, center=True, pad_mode="constant")[0]
    rms_db = 20 * np.log10(np.maximum(rms, 1e-6))
    # Spectral shape is judged below 90% of Nyquist: resamplers' anti-alias filters differ above
    # (a render resampled by another chain would otherwise look unlike its album up there).
    top = BAND_TOP * sample_rate / 2
    freq = librosa.fft_frequencies(sr=sample_rate, n_fft=n_fft)
    band = magnitude[freq <= top]
    centroid = librosa.feature.spectral_centroid(S=band, sr=sample_rate, freq=freq[freq <= top])[0]
    bandwidth = librosa.feature.spectral_bandwidth(S=band, sr=sample_rate, freq=freq[freq <= top])[0]
    flatness = librosa.feature.spectral_flatness(S=band, amin=1e-10)[0]
    contrast = librosa.feature.spectral_contrast(S=band, sr=sample_rate, freq=freq[freq <= top],
                                                 fmin=contrast_fmin(sample_rate), n_bands=CONTRAST_BANDS)
    chroma = librosa.feature.chroma_stft(S=power, sr=sample_rate, tuning=0.0)
    mel = librosa.feature.melspectrogram(S=power, sr=sample_rate, n_mels=64, fmax=top)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None), n_mfcc=20)
    p = chroma / np.maximum(chroma.sum(axis=0, keepdims=True), 1e-12)
    entropy = -(p * np.log2(np.maximum(p, 1e-12))).sum(axis=0)
    period = periodicity(y, sample_rate, n_fft, hop)
    frames = min(len(rms_db), len(period))
    envelope = librosa.onset.onset_strength(S=librosa.power_to_db(mel, ref=1.0, amin=1e-10), sr=sample_rate,
                                            hop_length=hop)
    onsets = librosa.onset.onset_detect(onset_envelope=envelope, sr=sample_rate, hop_length=hop)
    tempo = float(np.atleast_1d(librosa.feature.tempo(onset_envelope=envelope, sr=sample_rate,
                                                      hop_length=hop))[0])
    out = {
        "rms_db": rms_db[:frames], "centroid_hz": centroid[:frames], "bandwidth_hz": bandwidth[:frames],
        "log10_flatness": np.log10(np.maximum(flatness[:frames], 1e-10)),
        "contrast_db": contrast.mean(axis=0)[:frames], "chroma_entropy_bits": entropy[:frames],
        "periodicity": period[:frames], "chroma": chroma.T[:frames],
        "vectors": np.concatenate([mfcc, chroma, contrast], axis=0).T[:frames],
        "onsets": len(onsets), "seconds": len(y) / sample_rate, "tempo_bpm": tempo,
    }
    if pyin:
        _, voiced, _ = librosa.pyin(y, fmin=65.0, fmax=2093.0, sr=sample_rate, frame_length=n_fft,
                                    hop_length=hop, center=True, pad_mode="constant")
        sounding = rms_db[: len(voiced)] > SILENT_DB
        out["voiced"], out["sounding"] = int((voiced & sounding).sum()), int(sounding.sum())
    return out


def set_features(excerpts: list[np.ndarray], sample_rate: int, pyin: bool = False) -> dict:
    """Features of a set of excerpts (each y [T] float32): frame arrays concatenated over the set,
    scalars summed. Returns ``{"frames": {feature: [N]}, "vectors": [N, 39], "chroma": [N, 12],
    "onsets", "seconds", "tempi": [excerpts], "voiced", "sounding", "excerpts"}``."""
    parts = [excerpt_features(y, sample_rate, pyin) for y in excerpts]
    if not parts:
        raise AnalysisError("no audio to analyse")
    return {
        "frames": {k: np.concatenate([p[k] for p in parts]) for k in FRAME_FEATURES},
        "vectors": np.concatenate([p["vectors"] for p in parts]),
        "chroma": np.concatenate([p["chroma"] for p in parts]),
        "onsets": sum(p["onsets"] for p in parts), "seconds": sum(p["seconds"] for p in parts),
        "tempi": [p["tempo_bpm"] for p in parts if p["seconds"] >= TEMPO_SECONDS],
        "voiced": sum(p.get("voiced", 0) for p in parts), "sounding": sum(p.get("sounding", 0) for p in parts),
        "excerpts": len(parts), "pyin": pyin,
    }


def summarize(features: dict, reference_chroma: np.ndarray | None = None) -> dict:
    """One set's ``SUMMARY_FEATURES`` from :func:`set_features` (chroma profile vs ``reference_chroma`` [12]).

    Spectral shape and pitch are judged on the sounding frames (over ``SILENT_DB``) only: a silent
    frame's flatness is 1 and its chroma entropy 0, which would read as white noise and as one pitch
    class. Where every frame is silent they are NaN (undefined: nothing to measure them on)."""
    f = features["frames"]
    sounding = f["rms_db"] > SILENT_DB

    def median(name: str) -> float:
        return float(np.median(f[name][sounding])) if sounding.any() else float("nan")

    profile = features["chroma"][sounding].mean(axis=0) if sounding.any() else None
    out = {
        "rms_db_median": float(np.median(f["rms_db"])),
        "loudness_range_db": float(np.percentile(f["rms_db"], 95) - np.percentile(f["rms_db"], 5)),
        "centroid_hz_median": median("centroid_hz"),
        "bandwidth_hz_median": median("bandwidth_hz"),
        "flatness_median": float(10 ** median("log10_flatness")),
        "contrast_db_median": median("contrast_db"),
        "onset_rate_per_s": features["onsets"] / max(features["seconds"], 1e-9),
        "tempo_bpm": float(np.median(features["tempi"])) if features["tempi"] else float("nan"),
        "chroma_entropy_bits_median": median("chroma_entropy_bits"),
        "chroma_profile_similarity": float("nan") if profile is None else _correlation(
            profile, profile if reference_chroma is None else reference_chroma),
        # no sounding frame: undefined, not 0 (0 reads as noise: the renders' periodic 0.00 beside the album's)
        "periodic_fraction": float((f["periodicity"][sounding] > PERIODIC_THRESHOLD).mean()) if sounding.any()
        else float("nan"),
        "silent_fraction": float(1.0 - sounding.mean()),
    }
    if features["pyin"]:
        out["voiced_fraction"] = features["voiced"] / max(features["sounding"], 1)
    return out


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two chroma profiles [12]: which pitch classes stand out, not how
    much (every profile is mostly positive, so a plain cosine is near 1 even for noise)."""
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
