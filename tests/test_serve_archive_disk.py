"""wavegen serve --archive when its disk fills or fails: the server stops with the archive intact up to its
last snapshot, and what the user does to free the disk (moving the oldest parts elsewhere) does not cost
them the archive: the same command continues it."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from test_serve import SR
from test_serve_archive import PARAMS, _archived


def _names(folder: Path) -> list[str]:
    return [p.name for p in sorted(folder.glob("broadcast_*.wav"))]


def _five_and_a_half_seconds_archived(tmp_path, seconds: int):
    """An archive of 1 s parts holding 5.5 s of a ``seconds`` long broadcast, snapshot taken; a folder
    "elsewhere" to move parts to; the broadcast's samples."""
    from wavegen.serve.archive import Archive

    archive, elsewhere = tmp_path / "archive", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pcm = np.arange(seconds * SR, dtype=np.int16)
    a = Archive(archive, SR, PARAMS, part_seconds=1.0)
    a.open()
    a.write(pcm[:5 * SR + SR // 2])
    a.snapshot({"t": np.zeros(1)}, {})
    a.close()
    return archive, elsewhere, pcm


def test_parts_moved_away_to_free_the_disk_do_not_stop_the_archive_continuing(tmp_path, caplog):
    """Full, the server said "free space and rerun the same command"; the user moved the oldest parts to
    another disk (and one from the middle): the restart goes on from the snapshot and says which parts are
    gone; they do not move the oldest part the archive counts (first_part): only --archive-keep-parts does."""
    from wavegen.render import load_snapshot
    from wavegen.serve.archive import Archive

    archive, elsewhere, pcm = _five_and_a_half_seconds_archived(tmp_path, 8)
    for k in (0, 1, 3):
        shutil.move(archive / f"broadcast_0000{k}.wav", elsewhere)
    b = Archive(archive, SR, PARAMS, part_seconds=1.0)
    with caplog.at_level(logging.WARNING, logger="wavegen.serve.archive"):
        assert b.open()[1] == 5 * SR + SR // 2
    gone = [r.getMessage() for r in caplog.records]
    assert len(gone) == 1 and "broadcast_00000.wav" in gone[0] and "broadcast_00003.wav" in gone[0], gone
    assert ("3 parts archived before (broadcast_00000.wav, broadcast_00001.wav, broadcast_00003.wav) "
            "are gone (moved away or removed)") in gone[0]
    assert b.first_part == 0  # gone parts are gaps, said once (the snapshot records it), kept if brought back
    b.write(pcm[5 * SR + SR // 2:])
    b.snapshot({"t": np.zeros(1)}, {})
    b.close()
    assert load_snapshot(archive / ".state" / "snapshot.npz")[2]["first_part"] == 0
    assert _names(archive) == ["broadcast_00002.wav", "broadcast_00004.wav", "broadcast_00005.wav",
                               "broadcast_00006.wav", "broadcast_00007.wav", "broadcast_00008.wav"]
    assert np.array_equal(_archived(archive), np.concatenate([pcm[2 * SR:3 * SR], pcm[4 * SR:]]))
    assert np.array_equal(sf.read(str(elsewhere / "broadcast_00003.wav"), dtype="int16")[0], pcm[3 * SR:4 * SR])


@pytest.mark.parametrize("back", ["at a restart", "while it plays"])
def test_parts_brought_back_are_kept(tmp_path, back):
    """The oldest parts moved away off a full disk, the archive continued without them, then brought back
    (a bigger disk): they are kept, by a restart and by the next snapshot of a server that plays, with
    --archive-keep-parts 0 (keep all)."""
    from wavegen.serve.archive import Archive

    archive, elsewhere, pcm = _five_and_a_half_seconds_archived(tmp_path, 6)
    for k in (0, 1):
        shutil.move(archive / f"broadcast_0000{k}.wav", elsewhere)
    b = Archive(archive, SR, PARAMS, part_seconds=1.0)
    b.open()
    if back == "at a restart":
        b.write(pcm[5 * SR + SR // 2:5 * SR + SR * 3 // 4])
        b.snapshot({"t": np.zeros(1)}, {})
        b.close()
    for k in (0, 1):
        shutil.move(elsewhere / f"broadcast_0000{k}.wav", archive)
    if back == "at a restart":
        b = Archive(archive, SR, PARAMS, part_seconds=1.0)
        assert b.open()[1] == 5 * SR + SR * 3 // 4
    b.write(pcm[b.position:])
    b.snapshot({"t": np.zeros(1)}, {})
    b.close()
    assert _names(archive) == [f"broadcast_0000{k}.wav" for k in range(7)]
    assert np.array_equal(_archived(archive), pcm)


def test_rotation_alone_decides_which_parts_go(tmp_path):
    """--archive-keep-parts 4 with a part moved away and brought back: the rotation removes it when it is
    older than the newest 4, as it would have been, not before."""
    from wavegen.serve.archive import Archive

    archive, elsewhere = tmp_path / "archive", tmp_path / "elsewhere"
    elsewhere.mkdir()
    a = Archive(archive, SR, PARAMS, part_seconds=1.0, keep_parts=4)
    a.open()
    a.write(np.arange(2 * SR + SR // 2, dtype=np.int16))
    a.snapshot({"t": np.zeros(1)}, {})
    a.close()
    shutil.move(archive / "broadcast_00001.wav", elsewhere)
    b = Archive(archive, SR, PARAMS, part_seconds=1.0, keep_parts=4)
    b.open()
    b.write(np.zeros(SR, dtype=np.int16))
    b.snapshot({"t": np.zeros(1)}, {})  # at 3.5 s: parts 0..3, the newest 4 kept
    shutil.move(elsewhere / "broadcast_00001.wav", archive)
    b.write(np.zeros(SR, dtype=np.int16))
    b.snapshot({"t": np.zeros(1)}, {})  # at 4.5 s: part 0 goes
    assert _names(archive) == [f"broadcast_0000{k}.wav" for k in range(1, 5)]
    b.write(np.zeros(SR, dtype=np.int16))
    b.snapshot({"t": np.zeros(1)}, {})  # at 5.5 s: part 1 goes
    b.close()
    assert _names(archive) == [f"broadcast_0000{k}.wav" for k in range(2, 6)]


@pytest.mark.parametrize("replaced_by", ["a folder", "nothing", "another file"])
def test_a_part_replaced_while_it_is_written_is_said_not_carried_on_in_silence(tmp_path, replaced_by):
    """The part being written is replaced (by a folder, another file) or removed: what the archive writes
    goes to a file no one can open. The next snapshot says so (a ServeError naming the part), and does not
    count it: the last snapshot stays the one before."""
    from wavegen.render import load_snapshot
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    a = Archive(tmp_path, SR, PARAMS, part_seconds=3.0)
    a.open()
    a.write(np.arange(SR, dtype=np.int16))
    a.snapshot({"t": np.zeros(1)}, {})
    part = tmp_path / "broadcast_00000.wav"
    part.unlink()
    if replaced_by == "a folder":
        part.mkdir()
    elif replaced_by == "another file":
        part.write_bytes(b"RIFF")
    a.write(np.arange(SR, dtype=np.int16))
    with pytest.raises(ServeError, match=r"broadcast_00000\.wav was removed or replaced while the archive wrote "
                                         r"it: the broadcast from 0\.0 s on is not in any file"):
        a.snapshot({"t": np.zeros(1)}, {})
    a.abandon()
    assert load_snapshot(tmp_path / ".state" / "snapshot.npz")[1] == SR


def test_a_part_replaced_is_said_when_it_fills_too(tmp_path):
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    a = Archive(tmp_path, SR, PARAMS, part_seconds=1.0)
    a.open()
    a.write(np.arange(SR // 2, dtype=np.int16))
    (tmp_path / "broadcast_00000.wav").unlink()
    with pytest.raises(ServeError, match=r"broadcast_00000\.wav was removed or replaced"):
        a.write(np.arange(SR, dtype=np.int16))  # fills it: on to the next part
    a.abandon()


def test_a_snapshot_cut_short_by_a_kill_leaves_no_file_behind_for_good(tmp_path):
    """A server killed (SIGKILL: a supervisor's stop that timed out) while it wrote a snapshot leaves the
    partial temporary file; the restart, which holds the archive's lock, removes it and goes on from the
    snapshot before."""
    import signal
    import subprocess
    import sys
    import time

    from test_serve import ENV

    archive = tmp_path / "archive"
    code = ("import sys, numpy as np\n"
            "from wavegen.serve.archive import Archive\n"
            f"a = Archive({str(archive)!r}, {SR}, {PARAMS!r}, part_seconds=3.0)\n"
            f"a.open(); a.write(np.zeros({SR}, np.int16)); a.snapshot({{'t': np.zeros(1)}}, {{}})\n"
            "print('snapshot', flush=True)\n"
            "a.snapshot({'t': np.random.default_rng(0).random(40_000_000)}, {})\n")  # 320 MB: cut short
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "snapshot\n"
    state = archive / ".state"
    deadline = time.monotonic() + 60
    while not list(state.glob(".snapshot.npz.tmp*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    assert list(state.glob(".snapshot.npz.tmp*")), "killed before it began the snapshot"

    from wavegen.serve.archive import Archive

    again = Archive(archive, SR, PARAMS, part_seconds=3.0)
    assert again.open()[1] == SR
    again.close()
    assert sorted(p.name for p in state.iterdir()) == ["params.json", "snapshot.npz"]


def test_parts_without_their_snapshot_are_not_written_over(tmp_path):
    """The snapshot removed (or lost): starting again at 0 removed every part past the first and wrote the
    first over. Parts holding more than a server stopped before its first snapshot leaves are refused,
    untouched; as little as that starts again, as it always did."""
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    a = Archive(tmp_path, SR, PARAMS, part_seconds=1.0)
    a.open()
    a.write(np.arange(3 * SR + SR // 2, dtype=np.int16))
    a.snapshot({"t": np.zeros(1)}, {})
    a.close()
    (tmp_path / ".state" / "snapshot.npz").unlink()
    before = {p.name: p.read_bytes() for p in tmp_path.glob("broadcast_*.wav")}
    with pytest.raises(ServeError, match=r"holds 3\.5 s of the broadcast in 4 parts but no \.state/snapshot\.npz"):
        Archive(tmp_path, SR, PARAMS, part_seconds=1.0, unsnapshot_seconds=3.0).open()
    assert {p.name: p.read_bytes() for p in tmp_path.glob("broadcast_*.wav")} == before

    killed = tmp_path / "killed"  # stopped before its first snapshot (at 3 s): begins again
    a = Archive(killed, SR, PARAMS, part_seconds=1.0)
    a.open()
    a.write(np.arange(2 * SR, dtype=np.int16))
    a.close()
    again = Archive(killed, SR, PARAMS, part_seconds=1.0, unsnapshot_seconds=3.0)
    assert again.open()[1] == 0
    again.close()
    assert _names(killed) == ["broadcast_00000.wav"]


def test_parts_without_a_snapshot_refused_leave_the_folder_as_it_was(tmp_path):
    """Part 0 moved away and .state lost: the refusal (parts, no snapshot) writes nothing, not even
    .state/params.json, so the .state brought back continues the archive with the original command."""
    from test_serve_archive import _contents
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    archive, elsewhere = tmp_path / "archive", tmp_path / "elsewhere"
    a = Archive(archive, SR, PARAMS, part_seconds=1.0)
    a.open()
    a.write(np.arange(4 * SR + SR // 2, dtype=np.int16))
    a.snapshot({"t": np.zeros(1)}, {})
    a.close()
    elsewhere.mkdir()
    shutil.move(archive / "broadcast_00000.wav", elsewhere)
    shutil.move(archive / ".state", elsewhere)
    before = _contents(archive)
    with pytest.raises(ServeError, match=r"holds 3\.5 s of the broadcast in 4 parts but no \.state/snapshot"):
        Archive(archive, SR, {**PARAMS, "seed": 7}, part_seconds=1.0, unsnapshot_seconds=2.0).open()
    assert _contents(archive) == before and not (archive / ".state").exists()
    shutil.move(elsewhere / ".state", archive)
    b = Archive(archive, SR, PARAMS, part_seconds=1.0, unsnapshot_seconds=2.0)
    assert b.open()[1] == 4 * SR + SR // 2
    b.close()


def test_parts_without_a_snapshot_are_judged_by_the_bound_of_the_server_that_wrote_them(tmp_path):
    """Stopped before its first snapshot under a long --snapshot-seconds (its bound recorded in params.json),
    restarted with a shorter one: it begins anew (as it would have under the first). More audio than the
    recorded bound: refused, saying the snapshot was lost; an archive that did not record its bound is
    judged by this command's, the refusal saying a longer --snapshot-seconds may have written them."""
    import json

    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    a = Archive(tmp_path, SR, PARAMS, part_seconds=10.0, unsnapshot_seconds=6.0)
    a.open()
    a.write(np.arange(5 * SR, dtype=np.int16))
    a.abandon()  # killed: no snapshot (nor a header counting the audio)
    b = Archive(tmp_path, SR, PARAMS, part_seconds=10.0, unsnapshot_seconds=2.0)
    assert b.open()[1] == 0  # begun anew, under its own bound now
    b.write(np.arange(3 * SR, dtype=np.int16))
    b.abandon()
    with pytest.raises(ServeError, match=r"holds 3\.0 s .* no \.state/snapshot\.npz \(the server that began it, "
                                         r"stopped before its first snapshot, would have left at most 2\.0 s: the "
                                         r"snapshot was removed or lost since\)"):
        Archive(tmp_path, SR, PARAMS, part_seconds=10.0, unsnapshot_seconds=6.0).open()
    params = tmp_path / ".state" / "params.json"
    params.write_text(json.dumps({k: v for k, v in json.loads(params.read_text()).items()
                                  if k != "unsnapshot_seconds"}))  # as an older wavegen recorded it
    with pytest.raises(ServeError, match=r"with a --snapshot-seconds longer than this command's \(at most 2\.0 s"):
        Archive(tmp_path, SR, PARAMS, part_seconds=10.0, unsnapshot_seconds=2.0).open()
    c = Archive(tmp_path, SR, PARAMS, part_seconds=10.0, unsnapshot_seconds=6.0)
    assert c.open()[1] == 0
    c.close()


class _CountedRecord(list):
    """A snapshot's record of the parts said gone that counts how often it is read through."""

    reads = 0

    def __iter__(self):
        self.reads += 1
        return super().__iter__()


def test_the_record_of_parts_said_gone_is_read_once_not_once_per_gone_part(tmp_path, caplog):
    """A restart looks every gone part up in the snapshot's record of those said before (runs [first, last]). It read
    the whole record through for each: an archive of 20000 parts, every tenth kept, took 11 s (ten times more parts,
    a hundred times that) before the stream began. Now the record is read once: a part said before is not said
    again, one gone since is, whatever the record's order or overlaps."""
    from wavegen.serve.archive import Archive
    from wavegen.serve.archive_folder import say_earlier_parts

    archive, elsewhere, _ = _five_and_a_half_seconds_archived(tmp_path, 6)
    for k in (0, 1, 2, 4):
        shutil.move(archive / f"broadcast_0000{k}.wav", elsewhere)
    a = Archive(archive, SR, PARAMS, part_seconds=1.0)
    record = _CountedRecord([[4, 4], [0, 1], [1, 1], "not a run", [7, 3]])
    a.gone_said = record
    with caplog.at_level(logging.WARNING, logger="wavegen.serve.archive"):
        say_earlier_parts(a, 5)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "broadcast_00002.wav, archived before, is gone" in said[0], said
    assert a.gone_said == [[0, 2], [4, 4]]  # what the next snapshot records: all gone now
    assert record.reads == 1, record.reads  # four gone parts looked up: it was read through four times
