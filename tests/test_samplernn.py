"""SampleRNN: config validation, the inference spec, TBPTT carry, presets (engines: test_engines.py)."""


import numpy as np
import pytest
import torch

from conftest import tiny_samplernn
from wavegen.audio import silence_code
from wavegen.config import ConfigError, TrainConfig
from wavegen.models import build_model, resolve_preset
from wavegen.models.samplernn import SampleRNNConfig

@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models run tiny ops: on a busy 2-core machine a second torch thread slows them down."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def parallel_logits(model, codes, labels=None):
    """Model's training-time forward on [silence context] + codes: logits [B, n, Q]."""
    cfg = model.config
    ctx = torch.full((codes.shape[0], model.context_samples), silence_code(cfg.q_levels, cfg.quantization))
    with torch.no_grad():
        logits, _ = model.logits(torch.cat([ctx, codes], 1), None, labels)
    return logits.numpy()


def test_a_one_hot_blend_is_the_label_index():
    model = tiny_samplernn([8, 2], labels=["a", "b", "c"])
    codes = torch.randint(0, 32, (2, 48))
    weights = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert np.allclose(parallel_logits(model, codes, torch.tensor([2, 1])), parallel_logits(model, codes, weights),
                       atol=1e-5)
    assert not np.allclose(parallel_logits(model, codes, torch.tensor([0, 0])), parallel_logits(model, codes, weights),
                           atol=1e-3)


def test_folded_tables_equal_embedding_times_conv():
    model = tiny_samplernn([8, 4])
    spec = model.inference_spec()
    emb = model.mlp.embedding.weight.detach()
    w = model.mlp.input.weight.detach()  # [dim, emb, window]
    for p in range(4):
        assert torch.allclose(spec["mlp"]["tables"][p], emb @ w[:, :, p].T, atol=1e-6)


def test_tbptt_carry_equals_one_long_sequence():
    """Two consecutive windows with the hidden state carried == one forward over both."""
    model = tiny_samplernn([8, 2])
    codes = torch.randint(0, 32, (2, 8 + 64))
    with torch.no_grad():
        whole = model.logits(codes)[0].numpy()
    model.train()
    first = {"codes": codes[:, :8 + 32], "reset": torch.tensor([True, True])}
    second = {"codes": codes[:, 32:], "reset": torch.tensor([False, False])}
    with torch.no_grad():
        _, state = model(first)
        carried = model._hidden_for(state, second["reset"], 2)
        logits, _ = model.logits(second["codes"], carried)
    assert np.allclose(logits.numpy(), whole[:, 32:], atol=1e-5)
    # reset=True on a stream restarts it from h0: differs from the carried continuation
    with torch.no_grad():
        restarted = model._hidden_for(state, torch.tensor([True, False]), 2)
        logits_r, _ = model.logits(second["codes"], restarted)
    assert not np.allclose(logits_r[0].numpy(), whole[0, 32:], atol=1e-3)
    assert np.allclose(logits_r[1].numpy(), whole[1, 32:], atol=1e-5)


def test_training_state_round_trip():
    """The carried state is named tensors with the streams at dim 1; handed to another model of the
    same shape (as a resumed trainer does) it continues the same way."""
    model = tiny_samplernn([8, 2], rnn_type="lstm").train()
    batch = {"codes": torch.randint(0, 32, (3, 8 + 16)), "reset": torch.ones(3, dtype=torch.bool)}
    _, state = model(batch)
    assert state and all(t.shape[1] == 3 for t in state.values())
    other = tiny_samplernn([8, 2], rnn_type="lstm")
    again = {"codes": torch.randint(0, 32, (3, 8 + 16)), "reset": torch.zeros(3, dtype=torch.bool)}
    saved = {k: v.clone() for k, v in state.items()}
    assert torch.equal(model(again, state)[0], other(again, saved)[0])
    assert not torch.equal(model(again, state)[0], model(again, None)[0])  # the state matters


@pytest.mark.parametrize("frame_sizes,message", [
    ([8, 3], "3 does not divide 8"),
    ([], "empty"),
    ([4, 4], "repeats"),
])
def test_config_validation_messages(frame_sizes, message):
    with pytest.raises(ConfigError, match=message):
        SampleRNNConfig(frame_sizes=frame_sizes).validate()


def test_seq_len_must_be_multiple_of_top_frame():
    with pytest.raises(ConfigError, match=r"seq_len=100 is not a multiple of the top frame size 16"):
        SampleRNNConfig(frame_sizes=[16, 4]).validate(TrainConfig(seq_len=100))


def test_bad_rnn_and_quantization_names():
    with pytest.raises(ConfigError, match="rnn_type"):
        SampleRNNConfig(rnn_type="transformer").validate()
    with pytest.raises(ConfigError, match="quantization"):
        SampleRNNConfig(quantization="a-law").validate()


@pytest.mark.parametrize("name,params", [
    ("samplernn-3tier", None), ("samplernn-2tier", None), ("dadabots", None), ("samplernn-tiny", None),
])
def test_presets_build_with_the_published_shapes(name, params):
    config = resolve_preset(name)
    with torch.device("meta"):  # shapes only: the full-size presets take seconds to initialise
        model = build_model(config)
    cfg = model.config
    expected = {"samplernn-3tier": ([8, 2], 1, "gru", 1024), "samplernn-2tier": ([16], 3, "gru", 1024),
                "dadabots": ([16], 5, "lstm", 1024), "samplernn-tiny": ([16, 4], 1, "gru", 128)}[name]
    assert (cfg.frame_sizes, cfg.n_rnn, cfg.rnn_type, cfg.dim) == expected
    if name == "dadabots":
        assert cfg.skip and cfg.quantization == "mu-law"
    assert len(model.tiers) == len(cfg.frame_sizes)
