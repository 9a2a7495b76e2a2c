"""What the cuda backend's two engines (SampleRNN, WaveNet) share: the class attributes, the
choice between the small- and large-batch paths, and running a path's implementation.

Each engine keeps its state on the device as torch tensors and hands the work to ``self.impl``
(the persistent numba-cuda kernel of the small path, or the fused Triton kernels of the large
one), which implements ``run_sample(t, uniforms [B, n] float32, temperatures [B], codes [B, n]
int64 out)`` and ``run_teacher_force(t, codes [B, n] int64, logits [B, n, Q] float32 out)``.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from wavegen.engine import Engine, EngineError, temperatures
from wavegen.kernels.cuda.common import simulated

PATHS = ("small", "large")


def runs_on_cpu() -> bool:
    """True under numba-cuda's simulator or Triton's interpreter (tests): the kernels run on the CPU."""
    return simulated() or os.environ.get("TRITON_INTERPRET") == "1"


class CudaEngine(Engine):
    """Base of the cuda backend's engines: subclasses build their state and ``self.impl``."""

    backend = "cuda"
    precisions = ("fp32", "fp16", "bf16")
    device_types = ("cuda",)

    def __init__(self, spec: dict, streams: int, device="cuda", precision: str = "fp32", path: str | None = None):
        if runs_on_cpu():
            self.device_types = ("cuda", "cpu")
        super().__init__(spec, streams, device, precision)
        from wavegen.generate import cuda_batch_path

        self.path_given = path
        self.path = path or cuda_batch_path(self.family, self.streams)
        if self.path not in PATHS:
            raise EngineError(f"path {path!r}: use one of {PATHS}")

    # the options of each path (subclasses); one given to an engine on the other path is refused
    PATH_OPTIONS: dict[str, tuple[str, ...]] = {"small": (), "large": ()}

    def _refuse_other_paths_options(self, path: str) -> None:
        """EngineError where an option of the other path is in ``self.given`` (the options as passed)."""
        other_path = "large" if path == "small" else "small"
        other = self.PATH_OPTIONS[other_path]
        if any(self.given.get(name) is not None for name in other):
            raise EngineError(f"{', '.join(other[:-1])} and {other[-1]} are options of path='{other_path}'")

    def check_streams(self, streams: int) -> None:
        """EngineError where this engine's model, precision and options could not run ``streams``
        streams (the path that count takes, that path's limits and options), found without building
        anything: what ``wavegen bench`` asks of every batch before it times any."""
        from wavegen.generate import cuda_batch_path

        path = self.path_given or cuda_batch_path(self.family, streams)
        self._refuse_other_paths_options(path)
        if path == "small":
            self._check_small_fit(streams)

    def _check_small_fit(self, streams: int) -> None:
        """EngineError where the small-batch path cannot take ``streams`` streams (subclasses)."""

    def generate(self, uniforms, temperature=1.0) -> np.ndarray:
        u = self._check_uniforms(uniforms)
        n = u.shape[1]
        codes = torch.empty((self.streams, n), dtype=torch.int64, device=self.device)
        if n:
            temps = torch.from_numpy(temperatures(temperature, self.streams)).to(self.device)
            self.impl.run_sample(self.t, torch.from_numpy(np.ascontiguousarray(u)).to(self.device), temps, codes)
            self.t += n
        return codes.cpu().numpy()

    def teacher_force(self, codes) -> np.ndarray:
        codes = self._check_codes(codes)
        n = codes.shape[1]
        logits = torch.empty((self.streams, n, self.q_levels), dtype=torch.float32, device=self.device)
        if n:
            self.impl.run_teacher_force(self.t, torch.from_numpy(codes).to(self.device), logits)
            self.t += n
        return logits.cpu().numpy()
