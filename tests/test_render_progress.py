"""The render's progress as a log shows it (output not a terminal): the audio counted is what is kept
(a stop's rewound window taken back), and the guard's redraws are shown beside the x real time,
whose wall time includes them."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from render_helpers import MOSTLY_SILENT, SR, make_model, one_hot_bias, settings
from wavegen.render import load_snapshot, render
from wavegen.render import shard as render_shard
from wavegen.progress import plain_seconds

WIDTH = 8  # guard window, samples: a mostly silent i.i.d. model fails many of them


@pytest.fixture(scope="module")
def silent(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "iid", output_bias=one_hot_bias(MOSTLY_SILENT))


def guarded(seconds: float):
    return settings(seconds, guard=True, guard_seconds=WIDTH / SR, guard_attempts=2, guard_album=False,
                    block_seconds=0.05, snapshot_seconds=0.05)


def progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("rendered: ")]


def test_a_stopped_render_shows_what_it_kept_and_the_seconds_the_guard_redrew(silent, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="wavegen")
    real, calls = render_shard.Generator.generate, []

    def generate(self, start, n, attempts, count=True):
        calls.append(count)
        if calls.count(True) == 40:  # in the 40th window, its first draw: as a Ctrl-C there would
            self.stop.request()
        return real(self, start, n, attempts, count)

    monkeypatch.setattr(render_shard.Generator, "generate", generate)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        render(silent, out, guarded(0.5), progress=True)
    kept = load_snapshot(out / ".state" / "rank0.npz")[1]
    assert kept == 39 * WIDTH  # the 40th window was rewound
    redrawn = calls[:-1].count(False) * WIDTH / SR  # the last draw was rewound with its window
    assert redrawn > 0
    last = progress_lines(caplog)[-1]
    assert last.startswith(f"rendered: {kept / SR:g}/0.5 s ({100 * kept / SR / 0.5:.0f}%)"), last
    assert re.search(rf", \d+\.\d\dx real time, {redrawn:.1f} s redrawn$", last), last
    monkeypatch.undo()
    caplog.clear()
    report = render(silent, out, guarded(0.5), progress=True)  # resumed: counted from what was kept
    last = progress_lines(caplog)[-1]
    assert last.startswith("rendered: 0.5/0.5 s (100%)") and " s redrawn" in last, last
    assert report["sessions"] == 2


class _Stopped(Exception):
    """Raised where the test has seen what it came for (the render's first line)."""


def test_a_long_render_s_lines_say_its_length_as_a_plain_number(silent, tmp_path, caplog, monkeypatch):
    """A --hours 300 render (1080000 s) said "rendering 1 stream(s) x 1.08e+06 s" (%g from a million seconds on),
    as its last line and "already complete" did: a plain number now, as the user typed it."""
    caplog.set_level(logging.INFO, logger="wavegen")

    def stop_here(*args, **kwargs):  # the line is said; nothing of the 300 hours rendered
        raise _Stopped

    monkeypatch.setattr(render_shard, "StreamWriters", stop_here)
    with pytest.raises(_Stopped):
        render(silent, tmp_path / "out", settings(1080000.0, format="flac"), progress=False)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rendering ")]
    assert said == [f"rendering 1 stream x 1080000 s at {SR} Hz with the torch engine (fp32)"]
    # the same helper says the last line's and "already complete"'s length
    assert [plain_seconds(s) for s in (1080000.0, 1080000.25, 0.5, 1 / 3, 12.0)] == \
        ["1080000", "1080000.25", "0.5", "0.333333", "12"]
