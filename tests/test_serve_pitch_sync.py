"""`wavegen serve --pitch-sync RHO`: the station's draws through render's pitch-synchronous copula
(wavegen.render.pitchsync, called by wavegen.serve.pitch).

serve plays what a one-stream render of the same model, seed and temperature writes (test_serve pins the stream
to the engine run directly, as test_render pins the render), so:

- 0 is today's stream, byte for byte; RHO > 0 plays the audio `wavegen render --pitch-sync RHO` writes, with the
  guard's redraws too (its state rewound with each, as render's), and a negative control shows the check can fail
  (a redraw that does not rewind it plays other audio);
- a station stopped mid-window and started again continues the archive byte for byte as an uninterrupted one
  (the state saved in its snapshot and restored), and without the state restored it would not;
- a restart with another value is refused naming both; an archive begun before serve took the option goes on
  at 0 and refuses another value.

The tiny random model has no pitch (no block passes THRESHOLD), so these tests lower the threshold to make every
block with a dip use its lag, as test_render_pitch_sync does: they check the draws' bookkeeping.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import wavegen.render.pitchsync as pitchsync
from test_serve import SR, cli_station, make_model, reference_pcm
from test_serve_archive import _contents

GUARD_SECONDS = 1.0  # the station's window, guarded or not (without the guard it is 1 s)
WINDOW = int(GUARD_SECONDS * SR)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("serve_pitch") / "tiny")


@pytest.fixture
def redrawn(monkeypatch):
    """A fixed-threshold guard that finds the tiny model's audio (about -10 dB) silent now and then: redraws, in
    serve and render alike."""
    from wavegen.render.guard import criteria_for
    from wavegen.serve import station

    def quiet_is_silent(settings, ref):
        return criteria_for(dataclasses.replace(settings, guard_silence_db=-10.0, guard_album=False), ref)

    monkeypatch.setattr(station, "criteria_for", quiet_is_silent)


def station(archive: Path | None = None, **settings):
    from wavegen.serve import ServeSettings, Station

    settings = {"guard": False, "guard_seconds": GUARD_SECONDS, "allow_slow": True, "snapshot_seconds": 0.75,
                **settings}
    made = Station(str(settings.pop("model")), ServeSettings(archive=None if archive is None else str(archive),
                                                             **settings))
    assert made.open()  # its timing (allowed slow), the archive's snapshot restored
    return made


def play(model: Path, archive: Path, stop_at: int, **settings):
    """A station with ``archive`` played as its thread plays it, stopped (a Ctrl-C) once it draws at sample
    ``stop_at`` or beyond: its final snapshot at the start of the window being made. → the station."""
    made = station(archive, model=model, **settings)
    draw = made._draw

    def drawn(start, n, attempt):
        if start >= stop_at:
            made._stop.set()  # seen before the next chunk: the window is left unfinished
        return draw(start, n, attempt)

    made._draw = drawn
    made._run(lambda pages: None, lambda: float("inf"))  # the live edge far ahead: no waiting for room
    assert made.error is None, made.error
    return made


def archived(folder: Path) -> np.ndarray:
    return np.concatenate([sf.read(str(p), dtype="int16")[0] for p in sorted(folder.glob("broadcast_*.wav"))])


def rendered(model: Path, out: Path, n: int, guard: bool, rho: float) -> np.ndarray:
    """What `wavegen render` writes for one stream of ``n`` samples, the station's seed, temperature and guard."""
    from wavegen.render import RenderSettings, render

    settings = RenderSettings(seconds=n / SR, spectrogram=False, guard=guard, guard_seconds=GUARD_SECONDS,
                              guard_silence_db=-10.0, guard_album=False, pitch_sync=rho)
    render(model, out, settings, progress=False)
    return sf.read(str(out / "stream_000.wav"), dtype="int16")[0]


def test_pitch_sync_0_is_the_stream_without_the_option(model, tmp_path, pitched):
    played = play(model, tmp_path / "a", 3 * WINDOW, pitch_sync=0.0)
    assert played.pitch is None
    pcm = archived(tmp_path / "a")
    assert len(pcm) == 3 * WINDOW and np.array_equal(pcm, reference_pcm(model, len(pcm)))
    assert json.loads((tmp_path / "a" / ".state" / "params.json").read_text())["pitch_sync"] == 0.0


def test_the_cli_gives_the_station_its_pitch_sync(model, monkeypatch):
    code, seen = cli_station(model, monkeypatch, "--no-guard", "--pitch-sync", "0.99")
    assert code == 0 and seen["station"].pitch.rho == 0.99 and seen["station"].params["pitch_sync"] == 0.99
    code, seen = cli_station(model, monkeypatch, "--no-guard")
    assert code == 0 and seen["station"].pitch is None and seen["station"].params["pitch_sync"] == 0.0


def test_status_says_the_pitch_sync_in_force(model):
    """/status's answer (what the page and a listener's script read) names the setting, 0 where it is off."""
    from wavegen.serve.app import status
    from wavegen.serve.broadcast import Broadcast

    air = Broadcast(b"", 0.0, burst_seconds=1.0, lag_seconds=1.0, stall_seconds=1.0)
    assert status(station(model=model, pitch_sync=0.99), air)["pitch_sync"] == 0.99
    assert status(station(model=model), air)["pitch_sync"] == 0.0


@pytest.mark.parametrize("guard", [False, True], ids=["no-guard", "guard"])
def test_pitch_sync_plays_what_render_writes(model, tmp_path, pitched, redrawn, guard):
    played = play(model, tmp_path / "a", 3 * WINDOW, pitch_sync=0.99, guard=guard)
    if guard:
        assert played.redraws > 0  # the guard's rewinds are exercised
    pcm = archived(tmp_path / "a")
    assert len(pcm) == 3 * WINDOW
    assert np.array_equal(pcm, rendered(model, tmp_path / "r", len(pcm), guard, 0.99))
    assert not np.array_equal(pcm, rendered(model, tmp_path / "r0", len(pcm), guard, 0.0))
    assert json.loads((tmp_path / "a" / ".state" / "params.json").read_text())["pitch_sync"] == 0.99


def test_negative_control_a_redraw_without_the_rewind_plays_other_audio(model, tmp_path, pitched, redrawn,
                                                                        monkeypatch):
    reference = rendered(model, tmp_path / "r", 3 * WINDOW, True, 0.99)  # before the rewind is taken away
    real = pitchsync.PitchSync.begin

    def no_rewind(self, start):  # a redraw goes on from the window's end state
        if start == self.pos:
            real(self, start)

    monkeypatch.setattr(pitchsync.PitchSync, "begin", no_rewind)
    played = play(model, tmp_path / "a", 3 * WINDOW, pitch_sync=0.99, guard=True)
    assert played.redraws > 0
    pcm = archived(tmp_path / "a")
    assert len(pcm) == 3 * WINDOW and not np.array_equal(pcm, reference)


def restarted(model: Path, archive: Path, **settings) -> tuple[np.ndarray, int]:
    """The archive of a station stopped mid-window at 1.3 windows, started again and stopped at 2.6 windows, then
    continued to 3: → (its audio, the guard's redraws in it), checked to have gone on from each final snapshot (at a
    window's start)."""
    first = play(model, archive, int(1.3 * WINDOW), **settings)
    assert first.position == WINDOW  # the window it was stopped in is not archived
    second = play(model, archive, int(2.6 * WINDOW), **settings)
    assert second.archive.snapshot_position == 2 * WINDOW
    last = play(model, archive, 3 * WINDOW, **settings)
    assert last.position == 3 * WINDOW
    return archived(archive), last.redraws  # the guard's counts go on with the archive


@pytest.mark.slow
@pytest.mark.parametrize("guard", [False, True], ids=["no-guard", "guard"])
def test_a_stopped_and_restarted_station_archives_what_an_uninterrupted_one_does(model, tmp_path, pitched, redrawn,
                                                                                guard):
    pcm, redraws = restarted(model, tmp_path / "a", pitch_sync=0.99, guard=guard)
    assert redraws > 0 if guard else redraws == 0
    assert np.array_equal(pcm, rendered(model, tmp_path / "r", len(pcm), guard, 0.99))


def test_negative_control_the_state_not_restored_changes_the_archive(model, tmp_path, pitched, monkeypatch):
    from wavegen.serve import archive_resume

    # the snapshot's position taken, its z and audio history and lags not: the state of a fresh stream
    monkeypatch.setattr(archive_resume, "kept_misfit",
                        lambda station, state, position: setattr(station.pitch, "pos", int(state["pitch_sync.pos"])))
    pcm, _ = restarted(model, tmp_path / "a", pitch_sync=0.99)
    assert not np.array_equal(pcm, rendered(model, tmp_path / "r", len(pcm), False, 0.99))


# the archive's recorded settings, --pitch-sync's and --postfilter's alike: (key, a value to record, the station's
# attribute holding its state, the state's snapshot prefix and entries)
RECORDED = [("pitch_sync", 0.99, "pitch", "pitch_sync.", ("z", "x", "pos", "lag", "on")),
            ("postfilter", 0.8, "post", "postfilter.", ("x", "pos"))]
RECORDED_IDS = ["pitch_sync", "postfilter"]


@pytest.mark.parametrize("key, value, held, prefix, entries", RECORDED, ids=RECORDED_IDS)
def test_a_restart_with_another_value_is_refused_naming_both(model, tmp_path, pitched, key, value, held, prefix,
                                                             entries):
    from wavegen.serve import ServeError

    archive = tmp_path / "a"
    play(model, archive, 2 * WINDOW, **{key: value})
    before = _contents(archive)
    for asked, said in [(0.5, f"with {key}={value}, but this command asks for {key}=0.5 ("),
                        (0.0, f"with {key}={value}, but this command asks for {key}=0 (")]:
        with pytest.raises(ServeError) as err:
            station(archive, model=model, **{key: asked})
        assert f"{archive} archives a broadcast {said}" in str(err.value), err.value
        assert str(err.value).endswith("rerun the original command to continue it, or choose another --archive")
    assert _contents(archive) == before


@pytest.mark.parametrize("key, value, held, prefix, entries", RECORDED, ids=RECORDED_IDS)
def test_an_archive_begun_before_serve_took_the_option_goes_on_at_0(model, tmp_path, pitched, key, value, held,
                                                                    prefix, entries):
    """params.json and the snapshots of an older wavegen record neither: it played the draws as drawn, the audio
    unfiltered."""
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    archive = tmp_path / "a"
    older = station(None, model=model)
    older.params.pop(key)
    a = Archive(archive, SR, older.params, part_seconds=3600.0)
    a.open()
    a.write(np.zeros(WINDOW, np.int16))
    a.snapshot(older._engine_state(), older._meta())
    a.close()
    assert key not in json.loads((archive / ".state" / "params.json").read_text())
    with pytest.raises(ServeError, match=re.escape(f"with {key}=0, but this command asks for {key}={value:g} (")):
        station(archive, model=model, **{key: value})
    going_on = station(archive, model=model)
    assert going_on.position == WINDOW
    going_on.archive.close()


@pytest.mark.parametrize("key, value, held, prefix, entries", RECORDED, ids=RECORDED_IDS)
def test_a_snapshot_without_the_state_is_damaged_and_the_one_before_it_gone_on_from(model, tmp_path, pitched, key,
                                                                                   value, held, prefix, entries):
    """A snapshot of an archive recorded with --pitch-sync (--postfilter) that holds no such state (damaged): the
    one before it is gone on from, as for a damaged engine state."""
    from wavegen.render import load_snapshot, save_snapshot

    archive = tmp_path / "a"
    play(model, archive, int(2.5 * WINDOW), snapshot_seconds=GUARD_SECONDS, **{key: value})
    snap = archive / ".state" / "snapshot.npz"
    before = load_snapshot(archive / ".state" / "snapshot.prev.npz")[1]
    state, position, meta = load_snapshot(snap)
    assert {prefix + k for k in entries} <= set(state)
    save_snapshot(snap, {k: v for k, v in state.items() if not k.startswith(prefix)}, position, meta)
    going_on = station(archive, model=model, snapshot_seconds=GUARD_SECONDS, **{key: value})
    assert going_on.position == getattr(going_on, held).pos == before > 0
    assert (archive / ".state" / "snapshot.npz.damaged").exists()
    going_on.archive.close()


def test_a_postfilter_state_taken_at_another_position_is_damaged(model, tmp_path, pitched, caplog):
    """--postfilter's history must be the last samples before the snapshot's position (render's snapshots are held
    to the same): one whose position is another's is damaged, said with both, and the one before it gone on from."""
    from wavegen.render import load_snapshot, save_snapshot

    archive = tmp_path / "a"
    play(model, archive, int(2.5 * WINDOW), snapshot_seconds=GUARD_SECONDS, postfilter=0.8)
    snap = archive / ".state" / "snapshot.npz"
    before = load_snapshot(archive / ".state" / "snapshot.prev.npz")[1]
    state, position, meta = load_snapshot(snap)
    assert int(state["postfilter.pos"]) == position  # as every snapshot holds it
    save_snapshot(snap, {**state, "postfilter.pos": np.array(position - 1, np.int64)}, position, meta)
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        going_on = station(archive, model=model, snapshot_seconds=GUARD_SECONDS, postfilter=0.8)
    assert going_on.position == going_on.post.pos == before > 0
    assert f"is damaged (its --postfilter state is at sample {position - 1}, the snapshot at {position})" in caplog.text
    assert (archive / ".state" / "snapshot.npz.damaged").exists()
    going_on.archive.close()
