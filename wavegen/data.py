"""Training windows from the memory-mapped corpus: TBPTT sequences, random crops.

:func:`make_batches` picks the batching from the model's family: SampleRNN trains on
consecutive windows of long chunks (the trainer carries its state from one window to the
next), WaveNet on independent random crops. Every batch is a pure function of (seed, step,
micro-batch, rank): a resumed run sees the same batches as an uninterrupted one, and N
processes together see exactly the global batch one process would. Stream ``b`` of the global
batch lives on rank ``b // (B / world)``.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from wavegen.audio import int16_to_float, quantize, silence_code
from wavegen.config import ConfigError, TrainConfig
from wavegen.progress import counted


class CorpusTooShort(ConfigError):
    """The corpus has no stretch of audio long enough for one training window."""


class BatchBuildingStopped(Exception):
    """A stop was requested (Ctrl-C, SIGTERM) while a batch was being built; nothing was trained on it."""


# Streams drawn or copied between two looks at the stop flag: a huge batch stops within a
# fraction of a second, a normal one pays nothing measurable.
_STOP_CHECK_STREAMS = 1024


def local_streams(train: TrainConfig, rank: int, world: int, named: tuple[str, str] | None = None) -> int:
    """Streams per micro-batch on one process; the global batch must split evenly. A refusal names the batch size
    and the accumulation steps as ``named`` says them (training's keys unless given: "train.batch_size=3",
    "train.grad_accum=2"; bench --train names its options), its counts agreeing with their nouns."""
    parts = world * train.grad_accum
    if train.batch_size % parts:
        batch, accum = named or (f"train.batch_size={train.batch_size}", f"train.grad_accum={train.grad_accum}")
        raise ConfigError(f"{batch} does not split into {counted(world, 'process', 'processes')} x "
                          f"{counted(train.grad_accum, 'accumulation step')}"
                          + (f" ({accum})" if train.grad_accum > 1 else "") + f"; use a multiple of {parts}")
    return train.batch_size // parts


def code_table(q_levels: int, quantization: str) -> np.ndarray:
    """int64 [65536]: the code of every int16 sample value, indexed by ``value + 32768``.

    The same function as ``quantize(int16_to_float(x))`` (it is computed with it), applied as a
    gather: batch building costs one lookup per sample instead of float64 arithmetic.
    """
    every = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    return quantize(int16_to_float(every), q_levels, quantization)


SILENCE_START_STREAM = 1  # keys TBPTTBatches' silent-start draws apart from the chunks' own


def draw_weights(spans: np.ndarray, labels: np.ndarray, balance: float = 0.0) -> np.ndarray:
    """The probability of drawing each segment: float64 [N] from ``spans`` [N] (the windows each one
    holds) and ``labels`` [N] (-1: none). By the windows (every window of the split as likely), or with
    ``balance`` (train.label_balance) > 0 a label's share of the draws goes as its windows ** (1 - balance)
    (1: every label equally often), shared out among its segments by their windows. Pure in its inputs, so
    the batches stay a function of (seed, step, stream) and a resume draws what the run would have."""
    if balance == 0:  # the arithmetic of every run before the setting: their batches stay bit for bit
        return spans / spans.sum()
    _, which = np.unique(labels, return_inverse=True)
    totals = np.bincount(which, weights=spans).astype(np.float64)
    shares = totals ** (1.0 - balance)
    weights = (shares / shares.sum())[which] * spans / totals[which]
    return weights / weights.sum()


class _WindowSource:
    """Common machinery: eligible segments, deterministic draws, quantized windows."""

    def __init__(self, audio, segments, segment_labels, train: TrainConfig, q_levels: int,
                 quantization: str, need: int, rank: int, world: int, what: str):
        self.audio, self.train = audio, train
        self.q_levels, self.quantization = q_levels, quantization
        self.need, self.rank, self.world = need, rank, world
        self.micro = local_streams(train, rank, world)
        segments = np.asarray(segments, dtype=np.int64).reshape(-1, 3)
        lengths = segments[:, 1]
        ok = lengths >= need
        if not ok.any():
            longest = int(lengths.max()) if len(lengths) else 0
            raise CorpusTooShort(
                f"no training audio stretch is long enough for one {what} of {need} samples "
                f"(longest segment: {longest} samples); lower train.seq_len"
                + (" or train.tbptt_windows" if "TBPTT" in what else "") + ", or add recordings")
        self.starts = segments[ok, 0]
        self.spans = lengths[ok] - need + 1  # valid start offsets per segment
        labels = np.full(len(segments), -1) if segment_labels is None else np.asarray(segment_labels)
        self.labels = labels[ok]
        self.weights = draw_weights(self.spans, self.labels, train.label_balance)
        # per label index with training audio: its longest segment (a label with none eligible never trains)
        self.longest = {int(k): int(lengths[labels == k].max()) for k in np.unique(labels) if k >= 0}
        self.what = what
        self._lut = code_table(q_levels, quantization)
        self.should_stop = lambda: False  # the trainer points this at its stop flag

    def _check_stop(self, i: int) -> None:
        if i % _STOP_CHECK_STREAMS == 0 and self.should_stop():
            raise BatchBuildingStopped("stopped while building a batch")

    def streams_of(self, micro: int) -> range:
        """Global stream ids of this rank's micro-batch ``micro``."""
        first = (self.rank * self.train.grad_accum + micro) * self.micro
        return range(first, first + self.micro)

    def _draw(self, *key: int) -> tuple[int, int]:
        rng = np.random.default_rng([self.train.seed, *key])
        seg = int(rng.choice(len(self.starts), p=self.weights))
        return int(self.starts[seg] + rng.integers(self.spans[seg])), int(self.labels[seg])

    def _draws(self, *key: int) -> list[tuple[int, int]]:
        """(start, label) of every stream of this rank's micro-batch ``key[-1]`` at ``key[:-1]``."""
        draws = []
        for i, b in enumerate(self.streams_of(key[-1])):
            self._check_stop(i)
            draws.append(self._draw(*key[:-1], b))
        return draws

    def _codes(self, starts: list[int], length: int) -> torch.Tensor:
        x = np.empty((len(starts), length), dtype=np.int16)
        for i, s in enumerate(starts):
            self._check_stop(i)
            x[i] = self.audio[s: s + length]
        return torch.from_numpy(self._lut[x.astype(np.int32) + 32768])


class TBPTTBatches(_WindowSource):
    """SampleRNN: consecutive windows of long chunks; the trainer carries the model's state.

    ``batch(step, micro)`` → ``codes [b, C + seq_len]`` int64, ``reset [b]`` bool (true on
    a chunk's first window), ``labels [b]`` int64. Window ``w`` of a chunk continues window
    ``w - 1`` of the same micro-batch's streams.
    """

    def __init__(self, audio, segments, segment_labels, train, q_levels, quantization, context, rank=0, world=1):
        self.context = context
        need = context + train.tbptt_windows * train.seq_len
        super().__init__(audio, segments, segment_labels, train, q_levels, quantization, need,
                         rank, world, f"TBPTT chunk (context {context} + {train.tbptt_windows} x {train.seq_len})")
        self._cache: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
        self._lock = threading.Lock()  # batches may be built on prefetch threads

    def _chunks(self, chunk: int, micro: int):
        key = (chunk, micro)
        with self._lock:
            found = self._cache.get(key)
        if found is None:
            draws = self._draws(chunk, micro)
            found = ([d[0] for d in draws], [d[1] for d in draws])
            with self._lock:  # keep this chunk and the next (prefetching runs ahead)
                self._cache = {k: v for k, v in self._cache.items() if chunk <= k[0] <= chunk + 1}
                self._cache[key] = found
        return found

    def batch(self, step: int, micro: int = 0) -> dict:
        chunk, window = divmod(step, self.train.tbptt_windows)
        starts, labels = self._chunks(chunk, micro)
        offset = window * self.train.seq_len
        codes = self._codes([s + offset for s in starts], self.context + self.train.seq_len)
        if window == 0 and self.train.silence_start > 0:
            silent = [self._silent_start(chunk, b) for b in self.streams_of(micro)]
            codes[torch.tensor(silent), :self.context] = silence_code(self.q_levels, self.quantization)
        return {"codes": codes, "reset": torch.full((len(starts),), window == 0),
                "labels": torch.tensor(labels, dtype=torch.long)}


    def _silent_start(self, chunk: int, stream: int) -> bool:
        """Whether ``stream``'s chunk ``chunk`` begins after silence (train.silence_start of them), drawn
        apart from the chunk's start and label, so a fraction of 0 leaves every batch as it was."""
        rng = np.random.default_rng([self.train.seed, chunk, stream, SILENCE_START_STREAM])
        return bool(rng.random() < self.train.silence_start)


class RandomCrops(_WindowSource):
    """Independent random crops of ``context + seq_len`` samples (WaveNet: context = its receptive field)."""

    def __init__(self, audio, segments, segment_labels, train, q_levels, quantization, context, rank=0, world=1):
        self.context = context
        super().__init__(audio, segments, segment_labels, train, q_levels, quantization,
                         context + train.seq_len, rank, world, f"crop (context {context} + {train.seq_len})")

    def batch(self, step: int, micro: int = 0) -> dict:
        draws = self._draws(step, micro)
        codes = self._codes([d[0] for d in draws], self.need)
        return {"codes": codes, "reset": torch.ones(len(draws), dtype=torch.bool),
                "labels": torch.tensor([d[1] for d in draws], dtype=torch.long)}


# The batching each family trains on, by ``model.family``.
BATCHING = {"samplernn": TBPTTBatches, "wavenet": RandomCrops}


def unused_settings(family: str, train: TrainConfig) -> list[str]:
    """The settings ``train`` gives that the family's batching never reads (``train.silence_start=0.5``):
    a WaveNet's random crops of recorded audio have no chunk starts to put after silence, nor chunks of
    ``train.tbptt_windows`` windows (said where it is not the default, which every run holds)."""
    if BATCHING.get(family) is not RandomCrops:
        return []
    said = [f"train.silence_start={train.silence_start:g}"] if train.silence_start > 0 else []
    if train.tbptt_windows != TrainConfig().tbptt_windows:
        said.append(f"train.tbptt_windows={train.tbptt_windows}")
    return said


def batch_warnings(batches, model, train: TrainConfig) -> list[str]:
    """What the trainer warns of before training on ``batches`` (make_batches's) for ``model``: settings
    the batching never reads (:func:`unused_settings`), and each of the model's labels that no training
    window holds (its training audio absent, or in stretches shorter than one window): the model never
    learns it, yet validation scores it and the samples draw it."""
    said = [f"{setting} does nothing for a {model.family} model (its batches never read it)"
            for setting in unused_settings(model.family, train)]
    drawn = set(np.unique(batches.labels).tolist())
    if train.label_balance > 0 and len(drawn) < 2:
        said.append(f"train.label_balance={train.label_balance:g} does nothing here: the training windows hold "
                    + ("no labels (prep with --labels folders for some)" if drawn <= {-1} else "one label alone"))
    for k, name in enumerate(getattr(model.config, "labels", None) or []):
        if k in drawn:
            continue
        if k in batches.longest:
            why = (f"its longest stretch of training audio is {batches.longest[k]} samples, shorter than the "
                   f"{batches.need} of one {batches.what}; lower train.seq_len"
                   + (" or train.tbptt_windows" if "TBPTT" in batches.what else "")
                   + ", or add longer recordings of it")
        else:
            why = "it has no training audio (only validation or test audio); add recordings of it"
        said.append(f"label {name!r} never trains: {why}")
    return said


def make_batches(model, audio, segments, segment_labels, train: TrainConfig, rank: int = 0, world: int = 1):
    """The training batch source for ``model`` (by its family) over a corpus split.

    audio int16 [T] (memory-mapped), segments int64 [N, 3] (start, length, file), segment_labels
    int64 [N] or None. Returns an object with ``batch(step, micro) -> dict`` (see TBPTTBatches,
    RandomCrops). Raises ConfigError when ``train`` cannot work with the model, CorpusTooShort
    when no segment holds one window.
    """
    if model.family not in BATCHING:
        raise ConfigError(f"no training batches for model family {model.family!r}; known: {sorted(BATCHING)}")
    cfg = model.config
    cfg.validate(train)
    return BATCHING[model.family](audio, segments, segment_labels, train, cfg.q_levels, cfg.quantization,
                                  model.context_samples, rank, world)


class BatchStream:
    """The training loop's source of batches, in order: ``(step, micro)`` for step = start, ....

    ``workers > 0`` builds batches on that many background threads, up to ``2 * workers``
    ahead, so reading the memory-mapped corpus and quantizing overlaps the model's compute
    (numpy releases the GIL while it copies and gathers). ``pin`` puts the tensors in
    page-locked memory, so the copy to a CUDA device is asynchronous (``non_blocking``).

    ``next()`` → the batch dict of ``batches.batch(step, micro)`` with its tensors on ``device``.
    """

    def __init__(self, batches, start_step: int, grad_accum: int, device, workers: int = 0, pin: bool = False):
        self.batches, self.grad_accum, self.device = batches, grad_accum, torch.device(device)
        self.pin = pin
        self._next_key = (start_step, 0)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="wavegen-batches") if workers > 0 else None
        self._ahead = 2 * workers
        self._pending: deque = deque()

    def _advance(self) -> tuple[int, int]:
        key = self._next_key
        step, micro = key
        self._next_key = (step, micro + 1) if micro + 1 < self.grad_accum else (step + 1, 0)
        return key

    def _build(self, step: int, micro: int) -> dict:
        batch = self.batches.batch(step, micro)
        if self.pin:
            batch = {k: (v.pin_memory() if torch.is_tensor(v) else v) for k, v in batch.items()}
        return batch

    def next(self) -> dict:
        if self._pool is None:
            batch = self._build(*self._advance())
        else:
            while len(self._pending) < max(1, self._ahead):
                self._pending.append(self._pool.submit(self._build, *self._advance()))
            batch = self._pending.popleft().result()
        return {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}

    def close(self) -> None:
        if self._pool is not None:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None
