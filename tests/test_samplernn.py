"""SampleRNN: config validation, the inference spec, TBPTT carry, presets (engines: test_engines.py)."""


import math

import numpy as np
import pytest
import torch

from conftest import tiny_samplernn
from wavegen.audio import silence_code
from wavegen.config import ConfigError, TrainConfig
from wavegen.memory import meta_model
from wavegen.models import resolve_preset, samplernn
from wavegen.models.samplernn import SampleMLP, SampleRNNConfig


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


def _check_uniform(weight: torch.Tensor, bound: float, what: str) -> None:
    """Drawn from U(-bound, bound): inside the bound, reaching near it, with its standard deviation."""
    w = weight.detach()
    assert w.abs().max() <= bound * (1 + 1e-6), f"{what}: {float(w.abs().max())} outside +-{bound}"
    assert w.abs().max() > 0.9 * bound, f"{what}: never near its bound {bound}"
    assert abs(float(w.std()) / (bound / math.sqrt(3)) - 1) < 0.1, f"{what}: std {float(w.std())}, bound {bound}"


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_initialisation_is_fan_in_scaled_with_orthogonal_candidate_blocks(rnn_type):
    """The init that made wavegen learn more per step than the 2017 peer (docs/QUALITY.md): Kaiming
    uniform into ReLUs and conditioning sums, LeCun for the frame projection into the RNN, the RNN's
    input/gate weights and the logits,
    the candidate's recurrent block orthogonal, biases zero, weight norm's g = ||v|| (the layer
    computes the drawn weight)."""
    torch.manual_seed(0)
    dim, emb, window, q = 64, 48, 4, 32
    model = samplernn.SampleRNN(SampleRNNConfig(frame_sizes=[16, window], n_rnn=2, dim=dim, emb_size=emb,
                                                q_levels=q, rnn_type=rnn_type))
    kaiming, lecun = (lambda fan_in: math.sqrt(6 / fan_in)), (lambda fan_in: math.sqrt(3 / fan_in))
    n_gates = 4 if rnn_type == "lstm" else 3
    for k, tier in enumerate(model.tiers):
        _check_uniform(tier.input.weight, lecun(tier.frame_size), f"tier {k} input")
        _check_uniform(tier.upsample.weight, kaiming(dim), f"tier {k} upsampling")
        biases = [tier.input.bias, tier.upsample.bias]
        for j, rnn in enumerate(tier.rnns):
            for gate in range(n_gates):
                rows = slice(gate * dim, (gate + 1) * dim)
                _check_uniform(rnn.weight_ih_l0[rows], lecun(dim), f"tier {k} layer {j} w_ih gate {gate}")
                w_hh = rnn.weight_hh_l0[rows].detach()
                if gate == 2:  # the candidate (GRU n, LSTM g)
                    assert torch.allclose(w_hh @ w_hh.T, torch.eye(dim), atol=1e-5), f"tier {k} layer {j}"
                else:
                    _check_uniform(w_hh, lecun(dim), f"tier {k} layer {j} w_hh gate {gate}")
            biases += [rnn.bias_ih_l0, rnn.bias_hh_l0]
        assert all(torch.count_nonzero(b) == 0 for b in biases)
    mlp = model.mlp
    _check_uniform(mlp.input.weight, kaiming(emb * window), "mlp input")
    _check_uniform(mlp.hidden.weight, kaiming(dim), "mlp hidden")
    _check_uniform(mlp.output.weight, lecun(dim), "mlp output")
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in (mlp.input, mlp.hidden, mlp.output))
    for layer in (model.tiers[0].input, model.tiers[1].upsample, mlp.input, mlp.output):
        g, v = layer.parametrizations.weight.original0, layer.parametrizations.weight.original1
        assert torch.allclose(g.flatten(), v.flatten(1).norm(dim=1), rtol=1e-6)
        assert torch.allclose(layer.weight, v, rtol=1e-6, atol=1e-7)


def test_folded_first_layer_equals_the_convolution_in_value_and_gradient(monkeypatch):
    """Training's first MLP layer as embedding_bag over the folded tables gives the convolution's
    loss (rtol 1e-5) and every parameter's gradient (to 1e-4 of the gradient's largest entry), and
    the model takes it for a large batch."""
    model = tiny_samplernn([16, 4], n_rnn=1, dim=32, emb_size=16, q_levels=64).train()
    batch = {"codes": torch.randint(0, 64, (4, 16 + 64), generator=torch.Generator().manual_seed(1)),
             "reset": torch.ones(4, dtype=torch.bool)}
    folded_calls = []
    original = SampleMLP.first_layer_folded
    monkeypatch.setattr(SampleMLP, "first_layer_folded",
                        lambda self, codes: folded_calls.append(1) or original(self, codes))
    results = {}
    for path, threshold in (("conv", 10 ** 12), ("folded", 0)):
        monkeypatch.setattr(samplernn, "FOLD_MIN_SAMPLES_PER_LEVEL", threshold)
        model.zero_grad()
        loss, _ = model(batch)
        loss.backward()
        results[path] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
        assert len(folded_calls) == (path == "folded")
    (loss_c, grads_c), (loss_f, grads_f) = results["conv"], results["folded"]
    assert torch.allclose(loss_c, loss_f, rtol=1e-5)
    assert grads_c.keys() == grads_f.keys()
    for name, g in grads_c.items():
        scale = float(g.abs().max())
        assert scale > 0, name
        assert torch.allclose(g, grads_f[name], rtol=0, atol=1e-4 * scale), name
    # the default rule: 4 x 64 predicted samples are at least 4 per level of a 64-level model: folded
    monkeypatch.setattr(samplernn, "FOLD_MIN_SAMPLES_PER_LEVEL", 4)
    model(batch)
    assert len(folded_calls) == 2


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
    model = meta_model(config)  # shapes only: the full-size presets take seconds to initialise
    cfg = model.config
    expected = {"samplernn-3tier": ([8, 2], 1, "gru", 1024), "samplernn-2tier": ([16], 3, "gru", 1024),
                "dadabots": ([16], 5, "lstm", 1024), "samplernn-tiny": ([16, 4], 1, "gru", 128)}[name]
    assert (cfg.frame_sizes, cfg.n_rnn, cfg.rnn_type, cfg.dim) == expected
    if name == "dadabots":
        assert cfg.skip and cfg.quantization == "mu-law"
    assert len(model.tiers) == len(cfg.frame_sizes)
