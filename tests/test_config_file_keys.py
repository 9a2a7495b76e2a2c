"""A model config file written by hand (``train --model FILE``, ``info FILE``, ``bench --model FILE``): a key
wavegen does not read (a section's name mistyped, a setting put beside the sections, a data key mistyped) is
refused in one line naming the file and the key, not ignored: its setting would silently not be applied."""

import json

import pytest

from wavegen.cli import main
from wavegen.config import ConfigError
from wavegen.resolve import resolve_model


def write(path, content) -> str:
    path.write_text(json.dumps(content))
    return str(path)


@pytest.mark.parametrize("content, unknown", [
    ({"preset": "samplernn-tiny", "trian": {"lr": 1}}, "'trian'"),  # the train section's name mistyped
    ({"preset": "samplernn-tiny", "seed": 3}, "'seed'"),  # a train setting beside the sections
    ({"preset": "samplernn-tiny", "data": {"sample_rat": 8000}}, "data.sample_rat"),
    ({"model_type": "samplernn", "model": {"frame_sizes": [16, 4], "dim": 32, "emb_size": 8},
      "data": {"sample_rate": 16000}, "modle": {"dim": 64}}, "'modle'"),  # a config naming no preset
], ids=["section mistyped", "setting beside the sections", "data key mistyped", "no preset"])
def test_a_key_a_config_file_does_not_hold_is_refused_naming_the_file_and_key(tmp_path, capsys, content, unknown):
    path = write(tmp_path / "m.json", content)
    with pytest.raises(ConfigError) as caught:
        resolve_model(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and unknown in message and "\n" not in message, message
    # the command says the same in one line, exit 2, the file as it was
    assert main(["info", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"wavegen info: error: {message}"
    assert json.loads((tmp_path / "m.json").read_text()) == content


def test_every_key_wavegen_writes_in_a_config_is_read_from_a_file(tmp_path):
    # a run's config.json given as --model holds model_type, preset, model, train, data (corpus, sample_rate,
    # corpus_id, split_ids) and overrides: none of them is refused
    content = {"model_type": "samplernn", "preset": "samplernn-tiny", "model": {"dim": 48}, "train": {"lr": 0.003},
               "data": {"corpus": str(tmp_path / "corpus"), "sample_rate": 8000, "corpus_id": "0123456789abcdef",
                        "split_ids": {"val": "0123456789abcdef", "test": "fedcba9876543210"}},
               "overrides": ["model.dim=48", "train.lr=0.003"]}
    ref = resolve_model(write(tmp_path / "config.json", content))
    assert ref.config["model"]["dim"] == 48 and ref.config["train"]["lr"] == 0.003 and ref.sample_rate == 8000
    assert ref.config["overrides"] == ["model.dim=48", "train.lr=0.003"]


@pytest.mark.parametrize("overrides", [5, "model.dim=48", [3], {"model.dim": 48}],
                         ids=["a number", "a string", "a list of numbers", "a section"])
@pytest.mark.parametrize("where", ["file", "model folder"])
def test_overrides_that_are_not_a_list_of_settings_are_named(tmp_path, capsys, overrides, where):
    # was a TypeError traceback (a number), or each character said as an override ("with m o d e l . d i m")
    content = {"preset": "samplernn-tiny", "model": {"dim": 48}, "overrides": overrides}
    if where == "file":
        path = write(tmp_path / "m.json", content)
        target = path
    else:
        from wavegen.models import resolve_preset

        folder = tmp_path / "model"
        folder.mkdir()
        path = write(folder / "config.json", {**resolve_preset("samplernn-tiny"), "overrides": overrides})
        (folder / "model.safetensors").write_bytes(b"")
        target = str(folder)
    with pytest.raises(ConfigError) as caught:
        resolve_model(target)
    message = str(caught.value)
    assert message.startswith(f"{path}: overrides ") and "\n" not in message, message
    assert main(["info", target]) == 2
    assert capsys.readouterr().err.strip() == f"wavegen info: error: {message}"


@pytest.mark.parametrize("content", [
    {"format_version": 3, "sample_rate": 16000, "files": [], "splits": {}},  # a corpus's manifest.json
    {f"take_{n}.wav": n for n in range(2000)},  # a JSON of the user's own, its keys not listed in the line
], ids=["a manifest", "2000 keys"])
def test_a_json_file_that_is_no_model_config_is_said_to_be_none_not_a_config_with_unknown_keys(tmp_path, content):
    path = write(tmp_path / "manifest.json", content)
    with pytest.raises(ConfigError) as caught:
        resolve_model(path)
    assert str(caught.value) == f"{path}: not a wavegen model config (no model_type and model)"
