"""WaveNet engine of the ``cuda`` backend: a persistent numba-cuda kernel for a few streams, fused
Triton kernels on tensor cores for many.

Both paths share the engine's state, kept on the GPU as torch tensors and in the numba
engine's layout: ``prev [B]`` int64, ``rings [sum(dilations), B, R]`` float32 slot-major (slot
``ring_off[k] + t % d_k`` of layer k holds its input of step ``t - d_k``), and for labelled
models ``label_bias [B, L, 2R]`` (the blend of the layers' folded label biases). The state_dict
uses the reference names (``buffer{k} [B, d, R]``), so a state moves between backends.

- ``path="small"`` (:mod:`.wavenet_small`): one launch per call runs every sample; weights in
  shared memory; codes drawn on the GPU. Arithmetic in float32 on the weights rounded to the
  precision (fp16/bf16 change the weights, not the speed, on this path).
- ``path="large"`` (:mod:`.wavenet_large`): two fused Triton kernels per step (the layers; the
  output stack and the draw), each program taking a group of streams; matmuls on tensor cores
  (bf16/fp16 inputs, fp32 accumulation; 3xTF32 for precision fp32); sampling replayed from a
  CUDA graph of 64 steps.

The path follows :func:`wavegen.generate.cuda_batch_path` by stream count unless given.
Under numba-cuda's simulator (tests) the engine also runs with ``device="cpu"``.
"""

from __future__ import annotations

import numpy as np
import torch

from wavegen.engine import EngineError
from wavegen.kernels.cuda.engine import CudaEngine
from wavegen.kernels.packing import (WAVENET_STREAM_AXES, check_state, pack_wavenet, round_spec,
                                     wavenet_label_biases, wavenet_state_layout)


class CudaWaveNetEngine(CudaEngine):
    """The cuda backend's WaveNet engine. Options: ``path`` ("small" | "large"; default by stream
    count), ``threads`` (threads per block of the persistent kernel), ``head_blocks`` ((out1,
    out2) block counts of the persistent kernel), ``layers_per_block`` (layers one block of the
    persistent kernel runs; default 1), ``block_streams`` (streams per Triton program),
    ``graph`` (large path: replay sampling from CUDA graphs; default on a CUDA device)."""

    family = "wavenet"
    options = ("path", "threads", "head_blocks", "layers_per_block", "block_streams", "graph")
    _stream_axes = WAVENET_STREAM_AXES

    def __init__(self, spec: dict, streams: int, device="cuda", precision: str = "fp32", path: str | None = None,
                 threads: int | None = None, head_blocks=None, layers_per_block: int | None = None,
                 block_streams: int | None = None, graph: bool | None = None):
        super().__init__(spec, streams, device, precision, path)
        rounded = round_spec(spec, precision)
        self.packed = pack_wavenet(rounded, "fp32")
        self.dilations = [int(d) for d in self.packed["dil"]]
        self.label_biases = wavenet_label_biases(rounded)
        self._label_biases_dev = (None if self.label_biases is None
                                  else torch.from_numpy(self.label_biases).to(self.device))
        p, B = self.packed, self.streams
        self.prev = torch.full((B,), self.silence, dtype=torch.int64, device=self.device)
        self.rings = torch.zeros((int(p["dil"].sum()), B, p["R"]), dtype=torch.float32, device=self.device)
        n_labels = len(self.labels)
        self.label_bias = torch.zeros((B, len(self.dilations), 2 * p["R"]) if n_labels else (1, 1, 1),
                                      dtype=torch.float32, device=self.device)
        self.given = {"threads": threads, "head_blocks": head_blocks, "layers_per_block": layers_per_block,
                      "block_streams": block_streams, "graph": graph}
        self._refuse_other_paths_options(self.path)
        if self.path == "small":
            from wavegen.kernels.cuda.wavenet_small import PersistentWaveNet

            self.impl = PersistentWaveNet(self, threads=threads, head_blocks=head_blocks,
                                          layers_per_block=layers_per_block)
        else:
            from wavegen.kernels.cuda.wavenet_large import FusedWaveNet

            self.impl = FusedWaveNet(self, rounded, block_streams=block_streams, graph=graph)
        self.reset(label_weights=self.default_label_weights())

    PATH_OPTIONS = {"small": ("threads", "head_blocks", "layers_per_block"), "large": ("block_streams", "graph")}

    def _check_small_fit(self, streams: int) -> None:
        from wavegen.kernels.cuda.wavenet_small import small_path_fit

        small_path_fit(self.packed, streams, self.device, self.given["threads"], self.given["head_blocks"],
                       self.given["layers_per_block"])

    # ----- state -----

    def reset(self, prime_codes=None, label_weights=None) -> None:
        blend = self.check_label_weights(label_weights)
        self.t = 0
        self.prev.fill_(self.silence)
        self.rings.zero_()
        self._set_label_blend(blend)
        if prime_codes is not None:
            self.teacher_force(prime_codes)

    def _set_label_blend(self, blend) -> None:
        if blend is None:
            self.label_blend = None
            return
        blend = torch.as_tensor(np.asarray(blend, np.float32)).to(self.device)
        self.label_blend = blend.clone()
        # [B, L, 2R], summed in float32 like the reference's blend @ label_bias
        self.label_bias.copy_(torch.einsum("bn,lnc->blc", blend, self._label_biases_dev))

    def _live_state(self) -> dict:
        live = {"prev": (self.prev, 0), "rings": (self.rings, 1)}
        if self.label_blend is not None:
            live["label_weights"] = (self.label_blend, 0)
            live["label_bias"] = (self.label_bias, 0)
        return live

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"t": np.array(self.t, dtype=np.int64), "prev": self.prev.cpu().numpy().copy()}
        rings = self.rings.cpu().numpy()
        off = self.packed["ring_off"]
        for k, d in enumerate(self.dilations):
            state[f"buffer{k}"] = np.array(rings[off[k]:off[k] + d].transpose(1, 0, 2), order="C")
        if self.label_blend is not None:
            state["label_weights"] = self.label_blend.cpu().numpy().copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        check_state(state, wavenet_state_layout(self.spec, self.streams))
        off = self.packed["ring_off"]
        self.t = int(state["t"])
        self.prev.copy_(torch.from_numpy(np.asarray(state["prev"], np.int64).reshape(self.streams)))
        rings = np.empty(tuple(self.rings.shape), np.float32)
        for k, d in enumerate(self.dilations):
            rings[off[k]:off[k] + d] = np.asarray(state[f"buffer{k}"], np.float32).transpose(1, 0, 2)
        self.rings.copy_(torch.from_numpy(rings))
        if "label_weights" in state:
            self._set_label_blend(np.asarray(state["label_weights"], np.float32))
