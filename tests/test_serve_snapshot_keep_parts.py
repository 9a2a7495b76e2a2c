"""wavegen serve --archive: a snapshot of an older wavegen (no ``keep_parts`` recorded) restarted with another
--archive-keep-parts than the server that wrote it. Opening the archive removes no part the snapshot keeps (only
the parts written after the snapshot gone on from, which are written again): what this command's value decides
begins at its own rotations. A guard of a finding, not of a mend: it passes on the code before it too.
"""

from __future__ import annotations

import numpy as np
import pytest

from test_serve_archive_fallback import PARAMS, SR, _snap, _two_snapshots


def _as_an_older_wavegen_wrote_them(folder) -> None:
    from wavegen.render import load_snapshot, save_snapshot
    from wavegen.serve.archive import KEEP_PARTS_KEY

    for path in (_snap(folder), _snap(folder).with_name("snapshot.prev.npz")):
        state, position, meta = load_snapshot(path)
        del meta[KEEP_PARTS_KEY]
        save_snapshot(path, state, position, meta)


@pytest.mark.parametrize("newest", ["good", "cut short"])
@pytest.mark.parametrize("keep_parts", [0, 1, 5])
def test_a_restart_with_another_keep_parts_removes_no_part_an_older_snapshot_keeps(tmp_path, newest, keep_parts):
    """Written with --archive-keep-parts 5, parts of 1 s, snapshots at 2 s and 5 s (parts 1..6 there: the
    rotation at 5 s removed part 0)."""
    from wavegen.serve.archive import Archive

    _two_snapshots(tmp_path, keep_parts=5, part_seconds=1.0)
    _as_an_older_wavegen_wrote_them(tmp_path)
    snap = _snap(tmp_path)
    if newest == "cut short":
        snap.write_bytes(snap.read_bytes()[:100])
    end = 5 if newest == "good" else 2  # the snapshot gone on from ends in this part
    held = {p.name: p.read_bytes() for p in sorted(tmp_path.glob("broadcast_*.wav")) if int(p.stem[-5:]) < end}
    a = Archive(tmp_path, SR, PARAMS, part_seconds=1.0, keep_parts=keep_parts)
    assert a.open()[1] == end * SR
    a.close()
    kept = {p.name: p.read_bytes() for p in sorted(tmp_path.glob("broadcast_*.wav")) if int(p.stem[-5:]) < end}
    assert kept == held and len(held) == end - 1
    assert np.array_equal(sorted(int(p.stem[-5:]) for p in tmp_path.glob("broadcast_*.wav")), range(1, end + 1))
