"""wavegen info's text: every line a person reads is the model's fact, in a form read at a glance."""

import argparse
import json

import pytest
from conftest import save_tiny_model

from wavegen import cli
from wavegen.cli.options import emit_json
from wavegen.errors import WavegenError
from wavegen.models import build_model, preset_names, resolve_preset


def test_info_text_states_the_presets_facts(capsys):
    assert cli.main(["info", "wavenet-tiny"]) == 0
    lines = dict(line.strip().split(": ", 1) for line in capsys.readouterr().out.splitlines() if not line.endswith(":"))
    config = resolve_preset("wavenet-tiny")
    n = sum(p.numel() for p in build_model(config).parameters())
    assert lines["model"] == "preset wavenet-tiny (random weights)"
    assert lines["parameters"] == f"{n:,} ({n / 1e6:.2f}M)" and "," in lines["parameters"]  # 75,144, not 75144
    assert lines["sample_rate"] == str(config["data"]["sample_rate"])
    assert lines["torch"] == "available"
    assert cli.main(["info", "wavenet-tiny", "--json"]) == 0  # the JSON keeps the number
    assert json.loads(capsys.readouterr().out)["parameters"] == n


def info_json(capsys, *argv):
    assert cli.main(["info", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_bare_json_before_or_after_the_model_prints_the_same(tmp_path, capsys):
    """--json [FILE] (argparse nargs="?") took the word after a bare --json as its FILE: `info --json RUN`
    would have written the presets into RUN. A word that names a model that is there is the model."""
    model = save_tiny_model(tmp_path / "tiny")
    after = info_json(capsys, str(model), "--json")
    assert after["model"] == str(model) and after["model_type"] == "samplernn"
    assert info_json(capsys, "--json", str(model)) == after
    assert info_json(capsys, "--json", "-", str(model)) == after  # --json -: stdout, said outright
    assert info_json(capsys, "--json", "wavenet-tiny")["model_type"] == "wavenet"
    config = tmp_path / "cfg.json"  # a config file there is a model, never a file to overwrite
    config.write_text(json.dumps(resolve_preset("wavenet-tiny")))
    before = config.read_bytes()
    assert info_json(capsys, "--json", str(config))["model_type"] == "wavenet"
    assert config.read_bytes() == before
    edited = tmp_path / "mine.json"  # a preset with changes (no model_type): a model too
    edited.write_text(json.dumps({"preset": "samplernn-tiny", "model": {}}))
    assert info_json(capsys, "--json", str(edited))["model_type"] == "samplernn"
    broken = tmp_path / "broken.json"  # a config being written by hand: named as the model, left as it is
    broken.write_text('{"preset": "samplernn-tiny",}')
    assert cli.main(["info", "--json", str(broken)]) == 2
    assert str(broken) in capsys.readouterr().err and broken.read_text() == '{"preset": "samplernn-tiny",}'


def test_json_with_a_file_writes_it_and_prints_the_text(tmp_path, capsys):
    out = tmp_path / "new" / "info.json"
    assert cli.main(["info", "wavenet-tiny", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model: preset wavenet-tiny (random weights)" in printed.splitlines()
    assert json.loads(out.read_text())["model_type"] == "wavenet"
    presets = tmp_path / "presets.json"  # no model: the presets, as `info --json` prints them
    assert cli.main(["info", "--json", str(presets)]) == 0
    assert capsys.readouterr().out.startswith("presets:\n")
    assert set(json.loads(presets.read_text())) == set(preset_names())


def test_a_missing_model_after_a_bare_json_is_named_not_written_as_the_presets(tmp_path, capsys):
    typo = tmp_path / "runs" / "mine"
    assert cli.main(["info", "--json", str(typo)]) == 2
    err = capsys.readouterr().err
    assert err == (f"wavegen info: error: {typo}: no such preset, model folder or run folder (to write the presets "
                   f"to {typo}: wavegen info --presets --json {typo})\n")
    assert not (tmp_path / "runs").exists()
    assert cli.main(["info", "--presets", "--json", str(typo)]) == 0  # asked for: written
    assert "wavenet-tiny" in json.loads(typo.read_text())


def test_a_json_file_that_cannot_be_written_is_one_line_naming_it_and_leaves_no_part(tmp_path, capsys):
    assert cli.main(["info", "wavenet-tiny", "--json", str(tmp_path)]) == 2  # a folder: refused before the work
    assert capsys.readouterr().err == (f"wavegen info: error: --json {tmp_path}: is a folder; give a file name "
                                       f"(e.g. {tmp_path / 'info.json'})\n")
    gone = tmp_path / "gone" / "out.json"  # its folder went away after the check: the write fails
    with pytest.raises(WavegenError) as caught:
        emit_json(argparse.Namespace(json=str(gone)), {"a": float("nan")}, kept="the text above has it")
    assert str(caught.value).startswith(f"--json {gone}: cannot write it (") and "the text above has it" in str(caught.value)
    assert not gone.parent.exists()
    kept = tmp_path / "kept.json"  # a write that works replaces the file whole; NaN is null (standard JSON)
    kept.write_text("old")
    emit_json(argparse.Namespace(json=str(kept)), {"a": float("nan")})
    assert json.loads(kept.read_text()) == {"a": None} and sorted(p.name for p in tmp_path.iterdir()) == ["kept.json"]


def test_a_model_with_presets_or_a_checkpoint_without_a_model_is_refused_not_ignored(capsys):
    """Both listed the presets and ignored the rest."""
    for argv, message in ((["wavenet-tiny", "--presets"], "--presets lists the presets, wavenet-tiny is a model to "
                                                           "describe: give one of them"),
                          (["--checkpoint", "last"], "--checkpoint last goes with a run folder: wavegen info RUN "
                                                     "--checkpoint last")):
        assert cli.main(["info", *argv]) == 2
        assert capsys.readouterr() == ("", f"wavegen info: error: {message}\n")


def test_json_onto_a_file_that_is_not_an_info_result_is_refused_and_left_whole(tmp_path, capsys):
    """--json FILE replaced whatever was there: a WAV, or a model's config.json, became the description."""
    model = save_tiny_model(tmp_path / "model", sample_rate=8000, dim=16, emb_size=8)
    config = (model / "config.json").read_bytes()
    wav = tmp_path / "take.wav"
    wav.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    for target, holds in ((wav, "something other than JSON, not"), (model / "config.json", "JSON that is not")):
        before = target.read_bytes()
        assert cli.main(["info", str(model), "--json", str(target)]) == 2
        assert capsys.readouterr().err == (f"wavegen info: error: --json {target}: holds {holds} a wavegen info "
                                           f"result; not overwritten: give --json a new file name (or remove "
                                           f"{target} first)\n")
        assert target.read_bytes() == before
    assert (model / "config.json").read_bytes() == config
    earlier = tmp_path / "info.json"  # an earlier result of info, the model's or the presets': replaced
    for argv in (["--presets"], [str(model)], ["--presets"]):
        assert cli.main(["info", *argv, "--json", str(earlier)]) == 0
    assert "wavenet-tiny" in json.loads(earlier.read_text())


def test_a_runs_best_model_is_said_with_the_step_it_was_saved_at(tmp_path, capsys):
    """`wavegen info RUN` names its best/ with the training step whose validation chose it (the record best/ keeps
    beside its weights): the text on the model's line, --json as "step". A best/ that records none (an older
    wavegen's) is described as before, no step made up."""
    import torch
    from conftest import tiny_config

    from wavegen.checkpoint import save_model

    config = tiny_config("samplernn-tiny", 8000)
    torch.manual_seed(0)
    save_model(build_model(config), config, tmp_path / "run" / "best",
               scored={"step": 1200, "val_bits": 4.81, "val_samples": 4096})
    best = tmp_path / "run" / "best"
    assert cli.main(["info", str(tmp_path / "run")]) == 0
    assert f"model: {best} (step 1200)" in capsys.readouterr().out.splitlines()
    described = info_json(capsys, str(tmp_path / "run"), "--json")
    assert described["model"] == str(best) and described["step"] == 1200
    assert info_json(capsys, str(best), "--json")["step"] == 1200  # the folder named itself

    save_model(build_model(config), config, tmp_path / "old" / "best")  # no validation recorded
    assert "step" not in info_json(capsys, str(tmp_path / "old"), "--json")
    assert cli.main(["info", str(tmp_path / "old")]) == 0
    assert f"model: {tmp_path / 'old' / 'best'}" in capsys.readouterr().out.splitlines()
