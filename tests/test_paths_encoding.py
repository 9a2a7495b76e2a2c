"""Folders named in bytes that are not UTF-8 (Latin-1 b"r\\xe9un", as older systems and Latin-1 disks name
them; Python holds the name as "r\\udce9un"): prep, train and its resume, TensorBoard, training samples and a
render's spectrograms work there, and the JSON files that record such a path read back as the same path."""

import json
import logging
import os
from pathlib import Path

import numpy as np
import soundfile as sf
from conftest import melody
from conftest import tiny_run_config as config_for
from render_helpers import make_model, settings

from wavegen.fileio import read_json_object
from wavegen.prep import prepare
from wavegen.render import PCMWriter, render
from wavegen.runlog import RunLog
from wavegen.train import read_metrics, train

LATIN1 = os.fsdecode(b"r\xe9un")  # 'r\udce9un'


def test_the_name_is_not_utf8_as_the_libraries_see_it(tmp_path):
    """What every test here rests on: soundfile (as safetensors and TensorBoard) refuses such a path."""
    folder = tmp_path / LATIN1
    folder.mkdir()
    try:
        sf.write(str(folder / "x.wav"), np.zeros(10, np.float32), 8000)
    except UnicodeEncodeError:
        return
    raise AssertionError("soundfile wrote to a path that is not UTF-8: these tests test nothing")


def latin1_corpus(tmp_path) -> Path:
    """Four melodies under tmp_path/r\\xe9un/rec (written through file objects: soundfile refuses the path),
    prepared into tmp_path/r\\xe9un/corpus."""
    rec = tmp_path / LATIN1 / "rec"
    rec.mkdir(parents=True)
    for i in range(4):
        with open(rec / f"song{i}.wav", "wb") as f:
            sf.write(f, melody(6.0, 16000, seed=i), 16000, format="WAV")
    prepare([rec], tmp_path / LATIN1 / "corpus", sample_rate=16000, val_fraction=0.25, test_fraction=0.25,
            progress=False)
    return tmp_path / LATIN1 / "corpus"


def losses(run):
    return [(r["step"], r["loss_bits"]) for r in read_metrics(run) if "loss_bits" in r]


def test_a_run_in_a_folder_not_named_in_utf8_trains_resumes_and_logs(tmp_path, caplog):
    """The run folder under r\\xe9un: TensorBoard's writer refused the path (UnicodeEncodeError: the training
    never started), then the resume failed in accelerate's load_state ("model.safetensors is not valid UTF-8",
    said as "cannot be restored: remove it"). Now it trains, resumes from its checkpoint to the very losses of
    an uninterrupted run, and TensorBoard's events are in RUN/tb."""
    corpus = latin1_corpus(tmp_path)
    run = tmp_path / LATIN1 / "run"
    common = ["train.val_interval=2", "train.checkpoint_interval=2"]
    train(config_for(corpus, "train.max_steps=2", *common), run, progress=False)
    assert (run / "checkpoints" / "step_2" / "model.safetensors").is_file()
    with caplog.at_level(logging.INFO, logger="wavegen"):
        result = train(config_for(corpus, "train.max_steps=3", *common), run, progress=False)
    assert f"resuming {run} from step 2" in caplog.text
    assert result["status"] == "finished" and result["step"] == 3
    train(config_for(corpus, "train.max_steps=3", *common), tmp_path / "straight", progress=False)
    assert losses(run) == losses(tmp_path / "straight") and len(losses(run)) == 3
    assert sorted(p.name.split(".")[0] for p in (run / "tb").iterdir()) == ["events", "events"]  # one per session
    # the corpus path recorded in config.json reads back as the same path (JSON's \udce9 escape)
    assert read_json_object(run / "config.json")["data"]["corpus"] == str(corpus)
    assert b"\\udce9" in (run / "config.json").read_bytes()


def test_tensorboard_writes_in_a_run_folder_not_named_in_utf8(tmp_path):
    run = tmp_path / LATIN1
    run.mkdir()
    log = RunLog(run, step=0, max_steps=2, enabled=True, progress=False)
    log.train_row(1, 7.5, 1e-3, 1000.0)
    log.close()
    events = list((run / "tb").iterdir())
    assert len(events) == 1 and events[0].name.startswith("events.out.tfevents") and events[0].stat().st_size > 0
    assert json.loads((run / "metrics.jsonl").read_text())["loss_bits"] == 7.5


def test_training_samples_draw_their_spectrogram_in_a_folder_not_named_in_utf8(tmp_path):
    """plotting reads the WAV with soundfile, which refused the path: the samples of the step were lost (a
    warning, "samples of step N failed"). Now the spectrogram is drawn beside the WAV."""
    from wavegen.samples import _spectrogram

    wav = tmp_path / LATIN1 / "stream_000.wav"
    wav.parent.mkdir()
    writer = PCMWriter(wav, 8000)
    writer.write((3000 * np.sin(np.arange(8000) / 5)).astype(np.int16))
    writer.close()
    assert _spectrogram(wav) == "stream_000.png"
    assert (wav.parent / "stream_000.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_render_in_a_folder_not_named_in_utf8_draws_its_spectrograms_and_resumes_nothing_twice(tmp_path):
    """render --out r\\xe9un: the audio was written, then the spectrogram stopped the render with a
    UnicodeEncodeError (no report); the model folder is under r\\xe9un too."""
    model = make_model(tmp_path / LATIN1 / "model")
    out = tmp_path / LATIN1 / "renders"
    report = render(model, out, settings(0.5, streams=2, spectrogram=True), progress=False)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "render_report.json", "stream_000.png", "stream_000.wav", "stream_001.png", "stream_001.wav"]
    recorded = read_json_object(out / "render_report.json")
    assert recorded["params"]["model"] == report["params"]["model"] == str(model)
    # a rerun of the same render finds the recorded path the same: it has nothing left to do
    assert render(model, out, settings(0.5, streams=2, spectrogram=True), progress=False)["params"] == \
        recorded["params"]
