"""Long-form rendering: streaming, exact resume after kill -9, the guard, sharding, reports.

Models are tiny SampleRNNs built here (random weights, or output layers set by hand to make
a model collapse), saved as model folders at 4 kHz so seconds of audio cost little.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from wavegen.audio import dequantize, float_to_int16, quantize, silence_code
from wavegen.checkpoint import load_model, save_model
from wavegen.generate import Engine, TorchSampleRNNEngine, make_engine, sample_codes, uniforms
from wavegen.models import build_model, resolve_preset
from wavegen.render import (PCMWriter, RenderSettings, RenderStateError, RenderWriteError, guard_verdict,
                            load_snapshot, render, shard_streams, spectrogram_png, spectrogram_summary)

SR = 4000
Q = 256
SILENCE = silence_code(Q, "mu-law")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: threads only fight over 2 cores


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_model(folder: Path, output_bias=None, labels=(), rnn_type="gru", seed=0) -> Path:
    """A tiny SampleRNN model folder at 4 kHz. ``output_bias [Q]``: zero the output weights and
    set this bias, so every sample is drawn i.i.d. from softmax(bias) whatever the state."""
    config = resolve_preset("samplernn-tiny")
    config["model"].update(dim=16, emb_size=8, labels=list(labels), rnn_type=rnn_type,
                           weight_norm=output_bias is None)
    config["data"] = {"sample_rate": SR}
    torch.manual_seed(seed)
    model = build_model(config)
    if output_bias is not None:
        with torch.no_grad():
            model.mlp.output.weight.zero_()
            model.mlp.output.bias.copy_(torch.as_tensor(output_bias, dtype=torch.float32))
    return save_model(model, config, folder)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "tiny")


def settings(seconds, **kw) -> RenderSettings:
    kw.setdefault("backend", "torch")
    kw.setdefault("spectrogram", False)
    kw.setdefault("guard", False)
    return RenderSettings(seconds=seconds, **kw)


def direct_pcm(model_dir, streams, n, seed=0, temps=1.0, prime=None, label=None) -> np.ndarray:
    """What a render must contain: the engine run directly, int16 [streams, n]."""
    model, _ = load_model(model_dir)
    engine = make_engine(model, streams, "torch")
    engine.reset(prime_codes=prime, label_weights=label)
    codes = engine.generate(uniforms(seed, range(streams), 0, n), temps)
    return float_to_int16(dequantize(codes, Q, "mu-law"))


def read_pcm(path) -> np.ndarray:
    return sf.read(str(path), dtype="int16")[0]


def file_bytes(folder, streams, fmt="wav") -> list[bytes]:
    return [(Path(folder) / f"stream_{i:03d}.{fmt}").read_bytes() for i in range(streams)]


# ----- pieces -------------------------------------------------------------------------------------

def test_shard_streams_partitions_every_stream_once():
    assert shard_streams(5, 0, 2) == [0, 2, 4]
    assert shard_streams(5, 1, 2) == [1, 3]
    assert shard_streams(2, 2, 3) == []
    for streams, world in ((7, 3), (3, 4), (1, 1)):
        shards = [shard_streams(streams, r, world) for r in range(world)]
        assert sorted(sum(shards, [])) == list(range(streams))
    with pytest.raises(ValueError, match="rank 2 of world size 2"):
        shard_streams(4, 2, 2)


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


def test_pcm_writer_resume_truncates_and_header_is_valid(tmp_path):
    path = tmp_path / "a.wav"
    x = (np.arange(1000) * 37 % 65536 - 32768).astype(np.int16)
    w = PCMWriter(path, 8000)
    w.write(x[:600])
    w.flush()
    assert np.array_equal(read_pcm(path), x[:600])  # valid WAV on disk after a flush
    w.write(x[600:900])  # never flushed: as after kill -9
    w.abandon()
    w = PCMWriter(path, 8000, resume_frames=600)
    w.write(x[600:])
    w.close()
    assert np.array_equal(read_pcm(path), x)
    assert sf.info(str(path)).samplerate == 8000
    with pytest.raises(RenderStateError, match="fewer than the 5000"):
        PCMWriter(path, 8000, resume_frames=5000)


def test_spectrogram_summary_finds_the_tone_and_png_is_valid(tmp_path):
    path = tmp_path / "tone.wav"
    t = np.arange(8000 * 12) / 8000
    sf.write(str(path), (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 8000, subtype="PCM_16")
    db, seconds, sr = spectrogram_summary(path, n_fft=1024, columns=40)
    assert (seconds, sr) == (12.0, 8000)
    assert db.shape == (40, 513)
    peak_hz = db.argmax(axis=1) * sr / 1024
    assert np.all(np.abs(peak_hz - 1000) <= sr / 1024)
    png = spectrogram_png(path, tmp_path / "tone.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1000, 400)


# ----- renders in this process --------------------------------------------------------------------

def test_render_equals_the_engine_and_is_identical_across_block_sizes(model, tmp_path):
    n = int(0.75 * SR)
    outs = []
    for k, block in enumerate((0.05, 0.13, 1.0)):
        report = render(model, tmp_path / f"b{k}", settings(0.75, streams=2, block_seconds=block,
                                                              snapshot_seconds=0.2), progress=False)
        assert report["status"] == "complete" and report["seconds"] == 0.75
        outs.append(file_bytes(tmp_path / f"b{k}", 2))
        assert not (tmp_path / f"b{k}" / ".state").exists()
    assert outs[0] == outs[1] == outs[2]
    expected = direct_pcm(model, 2, n)
    for i in range(2):
        assert np.array_equal(read_pcm(tmp_path / "b0" / f"stream_{i:03d}.wav"), expected[i])
    assert not np.array_equal(expected[0], expected[1])
    render(model, tmp_path / "seed1", settings(0.75, streams=2, seed=1), progress=False)
    assert file_bytes(tmp_path / "seed1", 2)[0] != outs[0][0]
    assert np.array_equal(read_pcm(tmp_path / "seed1" / "stream_001.wav"), direct_pcm(model, 2, n, seed=1)[1])


def test_temperature_list_cycles_over_streams(model, tmp_path):
    n = int(0.25 * SR)
    render(model, tmp_path / "t", settings(0.25, streams=3, temperature=[0.5, 2.0]), progress=False)
    expected = direct_pcm(model, 3, n, temps=np.array([0.5, 2.0, 0.5], dtype=np.float32))
    for i in range(3):
        assert np.array_equal(read_pcm(tmp_path / "t" / f"stream_{i:03d}.wav"), expected[i])
    assert not np.array_equal(expected[0], direct_pcm(model, 3, n)[0])


def test_prime_continues_a_recording(model, tmp_path, make_tone):
    make_tone(tmp_path / "prime.wav", 1.0, 8000, freq=300.0)  # another rate: resampled to 4 kHz
    n = int(0.25 * SR)
    render(model, tmp_path / "p", settings(0.25, prime=str(tmp_path / "prime.wav"), prime_seconds=0.5),
           progress=False)
    model_obj = load_model(model)[0]
    from wavegen.audio import load_mono
    codes = quantize(load_mono(tmp_path / "prime.wav", SR)[-2000:], Q, "mu-law")
    assert len(codes) % model_obj.context_samples == 0
    expected = direct_pcm(model, 1, n, prime=codes[None])
    assert np.array_equal(read_pcm(tmp_path / "p" / "stream_000.wav"), expected[0])
    assert not np.array_equal(expected[0], direct_pcm(model, 1, n)[0])


def test_label_blend_conditions_every_stream(tmp_path):
    folder = make_model(tmp_path / "cond", labels=("a", "b"))
    n = int(0.25 * SR)
    render(folder, tmp_path / "l", settings(0.25, streams=2, label="a:1,b:3"), progress=False)
    expected = direct_pcm(folder, 2, n, label=np.array([0.25, 0.75], dtype=np.float32))
    assert np.array_equal(read_pcm(tmp_path / "l" / "stream_001.wav"), expected[1])
    assert not np.array_equal(expected[1], direct_pcm(folder, 2, n, label=np.array([1.0, 0.0]))[1])
    with pytest.raises(ValueError, match="'c' is not one of this model's labels"):
        render(folder, tmp_path / "l2", settings(0.25, label="c"), progress=False)


def test_finished_render_is_left_alone_and_other_parameters_are_refused(model, tmp_path):
    out = tmp_path / "out"
    first = render(model, out, settings(0.25, streams=2, spectrogram=True), progress=False)
    report = json.loads((out / "render_report.json").read_text())
    assert report["params"]["seed"] == 0 and report["streams"] == 2
    assert [Path(p).name for p in report["spectrograms"]] == ["stream_000.png", "stream_001.png"]
    assert all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in report["spectrograms"])
    assert report["backend"] == "torch" and report["realtime_factor"] > 0 and report["wall_seconds"] > 0
    stamp = [(out / f"stream_{i:03d}.wav").stat().st_mtime_ns for i in range(2)]
    again = render(model, out, settings(0.25, streams=2, spectrogram=True), progress=False)
    assert again == first
    assert [(out / f"stream_{i:03d}.wav").stat().st_mtime_ns for i in range(2)] == stamp
    with pytest.raises(RenderStateError, match=r"seed=0.*asks for seed=7.*--restart"):
        render(model, out, settings(0.25, streams=2, seed=7), progress=False)
    with pytest.raises(RenderStateError, match=r"temperature=\[1.0, 1.0\].*temperature=\[0.5, 0.5\]"):
        render(model, out, settings(0.25, streams=2, temperature=[0.5]), progress=False)
    before = file_bytes(out, 2)
    render(model, out, settings(0.25, streams=2, seed=7), progress=False, restart=True)
    assert file_bytes(out, 2) != before
    assert not (out / "stream_000.png").exists()  # --restart removed the old render's files
    # a file this render did not write is never overwritten silently
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "stream_000.wav").write_bytes(b"mine")
    with pytest.raises(RenderStateError, match="not part of a resumable render"):
        render(model, tmp_path / "foreign", settings(0.25), progress=False)
    assert (tmp_path / "foreign" / "stream_000.wav").read_bytes() == b"mine"


def test_unwritable_folder_stops_with_a_clear_message(model, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RenderWriteError, match=r"file is a file, not a folder: cannot create the render output .*file/out"):
        render(model, tmp_path / "file" / "out", settings(0.25), progress=False)
    with pytest.raises(RenderWriteError, match=r"--out .*file is a file, not a folder"):  # --out names a file
        render(model, tmp_path / "file", settings(0.25), progress=False)
    assert (tmp_path / "file").read_text() == "x"
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "out"
    else:  # root writes anywhere chmod says not to; /sys refuses even root
        target = Path("/sys/wavegen-render-test")
        try:
            target.mkdir()
        except OSError:
            pass
        else:
            target.rmdir()
            pytest.skip("no unwritable folder available to root here")
    with pytest.raises(RenderWriteError, match=r"cannot create the render output .*(wavegen-render-test|locked)"):
        render(model, target, settings(0.25), progress=False)


# ----- the guard ----------------------------------------------------------------------------------

def one_hot_bias(probabilities: dict[int, float]) -> np.ndarray:
    bias = np.full(Q, -1e4, dtype=np.float32)  # exp underflows: probability exactly 0
    for code, p in probabilities.items():
        bias[code] = np.log(p)
    return bias


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


def expected_guarded(bias, streams, windows, width, attempts_max, seed=0):
    """The i.i.d. model's render, guard on, computed from the uniforms alone: (int16 [S, T], events)."""
    logits = torch.as_tensor(bias).expand(width, Q)
    temp = torch.ones(width)
    out, events = np.empty((streams, windows * width), dtype=np.int16), []
    for s in range(streams):
        for w in range(windows):
            for attempt in range(attempts_max + 1):
                u = torch.from_numpy(uniforms(seed, [s], w * width, width, attempt)[0])
                codes = sample_codes(logits, u, temp).numpy()
                if np.any(codes != SILENCE):
                    break
                events.append({"stream": s, "seconds": round(w * width / SR, 6), "kind": "silence",
                               "attempt": attempt})
            else:
                events.append({"stream": s, "seconds": round(w * width / SR, 6), "kind": "gave up",
                               "attempt": attempts_max, "detected": "silence"})
            out[s, w * width:(w + 1) * width] = float_to_int16(dequantize(codes, Q, "mu-law"))
    return out, events


@pytest.mark.parametrize("block_seconds", [0.001, 0.05])
def test_guard_rewinds_and_redraws_exactly(tmp_path, block_seconds):
    """A model that is silent 90% of the time: 8-sample windows are often all silent; each is
    redrawn with attempt + 1 until it is not (or given up), and the files hold exactly that."""
    loud = int(quantize(np.array([0.05]), Q, "mu-law")[0])
    bias = one_hot_bias({SILENCE: 0.9, loud: 0.1})
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


def test_guard_rewinds_only_the_failing_streams_of_a_batch(model, tmp_path):
    """A real (state-carrying) model, the noise threshold set at the median flatness of its windows
    so that about half fail: the batched render must equal each stream rendered alone by the
    plain recipe (save state, generate, check, on failure restore and redraw with attempt + 1)."""
    s = settings(1.8, streams=3, guard=True, guard_seconds=0.6, guard_attempts=2, guard_noise_flatness=0.945)
    report = render(model, tmp_path / "out", s, progress=False)
    width = int(0.6 * SR)
    spec = load_model(model)[0].inference_spec()
    events = []
    for stream in range(3):
        engine = make_engine(spec, 1, "torch")
        pcm = []
        for pos in range(0, int(1.8 * SR), width):
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


# ----- real processes: kill -9, SIGINT, a failing disk, flat memory, torchrun ---------------------

def cli(*args) -> list[str]:
    return [sys.executable, "-m", "wavegen", "-q", "render", *map(str, args)]


def wait_for_snapshot(proc, snapshot: Path, timeout=90.0) -> int:
    """Wait until the render has saved a snapshot with samples in it; → samples in the snapshot."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if snapshot.is_file():
            try:
                written = load_snapshot(snapshot)[1]
            except RenderStateError:  # replaced while being read
                written = 0
            if written > 0:
                return written
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no snapshot appeared")


@pytest.mark.slow
@pytest.mark.parametrize("fmt,sig", [("wav", signal.SIGKILL), ("flac", signal.SIGKILL), ("wav", signal.SIGINT)])
def test_resume_after_the_process_is_killed_is_byte_identical(tmp_path, fmt, sig):
    """A real `python -m wavegen render` killed mid-render, rerun: the same bytes as one that never stopped.

    The model is the guarded i.i.d. one, so guard events must survive the kill as well.
    """
    loud = int(quantize(np.array([0.05]), Q, "mu-law")[0])
    folder = make_model(tmp_path / "iid", output_bias=one_hot_bias({SILENCE: 0.9, loud: 0.1}))
    seconds, guard_s = 3.0, 8 / SR
    ref = render(folder, tmp_path / "ref", settings(seconds, streams=2, format=fmt, guard=True,
                                                     guard_seconds=guard_s, guard_attempts=3), progress=False)
    out = tmp_path / "out"
    args = cli(folder, "--seconds", seconds, "--streams", 2, "--out", out, "--format", fmt, "--backend", "torch",
               "--guard-seconds", guard_s, "--guard-attempts", 3, "--snapshot-seconds", 0.25,
               "--block-seconds", 0.1, "--no-spectrogram")
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    written = wait_for_snapshot(proc, out / ".state" / "rank0.npz")
    time.sleep(0.4)  # audio past the snapshot reaches the files: the resume must cut it off
    assert proc.poll() is None, "the render finished before it could be interrupted"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, stderr
        assert "snapshot saved. Rerun the same command to resume" in stderr
    state_written = load_snapshot(out / ".state" / "rank0.npz")[1]
    assert written <= state_written < seconds * SR
    assert not (out / "render_report.json").exists()
    # another command in that folder is refused, naming what differs; the state survives it
    wrong = subprocess.run(cli(folder, "--seconds", seconds, "--streams", 2, "--out", out, "--format", fmt,
                               "--backend", "torch", "--temperature", "0.9", "--guard-seconds", guard_s,
                               "--guard-attempts", 3), env=ENV, capture_output=True, text=True)
    assert wrong.returncode == 2 and "temperature" in wrong.stderr and "--restart" in wrong.stderr
    done = subprocess.run(args, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert file_bytes(out, 2, fmt) == file_bytes(tmp_path / "ref", 2, fmt)
    report = json.loads((out / "render_report.json").read_text())
    assert report["sessions"] == 2
    assert report["guard"]["events"] == ref["guard"]["events"] and len(ref["guard"]["events"]) > 100
    assert not (out / ".state").exists()


@pytest.mark.slow
def test_a_failing_disk_stops_with_files_intact_and_resumable(model, tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse writes past 24 kB (EFBIG), as a full disk refuses them
    (ENOSPC): the same OSError path. No root needed, no fake writer."""
    seconds = 5.0
    render(model, tmp_path / "ref", settings(seconds), progress=False)
    out = tmp_path / "out"
    args = cli(model, "--seconds", seconds, "--out", out, "--backend", "torch", "--no-guard",
               "--snapshot-seconds", 0.5, "--block-seconds", 0.25, "--no-spectrogram")
    limit = 24_000

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    failed = subprocess.run(args, env=ENV, capture_output=True, text=True, preexec_fn=small_disk)
    assert failed.returncode == 2
    snapshot_samples = load_snapshot(out / ".state" / "rank0.npz")[1]
    assert snapshot_samples == 2.5 * SR  # the last snapshot before 12k samples (24 kB)
    assert f"cannot write {out / 'stream_000.wav'}: File too large; 2.5 s of each stream written so far " \
           "are intact; free space" in failed.stderr
    assert np.array_equal(read_pcm(out / "stream_000.wav")[:snapshot_samples],
                          read_pcm(tmp_path / "ref" / "stream_000.wav")[:snapshot_samples])
    done = subprocess.run(args, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert file_bytes(out, 1) == file_bytes(tmp_path / "ref", 1)


@pytest.mark.slow
def test_memory_stays_flat_as_the_render_grows(model, tmp_path):
    """64 streams x 2 s and x 8 s: peaks within 2 MB (the 2M samples kept as int16 would add 3 MB)."""
    code = ("import resource, sys, torch; torch.set_num_threads(1)\n"
            "from wavegen.render import RenderSettings, render\n"
            "render(sys.argv[1], sys.argv[2], RenderSettings(seconds=float(sys.argv[3]), streams=64, "
            "backend='torch', guard=False, spectrogram=False, snapshot_seconds=1.0), progress=False)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    peak = {}
    for seconds in (2, 8):
        run = subprocess.run([sys.executable, "-c", code, model, tmp_path / f"s{seconds}", str(seconds)],
                             env=ENV, capture_output=True, text=True, check=True)
        peak[seconds] = int(run.stdout.split()[-1])  # KiB
        assert sf.info(str(tmp_path / f"s{seconds}" / "stream_063.wav")).frames == seconds * SR
    assert peak[8] - peak[2] < 2 * 1024, peak


@pytest.mark.slow
def test_torchrun_shares_streams_and_matches_one_process(model, tmp_path):
    render(model, tmp_path / "one", settings(0.5, streams=3), progress=False)
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",  # torchrun
            "-m", "wavegen", "-q", "render", model,
            "--seconds", 0.5, "--streams", 3, "--out", tmp_path / "two", "--backend", "torch", "--no-guard",
            "--no-spectrogram"]
    run = subprocess.run(list(map(str, args)), env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert file_bytes(tmp_path / "two", 3) == file_bytes(tmp_path / "one", 3)
    report = json.loads((tmp_path / "two" / "render_report.json").read_text())
    assert report["processes"] == 2 and report["params"]["world_size"] == 2
    assert run.stdout.split() == [str(tmp_path / "two" / f"stream_{i:03d}.wav") for i in range(3)]
