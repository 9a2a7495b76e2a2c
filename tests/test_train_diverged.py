"""A training that diverges: what it keeps of the weights that gave its first non-finite step."""

import errno
import json
from pathlib import Path

import pytest
import torch
from conftest import prepared_corpus
from conftest import tiny_run_config as config_for
from safetensors.torch import load_file

import wavegen.train
from wavegen.checkpoint import recorded_tensors_sha256
from wavegen.resolve import resolve_model
from wavegen.train import train
from wavegen.trainstate import NonFiniteError


def nan_loss_at(monkeypatch, bad: int) -> None:
    """Step ``bad``'s loss made NaN (and so its gradient), standing in for a bad batch: the corpus is int16 and
    the weights before it good, so no real batch gives one here. The rest of the step runs as it is."""
    real = wavegen.train.train_step

    class Poisoned:
        def __init__(self, model):
            self.model = model

        def __call__(self, batch, state):
            loss, state = self.model(batch, state)
            return loss * float("nan"), state

        def parameters(self):
            return self.model.parameters()

    def step(accelerator, model, optimizer, stream, cfg, step, carry, watch=None):
        return real(accelerator, Poisoned(model) if step == bad - 1 else model, optimizer, stream, cfg, step, carry,
                    watch)

    monkeypatch.setattr(wavegen.train, "train_step", step)


def test_best_of_a_run_without_validation_audio_never_keeps_the_weights_that_gave_the_non_finite_step(tmp_path):
    """Without validation audio best/ holds the latest model, written at each validation step: lr 1e30 writes
    weights of ~1e30 (finite) there at step 1, which give step 2's NaN. They are moved aside (best.diverged, kept),
    said in the line, so render and eval never take them; the rerun the line advises writes best/ anew."""
    corpus = prepared_corpus(tmp_path, val_fraction=0, test_fraction=0.25)
    run = tmp_path / "run"
    common = ["train.val_interval=1", "train.checkpoint_interval=100", "train.max_steps=3"]
    with pytest.raises(NonFiniteError, match=r"best held the weights that gave it: moved aside to best.diverged; "
                                             r"no checkpoint had been saved") as stopped:
        train(config_for(corpus, *common, "train.lr=1e30", "train.grad_clip=0"), run, progress=False)
    assert str(stopped.value).startswith("step 2: ")
    assert not (run / "best").exists()
    wrecked = load_file(str(run / "best.diverged" / "model.safetensors"))
    assert max(w.abs().max() for w in wrecked.values()) > 1e20
    assert train(config_for(corpus, *common, "train.lr=1e-3", "train.grad_clip=1"), run, progress=False)["step"] == 3
    weights = load_file(str(run / "best" / "model.safetensors"))
    assert all(torch.isfinite(w).all() and w.abs().max() < 1e3 for w in weights.values())


def test_a_checkpoint_holding_a_non_finite_optimizer_state_is_moved_aside_and_the_one_before_resumes(tiny_corpus,
                                                                                                      tmp_path):
    """A checkpoint whose Adam state holds an inf (a gradient past 1.8e19 squared, kept by a training that did not
    check it): a run resumed from it would carry the inf into every later checkpoint. The resume says so in one
    line and moves it aside (kept, step_N.diverged); the same command then resumes from the one before it, and
    what it saves is finite."""
    from wavegen.fileio import sha256_file

    run = tmp_path / "run"
    common = ["train.val_interval=2", "train.checkpoint_interval=1", "train.max_steps=4"]
    assert train(config_for(tiny_corpus, *common, "train.max_steps=2"), run, progress=False)["step"] == 2
    newest = run / "checkpoints" / "step_2"
    optimizer = torch.load(newest / "optimizer.bin", weights_only=True)
    next(iter(optimizer["state"].values()))["exp_avg_sq"].view(-1)[0] = float("inf")
    torch.save(optimizer, newest / "optimizer.bin")
    listing = json.loads((newest / "trainer_state.json").read_text())  # as the training that wrote it listed it
    listing["files"]["optimizer.bin"] = {"bytes": (newest / "optimizer.bin").stat().st_size,
                                         "sha256": sha256_file(newest / "optimizer.bin")}
    (newest / "trainer_state.json").write_text(json.dumps(listing))
    with pytest.raises(NonFiniteError, match=r"step_2 holds NaN or inf in the optimizer's state, so a run cannot go "
                                             r"on from it: moved aside to step_2.diverged; a rerun resumes from "
                                             r".*step_1, the newest intact checkpoint before it: rerun the "
                                             r"same command$"):
        train(config_for(tiny_corpus, *common), run, progress=False)
    assert (run / "checkpoints" / "step_2.diverged" / "optimizer.bin").is_file()
    assert train(config_for(tiny_corpus, *common), run, progress=False)["step"] == 4
    saved = torch.load(run / "checkpoints" / "step_4" / "optimizer.bin", weights_only=True)
    assert all(torch.isfinite(t).all() for state in saved["state"].values() for t in state.values())


def test_a_validated_best_stays_when_the_step_after_its_weights_is_not_finite(tiny_corpus, tmp_path, monkeypatch):
    """best/ written at step 4's validation (a finite score, better than step 2's), then step 5's loss is NaN
    (a bad batch: nan_loss_at). The error's line says step 4's checkpoint was moved aside to step_4.diverged (a
    rerun from it would meet step 5 again) and says nothing of best/: no best.diverged is made, best/ still holds
    step 4's validated tensors (those of step_4.diverged) and the run resolves to it. (best/ was moved to
    best.diverged, and the rerun restored it from step 2's older, worse checkpoint.) A rerun then finishes at step 6."""
    run = tmp_path / "run"
    common = ["train.val_interval=2", "train.checkpoint_interval=2", "train.keep_checkpoints=3", "train.max_steps=6"]
    nan_loss_at(monkeypatch, 5)
    with pytest.raises(NonFiniteError, match=r"^step 5: ") as stopped:
        train(config_for(tiny_corpus, *common), run, progress=False)
    monkeypatch.undo()
    assert "best.diverged" not in str(stopped.value) and f"{run / 'best'} held" not in str(stopped.value)
    assert "moved aside to step_4.diverged; a rerun resumes from" in str(stopped.value)
    assert not (run / "best.diverged").exists()
    best = recorded_tensors_sha256(run / "best" / "model.safetensors")
    assert best == recorded_tensors_sha256(run / "checkpoints" / "step_4.diverged" / "model.safetensors")
    assert resolve_model(run).folder == run / "best"
    result = train(config_for(tiny_corpus, *common), run, progress=False)
    assert result["status"] == "finished" and result["step"] == 6


def test_a_failed_move_of_best_is_said_in_the_divergence_line(tmp_path, monkeypatch):
    """best/ (the latest model: no validation audio) holds the weights that gave step 2's NaN, and moving it to
    best.diverged fails: the one line still names the non-finite step, and says best/ could not be moved (was:
    a SaveError "cannot write the checkpoints", the divergence lost). The failure is injected (EROFS): as root,
    a read-only folder does not stop a rename."""
    corpus = prepared_corpus(tmp_path, val_fraction=0, test_fraction=0.25)
    run = tmp_path / "run"
    real = Path.rename

    def rename(self, target):
        if self.name == "best" and Path(target).name.startswith("best.diverged"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    common = ["train.val_interval=1", "train.checkpoint_interval=100", "train.max_steps=3"]
    with pytest.raises(NonFiniteError, match=r"^step 2: .*best holds the weights that gave it and could not be "
                                             r"moved aside to best.diverged \(Read-only file system\): move it away "
                                             r"yourself.*: lower train.lr"):
        train(config_for(corpus, *common, "train.lr=1e30", "train.grad_clip=0"), run, progress=False)
    assert (run / "best" / "model.safetensors").is_file()


def _checkpoint(run: Path, step: int) -> Path:
    """A finished checkpoint folder as checkpoint.checkpoint_damage reads it: its file listed by size and sha256."""
    from wavegen.fileio import sha256_file

    folder = run / "checkpoints" / f"step_{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes([step]) * 64)
    listed = {"model.safetensors": {"bytes": 64, "sha256": sha256_file(folder / "model.safetensors")}}
    (folder / "trainer_state.json").write_text(json.dumps({"step": step, "files": listed}))
    return folder


def test_the_restart_point_named_after_a_divergence_is_an_intact_checkpoint(tmp_path):
    """step_3 moved aside; step_2, the one before it, is damaged (a file changed since it was written): the line
    names step_1, the checkpoint a rerun resumes from (newest_intact skips step_2), not step_2."""
    from wavegen.divergence import moved_aside

    run = tmp_path / "run"
    first, second, third = (_checkpoint(run, step) for step in (1, 2, 3))
    (second / "model.safetensors").write_bytes(b"x" * 64)
    said = moved_aside(third, "holds the weights that gave step 4", run)
    assert said.endswith(f"moved aside to step_3.diverged; a rerun resumes from {first}, the newest intact "
                         "checkpoint before it"), said
    (first / "model.safetensors").write_bytes(b"x" * 64)
    said = moved_aside(second, "holds NaN", run)  # nothing intact left before it
    assert "a rerun resumes" not in said and "step_1" in said and "damaged" in said, said


def test_not_finite_names_what_holds_a_nan_or_inf():
    from wavegen.divergence import all_finite, not_finite

    good, bad = torch.ones(3), torch.tensor([1.0, float("inf")])
    named = {"the weights": [good, torch.arange(3)], "the optimizer's state": [good, bad], "empty": []}
    assert not_finite(named) == ["the optimizer's state"]
    assert all_finite([good]) and not all_finite([bad, good]) and not_finite({}) == []


def test_the_last_line_of_a_run_whose_best_was_moved_aside_names_best_diverged(tmp_path, monkeypatch, caplog):
    """No validation audio: best/ (the latest model, step 2's) and checkpoints/step_2 moved aside by step 3's NaN.
    The rerun, stopped before its first step, said "no best/ model yet (no validation has run)" (best/ had been
    written, and best.diverged went unnamed). It names best.diverged, what it holds, and the checkpoint to use."""
    import logging

    from wavegen.signals import StopSignals

    corpus = prepared_corpus(tmp_path, val_fraction=0, test_fraction=0.25)
    run = tmp_path / "run"
    common = ["train.val_interval=2", "train.checkpoint_interval=1", "train.keep_checkpoints=3", "train.max_steps=4"]
    nan_loss_at(monkeypatch, 3)
    with pytest.raises(NonFiniteError, match="best held the weights that gave it: moved aside to best.diverged"):
        train(config_for(corpus, *common), run, progress=False)
    monkeypatch.undo()
    caplog.set_level(logging.INFO, logger="wavegen.train")
    with StopSignals() as stop:
        stop.request()
        assert train(config_for(corpus, *common), run, progress=False, stop=stop)["status"] == "interrupted"
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("interrupted at step 1;"))
    assert "no validation has run" not in line, line
    assert f"training moved it aside to {run / 'best.diverged'} after a divergence" in line, line
    assert "no finite validation score vouches for" in line, line
    assert line.endswith(f"latest checkpoint {run / 'checkpoints' / 'step_1'} (render or evaluate it with "
                         "--checkpoint last)"), line


def test_the_newest_best_diverged_is_told_by_free_names_order(tmp_path):
    """best.diverged, best.diverged2, ..., best.diverged10 (fileio.free_name): oldest first, not by the letters."""
    from wavegen.resolve_why import best_aside

    for name in ("best.diverged10", "best.diverged", "best.diverged2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"w")
    assert [path.name for path in best_aside(tmp_path)] == ["best.diverged", "best.diverged2", "best.diverged10"]


def test_a_divergence_that_moves_the_only_checkpoint_aside_says_why_the_rerun_starts_at_step_0(tiny_corpus, tmp_path,
                                                                                                monkeypatch):
    """train.keep_checkpoints=1: step 3's NaN moves step_2, the only checkpoint, aside. The line said only "no
    earlier checkpoint is kept, so a rerun starts again from step 0"; it says why (keep_checkpoints=1), that the
    progress is lost and that going on from step_2.diverged is futile whatever the lr; the rerun does start at 0."""
    run = tmp_path / "run"
    common = ["train.val_interval=2", "train.checkpoint_interval=1", "train.keep_checkpoints=1", "train.max_steps=3"]
    nan_loss_at(monkeypatch, 3)
    with pytest.raises(NonFiniteError) as stopped:
        train(config_for(tiny_corpus, *common), run, progress=False)
    monkeypatch.undo()
    said = str(stopped.value)
    assert "moved aside to step_2.diverged; no earlier checkpoint is kept (train.keep_checkpoints=1 keeps only the " \
        "newest), so a rerun starts again from step 0 and the steps trained so far are lost: going on from " \
        "step_2.diverged would meet the same non-finite step at any learning rate" in said, said
    assert not any(folder.name == "step_1" for folder in (run / "checkpoints").iterdir())
    assert train(config_for(tiny_corpus, *common), run, progress=False)["step"] == 3
