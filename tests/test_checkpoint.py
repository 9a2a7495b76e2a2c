"""Model folders: safetensors + config.json, atomic replacement, clear errors."""

import pytest
import torch

from wavegen.checkpoint import find_model_dir, load_model, save_model
from wavegen.config import ConfigError
from wavegen.models import build_model, resolve_preset


def config():
    c = resolve_preset("samplernn-tiny")
    c["model"].update(dim=16, emb_size=4)
    c["data"] = {"corpus": "", "sample_rate": 8000}
    return c


def test_round_trip_and_run_folder_resolution(tmp_path):
    torch.manual_seed(0)
    model = build_model(config())
    save_model(model, config(), tmp_path / "run" / "best")
    assert find_model_dir(tmp_path / "run") == tmp_path / "run" / "best"
    loaded, cfg = load_model(tmp_path / "run")
    assert cfg["data"]["sample_rate"] == 8000 and not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_replacing_a_model_folder_leaves_no_temporaries(tmp_path):
    for seed in (0, 1):
        torch.manual_seed(seed)
        save_model(build_model(config()), config(), tmp_path / "best")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    loaded, _ = load_model(tmp_path / "best")
    torch.manual_seed(1)
    fresh = build_model(config())
    assert torch.equal(loaded.mlp.output.bias, fresh.mlp.output.bias)


def test_errors_name_the_folder(tmp_path):
    with pytest.raises(ConfigError, match="no such model or run folder"):
        find_model_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="train a model first"):
        find_model_dir(tmp_path / "empty")


def test_weights_that_do_not_match_the_config_are_refused(tmp_path):
    save_model(build_model(config()), config(), tmp_path / "m")
    other = config()
    other["model"]["n_rnn"] = 2
    (tmp_path / "m" / "config.json").write_text(__import__("json").dumps(other))
    with pytest.raises(ConfigError, match="does not match"):
        load_model(tmp_path / "m")
