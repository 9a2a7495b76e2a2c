"""What eval says it scored counts with its nouns agreeing: "1 segment, from its start", "the first 1 sample",
"2 segments, each from its start" (were "1 segment(s), each from its start", "the first 1 samples")."""

import numpy as np

from wavegen.evaluate import _scored

CARRIED = "from its start (silence before it, the model's state carried through it)"


def test_one_segment_is_said_as_one_and_two_as_two():
    assert _scored(np.array([[0, 5, 0]]), None) == f"every sample of 1 segment, {CARRIED}"
    assert _scored(np.array([[0, 5, 0], [5, 3, 0]]), None) == f"every sample of 2 segments, each {CARRIED}"


def test_the_first_samples_scored_agree_with_their_count():
    assert _scored(np.array([[0, 1, 0], [5, 1, 0]]), 0.001) == \
        f"at most 0.001 s: the first 1 sample (or all) of 2 segments, each {CARRIED}"
    assert _scored(np.array([[0, 2, 0]]), 0.001) == \
        f"at most 0.001 s: the first 2 samples (or all) of 1 segment, {CARRIED}"
