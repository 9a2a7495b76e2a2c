"""Single-process training: learning, validation, best/, exact resume, signals, config checks; a
second training on a busy run folder, a NaN, a damaged checkpoint, a failed first start, sizes
that cannot fit, a half-written metrics line."""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import TINY_SAMPLERNN
from conftest import tiny_run_config as config_for  # the tiny run every test here trains
from safetensors.torch import load_file

from wavegen.checkpoint import CheckpointError, checkpoint_damage, intact_checkpoint
from wavegen.cli import main
from wavegen.config import ConfigError
from wavegen.memory import OutOfMemoryError
from wavegen.train import lr_factor, read_metrics, train
from wavegen.trainstate import NonFiniteError


def losses(run):
    return [(r["step"], r["loss_bits"]) for r in read_metrics(run) if "loss_bits" in r]


def test_training_learns_and_keeps_the_best_model(tiny_corpus, tmp_path):
    config = config_for(tiny_corpus, "train.max_steps=60", "train.val_interval=20", "model.dim=48",
                        "train.lr=3e-3")
    result = train(config, tmp_path / "run", progress=False)
    assert result["status"] == "finished" and result["step"] == 60
    rows = read_metrics(tmp_path / "run")
    train_bits = [r["loss_bits"] for r in rows if "loss_bits" in r]
    val = [r for r in rows if "val_bits" in r]
    assert len(train_bits) == 60 and [r["step"] for r in val] == [20, 40, 60]
    assert np.mean(train_bits[-10:]) < np.mean(train_bits[:5]) - 1.0  # 8 bits → well under
    assert min(r["val_bits"] for r in val) == pytest.approx(result["best_val_bits"])
    best = tmp_path / "run" / "best"
    saved = json.loads((best / "config.json").read_text())
    assert saved["model"]["dim"] == 48 and saved["preset"] == "samplernn-tiny"
    assert saved["overrides"][-4:] == ["train.max_steps=60", "train.val_interval=20", "model.dim=48", "train.lr=3e-3"]
    assert load_file(str(best / "model.safetensors"))
    assert (tmp_path / "run" / "tb").is_dir() and any((tmp_path / "run" / "tb").iterdir())


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tiny_corpus, tmp_path):
    # checkpoint mid-chunk (tbptt_windows=2, step 3) so the carried hidden state must be restored
    common = ["train.val_interval=4", "train.checkpoint_interval=3"]
    train(config_for(tiny_corpus, "train.max_steps=8", *common), tmp_path / "straight", progress=False)
    train(config_for(tiny_corpus, "train.max_steps=3", *common), tmp_path / "resumed", progress=False)
    assert [s for s, _ in losses(tmp_path / "resumed")] == [1, 2, 3]
    train(config_for(tiny_corpus, "train.max_steps=8", *common), tmp_path / "resumed", progress=False)
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "step_8" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoints" / "step_8" / "model.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)


def test_a_resume_inside_a_log_window_logs_the_rows_of_an_uninterrupted_run(tiny_corpus, tmp_path):
    """The loss summed since the last log row travels in the checkpoint: a run that died after its
    checkpoint at step 3 resumes and logs at step 4 the mean over steps 1-4, as the run that did not."""
    config = config_for(tiny_corpus, "train.max_steps=8", "train.log_interval=4", "train.val_interval=8",
                        "train.checkpoint_interval=3")
    train(config, tmp_path / "straight", progress=False)
    assert [s for s, _ in losses(tmp_path / "straight")] == [4, 8]
    shutil.copytree(tmp_path / "straight", tmp_path / "died")
    for step in (6, 8):  # as if it had died after step 5: its newest checkpoint is step 3's
        shutil.rmtree(tmp_path / "died" / "checkpoints" / f"step_{step}")
    state = json.loads((tmp_path / "died" / "checkpoints" / "step_3" / "trainer_state.json").read_text())
    assert state["log_loss_steps"] == 3 and state["log_loss_sum"] > 0
    train(config, tmp_path / "died", progress=False)
    assert losses(tmp_path / "died") == losses(tmp_path / "straight")  # to the bit


def test_old_checkpoints_are_pruned(tiny_corpus, tmp_path):
    train(config_for(tiny_corpus, "train.max_steps=8", "train.checkpoint_interval=2", "train.keep_checkpoints=2",
                     "train.val_interval=8"), tmp_path / "run", progress=False)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step_6", "step_8"]


def test_resume_refuses_a_different_config(tiny_corpus, tmp_path, caplog):
    train(config_for(tiny_corpus, "train.max_steps=2"), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match=r"model.dim: 32 → 40"):
        train(config_for(tiny_corpus, "train.max_steps=4", "model.dim=40"), tmp_path / "run", progress=False)
    # max_steps may change: that is how a run is extended; a half-written last metrics line (a full
    # disk, a power loss) is dropped with a warning naming the file
    metrics = tmp_path / "run" / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"step": 3, "loss_bi')
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        assert train(config_for(tiny_corpus, "train.max_steps=4"), tmp_path / "run", progress=False)["step"] == 4
    assert f"{metrics}: dropping line 4 that is not a complete row" in caplog.text
    assert [s for s, _ in losses(tmp_path / "run")] == [1, 2, 3, 4]
    from conftest import TINY_WAVENET
    from wavegen.models import resolve_preset
    from wavegen.train import resolve_run_config

    wavenet = resolve_run_config(resolve_preset("wavenet-tiny"), tiny_corpus, TINY_WAVENET)
    with pytest.raises(ConfigError) as caught:  # another family: said by its type, not by its every setting
        train(wavenet, tmp_path / "run", progress=False)
    assert "model_type: 'samplernn' → 'wavenet'" in str(caught.value) and "model." not in str(caught.value)


def test_resume_refuses_a_corpus_prepared_again_with_other_audio(tiny_corpus, tmp_path, caplog):
    """A run records what its corpus holds (corpus.content_id) and resumes only on that: the same folder
    prepared again with another setting would feed the rest of the run other audio. The same recordings
    and settings prepared again (the files touched, so prep compares them again) resume; a run older than
    the record resumes and gains it."""
    from wavegen.corpus import Corpus
    from wavegen.prep import prepare
    from wavegen.runconfig import split_ids

    def prep_again(**changed):
        settings = {"sample_rate": 16000, "val_fraction": 0.25, "test_fraction": 0.25, "progress": False, **changed}
        prepare([tmp_path / "rec"], tiny_corpus, **settings)

    train(config_for(tiny_corpus, "train.max_steps=2"), tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    began_on = Corpus(tiny_corpus).content_id
    assert saved["data"]["corpus_id"] == began_on and len(began_on) == 16
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        prep_again(top_db=20.0)
    assert f"replacing the corpus in {tiny_corpus} (corpus id {began_on} → " in caplog.text
    assert "top_db 40.0 → 20.0" in caplog.text
    refusal = f"began on the corpus in {re.escape(str(tiny_corpus.resolve()))} .*corpus id {began_on}.* prepared again"
    with pytest.raises(ConfigError, match=refusal):
        train(config_for(tiny_corpus, "train.max_steps=3"), tmp_path / "run", progress=False)
    assert [s for s, _ in losses(tmp_path / "run")] == [1, 2]  # refused before a step
    prep_again()  # the run's settings again
    assert Corpus(tiny_corpus).content_id == began_on
    for wav in (tmp_path / "rec").iterdir():
        os.utime(wav, ns=(1, 1))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wavegen"):
        prep_again()  # touched: prep compares the content again (a rehash, not a decode) and keeps the same corpus
    assert "comparing their content" in caplog.text and "replacing" not in caplog.text
    assert Corpus(tiny_corpus).content_id == began_on
    assert train(config_for(tiny_corpus, "train.max_steps=3"), tmp_path / "run", progress=False)["step"] == 3
    del saved["data"]["corpus_id"], saved["data"]["split_ids"]  # a run begun before the records
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    prep_again(top_db=20.0)
    assert train(config_for(tiny_corpus, "train.max_steps=4"), tmp_path / "run", progress=False)["step"] == 4
    data = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert data["corpus_id"] != began_on and data["split_ids"] == split_ids(Corpus(tiny_corpus).manifest)


def test_a_run_resumes_on_its_corpus_moved_to_another_folder_and_names_its_own_corpus_when_refused(
        tiny_corpus, tmp_path):
    """The run records what its corpus holds (content_id, wherever it lies), yet refused its own corpus
    moved or copied to another folder ("data.corpus: A → B"), so a corpus moved to another disk ended
    the run. And a refusal of another corpus named the --data folder as the one the run began on."""
    from conftest import prepared_corpus

    from wavegen.prep import prepare

    train(config_for(tiny_corpus, "train.max_steps=2"), tmp_path / "run", progress=False)
    moved = tmp_path / "disk2" / "corpus"
    shutil.copytree(tiny_corpus, moved)
    shutil.rmtree(tiny_corpus)
    assert train(config_for(moved, "train.max_steps=3"), tmp_path / "run", progress=False)["step"] == 3
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["corpus"] == str(moved.resolve())
    assert [s for s, _ in losses(tmp_path / "run")] == [1, 2, 3]
    other = prepared_corpus(tmp_path / "other", files=3, val_fraction=0.25, test_fraction=0.25)
    refusal = (f"began on the corpus in {re.escape(str(moved.resolve()))} .*; --data {re.escape(str(other.resolve()))} "
               "holds other audio")
    with pytest.raises(ConfigError, match=refusal):
        train(config_for(other, "train.max_steps=4"), tmp_path / "run", progress=False)
    prepare([tmp_path / "rec"], moved, sample_rate=16000, val_fraction=0.25, test_fraction=0.25, top_db=20.0,
            progress=False)
    with pytest.raises(ConfigError, match="it has been prepared again since"):
        train(config_for(moved, "train.max_steps=4"), tmp_path / "run", progress=False)


def test_a_corpus_prepared_again_while_the_run_trains_leaves_its_validation_on_the_audio_it_began_with(
        tiny_corpus, tmp_path, monkeypatch):
    """prep replaces a corpus's files; a running training had mapped train.npy and read the segments at
    its start, but mapped val.npy only at its first validation: after a prep meanwhile (a musician adding
    recordings for the next run) validation scored the new val.npy through the old segments, silently
    choosing best/ on other audio."""
    import wavegen.train as training
    from wavegen.prep import prepare

    config = config_for(tiny_corpus, "train.max_steps=2", "train.val_interval=2")
    train(config, tmp_path / "straight", progress=False)
    validate = training._validate

    def prepare_again_then_validate(run):  # a real prep, as another process would run it, just before validation
        prepare([tmp_path / "rec"], tiny_corpus, sample_rate=16000, val_fraction=0.25, test_fraction=0.25, seed=5,
                progress=False)  # another song for validation, of the same length
        validate(run)

    monkeypatch.setattr(training, "_validate", prepare_again_then_validate)
    train(config, tmp_path / "during", progress=False)
    val_bits = lambda run: [r["val_bits"] for r in read_metrics(run) if "val_bits" in r]  # noqa: E731
    assert len(val_bits(tmp_path / "straight")) == 1
    assert val_bits(tmp_path / "during") == val_bits(tmp_path / "straight")
    assert json.loads((tiny_corpus / "manifest.json").read_text())["params"]["seed"] == 5  # it was replaced


def test_extending_a_run_with_a_decaying_schedule_says_that_its_learning_rate_jumps(tiny_corpus, tmp_path, caplog):
    """max_steps may change on a resume (how a run is extended), but cosine and linear span to max_steps:
    a run that had decayed to 0 went back to half its learning rate without a word."""
    cosine = ["train.lr_schedule=cosine", "train.lr=1e-3"]
    train(config_for(tiny_corpus, "train.max_steps=4", *cosine), tmp_path / "run", progress=False)
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        train(config_for(tiny_corpus, "train.max_steps=8", *cosine), tmp_path / "run", progress=False)
    assert ("train.max_steps 4 → 8 with train.lr_schedule=cosine: the schedule is stretched to end at step 8, so the "
            "learning rate jumps from 0 to 0.0005 at step 5") in caplog.text
    assert [r["lr"] for r in read_metrics(tmp_path / "run") if r["step"] == 5] == [pytest.approx(5e-4)]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wavegen"):  # the same max_steps, or a constant rate: nothing to say
        train(config_for(tiny_corpus, "train.max_steps=8", *cosine), tmp_path / "run", progress=False)
        train(config_for(tiny_corpus, "train.max_steps=2"), tmp_path / "const", progress=False)
        train(config_for(tiny_corpus, "train.max_steps=3"), tmp_path / "const", progress=False)
    assert "stretched" not in caplog.text


def test_a_lower_learning_rate_on_a_resume_is_said_with_the_rate_it_replaces(tiny_corpus, tmp_path, caplog):
    """train.lr may change on a resume (what a non-finite step's error advises): said, with the old value, and a
    stretched schedule's jump is from the checkpoint's rate (it was computed with the new one for both ends)."""
    cosine = ["train.lr_schedule=cosine"]
    train(config_for(tiny_corpus, "train.max_steps=4", "train.lr=1e-3", *cosine), tmp_path / "run", progress=False)
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        train(config_for(tiny_corpus, "train.max_steps=8", "train.lr=1e-4", *cosine), tmp_path / "run",
              progress=False)
    assert "train.lr 0.001 → 0.0001: the run goes on from step 4 with the new value" in caplog.text
    assert ("the schedule is stretched to end at step 8, so the learning rate jumps from 0 to 5e-05 at step 5"
            in caplog.text)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wavegen"):  # stretched again, from 1e-4's schedule
        train(config_for(tiny_corpus, "train.max_steps=12", "train.lr=1e-4", *cosine), tmp_path / "run",
              progress=False)
    assert "the run goes on from step" not in caplog.text and "stretched to end at step 12" in caplog.text
    assert [r["lr"] for r in read_metrics(tmp_path / "run") if r["step"] == 5 and "lr" in r] == [pytest.approx(5e-5)]
    from wavegen.config import TrainConfig
    from wavegen.trainstate import earlier_train, resume_warnings

    said = resume_warnings(TrainConfig(lr=1e-4, max_steps=8, lr_schedule="cosine"), 2, {"max_steps": 4, "lr": 1e-3})
    assert said[-1].endswith("the learning rate drops from 0.0005 to 8.54e-05 at step 3"), said
    # a checkpoint older than the record of lr and grad_clip in its state: the run's config.json as it was says them
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps({"train": {"lr": 3e-3, "grad_clip": 1.0, "seed": 0}}))
    assert earlier_train(tmp_path / "old") == {"lr": 3e-3, "grad_clip": 1.0}
    said = resume_warnings(TrainConfig(lr=1e-4, max_steps=8), 2, {**earlier_train(tmp_path / "old"), "max_steps": 8})
    assert said == ["train.lr 0.003 → 0.0001: the run goes on from step 2 with the new value, recorded in its "
                    "config.json"], said
    (tmp_path / "old" / "config.json").write_text("{")  # unreadable: nothing to compare with, nothing said
    assert earlier_train(tmp_path / "old") == {}


def test_a_resume_with_other_intervals_says_so_with_the_values_it_replaces(tiny_corpus, tmp_path, caplog):
    """A run begun with --set train.checkpoint_interval=2 and resumed without it went on at the preset's interval
    (samplernn-tiny's: a checkpoint every 100 steps, so a stop lost up to 100 steps' training) without a word; so
    did a changed validation or sample interval. Now the resume says each, with the value it replaces; the same ones
    say nothing."""
    run = tmp_path / "run"
    common = ["train.checkpoint_interval=2", "train.val_interval=2"]
    train(config_for(tiny_corpus, "train.max_steps=2", *common), run, progress=False)
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        train(config_for(tiny_corpus, "train.max_steps=4", *common), run, progress=False)
    assert "interval" not in caplog.text, caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        train(config_for(tiny_corpus, "train.max_steps=7", "train.val_interval=3"), run, progress=False)
    assert ("train.checkpoint_interval 2 → 100 and train.val_interval 2 → 3: the run goes on from step 4 at the new "
            "intervals, recorded in its config.json") in caplog.text, caplog.text
    assert json.loads((run / "config.json").read_text())["train"]["val_interval"] == 3
    assert [r["step"] for r in read_metrics(run) if "val_bits" in r] == [2, 4, 6, 7]  # the new interval, and the end
    from wavegen.config import TrainConfig
    from wavegen.trainstate import resume_warnings

    assert resume_warnings(TrainConfig(sample_interval=-1, max_steps=8), 2, {"sample_interval": 0}) == [
        "train.sample_interval 0 → -1: the run goes on from step 2 at the new interval, recorded in its config.json"]


def test_a_max_steps_below_the_step_reached_says_that_nothing_trains(tiny_corpus, tmp_path, capsys):
    """``--max-steps 2`` on a run at step 4: "finished at step 4" alone, as if the 2 steps had been trained."""
    args = ["train", "--data", str(tiny_corpus), "--model", "samplernn-tiny", "--run", str(tmp_path / "run"),
            "--threads", "1"] + [a for s in TINY_SAMPLERNN for a in ("--set", s)]
    assert main(["-q", *args, "--max-steps", "4"]) == 0
    capsys.readouterr()
    before = read_metrics(tmp_path / "run")
    assert main([*args, "--max-steps", "2"]) == 0
    err = capsys.readouterr().err
    assert ("the run is at step 4, past train.max_steps=2: nothing to train (a larger --max-steps goes on from "
            "step 4; an earlier step's checkpoint renders with --checkpoint step_N)") in err
    assert read_metrics(tmp_path / "run") == before  # nothing trained, nothing logged


def test_a_resume_with_other_validation_audio_chooses_best_anew(tiny_corpus, tmp_path, caplog):
    """train.val_seconds may change on a resume, but the best on record scored other audio: its bits were
    the bar for the new validation's, so best/ stayed at an old model while scores of more audio came in."""
    common = ["train.val_interval=2", "train.lr=3e-3"]
    train(config_for(tiny_corpus, "train.max_steps=4", "train.val_seconds=0.25", *common), tmp_path / "run",
          progress=False)
    metrics = tmp_path / "run" / "metrics.jsonl"  # a best on record no score of other audio beats
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    rows = [{**r, "val_bits": 0.01} if r.get("best") else r for r in rows]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        train(config_for(tiny_corpus, "train.max_steps=8", "train.val_seconds=3", *common), tmp_path / "run",
              progress=False)
    val = [r for r in read_metrics(tmp_path / "run") if "val_bits" in r]
    assert [r["step"] for r in val] == [2, 4, 6, 8]
    assert val[2]["val_samples"] != val[1]["val_samples"] and val[2]["best"]  # the first of the new audio: best
    assert re.search(r"validation scores \d+ samples now, the best on record \([\d.]+ bits/sample\) \d+: "
                     r"train.val_seconds changed, so best/ is chosen anew", caplog.text)
    assert caplog.text.count("chosen anew") == 1
    assert [r["step"] for r in val if r["best"]][-1] >= 6


def test_set_reaches_every_value_including_the_seed(tiny_corpus, tmp_path):
    config = config_for(tiny_corpus, "seed=3", "model.frame_sizes=8,2", "lr_schedule=cosine")
    assert config["train"]["seed"] == 3 and config["model"]["frame_sizes"] == [8, 2]
    assert config["train"]["lr_schedule"] == "cosine"
    with pytest.raises(ConfigError, match="no setting 'colour'"):
        config_for(tiny_corpus, "colour=blue")
    with pytest.raises(ConfigError, match="3 does not divide 8"):
        config_for(tiny_corpus, "model.frame_sizes=[8,3]")
    a = config_for(tiny_corpus, "seed=1", "train.max_steps=2")
    b = config_for(tiny_corpus, "seed=2", "train.max_steps=2")
    train(a, tmp_path / "a", progress=False)
    train(b, tmp_path / "b", progress=False)
    assert losses(tmp_path / "a") != losses(tmp_path / "b")
    # --model RUN: that run's settings (and their record), new weights, the data from --data
    assert main(["-q", "train", "--data", str(tiny_corpus), "--model", str(tmp_path / "a"), "--run",
                 str(tmp_path / "c"), "--max-steps", "1", "--threads", "1"]) == 0
    c = json.loads((tmp_path / "c" / "config.json").read_text())
    assert c["model"] == a["model"] and c["train"]["seed"] == 1 and c["preset"] == "samplernn-tiny"
    assert c["overrides"] == a["overrides"] + ["train.max_steps=1"]


def test_a_corpus_shorter_than_one_window_is_refused_before_training(tiny_corpus, tmp_path):
    from wavegen.data import CorpusTooShort

    config = config_for(tiny_corpus, "train.seq_len=16000", "train.tbptt_windows=8")
    with pytest.raises(CorpusTooShort, match="lower train.seq_len"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_refused_first_start_leaves_no_run_folder_behind(tiny_corpus, tmp_path):
    """A first start refused (a corpus too short, a batch too big for memory) left RUN/ holding .lock alone,
    parents made for it too: the folders it made are gone; a folder that was there before stays."""
    from wavegen.data import CorpusTooShort

    run = tmp_path / "runs" / "new"
    with pytest.raises(CorpusTooShort, match="lower train.seq_len"):
        train(config_for(tiny_corpus, "train.seq_len=16000", "train.tbptt_windows=8"), run, progress=False)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(OutOfMemoryError):
        train(config_for(tiny_corpus, "train.batch_size=100000000"), run, progress=False)
    assert not (tmp_path / "runs").exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(OutOfMemoryError):
        train(config_for(tiny_corpus, "train.batch_size=100000000"), tmp_path / "mine", progress=False)
    assert (tmp_path / "mine").is_dir()  # the user's own folder is kept
    assert train(config_for(tiny_corpus, "train.max_steps=1"), run, progress=False)["step"] == 1
    assert (run / "config.json").is_file()


def test_lr_schedule_with_warmup():
    from wavegen.config import TrainConfig

    cfg = TrainConfig(lr_schedule="cosine", warmup_steps=10, max_steps=110)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.5)
    assert lr_factor(110, cfg) == pytest.approx(0.0)
    assert lr_factor(50, TrainConfig(lr_schedule="linear", max_steps=100)) == pytest.approx(0.5)


def test_a_non_finite_loss_stops_training_at_the_first_bad_step_and_saves_nothing_after_it(
        tiny_corpus, tmp_path, capsys):
    """lr 1e30 without clipping: the weights blow up. Checked at every step (checkpoint_interval=1),
    the run stops at the first non-finite step with exit code 2 and keeps the checkpoint before it;
    checked only every 4 steps (the hot loop does not sync), it still names that same step."""
    blowup = ["train.lr=1e30", "train.grad_clip=0", "train.val_interval=4", "train.max_steps=8"]
    args = ["-q", "train", "--data", str(tiny_corpus), "--model", "samplernn-tiny", "--run", str(tmp_path / "a")]
    args += [a for o in TINY_SAMPLERNN + blowup + ["train.checkpoint_interval=1"] for a in ("--set", o)]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("was not finite" in err or "were not finite" in err), err
    first = err.split("error: ")[1].split(" not finite")[0]  # "step N: the loss (and the gradient) was"
    bad = int(first.split("step ")[1].split(":")[0])
    # the checkpoint of the step before holds the weights that made the bad step: moved aside, never resumed from
    kept = sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir())
    assert kept[-1] == f"step_{bad - 1}.diverged" and f"moved aside to step_{bad - 1}.diverged" in err, err
    assert not (tmp_path / "a" / "best").exists()
    assert all(np.isfinite(r["loss_bits"]) for r in read_metrics(tmp_path / "a") if "loss_bits" in r)
    assert max(s for s, _ in losses(tmp_path / "a")) == bad - 1  # no row for the bad step
    deferred = config_for(tiny_corpus, *blowup, "train.log_interval=4", "train.checkpoint_interval=100")
    with pytest.raises(NonFiniteError, match=rf"^{first} not finite") as stopped:
        train(deferred, tmp_path / "b", progress=False)
    assert "(no checkpoint had been saved; a rerun starts again from step 0)" in str(stopped.value)
    assert not (tmp_path / "b" / "checkpoints").exists() and not (tmp_path / "b" / "best").exists()


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_damaged_newest_checkpoint_is_skipped_and_the_run_ends_as_an_uninterrupted_one(tiny_corpus, tmp_path,
                                                                                        caplog):
    common = ["train.val_interval=3", "train.checkpoint_interval=3", "train.max_steps=6"]
    train(config_for(tiny_corpus, *common), tmp_path / "straight", progress=False)
    newest = tmp_path / "straight" / "checkpoints" / "step_6"
    names = sorted(p.name for p in newest.iterdir())
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl", "trainer_state.json",
            "training_state.safetensors"} <= set(names)
    for name in names:  # any file of it, cut short, is named
        copy = tmp_path / "copy"
        shutil.copytree(newest, copy)
        truncate(copy / name)
        assert name in (checkpoint_damage(copy) or ""), name
        shutil.rmtree(copy)
    assert checkpoint_damage(newest) is None
    damaged = tmp_path / "damaged"
    shutil.copytree(tmp_path / "straight", damaged)
    truncate(damaged / "checkpoints" / "step_6" / "optimizer.bin")
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        assert train(config_for(tiny_corpus, *common), damaged, progress=False)["step"] == 6
    assert "step_6/optimizer.bin: " in caplog.text and "resuming from" in caplog.text
    assert losses(damaged) == losses(tmp_path / "straight")
    for where in ("checkpoints/step_6", "best"):
        a = load_file(str(tmp_path / "straight" / where / "model.safetensors"))
        b = load_file(str(damaged / where / "model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), where
    # with no intact checkpoint left, the run is not silently started again from step 0
    for step in (3, 6):
        truncate(damaged / "checkpoints" / f"step_{step}" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"no intact checkpoint .*step_3/model.safetensors"):
        intact_checkpoint(damaged)


def test_a_failed_first_start_leaves_the_run_folder_usable(tiny_corpus, tmp_path):
    """Refused before anything is written (no config.json): the corrected command then trains."""
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="data.sample_rate=8000"):
        train(config_for(tiny_corpus, "data.sample_rate=8000"), run, progress=False)
    # sizes are estimated before anything is allocated, and the message says what to change
    with pytest.raises(OutOfMemoryError, match=r"training needs about .* GiB .*make the model smaller \(model.dim"):
        train(config_for(tiny_corpus, "model.dim=1e6"), run, progress=False)
    with pytest.raises(OutOfMemoryError, match=r"activations .* for 100000000 stream.*lower train.batch_size"):
        train(config_for(tiny_corpus, "train.batch_size=100000000"), run, progress=False)
    assert not (run / "config.json").exists()
    assert train(config_for(tiny_corpus, "train.max_steps=2"), run, progress=False)["step"] == 2


class _RanPast(BaseException):
    """Raised by :func:`_main_within`'s alarm: a BaseException, so the CLI takes it for no error of its own (a
    TimeoutError is an OSError, which it would say as a failed save)."""


def _main_within(seconds: int, argv: list[str]) -> int:
    """The CLI's main(argv) in this process, ended past ``seconds`` by SIGALRM (its handler raises _RanPast)."""
    def expire(signum, frame):
        raise _RanPast(f"wavegen {' '.join(argv[:1])} ran past {seconds} s")

    before = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        return main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


@pytest.mark.slow
def test_sigterm_checkpoints_and_the_same_command_resumes(tiny_corpus, tmp_path, capsys):
    """Real processes: SIGTERM saves a checkpoint and the same command resumes; a second training on
    the same run folder meanwhile is refused at once (exit 2), naming the first, and writes nothing.
    (The second training and the resume run in this process: the CLI's main, as a process runs it.)"""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "wavegen", "train", "--data", str(tiny_corpus), "--model",
           "samplernn-tiny", "--run", str(run), "--max-steps", "100000", "--threads", "1"]
    cmd += [a for s in TINY_SAMPLERNN + ["train.checkpoint_interval=100000", "train.val_interval=100000"]
            for a in ("--set", s)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 60
    while time.time() < deadline and len(losses(run)) < 5:
        time.sleep(0.2)
    capsys.readouterr()
    assert _main_within(60, cmd[3:]) == 2  # (refused at once; a refusal broken would train its 100000 steps here)
    second = capsys.readouterr().err
    assert f"another training run is writing here (process {proc.pid}" in second, second
    assert proc.poll() is None  # the first one trains on
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    steps = [s for s, _ in losses(run)]
    assert steps == list(range(1, len(steps) + 1))  # every row once: the second process wrote none
    ckpts = list((run / "checkpoints").glob("step_*"))
    assert len(ckpts) == 1
    stopped_at = int(ckpts[0].name.split("_")[1])
    assert stopped_at >= 5
    # interrupted before any validation: it says where the model is, not a best/ that does not exist
    assert "no best/ model yet" in err and f"latest checkpoint {ckpts[0]}" in err and "--checkpoint last" in err
    assert main(cmd[3:cmd.index("--max-steps") + 1] + [str(stopped_at + 2)] + cmd[cmd.index("--max-steps") + 2:]) == 0
    assert [s for s, _ in losses(run)][-3:] == [stopped_at, stopped_at + 1, stopped_at + 2]


def test_training_twice_in_one_process_with_another_mixed_precision(tiny_corpus, tmp_path):
    """A notebook: train() with train.mixed_precision=no, then bf16, in one Python process stopped with
    accelerate's "AcceleratorState has already been initialized and cannot be changed". Each training now
    has its own precision: bf16's losses differ from fp32's, and fp32 again repeats the first exactly."""
    def losses_of(name, precision):
        config = config_for(tiny_corpus, "train.max_steps=2", "train.val_interval=1000",
                            f"train.mixed_precision={precision}")
        assert train(config, tmp_path / name, progress=False)["status"] == "finished"
        return [bits for _, bits in losses(tmp_path / name)]

    from accelerate.state import PartialState

    PartialState()  # as accelerate.utils.save leaves it (a test before this one in CI): not the precision's holder
    first = losses_of("fp32", "no")
    half = losses_of("bf16", "bf16")
    assert losses_of("fp32_again", "no") == first and len(half) == 2 and half != first
