"""wavegen serve --archive: a live label switch (POST /label) and the fallback snapshot, and the
--archive-keep-parts rotation after a fallback. The switch writes its snapshot as both snapshot.npz and
snapshot.prev.npz, so a restart whose newest snapshot is damaged still goes on with the label switched to, and
the archive holds what was played. Real servers (the CLI in subprocesses), a real tiny conditioned model, real
files.
"""

from __future__ import annotations

import logging
import signal

import numpy as np
import pytest

from conftest import save_tiny_model
from test_serve import SR, Server, serve_here
from test_serve_archive_fallback import PARAMS, _snap
from test_serve_label import LABELS, TOKEN, archived, played, post


@pytest.fixture(scope="module")
def conditioned(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("archive_switch") / "cond", sample_rate=SR, dim=32, emb_size=8,
                           labels=LABELS)


@pytest.mark.slow
def test_a_fallback_after_a_label_switch_keeps_the_switch(conditioned, tmp_path, caplog):
    """Two switches (bells, then back to rain), killed, its newest snapshot cut short (a bad sector): the restart
    falls back to the snapshot before it, which records the second switch too (was: the first switch's, so the
    restart played bells from there, and wrote over the archived rain)."""
    archive = tmp_path / "archive"
    args = ("--label", "rain", "--no-guard", "--guard-seconds", "0.5", "--buffer-seconds", "1", "--snapshot-seconds",
            "100", "--archive", str(archive), "--control-token", TOKEN)
    server = Server(conditioned, *args)
    try:
        server.wait_for(lambda s: s["archive"]["seconds"] >= 0.5)
        code, answer = post(server, "bells")
        assert code == 200, answer
        first = answer["starts_at_sample"]
        server.wait_for(lambda s: s["archive"]["seconds"] >= first / SR + 0.5)
        code, answer = post(server, "rain")
        assert code == 200 and answer["changed"], answer
        second = answer["starts_at_sample"]
        assert second > first
        server.wait_for(lambda s: s["archive"]["seconds"] >= second / SR + 0.5)
    finally:
        server.stop(signal.SIGKILL)
    switches = [(0, "rain"), (first, "bells"), (second, "rain")]
    snap = _snap(archive)
    snap.write_bytes(snap.read_bytes()[:100])
    caplog.set_level(logging.INFO)  # the restart: the same command, played in this process (test_serve.serve_here)
    status, _ = serve_here(conditioned, lambda s: s["archive"]["seconds"] >= second / SR + 1.0, label="rain",
                           guard=False, guard_seconds=0.5, buffer_seconds=1.0, snapshot_seconds=100.0,
                           archive=str(archive), control_token=TOKEN)
    assert status["label"] == "rain" and status["label_since_seconds"] == second / SR, status
    assert any("going on from the snapshot before it, snapshot.prev.npz" in line for line in caplog.messages)
    whole = archived(archive)
    assert len(whole) > second
    assert np.array_equal(whole, played(conditioned, len(whole), switches))


def test_a_switch_snapshot_is_its_own_fallback_and_the_next_keeps_it(tmp_path):
    """Archive.snapshot(fallback_too=True), then a periodic one: the newest damaged, the restart goes on from the
    switch's snapshot, with its record (the label)."""
    from wavegen.serve.archive import Archive

    pcm = np.arange(6 * SR, dtype=np.int16)
    a = Archive(tmp_path, SR, PARAMS, part_seconds=1.0, keep_parts=2)
    a.open()
    a.write(pcm[:SR])
    a.snapshot({"t": np.zeros(1)}, {"label": "rain"})
    a.write(pcm[SR:2 * SR])
    a.snapshot({"t": np.ones(1)}, {"label": "bells"}, fallback_too=True)
    prev = _snap(tmp_path).with_name("snapshot.prev.npz")
    assert prev.read_bytes() == _snap(tmp_path).read_bytes()
    a.write(pcm[2 * SR:5 * SR])
    a.snapshot({"t": np.full(1, 2.0)}, {"label": "bells"})
    a.close()
    assert [p.name for p in sorted(tmp_path.glob("broadcast_*.wav"))] == \
        [f"broadcast_0000{k}.wav" for k in range(2, 6)]  # from the part the switch's snapshot ends in
    snap = _snap(tmp_path)
    snap.write_bytes(snap.read_bytes()[:100])
    b = Archive(tmp_path, SR, PARAMS, part_seconds=1.0, keep_parts=2)
    state, position, meta = b.open()
    b.close()
    assert position == 2 * SR and state["t"][0] == 1.0 and meta["label"] == "bells"


def test_parts_the_rotation_removed_after_the_damaged_snapshot_are_not_said_gone(tmp_path, caplog):
    """--archive-keep-parts 1, parts of 2 s, a snapshot each second: the newest snapshot's rotation removed part 2,
    the one before it counts it; that snapshot damaged, the restart falls back and says nothing is gone (was: "gone
    (moved away or removed)"); first_part moves up to the oldest part there, recorded by the next snapshot."""
    from wavegen.serve.archive import Archive

    pcm = np.arange(8 * SR, dtype=np.int16)
    a = Archive(tmp_path, SR, PARAMS, part_seconds=2.0, keep_parts=1)
    a.open()
    for t in range(1, 8):
        a.write(pcm[(t - 1) * SR:t * SR])
        a.snapshot({"t": np.full(1, t)}, {})
    a.close()
    assert [p.name for p in sorted(tmp_path.glob("broadcast_*.wav"))] == ["broadcast_00003.wav"]
    snap = _snap(tmp_path)
    snap.write_bytes(snap.read_bytes()[:100])
    b = Archive(tmp_path, SR, PARAMS, part_seconds=2.0, keep_parts=1)
    with caplog.at_level(logging.INFO, logger="wavegen.serve.archive"):
        assert b.open()[1] == 6 * SR
    assert "gone" not in caplog.text, caplog.text
    assert "removed by the --archive-keep-parts rotation" in caplog.text
    assert b.first_part == 3
    b.write(pcm[6 * SR:8 * SR])
    b.snapshot({"t": np.full(1, 8)}, {})
    b.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wavegen.serve.archive"):
        c = Archive(tmp_path, SR, PARAMS, part_seconds=2.0, keep_parts=1)
        assert c.open()[1] == 8 * SR
        c.close()
    assert "gone" not in caplog.text, caplog.text
