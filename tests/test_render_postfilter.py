"""`wavegen render --postfilter G`: each written sample averaged with the model's sample a pitch period before it
(wavegen.render.postfilter), y[n] = (x[n] + G x[n-P]) / (1 + G) where the stream has a pitch.

- the arithmetic, sample by sample, on a pitched signal, and the same output however the audio is split;
- 0 is the render without the option, byte for byte; G > 0 writes the model's own audio (the render without it)
  filtered: the model, the guard and --pitch-sync never hear the filter;
- a render stopped mid-window and resumed writes the files of one never stopped (the filter's history kept in the
  snapshot), guard on and off (test_render_pitch_sync checks it for both options); the negative control shows the
  check can fail (the history not kept);
- a rerun with another G is refused naming both; a bad G is one line naming it (test_render_pitch_sync checks
  both for both options).

The tiny random model has no pitch over the real threshold, so the render tests lower it (the ``pitched`` fixture):
every block whose autocorrelation dips uses its lag. docs/DEMO.md measures what the filter does to a real render.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from render_helpers import stopped_render
from test_render_pitch_sync import STREAMS, crcs, filtered, model, run  # noqa: F401  (its helpers and model)
from wavegen.audio import dequantize, float_to_int16
from wavegen.render import render
from wavegen.render.pitchsync import BLOCK, WINDOW, best_lag
from wavegen.render.settings import RenderStateError
from wavegen.render.postfilter import Postfilter
from wavegen.render.shard import POST_PREFIX
from wavegen.render.writers import load_snapshot, save_snapshot


def pitched_audio(n: int, seed: int = 0) -> np.ndarray:
    """Two streams: a tone of period 50 samples with a little noise on it, and one of period 73."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    rows = [0.5 * np.sin(2 * np.pi * t / period) + 0.2 * np.sin(4 * np.pi * t / period) for period in (50, 73)]
    return (np.stack(rows) + 0.05 * rng.standard_normal((2, n))).astype(np.float32)


def test_each_sample_is_averaged_with_the_one_a_pitch_period_before():
    x, g = pitched_audio(4000), 0.6
    y, _ = Postfilter(g, 2).filtered(x)
    want = x.astype(np.float64).copy()
    for start in range(0, 4000, BLOCK):
        if start < WINDOW:
            continue  # fewer than WINDOW samples before the block: written as made
        lags, on = best_lag(x[:, start - WINDOW:start])
        assert on.all() and lags[0] % 50 == 0 and lags[1] % 73 == 0, lags  # the tones' periods (or a multiple)
        for b in range(2):
            for i in range(start, min(start + BLOCK, 4000)):
                want[b, i] = (x[b, i] + g * x[b, i - lags[b]]) / (1 + g)
    np.testing.assert_allclose(y, want, rtol=0, atol=2e-7)
    assert np.array_equal(y[:, :WINDOW + BLOCK - WINDOW % BLOCK], x[:, :WINDOW + BLOCK - WINDOW % BLOCK])


def test_the_output_does_not_depend_on_how_the_audio_is_split():
    x = pitched_audio(6000, seed=1)
    whole, after = Postfilter(1.0, 2).filtered(x)
    split = Postfilter(1.0, 2)
    parts = []
    for lo, hi in [(0, 700), (700, 1121), (1121, 1130), (1130, 3333), (3333, 6000)]:  # across blocks, at odd places
        y, state = split.filtered(x[:, lo:hi])
        parts.append(y)
        split.load_state_dict(state)
    assert np.array_equal(np.concatenate(parts, axis=1), whole)
    assert split.pos == 6000 and np.array_equal(split.x, after["x"])


def test_postfilter_0_is_the_render_without_the_option(model, tmp_path, pitched):
    assert run(model, tmp_path / "zero", "--postfilter", 0) == run(model, tmp_path / "plain")
    assert json.loads((tmp_path / "zero" / "render_report.json").read_text())["params"]["postfilter"] == 0.0


@pytest.mark.parametrize("pitch_sync", [0, 0.99], ids=["plain draws", "pitch-sync"])
def test_it_writes_the_models_own_audio_filtered(model, tmp_path, pitched, pitch_sync):
    """The render with the filter holds the render without it, filtered: what the model made is what it made
    without the filter (it never hears the filter), and only the written audio changes."""
    plain = run(model, tmp_path / "plain", "--pitch-sync", pitch_sync)
    filtered = run(model, tmp_path / "filtered", "--pitch-sync", pitch_sync, "--postfilter", 0.5)
    assert all(a != b for a, b in zip(filtered, plain))
    config = json.loads((model / "config.json").read_text())["model"]
    table = float_to_int16(dequantize(np.arange(config["q_levels"]), config["q_levels"], config["quantization"]))
    assert len(set(table.tolist())) == config["q_levels"]  # each level its own PCM value: the codes read back
    made = np.stack([sf.read(str(tmp_path / "plain" / f"stream_{i:03d}.wav"), dtype="int16")[0]
                     for i in range(STREAMS)])
    codes = np.searchsorted(table, made)
    assert np.array_equal(table[codes], made)
    want, _ = Postfilter(0.5, STREAMS).filtered(dequantize(codes, config["q_levels"], config["quantization"]))
    for i in range(STREAMS):
        written = sf.read(str(tmp_path / "filtered" / f"stream_{i:03d}.wav"), dtype="int16")[0]
        assert np.array_equal(written, float_to_int16(want[i]))
    assert json.loads((tmp_path / "filtered" / "render_report.json").read_text())["params"]["postfilter"] == 0.5


# a stopped and resumed render writes the files of one never stopped, guard on and off: test_render_pitch_sync's
# test, parametrized over both options


def test_negative_control_the_history_not_kept_in_the_snapshot_changes_the_files(model, tmp_path, pitched,
                                                                                 monkeypatch):
    s = filtered()
    render(model, tmp_path / "ref", s, progress=False)
    out = tmp_path / "stopped"
    real = Postfilter.state_dict
    monkeypatch.setattr(Postfilter, "state_dict", lambda self: {**real(self), "x": np.zeros_like(self.x)})
    stopped_render(model, out, s, windows=6)
    render(model, out, s, progress=False)
    assert crcs(out) != crcs(tmp_path / "ref")


# a rerun with another value refused, a bad value refused: test_render_pitch_sync's tests, parametrized over
# --pitch-sync and --postfilter


@pytest.mark.parametrize("damage, said", [
    ("moved", ": its --postfilter state is at sample {pos}, the snapshot at {written}"),
    ("gone", " holds no --postfilter state to resume from")])
def test_a_snapshot_whose_filter_state_does_not_fit_is_refused_naming_why(model, tmp_path, pitched, damage, said):
    """The filter's history is held to its snapshot's position (one taken elsewhere would filter with another
    stream's past): a snapshot whose history is at another sample, or that has none, is refused in one line naming
    the snapshot and why (both positions: it said "holds no state" for both), nothing written."""
    s, out = filtered(), tmp_path / "stopped"
    stopped_render(model, out, s, windows=6)
    (path,) = out.rglob("rank0.npz")  # the newest snapshot (the one before it, rank0.prev.npz, left as it is)
    state, written, meta = load_snapshot(path)
    if damage == "moved":
        state[POST_PREFIX + "pos"] = np.asarray(written - 1)
    else:
        state = {k: v for k, v in state.items() if not k.startswith(POST_PREFIX)}
    save_snapshot(path, state, written, meta)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}  # (.lock: the rerun's)
    with pytest.raises(RenderStateError) as refused:
        render(model, out, s, progress=False)
    assert str(refused.value) == (f"{path}{said.format(pos=written - 1, written=written)}; rerun with --restart to "
                                  "start the render over")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == before
