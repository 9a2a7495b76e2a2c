"""Model folders: safetensors + config.json, atomic replacement, clear errors; sizes checked before building."""

import json
import time

import pytest
import torch

from conftest import save_tiny_model, tiny_config
from wavegen.checkpoint import CheckpointError, load_model, save_model, weights_shapes
from wavegen.config import ConfigError
from wavegen.memory import OutOfMemoryError, available_memory
from wavegen.models import build_model
from wavegen.resolve import resolve_model


TINY = {"dim": 16, "emb_size": 4}  # samplernn-tiny, smaller


def config():
    return tiny_config(sample_rate=8000, **TINY)


def test_round_trip_and_run_folder_resolution(tmp_path):
    torch.manual_seed(0)
    model = build_model(config())
    save_model(model, config(), tmp_path / "run" / "best")
    assert resolve_model(tmp_path / "run").folder == tmp_path / "run" / "best"
    loaded, cfg = load_model(tmp_path / "run")
    assert cfg["data"]["sample_rate"] == 8000 and not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_replacing_a_model_folder_leaves_no_temporaries(tmp_path):
    for seed in (0, 1):
        save_tiny_model(tmp_path / "best", seed=seed, **TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    loaded, _ = load_model(tmp_path / "best")
    torch.manual_seed(1)
    fresh = build_model(config())
    assert torch.equal(loaded.mlp.output.weight, fresh.mlp.output.weight)


def test_errors_name_the_folder(tmp_path):
    with pytest.raises(ConfigError, match="no such preset, model folder or run folder"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="train a model first"):
        load_model(tmp_path / "empty")


def test_weights_that_do_not_match_the_config_are_refused(tmp_path):
    save_tiny_model(tmp_path / "m", **TINY)
    other = config()
    other["model"]["n_rnn"] = 2
    (tmp_path / "m" / "config.json").write_text(__import__("json").dumps(other))
    with pytest.raises(ConfigError, match="does not match"):
        load_model(tmp_path / "m")


def test_a_config_describing_a_huge_model_is_refused_before_anything_is_built(tmp_path):
    """config.json saying dim 30000 beside small weights (about 75 GB if built): refused from the
    header of the weights file and the config's shapes (meta device), in a moment, naming both."""
    folder = save_tiny_model(tmp_path / "m", **TINY)
    shapes = weights_shapes(folder / "model.safetensors")
    assert shapes["mlp.embedding.weight"] == (256, 4)
    huge = config()
    huge["model"]["dim"] = 30000
    (folder / "config.json").write_text(json.dumps(huge))
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"model.safetensors does not match its config \(the config describes "
                                          r"\d+\.\d+ GiB of weights, the file holds .* MiB"):
        resolve_model(folder).load()
    assert time.perf_counter() - start < 30  # allocating and initialising 75 GB would take minutes, or die
    # with no weights to compare (a config file), the memory estimate refuses it
    (tmp_path / "huge.json").write_text(json.dumps(huge))
    if available_memory("cpu")[0] < 70 * 2**30:
        with pytest.raises(OutOfMemoryError, match=r"needs \d+\.\d+ GiB for its weights alone .*model.dim"):
            resolve_model(tmp_path / "huge.json").build()


def test_a_cut_weights_header_is_named(tmp_path):
    folder = save_tiny_model(tmp_path / "m", **TINY)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-100])
    # the record of what was written is checked first (before the header is read to size the model)
    with pytest.raises(CheckpointError, match=rf"model.safetensors: {len(data) - 100} bytes, {len(data)} were written"):
        load_model(folder)
    (folder / "weights.json").unlink()  # a folder of an older wavegen: the header tells
    with pytest.raises(CheckpointError, match=r"model.safetensors: damaged .*truncated"):
        load_model(folder)
