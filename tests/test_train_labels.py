"""model.labels when a run takes its settings from another run or model folder: the labels are the
new corpus's (data, not a setting), unless --set names them; a mismatch says how to set them. A label
no training window holds is named before training."""

import json
import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import TINY_SAMPLERNN, melody, write_audio_file
from safetensors.torch import load_file

from wavegen.cli import main
from wavegen.config import ConfigError, TrainConfig, from_dict
from wavegen.corpus import Corpus
from wavegen.data import batch_warnings, make_batches
from wavegen.models import build_model, resolve_preset
from wavegen.prep import prepare
from wavegen.resolve import resolve_model
from wavegen.train import read_metrics, resolve_run_config, train

SR = 16000


@pytest.fixture
def labelled_corpus(tmp_path):
    rec = tmp_path / "labelled"
    for i, label in enumerate(["alpha", "alpha", "beta", "beta", "alpha", "beta"]):
        write_audio_file(rec / label / f"{label}{i}.wav", melody(4.0, SR, seed=i), SR)
    prepare([rec], tmp_path / "labelled_corpus", sample_rate=SR, val_fraction=0.2, test_fraction=0.2,
            labels="folders", progress=False)
    return tmp_path / "labelled_corpus"


def cli_train(model, corpus, run, *settings):
    args = ["-q", "train", "--data", str(corpus), "--model", str(model), "--run", str(run), "--max-steps", "1",
            "--threads", "1"]
    return main(args + [a for s in TINY_SAMPLERNN + list(settings) for a in ("--set", s)])


def test_a_run_folder_as_model_takes_the_labels_of_the_new_corpus(labelled_corpus, tiny_corpus, tmp_path, capsys):
    """It carried the old run's labels: on an unlabelled corpus "model.labels ['alpha', 'beta'] differ
    from the corpus labels []", with no way out named."""
    assert cli_train("samplernn-tiny", labelled_corpus, tmp_path / "labelled_run") == 0
    assert json.loads((tmp_path / "labelled_run" / "config.json").read_text())["model"]["labels"] == ["alpha", "beta"]
    assert cli_train(tmp_path / "labelled_run", tiny_corpus, tmp_path / "plain_run") == 0
    assert json.loads((tmp_path / "plain_run" / "config.json").read_text())["model"]["labels"] == []
    assert cli_train(tmp_path / "plain_run" / "best", labelled_corpus, tmp_path / "again") == 0
    assert json.loads((tmp_path / "again" / "config.json").read_text())["model"]["labels"] == ["alpha", "beta"]


def test_labels_set_by_hand_that_differ_from_the_corpus_say_how_to_set_them(labelled_corpus, tiny_corpus, tmp_path):
    base = resolve_preset("samplernn-tiny")
    with pytest.raises(ConfigError) as err:
        resolve_run_config(base, labelled_corpus, ['model.labels=["beta","alpha"]'])
    assert str(err.value) == (f"model.labels ['beta', 'alpha'] differ from the labels of corpus {labelled_corpus}, "
                              "['alpha', 'beta']: a model trains on its corpus's labels; set them with "
                              """--set 'model.labels=["alpha","beta"]'""")
    trained = tmp_path / "labelled_run"
    assert cli_train("samplernn-tiny", labelled_corpus, trained) == 0
    with pytest.raises(ConfigError, match=r"""--set 'model.labels=\[\]'"""):  # --set wins over the corpus
        resolve_run_config(resolve_model(trained).config, tiny_corpus, ["model.labels=alpha,beta"])


def test_a_label_whose_training_audio_is_shorter_than_a_window_is_named(tmp_path, caplog):
    """A label of short clips: not one of its training stretches holds a TBPTT chunk, so no batch ever drew
    it; the run trained on the other label alone without a word, its samples and validation still drawing it."""
    rec = tmp_path / "rec"
    for i in range(5):
        write_audio_file(rec / "long" / f"long{i}.wav", melody(2.0, 8000, seed=i), 8000)
        write_audio_file(rec / "short" / f"short{i}.wav", melody(0.6, 8000, seed=10 + i), 8000)
    prepare([rec], tmp_path / "corpus", sample_rate=8000, labels="folders", progress=False)
    config = resolve_run_config(resolve_preset("samplernn-tiny"), tmp_path / "corpus",
                                TINY_SAMPLERNN + ["train.seq_len=256", "train.tbptt_windows=20", "train.max_steps=1"])
    with caplog.at_level(logging.WARNING):
        assert train(config, tmp_path / "run", progress=False)["status"] == "finished"
    said = [r.getMessage() for r in caplog.records if "never trains" in r.getMessage()]
    assert said == ["label 'short' never trains: its longest stretch of training audio is 4800 samples, shorter "
                    "than the 5136 of one TBPTT chunk (context 16 + 20 x 256); lower train.seq_len or "
                    "train.tbptt_windows, or add longer recordings of it"]


def test_labels_every_window_can_hold_are_not_named(tmp_path):
    rec = tmp_path / "rec"
    for i in range(3):
        for label in ("a", "b"):
            write_audio_file(rec / label / f"{label}{i}.wav", melody(1.0, 8000, seed=i), 8000)
    prepare([rec], tmp_path / "corpus", sample_rate=8000, labels="folders", progress=False)
    corpus = Corpus(tmp_path / "corpus")
    config = resolve_run_config(resolve_preset("samplernn-tiny"), tmp_path / "corpus", TINY_SAMPLERNN)
    model, cfg = build_model(config), from_dict(TrainConfig, config["train"], "train")
    batches = make_batches(model, corpus.split("train"), corpus.segments("train"), corpus.segment_labels("train"),
                           cfg)
    assert batch_warnings(batches, model, cfg) == []
    shortened = replace(cfg, seq_len=4096)  # now neither label's 1 s clips hold a chunk: the corpus is too short
    with pytest.raises(ConfigError, match="no training audio stretch is long enough"):
        make_batches(model, corpus.split("train"), corpus.segments("train"), corpus.segment_labels("train"),
                     shortened)


def test_a_label_folder_renamed_since_the_run_began_is_named_when_it_cannot_resume(labelled_corpus, tmp_path,
                                                                                   capsys):
    """The same recordings with a label folder renamed and prepared again: the refusal said "holds other audio"
    alone, with nothing to show that the labels were what changed."""
    assert cli_train("samplernn-tiny", labelled_corpus, tmp_path / "run") == 0
    rec = tmp_path / "renamed"
    for i, label in enumerate(["alpha", "alpha", "gamma", "gamma", "alpha", "gamma"]):  # beta → gamma
        write_audio_file(rec / label / f"{label}{i}.wav", melody(4.0, SR, seed=i), SR)
    prepare([rec], tmp_path / "renamed_corpus", sample_rate=SR, val_fraction=0.2, test_fraction=0.2,
            labels="folders", progress=False)
    capsys.readouterr()
    assert cli_train("samplernn-tiny", tmp_path / "renamed_corpus", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds other audio" in err
    assert "; its labels are ['alpha', 'gamma'], the run's ['alpha', 'beta'], so the run cannot resume" in err


def test_balance_labels_draws_a_small_label_as_often_as_a_big_one_and_resumes_exactly(tmp_path, capsys):
    """A corpus of 10:1 (label 'big' ten times the audio of 'small'): training drew 'small' ten times less,
    with no way to change it. --balance-labels (train.label_balance=1) draws them equally often; the run
    records it, and a resumed run trains exactly as an uninterrupted one."""
    rec = tmp_path / "rec"
    for i in range(10):
        write_audio_file(rec / "big" / f"big{i}.wav", melody(2.0, 8000, seed=i), 8000)
    write_audio_file(rec / "small" / "small0.wav", melody(2.0, 8000, seed=20), 8000)
    prepare([rec], tmp_path / "corpus", sample_rate=8000, labels="folders", val_fraction=0.0, test_fraction=0.0,
            progress=False)
    corpus = Corpus(tmp_path / "corpus")
    config = resolve_run_config(resolve_preset("samplernn-tiny"), corpus.dir, TINY_SAMPLERNN)
    model = build_model(config)

    def drawn(balance):
        cfg = from_dict(TrainConfig, {**config["train"], "label_balance": balance, "batch_size": 32}, "train")
        batches = make_batches(model, corpus.split("train"), corpus.segments("train"), corpus.segment_labels("train"),
                               cfg)
        return np.bincount(np.concatenate([batches.batch(s)["labels"].numpy() for s in range(0, 200, 2)]))

    plain, balanced = drawn(0.0), drawn(1.0)
    assert 7 < plain[0] / plain[1] < 14 and abs(balanced[1] / balanced.sum() - 0.5) < 0.05
    plain_args = ["-q", "train", "--data", str(corpus.dir), "--model", "samplernn-tiny", "--threads", "1"]
    plain_args += [a for s in TINY_SAMPLERNN + ["train.val_interval=1000", "train.checkpoint_interval=2"]
                   for a in ("--set", s)]
    args = plain_args + ["--balance-labels"]
    assert main(args + ["--run", str(tmp_path / "straight"), "--max-steps", "4"]) == 0
    assert json.loads((tmp_path / "straight" / "config.json").read_text())["train"]["label_balance"] == 1.0
    for steps in ("2", "4"):
        assert main(args + ["--run", str(tmp_path / "resumed"), "--max-steps", steps]) == 0
    rows = [read_metrics(tmp_path / run) for run in ("straight", "resumed")]
    assert [(r["step"], r["loss_bits"]) for r in rows[0] if "loss_bits" in r] == \
           [(r["step"], r["loss_bits"]) for r in rows[1] if "loss_bits" in r]
    weights = [load_file(str(tmp_path / run / "checkpoints" / "step_4" / "model.safetensors"))
               for run in ("straight", "resumed")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    # the setting shapes every batch: a resume may not change it
    capsys.readouterr()
    assert main(plain_args + ["--run", str(tmp_path / "resumed"), "--max-steps", "6"]) == 2
    assert "train.label_balance: 1.0 → 0.0" in capsys.readouterr().err
