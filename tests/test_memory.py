"""The meta-device model that memory checks and ``wavegen info`` read: the real model's every
parameter name, shape and dtype, built without initialisation work, and torch's initialisers
left as they were."""

import threading

import pytest
import torch
from torch import nn

from wavegen.memory import _meta_without_init, meta_model, training_estimate
from wavegen.models import build_model, resolve_preset
from wavegen.models.samplernn import _MetaWeightNorm


def shapes(model):
    return {name: (tuple(t.shape), t.dtype) for name, t in model.state_dict().items()}


@pytest.mark.parametrize("preset, overrides", [
    ("samplernn-tiny", {}),
    ("samplernn-tiny", {"rnn_type": "lstm", "frame_sizes": [16, 4, 2], "labels": ["a", "b"]}),
    ("samplernn-tiny", {"weight_norm": False}),
    ("wavenet-tiny", {}),
])
def test_the_meta_model_has_the_real_models_parameters(preset, overrides):
    config = resolve_preset(preset)
    config["model"].update(overrides)
    meta, real = meta_model(config), build_model(config)
    assert shapes(meta) == shapes(real)
    assert all(t.is_meta for t in meta.state_dict().values())
    assert not any(t.is_meta for t in real.state_dict().values())


def test_torch_initialisers_are_restored_and_real_tensors_still_initialised():
    before = {name: getattr(nn.init, name) for name in ("normal_", "orthogonal_", "uniform_")}
    with pytest.raises(RuntimeError, match="inside"):
        with _meta_without_init():
            real = torch.zeros(4, 4, device="cpu")
            nn.init.normal_(real)  # a CPU tensor is initialised inside the block too
            assert real.abs().sum() > 0
            assert nn.init.normal_(torch.empty(3, 3)).device.type == "meta"  # the default device
            raise RuntimeError("inside")
    assert {name: getattr(nn.init, name) for name in before} == before
    assert torch.get_default_device().type == "cpu"


def test_threads_building_meta_models_at_once_leave_the_initialisers_restored():
    # without the lock around the patch, one thread saved another's wrapper as "the original"
    # and put it back last (seen in every run of four threads x 20 builds)
    before = {name: getattr(nn.init, name) for name in ("normal_", "orthogonal_", "uniform_")}
    config, errors = resolve_preset("samplernn-tiny"), []

    def build():
        try:
            for _ in range(20):
                assert all(t.is_meta for t in meta_model(config).state_dict().values())
        except Exception as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {name: getattr(nn.init, name) for name in before} == before


def test_the_meta_weight_norm_computes_torchs_weight_norm():
    # the same forward as torch's parametrization: w = g * v / ||v|| per output row
    v, g = torch.randn(5, 3), torch.rand(5, 1) + 0.5
    want = g * v / v.norm(dim=1, keepdim=True)
    assert torch.allclose(_MetaWeightNorm()(g, v), want, atol=1e-6)
    # and the same parameter shapes: g [out, 1, 1] for a convolution
    g_meta, v_meta = _MetaWeightNorm().right_inverse(torch.empty(6, 4, 2, device="meta"))
    real = nn.utils.parametrizations.weight_norm(nn.Conv1d(4, 6, 2)).parametrizations.weight
    assert g_meta.shape == real.original0.shape and v_meta.shape == real.original1.shape


def test_the_training_estimate_counts_the_weight_normed_weights():
    # weight norm saves the normed weights for the backward pass: the estimate sees them
    config = resolve_preset("samplernn-tiny")
    plain = resolve_preset("samplernn-tiny")
    plain["model"]["weight_norm"] = False
    normed = training_estimate(config, 4, 256, False, False)
    bare = training_estimate(plain, 4, 256, False, False)
    assert normed["weights"] > bare["weights"]  # g per output unit
    assert normed["activations"] > bare["activations"]
