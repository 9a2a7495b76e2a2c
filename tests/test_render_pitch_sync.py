"""`wavegen render --pitch-sync RHO`: draws whose Gaussian copula repeats with each stream's pitch period
(wavegen.render.pitchsync).

- 0 is today's render, byte for byte; RHO > 0 renders other audio, the same on every run and whatever the
  chunking (--block-seconds);
- a render stopped mid-window and resumed writes the files of one never stopped, guard on and off; the negative
  controls show the check can fail: without the state restored on resume, or without the guard's redraw rewinding
  it, the files differ;
- the z -> u step keeps the uniforms uniform; the lag estimate finds a tone's period and none in silence or noise;
- a rerun with another --pitch-sync is refused naming both values; a bad value in one line naming it;
- under torchrun each process draws its own streams as one process does.

The tiny random model has no pitch (no block passes THRESHOLD), so the render tests lower the threshold to make
every block with a dip use its lag: they check the draws' bookkeeping, docs/DEMO.md measures their effect.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import wavegen.render.pitchsync as pitchsync
from render_helpers import ENV, make_model, settings, stopped_render
from wavegen.cli import main
from wavegen.render import RenderStateError, render

STREAMS, SECONDS = 3, 1.5


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "tiny")


def crcs(out: Path) -> list[int]:
    return json.loads((out / "render_report.json").read_text())["stream_crc32"]


def run(model, out, *extra) -> list[int]:
    assert main(["-q", "render", str(model), "--out", str(out), "--seconds", str(SECONDS), "--streams", str(STREAMS),
                 "--backend", "torch", "--no-spectrogram", "--no-guard", "--threads", "1",
                 *map(str, extra)]) == 0
    return crcs(out)


def test_pitch_sync_0_is_the_render_without_the_option(model, tmp_path, pitched):
    plain = run(model, tmp_path / "plain")
    assert run(model, tmp_path / "zero", "--pitch-sync", 0) == plain
    report = json.loads((tmp_path / "zero" / "render_report.json").read_text())
    assert report["params"]["pitch_sync"] == 0.0


def test_pitch_sync_renders_other_audio_the_same_every_time(model, tmp_path, pitched):
    plain = run(model, tmp_path / "plain")
    synced = run(model, tmp_path / "a", "--pitch-sync", 0.99)
    assert all(a != b for a, b in zip(synced, plain))
    assert run(model, tmp_path / "b", "--pitch-sync", 0.99) == synced
    assert json.loads((tmp_path / "a" / "render_report.json").read_text())["params"]["pitch_sync"] == 0.99


def test_pitch_sync_does_not_depend_on_the_chunking(model, tmp_path, pitched):
    # 0.05 s = 200 samples: chunks that straddle the 160-sample blocks; 0.7 s: chunks of many blocks
    assert run(model, tmp_path / "a", "--pitch-sync", 0.9, "--block-seconds", 0.05) == \
           run(model, tmp_path / "b", "--pitch-sync", 0.9, "--block-seconds", 0.7)


def guarded(**kw):
    """A render whose fixed-threshold guard finds the tiny model's audio (about -10 dB) silent now and then: redraws."""
    return settings(SECONDS, streams=STREAMS, pitch_sync=0.99, block_seconds=0.05,
                    snapshot_seconds=0.25, guard=True, guard_seconds=0.25, guard_attempts=2, guard_album=False,
                    guard_silence_db=-10.0, **kw)


def unguarded(**kw):
    return settings(SECONDS, streams=STREAMS, pitch_sync=0.99, block_seconds=0.05, snapshot_seconds=0.25, **kw)


def redraws(out: Path) -> int:
    report = json.loads((out / "render_report.json").read_text())
    return sum(1 for e in report["guard"]["events"] if e["kind"] != "gave up")


def filtered(**kw):
    """--postfilter alone (test_render_postfilter): its history is kept in the snapshot beside the engine's too."""
    return settings(SECONDS, streams=STREAMS, postfilter=0.5, block_seconds=0.05, snapshot_seconds=0.25, **kw)


# stopped in the 4th window, mid-window (block 0.05 s); with --postfilter in the 7th, past its first block (sample 1120)
@pytest.mark.parametrize("made, windows", [(unguarded, 3), (guarded, 3), (filtered, 6),
                                           (lambda: guarded(postfilter=0.5), 6)],
                         ids=["no-guard", "guard", "postfilter", "postfilter-guard"])
def test_a_stopped_and_resumed_render_writes_the_files_of_one_never_stopped(model, tmp_path, pitched, made, windows):
    s = made()
    render(model, tmp_path / "ref", s, progress=False)
    if s.guard:
        assert redraws(tmp_path / "ref") > 0  # the guard's rewinds are exercised
    out = tmp_path / "stopped"
    stopped_render(model, out, s, windows=windows)
    render(model, out, s, progress=False)
    assert crcs(out) == crcs(tmp_path / "ref")
    assert json.loads((out / "render_report.json").read_text())["sessions"] == 2


def test_negative_control_the_state_not_restored_on_resume_changes_the_files(model, tmp_path, pitched,
                                                                              monkeypatch):
    s = unguarded()
    render(model, tmp_path / "ref", s, progress=False)
    out = tmp_path / "stopped"
    stopped_render(model, out, s, windows=3)
    # the snapshot's position taken, its z and audio history and lags not: the state of a fresh render
    monkeypatch.setattr(pitchsync.PitchSync, "load_state_dict",
                        lambda self, state: setattr(self, "pos", int(state["pos"])))
    render(model, out, s, progress=False)
    assert crcs(out) != crcs(tmp_path / "ref")


def test_negative_control_a_redraw_without_the_rewind_changes_the_files(model, tmp_path, pitched, monkeypatch):
    s = guarded()
    render(model, tmp_path / "ref", s, progress=False)
    assert redraws(tmp_path / "ref") > 0
    real = pitchsync.PitchSync.begin

    def no_rewind(self, start):  # a redraw goes on from the window's end state
        if start == self.pos:
            real(self, start)

    monkeypatch.setattr(pitchsync.PitchSync, "begin", no_rewind)
    render(model, tmp_path / "unrewound", s, progress=False)
    assert crcs(tmp_path / "unrewound") != crcs(tmp_path / "ref")


@pytest.mark.parametrize("key, made, asked", [("pitch_sync", 0.99, 0.5), ("postfilter", 0.5, 0.25)])
def test_a_rerun_with_another_value_is_refused_naming_both(model, tmp_path, pitched, key, made, asked):
    """--pitch-sync and --postfilter are recorded with the render: another value, or none, is refused naming both."""
    out = tmp_path / "out"
    common = {"streams": STREAMS, "block_seconds": 0.05, "snapshot_seconds": 0.25}
    stopped_render(model, out, settings(SECONDS, **common, **{key: made}), windows=3)
    with pytest.raises(RenderStateError, match=f"{key}={made}, but this command asks for {key}={asked}"):
        render(model, out, settings(SECONDS, **common, **{key: asked}), progress=False)
    with pytest.raises(RenderStateError, match=f"{key}={made}, but this command asks for {key}=0\\. Rerun"):
        render(model, out, settings(SECONDS, **common), progress=False)


RULES = {"--pitch-sync": "a number from 0 up to (not including) 1 (0: off)",
         "--postfilter": "a number from 0 (off) to 1 (the sample a pitch period before weighs as much as the sample "
                         "itself)"}


@pytest.mark.parametrize("flag, typed", [("--pitch-sync", t) for t in ("1", "-0.1", "nan", "1.5")] +
                         [("--postfilter", t) for t in ("-0.1", "nan", "1.5", "inf")])
def test_a_bad_value_is_one_line_naming_it(model, tmp_path, capsys, flag, typed):
    out = tmp_path / "out"
    assert main(["-q", "render", str(model), "--out", str(out), "--seconds", "0.05", f"{flag}={typed}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"wavegen render: error: {flag} {typed}: must be {RULES[flag]}"]
    assert not out.exists()


def test_the_draws_stay_uniform_and_repeat_with_the_lag():
    rng = np.random.default_rng(0)
    rows, m, lag, rho = 4, 100_000, 37, 0.9
    raw = (rng.integers(0, 2 ** 24, size=(rows, m)) * 2.0 ** -24).astype(np.float32)  # render's uniform grid
    history = rng.standard_normal((rows, pitchsync.HISTORY))
    on = np.array([True, True, True, False])
    u, z = pitchsync.pitch_draws(raw, history, np.full(rows, lag), on, rho)
    assert np.array_equal(u[3], raw[3])  # a row off: render's uniforms, bit for bit
    assert u.dtype == np.float32 and u.min() >= 0 and u.max() < 1
    counts = np.histogram(u[:3].ravel(), bins=50, range=(0, 1))[0]
    expected = u[:3].size / 50
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 100, chi2  # 49 degrees of freedom: 100 is beyond p = 1e-5
    for b in range(3):  # z is N(0, 1), correlated rho with itself a lag back (and not at other lags)
        assert abs(z[b].std() - 1) < 0.03
        assert abs(np.corrcoef(z[b, lag:], z[b, :-lag])[0, 1] - rho) < 0.02
        assert abs(np.corrcoef(z[b, 1:], z[b, :-1])[0, 1]) < 0.02
    # the first period leans on the history: z_t = rho z_{t-P} + sqrt(1 - rho^2) Phi^-1(raw_t)
    e = torch.special.ndtri(torch.from_numpy(raw[:3, :lag].astype(np.float64) + 2.0 ** -25)).numpy()
    np.testing.assert_allclose(z[:3, :lag], rho * history[:3, -lag:] + np.sqrt(1 - rho ** 2) * e, rtol=1e-12)


def test_the_lag_is_a_tones_period_and_none_in_silence_or_noise():
    t = np.arange(pitchsync.WINDOW)
    tone = 0.5 * np.sin(2 * np.pi * t / 40.0)  # 100 Hz at 4 kHz: a 40-sample period
    noise = np.random.default_rng(1).standard_normal(pitchsync.WINDOW)
    lag, found = pitchsync.best_lag(np.stack([tone, np.zeros(pitchsync.WINDOW), noise]).astype(np.float32))
    assert found.tolist() == [True, False, False]
    assert lag[0] % 40 == 0  # a whole number of periods (a pure tone peaks at each alike): still in step


@pytest.mark.slow
def test_under_torchrun_each_process_draws_its_streams_as_one_process_does(model, tmp_path, pitched):
    """Two processes (streams 0, 2 and 1) render the files of one: each holds its own streams' state."""
    script = tmp_path / "pitched_cli.py"
    script.write_text("import sys\nimport wavegen.render.pitchsync as pitchsync\npitchsync.THRESHOLD = -1.0\n"
                      "from wavegen.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    out = tmp_path / "two"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
            "-q", "render", str(model), "--seconds", str(SECONDS), "--streams", str(STREAMS), "--out", str(out),
            "--backend", "torch", "--no-guard", "--no-spectrogram", "--threads", "1", "--pitch-sync", "0.99"]
    done = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "render_report.json").read_text())["processes"] == 2
    assert crcs(out) == run(model, tmp_path / "one", "--pitch-sync", 0.99)
