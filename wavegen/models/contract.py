"""What the rest of wavegen uses of a model: the contract every family (SampleRNN, WaveNet) keeps.

The trainer, ``evaluate``, render, bench and info know a model only through :class:`Model`.
A model knows nothing of files, batches or the trainer: batching is chosen in
:mod:`wavegen.data` from ``family``, and the state a recurrent model carries from one window
of a stream to the next is handed back to the caller, who keeps it::

    loss, state = model(batch, state)            # training: TBPTT windows, state carried
    nll, state = model.sequence_nll(codes, labels, state)   # evaluation, state carried

A carried state is a :data:`State`: named tensors, each with the stream dimension at index 1
(``[layers, B, dim]`` for SampleRNN's hidden states; WaveNet carries nothing, ``{}``). That
layout is all the trainer relies on: it saves the state in checkpoints and regathers it over
the global batch when the number of processes changes, without knowing what it holds.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

State = dict[str, torch.Tensor]  # named tensors, streams at dim 1; {} when nothing is carried
MAX_LAYERS = 4096  # the most layers a config may stack (refused before a model of them is built)


@runtime_checkable
class ModelConfig(Protocol):
    """A family's config dataclass: the fields every consumer reads, and its validation."""

    q_levels: int  # categorical output size
    quantization: str  # "linear" | "mu-law": how int16 audio becomes codes
    labels: list[str]  # global conditioning labels ([] for an unconditioned model)

    def validate(self, train=None) -> None:
        """Raise ConfigError naming a value that cannot work (``train``: a TrainConfig to check too)."""


@runtime_checkable
class Model(Protocol):
    """An ``nn.Module`` (parameters, state_dict, train/eval, to) with these members.

    Used by: the trainer and ``wavegen.evaluate`` (``family``, ``config``, ``context_samples``,
    ``forward``, ``sequence_nll``), render and serve (``inference_spec``, ``context_samples``
    for primes), bench (``inference_spec``, ``forward`` through the trainer's step), info
    (``describe``, ``receptive_field``, ``config``).
    """

    family: str  # "samplernn" | "wavenet": names the batching (wavegen.data) and the engines
    config: ModelConfig

    @property
    def context_samples(self) -> int:
        """Codes in front of every window that are input only (SampleRNN: its top frame;
        WaveNet: its receptive field)."""

    @property
    def receptive_field(self) -> int | None:
        """Codes one prediction sees; None for a recurrent model (unbounded)."""

    def forward(self, batch: dict, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Training loss on one window of every stream → ``(loss, state)``.

        batch: ``codes [B, C + L]`` int64 (C = context_samples), ``reset [B]`` bool (the stream
        starts a new chunk: its carried state is dropped), ``labels [B]`` int64 (conditioned
        models). ``loss``: mean NLL in nats per predicted sample, 0-d; ``state``: what to hand
        back with the stream's next window (detached; ``{}`` when nothing is carried).
        """

    def sequence_nll(self, codes: torch.Tensor, labels: torch.Tensor | None = None,
                     state: State | None = None) -> tuple[torch.Tensor, State]:
        """codes [B, C + L] int64 → (NLL in nats [B, L] of codes[:, C:], state after them).

        ``state`` None starts every stream from the model's initial state.
        """

    def inference_spec(self) -> dict:
        """Plain fp32 CPU tensors in the canonical layout every engine is built from."""

    def describe(self) -> dict:
        """The family's own facts for ``wavegen info`` (tiers, layers, channel widths ...)."""
