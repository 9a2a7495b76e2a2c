"""The words of params_check's refusals where a count is said: the count and its noun agree."""

from __future__ import annotations

import pytest

from wavegen.render.params_check import check_params
from wavegen.render.settings import RenderStateError

numba = pytest.importorskip("numba")


@pytest.mark.parametrize("most, said", [(1, "numba runs at most 1 thread here"),
                                        (2, "numba runs at most 2 threads here")])
def test_a_thread_count_beyond_what_numba_runs_here_is_said_with_its_noun_agreeing(tmp_path, monkeypatch, most, said):
    """A render made with threads=4 resumed where numba runs at most ``most``: one thread was '1 threads'."""
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", most)
    with pytest.raises(RenderStateError) as caught:
        check_params({"threads": 4}, {"threads": most}, tmp_path)
    assert f"Pass --threads 4 to resume it ({said}: also set NUMBA_NUM_THREADS=4)" in str(caught.value), caught.value
