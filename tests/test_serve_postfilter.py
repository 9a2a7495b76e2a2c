"""`wavegen serve --postfilter G`: the station's handed-on audio through render's pitch postfilter
(wavegen.render.postfilter, called by wavegen.serve.postfilter).

serve plays what a one-stream render of the same model, seed and temperature writes (test_serve_pitch_sync pins
that for the draws), so:

- 0 is today's stream, byte for byte; G > 0 archives, and encodes for the listeners, the audio `wavegen render
  --postfilter G` writes, guard on and off, with --pitch-sync too (the model, the guard and the draws hear the
  model's own audio);
- a station stopped mid-window and started again archives what an uninterrupted one does (the filter's history
  saved in its snapshots and restored), and with the history not saved it would not;
- a restart with another value is refused naming both; an archive begun before serve took the option goes on at 0;
  a snapshot without the state is damaged (the one before it gone on from): test_serve_pitch_sync checks these
  for both options;
- the CLI hands --postfilter to the station (a bad value refused in render's words) and /status says it.

The tiny random model has no pitch over the real threshold, so these tests lower it (the ``pitched`` fixture):
every block whose autocorrelation dips uses its lag, as test_render_postfilter does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from test_serve import SR, _one_error_line, cli_station, reference_pcm
# the pitch-sync tests' station and render helpers, and their fixtures (the tiny model, the redrawing guard)
from test_serve_pitch_sync import (GUARD_SECONDS, WINDOW, archived, model, play, redrawn,  # noqa: F401
                                   restarted, station)
from wavegen.render.postfilter import Postfilter

G = 0.8


def rendered(model: Path, out: Path, n: int, guard: bool, postfilter: float, rho: float = 0.0) -> np.ndarray:
    """What `wavegen render` writes for one stream of ``n`` samples, the station's seed, temperature and guard."""
    from wavegen.render import RenderSettings, render

    settings = RenderSettings(seconds=n / SR, spectrogram=False, guard=guard, guard_seconds=GUARD_SECONDS,
                              guard_silence_db=-10.0, guard_album=False, pitch_sync=rho, postfilter=postfilter)
    render(model, out, settings, progress=False)
    return sf.read(str(out / "stream_000.wav"), dtype="int16")[0]


def params(archive: Path) -> dict:
    return json.loads((archive / ".state" / "params.json").read_text())


def test_postfilter_0_is_the_stream_without_the_option(model, tmp_path, pitched):
    played = play(model, tmp_path / "a", 3 * WINDOW, postfilter=0.0)
    assert played.post is None
    pcm = archived(tmp_path / "a")
    assert len(pcm) == 3 * WINDOW and np.array_equal(pcm, reference_pcm(model, len(pcm)))
    assert params(tmp_path / "a")["postfilter"] == 0.0


@pytest.mark.parametrize("rho", [0.0, 0.99], ids=["draws", "pitch-sync"])
@pytest.mark.parametrize("guard", [False, True], ids=["no-guard", "guard"])
def test_postfilter_plays_what_render_writes(model, tmp_path, pitched, redrawn, monkeypatch, guard, rho):
    from wavegen.serve.encoder import OggOpusEncoder

    heard, encode = [], OggOpusEncoder.encode

    def encoded(self, pcm):  # what the listeners are sent, before Opus
        heard.append(np.array(pcm, copy=True))
        return encode(self, pcm)

    monkeypatch.setattr(OggOpusEncoder, "encode", encoded)
    played = play(model, tmp_path / "a", 3 * WINDOW, postfilter=G, pitch_sync=rho, guard=guard)
    if guard:
        assert played.redraws > 0  # the guard judged the model's own audio, redraws and all
    pcm = archived(tmp_path / "a")
    assert len(pcm) == 3 * WINDOW
    assert np.array_equal(pcm, rendered(model, tmp_path / "r", len(pcm), guard, G, rho))
    assert not np.array_equal(pcm, rendered(model, tmp_path / "r0", len(pcm), guard, 0.0, rho))  # it filters
    assert np.array_equal(np.concatenate(heard), pcm)  # the listeners hear what the archive holds
    assert params(tmp_path / "a")["postfilter"] == G


@pytest.mark.parametrize("guard", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["no-guard", "guard"])
def test_a_stopped_and_restarted_station_archives_what_an_uninterrupted_one_does(model, tmp_path, pitched, redrawn,
                                                                                guard):
    pcm, redraws = restarted(model, tmp_path / "a", postfilter=G, guard=guard)
    assert redraws > 0 if guard else redraws == 0
    assert np.array_equal(pcm, rendered(model, tmp_path / "r", len(pcm), guard, G))


def test_negative_control_the_history_not_kept_changes_the_archive(model, tmp_path, pitched, monkeypatch):
    reference = rendered(model, tmp_path / "r", 3 * WINDOW, False, G)  # before the history is taken away
    real = Postfilter.state_dict

    def no_history(self):  # the position kept, the model's last samples not (zeros)
        state = real(self)
        return {**state, "x": np.zeros_like(state["x"])}

    monkeypatch.setattr(Postfilter, "state_dict", no_history)
    pcm, _ = restarted(model, tmp_path / "a", postfilter=G)
    assert len(pcm) == 3 * WINDOW and not np.array_equal(pcm, reference)


# a restart with another value refused, an archive begun before the option, a snapshot without the state:
# test_serve_pitch_sync's tests of the recorded settings, parametrized over --pitch-sync and --postfilter


def test_the_cli_gives_the_station_its_postfilter(model, monkeypatch):
    code, seen = cli_station(model, monkeypatch, "--no-guard", "--postfilter", "0.8")
    assert code == 0 and seen["station"].post.g == 0.8 and seen["station"].params["postfilter"] == 0.8
    code, seen = cli_station(model, monkeypatch, "--no-guard")
    assert code == 0 and seen["station"].post is None and seen["station"].params["postfilter"] == 0.0


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan"])
def test_a_postfilter_out_of_range_is_refused_in_renders_words(tmp_path, capsys, value):
    from wavegen.cli import main

    # no model there: the refusal comes before anything looks for one
    assert main(["serve", str(tmp_path / "no-model"), "--port", "0", "--postfilter", value]) == 2
    assert f"--postfilter {value}: must be a number from 0 (off) to 1 (the sample a pitch period before weighs as " \
           "much as the sample itself)" in _one_error_line(capsys)


def test_status_says_the_postfilter_in_force(model):
    """/status's answer (what the page and a listener's script read) names the setting, 0 where it is off."""
    from wavegen.serve.app import status
    from wavegen.serve.broadcast import Broadcast

    air = Broadcast(b"", 0.0, burst_seconds=1.0, lag_seconds=1.0, stall_seconds=1.0)
    assert status(station(model=model, postfilter=G), air)["postfilter"] == G
    assert status(station(model=model), air)["postfilter"] == 0.0
