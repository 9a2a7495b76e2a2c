"""``wavegen serve --pitch-sync RHO``: the station's draws through render's pitch-synchronous copula
(:class:`~wavegen.render.pitchsync.PitchSync`, one stream), so a stream plays what ``wavegen render --pitch-sync
RHO`` renders for the same model, seed and temperature.

Its state goes where the engine's goes: the station's window-start state, which a stop snapshots, and every archive
snapshot, as entries ``pitch_sync.<key>`` beside the engine's (render's snapshot keeps them under the same prefix,
:data:`~wavegen.render.shard.PITCH_PREFIX`); the engines take only their own entries. A guard redraw rewinds it as
render's does (:meth:`PitchSync.begin` at each draw of a window).
"""

from __future__ import annotations

import numpy as np

from wavegen.render.pitchsync import PitchSync
from wavegen.render.shard import PITCH_PREFIX


def pitch_sync(rho: float, to_audio) -> PitchSync | None:
    """The station's one stream's state for ``--pitch-sync rho``; None at 0 (the draws as drawn)."""
    return PitchSync(rho, 1, to_audio) if rho else None


def pitched_codes(engine, pitch: PitchSync, draw, start: int, n: int, temperature) -> np.ndarray:
    """codes [n] for positions start.. (where ``pitch`` stands): ``draw(start, m)`` (the uniforms [1, m]) through
    ``pitch``, the engine called once per block of the lag estimate at most (as render's Generator calls it)."""
    codes = np.empty(n, dtype=np.int64)
    i = 0
    while i < n:
        made = pitch.generate(engine, draw, start + i, n - i, temperature)[0]
        codes[i:i + len(made)] = made
        i += len(made)
    return codes


def pitch_state(pitch: PitchSync | None) -> dict[str, np.ndarray]:
    """``pitch``'s state as snapshot entries beside the engine's ({} where it is off)."""
    return {} if pitch is None else {PITCH_PREFIX + k: v for k, v in pitch.state_dict().items()}


def load_pitch_state(pitch: PitchSync | None, state: dict) -> str | None:
    """``pitch`` put at the state a snapshot's entries hold; None where done (or it is off), else what is wrong,
    as said after "is damaged (...)": an archive recorded with --pitch-sync keeps it in every snapshot."""
    if pitch is None:
        return None
    entries = {k[len(PITCH_PREFIX):]: v for k, v in state.items() if k.startswith(PITCH_PREFIX)}
    if set(entries) != set(PitchSync.KEYS):
        return "it holds no --pitch-sync state"
    now = pitch.state_dict()
    if any(np.shape(entries[k]) != np.shape(now[k]) for k in PitchSync.KEYS):
        return "its --pitch-sync state is not one stream's"
    pitch.load_state_dict(entries)
    return None
