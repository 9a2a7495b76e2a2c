"""Spikes: a few samples of a file far louder than all the rest (damaged float audio, one 1e30 among music),
found so prep can clip them to the rest's peak rather than scale the whole file down (wavegen.prep_decode)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

SPIKE_DB = 40.0  # a sample this far above every other (and above SPIKE_FLOOR) is damage, not sound
SPIKE_FLOOR = 16.0  # +24 dBFS: above it a sample is no plausible audio (a click at 1.5 is sound, scaled down)
SPIKE_MIN_DB = 20.0  # in a mix of many channels the ratio falls no lower: sound's own peaks are not 20 dB apart


def spike_db(channels: int) -> float:
    """How far a spike in one of `channels` channels stands above every other sample of their mono mix at least:
    SPIKE_DB less 20 log10(channels) (its share of the mix), never under SPIKE_MIN_DB (with 100 channels or more
    that would be 0 dB or less, and the mix's own loudest sound would count as spikes)."""
    return max(SPIKE_DB - 20.0 * float(np.log10(channels)), SPIKE_MIN_DB)


class Spikes(NamedTuple):
    """A few samples far louder than all the rest of a file (damaged float audio: one 1e30 among music):
    count, first (the index of the first), value (its sample) and rest_peak (the loudest of the others), in the
    audio find_spikes was given: a mix of `channels` channels, its floor and above_db those it was judged by there."""

    count: int
    first: int
    value: float
    rest_peak: float
    channels: int = 1

    @property
    def floor(self) -> float:
        """The level a spike is above: SPIKE_FLOOR, in a mix of n channels 1/n of it (one channel's spike there)."""
        return SPIKE_FLOOR / self.channels

    @property
    def above_db(self) -> float:
        """How far a spike is above every other sample at least: spike_db(channels)."""
        return spike_db(self.channels)


def find_spikes(x: np.ndarray, channels: int = 1) -> Spikes | None:
    """The samples of mono x [T] above SPIKE_FLOOR (+24 dBFS) and SPIKE_DB or more above every other sample (at
    most one in a thousand of them, 16 in a short file), under which the rest counts as silence, or is scaled far
    down; None where there are none. Over a rest all zero they hide nothing (rest_peak 0), yet are what a skipped
    file holds, named in its reason: "only silence and a spike of 1e+30 at 0.500 s". Sound is never that far above
    itself, nor that loud: a real peak over full scale (hot float audio, a digital click at 1.5 over quiet noise)
    is scaled down with the rest, not taken for a spike. channels: x is the mean of that many channels, one of
    which holds a sample above SPIKE_FLOOR: a spike in one channel is 1/channels as high in the mix, floor and
    ratio lowered so (a +26 dBFS spike in one of two channels was scaled as a hot file), the ratio to no less than
    SPIKE_MIN_DB (spike_db)."""
    size = len(x)
    if size < 2:
        return None
    level = np.abs(x)
    m = min(size, max(16, size // 1000))
    top = np.sort(np.partition(level, size - m)[size - m:].astype(np.float64))[::-1]  # the m loudest, loudest first
    floor, ratio = SPIKE_FLOOR / channels, 10.0 ** (spike_db(channels) / 20.0)  # Spikes.floor and .above_db
    gaps = [j for j in range(1, m) if top[j - 1] > floor and top[j - 1] >= ratio * top[j]]
    if not gaps:
        return None
    rest_peak = float(top[gaps[-1]])  # the widest set that leaves sound under it
    loud = np.flatnonzero(level > rest_peak)
    return Spikes(len(loud), int(loud[0]), float(x[loud[0]]), rest_peak, channels)
