"""Training windows: deterministic in (seed, step), consecutive TBPTT windows, rank shards, the
batching chosen by the model's family, a signal that stops a long batch build."""

import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from conftest import tiny_samplernn, tiny_wavenet

from wavegen.audio import int16_to_float, quantize, silence_code
from wavegen.config import ConfigError, TrainConfig
from wavegen.data import (BatchBuildingStopped, CorpusTooShort, RandomCrops, TBPTTBatches, batch_warnings,
                          draw_weights, local_streams, make_batches, unused_settings)
from wavegen.signals import StopSignals

AUDIO = (np.sin(np.arange(50_000) * 0.01) * 20_000).astype(np.int16)
SEGMENTS = np.array([[0, 20_000, 0], [20_000, 30_000, 1]])
LABELS = np.array([0, 1])


def tbptt(rank=0, world=1, **kw):
    cfg = TrainConfig(batch_size=4, seq_len=64, tbptt_windows=3, seed=5, **kw)
    return TBPTTBatches(AUDIO, SEGMENTS, LABELS, cfg, 256, "mu-law", 16, rank, world)


def test_tbptt_windows_are_consecutive_and_reset_at_chunk_starts():
    src = tbptt()
    b0, b1, b2, b3 = (src.batch(s) for s in range(4))
    assert b0["codes"].shape == (4, 16 + 64)
    assert b0["reset"].all() and not b1["reset"].any() and not b2["reset"].any() and b3["reset"].all()
    # window w+1 starts 64 samples later; its context is the previous window's last 16 samples
    assert torch.equal(b1["codes"][:, :16], b0["codes"][:, -16:])
    assert torch.equal(b2["codes"][:, :16], b1["codes"][:, -16:])
    assert not torch.equal(b3["codes"][:, :16], b2["codes"][:, -16:])  # a new chunk
    # codes are the quantized corpus samples
    start = int(np.flatnonzero([np.array_equal(quantize(int16_to_float(AUDIO[s:s + 80]), 256, "mu-law"),
                                               b0["codes"][0].numpy()) for s in range(0, 50_000 - 80)])[0])
    assert start + 3 * 64 + 16 <= 20_000 or start >= 20_000  # a chunk never crosses a segment
    assert b0["labels"][0] == (0 if start < 20_000 else 1)


def test_silence_start_puts_silence_before_a_fraction_of_chunks_first_windows_only():
    silence = silence_code(256, "mu-law")
    plain, half, every = tbptt(), tbptt(silence_start=0.5), tbptt(silence_start=1.0)
    silent_rows = 0
    for step in range(12):  # 4 chunks of 3 windows
        p, h, e = plain.batch(step)["codes"], half.batch(step)["codes"], every.batch(step)["codes"]
        assert torch.equal(p[:, 16:], h[:, 16:]) and torch.equal(p[:, 16:], e[:, 16:])  # the same audio
        if step % 3:  # later windows: the previous window's samples, as without it
            assert torch.equal(p, h) and torch.equal(p, e)
            continue
        assert (e[:, :16] == silence).all() and (p[:, :16] != silence).any()
        changed = [not torch.equal(h[i], p[i]) for i in range(4)]
        assert all((h[i, :16] == silence).all() for i in range(4) if changed[i])
        silent_rows += sum(changed)
    assert 0 < silent_rows < 16  # some chunks of 16, not all (seed 5: drawn apart from the chunks' own)
    assert torch.equal(tbptt(silence_start=0.5).batch(6)["codes"], half.batch(6)["codes"])  # deterministic


def test_batches_are_a_pure_function_of_seed_and_step():
    a, b = tbptt(), tbptt()
    assert torch.equal(a.batch(7)["codes"], b.batch(7)["codes"])
    b.batch(2)
    assert torch.equal(a.batch(5)["codes"], b.batch(5)["codes"])
    other = TBPTTBatches(AUDIO, SEGMENTS, LABELS, TrainConfig(batch_size=4, seq_len=64, tbptt_windows=3, seed=6),
                         256, "mu-law", 16)
    assert not torch.equal(a.batch(0)["codes"], other.batch(0)["codes"])


def test_ranks_and_accumulation_split_the_same_global_batch():
    whole = tbptt().batch(4)["codes"]
    halves = [tbptt(rank=r, world=2).batch(4)["codes"] for r in range(2)]
    assert torch.equal(torch.cat(halves), whole)
    accum = [tbptt(grad_accum=2).batch(4, m)["codes"] for m in range(2)]
    assert torch.equal(torch.cat(accum), whole)
    with pytest.raises(ConfigError, match="does not split"):
        local_streams(TrainConfig(batch_size=6, grad_accum=4), 0, 1)


@pytest.mark.parametrize("batch, accum, world, said", [
    (3, 2, 1, "train.batch_size=3 does not split into 1 process x 2 accumulation steps (train.grad_accum=2); use a "
              "multiple of 2"),
    (3, 1, 2, "train.batch_size=3 does not split into 2 processes x 1 accumulation step; use a multiple of 2")])
def test_a_batch_that_does_not_split_is_named_with_its_counts_agreeing(batch, accum, world, said):
    """Training's refusal names the keys the user set (train.batch_size, train.grad_accum) and its counts agree
    with their nouns (it said '1 process(es) x 2 accumulation step(s)')."""
    with pytest.raises(ConfigError) as refused:
        local_streams(TrainConfig(batch_size=batch, grad_accum=accum), 0, world)
    assert str(refused.value) == said


def test_random_crops():
    cfg = TrainConfig(batch_size=3, seq_len=100, seed=1)
    src = RandomCrops(AUDIO, SEGMENTS, None, cfg, 256, "linear", 50)
    b = src.batch(0)
    assert b["codes"].shape == (3, 150) and b["reset"].all() and (b["labels"] == -1).all()
    assert not torch.equal(src.batch(0)["codes"], src.batch(1)["codes"])


def test_silence_start_is_named_as_unused_for_random_crops_which_it_leaves_as_they_were():
    """train.silence_start shapes SampleRNN's chunk starts only: a WaveNet run given it trained on the very
    same crops without a word (the trainer now warns with what unused_settings names)."""
    crops = [RandomCrops(AUDIO, SEGMENTS, None, TrainConfig(batch_size=3, seq_len=100, seed=1, silence_start=f),
                         256, "linear", 50).batch(0)["codes"] for f in (0.0, 0.5)]
    assert torch.equal(crops[0], crops[1])
    assert unused_settings("wavenet", TrainConfig(silence_start=0.5)) == ["train.silence_start=0.5"]
    assert unused_settings("wavenet", TrainConfig()) == []
    assert unused_settings("samplernn", TrainConfig(silence_start=0.5)) == []


def test_tbptt_windows_is_named_as_unused_for_random_crops_which_it_leaves_as_they_were():
    """train.tbptt_windows (SampleRNN's windows per chunk) is never read by a WaveNet's random crops: a WaveNet
    run given it (the --set list of a SampleRNN run reused) trained on the very same crops without a word."""
    crops = [RandomCrops(AUDIO, SEGMENTS, None, TrainConfig(batch_size=3, seq_len=100, seed=1, tbptt_windows=w),
                         256, "linear", 50).batch(0)["codes"] for w in (8, 32)]
    assert torch.equal(crops[0], crops[1])
    assert unused_settings("wavenet", TrainConfig(tbptt_windows=32)) == ["train.tbptt_windows=32"]
    assert unused_settings("wavenet", TrainConfig(tbptt_windows=32, silence_start=0.5)) == [
        "train.silence_start=0.5", "train.tbptt_windows=32"]
    assert unused_settings("wavenet", TrainConfig(tbptt_windows=TrainConfig().tbptt_windows)) == []  # the default
    assert unused_settings("samplernn", TrainConfig(tbptt_windows=32)) == []


def test_too_short_corpus_names_the_sizes():
    with pytest.raises(CorpusTooShort, match=r"longest segment: 30000 samples"):
        TBPTTBatches(AUDIO, SEGMENTS, None, TrainConfig(batch_size=1, seq_len=4096, tbptt_windows=8),
                     256, "linear", 16)


def test_the_batching_follows_the_model_family():
    cfg = TrainConfig(batch_size=2, seq_len=64, tbptt_windows=3, seed=1)
    rnn = make_batches(tiny_samplernn([8, 2]), AUDIO, SEGMENTS, LABELS, cfg)
    crops = make_batches(tiny_wavenet(layers=3, max_dilation=4), AUDIO, SEGMENTS, LABELS, cfg)
    assert isinstance(rnn, TBPTTBatches) and rnn.context == 8 and rnn.need == 8 + 3 * 64
    assert isinstance(crops, RandomCrops) and crops.context == 1 + 2 + 4 + 1
    assert set(rnn.batch(0)) == {"codes", "reset", "labels"}  # no trainer bookkeeping in a batch
    with pytest.raises(ConfigError, match="seq_len=60 is not a multiple of the top frame size 8"):
        make_batches(tiny_samplernn([8, 2]), AUDIO, SEGMENTS, LABELS, TrainConfig(seq_len=60))


def test_a_signal_stops_a_long_batch_build():
    """A real SIGTERM during the build of a batch of a million streams (about a minute of draws)
    stops it within a moment: the first signal no longer waits for the batch to finish."""
    src = RandomCrops(AUDIO, SEGMENTS, None, TrainConfig(batch_size=1_000_000, seq_len=16), 256, "linear", 4)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    with StopSignals("test") as stop:
        src.should_stop = lambda: stop.requested
        timer.start()
        start = time.perf_counter()
        with pytest.raises(BatchBuildingStopped):
            src.batch(0)
        elapsed = time.perf_counter() - start
    timer.join()
    assert stop.name == "SIGTERM" and elapsed < 10


def drawn_labels(balance, family=RandomCrops, steps=100):
    """Labels of every stream over ``steps`` batches of 32, on label 0's 100,000 samples and label 1's 10,000."""
    audio = (np.sin(np.arange(110_000) * 0.01) * 20_000).astype(np.int16)
    segments = np.array([[0, 50_000, 0], [50_000, 50_000, 1], [100_000, 10_000, 2]])
    cfg = TrainConfig(batch_size=32, seq_len=64, tbptt_windows=1, seed=3, label_balance=balance)
    src = family(audio, segments, np.array([0, 0, 1]), cfg, 256, "linear", 16)
    return np.concatenate([src.batch(step)["labels"].numpy() for step in range(steps)])


@pytest.mark.parametrize("family", [RandomCrops, TBPTTBatches])
def test_label_balance_draws_every_label_equally_often(family):
    """A labelled corpus of 10:1: its small label trained 10 times less, with no way to change it. With
    train.label_balance=1 each label is drawn about as often (3200 draws: within 5 points of half);
    at 0 (the default) as its audio, 10:1; between, as its audio ** (1 - balance): 0.5 → sqrt(10):1."""
    plain, balanced, half = (np.bincount(drawn_labels(b, family), minlength=2) for b in (0.0, 1.0, 0.5))
    assert 8 < plain[0] / plain[1] < 12.5
    assert abs(balanced[1] / balanced.sum() - 0.5) < 0.05
    assert 2.5 < half[0] / half[1] < 4
    assert np.array_equal(drawn_labels(1.0, family, 20), drawn_labels(1.0, family, 20))  # deterministic


def test_label_balance_leaves_the_draws_within_a_label_by_its_audio_and_the_default_as_it_was():
    spans, labels = np.array([40.0, 60.0, 5.0, 15.0]), np.array([0, 0, 1, 1])
    assert np.array_equal(draw_weights(spans, labels, 0.0), spans / spans.sum())  # bit for bit, as before
    equal = draw_weights(spans, labels, 1.0)
    assert np.allclose(equal, [0.2, 0.3, 0.125, 0.375]) and equal.sum() == pytest.approx(1.0)
    unlabelled = draw_weights(spans, np.full(4, -1), 1.0)
    assert np.allclose(unlabelled, spans / spans.sum())


def test_label_balance_on_windows_of_one_label_or_none_is_named_as_doing_nothing():
    model = tiny_samplernn([8, 2])
    cfg = TrainConfig(batch_size=2, seq_len=64, tbptt_windows=3, label_balance=1.0)

    def said(labels):
        return batch_warnings(make_batches(model, AUDIO, SEGMENTS, labels, cfg), model, cfg)

    assert said(None) == ["train.label_balance=1 does nothing here: the training windows hold no labels (prep with "
                          "--labels folders for some)"]
    assert said(np.array([1, 1])) == ["train.label_balance=1 does nothing here: the training windows hold one label "
                                      "alone"]
    assert said(LABELS) == []
