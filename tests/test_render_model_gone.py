"""A render begun from a run's best/ (or a checkpoint), which is gone when the render is resumed (deleted, or
being replaced by a training; pruned): the rerun goes on with the kept checkpoint (or best/) holding the very
weights the render began with, saying so in one line, and gives the audio of a render never stopped, as does
a resume from best/ once it is back; where no model holds those weights, the rerun is refused, saying so."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from render_helpers import ENV, SR, cli, direct_pcm, make_model, read_pcm, settings, wait_for_snapshot
from wavegen.checkpoint import load_model
from wavegen.cli import main
from wavegen.fileio import sha256_file
from wavegen.render import render
from wavegen.render.writers import load_snapshot

pytestmark = pytest.mark.slow

SECONDS = 1.5
FLAGS = ["--seconds", SECONDS, "--backend", "torch", "--no-guard", "--no-spectrogram", "--block-seconds", 0.05,
         "--snapshot-seconds", 0.05]


def make_run(model: Path, run: Path) -> Path:
    """A run whose best/ is ``model`` and whose checkpoint step_5 holds the same weights, written as
    training writes them (accelerate's writer: other bytes than best/'s)."""
    from accelerate.utils import save as accelerate_save

    shutil.copytree(model, run / "best")
    shutil.copy(model / "config.json", run / "config.json")
    kept = run / "checkpoints" / "step_5"
    kept.mkdir(parents=True)
    accelerate_save(load_model(model)[0].state_dict(), kept / "model.safetensors", safe_serialization=True)
    (kept / "trainer_state.json").write_text(json.dumps({"step": 5}))
    return run


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def interrupted(out: Path, *args, after: int = 0, said: list | None = None) -> int:
    """`wavegen render ARGS --out OUT` as a real process, Ctrl-C'd once its snapshot holds more than
    ``after`` samples, and more than the snapshot OUT held before it started (the last session's, which
    its stop may have carried past ``after``: taken for this one's, the signal came while it imported);
    → the samples its snapshot held then (``said``: gets its stderr's lines)."""
    snapshot = out / ".state" / "rank0.npz"
    before = load_snapshot(snapshot)[1] if snapshot.is_file() else 0
    proc = subprocess.Popen(cli(*args, "--out", out, *FLAGS), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    written = wait_for_snapshot(proc, snapshot, max(after, before) + 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    if said is not None:
        said.extend(err.splitlines())
    return written


def test_a_render_whose_best_is_gone_resumes_with_the_checkpoint_holding_its_weights(tmp_path, capsys):
    """The same command goes on with the kept checkpoint of the same tensors, said in one line (as serve
    continues an archive); it was refused, naming the checkpoint to give."""
    model = make_model(tmp_path / "model")
    run, out = make_run(model, tmp_path / "run"), tmp_path / "out"
    written = interrupted(out, run)
    shutil.rmtree(run / "best")  # deleted, or a training replacing it
    said = []
    interrupted(out, run, after=written, said=said)  # resumed with step_5, stopped again
    assert [line for line in said if "is gone" in line] == [
        f"{run}: {(run / 'best').resolve()}, the model the render in {out.resolve()} began with, is gone (deleted, or "
        f"being replaced by a training); the kept checkpoint {(run / 'checkpoints' / 'step_5').resolve()} holds the "
        "weights it began with, the same tensors: resuming the render with it"], said
    shutil.copytree(model, run / "best")  # training restored best/ from step_5: the same weights again
    assert main(["-q", "render", str(run), "--out", str(out), *map(str, FLAGS)]) == 0, capsys.readouterr().err
    assert json.loads((out / "render_report.json").read_text())["sessions"] == 3
    assert np.array_equal(read_pcm(out / "stream_000.wav"), direct_pcm(model, 1, round(SECONDS * SR))[0])


def test_a_finished_render_whose_best_is_gone_and_whose_weights_no_checkpoint_holds(tmp_path, capsys):
    model = make_model(tmp_path / "model")
    run, out = make_run(model, tmp_path / "run"), tmp_path / "out"
    render(run, out, settings(0.125), progress=False)
    shutil.rmtree(run / "best")
    assert main(["-q", "render", str(run / "best"), "--out", str(out), *map(str, FLAGS[2:]), "--seconds",
                 "0.125"]) == 0  # checked with step_5, the same weights: complete
    assert one_error_line(capsys).endswith("the same tensors: checking the finished render with it")
    assert main(["-q", "render", str(run), "--checkpoint", "step_5", "--out", str(out), *map(str, FLAGS[2:]),
                 "--seconds", "0.125"]) == 0  # the same weights: complete, nothing to do
    assert not capsys.readouterr().err
    shutil.rmtree(run / "checkpoints" / "step_5")
    assert main(["-q", "render", str(run), "--out", str(out), *map(str, FLAGS[2:]), "--seconds", "0.125"]) == 2
    assert one_error_line(capsys).endswith(
        f"which is gone (deleted, or being replaced by a training), and no kept checkpoint of {run.resolve()} holds "
        "its weights, so it cannot be checked: pass --restart with a model that is there, or choose another --out")
    # (the run has no checkpoint left: the line said '(e.g. --checkpoint last)')
    # another model named, or --restart: the model's own error, not the render's
    assert main(["-q", "render", str(tmp_path / "elsewhere"), "--out", str(out), *map(str, FLAGS[2:]),
                 "--seconds", "0.125"]) == 2
    assert "no such model or run folder" in one_error_line(capsys)
    assert main(["-q", "render", str(run), "--restart", "--out", str(out), *map(str, FLAGS[2:]),
                 "--seconds", "0.125"]) == 2
    assert "a training run with no model yet" in one_error_line(capsys)  # no best/, no checkpoint



def test_a_render_whose_checkpoint_was_pruned_names_the_model_holding_its_weights(tmp_path, capsys):
    """A render begun from --checkpoint step_N, rerun once a training that went on pruned step_N: told that
    the checkpoint is gone and which kept checkpoint, or the run's best/, holds the same weights (resuming
    from it gives the same render), or that none does."""
    model = make_model(tmp_path / "model")
    run, out = make_run(model, tmp_path / "run"), tmp_path / "out"
    flags = [*map(str, FLAGS[2:]), "--seconds", "0.125"]
    render(run, out, settings(0.125), progress=False, checkpoint="step_5")
    checkpoints = run / "checkpoints"
    shutil.copytree(checkpoints / "step_5", checkpoints / "step_9")  # the same weights, kept on
    shutil.rmtree(checkpoints / "step_5")
    assert main(["-q", "render", str(run), "--checkpoint", "step_5", "--out", str(out), *flags]) == 0
    assert one_error_line(capsys).endswith(
        f"--checkpoint step_5: {(checkpoints / 'step_5').resolve()}, the model the render in {out.resolve()} began "
        "with, is gone (pruned by a training that went on, or deleted); the kept checkpoint "
        f"{(checkpoints / 'step_9').resolve()} holds the weights it began with, the same tensors: checking the "
        "finished render with it")
    shutil.rmtree(checkpoints / "step_9")
    (checkpoints / "step_7").mkdir()  # another checkpoint (other weights), as a training that went on keeps
    make_model(checkpoints / "step_7", seed=1)
    (checkpoints / "step_7" / "trainer_state.json").write_text(json.dumps({"step": 7}))
    assert main(["-q", "render", str(run), "--checkpoint", "step_5", "--out", str(out), *flags]) == 0
    assert "; the run's best/ holds the weights it began with, the same tensors: checking the finished render " \
        "with it" in one_error_line(capsys)
    assert main(["-q", "render", str(run), "--out", str(out), *flags]) == 0  # best/: the same render, complete
    assert not capsys.readouterr().err
    shutil.rmtree(run / "best")
    make_model(run / "best", seed=2)  # a best/ of other weights
    assert main(["-q", "render", str(run), "--checkpoint", "step_5", "--out", str(out), *flags]) == 2
    assert one_error_line(capsys).endswith(
        "and neither a kept checkpoint nor the run's best/ holds its weights, so it cannot be checked: pass "
        "--restart with a model that is there (e.g. --checkpoint last), or choose another --out")


def test_a_render_from_the_last_checkpoint_resumed_once_it_was_pruned_names_best(tmp_path):
    """--checkpoint last names a newer checkpoint once the one the render began from was pruned: the refusal
    says the run's best/ holds the weights it began with (the same tensors, in a file of other bytes)."""
    from wavegen.weights_file import tensors_sha256
    from wavegen.render.model_change import model_differs

    model = make_model(tmp_path / "model")
    run = make_run(model, tmp_path / "run")
    began = (run / "checkpoints" / "step_5").resolve()
    saved = {"model": str(began), "model_sha256": sha256_file(began / "model.safetensors"),
             "model_tensors_sha256": tensors_sha256(began / "model.safetensors")}
    newer = make_model(run / "checkpoints" / "step_9", seed=1)
    current = {"model": str(newer.resolve()), "model_sha256": sha256_file(newer / "model.safetensors"),
               "model_tensors_sha256": tensors_sha256(newer / "model.safetensors")}
    assert "resume it with --checkpoint step_5 (the weights it began with)" in model_differs(tmp_path, saved, current)
    shutil.rmtree(began)
    assert "; resume it without --checkpoint (the run's best/ holds the weights it began with), pass --restart" in \
        model_differs(tmp_path, saved, current)
    shutil.rmtree(run / "best")
    make_model(run / "best", seed=2)
    assert "; pass --restart" in model_differs(tmp_path, saved, current)


def test_an_older_render_whose_checkpoint_was_pruned_does_not_say_best_lacks_its_weights(tmp_path):
    """A render an older wavegen began from --checkpoint step_5 (only the file's sha256 recorded), the checkpoint
    since pruned: whether best/ (a file of other bytes) holds its weights cannot be told; it said best/ did not."""
    from wavegen.render.model_change import model_gone

    run = make_run(make_model(tmp_path / "model"), tmp_path / "run")
    began = (run / "checkpoints" / "step_5").resolve()
    saved = {"model": str(began), "model_sha256": sha256_file(began / "model.safetensors")}
    shutil.rmtree(began)
    message = model_gone(tmp_path, run, saved, False, "step_5")
    assert "recorded no more of its model than that file's sha256" in message and "bring the checkpoint back" in message
    assert "neither a kept checkpoint nor the run's best/ holds its weights" not in message


def as_an_older_render_wrote_it(out: Path, params_too: bool = True) -> None:
    """The render in ``out`` as one begun before renders recorded their model's tensors: its params.json
    (unless not ``params_too``) and snapshots hold model_sha256 (the weights file's) alone."""
    from wavegen.render.writers import save_snapshot

    params = out / ".state" / "params.json"
    recorded = json.loads(params.read_text())
    if params_too:
        assert recorded.pop("model_tensors_sha256") is not None
        params.write_text(json.dumps(recorded))
    for snapshot in (out / ".state").glob("rank*"):
        engine, written, meta = load_snapshot(snapshot)
        meta["params"].pop("model_tensors_sha256")
        save_snapshot(snapshot, engine, written, meta)


def test_a_render_begun_before_tensors_were_recorded_resumes_and_refuses_a_changed_model(tmp_path, capsys):
    """A render folder of an older wavegen (params.json with only model_sha256) is judged by the weights
    file's sha256: a changed model, or another one, is refused; the same model resumes it, and records its
    tensors, so that once best/ is gone the checkpoint holding them is named (before, the rerun said that
    no kept checkpoint held them) and resumes it; the audio is that of a render never stopped."""
    from wavegen.weights_file import tensors_sha256
    from wavegen.render.model_change import model_gone

    model = make_model(tmp_path / "model")
    run, out = make_run(model, tmp_path / "run"), tmp_path / "out"
    written = interrupted(out, run)
    as_an_older_render_wrote_it(out)
    flags = [*map(str, FLAGS)]
    other = make_model(tmp_path / "other", seed=3)
    assert main(["-q", "render", str(other), "--out", str(out), *flags]) == 2
    assert f"but this command renders {other.resolve()} (model_sha256=" in one_error_line(capsys)
    for name in ("model.safetensors", "weights.json"):  # trained further: best/ written again
        shutil.copy(other / name, run / "best")
    assert main(["-q", "render", str(run), "--out", str(out), *flags]) == 2
    assert f"begun from the model in {(run / 'best').resolve()}, which changed since" in one_error_line(capsys)
    for name in ("model.safetensors", "weights.json"):  # the weights it began with, back
        shutil.copy(model / name, run / "best")
    interrupted(out, run, after=written)  # resumed, stopped again
    params = json.loads((out / ".state" / "params.json").read_text())
    assert params["model_tensors_sha256"] == tensors_sha256(model / "model.safetensors")
    as_an_older_render_wrote_it(out, params_too=False)  # as if that session died before its first snapshot
    shutil.rmtree(run / "best")
    assert main(["-q", "render", str(run), "--out", str(out), *flags]) == 0, capsys.readouterr().err
    assert "the kept checkpoint" in capsys.readouterr().err  # resumed with step_5, its tensors recorded
    assert json.loads((out / "render_report.json").read_text())["sessions"] == 3
    assert np.array_equal(read_pcm(out / "stream_000.wav"), direct_pcm(model, 1, round(SECONDS * SR))[0])
    never_resumed = {"model": str((run / "best").resolve()), "model_sha256": params["model_sha256"]}
    assert "holds its weights file byte for byte (the render, begun by an older wavegen" in \
        model_gone(out, run, never_resumed, False)


def _recorded(model_dir: Path) -> dict:
    """What a render (or an archive) records of the model in ``model_dir``: its folder, resolved, and digests."""
    from wavegen.resolve_checkpoints import checkpoint_weights
    from wavegen.weights_file import tensors_sha256

    in_run = model_dir.parent.name == "checkpoints"
    weights = checkpoint_weights(model_dir) if in_run else model_dir / "model.safetensors"
    return {"began": str(model_dir.resolve()), "tensors": tensors_sha256(weights), "sha256": sha256_file(weights)}


def test_the_model_holding_the_weights_a_render_began_with_is_found_where_the_one_named_is_gone(tmp_path):
    """model_change.stand_in, the one way render and serve find the model to go on with: for a best/ gone, the
    newest kept checkpoint with the same tensors; for a checkpoint pruned, that, else the run's best/; nothing
    where no model holds them, where the model named is still there, or is not the one the render began with."""
    from wavegen.render.model_change import stand_in

    model = make_model(tmp_path / "model")
    run = make_run(model, tmp_path / "run")
    checkpoints = run / "checkpoints"
    best, step_5 = _recorded(run / "best"), _recorded(checkpoints / "step_5")
    assert best["tensors"] == step_5["tensors"] and best["sha256"] != step_5["sha256"]  # other writers, other bytes
    for named in (run, run / "best"):
        assert stand_in(named, None, **best) is None  # best/ is there: the named model's own check decides
    assert stand_in(run, "step_5", **step_5) is None
    shutil.rmtree(run / "best")
    for named in (run, run / "best"):
        found = stand_in(named, None, **best)
        assert found.ref.folder == (checkpoints / "step_5").resolve() and found.began == (run / "best").resolve()
        assert found.said("runs/a", "the render in out", "resuming the render") == (
            f"runs/a: {(run / 'best').resolve()}, the model the render in out began with, is gone (deleted, or being "
            f"replaced by a training); the kept checkpoint {(checkpoints / 'step_5').resolve()} holds the weights it "
            "began with, the same tensors: resuming the render with it")
    assert stand_in(tmp_path / "elsewhere", None, **best) is None  # another model named: not this render's
    assert stand_in(run, None, **{**best, "tensors": "0" * 64}) is None  # no kept checkpoint holds those
    shutil.copytree(model, run / "best")
    shutil.copytree(checkpoints / "step_5", checkpoints / "step_9")  # the same weights, kept on
    shutil.rmtree(checkpoints / "step_5")
    found = stand_in(run, "step_5", **step_5)
    assert found.ref.folder == (checkpoints / "step_9").resolve() and "(pruned by a training that went on" in \
        found.said("--checkpoint step_5", "the archive a", "continuing the archive")
    assert stand_in(run, "step_9", **step_5) is None and stand_in(run, "last", **step_5) is None  # named: there
    shutil.rmtree(checkpoints / "step_9")
    found = stand_in(run, "step_5", **step_5)
    assert found.ref.folder == (run / "best").resolve() and found.holder == "the run's best/"
    older = {**step_5, "tensors": None}  # recorded by an older wavegen: the weights file byte for byte, or nothing
    assert stand_in(run, "step_5", **older) is None  # best/'s file has other bytes
    shutil.rmtree(run / "best")
    make_model(run / "best", seed=2)  # trained on: other weights
    assert stand_in(run, "step_5", **step_5) is None


def _kept(run: Path, step: int, seed: int) -> Path:
    """A kept checkpoint step_``step`` of ``run`` holding a model of other weights (``seed``), as a training that
    went on keeps."""
    folder = make_model(run / "checkpoints" / f"step_{step}", seed=seed)
    (folder / "trainer_state.json").write_text(json.dumps({"step": step}))
    return folder


def test_a_gone_models_refusal_names_a_model_to_restart_with_only_where_the_run_has_one(tmp_path):
    """The refusal of a render whose model is gone, no model holding its weights, sends the user to --restart with
    a model that is there: the run's last kept checkpoint (or the newest intact one) where it has one, its best/
    where a checkpoint is gone and best/ is there; nothing named where the run has no model (it said
    '(e.g. --checkpoint last)' of a run with no checkpoint left)."""
    from wavegen.render.model_change import model_gone

    run = make_run(make_model(tmp_path / "model"), tmp_path / "run")
    best, step_5 = _recorded(run / "best"), _recorded(run / "checkpoints" / "step_5")
    from_best = {"model": best["began"], "model_sha256": best["sha256"], "model_tensors_sha256": best["tensors"]}
    from_step_5 = {"model": step_5["began"], "model_sha256": step_5["sha256"],
                   "model_tensors_sha256": step_5["tensors"]}
    shutil.rmtree(run / "best")
    shutil.rmtree(run / "checkpoints" / "step_5")  # no model in the run at all
    ending = "so it cannot be resumed: pass --restart with a model that is there, or choose another --out"
    assert model_gone(tmp_path, run, from_best, False).endswith(f"holds its weights, {ending}")
    assert model_gone(tmp_path, run, from_step_5, False, "step_5").endswith(f"holds its weights, {ending}")
    _kept(run, 3, seed=1)
    step_7 = _kept(run, 7, seed=2)
    there = ", or choose another --out"
    assert model_gone(tmp_path, run, from_best, False).endswith(
        f"pass --restart with a model that is there (e.g. --checkpoint last){there}")
    (step_7 / "model.safetensors").unlink()  # the newest is damaged: last would not render
    assert model_gone(tmp_path, run, from_best, False).endswith(
        f"pass --restart with a model that is there (e.g. --checkpoint step_3){there}")
    assert model_gone(tmp_path, run, from_step_5, False, "step_5").endswith(
        f"pass --restart with a model that is there (e.g. --checkpoint step_3){there}")
    shutil.rmtree(run / "checkpoints")
    make_model(run / "best", seed=4)  # a best/ of other weights, no checkpoint
    assert model_gone(tmp_path, run, from_step_5, False, "step_5").endswith(
        f"pass --restart with a model that is there (e.g. the run's best/, without --checkpoint){there}")
