"""wavegen.resolve: one way to name a model (preset, config file, model folder, run folder, checkpoint)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_SAMPLERNN

from wavegen.checkpoint import CheckpointError
from wavegen.config import ConfigError
from wavegen.models import resolve_preset
from wavegen.resolve import resolve_model, strip_wrappers
from wavegen.train import resolve_run_config, train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from conftest import prepared_corpus

    root = tmp_path_factory.mktemp("resolve")
    corpus = prepared_corpus(root, val_fraction=0.25, test_fraction=0.25, sample_rate=8000)
    config = resolve_run_config(resolve_preset("samplernn-tiny"), corpus,
                                TINY_SAMPLERNN + ["train.max_steps=6", "train.val_interval=3",
                                                  "train.checkpoint_interval=2", "train.keep_checkpoints=2"])
    train(config, root / "run", progress=False)
    return root / "run"


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_preset_has_random_weights_and_its_published_rate():
    ref = resolve_model("samplernn-tiny")
    assert ref.kind == "preset" and not ref.trained and ref.sample_rate == 16000
    assert ref.config["model"] == resolve_preset("samplernn-tiny")["model"]
    assert not ref.load().training


def test_run_folder_means_its_best_and_the_rate_is_the_corpus_rate(run_dir):
    ref = resolve_model(run_dir)
    assert ref.kind == "run" and ref.folder == run_dir / "best" and ref.sample_rate == 8000
    same = resolve_model(run_dir / "best")
    assert same.kind == "model"
    a, b = _weights(ref.load()), _weights(same.load())
    assert all(torch.equal(a[k], b[k]) for k in a)
    fresh = _weights(ref.build())
    assert any(not torch.equal(a[k], fresh[k]) for k in a)  # trained weights, not a new init


def test_checkpoints_by_step_and_last(run_dir):
    last = resolve_model(run_dir, checkpoint="last")
    assert last.kind == "checkpoint" and last.folder.name == "step_6" and "step 6" in last.source
    step4 = resolve_model(run_dir, checkpoint="step_4")
    assert resolve_model(run_dir, checkpoint="4").folder == step4.folder
    w6, w4 = _weights(last.load()), _weights(step4.load())
    assert any(not torch.equal(w6[k], w4[k]) for k in w6)
    with pytest.raises(ConfigError, match=r"no such checkpoint .*kept: step_4, step_6"):
        resolve_model(run_dir, checkpoint="step_2")  # pruned (keep_checkpoints=2)
    with pytest.raises(ConfigError, match=re.escape(f"is {run_dir}'s best model; give the run folder, {run_dir}, ")):
        resolve_model(run_dir / "best", checkpoint="last")


def test_config_file_and_errors(tmp_path, run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    (tmp_path / "c.json").write_text(json.dumps(config))
    ref = resolve_model(tmp_path / "c.json")
    assert ref.kind == "config" and ref.sample_rate == 8000 and not ref.trained
    del config["data"]
    (tmp_path / "d.json").write_text(json.dumps(config))
    assert resolve_model(tmp_path / "d.json").sample_rate == 16000  # the preset's rate
    config["preset"] = None
    (tmp_path / "e.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="no data.sample_rate"):
        resolve_model(tmp_path / "e.json")
    with pytest.raises(ConfigError, match="no such preset, model folder or run folder"):
        resolve_model(tmp_path / "nothing-here")
    with pytest.raises(ConfigError, match="no model.safetensors"):
        resolve_model(tmp_path)


def test_a_checkpoint_folder_a_corpus_or_a_missing_path_say_what_to_give(run_dir):
    step = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    with pytest.raises(ConfigError) as err:
        resolve_model(step)
    assert str(err.value) == (f"{step}: a checkpoint of the run {run_dir}; give the run and the checkpoint: "
                              f"{run_dir} --checkpoint {step.name}")
    assert resolve_model(run_dir, checkpoint=step.name).kind == "checkpoint"  # what it says works
    corpus = run_dir.parent / "corpus"
    with pytest.raises(ConfigError, match=f"{corpus}: a prepared corpus, not a model; train one on it first"):
        resolve_model(corpus)
    with pytest.raises(ConfigError) as err:
        resolve_model(run_dir.parent / "no" / "such")
    assert "no such preset, model folder or run folder" in str(err.value) and "presets" not in str(err.value)
    with pytest.raises(ConfigError, match=r"samplernn-huge: no such preset.*presets: \["):
        resolve_model("samplernn-huge")


def test_run_without_best_points_at_its_checkpoints(tmp_path, run_dir):
    """best/ removed: the message says validations ran (metrics.jsonl) and which checkpoint scored best,
    not "no validation has run"; a run that has not validated yet says that."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "best")
    with pytest.raises(ConfigError, match=r"best/ model is missing, though validations ran \(the best, .* at step \d\);"
                                          r" use --checkpoint last .*restores best/ from checkpoints/step_\d"):
        resolve_model(copy)
    assert resolve_model(copy, checkpoint="last").trained
    rows = [line for line in (copy / "metrics.jsonl").read_text().splitlines() if "val_bits" not in line]
    (copy / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(ConfigError, match=r"no best/ model yet \(no validation has run\); use --checkpoint last"):
        resolve_model(copy)


def test_a_run_that_has_saved_no_model_yet_is_named_as_one(tmp_path, run_dir, capsys):
    """A run folder just started (config.json, metrics.jsonl, no checkpoint, no best/) was told to "train a
    model first"; its config file gives its settings (info)."""
    from wavegen.cli import main

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(run_dir / "config.json", run)
    (run / "metrics.jsonl").write_text("")
    for command in (["info", str(run)], ["render", str(run), "--seconds", "1", "--out", str(tmp_path / "out")]):
        assert main(command) == 2
        assert capsys.readouterr().err.splitlines()[-1] == (
            f"wavegen {command[0]}: error: {run}: a training run with no model yet (no best/ and no finished "
            "checkpoint: training has not saved one); wait for its first checkpoint (then --checkpoint last), or "
            f"give {run / 'config.json'} for its settings (random weights)")
    assert main(["info", str(run / "config.json")]) == 0
    assert not (tmp_path / "out").exists()
    shutil.rmtree(run)  # a folder of a config.json alone is not a run
    run.mkdir()
    shutil.copy(run_dir / "config.json", run)
    with pytest.raises(ConfigError, match="train a model first"):
        resolve_model(run)


def test_checkpoint_best_says_that_best_is_what_the_run_names(tmp_path):
    """--checkpoint best: the run's best/ is not a checkpoint, it is the model the run folder names."""
    run = tmp_path / "run"
    (run / "checkpoints" / "step_3").mkdir(parents=True)
    (run / "checkpoints" / "step_3" / "trainer_state.json").write_text('{"step": 3}')
    (run / "checkpoints" / "step_3" / "model.safetensors").write_bytes(b"")  # listed as usable: no files record
    (run / "config.json").write_text("{}")
    for name in ("best", "best/"):
        with pytest.raises(ConfigError) as caught:
            resolve_model(run, checkpoint=name)
        assert str(caught.value) == (f"--checkpoint {name}: no such checkpoint in {run}; kept: step_3 (or last); the "
                                     "run's best/ is what the run folder names without --checkpoint")
    with pytest.raises(ConfigError, match=r"kept: step_3 \(or last\)$"):
        resolve_model(run, checkpoint="step_4")


def flip_byte(path, offset=-10):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_an_altered_checkpoint_is_refused_naming_the_file(tmp_path, run_dir, capsys):
    """--checkpoint step_N checks the weights file against the sizes and sha256 trainer_state.json lists,
    as training does: one byte changed is an error naming the file (render, eval and info all resolve
    through here), not an NLL from altered weights; only that file is hashed (the optimizer is not read)."""
    from wavegen.cli import main

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    weights = copy / "checkpoints" / "step_6" / "model.safetensors"
    flip_byte(weights)
    with pytest.raises(CheckpointError, match=rf"^{weights}: its content differs .*sha256.*give another "
                                              r"--checkpoint \(kept: step_4; damaged, not usable: step_6\)"):
        resolve_model(copy, checkpoint="step_6")
    with pytest.raises(CheckpointError, match="step_6/model.safetensors"):
        resolve_model(copy, checkpoint="last")
    capsys.readouterr()
    assert main(["info", str(copy), "--checkpoint", "step_6"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(weights) in err, err
    (copy / "checkpoints" / "step_4" / "model.safetensors").write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"step_4/model.safetensors: 100 bytes, \d+ were written"):
        resolve_model(copy, checkpoint="step_4")
    # the optimizer is not the model: a damaged one does not stop a render (training skips the checkpoint)
    shutil.rmtree(copy / "checkpoints")
    shutil.copytree(run_dir / "checkpoints", copy / "checkpoints")
    flip_byte(copy / "checkpoints" / "step_6" / "optimizer.bin")
    assert resolve_model(copy, checkpoint="step_6").load() is not None


def test_a_checkpoint_caught_between_renames_is_read_from_its_old_folder(tmp_path, run_dir):
    """A save of step N over an existing step_N (fileio.replace_dir) killed between its renames leaves
    step_N.old and .tmp_step_N: step_N.old stands for step N (it was ignored: a rerun began at step 0)."""
    from wavegen.resolve_checkpoints import run_checkpoints

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    folder = copy / "checkpoints"
    shutil.copytree(folder / "step_6", folder / ".tmp_step_6")
    (folder / "step_6").rename(folder / "step_6.old")
    assert run_checkpoints(copy) == [(4, folder / "step_4"), (6, folder / "step_6.old")]
    assert resolve_model(copy, checkpoint="last").folder == folder / "step_6.old"
    assert resolve_model(copy, checkpoint="step_6").load() is not None
    shutil.copytree(folder / "step_6.old", folder / "step_6")  # both: step_N is the newer
    assert run_checkpoints(copy)[-1] == (6, folder / "step_6")


def test_a_truncated_weights_file_is_named(tmp_path, run_dir):
    copy = tmp_path / "model"
    shutil.copytree(run_dir / "best", copy)
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 2])
    ref = resolve_model(copy)
    with pytest.raises(CheckpointError, match=rf"{copy / 'model.safetensors'}: {len(data) // 2} bytes, {len(data)} "
                                              r"were written \(truncated or changed\)"):
        ref.load()
    (copy / "weights.json").unlink()  # a folder of an older wavegen: the header does not fit the file
    with pytest.raises(CheckpointError, match=rf"{copy / 'model.safetensors'}: damaged"):
        resolve_model(copy).load()


def test_strip_wrappers():
    assert strip_wrappers({"module._orig_mod.a.b": 1, "c": 2}) == {"a.b": 1, "c": 2}


def test_trained_weights_are_hashed_once_and_checked(tmp_path, run_dir, monkeypatch):
    """train's best/ records its weights (weights.json), checked on load; a checkpoint's digest is the one
    its listing checked. Either way the ModelRef keeps it: render and serve need not hash the file again."""
    from wavegen import checkpoint, fileio

    best = resolve_model(run_dir)
    assert (run_dir / "best" / "weights.json").is_file()
    assert best.load() is not None and best.sha256 == fileio.sha256_file(best.weights)
    step = resolve_model(run_dir, checkpoint="last")
    assert step.sha256 == fileio.sha256_file(step.weights)
    for module in (fileio, checkpoint):
        monkeypatch.setattr(module, "sha256_file", lambda path: pytest.fail(f"{path} hashed again"))
    assert best.weights_sha256() == best.sha256 and step.weights_sha256() == step.sha256
    assert step.load() is not None and best.load() is not None


def test_a_damaged_checkpoint_is_not_offered_as_kept(tmp_path, run_dir):
    """The checkpoints an error lists for --checkpoint are those that can be rendered: one whose weights
    are truncated is listed as damaged, and "last" is offered only where the newest is intact."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    step4 = copy / "checkpoints" / "step_4" / "model.safetensors"
    step4.write_bytes(step4.read_bytes()[:1000])
    with pytest.raises(ConfigError) as caught:
        resolve_model(copy, checkpoint="step_9")
    assert str(caught.value).endswith("kept: step_6 (or last); damaged, not usable: step_4"), caught.value
    with pytest.raises(CheckpointError, match=r"give another --checkpoint \(kept: step_6; damaged, not usable: "
                                              r"step_4\)$"):
        resolve_model(copy, checkpoint="step_4")
    flip_byte(copy / "checkpoints" / "step_6" / "model.safetensors")
    with pytest.raises(ConfigError) as caught:
        resolve_model(copy, checkpoint="step_9")
    assert str(caught.value).endswith("kept: none intact; damaged, not usable: step_4, step_6"), caught.value


def test_a_damaged_best_names_the_checkpoint_to_render_instead(tmp_path, run_dir):
    """A truncated best/model.safetensors is named as damaged (not as a header that does not fit), with the
    kept checkpoint holding the same weights; where none holds them, the intact kept checkpoints."""
    from wavegen.checkpoint import save_model

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    ref = resolve_model(copy, checkpoint="step_6")
    save_model(ref.load(), ref.config, copy / "best")  # best/ written from step 6, as training writes it
    best = copy / "best" / "model.safetensors"
    best.write_bytes(best.read_bytes()[:1000])
    written = json.loads((copy / "best" / "weights.json").read_text())["files"]["model.safetensors"]["bytes"]
    with pytest.raises(CheckpointError) as caught:
        resolve_model(copy).load()
    assert str(caught.value) == (
        f"{best}: 1000 bytes, {written} were written (truncated or changed): the model folder is damaged; the kept "
        f"checkpoint step_6 holds the same weights: give {copy} --checkpoint step_6 instead (the same model), or "
        "copy the folder again from where it came from")
    shutil.rmtree(copy / "checkpoints" / "step_6")
    with pytest.raises(CheckpointError, match=rf"damaged; no kept checkpoint holds its weights; give {copy} "
                                              r"--checkpoint last \(step_4\) instead, or copy"):
        resolve_model(copy).load()


def test_resolve_and_checkpoint_do_not_reach_up_into_render():
    """Which kept checkpoint holds given weights (checkpoint_with) lives in resolve_checkpoints, below render:
    render calls down into it, and resolving a model (a damaged best/'s hint included) never imports render."""
    import wavegen.checkpoint
    import wavegen.resolve
    import wavegen.resolve_checkpoints
    import wavegen.resolve_why

    for module in (wavegen.resolve, wavegen.resolve_checkpoints, wavegen.resolve_why, wavegen.checkpoint):
        assert "wavegen.render" not in Path(module.__file__).read_text(), module.__name__


def test_a_damaged_best_of_an_older_wavegen_says_its_tensors_are_not_known(tmp_path, run_dir):
    """A best/ whose weights.json lists no tensors_sha256 (an older wavegen): a damaged one cannot be matched
    with the checkpoint it came from (other bytes), and the error says so rather than that none holds them."""
    from wavegen.checkpoint import save_model

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    ref = resolve_model(copy, checkpoint="step_6")
    save_model(ref.load(), ref.config, copy / "best")
    record = copy / "best" / "weights.json"
    listed = json.loads(record.read_text())
    del listed["files"]["model.safetensors"]["tensors_sha256"]
    record.write_text(json.dumps(listed))
    best = copy / "best" / "model.safetensors"
    best.write_bytes(best.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"damaged; no kept checkpoint holds its weights \(this folder, written "
                                              r"by an older wavegen, does not record its tensors"):
        resolve_model(copy).load()


def test_a_render_folder_names_the_model_that_made_it(tmp_path, run_dir, capsys):
    """A render folder given as the model (info, bench --model, eval) said "no model.safetensors + config.json
    here"; it is named as a render folder, with the model its parameters record: complete (render_report.json)
    or under way (.state/params.json), of best/ or of a checkpoint (given as the run and --checkpoint)."""
    from wavegen.cli import main

    out = tmp_path / "out"
    render = ["render", str(run_dir), "--seconds", "0.25", "--no-guard", "--no-spectrogram", "--threads", "1"]
    assert main([*render, "--out", str(out)]) == 0
    made = f"{out}: a render folder (made by {(run_dir / 'best').resolve()}), not a model; give the model that made it: "
    for command in (["info", str(out)], ["bench", "--model", str(out)],
                    ["eval", str(out), "--data", str(run_dir.parent / "corpus")]):
        assert main(command) == 2
        assert capsys.readouterr().err.splitlines()[-1] == (f"wavegen {command[0]}: error: {made}"
                                                             f"{(run_dir / 'best').resolve()}")
    assert main(["info", str((run_dir / "best").resolve())]) == 0  # what it says works
    step = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    under_way = tmp_path / "under_way"
    assert main([*render, "--out", str(under_way), "--checkpoint", step.name]) == 0
    report = json.loads((under_way / "render_report.json").read_text())
    (under_way / ".state").mkdir()
    (under_way / ".state" / "params.json").write_text(json.dumps(report["params"]))  # as while it runs
    (under_way / "render_report.json").unlink()
    with pytest.raises(ConfigError) as err:
        resolve_model(under_way)
    assert str(err.value) == (f"{under_way}: a render folder (made by {step.resolve()}), not a model; give the model "
                              f"that made it: {run_dir.resolve()} --checkpoint {step.name}")
    shutil.rmtree(under_way / ".state")  # its audio alone: no record of the model
    with pytest.raises(ConfigError, match=f"{under_way}: a render folder .*, not a model; give the model or run folder"
                                          " that rendered it$"):
        resolve_model(under_way)


def test_the_render_folder_names_resolve_restates_are_renders():
    import wavegen.resolve_why as resolve
    from wavegen.render.folder import PARAMS_FILE, REPORT_FILE, STATE_DIR
    from wavegen.render.settings import FORMATS, stream_paths

    assert resolve.RENDER_REPORT == REPORT_FILE and resolve.RENDER_PARAMS == Path(STATE_DIR) / PARAMS_FILE
    assert resolve.RENDER_STREAMS == tuple(stream_paths(Path(), 1, fmt)[0].name for fmt in FORMATS)



def test_a_runs_own_folder_given_itself_is_said_to_be_it_not_to_lie_inside_itself(run_dir):
    """train --run RUN/checkpoints (render's --out and serve's --archive alike: resolve_why.inside) was refused as
    "it lies inside RUN/checkpoints", the folder named as its own parent; a folder below it still lies inside it."""
    from wavegen.runconfig import check_run_folder

    config = json.loads((run_dir / "config.json").read_text())
    own = "of the training run {} (what wavegen train writes); give the run a folder of its own (runs/NAME)"
    for name in ("checkpoints", "best"):
        with pytest.raises(ConfigError) as err:
            check_run_folder(run_dir / name, config)
        assert str(err.value) == f"--run {run_dir / name}: it is {name}/ " + own.format(run_dir.resolve())
    with pytest.raises(ConfigError) as err:
        check_run_folder(run_dir / "checkpoints" / "new", config)
    assert str(err.value) == (f"--run {run_dir / 'checkpoints' / 'new'}: it lies inside "
                              f"{run_dir.resolve() / 'checkpoints'}, " + own.format(run_dir.resolve()))


@pytest.mark.parametrize("played", ["run", "checkpoint", "preset", "parts alone"])
def test_a_live_streams_archive_is_named_as_one_with_the_model_that_played_it(tmp_path, run_dir, played):
    """A live stream's archive (wavegen serve --archive) given as the model was called "a render folder" (its
    .state/params.json names a "model" as a render's does); it is named for what it is, with the model that
    played it (its weights' folder as serve records it; a preset's name), as the archive's station records it."""
    from wavegen.serve import ServeSettings, Station

    archive = tmp_path / "archive"
    target, checkpoint = {"run": (run_dir, None), "checkpoint": (run_dir, "step_6"),
                          "preset": ("samplernn-tiny", None), "parts alone": (run_dir, None)}[played]
    station = Station(str(target), ServeSettings(archive=str(archive), guard=False), checkpoint)
    station.archive.open()  # params.json and an empty part 0, as a server writes them as it begins
    station.archive.close()
    if played == "parts alone":  # its parts moved away from the rest
        (tmp_path / "parts").mkdir()
        shutil.move(archive / "broadcast_00000.wav", tmp_path / "parts")
        archive = tmp_path / "parts"
    give = {"run": str((run_dir / "best").resolve()), "checkpoint": f"{run_dir.resolve()} --checkpoint step_6",
            "preset": "samplernn-tiny", "parts alone": None}[played]
    with pytest.raises(ConfigError) as err:
        resolve_model(archive)
    what = f"{archive}: a live stream's archive (what wavegen serve broadcast), not a model; give the model "
    assert str(err.value) == what + (f"that played it: {give}" if give else "or run folder that played it")


def test_an_archive_that_records_no_model_folder_names_the_model_as_it_played_it(tmp_path):
    """An archive of an older wavegen (no model_folder in its params): the "model" it names, a checkpoint's
    source ("RUN/checkpoints/step_N (step N)") given as the run and --checkpoint."""
    archive = tmp_path / "archive"
    (archive / ".state").mkdir(parents=True)
    (archive / "broadcast_00000.wav").write_bytes(b"")
    (archive / ".state" / "params.json").write_text(json.dumps({"model": "/runs/a/checkpoints/step_6 (step 6)"}))
    with pytest.raises(ConfigError, match=r"archive: a live stream's archive \(what wavegen serve broadcast\), not a "
                                          r"model; give the model that played it: /runs/a --checkpoint step_6$"):
        resolve_model(archive)

def test_the_archive_names_resolve_restates_are_serves():
    import wavegen.resolve_why as resolve
    from wavegen.serve.archive import MODEL_FOLDER_KEY, PART_GLOB, STATE_DIR, UNSNAPSHOT_KEY, PARAMS_FILE

    assert resolve.ARCHIVE_PARTS == PART_GLOB and resolve.ARCHIVE_KEYS == (MODEL_FOLDER_KEY, UNSNAPSHOT_KEY)
    assert resolve.ARCHIVE_FOLDER_KEY == MODEL_FOLDER_KEY and resolve.RENDER_PARAMS == Path(STATE_DIR) / PARAMS_FILE

@pytest.mark.parametrize("where", ["model", "run", "checkpoint"])
def test_a_bad_setting_in_a_folders_config_names_the_file(tmp_path, run_dir, capsys, where):
    """best/config.json (or a run's config.json, read for --checkpoint) with "dim": -3 said
    "model.dim=-3: must be at least 1" without saying which file; now the file, on one line."""
    from wavegen.cli import main

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    config = {"model": run / "best" / "config.json", "run": run / "best" / "config.json",
              "checkpoint": run / "config.json"}[where]
    saved = json.loads(config.read_text())
    saved["model"]["dim"] = -3
    config.write_text(json.dumps(saved))
    target = [str(run / "best")] if where == "model" else [str(run)]
    target += ["--checkpoint", "last"] if where == "checkpoint" else []
    for command in (["info", *target], ["render", *target, "--seconds", "0.25", "--out", str(tmp_path / "out")]):
        assert main(command) == 2
        assert capsys.readouterr().err.strip() == \
            f"wavegen {command[0]}: error: {config}: model.dim=-3: must be at least 1"
    assert not (tmp_path / "out").exists()


def test_a_model_folder_that_lost_its_weights_says_so(tmp_path):
    """A model folder copied without its model.safetensors (config.json and weights.json there) was told "no
    model.safetensors + config.json here ...; train a model first": it names the missing file and what to do."""
    from conftest import save_tiny_model

    model = save_tiny_model(tmp_path / "m", sample_rate=8000, dim=16, emb_size=8)
    (model / "model.safetensors").unlink()
    with pytest.raises(ConfigError) as error:
        resolve_model(model)
    assert str(error.value) == (
        f"{model}: a model folder without its weights (weights.json records a model.safetensors, which is not "
        "here); copy the folder again from where it was made, or give the run it came from (its best/, or "
        "--checkpoint step_N)")


@pytest.mark.parametrize("suffix, why", [(".diverged", "non-finite step"), (".damaged", "damaged")])
def test_a_checkpoint_training_moved_aside_is_named_where_it_went(tmp_path, suffix, why):
    """--checkpoint step_N of a checkpoint training moved aside (its weights gave the run's first non-finite step,
    or it was damaged): the error names where it went and why, not only "no such checkpoint"."""
    run = tmp_path / "run"
    (run / "checkpoints" / f"step_1{suffix}").mkdir(parents=True)
    (run / "checkpoints" / "step_2").mkdir()
    (run / "checkpoints" / "step_2" / "trainer_state.json").write_text('{"step": 2}')
    (run / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=rf"--checkpoint step_1: no such checkpoint in {run} \(training moved it "
                                          rf"aside to {run}/checkpoints/step_1{suffix}: .*{why}"):
        resolve_model(run, checkpoint="step_1")


def _diverged_run(tmp_path, older: bool) -> Path:
    """A run folder as a divergence leaves it: best/ moved to best.diverged and checkpoints/step_4 to
    step_4.diverged (validations at steps 2 and 4, step 4's best), with step_2 kept where ``older``."""
    run = tmp_path / "run"
    (run / "checkpoints" / "step_4.diverged").mkdir(parents=True)
    (run / "best.diverged").mkdir()
    (run / "best.diverged" / "model.safetensors").write_bytes(b"w")
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in (
        {"step": 2, "val_bits": 8.6, "best": True}, {"step": 4, "val_bits": 8.5, "best": True})))
    if older:
        (run / "checkpoints" / "step_2").mkdir()
        (run / "checkpoints" / "step_2" / "trainer_state.json").write_text('{"step": 2}')
        (run / "checkpoints" / "step_2" / "model.safetensors").write_bytes(b"w")
    return run


def test_a_missing_best_whose_checkpoint_training_moved_aside_names_what_is_kept(tmp_path):
    """best/ and checkpoints/step_4 (which scored it) moved aside by a divergence, step_2 kept: the error named
    checkpoints/step_4 as what a rerun restores best/ from. It names both moved folders (kept for the user) and
    step_2, from which the rerun restores best/."""
    run = _diverged_run(tmp_path, older=True)
    with pytest.raises(ConfigError) as err:
        resolve_model(run)
    said = str(err.value)
    assert "restores best/ from checkpoints/step_4" not in said, said
    assert f"training moved aside {run / 'best.diverged'} (best/ as it was" in said, said
    assert "checkpoints/step_4.diverged (its weights gave the run's first non-finite step" in said, said
    assert "kept for you" in said and "checkpoints/step_4, which scored it, is one of those: use --checkpoint last or " \
        "step_N (kept: step_2 (or last))" in said, said
    assert said.endswith("it restores best/ from checkpoints/step_2, the best validation up to the checkpoint it "
                         "resumes from (8.6000 bits/sample)"), said


def test_a_run_whose_only_models_training_moved_aside_is_not_called_one_with_no_model_yet(tmp_path):
    """No finished checkpoint left, best.diverged and step_4.diverged there: not "a training run with no model
    yet (... training has not saved one)", but what was moved aside, and what to do."""
    run = _diverged_run(tmp_path, older=False)
    with pytest.raises(ConfigError) as err:
        resolve_model(run)
    said = str(err.value)
    assert "no model yet" not in said, said
    assert said.startswith(f"{run}: a training run with no model left to give: training moved aside "
                           f"{run / 'best.diverged'} (best/ as it was"), said
    assert "checkpoints/step_4.diverged (" in said and "kept for you" in said, said
    assert f"it starts again from step 0), give {run / 'best.diverged'} to render it anyway" in said, said
