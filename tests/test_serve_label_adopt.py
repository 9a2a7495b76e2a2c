"""wavegen serve --archive, through the station: the label and engine state it goes on with are those of the snapshot
the archive went on from (LabelState.adopt after the archive's engine check), not the newest one fallen back from,
nor --label. Real files, a real tiny conditioned model, a real engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import save_tiny_model
from test_serve_archive_fallback import PCM, SR, _snap
from test_serve_archive_fallback_cases import LABELS


@pytest.fixture(scope="module")
def conditioned(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("review_adopt") / "cond", sample_rate=SR, dim=32, emb_size=8,
                           labels=LABELS)


def _station(conditioned: Path, tmp_path: Path):
    from wavegen.serve.settings import ServeSettings
    from wavegen.serve.station import Station

    settings = ServeSettings(label="rain", archive=str(tmp_path / "archive"), archive_part_seconds=3.0,
                             snapshot_seconds=1.0, guard=False, allow_slow=True, backend="torch")
    return Station(str(conditioned), settings)


@pytest.mark.parametrize("newest", ["label not its blend", "cut short", "none"])
def test_the_station_goes_on_with_the_switched_label_and_state_of_the_snapshot_gone_on_from(conditioned, tmp_path,
                                                                                            newest):
    """The snapshot gone on from was taken after a switch to bells (its state a blend of bells, 1 s in); the newest
    one after it (rain's state, recording bells: not its blend; or cut short) is fallen back from; "none": nothing
    after it. The station plays bells from there, with the switch's record, its engine holding that snapshot's
    state (not the newest's, whose state the engine check loaded first, nor --label rain's)."""
    from wavegen.render import parse_label
    from wavegen.serve.archive import Archive

    station = _station(conditioned, tmp_path)
    station.engine.reset(label_weights=parse_label("bells", LABELS))
    switched = {k: np.array(v, copy=True) for k, v in station.engine.state_dict().items()}
    station.engine.reset(label_weights=station.label_weights)
    rain = {k: np.array(v, copy=True) for k, v in station.engine.state_dict().items()}
    record = {"label": "bells", "label_since": SR // 2, "label_switches": 1}
    a = Archive(station.archive.folder, SR, station.params, part_seconds=3.0)
    a.open()
    a.write(PCM[:SR])
    a.snapshot(switched, record, fallback_too=True)
    if newest != "none":
        a.write(PCM[SR:2 * SR])
        a.snapshot(rain, record)
    a.close()
    if newest == "cut short":
        snap = _snap(station.archive.folder)
        snap.write_bytes(snap.read_bytes()[:100])
    assert station.open()
    try:
        assert station.position == SR
        labels = station.label_state
        assert (labels.text, labels.since, labels.switches, labels.weights.tolist()) == ("bells", SR // 2, 1, [0, 1])
        held = station.engine.state_dict()
        assert set(held) == set(switched)
        for key, value in switched.items():
            assert np.array_equal(np.asarray(held[key]), value), key
    finally:
        station.archive.close()


def test_a_fresh_archive_goes_on_with_the_label_given(conditioned, tmp_path):
    station = _station(conditioned, tmp_path)
    assert station.open()
    try:
        labels = station.label_state
        assert station.position == 0 and (labels.text, labels.since, labels.switches) == ("rain", 0, 0)
        assert np.asarray(station.engine.state_dict()["label_weights"]).reshape(-1).tolist() == [1, 0]
    finally:
        station.archive.close()
