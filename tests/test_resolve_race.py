"""wavegen.resolve: a model read while a training replaces it (fileio.replace_dir: best -> best.old, the new folder
-> best, best.old removed; a checkpoint saved again: step_N -> step_N.old). The replace is real, made at a chosen
point of the read (inside the weights' read, or between resolution and load), so each window is met every run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import save_tiny_model
from safetensors.torch import load_file

import wavegen.checkpoint
from wavegen.config import ConfigError
from wavegen.fileio import replace_dir
from wavegen.resolve import resolve_model


def _run(tmp_path) -> Path:
    """A run folder: config.json, checkpoints/, best/ (seed 0's random weights, written by checkpoint.save_model)."""
    run = tmp_path / "run"
    save_tiny_model(run / "best", seed=0)
    shutil.copy(run / "best" / "config.json", run / "config.json")
    (run / "checkpoints").mkdir()
    return run


def _replace_best(run: Path, seed: int) -> None:
    """What a training's validation does when it improves: a new best/ written aside, then replace_dir."""
    save_tiny_model(run / ".tmp_best", seed=seed)
    replace_dir(run / ".tmp_best", run / "best")


def _recorded(folder: Path) -> dict:
    return json.loads((folder / "weights.json").read_text())["files"]["model.safetensors"]


def _holds(model, folder: Path) -> bool:
    """Whether ``model``'s weights are those of ``folder``'s model.safetensors, tensor by tensor."""
    saved, state = load_file(str(folder / "model.safetensors")), model.state_dict()
    return set(saved) == set(state) and all(torch.equal(saved[name], state[name]) for name in saved)


def _replace_inside_the_read(monkeypatch, run: Path, times: int) -> list:
    """The weights' read (checkpoint.load_weights) replaces best/ first, ``times`` times: each read begun after
    the weights were checked meets a best/ other than the one checked."""
    real, done = wavegen.checkpoint.load_weights, []

    def load_weights(path, *data):
        if len(done) < times:
            done.append(path)
            _replace_best(run, seed=len(done))
        return real(path, *data)

    monkeypatch.setattr(wavegen.checkpoint, "load_weights", load_weights)
    return done


def test_best_replaced_while_its_weights_are_read_loads_the_new_best_whole(tmp_path, monkeypatch):
    """best/ replaced after its weights were checked, before they were read: the ref said the old weights'
    sha256 and held the new ones (a render would record one model and play another). It is read again, whole,
    from the new best/: its weights, their sha256 and tensors digest all of one folder."""
    run = _run(tmp_path)
    ref = resolve_model(run)
    done = _replace_inside_the_read(monkeypatch, run, times=1)
    model = ref.load("cpu")
    assert len(done) == 1 and ref.folder == run / "best" and _holds(model, run / "best")
    assert ref.weights_sha256() == _recorded(run / "best")["sha256"]
    assert ref.weights_tensors_sha256() == _recorded(run / "best")["tensors_sha256"]


def test_best_replaced_twice_within_one_read_loads_the_weights_its_sha256_names(tmp_path, monkeypatch):
    """best/ replaced twice (two validations) while its weights are read once: ext4 gives the second new best/ the
    inode number of the one read (freed by the first replace), so a check of the folder's (device, inode) saw "the
    same folder": the ref said the sha256 of the weights checked and held those of the best/ there now. The weights
    are read once, from a folder held open (its number not reused): read again from the new best/, all of one file."""
    run = _run(tmp_path)
    templates = {seed: save_tiny_model(tmp_path / f"template{seed}", seed=seed) for seed in (1, 2, 3)}

    def replace(seed):
        shutil.copytree(templates[seed], run / ".tmp_best")
        replace_dir(run / ".tmp_best", run / "best")

    for seed in (1, 2, 1, 2):  # a training's validations: best/'s number alternates between two on ext4
        replace(seed)
    ref = resolve_model(run)
    real, done = wavegen.checkpoint.load_weights, []

    def load_weights(path, *data):
        if not done:
            done.append(path)
            replace(1)
            replace(3)
        return real(path, *data)

    monkeypatch.setattr(wavegen.checkpoint, "load_weights", load_weights)
    model = ref.load("cpu")
    assert done and _holds(model, run / "best")
    assert ref.weights_sha256() == _recorded(run / "best")["sha256"] == _recorded(templates[3])["sha256"]
    assert ref.weights_tensors_sha256() == _recorded(templates[3])["tensors_sha256"]


def test_best_between_the_two_renames_of_a_replace_is_read_from_best_old(tmp_path):
    """Resolved, then best/ renamed to best.old/ (replace_dir's first rename) before the load: it failed with
    "best/model.safetensors: no such file". It reads best.old/, the same model."""
    run = _run(tmp_path)
    ref = resolve_model(run)
    digest = _recorded(run / "best")["sha256"]
    (run / "best").rename(run / "best.old")
    ref.load("cpu")
    assert ref.folder == run / "best.old" and ref.weights_sha256() == digest


def test_best_old_resolved_then_removed_as_the_replace_ends_reads_the_new_best(tmp_path):
    """Resolved between the renames (best.old/), then the replace ends (the new best/ in, best.old/ removed)
    before the load: it failed naming best.old/model.safetensors. It reads the new best/."""
    run = _run(tmp_path)
    (run / "best").rename(run / "best.old")
    ref = resolve_model(run)
    assert ref.folder == run / "best.old"
    save_tiny_model(run / ".tmp_best", seed=3).rename(run / "best")  # replace_dir's second rename, then its removal
    shutil.rmtree(run / "best.old")
    ref.load("cpu")
    assert ref.folder == run / "best" and ref.weights_sha256() == _recorded(run / "best")["sha256"]


def test_best_replaced_on_every_read_or_removed_says_so_in_one_line(tmp_path, monkeypatch):
    """Replaced again while it was read again: one line naming the folder and what to do (not a damaged-file
    error). Removed for good (no replace) with nothing in its place: the run's own line, not a raw errno."""
    run = _run(tmp_path)
    ref = resolve_model(run)
    _replace_inside_the_read(monkeypatch, run, times=2)
    with pytest.raises(ConfigError, match=rf"^{run / 'best'}: replaced twice while it was read .*--checkpoint last\)$"):
        ref.load("cpu")
    monkeypatch.undo()
    ref = resolve_model(run)
    shutil.rmtree(run / "best")
    with pytest.raises(ConfigError, match=rf"^{run}: no such preset, model folder or run folder|^{run}: "):
        ref.load("cpu")


def test_a_model_folder_not_replaced_that_loses_its_weights_is_not_read_again(tmp_path, monkeypatch):
    """A folder that is not a run's best/ (nothing replaces it): a file gone while it is read is named as
    gone, once (no second resolution)."""
    folder = save_tiny_model(tmp_path / "model", seed=0)
    ref = resolve_model(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(wavegen.checkpoint.CheckpointError, match=rf"{folder / 'model.safetensors'}: missing"):
        ref.load("cpu")


def test_a_checkpoint_renamed_by_a_save_of_its_step_is_read_under_its_new_name(tiny_corpus, tmp_path):
    """--checkpoint step_2 resolved, then step_2 renamed to step_2.old (replace_dir saving step 2 again) before the
    load: it said "step_2 was removed while it was read". It is read from step_2.old, the same checkpoint."""
    from conftest import tiny_run_config

    from wavegen.train import train

    run = tmp_path / "run"
    train(tiny_run_config(tiny_corpus, "train.max_steps=2", "train.checkpoint_interval=1", "train.val_interval=2"),
          run, progress=False)
    ref = resolve_model(run, checkpoint="step_2")
    digest = ref.weights_sha256()
    (run / "checkpoints" / "step_2").rename(run / "checkpoints" / "step_2.old")
    ref.load("cpu")
    assert ref.folder == run / "checkpoints" / "step_2.old" and ref.weights_sha256() == digest
    shutil.rmtree(run / "checkpoints" / "step_2.old")  # gone under both names: removed, said as before
    ref = resolve_model(run, checkpoint="step_1")
    shutil.rmtree(run / "checkpoints" / "step_1")
    with pytest.raises(ConfigError, match=r"--checkpoint step_1: .*step_1 was removed while it was read"):
        ref.load("cpu")


def test_best_read_again_and_again_while_a_thread_replaces_it_never_fails_with_a_missing_file(tmp_path):
    """A thread replacing best/ in a loop (replace_dir, as training's validations do), with two models in turn (ext4
    gives best/ two inode numbers in turn), while the run is resolved and loaded again and again: each load gives the
    model whose sha256 the ref then says, or (replaced twice within one read) the one line saying so; never "no such
    file", a raw errno or a folder called damaged. It goes on until the thread has replaced best/ 30 times and 5 loads
    have passed (not a fixed count of loads: a loaded machine runs either side slower). (The windows one by one: the
    tests above.)"""
    import threading
    import time

    run = _run(tmp_path)
    templates = [save_tiny_model(tmp_path / f"template{seed}", seed=seed) for seed in (5, 6)]
    first = shutil.copytree(run / "best", tmp_path / "first")  # what best/ holds before the thread replaces it
    weights = {_recorded(folder)["sha256"]: folder for folder in (first, *templates)}
    stop, replaced = threading.Event(), []

    def replace_loop():
        while not stop.is_set():
            shutil.copytree(templates[len(replaced) % 2], run / ".tmp_best")
            replace_dir(run / ".tmp_best", run / "best")
            replaced.append(1)

    thread = threading.Thread(target=replace_loop)
    thread.start()
    outcomes, deadline = [], time.monotonic() + 120
    try:
        while (len(replaced) < 30 or outcomes.count("loaded") < 5) and time.monotonic() < deadline:
            try:
                ref = resolve_model(run)
                model = ref.load("cpu")
            except ConfigError as err:
                assert "replaced twice while it was read" in str(err), err
                outcomes.append("twice")
                continue
            assert _holds(model, weights[ref.weights_sha256()]), ref.weights_sha256()
            assert ref.weights_tensors_sha256() == _recorded(weights[ref.weights_sha256()])["tensors_sha256"]
            outcomes.append("loaded")
    finally:
        stop.set()
        thread.join()
    assert len(replaced) >= 30 and outcomes.count("loaded") >= 5, (len(replaced), outcomes)


def test_best_old_removed_between_its_look_and_its_configs_read_resolves_the_new_best(tmp_path, monkeypatch):
    """Resolution between replace_dir's renames finds best.old/, which the replace removes before its config.json
    is read: that was an error naming the missing config.json. It resolves the new best/."""
    import wavegen.resolve

    run = _run(tmp_path)
    (run / "best").rename(run / "best.old")
    real = wavegen.resolve.read_config

    def read_config(path, *args, **kwargs):
        if path.parent.name == "best.old":  # the replace ends: the new best/ in, best.old/ removed
            save_tiny_model(run / ".tmp_best", seed=4).rename(run / "best")
            shutil.rmtree(run / "best.old")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(wavegen.resolve, "read_config", read_config)
    ref = resolve_model(run)
    assert ref.folder == run / "best" and ref.kind == "run"


def test_best_mid_replace_when_its_config_is_read_resolves_the_new_best(tmp_path, monkeypatch):
    """best/ looked at, then moved to best.old/ by a replace before its config.json is read; the new best/ is in
    place when resolution looks again: that was an error naming best/config.json ("no such file", seen in a CI run
    of the thread test). It reads the new best/; a config that fails twice is still the folder's own error."""
    import wavegen.resolve

    run = _run(tmp_path)
    real, calls = wavegen.resolve.read_config, []

    def read_config(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1 and path.parent.name == "best":  # the replace's first rename, the read, then its second
            (run / "best").rename(run / "best.old")
            try:
                return real(path, *args, **kwargs)
            finally:
                save_tiny_model(run / ".tmp_best", seed=5).rename(run / "best")
                shutil.rmtree(run / "best.old")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(wavegen.resolve, "read_config", read_config)
    ref = resolve_model(run)
    assert ref.folder == run / "best" and ref.kind == "run" and len(calls) == 2
    assert _holds(ref.load("cpu"), run / "best")
    (run / "best" / "config.json").write_text("{")  # damaged: not a replace
    with pytest.raises(ConfigError, match="config.json"):
        resolve_model(run)


def _album(freq_hz: float) -> str:
    """An album profile (album.json's text) of a tone at ``freq_hz``: the guard's centroid bounds an octave either
    side of it."""
    import numpy as np

    from wavegen.render import album

    rate = 8000
    tone = np.sin(2 * np.pi * freq_hz * np.arange(2 * rate) / rate)
    return json.dumps(album.album_profile([0.5 * tone, 0.4 * tone, 0.3 * tone], rate))


def test_the_album_profile_is_the_one_read_with_the_weights_not_a_replaced_best_s(tmp_path, monkeypatch):
    """best/ (weights A, a 220 Hz album) loaded, then replaced by a training (weights B, a 2 kHz album) before the
    render guard read album.json: the guard judged model A's audio by model B's album (centroid bounds 1-4 kHz). The
    album is read with the weights, within the replaced-while-read check: A's bounds, 110-440 Hz; best/ replaced
    inside the read: B's weights and B's album, read again together."""
    from wavegen.render.guard import GuardCriteria, criteria_for

    run = _run(tmp_path)
    (run / "best" / "album.json").write_text(_album(220))

    def replace(seed, freq_hz):
        save_tiny_model(run / ".tmp_best", seed=seed)
        (run / ".tmp_best" / "album.json").write_text(_album(freq_hz))
        replace_dir(run / ".tmp_best", run / "best")

    ref = resolve_model(run)
    weights = _recorded(run / "best")["sha256"]
    ref.load("cpu")
    replace(1, 2000)
    criteria = criteria_for(GuardCriteria(), ref)
    assert ref.weights_sha256() == weights and criteria.album_profile == str(run / "best" / "album.json")
    assert criteria.centroid_low == pytest.approx(110, rel=0.01), criteria
    assert criteria.centroid_high == pytest.approx(440, rel=0.01), criteria
    (run / "best" / "album.json").unlink()  # gone since the load: still the one read with the weights
    assert criteria_for(GuardCriteria(), ref).centroid_high == pytest.approx(440, rel=0.01)

    ref = resolve_model(run)
    real, done = wavegen.checkpoint.load_weights, []

    def load_weights(path, *data):
        if not done:
            done.append(path)
            replace(2, 500)
        return real(path, *data)

    monkeypatch.setattr(wavegen.checkpoint, "load_weights", load_weights)
    model = ref.load("cpu")
    assert done and _holds(model, run / "best") and ref.weights_sha256() == _recorded(run / "best")["sha256"]
    assert criteria_for(GuardCriteria(), ref).centroid_high == pytest.approx(1000, rel=0.01)


def test_best_replaced_between_resolution_and_load_is_built_from_its_own_config(tmp_path):
    """best/ (8 kHz, dim 128) resolved, then replaced by a training (16 kHz, dim 96) before the load: its config.json
    was read at resolution only, outside the replaced-while-read check, so the new weights were paired with the old
    config (a 16 kHz model said to be 8 kHz; another size refused as not matching its config). The config is read with
    the weights, of the same folder: the new best/'s."""
    run = _run(tmp_path)
    ref = resolve_model(run)
    assert ref.sample_rate == 8000 and ref.config["model"]["dim"] == 128
    save_tiny_model(run / ".tmp_best", seed=1, sample_rate=16000, dim=96)
    replace_dir(run / ".tmp_best", run / "best")
    model = ref.load("cpu")
    assert _holds(model, run / "best") and ref.weights_sha256() == _recorded(run / "best")["sha256"]
    assert ref.config == json.loads((run / "best" / "config.json").read_text())
    assert ref.sample_rate == 16000 and ref.config["model"]["dim"] == 96


def test_an_album_that_is_not_utf8_is_judged_as_read_with_the_weights(tmp_path, caplog):
    """best/'s album.json not UTF-8 text: it was left out of what the load read, and the guard read album.json again
    from disk later, by then a new best/'s (a training replaced it after the load): model A's audio judged by model
    B's album (2 kHz). The bytes read with the weights are kept and judged: ignored, naming the byte, fixed
    thresholds (not B's)."""
    import logging

    from wavegen.render.guard import GuardCriteria, criteria_for

    run = _run(tmp_path)
    (run / "best" / "album.json").write_bytes(_album(220).encode()[:-1] + b', "by": "caf\xe9"}')
    ref = resolve_model(run)
    ref.load("cpu")
    save_tiny_model(run / ".tmp_best", seed=1)
    (run / ".tmp_best" / "album.json").write_text(_album(2000))
    replace_dir(run / ".tmp_best", run / "best")
    caplog.set_level(logging.WARNING)
    criteria = criteria_for(GuardCriteria(), ref)
    assert criteria.album_profile is None and criteria == GuardCriteria(), criteria
    said = [r.getMessage() for r in caplog.records if "album.json" in r.getMessage()]
    assert len(said) == 1 and "can't decode byte 0xe9" in said[0] and "fixed thresholds" in said[0], said
