"""`wavegen bench --train` (wavegen.bench_train.bench_training): the trainer's step on synthetic audio."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import prepared_corpus
from process_helpers import cli_recording_threads, gloo_threads_left
from test_train_ddp import RECIPES, free_port

from wavegen import cli
from wavegen.bench_train import bench_training, format_training_table, synthetic_audio
from wavegen.config import ConfigError
from wavegen.errors import WavegenError
from wavegen.resolve import resolve_model


def test_synthetic_audio_is_loud_int16_and_reproducible():
    a = synthetic_audio(16000, 16000, seed=1)
    assert a.dtype == np.int16 and a.shape == (16000,)
    assert 0.2 < np.abs(a / 32768.0).max() < 0.5
    assert np.array_equal(a, synthetic_audio(16000, 16000, seed=1))
    spectrum = np.abs(np.fft.rfft(synthetic_audio(8000, 8000, seed=1)))  # one second at 8 kHz: bins are Hz
    assert 100 <= np.argmax(spectrum) <= 450  # the sweep's 110-440 Hz at the rate given


def test_bench_training_times_only_the_timed_steps():
    """Each row's time lies inside an independent clock's interval around that batch size's work."""
    stamps = []
    result = bench_training("samplernn-tiny", batches=(2, 4), seq_len=64, steps=2, warmup=1, threads=1,
                            progress=lambda message: stamps.append(time.perf_counter()))
    stamps.append(time.perf_counter())
    assert result["mode"] == "training" and result["model"]["mixed_precision"] == "no"
    assert result["model"]["sample_rate"] == resolve_model("samplernn-tiny").sample_rate
    assert [r["batch"] for r in result["rows"]] == [2, 4]
    for r, begin, end in zip(result["rows"], stamps, stamps[1:]):
        assert r["seq_len"] == 64 and r["steps"] == 2
        assert 0 < r["seconds"] < end - begin  # build and warm-up excluded, the timed steps inside
        assert r["samples_per_second"] > r["batch"] * 64 * 2 / (end - begin)
        assert r["seconds_per_step"] < (end - begin) / 2
        assert r["cpu_seconds"] < 1.5 * r["seconds"] + 0.05  # one thread: CPU time cannot much exceed wall time
        assert 2**20 < r["peak_memory_bytes"] < 2**40 and "RSS" in r["memory"]
        assert 6.0 < r["loss_bits"] < 8.5  # 256 levels, a few steps from random weights: ~8 bits
    with pytest.raises(WavegenError, match="^no-such-model: no such preset, model folder or run folder"):
        bench_training("no-such-model")


def test_bench_training_takes_settings_as_training_does():
    """--set train.ema_decay updates the average after every step (warm-up included) and leaves the
    training as it was; --set model.* builds another model; what bench sets itself is refused."""
    plain, averaged = (bench_training("samplernn-tiny", batches=(2,), seq_len=64, steps=2, warmup=1, threads=1,
                                      overrides=extra) for extra in ([], ["train.ema_decay=0.9"]))
    assert "ema_updates" not in plain["rows"][0] and plain["model"]["ema_decay"] == 0.0
    assert averaged["rows"][0]["ema_updates"] == 3 and averaged["model"]["ema_decay"] == 0.9
    assert averaged["rows"][0]["loss_bits"] == plain["rows"][0]["loss_bits"]
    assert "; train.ema_decay=0.9)" in format_training_table(averaged)
    lstm = bench_training("samplernn-tiny", batches=(2,), seq_len=64, steps=1, warmup=0, threads=1,
                          overrides=["model.rnn_type=lstm"])
    assert lstm["model"]["parameters"] > plain["model"]["parameters"]  # four gates, not three
    with pytest.raises(WavegenError, match="ema_decay"):
        bench_training("samplernn-tiny", batches=(2,), seq_len=64, steps=1, overrides=["train.ema_decay=1.0"])
    with pytest.raises(WavegenError, match=r"sets batch_size itself \(use --batch\)"):
        bench_training("samplernn-tiny", overrides=["train.batch_size=4"])
    with pytest.raises(WavegenError, match="no setting 'nonsense'"):
        bench_training("samplernn-tiny", overrides=["nonsense=1"])


def test_overrides_given_as_an_iterator_are_reported():
    """Overrides given as a generator were applied but reported as none (result["model"]["overrides"] empty, the
    table's first line without them): the generator was spent checking them."""
    lstm = bench_training("samplernn-tiny", batches=(2,), seq_len=64, steps=1, warmup=0, threads=1,
                          overrides=(item for item in ["model.rnn_type=lstm"]))
    assert lstm["model"]["overrides"] == ["model.rnn_type=lstm"]
    assert format_training_table(lstm).splitlines()[0].endswith("; model.rnn_type=lstm)")


@pytest.mark.parametrize("model", ["wavenet-tiny", "samplernn-tiny"])
def test_a_model_conditioned_on_labels_is_timed_on_labelled_windows(model):
    """--set model.labels=[...] used to end in a traceback (an IndexError from the label embedding: the
    synthetic audio's windows carried label -1)."""
    rows = bench_training(model, batches=(2,), seq_len=64, steps=1, warmup=0, threads=1,
                          overrides=['model.labels=["a","b","c"]'])["rows"]
    assert rows[0]["samples_per_second"] > 0 and 0 < rows[0]["loss_bits"] < 16


def test_bench_train_takes_a_config_file_and_a_run_folder_as_train_does(tmp_path, capsys):
    """--model takes what wavegen train --model takes, from random weights (bench --train took only a
    preset name): the config's own sizes and batch, a run's settings (not its trained weights), and a
    value that is none of these is named. Generation timing takes the same run's checkpoint (--checkpoint)."""
    config = tmp_path / "mine.json"
    config.write_text(json.dumps({"preset": "samplernn-tiny", "model": {"dim": 32, "emb_size": 8},
                                  "train": {"batch_size": 3, "seq_len": 64, "tbptt_windows": 2}}))
    corpus = prepared_corpus(tmp_path, files=3, seconds=2.0, val_fraction=0.34)
    run = tmp_path / "run"
    assert cli.main(["-q", "train", "--data", str(corpus), "--model", str(config), "--run", str(run),
                     "--max-steps", "2", "--threads", "1", "--set", "train.sample_interval=-1",
                     "--set", "model.rnn_type=lstm", "--set", "train.val_seconds=1"]) == 0
    assert (run / "best" / "model.safetensors").is_file()
    timed = {}
    for name in (str(config), str(run)):
        assert cli.main(["-q", "bench", "--train", "--model", name, "--steps", "1", "--warmup-steps", "0",
                         "--threads", "1", "--json", str(tmp_path / "out.json")]) == 0
        timed[name] = json.loads((tmp_path / "out.json").read_text())
        out = capsys.readouterr().out
        assert out.startswith(f"training {name} ({timed[name]['model']['source']}; ")
    mine, trained = timed[str(config)], timed[str(run)]
    assert mine["model"]["name"] == str(config)
    assert mine["model"]["source"] == f"config {config}, random weights (seed 0)"
    assert [(r["batch"], r["seq_len"]) for r in mine["rows"]] == [(3, 64)]  # the file's, not the preset's 16 x 256
    assert mine["model"]["parameters"] == sum(p.numel() for p in resolve_model(str(config)).build().parameters())
    assert mine["command"].startswith(f"wavegen bench --train --model {config} --batch 3 --seq-len 64")
    assert trained["model"]["name"] == str(run) and trained["model"]["sample_rate"] == 16000
    assert trained["model"]["source"] == (f"run {run}: the settings of {run / 'best'}, random weights (seed 0), "
                                          "not its trained ones")
    assert [(r["batch"], r["seq_len"]) for r in trained["rows"]] == [(3, 64)]
    assert trained["model"]["parameters"] > mine["model"]["parameters"]  # the run's --set model.rnn_type=lstm
    assert 7.0 < trained["rows"][0]["loss_bits"] < 8.5  # random weights: ~8 bits of 256 levels, not a trained loss
    missing = tmp_path / "nothing.json"
    with pytest.raises(ConfigError, match=f"^{missing}: no such preset, model folder or run folder"):
        bench_training(str(missing))
    with pytest.raises(ConfigError, match=f"^{corpus}: a prepared corpus, not a model"):
        bench_training(str(corpus))
    shutil.rmtree(run / "best")  # a run with checkpoints only: resolve_model's advice, --checkpoint, is not bench's
    with pytest.raises(ConfigError, match=f"^{run}: this run has no best/ model to take the settings of; "
                                          f"give its {run / 'config.json'} for them"):
        bench_training(str(run))
    # generation timing takes the run's kept checkpoint, as resolve_model's advice says (bench had no --checkpoint)
    assert cli.main(["-q", "bench", "--model", str(run), "--checkpoint", "last", "--backends", "torch", "--batch", "1",
                     "--samples", "16", "--torch-samples", "16", "--repeats", "1", "--threads", "1",
                     "--json", str(tmp_path / "gen.json")]) == 0
    generated = json.loads((tmp_path / "gen.json").read_text())
    assert generated["model"]["source"].startswith(str(run / "checkpoints" / "step_2"))
    assert generated["command"].startswith(f"wavegen bench --model {run} --checkpoint last --backends torch")


def test_bench_train_cli_writes_json(tmp_path):
    out = tmp_path / "train.json"
    done = subprocess.run([sys.executable, "-m", "wavegen", "-q", "bench", "--train", "--model", "wavenet-tiny",
                           "--batch", "2", "--seq-len", "128", "--steps", "1", "--warmup-steps", "1",
                           "--threads", "1", "--set", "train.ema_decay=0.99", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "samples/s" in done.stdout
    result = json.loads(out.read_text())
    assert result["command"].startswith("wavegen bench --train --model wavenet-tiny --batch 2 --seq-len 128")
    assert result["rows"][0]["batch"] == 2 and result["rows"][0]["samples_per_second"] > 0
    assert result["command"].endswith("--set train.ema_decay=0.99") and result["rows"][0]["ema_updates"] == 2
    refused = subprocess.run([sys.executable, "-m", "wavegen", "-q", "bench", "--model", "samplernn-tiny", "--set",
                              "train.ema_decay=0.99"], capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "--set works with --train" in refused.stderr


def test_a_bad_count_is_named_with_its_flag_and_value(capsys):
    for kwargs, flags, message in ((dict(steps=0), ["--steps", "0"], "--steps 0: must be at least 1"),
                                   (dict(warmup=-1), ["--warmup-steps", "-1"], "--warmup-steps -1: must be at least 0"),
                                   (dict(batches=[2, 0]), ["--batch", "2,0"], "--batch 0: must be at least 1"),
                                   (dict(seq_len=0), ["--seq-len", "0"], "--seq-len 0: must be at least 1"),
                                   (dict(grad_accum=0), ["--grad-accum", "0"], "--grad-accum 0: must be at least 1"),
                                   (dict(num_workers=-1), ["--workers", "-1"], "--workers -1: must be at least 0")):
        with pytest.raises(ConfigError) as caught:
            bench_training("samplernn-tiny", **kwargs)
        assert str(caught.value) == message
        assert cli.main(["bench", "--train", "--model", "samplernn-tiny", *flags]) == 2
        assert capsys.readouterr().err.strip() == f"wavegen bench: error: {message}"


def accelerate_bench(folder, *args: str) -> subprocess.CompletedProcess:
    """``wavegen -q bench --train --model samplernn-tiny ARGS`` as 2 processes of ``accelerate launch``
    (the recipe's one-node config: gloo on this CPU), each recording the threads it leaves behind."""
    entry, env = cli_recording_threads(folder)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(RECIPES / "one_node.yaml"),
              "--num_processes", "2", "--main_process_port", str(free_port())]
    bench = ["-q", "bench", "--train", "--model", "samplernn-tiny", "--seq-len", "64", "--warmup-steps", "0",
             "--threads", "1", *args]
    return subprocess.run(launch + entry + bench, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


@pytest.mark.slow
def test_two_processes_split_the_global_batch_and_the_main_one_reports_the_whole_job(tmp_path):
    """--batch is the global batch: split over the processes as training splits it (refused, naming --batch,
    where it does not split), timed as one job, printed and written once."""
    one = bench_training("samplernn-tiny", batches=(4,), seq_len=64, steps=1, warmup=0, threads=1)["rows"][0]
    out = tmp_path / "two.json"
    done = accelerate_bench(tmp_path, "--batch", "4", "--steps", "1", "--json", str(out))
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("samples/s: audio samples trained per second by all processes") == 1
    result = json.loads(out.read_text())
    assert result["model"]["processes"] == 2 and "; 2 processes)" in done.stdout
    row = result["rows"][0]
    assert row["batch"] == 4 and row["samples_per_second"] == pytest.approx(4 * 64 / row["seconds"])
    assert row["memory"].endswith("the largest of 2 processes")
    # the first step's loss, before any update: the mean of the two halves is the whole batch's
    assert row["loss_bits"] == pytest.approx(one["loss_bits"], abs=1e-5)
    assert gloo_threads_left(tmp_path, 2) == {0: [], 1: []}  # the group ended before the processes exit
    refused = accelerate_bench(tmp_path, "--batch", "4,3", "--steps", "1", "--json", str(tmp_path / "no.json"))
    message = ("wavegen bench: error: --batch 3 does not split into 2 processes x 1 accumulation step; use a "
               "multiple of 2")
    assert refused.returncode != 0 and message in refused.stderr.splitlines()
    assert not (tmp_path / "no.json").exists()


def test_a_batch_that_does_not_split_is_refused_before_any_is_timed():
    """The split is training's (wavegen.data.local_streams): here over 2 accumulation steps of one process, named as
    the bench user gave it (was training's 'train.batch_size=3 ... 1 process(es) x 2 accumulation step(s)')."""
    timed = []
    with pytest.raises(ConfigError, match=r"^--batch 3 does not split into 1 process x 2 accumulation steps "
                                          r"\(--grad-accum 2\); use a multiple of 2$"):
        bench_training("samplernn-tiny", batches=(4, 3), seq_len=64, steps=1, warmup=0, threads=1, grad_accum=2,
                       progress=timed.append)
    assert timed == []


def test_the_models_batch_that_does_not_split_is_named_as_the_models():
    """No --batch given: the batch size is the model's train.batch_size (samplernn-tiny's 16), and the refusal says
    so (it said '--batch 16', an option the user never wrote)."""
    with pytest.raises(ConfigError) as refused:
        bench_training("samplernn-tiny", seq_len=64, steps=1, warmup=0, threads=1, grad_accum=3)
    assert str(refused.value) == ("the model's train.batch_size=16 (no --batch given) does not split into 1 process x "
                                  "3 accumulation steps (--grad-accum 3); use a multiple of 3")
