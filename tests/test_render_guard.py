"""The render guard: verdicts on known signals, the criteria object, exact rewinds and redraws,
and the engine features it relies on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from render_helpers import (MOSTLY_SILENT, SILENCE, SR, Q, expected_guarded, make_model, one_hot_bias,  # noqa: F401
                            read_pcm, settings)
from wavegen.audio import dequantize, float_to_int16, quantize
from wavegen.checkpoint import load_model
from wavegen.generate import Engine, TorchSampleRNNEngine, make_engine, sample_codes, uniforms
from wavegen.models import build_model, resolve_preset
from wavegen.render import GuardCriteria, RenderSettings, guard_verdict, render
from wavegen.render.guard import counts_in_words


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model") / "tiny")


# ----- verdicts -----------------------------------------------------------------------------------

def test_guard_verdicts_on_known_signals():
    s = RenderSettings(seconds=1)
    sr, n = 16000, 32000
    t = np.arange(n) / sr
    rng = np.random.default_rng(0)
    music = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 660 * t) + 0.01 * rng.standard_normal(n)
    assert guard_verdict(music, sr, s) is None
    assert guard_verdict(0.003 * np.sin(2 * np.pi * 440 * t), sr, s) is None  # quiet (-53 dB) is not silence
    assert guard_verdict(np.zeros(n), sr, s) == "silence"
    assert guard_verdict(np.full(n, 0.2), sr, s) == "silence"  # stuck on one code: DC only
    assert guard_verdict(dequantize(rng.integers(0, Q, n), Q, "mu-law"), sr, s) == "noise"
    assert guard_verdict(0.3 * rng.standard_normal(n), sr, s) == "noise"
    assert guard_verdict(0.001 * rng.standard_normal(n), sr, s) is None  # flat but quiet (-60 dB)
    assert guard_verdict(np.sign(np.sin(2 * np.pi * 50 * t)), sr, s) == "clipping"
    blip = np.zeros(n)
    blip[n // 2:n // 2 + 400] = music[:400]  # one loud 25 ms burst: not silent throughout
    assert guard_verdict(blip, sr, s) is None


def test_spectral_centroid_bounds_flag_a_rumble_and_a_whistle(tone_album):
    from wavegen.render.album import spectral_centroid
    from wavegen.render.guard import album_criteria

    sr, n = 16000, 32000
    t = np.arange(n) / sr
    rng = np.random.default_rng(1)
    tone = lambda *fs: sum(0.2 * np.sin(2 * np.pi * f * t) for f in fs)  # noqa: E731
    assert abs(spectral_centroid(tone(440), sr) - 440) < 15
    assert abs(spectral_centroid(rng.standard_normal(n), sr) - sr / 4) < 0.05 * sr / 4
    assert spectral_centroid(tone(440)[:1000], sr) is None  # under 8 frames
    c = GuardCriteria(centroid_low=150.0, centroid_high=1600.0)
    assert guard_verdict(tone(220, 660), sr, c) is None
    assert guard_verdict(tone(55, 82), sr, c) == "rumble"
    assert guard_verdict(tone(3000, 3300), sr, c) == "shrill"
    assert guard_verdict(0.01 * tone(55, 82), sr, c) is None  # -40 dBFS: under noise_db, not judged
    assert guard_verdict(tone(55, 82), sr, GuardCriteria()) is None  # the fixed guard has no centroid bounds
    # from a profile: an octave outside the album's 1st-99th percentiles; a profile without
    # centroids (written before they were measured) leaves both unchecked
    _, profile = tone_album
    cent = profile["features"]["centroid"]
    by_album = album_criteria(profile)
    assert by_album.centroid_low == pytest.approx(cent["p1"] / 2) and by_album.centroid_high == pytest.approx(cent["p99"] * 2)
    old = {**profile, "features": {k: v for k, v in profile["features"].items() if k != "centroid"}}
    assert album_criteria(old).centroid_low is None and album_criteria(old).centroid_high is None


def test_guard_criteria_are_one_object_the_verdict_reads():
    """The thresholds travel as GuardCriteria (a corpus profile can fill one): the render's settings
    give the same verdicts through it, and moved thresholds move the verdicts."""
    defaults = RenderSettings(seconds=1)
    assert GuardCriteria.of(defaults) == GuardCriteria()
    custom = RenderSettings(seconds=1, guard_noise_flatness=0.3, guard_silence_db=-40.0)
    assert GuardCriteria.of(custom) == GuardCriteria(noise_flatness=0.3, silence_db=-40.0)
    rng = np.random.default_rng(1)
    sr, n = 16000, 32000
    spectrum = np.fft.rfft(rng.standard_normal(n)) / np.sqrt(np.maximum(np.arange(n // 2 + 1), 1))
    pink = np.fft.irfft(spectrum, n)
    pink *= 0.1 / pink.std()  # pink noise at -20 dBFS: flatness ~0.5, below the default 0.85
    quiet = 0.003 * np.sin(2 * np.pi * 440 * np.arange(n) / sr)  # -53 dBFS
    for judge in (defaults, GuardCriteria()):
        assert guard_verdict(pink, sr, judge) is None and guard_verdict(quiet, sr, judge) is None
    for judge in (custom, GuardCriteria.of(custom)):
        assert guard_verdict(pink, sr, judge) == "noise"
        assert guard_verdict(quiet, sr, judge) == "silence"


# ----- the album profile ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tone_album(tmp_path_factory):
    """A prepared tone album (melodies) at the render helpers' 4 kHz and its profile, measured as training
    measures it (the training split, quantized like samplernn-tiny: mu-law, 256 levels)."""
    from conftest import prepared_corpus

    from wavegen.corpus import Corpus
    from wavegen.render.album import ensure_run_profile

    root = tmp_path_factory.mktemp("album")
    corpus = prepared_corpus(root, files=4, seconds=8.0, sample_rate=SR, val_fraction=0.25, test_fraction=0.25)
    config = {"model": {"q_levels": Q, "quantization": "mu-law"}, "data": {"corpus": str(corpus)}}
    return corpus, json.loads(json.dumps(ensure_run_profile(root, config, Corpus(corpus))))


def rolled_off_noise(n, rng, corner_hz, order):
    """White noise [n] at SR through 1 / (1 + (f / corner) ** order)."""
    freqs = np.fft.rfftfreq(n, 1 / SR)
    return np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) / (1 + (freqs / corner_hz) ** order), n)


def album_windows(seconds=2.0):
    """Windows as a mu-law model would render them: like the album (a melody it never saw) and not."""
    from conftest import melody

    n = int(seconds * SR)
    rng = np.random.default_rng(5)
    as_heard = lambda x: dequantize(quantize(np.clip(x, -1, 1), Q, "mu-law"), Q, "mu-law")  # noqa: E731
    shaped = rolled_off_noise(n, rng, 800.0, 2)
    drone = rolled_off_noise(n, rng, 30.0, 4)  # a low rumble
    t = np.arange(n) / SR
    return as_heard(melody(seconds, SR, seed=77)), {
        "near-white noise": as_heard(0.1 * shaped / shaped.std()),
        "hiss": dequantize(SILENCE + rng.integers(-60, 61, n), Q, "mu-law"),  # -34 dBFS
        "stuck tone": as_heard(0.4 * np.sin(2 * np.pi * 330 * np.arange(n) / SR)),
        "quiet": as_heard(0.01 * melody(seconds, SR, seed=78)),  # -53 dBFS at its loudest
        "dc": as_heard(melody(seconds, SR, seed=79) + 0.2),
        "rumble": as_heard(0.3 * drone / np.abs(drone).max()),
        "shrill": as_heard(0.4 * np.sin(2 * np.pi * (1700 * t + 20 * np.sin(2 * np.pi * 3 * t)))),  # a whistle
    }


def test_a_model_folder_with_an_album_profile_judges_windows_by_the_album(tone_album, tmp_path):
    from wavegen.checkpoint import save_model
    from wavegen.render.album import ALBUM_FILE, album_profile
    from wavegen.render.guard import criteria_for, spectral_flatness
    from wavegen.resolve import resolve_model

    _, profile = tone_album
    assert profile["windows"] == 8 and profile["features"]["periodic_fraction"]["p50"] > 0.9
    plain = make_model(tmp_path / "plain")
    model, config = load_model(plain)
    folder = save_model(model, config, tmp_path / "with_album", {ALBUM_FILE: json.dumps(profile)})
    s = RenderSettings(seconds=1)
    fixed, by_album = criteria_for(s, resolve_model(plain)), criteria_for(s, resolve_model(folder))
    assert fixed == GuardCriteria() and by_album.album_profile == str(folder / ALBUM_FILE)
    assert criteria_for(RenderSettings(seconds=1, guard_album=False), resolve_model(folder)) == GuardCriteria()
    like, unlike = album_windows()
    assert guard_verdict(like, SR, by_album) is None and guard_verdict(like, SR, fixed) is None
    near_white = unlike["near-white noise"]
    assert 0.3 < spectral_flatness(near_white) < GuardCriteria().noise_flatness  # the fixed 0.85 lets it through
    for kind, window in unlike.items():
        assert guard_verdict(window, SR, fixed) is None, kind
        assert guard_verdict(window, SR, by_album) == kind.replace("near-white noise", "noise").replace(
            "hiss", "noise").replace("quiet", "silence"), kind
    # an album that is itself such noise: the same noise window is album-like there (and white
    # noise's album finds it an octave too dark)
    from wavegen.render.guard import album_criteria

    rng = np.random.default_rng(9)
    noisy = album_profile([0.1 * x / x.std() for x in (rolled_off_noise(int(2 * SR), rng, 800.0, 2) for _ in range(8))], SR)
    white = album_profile([rng.standard_normal(int(2 * SR)) * 0.1 for _ in range(8)], SR)
    assert guard_verdict(near_white, SR, album_criteria(noisy)) is None
    assert guard_verdict(near_white, SR, album_criteria(white)) == "rumble"


def test_a_run_profile_is_measured_once_and_again_when_it_lacks_a_feature(tone_album, tmp_path):
    from wavegen.corpus import Corpus
    from wavegen.render.album import ALBUM_FILE, ensure_run_profile

    corpus, _ = tone_album
    config = {"model": {"q_levels": Q, "quantization": "mu-law"}, "data": {"corpus": str(corpus)}}
    first = ensure_run_profile(tmp_path, config, Corpus(corpus))
    (tmp_path / ALBUM_FILE).write_text(json.dumps({**first, "windows": -1}))  # marked: kept as it is
    assert ensure_run_profile(tmp_path, config, Corpus(corpus))["windows"] == -1
    older = {**first, "features": {k: v for k, v in first["features"].items() if k != "centroid"}}
    (tmp_path / ALBUM_FILE).write_text(json.dumps(older))  # written before centroids were measured
    again = ensure_run_profile(tmp_path, config, Corpus(corpus))
    assert again["features"]["centroid"] == first["features"]["centroid"] and again["windows"] == first["windows"]
    assert json.loads((tmp_path / ALBUM_FILE).read_text()) == json.loads(json.dumps(again))


def test_a_render_uses_the_album_profile_and_records_it(tone_album, tmp_path):
    """A model hissing at -34 dBFS (i.i.d. codes near silence): the fixed guard lets it through, the
    album's redraws it; the render's parameters name the profile (a rerun with another one is refused)."""
    from wavegen.checkpoint import save_model
    from wavegen.render.album import ALBUM_FILE

    _, profile = tone_album
    bias = one_hot_bias({SILENCE + k: 1.0 for k in range(-60, 61)})
    model, config = load_model(make_model(tmp_path / "hiss", output_bias=bias))
    folder = save_model(model, config, tmp_path / "hiss_album", {ALBUM_FILE: json.dumps(profile)})
    s = settings(1.0, guard=True, guard_seconds=1.0, guard_attempts=1, backend="numba")
    fixed = render(tmp_path / "hiss", tmp_path / "fixed", s, progress=False)
    assert fixed["guard"]["events"] == [] and "album_profile" not in fixed["params"]["guard"]
    report = render(folder, tmp_path / "album", s, progress=False)
    assert [(e["kind"], e["attempt"]) for e in report["guard"]["events"]] == [("noise", 0), ("noise", 1),
                                                                               ("gave up", 1)]
    assert report["params"]["guard"]["album_profile"] == str(folder / ALBUM_FILE)
    assert report["params"]["guard"]["noise_flatness"] < 0.5


# ----- rewinds and redraws ------------------------------------------------------------------------

def test_guard_gives_up_on_a_model_stuck_in_silence(tmp_path):
    folder = make_model(tmp_path / "silent", output_bias=one_hot_bias({SILENCE: 1.0}))
    report = render(folder, tmp_path / "out", settings(0.5, streams=2, guard=True, guard_seconds=0.25,
                                                        guard_attempts=2), progress=False)
    events = report["guard"]["events"]
    expected = []
    for seconds in (0.0, 0.25):
        for stream in (0, 1):
            expected += [{"stream": stream, "seconds": seconds, "kind": "silence", "attempt": a} for a in (0, 1, 2)]
            expected.append({"stream": stream, "seconds": seconds, "kind": "gave up", "attempt": 2,
                             "detected": "silence"})
    key = lambda e: (e["seconds"], e["stream"], e["attempt"], e["kind"])  # noqa: E731
    assert sorted(events, key=key) == sorted(expected, key=key)
    assert report["guard"]["counts"] == {"silence": 12, "gave up": 4}
    on_disk = json.loads((tmp_path / "out" / "render_report.json").read_text())
    assert on_disk["guard"]["events"] == events
    silent = float_to_int16(dequantize(np.array([SILENCE]), Q, "mu-law"))[0]
    assert np.all(read_pcm(tmp_path / "out" / "stream_001.wav") == silent)  # kept after giving up


def test_guard_detects_runaway_noise_from_uniform_logits(tmp_path):
    folder = make_model(tmp_path / "noise", output_bias=np.zeros(Q, dtype=np.float32))
    report = render(folder, tmp_path / "out", settings(1.0, guard=True, guard_seconds=1.0, guard_attempts=1),
                    progress=False)
    assert [(e["kind"], e["attempt"]) for e in report["guard"]["events"]] == [("noise", 0), ("noise", 1),
                                                                               ("gave up", 1)]
    # the kept window is the redraw: i.i.d. codes from attempt 1's random numbers, not attempt 0's
    redraw = [sample_codes(torch.zeros(SR, Q), torch.from_numpy(uniforms(0, [0], 0, SR, attempt=a)[0]),
                           torch.ones(SR)).numpy() for a in (0, 1)]
    got = read_pcm(tmp_path / "out" / "stream_000.wav")
    assert np.array_equal(got, float_to_int16(dequantize(redraw[1], Q, "mu-law")))
    assert not np.array_equal(got, float_to_int16(dequantize(redraw[0], Q, "mu-law")))


@pytest.mark.parametrize("block_seconds", [0.001, 0.05])
def test_guard_rewinds_and_redraws_exactly(tmp_path, block_seconds):
    """A model that is silent 90% of the time: 8-sample windows are often all silent; each is
    redrawn with attempt + 1 until it is not (or given up), and the files hold exactly that."""
    bias = one_hot_bias(MOSTLY_SILENT)
    folder = make_model(tmp_path / "iid", output_bias=bias)
    width, windows = 8, 100
    report = render(folder, tmp_path / "out", settings(windows * width / SR, streams=2, guard=True,
                                                        guard_seconds=width / SR, guard_attempts=3,
                                                        block_seconds=block_seconds), progress=False)
    expected, events = expected_guarded(bias, 2, windows, width, 3)
    for s in range(2):
        assert np.array_equal(read_pcm(tmp_path / "out" / f"stream_{s:03d}.wav"), expected[s])
    key = lambda e: (e["stream"], e["seconds"], e["attempt"], e["kind"])  # noqa: E731
    assert sorted(report["guard"]["events"], key=key) == sorted(events, key=key)
    kinds = {e["kind"] for e in events}
    assert "silence" in kinds and len(events) > 20  # the guard really worked here


def test_the_render_line_says_the_guard_events_in_words(tmp_path, caplog):
    """The render's last line said its guard events as a Python dict ("guard events: {'silence': 16, 'gave up':
    5}"): now as words, the windows given up last; what the report counts, said as it counts it."""
    bias = one_hot_bias(MOSTLY_SILENT)
    folder = make_model(tmp_path / "iid", output_bias=bias)
    width = 8
    with caplog.at_level("INFO", logger="wavegen.render"):
        report = render(folder, tmp_path / "out", settings(40 * width / SR, guard=True, guard_seconds=width / SR,
                                                            guard_attempts=1), progress=False)
    counts = report["guard"]["counts"]
    assert counts["silence"] > counts["gave up"] > 0  # (redrawn windows, and some kept silent after their redraw)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("rendered "))
    assert (f"; guard events: {counts['silence']} silence, {counts['gave up']} windows given up → "
            f"{tmp_path / 'out'}") in line
    assert counts_in_words({"silence": 2, "noise": 5, "gave up": 1}) == "5 noise, 2 silence, 1 window given up"
    assert counts_in_words({}) == counts_in_words(None) == "none"


def test_guard_rewinds_only_the_failing_streams_of_a_batch(model, tmp_path):
    """A real (state-carrying) model, the noise threshold set at the median flatness of its windows
    so that about half fail: the batched render must equal each stream rendered alone by the
    plain recipe (save state, generate, check, on failure restore and redraw with attempt + 1)."""
    s = settings(1.2, streams=3, guard=True, guard_seconds=0.6, guard_attempts=2, guard_noise_flatness=0.945)
    report = render(model, tmp_path / "out", s, progress=False)
    width = int(0.6 * SR)
    spec = load_model(model)[0].inference_spec()
    events = []
    for stream in range(3):
        engine = make_engine(spec, 1, "torch")
        pcm = []
        for pos in range(0, int(1.2 * SR), width):
            start = engine.state_dict()
            for attempt in range(s.guard_attempts + 1):
                engine.load_state_dict(start)
                codes = engine.generate(uniforms(0, [stream], pos, width, attempt), 1.0)[0]
                verdict = guard_verdict(dequantize(codes, Q, "mu-law"), SR, s)
                if verdict is None:
                    break
                events.append({"stream": stream, "seconds": round(pos / SR, 6), "kind": verdict, "attempt": attempt})
            else:
                events.append({"stream": stream, "seconds": round(pos / SR, 6), "kind": "gave up",
                               "attempt": s.guard_attempts, "detected": verdict})
            pcm.append(float_to_int16(dequantize(codes, Q, "mu-law")))
        assert np.array_equal(read_pcm(tmp_path / "out" / f"stream_{stream:03d}.wav"), np.concatenate(pcm))
    key = lambda e: (e["stream"], e["seconds"], e["attempt"], e["kind"])  # noqa: E731
    assert sorted(report["guard"]["events"], key=key) == sorted(events, key=key)
    # the case this test is for happened: in one window some streams were redrawn and some not
    failing = {}
    for e in events:
        failing.setdefault(e["seconds"], set()).add(e["stream"])
    assert any(0 < len(streams) < 3 for streams in failing.values()), events
    assert any(e["attempt"] == 0 for e in events) and report["guard"]["counts"].get("gave up", 0) < len(events)


# ----- engine features the guard relies on --------------------------------------------------------

@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_stream_state_moves_one_stream_and_leaves_the_others(model, tmp_path, rnn_type):
    folder = make_model(tmp_path / "m", rnn_type=rnn_type) if rnn_type == "lstm" else model
    spec = load_model(folder)[0].inference_spec()
    a, b, c = (make_engine(spec, 3, "torch") for _ in range(3))
    a.generate(uniforms(1, [0, 1, 2], 0, 37), 1.0)
    for e in (b, c):
        e.generate(uniforms(2, [0, 1, 2], 0, 37), 1.0)
    b.set_stream_state(2, a.stream_state(1))  # a's stream 1 now continues as b's stream 2
    assert b.stream_state(2)["history"].tolist() == a.stream_state(1)["history"].tolist()
    u_a, u_b = uniforms(3, [0, 1, 2], 37, 50), uniforms(4, [0, 1, 2], 37, 50)
    u_b[2] = u_a[1]
    out_a, out_b, out_c = a.generate(u_a, 1.0), b.generate(u_b, 1.0), c.generate(u_b, 1.0)
    assert np.array_equal(out_b[2], out_a[1])
    assert np.array_equal(out_b[:2], out_c[:2])  # the others untouched
    assert not np.array_equal(out_b[2], out_c[2])
    # a stream state from another position cannot be swapped in
    d = make_engine(spec, 3, "torch")
    with pytest.raises(ValueError, match="shared state 't'"):
        d.set_stream_state(0, a.stream_state(0))


def engine_cases():
    from wavegen.generate import available_backends
    cases = []
    for preset in ("samplernn-tiny", "wavenet-tiny"):
        family = resolve_preset(preset)["model_type"]
        for backend, reason in available_backends(family).items():
            if reason is None and backend != "cuda":
                cases.append((preset, backend))
    return cases


@pytest.mark.parametrize("preset,backend", engine_cases())
def test_every_engine_gives_state_snapshots_and_stream_states(preset, backend):
    """The render keeps states across steps and moves single streams: every engine must allow it."""
    spec = build_model(resolve_preset(preset)).inference_spec()
    engine = make_engine(spec, 3, backend)
    engine.generate(uniforms(0, [0, 1, 2], 0, 40), 1.0)
    state = engine.state_dict()
    kept = {k: v.copy() for k, v in state.items()}
    engine.generate(uniforms(0, [0, 1, 2], 40, 40), 1.0)
    assert all(np.array_equal(state[k], kept[k]) for k in kept), "state_dict() returned live views"
    after = engine.stream_state(0)
    engine.load_state_dict(state)
    engine.generate(uniforms(0, [0, 1, 2], 40, 40), 1.0)
    engine.set_stream_state(1, after)  # stream 0's state into stream 1
    u = uniforms(0, [0, 1, 2], 80, 30)
    u[1] = u[0]
    codes = engine.generate(u, 1.0)
    assert np.array_equal(codes[1], codes[0])


def test_engine_without_stream_axes_fails_loudly(model):
    class Forgetful(TorchSampleRNNEngine):
        _stream_axes = {"t": None, "history": 0}

    engine = Forgetful(load_model(model)[0].inference_spec(), 2)
    with pytest.raises(NotImplementedError, match="hidden0"):
        engine.stream_state(0)
    assert Engine._stream_axes == {}


def test_a_last_window_of_one_sample_is_not_called_silence(tmp_path):
    """A render one sample longer than whole windows: its last window, one loud sample, was judged
    silent (its RMS about its own mean is 0), redrawn to no end and reported as given up."""
    loud = int(quantize(np.array([-0.5]), Q, "mu-law")[0])
    assert guard_verdict(dequantize(np.array([loud]), Q, "mu-law"), SR, GuardCriteria()) is None
    assert guard_verdict(np.zeros(2), SR, GuardCriteria()) == "silence"  # two samples do have a level
    folder = make_model(tmp_path / "loud", output_bias=one_hot_bias({loud: 0.5, loud + 9: 0.5}))
    width = 8
    report = render(folder, tmp_path / "out", settings((2 * width + 1) / SR, guard=True, guard_seconds=width / SR),
                    progress=False)
    assert report["guard"]["events"] == []
    assert len(read_pcm(tmp_path / "out" / "stream_000.wav")) == 2 * width + 1
