"""wavegen serve --archive and its model: "the same model" is the same tensors, as for render.

A run's best/ and the checkpoint it was written from hold the same tensors in files of other bytes
(other writers, other header metadata); an archive begun from one continues from the other, or from
a model folder moved or copied. Other weights are refused, saying what differs. An archive written
before serve recorded the tensors' digest is judged by what it recorded: its weights file's sha256.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from test_render_model_gone import make_run
from test_serve import SR, make_model, reference_pcm, serve_here
from test_serve_archive import _archived, _contents
from wavegen.render.model_change import TENSORS_KEY

PARAMS = {"model": "runs/a/best", "model_sha256": "1" * 64, TENSORS_KEY: "2" * 64, "sample_rate": SR, "seed": 0}
# each session: `wavegen serve RUN --no-guard --snapshot-seconds 1 --buffer-seconds 8 --archive ARCHIVE`, played in
# this process (test_serve.serve_here): what is checked is what the archive keeps, not the server's process
ARGS = {"guard": False, "snapshot_seconds": 1.0, "buffer_seconds": 8.0}


def _archive(folder: Path, params: dict) -> None:
    """An archive of 1 s with its snapshot, as a stopped server leaves it, recorded with ``params``."""
    from wavegen.serve.archive import Archive

    a = Archive(folder, SR, params, part_seconds=3.0)
    a.open()
    a.write(np.arange(SR, dtype=np.int16))
    a.snapshot({"t": np.zeros(1)}, {})
    a.close()


def _open(folder: Path, params: dict) -> int:
    from wavegen.serve.archive import Archive

    a = Archive(folder, SR, params, part_seconds=3.0)
    position = a.open()[1]
    a.close()
    return position


def _refused(folder: Path, params: dict, find_weights=None) -> str:
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    before = _contents(folder)
    with pytest.raises(ServeError) as err:
        Archive(folder, SR, params, part_seconds=3.0, find_weights=find_weights).open()
    assert _contents(folder) == before, "a refused archive is left as it was"
    message = str(err.value)
    assert "\n" not in message and "--restart" not in message and "choose another --archive" in message
    return message


@pytest.mark.slow
def test_an_archive_begun_from_best_continues_from_its_checkpoint(tmp_path):
    """Played from the run (its best/), stopped, played again from --checkpoint step_5 (the same tensors in
    a file of other bytes): it continues the archive, byte for byte, and again from best/ after that."""
    model = make_model(tmp_path / "model")
    run, archive = make_run(model, tmp_path / "run"), tmp_path / "archive"
    written = 0.0
    for checkpoint in (None, "step_5", None):
        first, s = serve_here(run, lambda s: s["archive"]["snapshot_seconds"] >= written + 1.0, checkpoint, **ARGS,
                              archive=str(archive))
        assert first["archive"]["snapshot_seconds"] >= written  # went on from the last snapshot
        written = s["archive"]["snapshot_seconds"]
    pcm = _archived(archive)
    assert len(pcm) >= 3 * SR
    assert np.array_equal(pcm, reference_pcm(model, len(pcm)))
    params = json.loads((archive / ".state" / "params.json").read_text())
    assert params["model"] == str(run / "best") and params[TENSORS_KEY] is not None
    # where its weights are looked for, and the most audio a kill before its first snapshot leaves (1 s + 1 s window)
    assert params["model_folder"] == str((run / "best").resolve()) and params["unsnapshot_seconds"] == 2.0



@pytest.mark.slow
def test_an_archive_begun_from_a_checkpoint_pruned_since_continues_with_best_holding_its_weights(tmp_path, caplog):
    """Played from --checkpoint step_5, which a training that went on pruned; the run's best/ holds the same
    tensors. The same command refused ("no such checkpoint"), though the same weights are there: it goes on
    with best/ (saying so), byte for byte; the run given alone (best/) continues it too. Once best/ holds other
    weights, the command is refused as before, the archive untouched."""
    from conftest import save_tiny_model
    from wavegen.config import ConfigError
    from wavegen.serve import ServeSettings, Station

    model = make_model(tmp_path / "model")
    run, archive = make_run(model, tmp_path / "run"), tmp_path / "archive"
    caplog.set_level(logging.INFO)
    written = 0.0
    for checkpoint in ("step_5", "pruned", "step_5", None):
        if checkpoint == "pruned":
            shutil.rmtree(run / "checkpoints" / "step_5")
            continue
        caplog.clear()
        first, s = serve_here(run, lambda s: s["archive"]["snapshot_seconds"] >= written + 1.0, checkpoint, **ARGS,
                              archive=str(archive))
        assert first["archive"]["snapshot_seconds"] >= written  # went on from the last snapshot
        written = s["archive"]["snapshot_seconds"]
        if checkpoint and not (run / "checkpoints" / "step_5").exists():
            assert "the run's best/ holds the weights" in caplog.text, caplog.text
    pcm = _archived(archive)
    assert len(pcm) >= 3 * SR
    assert np.array_equal(pcm, reference_pcm(model, len(pcm)))
    shutil.rmtree(run / "best")
    save_tiny_model(run / "best", sample_rate=SR, seed=1, dim=32, emb_size=8)  # trained on: other weights
    before = _contents(archive)
    with pytest.raises(ConfigError, match="^--checkpoint step_5: .* holds no finished checkpoint$"):
        Station(str(run), ServeSettings(archive=str(archive), guard=False), "step_5")
    assert _contents(archive) == before

@pytest.mark.slow
def test_an_archive_begun_from_best_deleted_since_continues_with_the_checkpoint_holding_its_weights(tmp_path,
                                                                                                     caplog):
    """Played from the run (its best/), which is deleted since (or being replaced by a training); the kept
    checkpoint step_5 holds the same tensors: the same command goes on with it, saying so in one line, byte for
    byte, as a render resumes (model_change.stand_in, one helper for both). It was refused: no model in the run."""
    model = make_model(tmp_path / "model")
    run, archive = make_run(model, tmp_path / "run"), tmp_path / "archive"
    caplog.set_level(logging.INFO)
    written = 0.0
    for session in range(2):
        if session:
            shutil.rmtree(run / "best")
        caplog.clear()
        first, s = serve_here(run, lambda s: s["archive"]["snapshot_seconds"] >= written + 1.0, **ARGS,
                              archive=str(archive))
        assert first["archive"]["snapshot_seconds"] >= written  # went on from the last snapshot
        written = s["archive"]["snapshot_seconds"]
    said = [line for line in caplog.messages if "is gone" in line]
    assert len(said) == 1 and said[0].endswith(
        f"{run}: {(run / 'best').resolve()}, the model the archive {archive} began with, is gone (deleted, or being "
        f"replaced by a training); the kept checkpoint {(run / 'checkpoints' / 'step_5').resolve()} holds the weights "
        "it began with, the same tensors: continuing the archive with it"), said
    pcm = _archived(archive)
    assert len(pcm) >= 2 * SR
    assert np.array_equal(pcm, reference_pcm(model, len(pcm)))


def test_the_same_tensors_in_another_file_continue_the_archive(tmp_path):
    _archive(tmp_path, PARAMS)
    assert _open(tmp_path, {**PARAMS, "model": "runs/a/checkpoints/step_5 (step 5)", "model_sha256": "3" * 64}) == SR


def test_other_tensors_are_refused_saying_what_differs(tmp_path):
    _archive(tmp_path, PARAMS)
    message = _refused(tmp_path, {**PARAMS, "model": "runs/b/best", "model_sha256": "3" * 64,
                                  TENSORS_KEY: "4" * 64})
    assert "runs/a/best" in message and "runs/b/best" in message  # the model it began with, and this one
    assert "2" * 12 in message and "4" * 12 in message  # their tensors' digests
    assert "other weights" in message
    # the same folder, its weights changed since (trained further, replaced)
    message = _refused(tmp_path, {**PARAMS, "model_sha256": "3" * 64, TENSORS_KEY: "4" * 64})
    assert "runs/a/best" in message and "changed since" in message


def test_a_refusal_names_the_kept_checkpoint_that_holds_the_weights_it_began_with(tmp_path):
    """best/ replaced by a training that went on (other weights in the same folder): the refusal names the
    run's kept checkpoint with the weights the archive began with, which continues it."""
    from conftest import save_tiny_model
    from wavegen.resolve import resolve_model
    from wavegen.serve.archive_model import weights_finder

    def params(ref) -> dict:
        return {**PARAMS, "model": ref.source, "model_sha256": ref.weights_sha256(),
                TENSORS_KEY: ref.weights_tensors_sha256()}

    run = make_run(make_model(tmp_path / "model"), tmp_path / "run")
    began = resolve_model(str(run))
    _archive(tmp_path / "archive", params(began))
    shutil.rmtree(run / "best")
    save_tiny_model(run / "best", sample_rate=SR, seed=1, dim=32, emb_size=8)  # trained further: other weights
    now = resolve_model(str(run))
    message = _refused(tmp_path / "archive", params(now), weights_finder(now))
    assert f"{run / 'best'}, which changed since" in message
    assert f"play {run} --checkpoint step_5 (the weights it began with) to continue it" in message
    assert _open(tmp_path / "archive", params(resolve_model(str(run), "step_5"))) == SR


def test_a_refusal_looks_in_the_run_the_archive_began_with_not_the_one_played_now(tmp_path, monkeypatch):
    """Begun from run a (named relative to where it was started), whose best/ was trained further since;
    now another run's model is played from elsewhere: the refusal names run a's kept checkpoint that holds
    the weights the archive began with (searched where the archive recorded its model folder), not a
    checkpoint of the run played now."""
    from conftest import save_tiny_model
    from wavegen.resolve import resolve_model
    from wavegen.serve.archive import MODEL_FOLDER_KEY
    from wavegen.serve.archive_model import model_folder, weights_finder

    def params(ref) -> dict:
        return {**PARAMS, "model": ref.source, "model_sha256": ref.weights_sha256(),
                TENSORS_KEY: ref.weights_tensors_sha256(), MODEL_FOLDER_KEY: model_folder(ref)}

    run_a = make_run(make_model(tmp_path / "model_a"), tmp_path / "run_a")
    run_b = make_run(make_model(tmp_path / "model_b", output_bias=np.linspace(-1, 1, 256, dtype=np.float32)),
                     tmp_path / "run_b")
    monkeypatch.chdir(tmp_path)
    began = resolve_model("run_a")
    assert began.source == "run_a/best"
    _archive(tmp_path / "archive", params(began))
    shutil.rmtree(run_a / "best")
    save_tiny_model(run_a / "best", sample_rate=SR, seed=1, dim=32, emb_size=8)  # trained further: other weights
    monkeypatch.chdir(tmp_path / "model_a")  # run_a/ is not there from here
    now = resolve_model(str(run_b))
    message = _refused(tmp_path / "archive", params(now), weights_finder(now))
    assert "run_a/best (tensors" in message and f"this command plays {run_b / 'best'}, other weights" in message
    assert f"play {run_a} --checkpoint step_5 (the weights it began with) to continue it" in message
    assert _open(tmp_path / "archive", params(resolve_model(str(run_a), "step_5"))) == SR


def test_an_archive_without_the_tensors_digest_is_judged_by_its_weights_file(tmp_path):
    """Recorded by an older wavegen: the very same file continues it (and the digest is recorded from then
    on, so the checkpoint of the same tensors continues it next); another file is refused, saying why."""
    older = {k: v for k, v in PARAMS.items() if k != TENSORS_KEY}
    _archive(tmp_path / "older", older)
    message = _refused(tmp_path / "older", {**PARAMS, "model": "runs/a/checkpoints/step_5 (step 5)",
                                            "model_sha256": "3" * 64})
    assert "1" * 12 in message and "3" * 12 in message and "older wavegen" in message
    assert _open(tmp_path / "older", PARAMS) == SR  # the same file: continued, and its digest recorded
    assert json.loads((tmp_path / "older" / ".state" / "params.json").read_text())[TENSORS_KEY] == "2" * 64
    assert _open(tmp_path / "older", {**PARAMS, "model_sha256": "3" * 64}) == SR  # now the same tensors do


def test_a_preset_archive_is_judged_as_before(tmp_path):
    """Random weights (a preset): no tensors digest (None); its model_sha256 (config and seed) binds."""
    preset = {**PARAMS, "model": "preset samplernn-tiny (random weights)", TENSORS_KEY: None}
    _archive(tmp_path, preset)
    assert _open(tmp_path, preset) == SR
    _refused(tmp_path, {**preset, "model_sha256": "3" * 64})


def test_a_refusal_names_best_where_the_checkpoint_it_began_with_was_pruned(tmp_path):
    """Begun from --checkpoint step_5, pruned since by a training that went on; step_9 (other weights) played now:
    the refusal said "play RUN/checkpoints/step_5 (step 5) to continue it", a checkpoint gone (and not a path). The
    run's best/ holds the weights it began with: named, as render's refusal names it (model_change.kept_with, one
    helper for both); where nothing holds them, the refusal says the model is gone."""
    from accelerate.utils import save as accelerate_save

    from conftest import save_tiny_model
    from wavegen.checkpoint import load_model
    from wavegen.render.model_change import model_differs
    from wavegen.resolve import resolve_model
    from wavegen.serve.archive import MODEL_FOLDER_KEY
    from wavegen.serve.archive_model import model_folder, weights_finder

    def params(ref) -> dict:
        return {**PARAMS, "model": ref.source, "model_sha256": ref.weights_sha256(),
                TENSORS_KEY: ref.weights_tensors_sha256(), MODEL_FOLDER_KEY: model_folder(ref)}

    run = make_run(make_model(tmp_path / "model"), tmp_path / "run")
    began = resolve_model(str(run), "step_5")
    _archive(tmp_path / "archive", params(began))
    step_9 = run / "checkpoints" / "step_9"  # the training went on: other weights, and step_5 pruned
    step_9.mkdir()
    other = save_tiny_model(tmp_path / "other", sample_rate=SR, seed=1)
    accelerate_save(load_model(other)[0].state_dict(), step_9 / "model.safetensors", safe_serialization=True)
    (step_9 / "trainer_state.json").write_text(json.dumps({"step": 9}))
    shutil.rmtree(run / "checkpoints" / "step_5")
    now = resolve_model(str(run), "step_9")
    message = _refused(tmp_path / "archive", params(now), weights_finder(now))
    assert message.endswith(f"; play {run} (the run's best/ holds the weights it began with) to continue it, or "
                            "choose another --archive"), message
    rendered = model_differs(tmp_path / "out", {"model": began.weights.parent.as_posix(), **params(began)},
                             {"model": str(now.weights.parent), **params(now)})
    assert "resume it without --checkpoint (the run's best/ holds the weights it began with)" in rendered
    assert _open(tmp_path / "archive", params(resolve_model(str(run)))) == SR  # best/ continues it

    shutil.rmtree(run / "best")
    message = _refused(tmp_path / "archive", params(now), weights_finder(now))
    assert message.endswith(f"; the model it began with, {began.weights.parent.resolve()}, is gone and no kept "
                            "checkpoint or best/ holds its weights: play them from elsewhere to continue it, or "
                            "choose another --archive"), message
