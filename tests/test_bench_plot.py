"""bench --plot: every point drawn in sight, the real-time line drawn, the legend within the picture.

With one batch size every point sits in the panel's middle column, where the legend (inside the panel, upper
right) hid one of them; the real-time "line" through one point drew nothing beside its legend entry.
"""

import pytest

pytest.importorskip("matplotlib")

from wavegen import plotting  # noqa: E402


def drawn(monkeypatch, batches, tmp_path):
    """speed_png's figure of a torch and a numba row at each of ``batches`` (the rates of a real tiny model's)."""
    figures, real = [], plotting.save_figure
    monkeypatch.setattr(plotting, "save_figure", lambda fig, path, **kw: figures.append(fig) or real(fig, path, **kw))
    rows = [{"backend": backend, "batch": b, "samples_per_second": rate * b}
            for backend, rate in (("torch", 2000.0), ("numba", 80000.0)) for b in batches]
    result = {"model": {"name": "wavenet-tiny", "sample_rate": 16000}, "rows": rows,
              "machine": {"device": "cpu", "cpu": "test", "numba_threads": 1, "torch_threads": 1}}
    assert plotting.speed_png(result, tmp_path / "speed.png").read_bytes()[:4] == b"\x89PNG"
    (fig,) = figures
    fig.draw_without_rendering()
    return fig


@pytest.mark.parametrize("batches", [[1], [8], [1, 8, 64]])
def test_every_point_shows_and_the_legend_hides_none(batches, monkeypatch, tmp_path):
    fig = drawn(monkeypatch, batches, tmp_path)
    (ax,) = fig.axes
    legend = ax.get_legend().get_window_extent()
    points = [ax.transData.transform((x, y)) for line in ax.get_lines() if line.get_label() in ("torch", "numba")
              for x, y in zip(line.get_xdata(), line.get_ydata())]
    assert len(points) == 2 * len(batches)
    for x, y in points:
        assert ax.bbox.contains(x, y), (x, y)  # inside the panel
        assert not legend.contains(x, y), (x, y, legend)  # and not under the legend
    assert fig.bbox.x0 <= legend.x0 and legend.x1 <= fig.bbox.x1 and fig.bbox.y0 <= legend.y0  # not cut off
    (real_time,) = [line for line in ax.get_lines() if line.get_label().startswith("real time (16000 Hz)")]
    assert real_time.get_window_extent().width > ax.bbox.width / 2  # a line across the panel, not one bare point
