"""NLL of a model on a corpus split, in bits per sample: ``wavegen eval`` and training's validation.

What is scored: every sample of every segment of the split, once. A segment is scored from
its start as a stream: the model's context in front of its first sample is silence (the
state an engine starts a render in), SampleRNN's hidden state is carried through the whole
segment, WaveNet sees its full receptive field of previous samples at every position. The
segment is read in windows only to bound memory; the windows do not change what is scored.
With ``max_seconds`` each segment contributes its first S samples (shorter segments whole),
S chosen so that the total is at most ``max_seconds``: every recording is still represented. (WaveNet's
windows of one segment are scored side by side, each reading its receptive field from the audio
before it: the same numbers as one pass, faster.)

Under several processes (training's validation) each takes its share of the segments and
the sums are reduced, so the result equals one process's up to float rounding.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext

import numpy as np
import torch

from wavegen.audio import silence_code
from wavegen.config import ConfigError
from wavegen.progress import counted

logger = logging.getLogger(__name__)

LN2 = math.log(2.0)
# Predicted samples per window (a recurrent model's, and a model's with a finite receptive field)
# and streams per batch: speed and memory, not results, depend on them. Windows of ~1k samples
# side by side were the fastest for WaveNet on the CPU (wavenet-tiny and -medium, 1 thread:
# 512-1024 samples 1.5x faster than 4096).
WINDOW_SAMPLES = 4096
PARALLEL_WINDOW_SAMPLES = 1024
STREAMS = 16


def evaluate(model, corpus, split: str = "test", label: str | None = None, max_seconds: float | None = None, *,
             device=None, accelerator=None, progress: bool = False) -> dict:
    """NLL in bits per sample of ``model`` on a corpus split (see the module docstring for what is scored).

    model: a model (wavegen.models.Model), or a ModelRef (loaded here on ``device``; its sample
    rate must be the corpus's). corpus: a Corpus or its folder. label: one label, read as render
    reads it: only that label's segments (a blend has no audio of its own and is refused); on a
    corpus without labels, a conditioned model's every segment, conditioned on that label. max_seconds: a cap
    (positive, finite) on the audio scored. accelerator: share the work over its processes
    (training's validation; also gives the device and autocast).

    Returns ``{"split", "nll_bits_per_sample", "samples", "seconds", "segments",
    "unigram_entropy_bits", "scored", "per_label": {name: {"nll_bits_per_sample", "samples"}}, "label"}``;
    per_label is filled for a conditioned model; label is the one label scored (None: every label's audio).
    The unigram entropy of the same codes is what a model that ignores context would score.
    """
    from wavegen.corpus import Corpus

    corpus = corpus if isinstance(corpus, Corpus) else Corpus(corpus)
    if max_seconds is not None and not (math.isfinite(max_seconds) and max_seconds > 0):
        raise ConfigError(f"--max-seconds {max_seconds}: give a positive number of seconds (or leave it out "
                          "to score the whole split)")
    model = _loaded(model, corpus, device or (accelerator.device if accelerator is not None else "cpu"))
    parts, names, label = _parts(model, corpus, split, label, max_seconds)
    streams = _streams(parts, model)
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    # by label, longest first: batches of even lengths that never mix labels, so one label's
    # score is the same number whether or not the other labels are scored beside it
    mine = streams[np.lexsort((-streams[:, 1], streams[:, 2]))][rank::world]
    dev = next(model.parameters()).device
    totals = _Totals(len(names), model.config.q_levels, dev)
    bar = None
    if progress and rank == 0:
        from wavegen.progress import move_to, progress_bar

        bar = progress_bar(total=float(mine[:, 1].sum()) / corpus.sample_rate, desc=f"eval {split}", unit="s")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for slot in np.unique(mine[:, 2]):
                group = mine[mine[:, 2] == slot]
                for first in range(0, len(group), STREAMS):
                    _score_batch(model, corpus.split(split), group[first: first + STREAMS], totals, accelerator,
                                 bar, corpus.sample_rate, bool(model.config.labels))
        if bar is not None:  # every sample scored: the bar ends at its total (its float sum of seconds may not)
            move_to(bar, bar.total)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    if accelerator is not None and world > 1:
        totals.reduce(accelerator)
    return {**totals.result(split, names, len(parts), corpus.sample_rate, _scored(parts, max_seconds)), "label": label}


def _loaded(model, corpus, device):
    """A ModelRef → its model on ``device`` after checking the sample rates agree; a model as it is."""
    from wavegen.resolve import ModelRef

    if not isinstance(model, ModelRef):
        return model
    if model.sample_rate != corpus.sample_rate:
        raise ConfigError(f"corpus {corpus.dir} is at {corpus.sample_rate} Hz, the model ({model.source}) at "
                          f"{model.sample_rate} Hz: evaluate on a corpus prepared at the model's rate")
    return model.load(device)


def _parts(model, corpus, split: str, label: str | None, max_seconds: float | None):
    """→ (int64 [N, 3] rows (start, length, label slot) to score, label names per slot, the label --label names
    (its name as the corpus or model holds it; None without --label))."""
    segments = np.asarray(corpus.segments(split), dtype=np.int64).reshape(-1, 3)
    corpus_labels = corpus.segment_labels(split) if len(segments) else np.zeros(0, dtype=np.int64)
    names = list(model.config.labels)
    if label is not None:
        label = _label_name(label, names, corpus)
        segments, corpus_labels = _only_label(label, segments, corpus_labels, corpus, names)
    if len(segments) == 0:
        raise ConfigError(f"the {split} split of {corpus.dir} has no audio"
                          + (f" for label {label!r}" if label is not None else ""))
    slots = _slots(split, corpus, corpus_labels, names, label)
    lengths = segments[:, 1]
    if max_seconds is not None:
        lengths = np.minimum(lengths, _share(lengths, int(max_seconds * corpus.sample_rate)))
    keep = lengths > 0
    if not keep.any():
        each = "the 1 segment" if len(segments) == 1 else f"each of the {counted(len(segments), 'segment')}"
        raise ConfigError(f"--max-seconds {max_seconds:g}: less than one sample from {each} of the {split} split "
                          f"at {corpus.sample_rate} Hz; give at least "
                          f"{len(segments) / corpus.sample_rate:.6g} s")
    return np.stack([segments[keep, 0], lengths[keep], slots[keep]], 1), names, label


def _label_name(text: str, model_names: list[str], corpus,
                without: str = "every label's audio is scored under its own label, per label") -> str:
    """--label read as render and serve read it (:func:`wavegen.render.settings.parse_label`: a label's
    own name is that label, ':' and ',' included; a space before a name is skipped where no label starts
    with it) → the one label it names, of the model's labels (else the corpus's). A blend is refused:
    it has no audio of its own (``without``: what the command does without --label, said with the refusal)."""
    from wavegen.render.settings import labels_said, parse_label

    known = model_names or corpus.labels
    if not known:
        return text  # no labels anywhere: _only_label says the corpus has no audio of it
    try:
        weights = parse_label(text, known)
    except ConfigError:
        if model_names:
            raise
        raise ConfigError(f"--label {text!r}: corpus {corpus.dir} has no audio of that label "
                          f"(its labels: {labels_said(known)})") from None
    chosen = np.flatnonzero(weights)
    if len(chosen) > 1:
        raise ConfigError(f"--label {text!r}: eval takes one label; a blend has no audio of its own to score "
                          f"(without --label {without})")
    return known[int(chosen[0])]


def _only_label(label: str, segments, corpus_labels, corpus, model_names: list[str]):
    """The segments of one label (a name of :func:`_label_name`); on a corpus without labels scored by a
    conditioned model, every segment (each conditioned on that label)."""
    if model_names and not corpus.labels:
        return segments, corpus_labels
    if label not in corpus.labels:
        from wavegen.render.settings import labels_said

        raise ConfigError(f"--label {label!r}: corpus {corpus.dir} has no audio of that label "
                          f"(its labels: {labels_said(corpus.labels) or 'none'})")
    keep = corpus_labels == corpus.labels.index(label)
    return segments[keep], corpus_labels[keep]


def _slots(split: str, corpus, corpus_labels, names: list[str], label: str | None) -> np.ndarray:
    """The model's label slot of every segment: 0 for an unconditioned model; for a conditioned one,
    the segment's own label's, matched by name, or on a corpus without labels --label's."""
    from wavegen.render.settings import labels_said

    if not names:
        return np.zeros(len(corpus_labels), dtype=np.int64)
    if not corpus.labels:
        if label is None:
            raise ConfigError(f"corpus {corpus.dir} has no labels, while this model is conditioned on labels "
                              f"{labels_said(names)}: evaluate it on a corpus prepared with labels (wavegen prep --labels "
                              f"folders), or score the {split} split as one label's audio with --label NAME "
                              "(every segment conditioned on it)")
        return np.full(len(corpus_labels), names.index(label), dtype=np.int64)
    unknown = sorted({corpus.labels[i] if i >= 0 else "(none)" for i in corpus_labels.tolist()} - set(names))
    if unknown:
        shared = sorted(set(names) & {corpus.labels[i] for i in corpus_labels.tolist() if i >= 0})
        advice = (f"choose one of the labels both have with --label ({', '.join(shared)})" if shared else
                  "none of its labels has audio there: evaluate on a corpus prepared with the model's labels")
        labels = "a label" if len(unknown) == 1 else "labels"
        raise ConfigError(f"the {split} split of {corpus.dir} holds audio of {labels} {labels_said(unknown)} this "
                          f"model was not trained on (its labels: {labels_said(names)}); {advice}")
    return np.array([names.index(corpus.labels[i]) for i in corpus_labels.tolist()], dtype=np.int64)


def _window(model) -> tuple[int, int]:
    """(predicted samples per forward call, the unit a stream's length is padded to): a recurrent
    model predicts whole top frames (its context), a model with a receptive field any number."""
    if model.receptive_field is not None:
        return PARALLEL_WINDOW_SAMPLES, 1
    context = model.context_samples
    return context * max(1, -(-WINDOW_SAMPLES // context)), context


def _streams(parts: np.ndarray, model) -> np.ndarray:
    """Rows (start, length, slot, lead) scored as streams; ``lead``: samples of the segment before
    ``start`` that the stream reads as context (silence in front of them).

    A recurrent model (receptive_field None) carries its state through a segment: one stream per
    segment. A model that sees a finite receptive field (its context) needs nothing else: a
    segment is cut into windows scored side by side, each reading its context from the audio
    before it, which scores exactly what one stream would, faster.
    """
    lead = np.zeros((len(parts), 1), dtype=np.int64)
    if model.receptive_field is None or len(parts) == 0:
        return np.concatenate([parts, lead], 1)
    window, _ = _window(model)
    rows = []
    for start, length, slot in parts.tolist():
        for offset in range(0, length, window):
            rows.append((start + offset, min(window, length - offset), slot, min(offset, model.context_samples)))
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def _share(lengths: np.ndarray, cap: int) -> int:
    """The largest S with sum(min(lengths, S)) <= cap (every segment's first S samples)."""
    if int(lengths.sum()) <= cap:
        return int(lengths.max())
    ordered = np.sort(lengths)
    before = np.concatenate([[0], np.cumsum(ordered)[:-1]])  # samples of the shorter segments
    for i, n in enumerate(ordered):
        s = (cap - int(before[i])) // (len(ordered) - i)
        if s <= n:
            return max(int(s), 0)
    return int(ordered[-1])


def _scored(parts: np.ndarray, max_seconds: float | None) -> str:
    n = len(parts)
    whole = (f"{counted(n, 'segment')}, {'each ' if n > 1 else ''}from its start (silence before it, the model's "
             "state carried through it)")
    if max_seconds is None:
        return f"every sample of {whole}"
    return f"at most {max_seconds:g} s: the first {counted(int(parts[:, 1].max()), 'sample')} (or all) of {whole}"


def _score_batch(model, audio, rows: np.ndarray, totals: _Totals, accelerator, bar, sample_rate: int,
                 conditioned: bool) -> None:
    """Score the streams ``rows`` [b, 4] (start, length, slot, lead) window by window, state carried."""
    cfg = model.config
    context = model.context_samples
    window, unit = _window(model)
    starts, lengths, leads = rows[:, 0], rows[:, 1], rows[:, 3]
    padded = unit * -(-int(lengths.max()) // unit)
    lut = _code_table(cfg.q_levels, cfg.quantization)
    silence = silence_code(cfg.q_levels, cfg.quantization)
    dev = totals.sums.device
    slots = torch.from_numpy(rows[:, 2]).to(dev)
    labels = slots if conditioned else None
    state = None
    for lo in range(0, padded, window):
        n = min(window, padded - lo)
        codes = np.full((len(rows), context + n), silence, dtype=np.int64)
        for j, (start, length, lead) in enumerate(zip(starts, lengths, leads)):
            a, b = max(lo - context, -int(lead)), min(lo + n, int(length))  # this stream's real samples here
            if b > a:
                codes[j, a - (lo - context): b - (lo - context)] = lut[
                    audio[start + a: start + b].astype(np.int32) + 32768]
        valid = np.clip(lengths - lo, 0, n)
        mask = torch.from_numpy(np.arange(n)[None, :] < valid[:, None]).to(dev)
        codes_t = torch.from_numpy(codes).to(dev)
        with accelerator.autocast() if accelerator is not None else nullcontext():
            nll, state = model.sequence_nll(codes_t, labels, state)
        totals.add(nll.double() * mask, codes_t[:, context:][mask], slots, mask.sum(1))
        if bar is not None:
            bar.update(float(valid.sum()) / sample_rate)


_TABLES: dict[tuple[int, str], np.ndarray] = {}


def _code_table(q_levels: int, quantization: str) -> np.ndarray:
    from wavegen.data import code_table

    key = (q_levels, quantization)
    if key not in _TABLES:
        _TABLES[key] = code_table(q_levels, quantization)
    return _TABLES[key]


class _Totals:
    """Per-label NLL sums and sample counts, and the histogram of the scored codes (float64, on the device)."""

    def __init__(self, n_labels: int, q_levels: int, device):
        slots = max(1, n_labels)
        self.sums = torch.zeros(slots, dtype=torch.float64, device=device)
        self.counts = torch.zeros(slots, dtype=torch.float64, device=device)
        self.histogram = torch.zeros(q_levels, dtype=torch.float64, device=device)

    def add(self, nll: torch.Tensor, targets: torch.Tensor, slots: torch.Tensor, counts: torch.Tensor) -> None:
        self.sums.index_add_(0, slots, nll.sum(1))
        self.counts.index_add_(0, slots, counts.double())
        self.histogram += torch.bincount(targets, minlength=len(self.histogram)).double()

    def reduce(self, accelerator) -> None:
        self.sums = accelerator.reduce(self.sums, "sum")
        self.counts = accelerator.reduce(self.counts, "sum")
        self.histogram = accelerator.reduce(self.histogram, "sum")

    def result(self, split: str, names: list[str], segments: int, sample_rate: int, scored: str) -> dict:
        total = float(self.counts.sum())
        p = self.histogram[self.histogram > 0] / self.histogram.sum()
        out = {"split": split, "nll_bits_per_sample": float(self.sums.sum()) / total / LN2,
               "samples": int(total), "seconds": total / sample_rate, "segments": segments,
               # max: one code alone sums to -0.0 ("-0.000 bits")
               "unigram_entropy_bits": max(0.0, float(-(p * torch.log2(p)).sum())), "scored": scored,
               "per_label": {}}
        for k, name in enumerate(names):
            if self.counts[k] > 0:
                out["per_label"][name] = {"nll_bits_per_sample": float(self.sums[k] / self.counts[k]) / LN2,
                                          "samples": int(self.counts[k])}
        return out
