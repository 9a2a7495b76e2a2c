"""wavegen.resolve: a checkpoint removed while it is read (a training pruning its checkpoints,
train.keep_checkpoints) is not called damaged: --checkpoint last looks again, step_N says it was removed.

checkpoint.prune_checkpoints renames a checkpoint out of the step_N names, then deletes it there: a reader
sees the whole folder or none. These tests put a reader in front of the real prune, before or after the reader
resolved it, or between its listing of the checkpoints and its reading of one."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest
import torch
from conftest import TINY_SAMPLERNN

import wavegen.resolve_checkpoints
from wavegen.checkpoint import prune_checkpoints, remove_checkpoint
from wavegen.config import ConfigError
from wavegen.models import resolve_preset
from wavegen.resolve import resolve_model
from wavegen.train import resolve_run_config, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run with checkpoints step_4 and step_6."""
    from conftest import prepared_corpus

    root = tmp_path_factory.mktemp("pruned")
    corpus = prepared_corpus(root, files=3, seconds=3.0, val_fraction=0.34, test_fraction=0.0, sample_rate=8000)
    config = resolve_run_config(resolve_preset("samplernn-tiny"), corpus,
                                TINY_SAMPLERNN + ["train.max_steps=6", "train.val_interval=6",
                                                  "train.checkpoint_interval=2", "train.keep_checkpoints=2"])
    train(config, root / "run", progress=False)
    return root / "run"


@pytest.fixture
def run(tmp_path, trained):
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


def save_as(run, step, source="step_6"):
    """A checkpoint step_<step> written as training writes one (a temporary folder renamed into place),
    holding ``source``'s files."""
    folder = run / "checkpoints"
    shutil.copytree(folder / source, folder / f".tmp_step_{step}")
    (folder / f".tmp_step_{step}").rename(folder / f"step_{step}")
    return folder / f"step_{step}"


def weights_of(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_last_pruned_after_it_was_resolved_loads_the_newest_kept(run):
    """info/eval/render resolve --checkpoint last, then load it; a training saved step_8 and pruned step_6 in
    between: the load takes step_8 (and the ref names it), not "step_6/model.safetensors: no such file"."""
    expected = weights_of(resolve_model(run, checkpoint="step_6").load())
    ref = resolve_model(run, checkpoint="last")
    assert ref.folder.name == "step_6"
    newest = save_as(run, 8)
    prune_checkpoints(run, 1, set(), (newest,))
    assert not (run / "checkpoints" / "step_6").exists()
    model = ref.load()
    assert ref.folder == newest and ref.weights == newest / "model.safetensors" and "(step 8)" in ref.source
    got = weights_of(model)
    assert all(torch.equal(got[k], expected[k]) for k in expected)  # step_8 holds step_6's files
    assert ref.weights_sha256() == resolve_model(run, checkpoint="step_8").sha256


def test_step_n_pruned_after_it_was_resolved_says_it_was_removed(run):
    ref = resolve_model(run, checkpoint="step_4")
    prune_checkpoints(run, 1, set())
    with pytest.raises(ConfigError) as caught:
        ref.load()
    assert str(caught.value) == (f"--checkpoint step_4: {run / 'checkpoints' / 'step_4'} was removed while it was "
                                 "read (not damaged: a training writing this run removes its older checkpoints, "
                                 "keeping the newest train.keep_checkpoints); kept: step_6 (or last)")


def test_a_checkpoint_pruned_after_it_loaded_still_gives_its_digests(run):
    """render records the model's digests after it loaded: a checkpoint pruned in between still gives them (read
    with the checkpoint's record when it was resolved), not "no such file" once the render has begun."""
    state = json.loads((run / "checkpoints" / "step_4" / "trainer_state.json").read_text())
    ref = resolve_model(run, checkpoint="step_4")
    assert ref.load() is not None
    prune_checkpoints(run, 1, set())
    assert not ref.folder.exists()
    listed = state["files"]["model.safetensors"]
    assert (ref.weights_sha256(), ref.weights_tensors_sha256()) == (listed["sha256"], listed["tensors_sha256"])


def pruned_once_listed(monkeypatch, folder):
    """The prune removes ``folder`` once the reader has listed the checkpoints, before it reads the one it chose
    (resolve_checkpoints' own _read_checkpoint, run after the real remove_checkpoint)."""
    read = wavegen.resolve_checkpoints._read_checkpoint

    def read_after_the_prune(*args):
        if folder.exists():
            remove_checkpoint(folder)
        return read(*args)

    monkeypatch.setattr(wavegen.resolve_checkpoints, "_read_checkpoint", read_after_the_prune)


def test_last_pruned_as_it_is_read_looks_again(run, monkeypatch):
    """The newest checkpoint listed is pruned before it is read: "last" is the newest kept one after it,
    not "no model.safetensors (an incomplete checkpoint)"."""
    pruned_once_listed(monkeypatch, run / "checkpoints" / "step_6")
    ref = resolve_model(run, checkpoint="last")
    assert ref.folder.name == "step_4" and ref.load() is not None


def test_step_n_pruned_as_it_is_read_says_it_was_removed(run, monkeypatch):
    pruned_once_listed(monkeypatch, run / "checkpoints" / "step_4")
    with pytest.raises(ConfigError) as caught:
        resolve_model(run, checkpoint="step_4")
    assert "step_4 was removed while it was read (not damaged" in str(caught.value)
    assert str(caught.value).endswith("kept: step_6 (or last)")


def test_a_checkpoint_missing_its_weights_that_stays_is_incomplete(run):
    """A folder that lost its weights is what it was: an incomplete checkpoint, said at once (a pruned checkpoint
    leaves the step_N names whole before its files go: nothing is waited on)."""
    (run / "checkpoints" / "step_6" / "model.safetensors").unlink()
    began = time.monotonic()
    for asked in ("last", "step_6"):
        with pytest.raises(ConfigError, match=r"step_6: no model.safetensors \(an incomplete checkpoint\)$"):
            resolve_model(run, checkpoint=asked)
    assert time.monotonic() - began < 1


def test_missing_averaged_weights_are_not_stood_in_for_by_the_raw_ones(run):
    """A checkpoint of a run with train.ema_decay is rendered by its averaged weights; one that lost those (but
    not model.safetensors) is missing them, not a checkpoint of the raw weights."""
    folder = run / "checkpoints" / "step_6"
    averaged = folder / "averaged_model.safetensors"
    shutil.copy(folder / "model.safetensors", averaged)
    state = json.loads((folder / "trainer_state.json").read_text())
    state["files"]["averaged_model.safetensors"] = dict(state["files"]["model.safetensors"])
    (folder / "trainer_state.json").write_text(json.dumps(state))
    assert resolve_model(run, checkpoint="step_6").weights == averaged
    averaged.unlink()
    with pytest.raises(ConfigError, match=r"step_6: no averaged_model.safetensors \(an incomplete checkpoint\)$"):
        resolve_model(run, checkpoint="step_6")


def test_last_read_while_a_training_saves_and_prunes_every_step(run):
    """A real concurrent prune: a thread saves a checkpoint every 50 ms and prunes to the newest one
    (train.checkpoint_interval=1, train.keep_checkpoints=1: a training of samplernn-tiny saves one every
    150 ms on a CPU), as --checkpoint last is
    resolved and loaded again and again: every read loads a checkpoint, none is called damaged or missing."""
    stop, errors, saved = threading.Event(), [], []

    def training():
        step = 8
        try:
            while not stop.is_set():
                saved.append(save_as(run, step, "step_6" if step == 8 else f"step_{step - 1}"))
                prune_checkpoints(run, 1, set(), (saved[-1],))
                step += 1
                time.sleep(0.05)
        except Exception as err:  # noqa: BLE001 - said by the test below
            errors.append(err)

    thread = threading.Thread(target=training)
    thread.start()
    loaded, began = [], time.monotonic()
    try:
        while len(saved) < 20 and not errors and time.monotonic() - began < 60:  # 20 saves, each pruning one
            ref = resolve_model(run, checkpoint="last")
            assert ref.load() is not None
            loaded.append(int(ref.folder.name.removeprefix("step_")))
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert len(saved) >= 20 and loaded == sorted(loaded) and loaded[-1] >= 20, (len(saved), loaded)
