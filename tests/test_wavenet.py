"""WaveNet: config, receptive field, the inference spec, the training forward, presets.

The engines (every backend against the parallel forward, state, labels, negative controls) are
tested in test_engines.py; the CLI round trip in test_cli.py.
"""


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_wavenet
from wavegen.audio import silence_code
from wavegen.config import ConfigError, TrainConfig
from wavegen.generate import make_engine, sample_codes, uniforms
from wavegen.memory import meta_model
from wavegen.models import resolve_preset
from wavegen.models.wavenet import WaveNet, WaveNetConfig

TOL = 1e-4  # fp32: observed differences are ~1e-7; a real bug moves logits by far more
Q = 32  # tiny_wavenet's default q_levels
LABELS = ["a", "b", "c"]
BLEND = np.array([[1, 0, 0], [0.2, 0.5, 0.3], [0, 0, 1]], dtype=np.float32)  # per stream


def parallel_logits(model, codes, labels=None):
    """The parallel forward on [silence] + codes[:, :-1]: logits [B, n, Q] predicting each code."""
    cfg = model.config
    first = torch.full((codes.shape[0], 1), silence_code(cfg.q_levels, cfg.quantization))
    with torch.no_grad():
        return model.parallel_logits(torch.cat([first, codes[:, :-1]], 1), labels).numpy()


def test_dilations_double_then_repeat():
    assert WaveNetConfig(layers=10, max_dilation=8).dilations == [1, 2, 4, 8, 1, 2, 4, 8, 1, 2]
    assert WaveNetConfig(layers=3, max_dilation=1).dilations == [1, 1, 1]
    model = tiny_wavenet(9, 4)
    assert model.receptive_field == 3 * (1 + 2 + 4) + 1 == model.context_samples


def test_label_index_equals_one_hot_blend_and_labels_matter():
    model = tiny_wavenet(labels=LABELS)
    codes = torch.randint(0, Q, (3, 30))
    by_index = parallel_logits(model, codes, torch.tensor([0, 1, 2]))
    by_blend = parallel_logits(model, codes, torch.eye(3))
    assert np.allclose(by_index, by_blend, atol=1e-6)
    other = parallel_logits(model, codes, torch.tensor([1, 2, 0]))
    assert np.abs(other - by_index).max() > 0.1


def test_inference_spec_layout():
    model = tiny_wavenet(6, 8, labels=LABELS)
    spec = model.inference_spec()
    R, S, A = 8, 12, 10
    assert spec["family"] == "wavenet" and spec["labels"] == LABELS and spec["q_levels"] == Q
    assert (spec["residual_channels"], spec["skip_channels"], spec["end_channels"]) == (R, S, A)
    assert spec["dilations"] == [1, 2, 4, 8, 1, 2] == [layer["dilation"] for layer in spec["layers"]]
    assert spec["receptive_field"] == sum(spec["dilations"]) + 1 == model.receptive_field
    assert spec["embed"].shape == (Q, R)
    shapes = {"conv_w": (2, 2 * R, R), "conv_b": (2 * R,), "label_bias": (3, 2 * R), "res_w": (R, R),
              "res_b": (R,), "skip_w": (S, R), "skip_b": (S,)}
    for layer in spec["layers"]:
        for name, shape in shapes.items():
            assert layer[name].shape == shape and layer[name].dtype == torch.float32, name
            assert layer[name].device.type == "cpu"
    assert not spec["layers"][-1]["res_w"].any()  # the last residual is never read
    # conv_w taps: tap 0 is the layer input d steps ago, tap 1 the current one
    w = model.layers[0].conv.weight.detach()  # [2R, R, 2]
    assert torch.equal(spec["layers"][0]["conv_w"][0], w[:, :, 0])
    assert torch.equal(spec["layers"][0]["conv_w"][1], w[:, :, 1])
    for name, shape in (("out1_w", (A, S)), ("out1_b", (A,)), ("out2_w", (Q, A)), ("out2_b", (Q,))):
        assert spec[name].shape == shape
    assert tiny_wavenet(2, 2).inference_spec()["layers"][0]["label_bias"] is None


def test_receptive_field_is_exact():
    """Changing input p changes exactly the outputs p .. p + rf - 1."""
    model = tiny_wavenet(6, 4)
    rf = model.receptive_field
    inputs = torch.randint(0, Q, (1, 3 * rf))
    p = rf
    changed = inputs.clone()
    changed[0, p] = (changed[0, p] + 5) % Q
    with torch.no_grad():
        diff = (model.parallel_logits(changed) - model.parallel_logits(inputs)).abs().amax(-1)[0]
    moved = torch.nonzero(diff > 1e-6).flatten().tolist()
    assert moved == list(range(p, p + rf))


def test_training_forward_equals_padded_forward_and_nll():
    model = tiny_wavenet(6, 8, labels=LABELS)
    rf, L = model.receptive_field, 20
    codes = torch.randint(0, Q, (3, rf + L))
    labels = torch.tensor([0, 2, 1])
    with torch.no_grad():
        valid = model.logits(codes, labels)  # no padding, only what the L predictions need
        padded = model.parallel_logits(codes[:, :-1], labels)[:, rf - 1:]
        nll, _ = model.sequence_nll(codes, labels)
        loss, _ = model({"codes": codes, "labels": labels})
    assert valid.shape == (3, L, Q)
    assert torch.allclose(valid, padded, atol=1e-5)
    want = F.cross_entropy(padded.transpose(1, 2), codes[:, rf:], reduction="none")
    assert nll.shape == (3, L) and torch.allclose(nll, want, atol=1e-5)
    assert torch.allclose(loss, want.mean(), atol=1e-5)
    with pytest.raises(ValueError, match="context"):
        model.logits(codes[:, :rf])


def test_prime_fills_the_receptive_field():
    """After a prime of at least rf codes only its last rf codes matter, and silence none."""
    model = tiny_wavenet(6, 8)
    rf = model.receptive_field
    rng = np.random.default_rng(0)
    prime = rng.integers(0, Q, (2, rf + 9))
    probe = rng.integers(0, Q, (2, 25))
    engine = make_engine(model, 2, backend="torch")
    engine.reset(prime_codes=prime)
    after_prime = engine.teacher_force(probe)
    window = torch.from_numpy(np.concatenate([prime[:, -rf:], probe[:, :-1]], 1))
    with torch.no_grad():
        want = model.parallel_logits(window)[:, rf - 1:].numpy()
    assert np.abs(after_prime - want).max() < TOL
    older = prime.copy()
    older[:, :-rf] = rng.integers(0, Q, older[:, :-rf].shape)  # change all but the last rf codes
    engine.reset(prime_codes=older)
    assert np.abs(engine.teacher_force(probe) - after_prime).max() < TOL


def test_generate_is_deterministic_and_agrees_with_teacher_forcing():
    model = tiny_wavenet(6, 8, labels=LABELS)
    u = uniforms(3, range(3), 0, 80)
    temps = [0.8, 1.0, 1.3]
    a = make_engine(model, 3, backend="torch")
    a.reset(label_weights=BLEND)
    codes = a.generate(u, temps)
    b = make_engine(model, 3, backend="torch")
    b.reset(label_weights=BLEND)
    assert np.array_equal(b.generate(u, temps), codes)
    assert codes.dtype == np.int64 and len(np.unique(codes)) > 5
    # sampling each teacher-forced distribution with the same uniforms gives the same codes back
    c = make_engine(model, 3, backend="torch")
    c.reset(label_weights=BLEND)
    logits = torch.from_numpy(c.teacher_force(codes))
    again = torch.stack([sample_codes(logits[:, i], torch.from_numpy(u[:, i]), torch.tensor(temps))
                         for i in range(u.shape[1])], 1)
    assert np.array_equal(again.numpy(), codes)


@pytest.mark.parametrize("change,message", [
    ({"max_dilation": 6}, "not a power of two.*use 4 or 8"),
    ({"layers": 0}, "layers=0"),
    ({"residual_channels": 0}, "residual_channels"),
    ({"quantization": "alaw"}, "use one of"),
    ({"q_levels": 1}, "q_levels"),
    ({"labels": ["a", "a"]}, "repeat"),
])
def test_config_validation_messages(change, message):
    with pytest.raises(ConfigError, match=message):
        WaveNetConfig(**change).validate(TrainConfig())


@pytest.mark.parametrize("name,layers,rf,channels", [
    ("wavenet-medium", 20, 2 * 1023 + 1, (64, 128, 256)),
    ("wavenet-paper", 40, 4 * 1023 + 1, (64, 64, 256)),
    ("wavenet-vincent", 30, 3 * 1023 + 1, (32, 1024, 512)),
    ("wavenet-tiny", 12, 2 * 63 + 1, (24, 48, 64)),
])
def test_presets(name, layers, rf, channels):
    config = resolve_preset(name)
    model = meta_model(config)  # shapes only: the full-size presets take seconds to initialise
    cfg = model.config
    assert isinstance(model, WaveNet) and cfg.layers == layers and model.receptive_field == rf
    assert (cfg.residual_channels, cfg.skip_channels, cfg.end_channels) == channels
    assert max(model.dilations) == (512 if name != "wavenet-tiny" else 32) and cfg.q_levels == 256
    assert config["train"]["seq_len"] >= 256
