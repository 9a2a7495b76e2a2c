"""``wavegen train --model FILE``: every kind of file --model takes for its settings (a config .json
written by hand, whole or in part; a run's config.json; a run or model folder), and what a bad one
says: one line naming the file or value, exit 2, nothing written in the run folder."""

import json

import pytest
from conftest import TINY_SAMPLERNN

from wavegen.cli import main
from wavegen.config import TrainConfig, to_dict

MODEL = {"frame_sizes": [16, 4], "dim": 32, "emb_size": 8}


def wavegen_train(corpus, model, run, *overrides: str) -> int:
    sets = [a for s in TINY_SAMPLERNN + list(overrides) for a in ("--set", s)]
    return main(["-q", "train", "--data", str(corpus), "--model", str(model), "--run", str(run),
                 "--max-steps", "1", "--threads", "1", *sets])


def write(path, content) -> str:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


@pytest.mark.parametrize("train", [None, {"lr": 0.004, "grad_clip": 0.5}], ids=["no train section", "part of it"])
def test_a_config_file_with_some_train_settings_or_none_trains_with_the_defaults_for_the_rest(
        tiny_corpus, tmp_path, train):
    config = {"model_type": "samplernn", "model": MODEL, "data": {"sample_rate": 16000}}
    if train is not None:
        config["train"] = train
    run = tmp_path / "run"
    # --max-steps and --set reach train settings the file does not name (before: "no section 'train'",
    # or a KeyError traceback without any --set)
    assert wavegen_train(tiny_corpus, write(tmp_path / "m.json", config), run, "train.val_interval=7") == 0
    saved = json.loads((run / "config.json").read_text())
    expected = {**to_dict(TrainConfig()), **(train or {})}
    expected.update(max_steps=1, val_interval=7, batch_size=4, seq_len=64, tbptt_windows=2, val_seconds=2,
                    log_interval=1, sample_interval=-1)
    assert saved["train"] == expected
    assert saved["model"]["dim"] == 32 and saved["model"]["frame_sizes"] == [16, 4]
    assert (run / "checkpoints" / "step_1").is_dir()


def test_a_runs_config_json_gives_its_settings(tiny_corpus, tmp_path):
    first = tmp_path / "first"
    assert wavegen_train(tiny_corpus, "samplernn-tiny", first, "train.lr=0.003") == 0
    again = tmp_path / "again"
    for model in (first / "config.json", first, first / "best"):  # the file, the run folder, its model folder
        assert wavegen_train(tiny_corpus, model, again) == 0
        saved = json.loads((again / "config.json").read_text())
        assert saved["train"]["lr"] == 0.003 and saved["model"]["dim"] == 32
        assert saved["preset"] == "samplernn-tiny"


def test_a_config_file_without_train_trains_with_no_override_at_all(tiny_corpus, tmp_path):
    config = write(tmp_path / "m.json", {"model_type": "samplernn", "model": MODEL, "data": {"sample_rate": 16000}})
    from wavegen.resolve import resolve_model
    from wavegen.train import resolve_run_config

    resolved = resolve_run_config(resolve_model(config).config, tiny_corpus)  # no --set, no --max-steps
    assert resolved["train"] == to_dict(TrainConfig()) and resolved["overrides"] == []


@pytest.mark.parametrize("content, message", [
    ('{"model_type": "samplernn",', "not valid JSON"),
    ("[1, 2]", "not a wavegen model config (no model_type and model)"),
    ({"model_type": "samplernn", "model": MODEL}, "no data.sample_rate and no known preset to take it from"),
    ({"model_type": "samplernn", "model": MODEL, "data": {"sample_rate": 16000}, "train": "fast"},
     "train='fast' in the model's config: expected a section of train settings"),
    ({"model_type": "samplernn", "model": MODEL, "data": {"sample_rate": 16000}, "train": {"speed": 3}},
     "unknown train setting ['speed']"),
    ({"model_type": "samplernn", "model": {**MODEL, "width": 3}, "data": {"sample_rate": 16000}},
     "unknown model setting ['width']"),
    ({"model_type": "lstm", "model": MODEL, "data": {"sample_rate": 16000}}, "unknown model_type 'lstm'"),
], ids=["broken", "a list", "no rate", "train not a section", "unknown train setting", "unknown model setting",
        "unknown family"])
def test_a_bad_config_file_is_one_line_and_writes_nothing(tiny_corpus, tmp_path, capsys, content, message):
    run = tmp_path / "run"
    assert wavegen_train(tiny_corpus, write(tmp_path / "m.json", content), run) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wavegen train: error:") and "\n" not in err and message in err, err
    assert not run.exists()


def test_a_file_that_is_not_a_config_is_named(tiny_corpus, tmp_path, capsys):
    assert wavegen_train(tiny_corpus, write(tmp_path / "notes.txt", "dim=32"), tmp_path / "run") == 2
    assert f"{tmp_path / 'notes.txt'}: not a model: give a preset name" in capsys.readouterr().err


def test_a_config_file_naming_a_preset_takes_the_presets_settings_under_its_own(tiny_corpus, tmp_path, capsys):
    # only dim given: frame_sizes, emb_size, rnn and the train settings are samplernn-tiny's, not the dataclass
    # defaults (frame_sizes [16, 4] and batch_size 32 before)
    path = write(tmp_path / "m.json", {"preset": "samplernn-tiny", "model": {"dim": 48, "frame_sizes": [8, 2]},
                                       "train": {"lr": 0.004}})
    from wavegen.models import resolve_preset
    from wavegen.resolve import resolve_model

    preset = resolve_preset("samplernn-tiny")
    ref = resolve_model(path)
    assert ref.config["model"] == {**preset["model"], "dim": 48, "frame_sizes": [8, 2]}
    assert ref.config["train"] == {**preset["train"], "lr": 0.004}
    assert ref.config["model_type"] == "samplernn" and ref.sample_rate == preset["data"]["sample_rate"]
    assert ref.config["overrides"] == ["model.dim=48", "model.frame_sizes=[8,2]", "train.lr=0.004"]
    # wavegen info shows the merged model, and says what the file changed
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    assert "frame_sizes: [8, 2]" in out and "x 48" in out and "preset samplernn-tiny with model.dim=48" in out
    # training: the run's config.json is the preset's with the file's settings, then --set
    run = tmp_path / "run"
    assert wavegen_train(tiny_corpus, path, run) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["lr"] == 0.004 and saved["train"]["val_interval"] == preset["train"]["val_interval"]
    assert saved["model"]["emb_size"] == 8 and saved["model"]["frame_sizes"] == [8, 2]  # --set model.emb_size=8
    assert saved["overrides"][:3] == ["model.dim=48", "model.frame_sizes=[8,2]", "train.lr=0.004"]


@pytest.mark.parametrize("content, message", [
    ({"preset": "samplernn-tiny", "model": {"dim": 32}, "train": {"speed": 3}}, "unknown train setting ['speed']"),
    ({"preset": "samplernn-tiny", "model": {"dim": 32}, "train": {"lr": -1}}, "train.lr=-1.0: give 0 < lr"),
    ({"preset": "samplernn-tiny", "model": {"dim": "big"}}, "model.dim='big': expected a whole number"),
    ({"preset": "samplernn-tiny", "model": {"width": 3}}, "unknown model setting ['width']"),
    ({"preset": "samplernn-tiny", "train": "fast"}, "train='fast' in the model's config"),
    ({"preset": "samplernn-tiy", "model": {"dim": 32}}, "preset 'samplernn-tiy' is not a preset"),
    ({"model_type": "wavenet", "preset": "samplernn-tiny", "model": {}}, "preset 'samplernn-tiny' is a samplernn"),
], ids=["unknown train setting", "bad train value", "bad model value", "unknown model setting", "train not a section",
        "unknown preset", "another family"])
@pytest.mark.parametrize("command", ["train", "info"])
def test_a_bad_setting_in_a_config_file_names_the_file(tiny_corpus, tmp_path, capsys, content, message, command):
    path = write(tmp_path / "m.json", content)
    run = tmp_path / "run"
    code = wavegen_train(tiny_corpus, path, run) if command == "train" else main(["info", path])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"wavegen {command}: error: {path}: ") and "\n" not in err and message in err, err
    assert not run.exists()
