"""``wavegen serve --pitch-sync RHO``: the station's draws through render's pitch-synchronous copula
(:class:`~wavegen.render.pitchsync.PitchSync`, one stream), so a stream plays what ``wavegen render --pitch-sync
RHO`` renders for the same model, seed and temperature.

Its state goes where the engine's goes: the station's window-start state, which a stop snapshots, and every archive
snapshot, as entries ``pitch_sync.<key>`` beside the engine's (render's snapshot keeps them under the same prefix:
:func:`~wavegen.render.shard.kept_entries`; a restart loads them, :func:`wavegen.serve.archive_resume.kept_misfit`);
the engines take only their own entries. A guard redraw rewinds it as
render's does (:meth:`PitchSync.begin` at each draw of a window).
"""

from __future__ import annotations

import numpy as np

from wavegen.render.pitchsync import PitchSync


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

