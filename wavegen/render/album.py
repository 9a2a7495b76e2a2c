"""The album a model learnt from, as ranges of cheap window features: the guard's yardstick.

Training measures the corpus's training split once, in windows of WINDOW_SECONDS, *as the
model hears it* (quantized and dequantized with the model's q_levels and quantization: an
8-bit model's best render carries 8-bit quantization noise, which raises spectral flatness far
above the int16 album's), and writes the percentiles to ``RUN/album.json``; ``best/`` carries
a copy, so a model folder judges its renders alone. :func:`album_criteria` turns a profile
into :class:`~wavegen.render.guard.GuardCriteria`: a window is flagged when it is far outside
what the album does (see :func:`criteria_from_profile` for the margins).

numpy only (the machines that render on a GPU lack librosa and soundfile).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

logger = logging.getLogger("wavegen.render")

ALBUM_FILE = "album.json"
VERSION = 1
WINDOW_SECONDS = 2.0  # the render guard's default window
MAX_WINDOWS = 400  # evenly spaced over the split: percentiles need hundreds, not the whole album
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
FRAME_SECONDS = 0.05  # frames for loudness and spectral change
SOUNDING_DB = 40.0  # frames within this of a window's loudest count as sounding
PERIODIC_THRESHOLD = 0.6  # as wavegen.analysis: a normalized autocorrelation peak above this at 1-16 ms

# Margins of "far outside the album" (album_criteria)
# noise: flatter than the point 3/4 of the way (log scale) from the album's flattest 1% of sounding
# windows to white noise (flatness 1): a tone album (p99 1e-3) → 0.18, where hiss 10 dB under the
# notes scores 0.13 and noise as loud as them 0.6; an album at p99 0.2 → 0.67 (white noise ~1)
FLATNESS_TOWARD_WHITE = 0.75
NOISE_GATE_DB = 20.0  # ... in windows no quieter than the album's median level minus this
SILENCE_MARGIN_DB = 30.0  # silence: loudest frame this far under the album's quietest 1%
STUCK_DIVISOR = 4.0  # stuck tone: spectral change under a quarter of the album's least-changing 1%
DC_MARGIN = 0.05  # DC: |mean| above the album's 99th percentile plus this
CLIP_MARGIN = 0.05  # clipping: clipped fraction above the album's 99th percentile plus this
# rumble / shrill: spectral centroid an octave below the album's 1st percentile or above its 99th
# (sounding windows). Measured on the demo (docs/DEMO.md): album 307-827 Hz (p1-p99), a render
# drifted into a low drone 70-110 Hz (as far from the test song as noise, yet periodic and not flat)
CENTROID_FACTOR = 2.0


def _welch_power(x: np.ndarray, n_fft: int) -> np.ndarray | None:
    """The Welch-averaged power spectrum of x [n] (Hann frames of ``n_fft``, each frame's mean
    removed), DC bin dropped: [n_fft // 2]; None for fewer than 8 frames."""
    if len(x) < 8 * n_fft:
        return None
    seg = x[: len(x) // n_fft * n_fft].reshape(-1, n_fft)
    seg = (seg - seg.mean(axis=1, keepdims=True)) * np.hanning(n_fft)
    return (np.abs(np.fft.rfft(seg, axis=1)) ** 2).mean(axis=0)[1:] + 1e-20


def spectral_flatness(x: np.ndarray, n_fft: int = 256) -> float | None:
    """Geometric / arithmetic mean of the Welch-averaged power spectrum of x [n] (Hann frames of
    ``n_fft``, each frame's mean removed, DC bin dropped); None for fewer than 8 frames.
    White noise scores 0.98-1 over 2 s at 16 kHz, pink noise ~0.5, tones under 0.01."""
    power = _welch_power(x, n_fft)
    if power is None:
        return None
    return math.exp(np.mean(np.log(power))) / np.mean(power)


def spectral_centroid(x: np.ndarray, sample_rate: int) -> float | None:
    """The power-weighted mean frequency (Hz) of the Welch-averaged spectrum of x [n] (~32 ms Hann
    frames, DC dropped): the demo album's 2 s windows 307-827 Hz (p1-p99), a low rumble under 100, white
    noise a quarter of the sample rate. None for fewer than 8 frames."""
    n_fft = 2 ** max(4, round(math.log2(0.032 * sample_rate)))
    power = _welch_power(x, n_fft)
    if power is None:
        return None
    freqs = np.arange(1, n_fft // 2 + 1) * (sample_rate / n_fft)
    return float((power * freqs).sum() / power.sum())


def frame_levels(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS (mean removed) of each 50 ms frame of x [n] in dBFS: [frames] (one frame when n is shorter)."""
    frame = max(1, min(len(x), int(round(FRAME_SECONDS * sample_rate))))
    frames = x[: len(x) // frame * frame].reshape(-1, frame)
    return 20.0 * np.log10(np.maximum(frames.std(axis=1), 1e-12))


def spectral_change(x: np.ndarray, sample_rate: int) -> float | None:
    """How much the spectrum moves: 1 - cosine similarity of consecutive 50 ms frames' magnitude
    spectra, averaged over sounding pairs; ~0 for a held tone, ~0.1 for notes every 0.25 s, ~0.2
    for noise. None for fewer than 4 sounding pairs."""
    frame = int(round(FRAME_SECONDS * sample_rate))
    if frame < 16 or len(x) < 5 * frame:
        return None
    frames = x[: len(x) // frame * frame].reshape(-1, frame)
    frames = frames - frames.mean(axis=1, keepdims=True)
    level = 20.0 * np.log10(np.maximum(frames.std(axis=1), 1e-12))
    sounding = level > max(level.max() - SOUNDING_DB, -90.0)
    mag = np.abs(np.fft.rfft(frames * np.hanning(frame), axis=1))[:, 1:]
    a, b = mag[:-1], mag[1:]
    cos = (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-20)
    pairs = sounding[:-1] & sounding[1:]
    return float(np.mean(1.0 - cos[pairs])) if pairs.sum() >= 4 else None


def periodic_fraction(x: np.ndarray, sample_rate: int) -> float:
    """Fraction of sounding 64 ms frames whose normalized autocorrelation peaks above 0.6 at a lag of
    1-16 ms (wavegen.analysis_features.periodicity, numpy only): ~1 for pitched notes, ~0 for noise."""
    from wavegen.analysis_features import frame_size, periodicity

    n_fft, hop = frame_size(sample_rate)
    peaks = periodicity(np.asarray(x, dtype=np.float64), sample_rate, n_fft, hop)
    level = frame_levels(x, sample_rate)
    if len(peaks) == 0 or level.max() < -60.0:
        return 0.0
    return float((peaks > PERIODIC_THRESHOLD).mean())


def window_features(x: np.ndarray, sample_rate: int, clip_level: float = 0.95) -> dict:
    """One window x [n] float in [-1, 1] → ``{"rms_db", "peak_frame_db", "flatness", "centroid", "dc",
    "clip_fraction", "change", "periodic_fraction"}`` (flatness, centroid and change None where the
    window is too short)."""
    x = np.asarray(x, dtype=np.float64)
    return {"rms_db": 20.0 * math.log10(max(float(x.std()), 1e-12)),
            "peak_frame_db": float(frame_levels(x, sample_rate).max()),
            "flatness": spectral_flatness(x), "centroid": spectral_centroid(x, sample_rate),
            "dc": abs(float(x.mean())),
            "clip_fraction": float(np.mean(np.abs(x) >= clip_level)),
            "change": spectral_change(x, sample_rate), "periodic_fraction": periodic_fraction(x, sample_rate)}


# ----- the profile ----------------------------------------------------------------------------------

OVER_ALL_WINDOWS = ("rms_db", "peak_frame_db", "dc", "clip_fraction", "periodic_fraction")
OVER_SOUNDING_WINDOWS = ("flatness", "centroid", "change")


def _percentiles(values) -> dict | None:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if len(v) == 0:
        return None
    return {f"p{p}": float(q) for p, q in zip(PERCENTILES, np.percentile(v, PERCENTILES))}


def album_profile(windows: list[np.ndarray], sample_rate: int) -> dict:
    """Windows (each [n] float, as the model hears the album) → the profile: for every feature of
    :func:`window_features`, its percentiles ``{"p1", "p5", ..., "p99"}``. Flatness, centroid and
    change are taken over sounding windows only (RMS no quieter than the median minus
    NOISE_GATE_DB), so the hiss of a fade-out does not count as the album being noisy."""
    if not windows:
        raise ValueError("no audio windows to profile")
    feats = [window_features(w, sample_rate) for w in windows]
    median_db = float(np.median([f["rms_db"] for f in feats]))
    sounding = [f for f in feats if f["rms_db"] >= median_db - NOISE_GATE_DB]
    out = {"version": VERSION, "sample_rate": int(sample_rate), "windows": len(windows),
           "window_seconds": round(len(windows[0]) / sample_rate, 6), "features": {}}
    for name in OVER_ALL_WINDOWS:
        out["features"][name] = _percentiles(f[name] for f in feats)
    for name in OVER_SOUNDING_WINDOWS:
        out["features"][name] = _percentiles(f[name] for f in sounding)
    return out


def corpus_windows(corpus, split: str, sample_rate: int, q_levels: int, quantization: str,
                   window_seconds: float = WINDOW_SECONDS, max_windows: int = MAX_WINDOWS) -> list[np.ndarray]:
    """Up to ``max_windows`` evenly spaced windows [n] float32 of a corpus split, quantized and
    dequantized as the model hears them (segments shorter than a window give none)."""
    from wavegen.audio import dequantize, int16_to_float, quantize

    size = int(round(window_seconds * sample_rate))
    audio = corpus.split(split)
    starts = [s + k * size for s, n, _ in corpus.segments(split) for k in range(int(n) // size)]
    if len(starts) > max_windows:
        starts = [starts[i] for i in np.linspace(0, len(starts) - 1, max_windows).round().astype(int)]
    return [dequantize(quantize(int16_to_float(np.asarray(audio[s: s + size])), q_levels, quantization), q_levels,
                       quantization) for s in starts]


def ensure_run_profile(run_dir: Path, config: dict, corpus) -> dict | None:
    """``RUN/album.json`` (made from the corpus's training split when missing) → the profile; None
    (logged) when the split has no window long enough. Called by training's main process. A folder or FIFO at its
    name is not read (load_profile would warn of the guard's thresholds, a training that then stops): the write
    refuses it in one line (wavegen.fileio.NotAFileError)."""
    from wavegen.fileio import not_a_file, write_json
    from wavegen.progress import counted

    path = Path(run_dir) / ALBUM_FILE
    model = config["model"]
    key = {"corpus": config["data"]["corpus"], "q_levels": model["q_levels"],
           "quantization": model["quantization"]}
    found = load_profile(path, instead="measured again from the training split") if not_a_file(path) is None else None
    if found is not None and found.get("source") == key and measures_everything(found):
        return found  # measured already, every feature (a run older than a feature is measured again)
    windows = corpus_windows(corpus, "train", corpus.sample_rate, model["q_levels"], model["quantization"])
    if not windows:
        logger.warning("the training split has no %.0f s stretch: no album profile (the render guard keeps "
                       "its fixed thresholds)", WINDOW_SECONDS)
        return None
    profile = {**album_profile(windows, corpus.sample_rate), "source": key}
    write_json(path, profile)
    logger.info("album profile of %s of the training split → %s", counted(len(windows), "window"), path)
    return profile


def load_profile(path: Path, text: str | bytes | OSError | ValueError | None = None,
                 instead: str = "the guard uses its fixed thresholds") -> dict | None:
    """The profile at ``path`` (``text``: its content, read already: bytes where they are not UTF-8, refused as a read
    of the file refuses them; the error that read met, named as a read now would name it, the file not read again);
    None when there is none. A damaged, foreign or unreadable file (a folder, a FIFO at its name too: a FIFO is not
    opened, its read would wait for a writer) is ignored with a warning naming it and saying what is done ``instead``
    (the guard falls back to its fixed thresholds; nothing else depends on it)."""
    import json

    path = Path(path)
    if text is None:
        text = read_beside(path)
        if text is None:
            return None
    try:
        if isinstance(text, (OSError, ValueError)):
            raise text
        if isinstance(text, bytes):  # json.loads would take UTF-16 or UTF-32 bytes that read_text refuses
            text = text.decode("utf-8")
        profile = json.loads(text)
        if profile.get("version") != VERSION or "features" not in profile:
            raise ValueError(f"not an album profile of version {VERSION}")
        return profile
    except (OSError, ValueError, AttributeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err  # the path is said once
        logger.warning("%s: ignored (%s); %s", path, reason, instead)
        return None


def read_beside(path: Path) -> str | bytes | OSError | ValueError | None:
    """album.json at ``path``, read once: its text, its bytes where they are not UTF-8 (:func:`load_profile` refuses
    them as a read of the text refuses them), the error the read met, None where there is none. A FIFO, socket or
    device is not opened (a FIFO's read would wait for a writer): ValueError saying what it is."""
    from wavegen.fileio import read_file_bytes

    try:
        data = read_file_bytes(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as err:
        return err
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def measures_everything(profile: dict) -> bool:
    """Whether ``profile`` holds every feature this version measures (an older one lacks some)."""
    return set(OVER_ALL_WINDOWS + OVER_SOUNDING_WINDOWS) <= set(profile["features"])


def find_profile(ref) -> tuple[Path | None, dict | None]:
    """The album profile of a resolved model (wavegen.resolve.ModelRef) and where it is: its
    folder's album.json, or the run's for a checkpoint (and for a best/ written before profiles
    existed). Of a run's best/ and the run's own, the first that holds every feature: training
    measures the run's again when it lacks one, but best/ keeps its copy until validation
    improves; where neither does, the first there is. (None, None) where there is none; the
    profile None where that file is damaged, foreign or unreadable (load_profile warns). Each file
    is read once; the folder's own, where the load read it with the weights (``ref.read_beside``), as
    it read it then: its text, or the error that read met."""
    if ref.folder is None or ref.weights is None:
        return None, None
    candidates = [ref.folder / ALBUM_FILE]
    if ref.kind == "checkpoint":
        candidates.append(ref.folder.parent.parent / ALBUM_FILE)
    elif ref.kind == "run":
        candidates.append(ref.folder.parent / ALBUM_FILE)
    read = getattr(ref, "read_beside", None) or {}
    texts = {candidates[0]: read[ALBUM_FILE]} if ALBUM_FILE in read else {}  # a best/ replaced since: not its new one
    first = None, None
    for path in (p for p in candidates if (texts[p] is not None if p in texts else p.exists())):
        profile = load_profile(path, texts.get(path))
        if profile is not None and measures_everything(profile):
            return path, profile
        if first[0] is None:
            first = path, profile
    return first
