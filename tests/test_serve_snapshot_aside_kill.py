"""wavegen serve --archive: a fallback's move aside of the newest snapshot, then a kill before the one before it is put
in its place; and fallbacks one after another, each moved aside under its own name. Guards of findings (they pass on
the code reviewed too). Real files.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from test_serve_archive import _archived
from test_serve_archive_fallback import PARAMS, PCM, SR, _snap, _two_snapshots


def test_a_kill_after_the_move_aside_leaves_the_snapshot_before_it_to_go_on_from(tmp_path, caplog):
    """What a server killed between fall_back's move aside and its rename of snapshot.prev.npz leaves: no
    snapshot.npz. The restart goes on from snapshot.prev.npz (not refused, not begun again at 0), the file moved
    aside kept."""
    from wavegen.serve.archive import Archive
    from wavegen.serve.archive_resume import set_aside

    _two_snapshots(tmp_path)
    snap = _snap(tmp_path)
    snap.write_bytes(snap.read_bytes()[:100])
    held = snap.read_bytes()
    assert set_aside(snap) == " (moved to snapshot.npz.damaged)"
    a = Archive(tmp_path, SR, PARAMS, part_seconds=3.0)
    with caplog.at_level(logging.WARNING, logger="wavegen.serve.archive"):
        assert a.open()[1] == 2 * SR
    a.write(PCM[2 * SR:4 * SR])
    a.close()
    assert f"{snap} is missing; going on from the snapshot before it, snapshot.prev.npz" in caplog.text
    assert snap.with_name("snapshot.npz.damaged").read_bytes() == held
    assert np.array_equal(_archived(tmp_path), PCM[:4 * SR])


def test_fallbacks_one_after_another_keep_each_file_moved_aside(tmp_path):
    """A link to nothing moved aside first (snapshot.npz.damaged), then a cut short file: snapshot.npz.damaged2,
    the link kept (a rename onto it would replace it)."""
    from wavegen.serve.archive import Archive

    _two_snapshots(tmp_path)
    snap = _snap(tmp_path)
    snap.unlink()
    os.symlink(tmp_path / "elsewhere.npz", snap)
    a = Archive(tmp_path, SR, PARAMS, part_seconds=3.0)
    assert a.open()[1] == 2 * SR
    a.write(PCM[2 * SR:3 * SR])
    a.snapshot({"t": np.zeros(1)}, {})
    a.write(PCM[3 * SR:4 * SR])
    a.snapshot({"t": np.ones(1)}, {})
    a.close()
    snap.write_bytes(b"cut short")
    b = Archive(tmp_path, SR, PARAMS, part_seconds=3.0)
    assert b.open()[1] == 3 * SR
    b.close()
    assert os.readlink(snap.with_name("snapshot.npz.damaged")) == str(tmp_path / "elsewhere.npz")
    assert snap.with_name("snapshot.npz.damaged2").read_bytes() == b"cut short"
