"""wavegen serve --archive begun by an older wavegen, which recorded no part length (``part_frames``): the length
is inferred from a complete part where that is unambiguous, so a restart with another --archive-part-seconds
neither refuses an archive it can begin anew nor cuts its parts where they do not end. Real files; the server
killed by a real SIGKILL in a subprocess (Archive itself, at the moment a hook picks).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from test_serve import ENV, SR
from test_serve_archive import _archived, _contents
from test_serve_archive_state import KILLED_AT_THE_FIRST_CLOSE

PARAMS = {"model": "a", "model_sha256": "0" * 64, "sample_rate": SR, "seed": 0, "guard": False}  # windows of 1 s
BOUND = 31.0  # the default --snapshot-seconds 30 and a window of 1 s: the most audio left without a snapshot

KILLED_AT_THE_CLOSE = KILLED_AT_THE_FIRST_CLOSE + """  # then .format: the moment holds no braces
import numpy as np
a = Archive({folder!r}, {sr}, {params!r}, part_seconds={part_seconds}, unsnapshot_seconds={bound})
a.open()
a.write(np.arange({sr} * 4, dtype=np.int16))
"""


def _older_archive_killed_at_its_first_close(folder: Path, part_seconds: float) -> None:
    """A full first part closed, the server killed before the next part or any snapshot; params.json then as an
    older wavegen wrote it, without the parts' length."""
    code = textwrap.dedent(KILLED_AT_THE_CLOSE).format(folder=str(folder), sr=SR, params=PARAMS,
                                                       part_seconds=part_seconds, bound=BOUND)
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert [p.name for p in folder.glob("broadcast_*.wav")] == ["broadcast_00000.wav"]
    assert not (folder / ".state" / "snapshot.npz").exists()
    params_path = folder / ".state" / "params.json"
    params = json.loads(params_path.read_text())
    del params["part_frames"]
    params_path.write_text(json.dumps(params))


def test_an_older_archives_full_first_part_killed_at_its_close_is_begun_anew_with_longer_parts(tmp_path):
    """Parts of 1.5 s: the header counts 1.5 s, which no snapshot can (they fall at the end of a 1 s window), and
    the part holds just that: it was closed full, and the restart with 3 s parts begins anew (was: refused, the
    count taken for a snapshot's: "the snapshot was removed or lost since")."""
    from wavegen.serve.archive import Archive

    archive = tmp_path / "archive"
    _older_archive_killed_at_its_first_close(archive, part_seconds=1.5)
    a = Archive(archive, SR, PARAMS, part_seconds=3.0, unsnapshot_seconds=BOUND)
    assert a.open()[1] == 0
    a.write(np.arange(4 * SR, dtype=np.int16))
    a.snapshot({"t": np.zeros(1)}, {})
    a.close()
    assert sf.info(str(archive / "broadcast_00000.wav")).frames == 3 * SR  # begun anew, in its own parts
    assert np.array_equal(_archived(archive), np.arange(4 * SR, dtype=np.int16))
    assert json.loads((archive / ".state" / "params.json").read_text())["part_frames"] == 3 * SR


def test_an_older_archives_lone_part_a_snapshot_could_have_counted_is_still_refused(tmp_path):
    """Parts of 1 s, windows of 1 s: a count of 1 s could be a snapshot's (since removed), so the restart is
    refused as before, the folder untouched: never written over on a guess."""
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    archive = tmp_path / "archive"
    _older_archive_killed_at_its_first_close(archive, part_seconds=1.0)
    before = _contents(archive)
    with pytest.raises(ServeError, match="counts 1.0 s in its header, as a snapshot leaves it"):
        Archive(archive, SR, PARAMS, part_seconds=3.0, unsnapshot_seconds=BOUND).open()
    assert _contents(archive) == before


def test_an_older_snapshots_part_length_is_read_from_a_cut_short_first_part_by_its_header(tmp_path, caplog):
    """A snapshot that records no part length, its first part cut short since: the length is the one the part's
    header counts (its close counted it all), not what is left of it (was: 1 s taken for the parts' length, the
    parts after it misplaced: parts 3 and 4 said gone, the broadcast going on in part 5)."""
    from wavegen.render import load_snapshot, save_snapshot
    from wavegen.serve.archive import Archive

    pcm = np.arange(6 * SR, dtype=np.int16)
    first = Archive(tmp_path, SR, PARAMS, part_seconds=2.0)
    first.open()
    first.write(pcm[:5 * SR])
    first.snapshot({"t": np.zeros(1)}, {})
    first.close()
    snap = tmp_path / ".state" / "snapshot.npz"
    state, position, meta = load_snapshot(snap)
    del meta["part_frames"]  # as an older wavegen's snapshot
    save_snapshot(snap, state, position, meta)
    part0 = tmp_path / "broadcast_00000.wav"
    part0.write_bytes(part0.read_bytes()[:44 + 2 * SR])  # 1 s of its 2 s
    second = Archive(tmp_path, SR, PARAMS, part_seconds=4.0)
    with caplog.at_level(logging.WARNING, logger="wavegen.serve.archive"):
        assert second.open()[1] == 5 * SR
    assert second.part_frames == 2 * SR and "gone" not in caplog.text, caplog.text
    second.write(pcm[5 * SR:])
    second.close()
    assert [p.name for p in sorted(tmp_path.glob("broadcast_*.wav"))] == [f"broadcast_0000{k}.wav" for k in range(4)]
    assert np.array_equal(sf.read(str(tmp_path / "broadcast_00002.wav"), dtype="int16")[0], pcm[4 * SR:6 * SR])
