"""A pitch postfilter on what render writes (``wavegen render --postfilter G``): each written sample is averaged with
the model's sample one pitch period before it, y[n] = (x[n] + G x[n-P]) / (1 + G), which deepens the valleys between
a pitched stream's partials (the long-term postfilter of speech codecs; docs/DEMO.md measures it on the demo).

P is the stream's pitch period as --pitch-sync finds it (:func:`wavegen.render.pitchsync.best_lag` over the model's
last WINDOW samples at each block of BLOCK samples whose start is a multiple of BLOCK); a block without a pitch (or
before WINDOW samples exist) is written as the model made it. The model never hears the filter: its history, the
guard's verdicts and --pitch-sync's draws are all of its own audio; only the written audio is filtered. Each written
sample depends on the model's audio alone, so a render chunked, stopped or resumed writes the same files: the
filter's state (the model's last WINDOW + BLOCK samples per stream) is saved with each snapshot.
"""

from __future__ import annotations

import numpy as np

from wavegen.render.pitchsync import BLOCK, LAG_HI, WINDOW, best_lag

HISTORY = WINDOW + BLOCK  # the model's audio kept before the next sample: a block begun before it needs WINDOW more
assert HISTORY >= LAG_HI + BLOCK


class Postfilter:
    """One process's streams' postfilter at position ``pos`` (samples written per stream): :meth:`filtered` takes
    the model's audio of the next samples and returns the audio to write."""

    def __init__(self, g: float, streams: int):
        self.g = float(g)
        self.x = np.zeros((streams, HISTORY), dtype=np.float32)  # the model's audio at pos-HISTORY..pos-1
        self.pos = 0

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"x": self.x.copy(), "pos": np.array(self.pos, dtype=np.int64)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        x = np.asarray(state["x"], dtype=np.float32)
        if x.shape != self.x.shape:
            raise ValueError(f"postfilter state of shape {x.shape}, expected {self.x.shape}")
        self.x, self.pos = x.copy(), int(state["pos"])

    def filtered(self, audio: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The model's audio [B, n] float32 at positions pos.. → (the audio to write there [B, n] float32, the state
        after it). The state is not taken here: :meth:`load_state_dict` takes it once the audio is written."""
        n = audio.shape[1]
        x = np.concatenate([self.x, audio.astype(np.float32, copy=False)], axis=1)
        base = self.pos - HISTORY  # the position of x[:, 0]
        y = x[:, HISTORY:].copy()
        g, scale = np.float32(self.g), np.float32(1.0 / (1.0 + self.g))
        for start in range(self.pos - self.pos % BLOCK, self.pos + n, BLOCK):
            if start < WINDOW:
                continue
            lag, on = best_lag(x[:, start - WINDOW - base:start - base])
            lo, hi = max(start, self.pos) - base, min(start + BLOCK, self.pos + n) - base
            for b in np.flatnonzero(on):
                p = int(lag[b])
                y[b, lo - HISTORY:hi - HISTORY] = (x[b, lo:hi] + g * x[b, lo - p:hi - p]) * scale
        return y, {"x": x[:, -HISTORY:].copy(), "pos": np.array(self.pos + n, dtype=np.int64)}
