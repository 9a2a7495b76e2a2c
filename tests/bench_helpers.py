"""What the bench tests share: an engine whose rows take no time."""

from __future__ import annotations

import numpy as np

from wavegen.engine import Engine


class Instant(Engine):
    """An engine that makes silence at once: a bench row of it takes no time."""

    def __init__(self, spec, streams, device="cpu", precision="fp32"):
        super().__init__(spec, streams, device, precision)

    def reset(self, prime_codes=None, label_weights=None):
        pass

    def generate(self, uniforms, temperature=1.0):
        return np.zeros(uniforms.shape, np.int64)
