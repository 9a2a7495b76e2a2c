"""SampleRNN engine of the ``cuda`` backend: a persistent numba-cuda kernel for a few streams,
tensor-core matmuls and fused Triton kernels replayed from a CUDA graph for many.

Both paths share the engine's state, kept on the device as torch tensors:

- ``history [B, F0]`` int64: the last top-frame of codes, oldest first;
- ``hbuf [2, K, n_rnn, B, dim]`` float32: every RNN layer's h, double-buffered per tier (tier
  k's step s reads slot ``s % 2`` and writes the other, so at position t its h is in slot
  ``ceil(t / F_k) % 2``); ``cbuf [K, n_rnn, B, dim]`` the LSTM cells;
- ``condbuf``: tier k's conditioning output ``[B, ratio_k, dim]`` at ``cond_off[k]``, and
  ``pbuf``: tier k's (k >= 1) input projections of it, ``[B, ratio_{k-1}, G*dim]`` at
  ``p_off[k]``, hoisted out of the recurrent step as in the numba engine;
- ``label_proj [B, G*dim]``: the top tier's constant label input through its first w_ih.

The state_dict uses the reference names and shapes (``hidden{k} [S, n_rnn, B, dim]``,
``cond{k}``, ...), so a state moves between backends; loading one recomputes the projections
with the path's own arithmetic, so a loaded engine continues bit for bit.

- ``path="small"`` (:mod:`.samplernn_small`): one launch per call runs every sample; weights
  in shared memory where they fit; codes drawn on the GPU. float32 arithmetic on the weights
  rounded to the precision.
- ``path="large"`` (:mod:`.samplernn_large`): bf16/fp16 tensor-core matmuls with float32
  accumulation (IEEE float32 matmuls at precision fp32); per sample two fused Triton kernels
  (MLP, then output layer and sampling) plus a fused gate kernel per RNN layer when a tier is
  due; on a GPU, sampling replays a CUDA graph of one top frame.

The path follows :func:`wavegen.generate.cuda_batch_path` by stream count unless given (and
is large where the streams' activations do not fit the persistent kernel's shared memory). Under
numba-cuda's simulator / Triton's interpreter (tests) the engine also runs with ``device="cpu"``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from wavegen.engine import EngineError
from wavegen.kernels.cuda.engine import CudaEngine
from wavegen.kernels.packing import (SAMPLERNN_STREAM_AXES, as_numpy, check_state, pack_samplernn, round_spec,
                                     samplernn_label_projection, samplernn_state_layout)

logger = logging.getLogger(__name__)


class CudaSampleRNNEngine(CudaEngine):
    """The cuda backend's SampleRNN engine. Options: ``path`` ("small" | "large"; default by stream
    count); small path: ``blocks``, ``threads``, ``smem_bytes`` (see
    :class:`~wavegen.kernels.cuda.samplernn_small.PersistentSampleRNN`); large path:
    ``block_streams`` (streams per Triton program), ``graph`` (replay CUDA graphs; default on a GPU)."""

    family = "samplernn"
    options = ("path", "blocks", "threads", "smem_bytes", "block_streams", "graph")
    _stream_axes = SAMPLERNN_STREAM_AXES

    def __init__(self, spec: dict, streams: int, device="cuda", precision: str = "fp32", path: str | None = None,
                 blocks: int | None = None, threads: int | None = None, smem_bytes: int | None = None,
                 block_streams: int | None = None, graph: bool | None = None):
        super().__init__(spec, streams, device, precision, path)
        self.rounded = round_spec(spec, precision)
        self.packed = pack_samplernn(self.rounded, "fp32")
        p, B, dev = self.packed, self.streams, self.device
        self.frame_sizes = [int(f) for f in p["tier_int"][:, 0]]
        self.ratios = [int(r) for r in p["tier_int"][:, 1]]
        K, L, dim, G = len(self.frame_sizes), p["n_layers"], p["dim"], p["gates"]
        self.lstm = bool(p["lstm"])
        self.h0 = torch.from_numpy(np.stack([as_numpy(t["h0"]).astype(np.float32) for t in spec["tiers"]]))
        self.cond_off = np.cumsum([0] + [B * r * dim for r in self.ratios]).astype(np.int64)
        self.p_off = np.zeros(K, np.int64)
        size = 0
        for k in range(1, K):
            self.p_off[k] = size
            size += B * self.ratios[k - 1] * G * dim
        f32 = dict(dtype=torch.float32, device=dev)
        self.history = torch.zeros((B, self.frame_sizes[0]), dtype=torch.int64, device=dev)
        self.hbuf = torch.zeros((2, K, L, B, dim), **f32)
        self.cbuf = torch.zeros((K, L, B, dim) if self.lstm else (1,), **f32)
        self.condbuf = torch.zeros(int(self.cond_off[-1]), **f32)
        self.pbuf = torch.zeros(max(size, 1), **f32)
        self.cond_off_dev = torch.from_numpy(self.cond_off).to(dev)
        self.p_off_dev = torch.from_numpy(self.p_off).to(dev)
        self.label_proj = torch.zeros((B, G * dim) if self.labels else (1, 1), **f32)
        self.given = {"blocks": blocks, "threads": threads, "smem_bytes": smem_bytes, "block_streams": block_streams,
                      "graph": graph}
        self._refuse_other_paths_options(self.path)
        if self.path == "small":
            from wavegen.kernels.cuda.samplernn_small import PersistentSampleRNN, SmallPathDoesNotFit

            try:
                self.impl = PersistentSampleRNN(self, blocks=blocks, threads=threads, smem_bytes=smem_bytes)
            except SmallPathDoesNotFit as err:
                if path is not None:
                    raise
                logger.info("%s: taking the large-batch path", err)
                self.path = "large"
        if self.path == "large":
            from wavegen.kernels.cuda.samplernn_large import FusedSampleRNN

            self.impl = FusedSampleRNN(self, block_streams=block_streams, graph=graph)
        self.reset(label_weights=self.default_label_weights())

    PATH_OPTIONS = {"small": ("blocks", "threads", "smem_bytes"), "large": ("block_streams", "graph")}

    def _check_small_fit(self, streams: int) -> None:
        from wavegen.kernels.cuda.samplernn_small import SmallPathDoesNotFit, small_path_fit

        try:
            small_path_fit(self.packed, streams, self.device, self.given["blocks"], self.given["threads"],
                           self.given["smem_bytes"])
        except SmallPathDoesNotFit:
            if self.path_given is not None:
                raise  # (without path=, the engine takes the large path instead, as its constructor does)

    # ----- state -----

    def _slot(self, k: int, t: int | None = None) -> int:
        """The hbuf slot holding tier k's h at position t (default: now)."""
        t = self.t if t is None else t
        return (-(-t // self.frame_sizes[k])) % 2

    def reset(self, prime_codes=None, label_weights=None) -> None:
        blend = self.check_label_weights(label_weights)
        self.t = 0
        self.history.fill_(self.silence)
        h0 = self.h0.to(self.device)  # [K, S, L, dim]
        self.hbuf.copy_(h0[None, :, 0, :, None, :].expand_as(self.hbuf))
        if self.lstm:
            self.cbuf.copy_(h0[:, 1, :, None, :].expand_as(self.cbuf))
        self.condbuf.zero_()
        self.pbuf.zero_()
        self._set_label_blend(blend)
        if prime_codes is not None:
            self.teacher_force(prime_codes)

    def _set_label_blend(self, blend) -> None:
        if blend is None:
            self.label_blend = None
            return
        blend = np.asarray(blend, np.float32)
        self.label_blend = torch.from_numpy(blend.copy()).to(self.device)
        self.label_proj.copy_(torch.from_numpy(samplernn_label_projection(self.rounded, blend)))

    def _cond(self, k: int) -> torch.Tensor:
        """Tier k's conditioning output (the reference's cond{k+1}): a view [B, ratio_k, dim]."""
        lo, hi = int(self.cond_off[k]), int(self.cond_off[k + 1])
        return self.condbuf[lo:hi].view(self.streams, self.ratios[k], self.packed["dim"])

    def _proj(self, k: int) -> torch.Tensor:
        """Tier k's (k >= 1) input projections: a view [B, ratio_{k-1}, G*dim]."""
        gd = self.packed["gates"] * self.packed["dim"]
        lo = int(self.p_off[k])
        return self.pbuf[lo: lo + self.streams * self.ratios[k - 1] * gd].view(self.streams, self.ratios[k - 1], gd)

    def _live_state(self) -> dict:
        live = {"history": (self.history, 0), "hbuf": (self.hbuf, 3)}
        if self.lstm:
            live["cbuf"] = (self.cbuf, 2)
        for k in range(len(self.frame_sizes)):
            live[f"cond{k + 1}"] = (self._cond(k), 0)
            if k > 0:
                live[f"proj{k}"] = (self._proj(k), 0)
        if self.label_blend is not None:
            live["label_weights"] = (self.label_blend, 0)
            live["label_proj"] = (self.label_proj, 0)
        return live

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"t": np.array(self.t, dtype=np.int64), "history": self.history.cpu().numpy().copy()}
        for k in range(len(self.frame_sizes)):
            h = self.hbuf[self._slot(k), k]
            state[f"hidden{k}"] = torch.stack([h, self.cbuf[k]] if self.lstm else [h]).cpu().numpy().copy()
            state[f"cond{k + 1}"] = self._cond(k).cpu().numpy().copy()
        if self.label_blend is not None:
            state["label_weights"] = self.label_blend.cpu().numpy().copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        check_state(state, samplernn_state_layout(self.spec, self.streams))
        self.t = int(state["t"])
        self.history.copy_(torch.from_numpy(np.asarray(state["history"], np.int64)))
        for k in range(len(self.frame_sizes)):
            hidden = torch.from_numpy(np.asarray(state[f"hidden{k}"], np.float32)).to(self.device)
            self.hbuf[self._slot(k), k] = hidden[0]
            if self.lstm:
                self.cbuf[k] = hidden[1]
            self._cond(k).copy_(torch.from_numpy(np.asarray(state[f"cond{k + 1}"], np.float32)))
        if "label_weights" in state:
            self._set_label_blend(np.asarray(state["label_weights"], np.float32))
        self.impl.hoist(self.t)
