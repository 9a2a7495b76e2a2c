"""Training windows from the memory-mapped corpus: TBPTT sequences, random crops, eval pieces.

Every batch is a pure function of (seed, step, micro-batch, rank): a resumed run sees the same
batches as an uninterrupted one, and N processes together see exactly the global batch one
process would. Stream ``b`` of the global batch lives on rank ``b // (B / world)``.
"""

from __future__ import annotations

import numpy as np
import torch

from wavegen.audio import int16_to_float, quantize
from wavegen.config import ConfigError, TrainConfig


class CorpusTooShort(ConfigError):
    """The corpus has no stretch of audio long enough for one training window."""


def local_streams(train: TrainConfig, rank: int, world: int) -> int:
    """Streams per micro-batch on one process; the global batch must split evenly."""
    parts = world * train.grad_accum
    if train.batch_size % parts:
        raise ConfigError(f"train.batch_size={train.batch_size} does not split into {world} process(es) "
                          f"x {train.grad_accum} accumulation step(s); use a multiple of {parts}")
    return train.batch_size // parts


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
        self.weights = self.spans / self.spans.sum()
        labels = np.full(len(segments), -1) if segment_labels is None else np.asarray(segment_labels)
        self.labels = labels[ok]

    def streams_of(self, micro: int) -> range:
        """Global stream ids of this rank's micro-batch ``micro``."""
        first = (self.rank * self.train.grad_accum + micro) * self.micro
        return range(first, first + self.micro)

    def _draw(self, *key: int) -> tuple[int, int]:
        rng = np.random.default_rng([self.train.seed, *key])
        seg = int(rng.choice(len(self.starts), p=self.weights))
        return int(self.starts[seg] + rng.integers(self.spans[seg])), int(self.labels[seg])

    def _codes(self, starts: list[int], length: int) -> torch.Tensor:
        x = np.stack([np.asarray(self.audio[s: s + length]) for s in starts])
        return torch.from_numpy(quantize(int16_to_float(x), self.q_levels, self.quantization))


class TBPTTBatches(_WindowSource):
    """SampleRNN: consecutive windows of long chunks; the model carries its hidden state.

    ``batch(step, micro)`` → ``codes [b, C + seq_len]`` int64, ``reset [b]`` bool (true on
    a chunk's first window), ``labels [b]`` int64, ``slot`` (which carried state to use).
    """

    def __init__(self, audio, segments, segment_labels, train, q_levels, quantization, context, rank=0, world=1):
        self.context = context
        need = context + train.tbptt_windows * train.seq_len
        super().__init__(audio, segments, segment_labels, train, q_levels, quantization, need,
                         rank, world, f"TBPTT chunk (context {context} + {train.tbptt_windows} x {train.seq_len})")
        self._cache: dict[tuple[int, int], tuple[list[int], list[int]]] = {}

    def _chunks(self, chunk: int, micro: int):
        key = (chunk, micro)
        if key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[0] == chunk}
            draws = [self._draw(chunk, b) for b in self.streams_of(micro)]
            self._cache[key] = ([d[0] for d in draws], [d[1] for d in draws])
        return self._cache[key]

    def batch(self, step: int, micro: int = 0) -> dict:
        chunk, window = divmod(step, self.train.tbptt_windows)
        starts, labels = self._chunks(chunk, micro)
        offset = window * self.train.seq_len
        codes = self._codes([s + offset for s in starts], self.context + self.train.seq_len)
        return {"codes": codes, "reset": torch.full((len(starts),), window == 0),
                "labels": torch.tensor(labels, dtype=torch.long), "slot": micro}


class RandomCrops(_WindowSource):
    """Independent random crops of ``context + seq_len`` samples (WaveNet: context = receptive field - 1)."""

    def __init__(self, audio, segments, segment_labels, train, q_levels, quantization, context, rank=0, world=1):
        self.context = context
        super().__init__(audio, segments, segment_labels, train, q_levels, quantization,
                         context + train.seq_len, rank, world, f"crop (context {context} + {train.seq_len})")

    def batch(self, step: int, micro: int = 0) -> dict:
        draws = [self._draw(step, b) for b in self.streams_of(micro)]
        codes = self._codes([d[0] for d in draws], self.need)
        return {"codes": codes, "reset": torch.ones(len(draws), dtype=torch.bool),
                "labels": torch.tensor([d[1] for d in draws], dtype=torch.long), "slot": micro}


def eval_pieces(segments, segment_labels, context: int, piece_len: int, max_samples: int | None = None):
    """Cut segments into pieces of ``context + piece_len`` samples (consecutive pieces overlap by
    ``context``, so each sample is predicted once). Pieces are taken evenly across the split
    when ``max_samples`` caps the total. Returns int64 [N, 2]: (start, label)."""
    pieces = []
    segments = np.asarray(segments, dtype=np.int64).reshape(-1, 3)
    for i, (start, length, _) in enumerate(segments):
        label = -1 if segment_labels is None else int(segment_labels[i])
        for offset in range(0, int(length) - context - piece_len + 1, piece_len):
            pieces.append((int(start) + offset, label))
    pieces = np.array(pieces, dtype=np.int64).reshape(-1, 2)
    if max_samples is not None and len(pieces) * piece_len > max_samples:
        keep = max(1, max_samples // piece_len)
        pieces = pieces[np.linspace(0, len(pieces) - 1, keep).round().astype(int)]
    return pieces
