"""Judge rendered audio against the album it was trained on.

:func:`compare_renders` measures a folder of renders, a corpus's test split, two references
measured the same way (the corpus's training split: what "like the album" scores; white and pink
noise at the album's level: what noise scores) and reports every set's features and its
distance to the test split. :func:`wavegen.plotting.plot_comparison` draws the distributions side
by side; :func:`wavegen.analysis_report.format_comparison` lays the numbers out as text.

Every set's frame features (wavegen.analysis_features) are compared with the test split's: each
feature's distribution by its Wasserstein distance over the test split's spread, and all of them
together by a Frechet distance between Gaussians fitted to the frame features (20 MFCC + 12 chroma +
7 contrast), each dimension standardized by its spread over the references (test, train,
white and pink noise together; the same scale whatever the renders are).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from wavegen.analysis_features import (FRAME_FEATURES, SILENT_DB, SUMMARY_FEATURES, AnalysisError, check_sample_rate,
                                       set_features, summarize)
from wavegen.progress import counted

logger = logging.getLogger(__name__)

# the audio files judged: those prep reads (a render converted to .w64 or .caf was "no audio files")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf")
SETS = ("renders", "test", "train", "white_noise", "pink_noise")
MIN_RENDER_SECONDS = 0.25  # the shortest clip cut into an excerpt (see excerpts_of), and the least max_seconds
EXCERPT_SECONDS = 10.0  # every set is cut into excerpts this long (or max_seconds long, where that is less)
MAX_HINT_FRACTION = 0.3  # the largest --test-fraction / --val-fraction a short split's hint suggests


# ----- distances -------------------------------------------------------------------------------------

def frechet_distance(a: np.ndarray, b: np.ndarray, mean: np.ndarray, std: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to frame vectors a [N, D] and b [M, D], both
    standardized with (mean [D], std [D]): |mu_a - mu_b|^2 + tr(Sa + Sb - 2 (Sa Sb)^1/2)."""
    a, b = (a - mean) / std, (b - mean) / std
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # tr (Sa Sb)^1/2 = tr (Sa^1/2 Sb Sa^1/2)^1/2, a symmetric PSD matrix: its eigenvalues give the
    # trace stably, also where a set is (nearly) constant and its covariance singular (silence)
    w, v = np.linalg.eigh(cov_a)
    half = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = np.linalg.eigvalsh(half @ cov_b @ half)
    root_trace = np.sqrt(np.clip(inner, 0.0, None)).sum()
    # a distance: rounding takes identical sets a hair under 0 ("-0.00" in the table), never more
    return max(0.0, float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * root_trace))


def wasserstein_1d(a: np.ndarray, b: np.ndarray) -> float:
    """Earth mover's distance between two 1-D samples (same units as the samples)."""
    quantiles = np.linspace(0.0, 1.0, 201)
    return float(np.abs(np.quantile(a, quantiles) - np.quantile(b, quantiles)).mean())


def distances(features: dict, test: dict, mean: np.ndarray, std: np.ndarray) -> dict:
    """One set vs the test split: ``{"frechet": float, "features": {frame feature: W1 / test std}}``."""
    per = {}
    for name in FRAME_FEATURES:
        a, b = features["frames"][name], test["frames"][name]
        per[name] = wasserstein_1d(a, b) / max(float(np.std(b)), 1e-9)
    return {"frechet": frechet_distance(features["vectors"], test["vectors"], mean, std), "features": per}


# ----- the sets ----------------------------------------------------------------------------------------

def plan_excerpts(lengths, sample_rate: int, max_seconds: float | None,
                  excerpt_seconds: float = EXCERPT_SECONDS) -> list[tuple[int, int, int]]:
    """Where the excerpts of clips of ``lengths`` samples lie: (clip index, start, length) each.

    Clips are cut into excerpts of ``excerpt_seconds``, or of ``max_seconds`` where that is less (a
    last piece of at least 2 s, or of a whole excerpt if shorter, is kept), and evenly spaced ones
    are kept up to ``max_seconds`` in total (None: every one). Planned from the lengths alone, so
    that only the audio kept is ever read (wavegen.analysis_audio)."""
    if max_seconds is not None:
        excerpt_seconds = min(excerpt_seconds, max_seconds)
    size = int(excerpt_seconds * sample_rate)
    least = min(int(2.0 * sample_rate), size)
    pieces = []
    for index, length in enumerate(lengths):
        for start in range(0, int(length), size):
            n = min(size, int(length) - start)
            if n >= least or (start == 0 and n >= int(MIN_RENDER_SECONDS * sample_rate)):
                pieces.append((index, start, n))
    keep = len(pieces) if max_seconds is None else max(1, int(max_seconds // excerpt_seconds))
    if len(pieces) > keep:
        pieces = [pieces[i] for i in np.linspace(0, len(pieces) - 1, keep).round().astype(int)]
    return pieces


def excerpts_of(clips: list[np.ndarray], sample_rate: int, max_seconds: float,
                excerpt_seconds: float = EXCERPT_SECONDS) -> list[np.ndarray]:
    """The excerpts (each [T] float32) :func:`plan_excerpts` plans for ``clips`` (each [T] float32)."""
    return [clips[i][start: start + n]
            for i, start, n in plan_excerpts([len(c) for c in clips], sample_rate, max_seconds, excerpt_seconds)]


def noise(kind: str, seconds: float, sample_rate: int, rms: float, seed: int = 0) -> np.ndarray:
    """White or pink (1/f power) Gaussian noise [T] float32 at the given RMS level."""
    rng = np.random.default_rng([seed, 0 if kind == "white" else 1])
    n = int(seconds * sample_rate)
    x = rng.standard_normal(n)
    if kind == "pink":
        spectrum = np.fft.rfft(x)
        freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
        spectrum[1:] /= np.sqrt(freqs[1:])
        spectrum[0] = 0.0
        x = np.fft.irfft(spectrum, n)
    elif kind != "white":
        raise ValueError(f"noise kind {kind!r}: white or pink")
    return (x * rms / max(float(np.sqrt(np.mean(x ** 2))), 1e-12)).astype(np.float32)


def compare_clips(renders: list[np.ndarray], test: list[np.ndarray], train: list[np.ndarray], sample_rate: int, *,
                  max_seconds: float = 120.0, pyin: bool = False, seed: int = 0, examples: bool = False) -> dict:
    """Compare render clips with test clips; train clips and noise as references (see :func:`compare_renders`)."""
    check_sample_rate(sample_rate, "the audio compared")
    if not max_seconds >= MIN_RENDER_SECONDS:
        raise AnalysisError(f"--max-seconds {max_seconds:g}: the analysis needs at least {MIN_RENDER_SECONDS} s "
                            "of audio per set")
    excerpts = {name: excerpts_of(clips, sample_rate, max_seconds)
                for name, clips in (("renders", renders), ("test", test), ("train", train)) if clips}
    excerpts = {name: pieces for name, pieces in excerpts.items() if pieces}  # every clip under MIN_RENDER_SECONDS
    if "renders" not in excerpts or "test" not in excerpts:
        empty = [what for name, what in (("renders", "the renders hold"), ("test", "the test split holds"))
                 if name not in excerpts]
        raise AnalysisError(f"nothing to compare: {'; '.join(empty)} no clip of at least {MIN_RENDER_SECONDS} s")
    if train and "train" not in excerpts:
        logger.warning("the album reference (train) holds no clip of at least %s s: compared without it",
                       MIN_RENDER_SECONDS)
    test_all = np.concatenate(excerpts["test"])
    level = float(np.sqrt(np.mean(test_all.astype(np.float64) ** 2)))
    seconds = min(max_seconds, len(test_all) / sample_rate)
    _warn_if_renders_short(sum(map(len, excerpts["renders"])) / sample_rate, seconds)
    for kind in ("white", "pink"):
        excerpts[f"{kind}_noise"] = excerpts_of([noise(kind, seconds, sample_rate, level, seed)], sample_rate,
                                                max_seconds)
    features = {}
    for name, pieces in excerpts.items():
        logger.info("analysing %s: %s, %.0f s", name, counted(len(pieces), "excerpt"),
                    sum(map(len, pieces)) / sample_rate)
        features[name] = set_features(pieces, sample_rate, pyin)
    test_features = features["test"]
    # One scale per feature dimension from the references (album splits and noises, never the
    # renders): a dimension counts by how far album and noise spread along it. The test split's
    # own spread alone would blow up dimensions in which a homogeneous album hardly varies.
    pooled = np.concatenate([features[s]["vectors"] for s in features if s != "renders"])
    mean, std = pooled.mean(axis=0), pooled.std(axis=0) + 1e-6
    test_sounding = test_features["frames"]["rms_db"] > SILENT_DB
    reference_chroma = test_features["chroma"][test_sounding if test_sounding.any() else slice(None)].mean(axis=0)
    result = {"sample_rate": sample_rate, "sets": {}, "distances": {}, "histograms": _histograms(features),
              "meaning": {"summary": {k: {"unit": u, "meaning": m} for k, (u, m) in SUMMARY_FEATURES.items()},
                          "frame_features": {k: {"unit": u, "meaning": m} for k, (u, m) in FRAME_FEATURES.items()}}}
    for name, f in features.items():
        result["sets"][name] = {"seconds": f["seconds"], "excerpts": f["excerpts"],
                                "summary": summarize(f, reference_chroma)}
        if name != "test":
            result["distances"][name] = distances(f, test_features, mean, std)
    result["verdict"] = _verdict(result)
    if examples:
        result["examples"] = {name: excerpts[name][0] for name in ("renders", "test")}
    return result


SHORT_RENDERS = 0.5  # renders holding under this share of the reference's audio are warned of


def _warn_if_renders_short(renders_seconds: float, reference_seconds: float) -> None:
    """A warning where the renders hold far less audio than the split they are compared with (--split: every
    distance is to it; named alone, not as "the reference sets", which the training split may outweigh): a Frechet
    distance fitted to fewer frames reads farther (the same music judged on 0.3 s scored 80 where on 8 s it
    scored 39, beside references of 3 s), so the likeness reads low; --max-seconds evens the lengths."""
    if renders_seconds < SHORT_RENDERS * reference_seconds:
        logger.warning("the renders hold %.3g s of audio, the split they are compared with %.3g s: a Frechet "
                       "distance from fewer frames reads farther than it is, and the album likeness lower; give "
                       "--max-seconds %.3g to judge every set on as much audio as the renders hold",
                       renders_seconds, reference_seconds,
                       math.floor(renders_seconds * 1000) / 1000)


def compare_renders(renders_dir: str | Path, corpus_dir: str | Path, *, split: str = "test",
                    reference_split: str = "train", max_seconds: float = 120.0, pyin: bool = False,
                    seed: int = 0, examples: bool = False, label: str | None = None) -> dict:
    """Compare the audio files in ``renders_dir`` with the ``split`` of the corpus in ``corpus_dir``
    (``label``: with that label's audio alone, in both splits, written as render takes it: renders of one
    label judged against that label's album).

    Every set (renders; the test split; the training split; white and pink noise at the test
    split's RMS) is cut into 10 s excerpts (``max_seconds`` long where that is less: every set
    holds the same length of audio, given enough), evenly spaced ones up to ``max_seconds`` kept.
    ``split`` must not be ``reference_split`` (a split compared with itself says nothing).
    Returns a JSON-ready dict: ``sets[name] = {"seconds", "excerpts", "summary": {feature: value}}``;
    ``distances[name] = {"frechet", "features": {frame feature: W1 / test std}}`` for every set
    but the test split (0 would be identical; ``train`` is what the album scores, the noises what
    noise scores); ``verdict`` (see :func:`_verdict`), ``histograms`` (for the plot) and
    ``meaning`` (unit and meaning of every number); ``render_files`` (judged) and ``skipped_files``
    (``{"file", "reason"}``: not decodable, too short, NaN; wavegen.analysis_audio.read_renders, which
    reads only the excerpts kept). With ``examples``, also ``examples`` =
    ``{"renders": y, "test": y}``: the first excerpt of each (float32 arrays, for
    :func:`wavegen.plotting.plot_comparison`'s spectrograms; not JSON, the caller takes them out before writing it).
    """
    from wavegen.analysis_audio import read_renders, split_excerpts
    from wavegen.corpus import Corpus

    if split == reference_split:
        others = " or ".join(s for s in ("test", "val", "train") if s != split)
        raise AnalysisError(f"--split {split}: the {split} split is the album reference the renders are scored "
                            f"beside, and a split compared with itself says nothing; compare with {others}")
    corpus = Corpus(corpus_dir)
    rate = corpus.sample_rate
    check_sample_rate(rate, f"corpus {corpus_dir}")  # before the renders are read and resampled to it
    slot = _label_slot(corpus, corpus_dir, label)
    renders = read_renders(renders_dir, rate, max_seconds)
    test = split_excerpts(corpus, split, max_seconds, slot)
    if not test and slot is not None:
        raise AnalysisError(_no_label_audio(corpus, corpus_dir, split, slot))
    if not test:
        raise AnalysisError(_empty_split(corpus, corpus_dir, split, reference_split))
    if max(len(clip) for clip in test) < MIN_RENDER_SECONDS * rate:
        raise AnalysisError(_short_split(corpus, corpus_dir, split, reference_split, slot))
    train = split_excerpts(corpus, reference_split, max_seconds, slot) if reference_split else []
    result = compare_clips(renders.excerpts, test, train, rate, max_seconds=max_seconds, pyin=pyin, seed=seed,
                           examples=examples)
    result.update({"renders_dir": str(renders_dir), "render_files": renders.names,
                   "skipped_files": renders.skipped, "corpus": str(corpus_dir),
                   "split": split, "reference_split": reference_split,
                   "label": corpus.labels[slot] if slot is not None else None})
    return result


def _label_slot(corpus, corpus_dir, label: str | None) -> int | None:
    """--label (read as eval reads it: wavegen.evaluate's _label_name) → its index in the corpus's labels;
    None without one. AnalysisError for a corpus prepared without labels (its split is the one album)."""
    if label is None:
        return None
    if not corpus.labels:
        raise AnalysisError(f"--label {label!r}: corpus {corpus_dir} was prepared without labels: its whole split "
                            "is the album; leave --label out")
    from wavegen.evaluate import _label_name

    return corpus.labels.index(_label_name(label, [], corpus, "the renders are judged against every label's audio"))


def _no_label_audio(corpus, corpus_dir, split: str, slot: int) -> str:
    """Why a label's audio is missing from ``split``, and the split that holds some (test or val) long enough to
    judge (a segment of MIN_RENDER_SECONDS): one whose audio of that label is all shorter is said to be so, not
    given (--split val then ended in that split's own error). A split prepared with a fraction of 0 is said to be
    the cause, as :func:`_empty_split` says it (it was "prepare the corpus again with more of its recordings")."""
    name = corpus.labels[slot]
    longest = {s: _longest_segment(corpus, s, slot) for s in ("test", "val") if s != split}
    others = [s for s, seconds in longest.items() if seconds >= MIN_RENDER_SECONDS]
    held = [s for s, seconds in longest.items() if seconds > 0]
    what = f"holds no audio of label {name!r} to compare with"
    if others:
        instead, more = f"give --split {others[0]}", ""
    elif held:
        instead = (f"the {held[0]} split holds no clip of it of at least {MIN_RENDER_SECONDS} s either (its longest "
                   f"segment: {longest[held[0]]:.3f} s): prepare the corpus again")
        more = " with more or longer recordings"
    else:
        instead, more = "prepare the corpus again", " with more of its recordings"
    unshared = _prepared_without(corpus, corpus_dir, split, what,
                                 f"{instead}, or prepare the corpus again" if others else instead)
    return unshared or f"the {split} split of {corpus_dir} {what}; {instead}{more}"


def _empty_split(corpus, corpus_dir, split: str, reference_split: str) -> str:
    """Why the ``split`` of a corpus holds no audio, and what to give instead: another split that holds
    some (--split), or the corpus prepared again: with a share for it (a corpus prepared with --test-fraction 0
    holds no test split), else with more recordings or another --seed (one emptied by a prep run again: a smaller
    --test-fraction was suggested, drawing the splits again only by changing the fraction; a recording cut in time
    keeps an earlier prep's cut, which another --top-db may leave past the audio kept: its fraction was blamed).
    A split too short to judge itself (no segment of MIN_RENDER_SECONDS) is said to be so, not given (--split val
    then ended in that split's own error)."""
    params = corpus.manifest.get("params", {})
    held = [s for s in ("test", "val") if s not in (split, reference_split) and corpus.seconds(s) > 0]
    others = [s for s in held if _longest_segment(corpus, s) >= MIN_RENDER_SECONDS]
    if others:
        instead = f"give --split {others[0]} (its {corpus.seconds(others[0]):.1f} s), or prepare it again"
    elif held:
        instead = (f"the {held[0]} split holds no clip of at least {MIN_RENDER_SECONDS} s either (its longest "
                   f"segment: {_longest_segment(corpus, held[0]):.3f} s): prepare it again")
    else:
        instead = "prepare it again"
    unshared = _prepared_without(corpus, corpus_dir, split, "has no audio to compare with", instead)
    if unshared:
        return unshared
    seed = params.get("seed")
    again = f"another --seed to draw every split again (wavegen prep RECORDINGS {corpus_dir} --seed " \
            f"{seed + 1 if isinstance(seed, int) else 'N'})"
    cut = [f for f in corpus.manifest.get("files", []) if f.get("split") == "time"]
    if cut:  # its fractions read only here: a damaged manifest's (null, text) do not stop the other reasons
        (now, _), larger = _larger_fraction(corpus, split)
        if not _fraction_gives_audio(cut, corpus.sample_rate, now):
            return (f"the {split} split of {corpus_dir} has no audio to compare with (its --{split}-fraction {now:g} "
                    f"of each recording cut in time came to nothing); {instead} with a larger --{split}-fraction "
                    f"(wavegen prep RECORDINGS {corpus_dir} --{split}-fraction {larger or MAX_HINT_FRACTION:g})")
        # its fraction of a recording gives audio: the cut an earlier prep made, held, lies past what is kept now
        return (f"the {split} split of {corpus_dir} has no audio to compare with (each recording cut in time keeps "
                f"where an earlier prep cut it, and the audio kept of it now ends before its {split} stretch: "
                f"another --top-db, or the recordings changed); {instead} with {again}")
    # a fresh prep gives every held-out split a whole file: this one was emptied by a prep run again, the files
    # held there gone and the others keeping their splits (prep said so then)
    return (f"the {split} split of {corpus_dir} has no audio to compare with (its recordings were gone when it was "
            f"prepared again, and the others kept their splits); {instead} with more recordings, or with {again}")


def _prepared_without(corpus, corpus_dir, split: str, what: str, instead: str) -> str | None:
    """The refusal for a ``split`` the corpus was prepared without (its fraction 0: the cause, whatever else holds
    audio), ``what`` saying what it lacks and ``instead`` (ending in "prepare ... again") what to do, a share for it
    added; None where it was prepared with one. :func:`_empty_split` and :func:`_no_label_audio` both say it."""
    if corpus.manifest.get("params", {}).get(f"{split}_fraction") != 0:
        return None
    return (f"the {split} split of {corpus_dir} {what} (it was prepared with --{split}-fraction 0); {instead} with "
            f"--{split}-fraction above 0 (wavegen prep RECORDINGS {corpus_dir} --{split}-fraction 0.1)")


def _fraction_gives_audio(cut: list[dict], rate: int, fraction: float) -> bool:
    """Whether a fraction of the audio kept of some recording cut in time (its manifest entry's kept_seconds) is a
    sample or more, as prep cuts it (split's _time_cuts rounds): where none is, the fraction came to nothing."""
    from wavegen.split import manifest_seconds

    return any(round((manifest_seconds(f.get("kept_seconds")) or 0.0) * rate * fraction) > 0 for f in cut)


def _short_split(corpus, corpus_dir, split: str, reference_split: str, slot: int | None = None) -> str:
    """Why the ``split`` of a corpus (``slot``: its audio of that label, an index into corpus.labels) gives no
    clip to analyse (every segment shorter than MIN_RENDER_SECONDS), and what to give instead: another split with
    a long enough segment (--split), or the corpus prepared again: with a larger fraction, or, where none is
    suggested, from more recordings, said with what stops a larger one (train's half, or MAX_HINT_FRACTION)."""
    others = [s for s in ("test", "val")
              if s not in (split, reference_split) and _longest_segment(corpus, s, slot) >= MIN_RENDER_SECONDS]
    instead = f"give --split {others[0]}, or prepare it again" if others else "prepare it again"
    album = f"label {corpus.labels[slot]!r} of " if slot is not None else ""
    (now, beside), larger = _larger_fraction(corpus, split)
    other = "val" if split == "test" else "test"
    if larger is not None:
        how = (f"from longer recordings or with a larger --{split}-fraction (wavegen prep RECORDINGS {corpus_dir} "
               f"--{split}-fraction {larger:g})")
    elif now + beside >= 0.5 or now < MAX_HINT_FRACTION:  # what stops a larger one: train keeps half the audio
        # (below the cap, only train's half does: 0.22 beside 0.275 leaves no larger hundredth, and was said past 0.3)
        how = (f"from more or longer recordings (--{split}-fraction {now:g} beside --{other}-fraction {beside:g} "
               f"already holds out as much as train can spare)")
    else:  # the cap stops it (0.34 beside 0 was said to leave train nothing to spare)
        how = (f"from more or longer recordings (--{split}-fraction {now:g} is already at or past "
               f"{MAX_HINT_FRACTION:g}, the largest share a held-out split is suggested)")
    return (f"the {split} split of {album}{corpus_dir} holds no clip of at least {MIN_RENDER_SECONDS} s to compare "
            f"with (its longest segment: {_longest_segment(corpus, split, slot):.3f} s); {instead} {how}")


def _longest_segment(corpus, split: str, slot: int | None = None) -> float:
    """The seconds of the longest segment of a corpus's ``split`` (``slot``: of that label's audio alone); 0 where
    it holds none."""
    from wavegen.analysis_audio import split_segments

    return max((int(n) for _, n, _ in split_segments(corpus, split, slot)), default=0) / corpus.sample_rate


def _larger_fraction(corpus, split: str) -> tuple[tuple[float, float], float | None]:
    """The fractions the corpus was prepared with (the ``split``'s, the other held-out split's), and a larger one
    to suggest for ``split``: 0.1 more, at most MAX_HINT_FRACTION and leaving train half the audio (None where no
    larger one is left: more recordings are what helps). A manifest that records none is taken as prep's default."""
    from wavegen.prep import PrepSettings

    params = corpus.manifest.get("params", {})
    other = "val" if split == "test" else "test"
    now, beside = (float(params.get(f"{s}_fraction", getattr(PrepSettings, f"{s}_fraction"))) for s in (split, other))
    larger = round(min(now + 0.1, MAX_HINT_FRACTION, 0.5 - beside), 2)
    return (now, beside), larger if larger > now else None


def _verdict(result: dict) -> dict:
    """Where the renders sit between the album and noise, on the Frechet distance.

    ``album_likeness`` = log(FD_noise / FD_renders) / log(FD_noise / FD_album): 1 where the
    renders are as near the test split as the training split is, 0 as far as the nearer noise,
    below 0 farther than noise (FD_album: the training split's; FD_noise: the nearer noise's).
    Renders silent throughout (no frame over SILENT_DB): ``renders_silent`` True, the likeness NaN.
    """
    fd = {name: d["frechet"] for name, d in result["distances"].items()}
    noise_fd = min(fd["white_noise"], fd["pink_noise"])
    out = {"frechet_renders": fd["renders"], "frechet_noise": noise_fd,
           "periodic_fraction_renders": result["sets"]["renders"]["summary"]["periodic_fraction"],
           "periodic_fraction_album": result["sets"]["test"]["summary"]["periodic_fraction"]}
    # every frame of the renders silent: nothing sounds to place between album and noise (its Frechet
    # distance is silence's, far from both); the likeness is undefined, and the report says why
    silent = result["sets"]["renders"]["summary"]["silent_fraction"] >= 1.0
    if silent:
        out["renders_silent"] = True
    if "train" in fd:
        album = max(fd["train"], 1e-9)
        out["frechet_album"] = fd["train"]
        span = math.log(max(noise_fd, 1e-9) / album)
        near = math.log(max(noise_fd, 1e-9) / max(fd["renders"], 1e-9))
        out["album_likeness"] = near / span if span > 0 and not silent else float("nan")
    return out


def _histograms(features: dict, bins: int = 40) -> dict:
    """Per frame feature: shared bin edges over every set and each set's density."""
    out = {}
    for name in FRAME_FEATURES:
        values = {s: f["frames"][name] for s, f in features.items()}
        allv = np.concatenate(list(values.values()))
        lo, hi = np.percentile(allv, [0.5, 99.5])
        if hi <= lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, bins + 1)
        out[name] = {"edges": edges.tolist(),
                     "density": {s: np.histogram(np.clip(v, lo, hi), edges, density=True)[0].tolist()
                                 for s, v in values.items()}}
    return out
