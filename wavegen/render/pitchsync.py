"""Pitch-synchronous draws (``wavegen render --pitch-sync RHO``): each stream's uniforms repeat with the
stream's own pitch period, which keeps a pitched render on its pitch (docs/DEMO.md's last section measures it).

The draws pass through a Gaussian copula: z_t = rho z_{t-P} + sqrt(1 - rho^2) e_t and u_t = Phi(z_t), where
e_t = Phi^-1 of render's own uniform at (seed, stream, position, attempt). z_{t-P} ~ N(0, 1) is independent of
the fresh e_t, so every u_t is still exactly uniform: only its dependence on the draw a period back changes.
P is estimated again at every block of :data:`BLOCK` samples whose start is a multiple of BLOCK (so the audio
does not depend on how the render is chunked), from the stream's decoded audio: the highest normalized
autocorrelation over the last :data:`WINDOW` samples, lags :data:`LAG_LO`..:data:`LAG_HI`, past the first lag
where it goes negative. Where that peak is at most :data:`THRESHOLD` (or there is none, or fewer than WINDOW
samples exist yet), the block takes render's raw uniforms bit for bit.

:class:`PitchSync` holds one process's streams' state (z and audio history, the current lag and whether it is
used); :class:`~wavegen.render.shard.Generator` runs it, and :class:`~wavegen.render.shard.ShardRender` saves it
with each snapshot and restores it on resume.
"""

from __future__ import annotations

import math

import numpy as np
import torch

BLOCK = 160  # samples between lag estimates; blocks start at multiples of it
WINDOW = 1024  # audio the lag is estimated from
LAG_LO, LAG_HI = 16, 256  # the lags searched, in samples
THRESHOLD = 0.5  # a peak at or below this: no pitch, the raw uniforms
HISTORY = WINDOW  # z kept per stream (>= LAG_HI)
_HALF_CELL = 2.0 ** -25  # render's uniforms are multiples of 2^-24: their cells' midpoints are never 0 or 1
_TOP = np.float32(1 - 2.0 ** -24)  # the largest uniform render draws


def best_lag(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Audio x [B, WINDOW] → (lag [B] int64, found [B] bool): each row's normalized-autocorrelation peak
    (lags LAG_LO..LAG_HI, past the first lag where it is negative), found where it is above THRESHOLD."""
    x = x.astype(np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    n = x.shape[1]
    spec = np.fft.rfft(x, 2 * n, axis=1)
    lags = np.arange(1, LAG_HI + 1)
    acf = np.fft.irfft(np.abs(spec) ** 2, 2 * n, axis=1)[:, lags]
    energy = np.cumsum(x ** 2, axis=1)
    total = energy[:, -1:]
    head, tail = energy[:, n - 1 - lags], total - energy[:, lags - 1]  # the overlapping parts' energies
    r = acf / np.sqrt(np.maximum(head * tail, 1e-20))  # r[:, k]: lag k + 1
    negative = r < 0
    has_dip = negative.any(axis=1)
    lo = np.maximum(np.argmax(negative, axis=1), LAG_LO - 1)
    searched = np.where(np.arange(LAG_HI) >= lo[:, None], r, -np.inf)
    k = np.argmax(searched, axis=1)
    peak = r[np.arange(len(r)), k]
    found = has_dip & (total[:, 0] >= 1e-8 * n) & (peak > THRESHOLD)
    return np.where(found, k + 1, 0).astype(np.int64), found


def pitch_draws(raw: np.ndarray, z_before: np.ndarray, lag: np.ndarray, on: np.ndarray,
                rho: float) -> tuple[np.ndarray, np.ndarray]:
    """Render's uniforms raw [B, m] float32 → (u [B, m] float32, z [B, m] float64) given the z before them
    (z_before [B, >= LAG_HI]) and each row's lag and on/off. A row off takes raw as it is (its z is Phi^-1 of
    raw, so a later block can lean on it). The recursion runs in slices of P: z_{t-P} of a slice lies before it."""
    e = torch.special.ndtri(torch.from_numpy(raw.astype(np.float64) + _HALF_CELL)).numpy()
    m, h = raw.shape[1], z_before.shape[1]
    z = np.concatenate([z_before, e], axis=1)
    c = math.sqrt(1 - rho * rho)
    for b in np.flatnonzero(on):
        p = int(lag[b])
        for k in range(0, m, p):
            j = min(k + p, m)
            z[b, h + k:h + j] = rho * z[b, h + k - p:h + j - p] + c * e[b, k:j]
    z = z[:, h:]
    u = np.minimum(torch.special.ndtr(torch.from_numpy(z)).numpy().astype(np.float32), _TOP)
    u[~on] = raw[~on]  # bit for bit
    return u, z


class PitchSync:
    """One process's streams' pitch-synchronous draw state, at position ``pos`` (samples per stream made).

    The guard redraws a window from its start and a stop rewinds to it: :meth:`begin` keeps the state at a
    window's start, and a draw from that start again (or :meth:`back_to` it) puts the state back there.
    """

    KEYS = ("z", "x", "pos", "lag", "on")

    def __init__(self, rho: float, streams: int, to_audio):
        self.rho, self.to_audio = float(rho), to_audio
        self.z = np.zeros((streams, HISTORY), dtype=np.float64)  # z at positions pos-HISTORY..pos-1
        self.x = np.zeros((streams, WINDOW), dtype=np.float32)  # the decoded audio, positions pos-WINDOW..pos-1
        self.pos = 0
        self.lag = np.zeros(streams, dtype=np.int64)
        self.on = np.zeros(streams, dtype=bool)
        self.kept: dict | None = None  # the state at the start of the window being made

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: np.array(getattr(self, k), copy=True) for k in self.KEYS}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for k in self.KEYS:
            value = np.array(state[k], copy=True)
            setattr(self, k, int(value) if k == "pos" else value)
        self.kept = None

    def begin(self, start: int) -> None:
        """A window's draws begin at ``start``: the state is kept there, or (a redraw of it) put back there."""
        if start == self.pos:
            self.kept = self.state_dict()
        else:
            self.back_to(start)

    def back_to(self, start: int) -> None:
        """The state at ``start``, the start of the window being made (a stop rewinds there)."""
        if start == self.pos:
            return
        if self.kept is None or int(self.kept["pos"]) != start:
            raise RuntimeError(f"pitch-sync state is at sample {self.pos}, cannot go back to {start}")
        self.load_state_dict(self.kept)
        self.kept = self.state_dict()

    def span(self, pos: int, most: int) -> int:
        """How many samples from ``pos`` (at most ``most``) one draw may cover: up to the next block's start."""
        return min(most, BLOCK - pos % BLOCK)

    def draws(self, raw: np.ndarray) -> np.ndarray:
        """Render's uniforms raw [B, m] at self.pos (within one block) → the uniforms the engine gets."""
        if self.pos % BLOCK == 0:
            if self.pos >= WINDOW:
                self.lag, self.on = best_lag(self.x)
            else:
                self.on[:] = False
        u, z = pitch_draws(raw, self.z, self.lag, self.on, self.rho)
        self.z = np.concatenate([self.z[:, z.shape[1]:], z], axis=1)
        return u

    def generate(self, engine, draw, pos: int, most: int, temperatures) -> np.ndarray:
        """codes [B, m] from ``engine`` for positions pos.. (where this state stands; m = :meth:`span`, at most
        ``most``): ``draw(pos, m)`` (render's uniforms [B, m]) through these draws, the codes heard. The one way
        render's Generator and serve's station step an engine with pitch-synchronous draws."""
        m = self.span(pos, most)
        codes = engine.generate(self.draws(draw(pos, m)), temperatures)
        self.heard(codes)
        return codes

    def heard(self, codes: np.ndarray) -> None:
        """The codes [B, m] the engine made of the last draws: their audio joins the history."""
        m = codes.shape[1]
        self.x = np.concatenate([self.x[:, m:], self.to_audio(codes).astype(np.float32)], axis=1)
        self.pos += m
