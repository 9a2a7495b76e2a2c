"""Training samples (wavegen.samples): written every sample_interval steps (by default at
validation steps, at most every 500) from the current weights, the same audio a render of that
checkpoint draws, in TensorBoard; atomic under kill -9; a stopped session's past the checkpoint a
run resumes from drawn again; a failure warns and training goes on (a samples folder that cannot be
written: said once at the start); one stream per label for a conditioned model."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import TINY_SAMPLERNN, prepared_corpus, tiny_run_config, tiny_samplernn

from wavegen.cli import main
from wavegen.config import TrainConfig
from wavegen.render import RenderSettings, render
from wavegen.render.album import ALBUM_FILE, find_profile
from wavegen.resolve import resolve_model
from wavegen.samples import SAMPLES_DIR, TrainingSamples, read_samples, sample_steps
from wavegen.train import read_metrics, train


SR = 8000
SAMPLING = ["train.sample_interval=2", "train.sample_seconds=0.5", "train.val_interval=2",
            "train.checkpoint_interval=2", "train.keep_checkpoints=5"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepared_corpus(tmp_path_factory.mktemp("samples"), files=4, seconds=3.0, sample_rate=SR,
                           val_fraction=0.25, test_fraction=0.25)


def config_for(corpus, *extra):
    return tiny_run_config(corpus, *SAMPLING, *extra)


@pytest.fixture(scope="module")
def run(corpus):
    folder = corpus.parent / "run"
    result = train(config_for(corpus, "train.max_steps=4"), folder, progress=False)
    assert result["status"] == "finished"
    return folder


def pcm(path):
    return sf.read(str(path), dtype="int16")[0]


def test_samples_at_each_validation_are_what_a_render_of_the_checkpoint_draws(run):
    assert sample_steps(run) == [2, 4]
    assert not list((run / SAMPLES_DIR).glob(".tmp*"))
    for step in (2, 4):
        folder = run / SAMPLES_DIR / f"step_{step}"
        record = read_samples(run, step)
        assert record["step"] == step and record["backend"] == "numba" and record["seed"] == 0
        assert [s["file"] for s in record["streams"]] == ["stream_000.wav", "stream_001.wav"]
        for stream in record["streams"]:
            assert pcm(folder / stream["file"]).shape == (SR // 2,)
            assert (folder / stream["spectrogram"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert 0.0 <= stream["periodic_fraction"] <= 1.0 and stream["flatness"] > 0
    step2, step4 = (run / SAMPLES_DIR / "step_2", run / SAMPLES_DIR / "step_4")
    assert not np.array_equal(pcm(step2 / "stream_000.wav"), pcm(step4 / "stream_000.wav"))  # new weights
    assert not np.array_equal(pcm(step4 / "stream_000.wav"), pcm(step4 / "stream_001.wav"))  # own numbers
    # the same random numbers and engine as a render of the kept checkpoint: the same audio
    out = run.parent / "render4"
    render(run, out, RenderSettings(seconds=0.5, streams=2, seed=0, guard=False, spectrogram=False), progress=False,
           checkpoint="step_4")
    for k in range(2):
        assert np.array_equal(pcm(out / f"stream_{k:03d}.wav"), pcm(step4 / f"stream_{k:03d}.wav"))


def tensorboard_events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(run / "tb"), size_guidance={"audio": 0, "images": 0, "scalars": 0}).Reload()


def test_samples_reach_tensorboard(run):
    events = tensorboard_events(run)
    tags = events.Tags()
    assert {"samples/stream_0", "samples/stream_1"} <= set(tags["audio"]) & set(tags["images"])
    assert [e.step for e in events.Audio("samples/stream_1")] == [2, 4]
    assert events.Audio("samples/stream_0")[0].sample_rate == SR
    assert [e.step for e in events.Scalars("samples/periodic_fraction")] == [2, 4]


def test_the_album_profile_travels_with_the_model(run):
    profile = (run / ALBUM_FILE).read_text()
    assert (run / "best" / ALBUM_FILE).read_text() == profile  # best/ judges its renders alone
    assert find_profile(resolve_model(run))[0] == run / "best" / ALBUM_FILE
    assert find_profile(resolve_model(run, "step_2"))[0] == run / ALBUM_FILE  # a checkpoint: the run's


def test_a_best_profile_older_than_a_feature_gives_way_to_the_runs(run, tmp_path):
    # best/ written before the centroid was measured; the run's measured again by a later training
    # (which did not improve on best/): the guard judges by the run's, which has every feature
    copy = shutil.copytree(run, tmp_path / "older", ignore=shutil.ignore_patterns("tb", "samples"))
    best = json.loads((copy / "best" / ALBUM_FILE).read_text())
    del best["features"]["centroid"]
    (copy / "best" / ALBUM_FILE).write_text(json.dumps(best))
    assert find_profile(resolve_model(copy))[0] == copy / ALBUM_FILE
    (copy / ALBUM_FILE).unlink()  # no other: best/'s, older as it is (the guard leaves the centroid out)
    assert find_profile(resolve_model(copy))[0] == copy / "best" / ALBUM_FILE


def train_command(corpus, folder, max_steps, *settings):
    """``wavegen train`` of config_for's run, as a process of its own."""
    cmd = [sys.executable, "-m", "wavegen", "train", "--data", str(corpus), "--model", "samplernn-tiny",
           "--run", str(folder), "--max-steps", str(max_steps), "--threads", "1"]
    return cmd + [a for s in TINY_SAMPLERNN + SAMPLING + list(settings) for a in ("--set", s)]


def render_checkpoint(run, step, out):
    """Step ``step``'s checkpoint rendered as its samples were drawn → {stream: int16 PCM}."""
    render(run, out, RenderSettings(seconds=0.5, streams=2, seed=0, guard=False, spectrogram=False), progress=False,
           checkpoint=f"step_{step}")
    return {k: pcm(out / f"stream_{k:03d}.wav") for k in range(2)}


@pytest.mark.slow
def test_a_resume_draws_again_the_samples_a_killed_session_left(run, corpus, tmp_path):
    """Killed after step 4's samples, before its checkpoint; resumed from step 2 with another
    train.mixed_precision: step 4's weights are not the killed session's. Its samples were kept and shown
    again (in TensorBoard too) as this run's ("samples of step 4 already in"); they are drawn again."""
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    killed = pcm(folder / SAMPLES_DIR / "step_4" / "stream_000.wav")
    shutil.rmtree(folder / "checkpoints" / "step_4")  # killed after step 4's samples, before its checkpoint
    # a process of its own: accelerate's precision is fixed once per process
    resumed = subprocess.run(train_command(corpus, folder, 6, "train.mixed_precision=bf16"), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "from step 2" in resumed.stderr and "already in" not in resumed.stderr
    assert "cleared the samples of 1 step past step 2" in resumed.stderr
    assert sample_steps(folder) == [2, 4, 6]
    now = render_checkpoint(folder, 4, tmp_path / "render4")  # the weights of this run's step 4
    for k in range(2):
        assert np.array_equal(pcm(folder / SAMPLES_DIR / "step_4" / f"stream_{k:03d}.wav"), now[k])
    assert not np.array_equal(now[0], killed)  # bf16 steps: other weights, other audio
    # before the checkpoint resumed from: kept as it was
    assert np.array_equal(pcm(folder / SAMPLES_DIR / "step_2" / "stream_000.wav"),
                          pcm(run / SAMPLES_DIR / "step_2" / "stream_000.wav"))
    events = tensorboard_events(folder)  # each step once; step 4 as drawn now
    assert [e.step for e in events.Audio("samples/stream_0")] == [2, 4, 6]
    before = {e.step: e.encoded_audio_string for e in tensorboard_events(run).Audio("samples/stream_0")}
    assert events.Audio("samples/stream_0")[1].encoded_audio_string != before[4]


def test_a_stopped_sessions_samples_go_even_before_the_run_gets_there(run, corpus, tmp_path, caplog):
    """Resumed from step 2 and stopped at step 3 (its checkpoint saved): step 4's samples of the killed
    session are not left beside a run that never reached step 4 with these weights."""
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    shutil.rmtree(folder / "checkpoints" / "step_4")
    (folder / SAMPLES_DIR / "step_4" / "notes.txt").write_text("the user's")
    result = train(config_for(corpus, "train.max_steps=3"), folder, progress=False)
    assert result["step"] == 3 and sample_steps(folder) == [2, 3]
    assert (folder / SAMPLES_DIR / "step_4.earlier" / "notes.txt").read_text() == "the user's"


def test_a_fresh_start_clears_the_samples_of_an_earlier_start(run, corpus, tmp_path, caplog):
    """An earlier start with another config, abandoned before any checkpoint: its samples were kept, and a new
    start showed them (in TensorBoard too) as its own ("samples of step 2 already in")."""
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    shutil.rmtree(folder / "checkpoints")  # no checkpoint: the next start begins at step 0
    earlier = {step: pcm(folder / SAMPLES_DIR / f"step_{step}" / "stream_000.wav") for step in (2, 4)}
    (folder / SAMPLES_DIR / "step_4" / "notes.txt").write_text("the user's")  # not wavegen's: kept, moved aside
    (folder / SAMPLES_DIR / "favourites").mkdir()  # the user's, not a step folder: untouched
    with caplog.at_level(logging.INFO):
        result = train(config_for(corpus, "train.max_steps=2", "model.dim=24"), folder, progress=False)
    assert result["status"] == "finished"
    assert "already in" not in caplog.text and "cleared the samples of 2 steps" in caplog.text
    assert sample_steps(folder) == [2]
    assert read_samples(folder, 2)["run"] != read_samples(run, 2)["run"]
    assert not np.array_equal(pcm(folder / SAMPLES_DIR / "step_2" / "stream_000.wav"), earlier[2])
    aside = folder / SAMPLES_DIR / "step_4.earlier"
    assert (aside / "notes.txt").read_text() == "the user's"
    assert np.array_equal(pcm(aside / "stream_000.wav"), earlier[4])
    assert (folder / SAMPLES_DIR / "favourites").is_dir()
    assert [e.step for e in tensorboard_events(folder).Audio("samples/stream_0")] == [2]


def test_a_step_folder_of_other_sample_settings_is_drawn_again(run, corpus, tmp_path, caplog):
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    shutil.rmtree(folder / "checkpoints" / "step_4")
    with caplog.at_level(logging.INFO):  # resumed from step 2 with longer samples: step 4's are drawn again
        train(config_for(corpus, "train.max_steps=4", "train.sample_seconds=0.25"), folder, progress=False)
    assert "already in" not in caplog.text and "cleared the samples of 1 step past step 2" in caplog.text
    assert read_samples(folder, 4)["seconds"] == 0.25
    assert len(pcm(folder / SAMPLES_DIR / "step_4" / "stream_000.wav")) == SR // 4
    assert read_samples(folder, 2)["seconds"] == 0.5  # before the checkpoint resumed from: as it was


def test_a_failure_to_sample_warns_and_training_goes_on(corpus, tmp_path, caplog):
    folder = tmp_path / "run"
    (folder / SAMPLES_DIR).mkdir(parents=True)
    (folder / SAMPLES_DIR / ".tmp_step_2").write_text("a file in the way")
    with caplog.at_level(logging.WARNING):
        result = train(config_for(corpus, "train.max_steps=2"), folder, progress=False)
    assert result["status"] == "finished" and (folder / "best" / "model.safetensors").is_file()
    assert "samples of step 2 failed" in caplog.text and "training goes on" in caplog.text
    # RUN/samples itself a file: said once at the start, not after rendering every set to fail writing it
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / SAMPLES_DIR).write_text("a file in the way")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        result = train(config_for(corpus, "train.max_steps=4"), blocked, progress=False)
    assert result["status"] == "finished" and "failed" not in caplog.text
    assert caplog.text.count(f"{blocked / SAMPLES_DIR}: not a folder (the run's training samples go there): no "
                             "samples are drawn") == 1
    off = tmp_path / "off"
    train(config_for(corpus, "train.max_steps=2", "train.sample_interval=-1"), off, progress=False)
    assert not (off / SAMPLES_DIR).exists()


@pytest.mark.parametrize("target, reason", [("x" * 300, "File name too long"),
                                            ("../a_file/samples", "Not a directory")],
                         ids=["name_too_long", "into_a_file"])
def test_a_training_whose_samples_cannot_be_written_goes_on_to_its_last_step(corpus, tmp_path, caplog, target,
                                                                            reason):
    """RUN/samples a link to a name too long for the file system, or into a file: the samples failed to start
    and stopped the training before its first step with a save error (no checkpoint, no metrics)."""
    (tmp_path / "a_file").write_text("not a folder")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / SAMPLES_DIR).symlink_to(target)
    with caplog.at_level(logging.WARNING):
        result = train(config_for(corpus, "train.max_steps=4"), folder, progress=False)
    assert result["status"] == "finished" and result["step"] == 4
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["step_2", "step_4"]
    assert (folder / "best" / "model.safetensors").is_file()
    assert [row["step"] for row in read_metrics(folder) if "val_bits" in row] == [2, 4]
    assert sample_steps(folder) == [] and "failed" not in caplog.text  # not rendered to fail at every step
    warned = [r.getMessage() for r in caplog.records if "training samples cannot be written" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(f"{folder / SAMPLES_DIR} (a link to {target})")
    assert f"({reason}): no samples are drawn, training goes on" in warned[0]


def can_write_in(folder) -> bool:
    probe = Path(folder) / f".probe-{os.getpid()}"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True


def test_a_samples_folder_that_cannot_be_written_is_said_once_at_the_start(tmp_path, caplog):
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if can_write_in(read_only):  # root writes there: a folder of sysfs instead (no new files, even for root)
        read_only = Path("/sys/kernel")
        if not read_only.is_dir() or can_write_in(read_only):
            pytest.skip("no folder here that this user cannot write in")
    (tmp_path / SAMPLES_DIR).symlink_to(read_only)
    with caplog.at_level(logging.WARNING):
        samples = TrainingSamples(tmp_path, TrainConfig(sample_seconds=0.05), "cpu", SR, main=True)
    assert samples.blocked and samples.write(2, tiny_samplernn([8, 2])) is None
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "failed" not in caplog.text, warned
    # advice for the samples folder: training goes on in this --run folder (it was check_writable's
    # "make it writable, or give another --run folder", which is advice for a run that cannot start)
    assert warned[0].startswith(f"{tmp_path / SAMPLES_DIR} (a link to {read_only}): the run's training samples "
                                "cannot be written there ("), warned
    assert warned[0].endswith(f"): no samples are drawn, training goes on; make {tmp_path / SAMPLES_DIR} a folder "
                              "this user can write in (or a link to one), or turn samples off with "
                              "train.sample_interval=-1"), warned
    assert "--run" not in warned[0]


def test_a_link_to_a_samples_folder_not_made_yet_gets_the_samples(corpus, tmp_path):
    """RUN/samples a link to a folder on another disk, not made yet: each set failed to write ("File exists",
    mkdir of the link), after it was rendered."""
    elsewhere = tmp_path / "big_disk" / "run_samples"
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / SAMPLES_DIR).symlink_to(elsewhere)
    train(config_for(corpus, "train.max_steps=2"), folder, progress=False)
    assert sample_steps(folder) == [2] and (elsewhere / "step_2" / "stream_000.wav").is_file()


def test_when_samples_are_due():
    def steps(max_steps=12, **settings):
        cfg = TrainConfig(max_steps=max_steps, **settings)
        samples = TrainingSamples("/nonexistent", cfg, "cpu", SR, main=False)
        return [s for s in range(1, max_steps + 1) if samples.due(s)]

    # the default: validation steps no closer than 500 steps apart, and the last step
    assert steps(1200, val_interval=500) == [500, 1000, 1200]
    assert steps(1200, val_interval=100) == [500, 1000, 1200]
    assert steps(1200, val_interval=300) == [600, 1200]
    assert steps(1200, val_interval=700) == [700, 1200]
    assert steps(sample_interval=3) == [3, 6, 9, 12]
    assert steps(sample_interval=-1) == []


def test_a_conditioned_model_gets_one_stream_per_label(tmp_path):
    model = tiny_samplernn([8, 2], labels=["a", "b", "c"])
    samples = TrainingSamples(tmp_path, TrainConfig(sample_seconds=0.05, sample_streams=2), "cpu", SR, main=True)
    audio, labels, backend = samples.render(model)
    assert labels == ["a", "b", "c"] and audio.shape == (3, 400) and backend == "numba"
    path = samples.write(7, model)
    assert [s["label"] for s in read_samples(tmp_path, 7)["streams"]] == ["a", "b", "c"]
    assert path == tmp_path / SAMPLES_DIR / "step_7"


@pytest.mark.slow
def test_kill_9_mid_sample_leaves_no_half_folder(corpus, tmp_path):
    """A real training process killed while a step's samples are being written: every step_N folder
    there is complete; the same command cleans the temporary folder and goes on."""
    folder = tmp_path / "run"
    cmd = [sys.executable, "-m", "wavegen", "-q", "train", "--data", str(corpus), "--model", "samplernn-tiny",
           "--run", str(folder), "--max-steps", "1000", "--threads", "1"]
    cmd += [a for s in TINY_SAMPLERNN + ["train.sample_interval=1", "train.sample_seconds=1",
                                         "train.val_interval=1000", "train.checkpoint_interval=1"]
            for a in ("--set", s)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples = folder / SAMPLES_DIR
    deadline, caught = time.time() + 120, None
    while time.time() < deadline and caught is None and proc.poll() is None:
        caught = next(iter(samples.glob(".tmp_step_*")), None) if samples.is_dir() else None
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert caught is not None, "no sample folder was being written in 120 s"
    for step in sample_steps(folder):
        record = read_samples(folder, step)
        for stream in record["streams"]:
            assert pcm(samples / f"step_{step}" / stream["file"]).shape == (SR,)
    half = [p.name for p in samples.iterdir() if p.name.startswith("step_") and p.name[5:].isdigit()
            and not (p / "samples.json").is_file()]
    assert half == []
    done = sample_steps(folder)
    # the same command, in this process
    assert main([*cmd[3:cmd.index("--max-steps") + 1], str(max(done, default=0) + 1),
                 *cmd[cmd.index("--max-steps") + 2:]]) == 0
    assert not list(samples.glob(".tmp*")) and sample_steps(folder)[-1] == max(done, default=0) + 1


def test_a_second_ctrl_c_while_samples_are_drawn_stops_at_once(tmp_path, monkeypatch):
    """numba's engine drew a set in one call, holding the interpreter for it all (a 4 s set of samplernn-3tier on one
    CPU core: 88 s): a Ctrl-C was answered only once the set was drawn, and a second meanwhile was lost (taken with the
    first), so "Ctrl-C again to stop at once" went on to draw, write and checkpoint. Now the set is drawn a little at
    a time: the first is said at once, the second stops there."""
    import threading

    import wavegen.generate
    from wavegen.signals import StopSignals

    model = tiny_samplernn()
    samples = TrainingSamples(tmp_path, TrainConfig(sample_seconds=240, sample_streams=2), "cpu", SR, main=True)
    built, real = threading.Event(), wavegen.generate.make_engine

    def make_engine(*args, **kwargs):  # compiled before the set is drawn: the signals come while it is drawn
        engine = real(*args, **kwargs)
        engine.generate(np.zeros((engine.streams, 4), np.float32), np.ones(engine.streams, np.float32))
        built.set()
        return engine

    def ctrl_c_twice():
        built.wait(120)
        for _ in range(2):
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(wavegen.generate, "make_engine", make_engine)
    pressing = threading.Thread(target=ctrl_c_twice, daemon=True)
    with StopSignals("finishing the step and saving a checkpoint") as stop:
        pressing.start()
        with pytest.raises(KeyboardInterrupt):
            samples.write(5, model)
            time.sleep(2)  # (a second Ctrl-C answered after the set: it still stops, before the assertion fails)
    pressing.join(10)
    assert built.is_set() and stop.requested
    assert not (tmp_path / SAMPLES_DIR / "step_5").exists() and not list((tmp_path / SAMPLES_DIR).glob(".tmp*"))
