"""Model folders: safetensors + config.json, atomic replacement, clear errors; sizes checked before building."""

import json
import time

import pytest
import torch

from conftest import save_tiny_model, tiny_config
from wavegen.checkpoint import CheckpointError, load_model, save_model
from wavegen.weights_file import weights_shapes
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


def test_a_model_in_a_folder_named_in_another_encoding_loads(tmp_path):
    """A run folder whose name is not UTF-8 (Latin-1 'r\xe9un', as an older system names it): safetensors'
    load_file refuses the path ("not valid UTF-8", reported as a damaged file); the weights are read."""
    import os

    folder = tmp_path / os.fsdecode(b"r\xe9un") / "best"
    torch.manual_seed(0)
    model = build_model(config())
    save_model(model, config(), folder)
    loaded, _ = load_model(folder.parent)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


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


def test_the_tensors_digest_is_the_same_for_best_and_the_checkpoint_it_came_from(tmp_path):
    """best/ (save_model) and a checkpoint (accelerate's writer, maybe with DDP's "module." prefix) hold the
    same tensors in files of other bytes: tensors_sha256 is the same for all (their files' sha256 are not),
    the one weights.json records included; one value changed, or another dtype, gives another."""
    from accelerate.utils import save as accelerate_save
    from safetensors.torch import save_file

    from wavegen.checkpoint import recorded_tensors_sha256
    from wavegen.weights_file import tensors_sha256
    from wavegen.fileio import sha256_file

    best = save_tiny_model(tmp_path / "run" / "best", **TINY)
    state = load_model(best)[0].state_dict()
    kept = tmp_path / "run" / "checkpoints" / "step_5"
    kept.mkdir(parents=True)
    accelerate_save(state, kept / "model.safetensors", safe_serialization=True)
    save_file({f"module.{k}": v.contiguous() for k, v in state.items()}, kept / "wrapped.safetensors",
              metadata={"format": "pt"})
    files = [best / "model.safetensors", kept / "model.safetensors", kept / "wrapped.safetensors"]
    assert len({sha256_file(f) for f in files}) == 3
    digest = tensors_sha256(files[0])
    assert [tensors_sha256(f) for f in files] == [digest] * 3
    assert tensors_sha256(files[0].read_bytes()) == digest
    assert json.loads((best / "weights.json").read_text())["files"]["model.safetensors"]["tensors_sha256"] == digest
    assert recorded_tensors_sha256(files[0]) == digest
    name = sorted(state)[0]
    changed = {k: v.clone() for k, v in state.items()}
    changed[name].view(-1)[0] += 1
    save_file(changed, tmp_path / "changed.safetensors", metadata={"format": "pt"})
    doubled = {k: v.double() if k == name else v.contiguous() for k, v in state.items()}
    save_file(doubled, tmp_path / "float64.safetensors", metadata={"format": "pt"})
    assert tensors_sha256(tmp_path / "changed.safetensors") != digest
    assert tensors_sha256(tmp_path / "float64.safetensors") != digest
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(files[0].read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=rf"^{cut}: damaged or not a safetensors file \(.*truncated"):
        tensors_sha256(cut)
    for damaged in (b"\0" * 4, b"\xff" * 8 + b"x", files[0].read_bytes()[:-10]):  # bytes: named as bytes
        with pytest.raises(CheckpointError, match=rf"^weights of {len(damaged)} bytes: damaged or not safetensors"):
            tensors_sha256(damaged)
