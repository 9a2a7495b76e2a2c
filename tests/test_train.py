"""Single-process training: learning, validation, best/, exact resume, signals, config checks."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import TINY_SAMPLERNN
from safetensors.torch import load_file

from wavegen.config import ConfigError
from wavegen.models import resolve_preset
from wavegen.train import lr_factor, read_metrics, resolve_run_config, train


def config_for(corpus, *extra):
    return resolve_run_config(resolve_preset("samplernn-tiny"), corpus, TINY_SAMPLERNN + list(extra))


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
    assert json.loads((best / "config.json").read_text())["model"]["dim"] == 48
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


def test_old_checkpoints_are_pruned(tiny_corpus, tmp_path):
    train(config_for(tiny_corpus, "train.max_steps=8", "train.checkpoint_interval=2", "train.keep_checkpoints=2",
                     "train.val_interval=8"), tmp_path / "run", progress=False)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step_6", "step_8"]


def test_resume_refuses_a_different_config(tiny_corpus, tmp_path):
    train(config_for(tiny_corpus, "train.max_steps=2"), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match=r"model.dim: 32 → 40"):
        train(config_for(tiny_corpus, "train.max_steps=4", "model.dim=40"), tmp_path / "run", progress=False)
    # max_steps may change: that is how a run is extended
    assert train(config_for(tiny_corpus, "train.max_steps=4"), tmp_path / "run", progress=False)["step"] == 4


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


def test_a_corpus_shorter_than_one_window_is_refused_before_training(tiny_corpus, tmp_path):
    from wavegen.data import CorpusTooShort

    config = config_for(tiny_corpus, "train.seq_len=16000", "train.tbptt_windows=8")
    with pytest.raises(CorpusTooShort, match="lower train.seq_len"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_lr_schedule_with_warmup():
    from wavegen.config import TrainConfig

    cfg = TrainConfig(lr_schedule="cosine", warmup_steps=10, max_steps=110)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.5)
    assert lr_factor(110, cfg) == pytest.approx(0.0)
    assert lr_factor(50, TrainConfig(lr_schedule="linear", max_steps=100)) == pytest.approx(0.5)


@pytest.mark.slow
def test_sigterm_checkpoints_and_the_same_command_resumes(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "wavegen", "-q", "train", "--data", str(tiny_corpus), "--model",
           "samplernn-tiny", "--run", str(run), "--max-steps", "100000"]
    cmd += [a for s in TINY_SAMPLERNN + ["train.checkpoint_interval=100000", "train.val_interval=100000"]
            for a in ("--set", s)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 60
    while time.time() < deadline and len(losses(run)) < 5:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    ckpts = list((run / "checkpoints").glob("step_*"))
    assert len(ckpts) == 1
    stopped_at = int(ckpts[0].name.split("_")[1])
    assert stopped_at >= 5
    subprocess.run(cmd[:cmd.index("--max-steps") + 1] + [str(stopped_at + 2)] + cmd[cmd.index("--max-steps") + 2:],
                   check=True, capture_output=True, timeout=120)
    assert [s for s, _ in losses(run)][-3:] == [stopped_at, stopped_at + 1, stopped_at + 2]
