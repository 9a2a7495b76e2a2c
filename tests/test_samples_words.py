"""The lines of training's samples count with their nouns agreeing (progress.counted): "1 sample x 2.0 s",
"cleared the samples of 1 step" (were "1 sample(s)", "1 step(s)")."""

import logging
from types import SimpleNamespace

import pytest

from wavegen.samples import TrainingSamples


def record(streams: int) -> dict:
    return {"streams": [{"periodic_fraction": 0.5, "flatness": 0.1}] * streams, "seconds": 2.0, "backend": "numba"}


@pytest.mark.parametrize("streams, said", [(1, "step 4: 1 sample x 2.0 s in 0.5 s (numba)"),
                                           (2, "step 4: 2 samples x 2.0 s in 0.5 s (numba)")])
def test_a_step_s_samples_are_counted_with_their_noun_agreeing(tmp_path, caplog, streams, said):
    with caplog.at_level(logging.INFO, logger="wavegen"):
        TrainingSamples._report(SimpleNamespace(album=None), 4, tmp_path, record(streams), 0.5)
    assert caplog.messages[0].startswith(said), caplog.messages
