"""eval --plot's picture names the album it compared with: the split given (--split val draws the val split,
which it called "the album (test split)") and the label (--label)."""

from __future__ import annotations

import numpy as np
import pytest

from wavegen import plotting
from wavegen.analysis_features import FRAME_FEATURES

pytest.importorskip("matplotlib")
SR = 8000


def comparison(split: str, label: str | None) -> dict:
    """The parts of a compare_renders result plot_comparison draws (one feature's histogram)."""
    name = next(iter(FRAME_FEATURES))
    density = {s: [0.5, 0.5] for s in ("renders", "test", "train")}
    return {"histograms": {name: {"edges": [0.0, 1.0, 2.0], "density": density}},
            "distances": {"renders": {"frechet": 9.0}, "train": {"frechet": 3.0}},
            "sample_rate": SR, "split": split, "label": label}


@pytest.mark.parametrize("split, label, album", [
    ("test", None, "the album (test split)"),
    ("val", None, "the album (val split)"),
    ("val", "wesnoth", "the album (val split, label wesnoth)"),
])
def test_the_album_panel_names_the_split_and_label_compared_with(tmp_path, monkeypatch, split, label, album):
    titles, draw = [], plotting._spectrogram_panel

    def recorded(ax, y, sample_rate, title):
        titles.append(title)
        draw(ax, y, sample_rate, title)

    monkeypatch.setattr(plotting, "_spectrogram_panel", recorded)
    rng = np.random.default_rng(0)
    examples = {"renders": rng.uniform(-0.5, 0.5, SR).astype(np.float32),
                "test": (0.5 * np.sin(np.arange(SR) * 0.3)).astype(np.float32)}
    assert plotting.plot_comparison(comparison(split, label), tmp_path / "c.png", examples) == tmp_path / "c.png"
    assert titles == ["a render", album]
