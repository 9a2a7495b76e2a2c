"""Rendering in this process: the audio equals the engine's, settings and inputs, the rerun
check, impossible lengths, --checkpoint and --precision. (The guard: test_render_guard.py; real
processes, kills and locks: test_render_processes.py.)"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from render_helpers import (SR, Q, direct_pcm, file_bytes, make_model, read_pcm,  # noqa: F401
                            settings)
from wavegen.audio import quantize
from wavegen.checkpoint import load_model
from wavegen.cli import main
from wavegen.config import ConfigError
from wavegen.errors import WavegenError
from wavegen.render import (FLAC_MAX_SAMPLES, PCMWriter, RenderFolder, RenderStateError,
                            RenderWriteError, check_length, encode_flac, estimate_bytes, parse_label, render,
                            shard_streams)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "tiny")


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
    from wavegen.audio_decode import load_mono
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
    with pytest.raises(ConfigError, match="'c' is not one of this model's labels"):
        render(folder, tmp_path / "l2", settings(0.25, label="c"), progress=False)


def test_a_label_blend_written_another_way_resumes_and_another_blend_is_refused(tmp_path):
    """The blend the engine gets binds a resume, not its spelling: "a:1,b:3" is "b:3,a:1" and "a:0.25,b:0.75"."""
    folder = make_model(tmp_path / "cond", labels=("a", "b"))
    out = tmp_path / "l"
    render(folder, out, settings(0.25, label="a:1,b:3"), progress=False)
    first = file_bytes(out, 1)
    for same in ("b:3,a:1", "a:0.25,b:0.75", "b:3, a", "b:2,a"):
        if same == "b:2,a":  # a third of a, not a quarter: another blend
            with pytest.raises(RenderStateError, match=r"holds a render with label='a:1,b:3', but this command "
                                                       r"asks for label='b:2,a'"):
                render(folder, out, settings(0.25, label=same), progress=False)
        else:
            render(folder, out, settings(0.25, label=same), progress=False)
        assert file_bytes(out, 1) == first, same
    report = json.loads((out / "render_report.json").read_text())
    assert report["params"]["label_weights"] == [0.25, 0.75] and report["params"]["label"] == "a:1,b:3"
    del report["params"]["label_weights"]  # a render recorded before the blend was: its spelling binds, as it did
    (out / "render_report.json").write_text(json.dumps(report))
    with pytest.raises(RenderStateError, match="label='a:1,b:3'"):
        render(folder, out, settings(0.25, label="b:3,a:1"), progress=False)
    render(folder, out, settings(0.25, label="a:1,b:3"), progress=False)


def test_a_label_with_spaces_is_rendered_by_its_exact_name(tmp_path, capsys):
    """prep takes any folder name: a label " lead" (as `lab/ lead`) is --label " lead", alone or blended."""
    folder = make_model(tmp_path / "cond", labels=(" lead", "bass"))
    assert main(["-q", "render", str(folder), "--out", str(tmp_path / "l"), "--seconds", "0.25", "--backend", "torch",
                 "--no-guard", "--no-spectrogram", "--label", " lead"]) == 0, capsys.readouterr().err
    expected = direct_pcm(folder, 1, int(0.25 * SR), label=np.array([1.0, 0.0], dtype=np.float32))
    assert np.array_equal(read_pcm(tmp_path / "l" / "stream_000.wav"), expected[0])
    names = [" lead", "bass", "lead ", "a", " a"]
    for text, weights in ((" lead", [1, 0, 0, 0, 0]), ("lead ", [0, 0, 1, 0, 0]), (" a", [0, 0, 0, 0, 1]),
                          ("bass, lead", [0.5, 0.5, 0, 0, 0]), ("bass,  lead", [0.5, 0.5, 0, 0, 0]),
                          (" lead : 1 ,bass:3 ", [0.25, 0.75, 0, 0, 0]), ("bass:1,lead :3", [0, 0.25, 0.75, 0, 0]),
                          ("a, a", [0, 0, 0, 0.5, 0.5]), ("a,a", [0, 0, 0, 1, 0]), ("  bass ", [0, 1, 0, 0, 0])):
        assert parse_label(text, names).tolist() == weights, text
    with pytest.raises(ConfigError, match=r"'lead' is not one of this model's labels: ' lead', bass$"):
        parse_label("lead", [" lead", "bass"])


def test_finished_render_is_left_alone_and_other_parameters_are_refused(model, tmp_path):
    out = tmp_path / "out"
    first = render(model, out, settings(0.25, streams=2, spectrogram=True), progress=False)
    report = json.loads((out / "render_report.json").read_text())
    assert report["params"]["seed"] == 0 and report["streams"] == 2
    assert report["spectrograms"] == ["stream_000.png", "stream_001.png"]  # names in OUT
    assert all((out / p).read_bytes()[:4] == b"\x89PNG" for p in report["spectrograms"])
    assert first["spectrograms"] == [str(out / p) for p in report["spectrograms"]]  # paths as OUT was given
    assert report["backend"] == "torch" and report["realtime_factor"] > 0 and report["wall_seconds"] > 0
    stamp = [(out / f"stream_{i:03d}.wav").stat().st_mtime_ns for i in range(2)]
    again = render(model, out, settings(0.25, streams=2, spectrogram=True), progress=False)
    assert again == first
    assert [(out / f"stream_{i:03d}.wav").stat().st_mtime_ns for i in range(2)] == stamp
    with pytest.raises(RenderStateError, match=r"seed=0.*asks for seed=7.*--restart"):
        render(model, out, settings(0.25, streams=2, seed=7), progress=False)
    with pytest.raises(RenderStateError, match=r"with temperature=1, but this command asks for temperature=0\.5\. "):
        render(model, out, settings(0.25, streams=2, temperature=[0.5]), progress=False)
    report_text = (out / "render_report.json").read_text()
    (out / "render_report.json").write_text(report_text[:40])  # damaged: named, with the way out
    with pytest.raises(RenderStateError, match=r"render_report\.json: unreadable render report .*--restart"):
        render(model, out, settings(0.25, streams=2, spectrogram=True), progress=False)
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
    with pytest.raises(RenderWriteError, match=r"file is a file, not a folder: cannot create the render output .*/out"):
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


# ----- what cannot work is refused up front -------------------------------------------------------

def test_impossible_lengths_are_refused_before_anything_is_written(model, tmp_path, capsys):
    out = tmp_path / "out"
    for seconds, fmt, message in (
            (math.inf, "wav", "--seconds inf: must be a finite number of seconds above zero"),
            (math.nan, "flac", "--seconds nan: must be a finite number of seconds above zero"),
            (0.0, "wav", "--seconds 0.0: must be a finite number of seconds above zero"),
            (-3, "wav", "--seconds -3: must be a finite number of seconds above zero"),
            (1e-5, "wav", "--seconds 1e-05: less than one sample at 4000 Hz"),
            (1e6, "wav", "--seconds 1000000.0: more than a WAV file can hold (4 GiB: at most 6.2 days per stream "
                         "at 4000 Hz); use --format flac"),
            (1e12, "flac", "--seconds 1000000000000.0: more than a FLAC file can hold (2^36 samples: at most "
                           "198.8 days per stream at 4000 Hz)")):
        with pytest.raises(ConfigError) as caught:
            render(model, out, settings(seconds, format=fmt), progress=False)
        assert str(caught.value).startswith(message)
    assert not out.exists()
    # the limits themselves: the longest file of each format is accepted, one sample more is not
    most_wav = (2**32 - 1 - 44) // 2
    assert check_length(most_wav / SR, SR, "wav") == most_wav
    assert check_length(FLAC_MAX_SAMPLES / SR, SR, "flac") == FLAC_MAX_SAMPLES == 2**36
    for samples, fmt in ((most_wav + 1, "wav"), (FLAC_MAX_SAMPLES + 1, "flac")):
        with pytest.raises(ConfigError, match=f"more than a {fmt.upper()} file can hold"):
            check_length(samples / SR, SR, fmt)
    assert main(["render", str(model), "--seconds", "inf", "--out", str(out)]) == 2  # one line, no traceback
    assert capsys.readouterr().err.splitlines()[-1] == \
        "wavegen render: error: --seconds inf: must be a finite number of seconds above zero"


def test_a_rate_the_format_cannot_hold_is_refused_before_anything_is_rendered(tmp_path, capsys):
    """A FLAC file is encoded once every sample is made: a model whose rate libsndfile's FLAC encoder
    refuses (above 655350 Hz: ultrasonic recordings at 768 kHz) failed only then, after the whole
    render, saying to free space and rerun, which failed again."""
    from conftest import save_tiny_model

    fast = save_tiny_model(tmp_path / "768k", sample_rate=768_000, dim=16, emb_size=8)
    out = tmp_path / "out"
    assert main(["-q", "render", str(fast), "--seconds", "0.001", "--format", "flac", "--out", str(out),
                 "--backend", "torch", "--no-guard", "--no-spectrogram"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "wavegen render: error: --format flac: this model's sample rate is 768000 Hz, and a FLAC file holds at "
        "most 655350 Hz; use --format wav")
    assert not out.exists()
    report = render(fast, out, settings(0.001), progress=False)  # WAV holds it
    assert sf.info(report["paths"][0]).samplerate == 768_000 and sf.info(report["paths"][0]).frames == 768
    assert check_length(1.0, 655_350, "flac") == 655_350  # the highest FLAC rate, written whole
    encoded = tmp_path / "most.flac"
    (tmp_path / "most.pcm").write_bytes(np.arange(100, dtype="<i2").tobytes())
    encode_flac(tmp_path / "most.pcm", encoded, 655_350)
    assert sf.info(str(encoded)).samplerate == 655_350
    with pytest.raises(ConfigError, match=r"a WAV file holds at most 2147483647 Hz; use a model of a lower rate"):
        check_length(1e-9, 2**31, "wav")


def test_the_size_estimate_is_what_a_render_writes_and_a_short_disk_is_warned(model, tmp_path, caplog):
    render(model, tmp_path / "w", settings(0.25, streams=2), progress=False)
    assert sum(p.stat().st_size for p in (tmp_path / "w").glob("stream_*.wav")) == estimate_bytes(2, SR // 4, "wav")
    folder = RenderFolder(tmp_path / "big", streams=1000, fmt="flac")
    folder.out_dir.mkdir()
    per_stream = shutil.disk_usage(tmp_path).free // (4 * 1000) + SR  # PCM + FLAC: 4 bytes a sample at most
    with caplog.at_level("WARNING", logger="wavegen.render"):
        folder.warn_if_short_of_space(SR)
        assert caplog.text == ""
        folder.warn_if_short_of_space(per_stream)
    assert f"{folder.out_dir}: this render needs about" in caplog.text and "GB free" in caplog.text


def test_user_errors_on_the_render_path_are_wavegen_errors(model, tmp_path):
    for bad in (dict(streams=0), dict(format="ogg"), dict(temperature=[0.0]), dict(temperature=[1.0, math.inf]),
                dict(guard_attempts=-1), dict(block_seconds=math.nan), dict(prime_seconds=0), dict(precision="fp8")):
        with pytest.raises(ConfigError):
            settings(1.0, **bad).validate()
    for text, labels, message in (("c", ["a", "b"], "'c' is not one of this model's labels: a, b"),
                                  ("a:x", ["a"], "weight 'x' is not a number"), ("a:-1", ["a"], "not negative"),
                                  ("a:0", ["a"], "weights sum to zero"), ("a", [], "not trained with labels"),
                                  # positive, but 0 in float32 (the blend's type): not "sum to zero"
                                  ("a:1e-46,b:0", ["a", "b"], "'a:1e-46,b:0': weights too small; give them as shares"),
                                  (None, ["a"], "choose one with --label")):
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_label(text, labels)
    assert parse_label("a:1,b:3", ["a", "b"]).tolist() == [0.25, 0.75]
    # a label folder's name may hold ',' and ':' (prep takes any folder name): read whole, alone or blended
    names = ["Earth", "Earth, Wind & Fire", "Live: 1999"]
    assert parse_label("Earth, Wind & Fire", names).tolist() == [0, 1, 0]
    assert parse_label("Live: 1999", names).tolist() == [0, 0, 1]
    assert parse_label("Earth, Wind & Fire:1, Live: 1999:3", names).tolist() == [0, 0.25, 0.75]
    assert parse_label("Earth,Live: 1999", names).tolist() == [0.5, 0, 0.5]
    with pytest.raises(ConfigError, match="'Live' is not one of"):
        parse_label("Live", names)
    with pytest.raises(ConfigError, match=r"--prime .*nothing\.wav: no such file"):
        render(model, tmp_path / "p", settings(0.1, prime=str(tmp_path / "nothing.wav")), progress=False)
    with pytest.raises(WavegenError, match="backend 'nope'"):
        render(model, tmp_path / "b", settings(0.1, backend="nope"), progress=False)
    with pytest.raises(ConfigError, match="samplernn-tiny is a preset .*render needs a trained model"):
        render("samplernn-tiny", tmp_path / "b", settings(0.1), progress=False)


# ----- which weights, which arithmetic ------------------------------------------------------------

def test_checkpoint_renders_a_kept_checkpoint_and_binds_its_weights(model, tmp_path, capsys):
    """A run folder as wavegen train leaves it: config.json, best/, checkpoints/step_N/."""
    run = tmp_path / "run"
    shutil.copytree(model, run / "best")
    shutil.copy(model / "config.json", run / "config.json")
    for step, seed in ((5, 1), (9, 2)):
        kept = run / "checkpoints" / f"step_{step}"
        kept.mkdir(parents=True)
        shutil.copy(make_model(tmp_path / f"seed{seed}", seed=seed) / "model.safetensors", kept)
        (kept / "trainer_state.json").write_text(json.dumps({"step": step}))  # written before files were listed
    n = SR // 8
    render(run, tmp_path / "five", settings(0.125), progress=False, checkpoint="step_5")
    assert np.array_equal(read_pcm(tmp_path / "five" / "stream_000.wav"), direct_pcm(tmp_path / "seed1", 1, n)[0])
    flags = ["--seconds", "0.125", "--backend", "torch", "--no-guard", "--no-spectrogram"]
    assert main(["-q", "render", str(run), "--checkpoint", "last", "--out", str(tmp_path / "last"), *flags]) == 0
    assert np.array_equal(read_pcm(tmp_path / "last" / "stream_000.wav"), direct_pcm(tmp_path / "seed2", 1, n)[0])
    render(run, tmp_path / "best", settings(0.125), progress=False)
    assert np.array_equal(read_pcm(tmp_path / "best" / "stream_000.wav"), direct_pcm(model, 1, n)[0])
    with pytest.raises(RenderStateError, match="model_sha256="):  # other weights into the same folder
        render(run, tmp_path / "five", settings(0.125), progress=False, checkpoint="step_9")
    capsys.readouterr()
    assert main(["-q", "render", str(run), "--checkpoint", "step_7", "--out", str(tmp_path / "x"), *flags]) == 2
    assert "--checkpoint step_7: no such checkpoint" in capsys.readouterr().err


def numba_precisions() -> tuple[str, ...]:
    from wavegen.generate import available_backends

    if available_backends("samplernn").get("numba") is not None:
        return ()
    from wavegen.kernels.numba_common import STORED_PRECISIONS
    return STORED_PRECISIONS


def test_precision_is_a_binding_parameter_refused_where_the_backend_lacks_it(model, tmp_path, capsys):
    flags = ["--seconds", "0.125", "--no-guard", "--no-spectrogram"]
    assert main(["-q", "render", str(model), "--out", str(tmp_path / "t"), "--backend", "torch",
                 "--precision", "fp16", *flags]) == 2
    assert "precision fp16 is not supported by torch (it has fp32)" in capsys.readouterr().err
    assert not (tmp_path / "t" / "stream_000.wav").exists()
    if "bf16" not in numba_precisions():
        pytest.skip("no numba bf16 engine here")
    n = SR // 8
    report = render(model, tmp_path / "h", settings(0.125, backend="numba", precision="bf16"), progress=False)
    got = read_pcm(tmp_path / "h" / "stream_000.wav")
    assert np.array_equal(got, direct_pcm(model, 1, n, backend="numba", precision="bf16")[0])
    assert not np.array_equal(got, direct_pcm(model, 1, n, backend="numba")[0])  # bf16 changes the audio ...
    assert report["precision"] == report["params"]["precision"] == "bf16"
    with pytest.raises(RenderStateError, match=r"precision='bf16'.*precision='fp32'"):  # ... so it binds
        render(model, tmp_path / "h", settings(0.125, backend="numba"), progress=False)


def test_threads_sets_numba_and_torch_threads_and_refuses_zero(model, tmp_path, capsys):
    import numba
    import torch

    before = torch.get_num_threads(), numba.get_num_threads()
    flags = ["--seconds", "0.125", "--no-guard", "--no-spectrogram"]
    try:
        assert main(["-q", "render", str(model), "--out", str(tmp_path / "one"), "--threads", "1", *flags]) == 0
        assert (torch.get_num_threads(), numba.get_num_threads()) == (1, 1)
        assert np.array_equal(read_pcm(tmp_path / "one" / "stream_000.wav"), direct_pcm(model, 1, SR // 8)[0])
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])
    capsys.readouterr()
    assert main(["-q", "render", str(model), "--out", str(tmp_path / "zero"), "--threads", "0", *flags]) == 2
    assert "--threads 0: need at least one" in capsys.readouterr().err
    assert not (tmp_path / "zero").exists()
