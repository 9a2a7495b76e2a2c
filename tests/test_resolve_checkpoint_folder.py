"""``--checkpoint`` given with a folder that is not a run folder: the line says what the folder lacks (a model
folder copied elsewhere, or a run's best/, has its config.json: it was said to have none), and where a run's
best/ was given, the run folder to give instead."""

import pytest

from wavegen.cli import main
from wavegen.config import ConfigError
from wavegen.resolve import resolve_model


def model_folder(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def refusal(folder) -> str:
    with pytest.raises(ConfigError) as caught:
        resolve_model(folder, checkpoint="last")
    return str(caught.value)


def test_a_model_folder_is_said_to_be_one_not_to_lack_its_config(tmp_path, capsys):
    folder = model_folder(tmp_path / "mymodel")
    said = refusal(folder)
    assert said.startswith(f"--checkpoint last: {folder} is a model folder") and "no config.json" not in said, said
    assert "checkpoints/" in said and "run folder" in said
    assert main(["info", str(folder), "--checkpoint", "last"]) == 2
    assert capsys.readouterr().err.strip() == f"wavegen info: error: {said}"


def test_a_runs_best_names_its_run_folder(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    said = refusal(model_folder(run / "best"))
    assert f"is {run}'s best model; give the run folder, {run}, with --checkpoint" in said, said


@pytest.mark.parametrize("has, lacks", [((), "no config.json and no checkpoints/"), (("config.json",), "no checkpoints/"),
                                        (("checkpoints",), "no config.json")],
                         ids=["neither", "config alone", "checkpoints alone"])
def test_a_folder_that_is_no_run_is_said_to_lack_what_it_lacks(tmp_path, has, lacks):
    folder = tmp_path / "folder"
    folder.mkdir()
    if "config.json" in has:
        (folder / "config.json").write_text("{}")
    if "checkpoints" in has:
        (folder / "checkpoints").mkdir()
    said = refusal(folder)
    assert said.startswith(f"--checkpoint last: {folder} is not a run folder ({lacks}); "), said
