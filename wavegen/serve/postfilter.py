"""``wavegen serve --postfilter G``: the station's written audio through render's pitch postfilter
(:class:`~wavegen.render.postfilter.Postfilter`, one stream), so listeners hear, and the archive holds, what
``wavegen render --postfilter G`` writes for the same model, seed and temperature.

Only the audio handed on is filtered: the engine, the guard and --pitch-sync's draws hear the model's own audio, as
in render. Its state (the model's last samples and the position) is taken once a window is handed on, and goes
where the engine's goes: the station's window-start state, which a stop snapshots, and every archive snapshot, as
entries ``postfilter.<key>`` beside the engine's (render's snapshot keeps them under the same prefix:
:func:`~wavegen.render.shard.kept_entries`; a restart loads them, :func:`wavegen.serve.archive_resume.kept_misfit`,
held to the snapshot's position); the engines take only their own entries.
"""

from __future__ import annotations

import numpy as np

from wavegen.audio import float_to_int16
from wavegen.render.postfilter import Postfilter


def postfilter(g: float) -> Postfilter | None:
    """The station's one stream's postfilter for ``--postfilter g``; None at 0 (the audio as the model made it)."""
    return Postfilter(g, 1) if g else None


def filtered_pcm(post: Postfilter | None, audio: np.ndarray) -> tuple[np.ndarray, dict | None]:
    """The model's audio [n] of the next window → (its int16 PCM to hand on, the postfilter's state after it, for
    :meth:`Postfilter.load_state_dict` once the window is handed on; None where it is off)."""
    if post is None:
        return float_to_int16(audio), None
    out, after = post.filtered(audio[None])
    return float_to_int16(out[0]), after

