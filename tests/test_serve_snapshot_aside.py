"""wavegen serve --archive: what a restart does with what it finds at a state file's name and does not go on from.

A newest snapshot fallen back from (cut short, or readable but not fitting the engine: its label not the blend its
state holds) is moved aside as ``snapshot.npz.damaged``, said, not replaced by the one before it: what went wrong
can still be looked into. A link to nothing at a snapshot's name is handled as a folder or FIFO there is (moved
aside, the link itself, its target path untouched; with no snapshot before it, refused naming the link and its
target). Real files, a real engine.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import save_tiny_model
from test_serve_archive import _archive, _archived, _contents
from test_serve_archive_fallback import PARAMS, PCM, SR, _snap, _two_snapshots
from test_serve_archive_fallback_cases import LABELS, _engine_and_labels


@pytest.fixture(scope="module")
def conditioned(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("snapshot_aside") / "cond", sample_rate=SR, dim=32, emb_size=8,
                           labels=LABELS)


def _said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "snapshot before it" in r.getMessage()]


@pytest.mark.parametrize("newest", ["label not its blend", "cut short"])
def test_a_snapshot_fallen_back_from_is_moved_aside_not_replaced(conditioned, tmp_path, newest, caplog):
    """Was: the one before it renamed over it, the misfitting (or cut short) file gone with the evidence of what
    changed it. Now it is kept, byte for byte, as snapshot.npz.damaged, said in the fallback's line."""
    from wavegen.render import load_snapshot
    from wavegen.serve.archive import Archive
    from wavegen.serve.archive_resume import engine_fit

    engine, labels = _engine_and_labels(conditioned, "rain")
    good = {k: np.array(v, copy=True) for k, v in engine.state_dict().items()}
    a = Archive(tmp_path, SR, PARAMS, part_seconds=3.0)
    a.open()
    a.write(PCM[:2 * SR])
    a.snapshot(good, {"label": "rain"})
    a.write(PCM[2 * SR:5 * SR])
    a.snapshot({**good, "label_weights": np.array([[0, 1]], np.float32)}, {"label": "rain"})
    a.close()
    snap = _snap(tmp_path)
    if newest == "cut short":
        snap.write_bytes(snap.read_bytes()[:100])
    held = snap.read_bytes()
    b = Archive(tmp_path, SR, PARAMS, part_seconds=3.0, state_fits=engine_fit(engine, labels, tmp_path))
    with caplog.at_level(logging.WARNING, logger="wavegen.serve.archive"):
        assert b.open()[1] == 2 * SR
    b.close()
    said = _said(caplog)
    assert len(said) == 1 and f"{snap} is damaged (" in said[0] and "(moved to snapshot.npz.damaged)" in said[0], \
        caplog.text
    aside = snap.with_name("snapshot.npz.damaged")
    assert aside.read_bytes() == held
    if newest == "label not its blend":
        state, position, meta = load_snapshot(aside)
        assert position == 5 * SR and meta["label"] == "rain" and state["label_weights"].tolist() == [[0, 1]]
    assert load_snapshot(snap)[1] == 2 * SR  # the one before it in its place


def _link_to_nothing(path: Path, target: Path) -> None:
    if os.path.lexists(path):
        path.unlink()
    os.symlink(target, path)


def test_a_link_to_nothing_at_the_snapshot_name_is_moved_aside_as_a_folder_is(tmp_path, caplog):
    """Was: said "is damaged (FileNotFoundError: ... snapshot.npz)" (the link's name, not where it leads) and the
    link replaced by a file. Now named with its target, moved aside (the link), its target path untouched, and the
    archive goes on from the snapshot before it."""
    from wavegen.serve.archive import Archive

    archive, target = tmp_path / "archive", tmp_path / "elsewhere" / "snapshot.npz"
    _two_snapshots(archive)
    snap = _snap(archive)
    _link_to_nothing(snap, target)
    a = Archive(archive, SR, PARAMS, part_seconds=3.0)
    with caplog.at_level(logging.WARNING, logger="wavegen.serve.archive"):
        assert a.open()[1] == 2 * SR
    a.write(PCM[2 * SR:4 * SR])
    a.snapshot({"t": np.zeros(1)}, {})
    a.close()
    said = _said(caplog)
    assert len(said) == 1 and f"{snap} is a link to {target}, which does not exist (moved to snapshot.npz.damaged)" \
        in said[0], caplog.text
    aside = snap.with_name("snapshot.npz.damaged")
    assert aside.is_symlink() and os.readlink(aside) == str(target)
    assert not os.path.lexists(target.parent) and snap.is_file() and not snap.is_symlink()
    assert np.array_equal(_archived(archive), PCM[:4 * SR])


def test_a_link_to_nothing_at_the_snapshot_name_and_none_before_is_refused_naming_its_target(tmp_path):
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    target = tmp_path / "elsewhere" / "snapshot.npz"
    archive = tmp_path / "archive"
    _archive(archive, 5.0, 1.0)  # one snapshot: none before it
    snap = _snap(archive)
    _link_to_nothing(snap, target)
    before = _contents(archive)
    with pytest.raises(ServeError) as err:
        Archive(archive, SR, PARAMS, part_seconds=3.0).open()
    message = str(err.value)
    assert f"{snap} is a link to {target}, which does not exist, and there is no snapshot before it" in message \
        and "choose another --archive" in message and "\n" not in message, message
    assert _contents(archive) == before and os.readlink(snap) == str(target)


def test_a_link_to_nothing_at_the_previous_snapshot_name_is_moved_aside_at_the_start(tmp_path, caplog):
    """Was: nothing said, and the next snapshot renamed the newest over the link (gone). Now moved aside, said, as a
    folder there is."""
    from wavegen.serve.archive import Archive

    target = tmp_path / "elsewhere" / "snapshot.prev.npz"
    archive = tmp_path / "archive"
    _two_snapshots(archive)
    prev = _snap(archive).with_name("snapshot.prev.npz")
    _link_to_nothing(prev, target)
    a = Archive(archive, SR, PARAMS, part_seconds=3.0)
    with caplog.at_level(logging.WARNING, logger="wavegen.serve.archive"):
        assert a.open()[1] == 5 * SR
    a.write(PCM[5 * SR:6 * SR])
    a.snapshot({"t": np.full(1, 2.0)}, {})
    a.close()
    assert f"{prev} is a link to {target}, which does not exist (moved to snapshot.prev.npz.damaged)" in caplog.text
    assert os.readlink(prev.with_name("snapshot.prev.npz.damaged")) == str(target)
    assert prev.is_file() and not prev.is_symlink() and not os.path.lexists(target.parent)
