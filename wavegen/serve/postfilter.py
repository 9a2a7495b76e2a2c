"""``wavegen serve --postfilter G``: the station's written audio through render's pitch postfilter
(:class:`~wavegen.render.postfilter.Postfilter`, one stream), so listeners hear, and the archive holds, what
``wavegen render --postfilter G`` writes for the same model, seed and temperature.

Only the audio handed on is filtered: the engine, the guard and --pitch-sync's draws hear the model's own audio, as
in render. Its state (the model's last samples and the position) is taken once a window is handed on, and goes
where the engine's goes: the station's window-start state, which a stop snapshots, and every archive snapshot, as
entries ``postfilter.<key>`` beside the engine's (render's snapshot keeps them under the same prefix,
:data:`~wavegen.render.shard.POST_PREFIX`); the engines take only their own entries.
"""

from __future__ import annotations

import numpy as np

from wavegen.audio import float_to_int16
from wavegen.render.postfilter import Postfilter
from wavegen.render.shard import POST_PREFIX

KEYS = ("x", "pos")  # Postfilter.state_dict's entries


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


def post_state(post: Postfilter | None) -> dict[str, np.ndarray]:
    """``post``'s state as snapshot entries beside the engine's ({} where it is off)."""
    return {} if post is None else {POST_PREFIX + k: v for k, v in post.state_dict().items()}


def load_post_state(post: Postfilter | None, state: dict, position: int) -> str | None:
    """``post`` put at the state a snapshot's entries hold; None where done (or it is off), else what is wrong, as
    said after "is damaged (...)": an archive recorded with --postfilter keeps it in every snapshot, taken where
    the snapshot's ``position`` is (samples archived; render's snapshots are held to the same)."""
    if post is None:
        return None
    entries = {k[len(POST_PREFIX):]: v for k, v in state.items() if k.startswith(POST_PREFIX)}
    if set(entries) != set(KEYS):
        return "it holds no --postfilter state"
    if np.shape(entries["x"]) != post.x.shape or np.shape(entries["pos"]) != ():
        return "its --postfilter state is not one stream's"
    if int(entries["pos"]) != position:
        return f"its --postfilter state is at sample {int(entries['pos'])}, the snapshot at {position}"
    post.load_state_dict(entries)
    return None
