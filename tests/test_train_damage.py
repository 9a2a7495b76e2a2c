"""Training when its folder is damaged or cannot be written: damaged checkpoints and pruning, a save
cut short, a hand-edited config.json, a folder made read-only, a stop in the middle of a validation,
a removed best/, leftovers of a killed process; and a precision the CPU does not have."""

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_SAMPLERNN
from conftest import tiny_run_config as config_for
from safetensors.torch import load_file

import wavegen.bestmodel
import wavegen.checkpoint
import wavegen.train
from wavegen.cli import main
from wavegen.train import read_metrics, train


def losses(run):
    return [(r["step"], r["loss_bits"]) for r in read_metrics(run) if "loss_bits" in r]


def names(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def same_weights(a, b):
    a, b = load_file(str(a)), load_file(str(b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def cli_train(corpus, run, steps, *settings):
    args = ["-q", "train", "--data", str(corpus), "--model", "samplernn-tiny", "--run", str(run),
            "--max-steps", str(steps), "--threads", "1"]
    return main(args + [a for s in TINY_SAMPLERNN + list(settings) for a in ("--set", s)])


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_damaged_newest_checkpoint_is_moved_aside_and_never_counted_by_pruning(tiny_corpus, tmp_path, caplog):
    """The newest checkpoint damaged, keep_checkpoints=1: training resumed from the one before and wrote
    a new one, then pruning kept only the newest folder (the damaged one) and deleted both intact ones
    (the rerun then had no intact checkpoint). Now the damaged one is moved aside, named in a warning,
    and the one written and the one resumed from stay."""
    common = ["train.val_interval=2", "train.checkpoint_interval=2"]
    train(config_for(tiny_corpus, "train.max_steps=4", *common), tmp_path / "straight", progress=False)
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "straight", run)
    ckpts = run / "checkpoints"
    (ckpts / "step_4" / "optimizer.bin").write_bytes((ckpts / "step_4" / "optimizer.bin").read_bytes()[:100])
    with caplog.at_level(logging.INFO, logger="wavegen"):
        result = train(config_for(tiny_corpus, "train.max_steps=3", *common, "train.keep_checkpoints=1",
                                  "train.checkpoint_interval=1"), run, progress=False)
    assert result["checkpoint"] == str(ckpts / "step_3")
    assert names(ckpts) == ["step_2", "step_3", "step_4.damaged"]
    assert f"checkpoint {ckpts / 'step_4'} is damaged ({ckpts / 'step_4' / 'optimizer.bin'}: 100 bytes" in caplog.text
    assert f"moved aside to {ckpts / 'step_4.damaged'}" in caplog.text
    assert (ckpts / "step_4.damaged" / "optimizer.bin").stat().st_size == 100  # nothing of it deleted
    # the rerun resumes from step_3 and ends as the uninterrupted run; now step_2 is pruned
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wavegen"):
        train(config_for(tiny_corpus, "train.max_steps=4", *common, "train.keep_checkpoints=1"), run, progress=False)
    assert f"resuming {run} from step 3" in caplog.text and "is damaged" not in caplog.text
    assert names(ckpts) == ["step_3", "step_4", "step_4.damaged"]
    assert losses(run) == losses(tmp_path / "straight")
    assert same_weights(ckpts / "step_4" / "model.safetensors",
                        tmp_path / "straight" / "checkpoints" / "step_4" / "model.safetensors")


def test_pruning_keeps_the_newest_intact_checkpoints(tiny_corpus, tmp_path):
    from wavegen.checkpoint import prune_checkpoints

    run = tmp_path / "run"
    train(config_for(tiny_corpus, "train.max_steps=4", "train.checkpoint_interval=1", "train.keep_checkpoints=9",
                     "train.val_interval=4"), run, progress=False)
    ckpts = run / "checkpoints"
    (ckpts / "step_3" / "model.safetensors").write_bytes(b"cut")
    intact = {ckpts / "step_4"}
    prune_checkpoints(run, 2, intact, (ckpts / "step_4",))
    assert names(ckpts) == ["step_2", "step_3.damaged", "step_4"]
    assert intact == {ckpts / "step_2", ckpts / "step_4"}  # each checked once


@pytest.mark.parametrize("edit", ["data is null", "a list"])
def test_a_run_config_of_the_wrong_shape_is_one_line_naming_it(tiny_corpus, tmp_path, capsys, edit):
    run = tmp_path / "run"
    assert cli_train(tiny_corpus, run, 2) == 0
    config = json.loads((run / "config.json").read_text())
    broken = {**config, "data": None} if edit == "data is null" else [config]
    (run / "config.json").write_text(json.dumps(broken))
    capsys.readouterr()
    assert cli_train(tiny_corpus, run, 3) == 2
    assert f"{run / 'config.json'}: not a wavegen model config" in one_line_error(capsys)
    assert [s for s, _ in losses(run)] == [1, 2]


def refuse_new_files_in(monkeypatch, folder):
    """os.open refusing to create a file in ``folder``, as a read-only or `chattr +i` folder does (open
    files there still open): as root, who writes anywhere, only a stand-in shows it."""
    real = os.open

    def fake(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and os.path.dirname(os.fspath(path)) == os.fspath(folder) and not os.path.exists(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake)


def test_a_run_folder_that_cannot_be_written_is_refused_before_the_model_is_built(tiny_corpus, tmp_path, capsys,
                                                                                  monkeypatch):
    """It was a PermissionError traceback after the model was built (RUN), or after every step had
    trained (RUN/checkpoints only: the steps were lost)."""
    run = tmp_path / "run"
    assert cli_train(tiny_corpus, run, 2) == 0
    def build_training(*args):
        raise AssertionError("the model was built before the folder was found unwritable")

    monkeypatch.setattr(wavegen.train, "build_training", build_training)
    for folder in (run, run / "checkpoints"):
        with monkeypatch.context() as patch:
            refuse_new_files_in(patch, folder)
            capsys.readouterr()
            assert cli_train(tiny_corpus, run, 4) == 2
        assert one_line_error(capsys).endswith(f"error: {folder}: cannot write in this folder (Permission denied): "
                                               "make it writable, or give another --run folder")
    if os.geteuid() != 0:  # a real read-only folder (root writes anywhere)
        os.chmod(run / "checkpoints", 0o555)
        try:
            assert cli_train(tiny_corpus, run, 4) == 2
        finally:
            os.chmod(run / "checkpoints", 0o755)
        assert "cannot write in this folder" in one_line_error(capsys)
    assert [s for s, _ in losses(run)] == [1, 2]


def test_a_checkpoint_that_cannot_be_written_stops_in_one_line_naming_the_intact_one(tiny_corpus, tmp_path, capsys,
                                                                                    monkeypatch):
    """A disk that fills up mid-run: the failed save was a traceback from deep in the checkpoint code."""
    run = tmp_path / "run"
    real = wavegen.checkpoint.write_json

    def full_at_step_4(path, data, *args, **kwargs):
        if Path(path).parent.name == ".tmp_step_4":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data, *args, **kwargs)

    settings = ["train.checkpoint_interval=2", "train.val_interval=100"]
    with monkeypatch.context() as patch:
        patch.setattr(wavegen.checkpoint, "write_json", full_at_step_4)
        capsys.readouterr()
        assert cli_train(tiny_corpus, run, 6, *settings) == 2
    ckpts = run / "checkpoints"
    assert one_line_error(capsys).endswith(
        f"error: cannot write the checkpoint of step 4 in {ckpts}: {ckpts / '.tmp_step_4' / 'trainer_state.json'}: "
        f"No space left on device; training stopped and the last intact checkpoint, {ckpts / 'step_2'}, is kept (a "
        "rerun resumes from it): free some space or make the folder writable, then rerun")
    assert names(ckpts) == ["step_2"]  # the unfinished folder is gone
    assert cli_train(tiny_corpus, run, 6, *settings) == 0
    assert names(ckpts) == ["step_2", "step_4", "step_6"] and [s for s, _ in losses(run)] == list(range(1, 7))


def test_a_stop_during_validation_at_a_checkpoint_step_saves_it_once(tiny_corpus, tmp_path, monkeypatch, caplog):
    """The signal came after the step's stop check: the checkpoint step saved, then the stopped batch
    building saved the same step again (through replace_dir's step_N.old, which no reader used)."""
    real = wavegen.train._validate

    def validate_then_stop(run):
        real(run)
        if run.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    run = tmp_path / "run"
    config = config_for(tiny_corpus, "train.max_steps=6", "train.val_interval=2", "train.checkpoint_interval=2")
    with monkeypatch.context() as patch, caplog.at_level(logging.INFO, logger="wavegen"):
        patch.setattr(wavegen.train, "_validate", validate_then_stop)
        result = train(config, run, progress=False)
    assert result["status"] == "interrupted" and result["step"] == 2
    assert caplog.text.count("checkpoint saved:") == 1
    # a kill -9 between replace_dir's renames left only step_2.old and .tmp_step_2: a rerun resumes from
    # step 2 (it began again at step 0, without a word), and tidies up
    ckpts = run / "checkpoints"
    shutil.copytree(ckpts / "step_2", ckpts / ".tmp_step_2")
    (ckpts / "step_2").rename(ckpts / "step_2.old")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wavegen"):
        assert train(config_for(tiny_corpus, "train.max_steps=4", "train.val_interval=2",
                                "train.checkpoint_interval=2"), run, progress=False)["step"] == 4
    assert f"resuming {run} from step 2" in caplog.text
    assert f"{ckpts / 'step_2'} was missing (a save cut short): restored it from {ckpts / 'step_2.old'}" in caplog.text
    assert names(ckpts) == ["step_2", "step_4"]


def test_a_removed_best_comes_back_from_the_checkpoint_that_scored_it(tiny_corpus, tmp_path, caplog, monkeypatch):
    """rm -rf RUN/best: the rerun said "no best/ model yet (no validation has run)" though validations ran,
    and best/ came back only when a later validation beat the recorded best."""
    run = tmp_path / "run"
    config = config_for(tiny_corpus, "train.max_steps=4", "train.val_interval=2", "train.checkpoint_interval=2")
    train(config, run, progress=False)
    shutil.copytree(run / "best", tmp_path / "best")
    shutil.rmtree(run / "best")
    step, bits = next((r["step"], r["val_bits"]) for r in reversed(read_metrics(run)) if r.get("best"))
    with caplog.at_level(logging.INFO, logger="wavegen"):
        assert train(config, run, progress=False)["best_val_bits"] == bits
    assert f"{run / 'best'} was missing: restored from checkpoints/step_{step}" in caplog.text
    assert f"best model (validation {bits:.4f} bits/sample) in {run / 'best'}" in caplog.text
    assert same_weights(run / "best" / "model.safetensors", tmp_path / "best" / "model.safetensors")
    assert (run / "best" / "album.json").read_text() == (tmp_path / "best" / "album.json").read_text()
    # the checkpoint that scored best no longer kept: best/ cannot come back, and the run says so
    shutil.rmtree(run / "best")
    gone = tmp_path / f"step_{step}"
    shutil.move(run / "checkpoints" / f"step_{step}", gone)
    from wavegen.bestmodel import restore_best

    assert not restore_best(run, config, bits, 4)
    shutil.move(gone, run / "checkpoints" / f"step_{step}")
    monkeypatch.setattr(wavegen.bestmodel, "restore_best", lambda *args: False)  # as when not kept (step 4 is)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wavegen"):
        train(config, run, progress=False)
    assert "no validation has run" not in caplog.text
    assert f"{run / 'best'} is missing, though validations ran (the best scored {bits:.4f} bits/sample" in caplog.text


def test_a_checkpoint_that_records_an_older_best_does_not_cost_the_best_model(tiny_corpus, tmp_path):
    """An older wavegen wrote the last step's checkpoint before that step's validation: it records the
    best before it, and a run resumed from it replaced best/ with a worse model. metrics.jsonl's best
    up to the checkpoint's step counts too. (A learning rate too small to move a weight: every
    validation scores the same, so none after the first is better.)"""
    run = tmp_path / "run"
    settings = ("train.val_interval=2", "train.checkpoint_interval=2", "train.lr=1e-30")
    train(config_for(tiny_corpus, "train.max_steps=4", *settings), run, progress=False)
    (step, bits), = [(r["step"], r["val_bits"]) for r in read_metrics(run) if r.get("best")]
    assert step == 2
    state_path = run / "checkpoints" / "step_4" / "trainer_state.json"
    state = json.loads(state_path.read_text())
    state["best_val_bits"] = None  # as if no validation had run before the checkpoint (this step's came after)
    state_path.write_text(json.dumps(state))
    shutil.copytree(run / "best", tmp_path / "best")
    assert train(config_for(tiny_corpus, "train.max_steps=6", *settings), run, progress=False)["best_val_bits"] == bits
    rows = [r for r in read_metrics(run) if "val_bits" in r]
    assert [r["step"] for r in rows] == [2, 4, 6] and rows[-1]["val_bits"] == bits
    assert not rows[-1]["best"]  # it was marked best, and written over best/
    assert same_weights(run / "best" / "model.safetensors", tmp_path / "best" / "model.safetensors")


def test_leftovers_of_a_killed_process_are_removed_at_the_next_start(tiny_corpus, tmp_path, caplog):
    """A kill -9 while best/ was written left RUN/best.tmpPID/ forever (a save removed only its own pid's)."""
    run = tmp_path / "run"
    config = config_for(tiny_corpus, "train.max_steps=2", "train.val_interval=2")
    train(config, run, progress=False)
    for leftover in (run / "best.tmp4242", run / "checkpoints" / ".tmp_step_7"):
        leftover.mkdir()
        (leftover / "model.safetensors").write_bytes(b"half")
    with caplog.at_level(logging.INFO, logger="wavegen"):
        train(config_for(tiny_corpus, "train.max_steps=3", "train.val_interval=2"), run, progress=False)
    assert names(run / "checkpoints") == ["step_2", "step_3"] and not (run / "best.tmp4242").exists()
    assert f"removed {run / 'best.tmp4242'}, left unfinished" in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 autocast works on a CUDA GPU")
def test_fp16_on_a_cpu_is_named_as_having_no_effect(tiny_corpus, tmp_path):
    """accelerate keeps fp16 autocast at float32 on a CPU: the run trained in fp32 without a word. (A process
    of its own: the CLI, its warning on stderr.)"""
    cmd = [sys.executable, "-m", "wavegen", "train", "--data", str(tiny_corpus), "--model", "samplernn-tiny", "--run",
           str(tmp_path / "run"), "--max-steps", "1", "--threads", "1"]
    cmd += [a for s in TINY_SAMPLERNN + ["train.mixed_precision=fp16"] for a in ("--set", s)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "train.mixed_precision=fp16: fp16 autocast has no effect on a CPU, so this run trains in fp32; bf16 is " \
           "the CPU's half precision" in done.stderr


def test_the_last_checkpoint_records_the_last_validation(tiny_corpus, tmp_path, caplog):
    """max_steps a checkpoint step but not a validation step: the checkpoint was written before the final
    validation and kept the earlier best (none here), so a removed best/ never came back and a longer run
    replaced best/ with its next validation whatever it scored."""
    run = tmp_path / "run"
    config = config_for(tiny_corpus, "train.max_steps=4", "train.val_interval=1000", "train.checkpoint_interval=2")
    train(config, run, progress=False)
    bits = next(r["val_bits"] for r in read_metrics(run) if r.get("best"))
    state = json.loads((run / "checkpoints" / "step_4" / "trainer_state.json").read_text())
    assert state["best_val_bits"] == bits
    shutil.rmtree(run / "best")
    with caplog.at_level(logging.INFO, logger="wavegen"):
        assert train(config, run, progress=False)["best_val_bits"] == bits
    assert f"{run / 'best'} was missing: restored from checkpoints/step_4" in caplog.text


@pytest.mark.parametrize("disk_free", [0, 10 << 30], ids=["full-disk", "disk-not-full"])
def test_torch_failing_to_write_a_checkpoint_stops_in_one_line_and_leaves_no_unfinished_folder(
        tiny_corpus, tmp_path, capsys, monkeypatch, disk_free):
    """A full disk during accelerate's save_state: torch.save raised its own RuntimeError (not an
    OSError), a traceback (exit 1) that left checkpoints/.tmp_step_N on the full disk. torch.save is
    made to fail as it does on a full disk (the real error, after writing part of the file)."""
    run = tmp_path / "run"
    real_save, real_usage = torch.save, shutil.disk_usage

    def full_at_step_4(obj, f, *args, **kwargs):
        if ".tmp_step_4" in str(f):
            Path(f).write_bytes(b"\0" * 1000)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 225408 vs 225296")
        return real_save(obj, f, *args, **kwargs)

    def usage(path):
        return real_usage(path)._replace(free=disk_free) if ".tmp_step_4" in str(path) else real_usage(path)

    settings = ["train.checkpoint_interval=2", "train.val_interval=100"]
    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", full_at_step_4)
        patch.setattr(shutil, "disk_usage", usage)
        capsys.readouterr()
        assert cli_train(tiny_corpus, run, 6, *settings) == 2
    ckpts = run / "checkpoints"
    reason = ("No space left on device" if disk_free == 0 else
              "writing failed ([enforce fail at inline_container.cc:672] . unexpected pos 225408 vs 225296)")
    assert one_line_error(capsys).endswith(
        f"error: cannot write the checkpoint of step 4 in {ckpts}: {ckpts / '.tmp_step_4'}: {reason}; training "
        f"stopped and the last intact checkpoint, {ckpts / 'step_2'}, is kept (a rerun resumes from it): free some "
        "space or make the folder writable, then rerun")
    assert names(ckpts) == ["step_2"]  # the unfinished folder is gone
    assert wavegen.checkpoint.checkpoint_damage(ckpts / "step_2") is None
    assert cli_train(tiny_corpus, run, 6, *settings) == 0
    assert names(ckpts) == ["step_2", "step_4", "step_6"] and [s for s, _ in losses(run)] == list(range(1, 7))


def test_an_error_of_torch_that_is_not_a_failed_write_keeps_its_traceback(tiny_corpus, tmp_path, monkeypatch):
    def broken(obj, f, *args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        train(config_for(tiny_corpus, "train.max_steps=2", "train.checkpoint_interval=2"), tmp_path / "run",
              progress=False)


@pytest.mark.parametrize("damage", ["tb-a-file", "metrics-a-folder"])
def test_a_log_path_of_the_wrong_kind_is_one_line_naming_it_before_the_model_is_built(tiny_corpus, tmp_path, capsys,
                                                                                     monkeypatch, damage):
    """RUN/tb a file was FileExistsError from SummaryWriter, RUN/metrics.jsonl a folder IsADirectoryError:
    tracebacks after the model was built."""
    run = tmp_path / "run"
    assert cli_train(tiny_corpus, run, 2) == 0
    path = run / ("tb" if damage == "tb-a-file" else "metrics.jsonl")
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    path.write_text("x") if damage == "tb-a-file" else path.mkdir()

    def build_training(*args):
        raise AssertionError("the model was built before the damaged log path was found")

    with monkeypatch.context() as patch:
        patch.setattr(wavegen.train, "build_training", build_training)
        capsys.readouterr()
        assert cli_train(tiny_corpus, run, 4) == 2
    kind = "a folder (the run's TensorBoard logs)" if damage == "tb-a-file" else "a file (the run's metrics log)"
    assert f"error: {path}: not {kind}: move it away" in one_line_error(capsys)
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert cli_train(tiny_corpus, run, 4) == 0


def test_a_resumed_run_validating_again_the_step_best_holds_marks_it_best(tiny_corpus, tmp_path, caplog):
    """A session stopped after step 4's validation (the best) and before its checkpoint: the resumed run
    trained steps 3 and 4 again, bit for bit, scored exactly the same and wrote "best": false (a tie is no
    improvement), so metrics.jsonl named step 2 the best while best/ held step 4's model, and a best/
    removed then never came back. (A tie at another step is still no improvement: the test above.)"""
    run = tmp_path / "run"
    config = config_for(tiny_corpus, "train.max_steps=4", "train.val_interval=2", "train.checkpoint_interval=2")
    train(config, run, progress=False)
    scored = [r for r in read_metrics(run) if "val_bits" in r]
    assert [(r["step"], r["best"]) for r in scored] == [(2, True), (4, True)]
    shutil.copytree(run / "best", tmp_path / "best")
    shutil.rmtree(run / "checkpoints" / "step_4")  # stopped before step 4's checkpoint
    with caplog.at_level(logging.INFO, logger="wavegen"):
        assert train(config, run, progress=False)["best_val_bits"] == scored[1]["val_bits"]
    assert [r for r in read_metrics(run) if "val_bits" in r] == scored
    assert f"step 4: validation {scored[1]['val_bits']:.4f} bits/sample (best)" in caplog.text
    assert same_weights(run / "best" / "model.safetensors", tmp_path / "best" / "model.safetensors")
    shutil.rmtree(run / "best")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wavegen"):
        train(config, run, progress=False)
    assert f"{run / 'best'} was missing: restored from checkpoints/step_4" in caplog.text
    assert same_weights(run / "best" / "model.safetensors", tmp_path / "best" / "model.safetensors")


def test_a_run_without_best_as_model_names_its_config_json_which_then_trains(tiny_corpus, tmp_path, capsys):
    """train --model RUN where RUN has checkpoints but no best/ (none yet, or removed): the refusal said
    "use --checkpoint last", an option train has not; it names RUN/config.json, which gives its settings."""
    first = tmp_path / "first"
    assert cli_train(tiny_corpus, first, 2, "train.checkpoint_interval=2") == 0
    shutil.rmtree(first / "best")  # as before the first validation, or removed
    capsys.readouterr()
    args = ["-q", "train", "--data", str(tiny_corpus), "--run", str(tmp_path / "second"), "--max-steps", "1",
            "--threads", "1", "--model"]
    assert main(args + [str(first)]) == 2
    err = one_line_error(capsys)
    assert f"{first}: this run has no best/ model to take the settings of; give its {first / 'config.json'}" in err
    assert "--checkpoint" not in err
    assert main(args + [str(first / "config.json")]) == 0
    assert json.loads((tmp_path / "second" / "config.json").read_text())["model"] == \
        json.loads((first / "config.json").read_text())["model"]


def test_a_best_save_cut_short_between_its_renames_is_put_back_by_the_next_train(tiny_corpus, tmp_path, caplog):
    """Killed between fileio.replace_dir's renames, a run holds best.old/ and no best/. The next train (here: a
    finished run, nothing to train) puts it back as best/, said, and its last line names best/, not "best is
    missing ... cannot be restored"."""
    run = tmp_path / "run"
    assert cli_train(tiny_corpus, run, 2, "train.val_interval=2", "train.checkpoint_interval=2") == 0
    (run / "best").rename(run / "best.old")
    before = (run / "best.old" / "model.safetensors").read_bytes()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wavegen"):
        assert main(["-q", "train", "--data", str(tiny_corpus), "--model", "samplernn-tiny", "--run", str(run),
                     "--max-steps", "2", "--threads", "1"] +
                    [a for s in TINY_SAMPLERNN + ["train.val_interval=2", "train.checkpoint_interval=2"]
                     for a in ("--set", s)]) == 0
    err = caplog.text
    assert "missing" in err and f"restored it from {run / 'best.old'}" in err, err
    assert "best model (validation" in err and "cannot be restored" not in err, err
    assert (run / "best" / "model.safetensors").read_bytes() == before and not (run / "best.old").exists()


def test_a_best_past_a_damaged_checkpoint_is_not_said_to_be_a_stopped_sessions(tiny_corpus, tmp_path, caplog):
    """The newest checkpoint damaged (saved whole by a session that ran to its end) and moved aside on resume: the
    best/ it scored stays, but was said to be "written by a session stopped before its next checkpoint", and its
    training samples cleared as "a session stopped before its checkpoint": neither true of a checkpoint written and
    then damaged or removed by hand. Both now name that cause too."""
    common = ["train.val_interval=2", "train.checkpoint_interval=2", "train.sample_interval=2",
              "train.sample_seconds=0.05", "train.sample_streams=1"]
    run = tmp_path / "run"
    train(config_for(tiny_corpus, "train.max_steps=4", *common), run, progress=False)
    best = [r for r in read_metrics(run) if r.get("best")]
    assert best[-1]["step"] == 4 and (run / "samples" / "step_4").is_dir()
    (run / "checkpoints" / "step_4" / "optimizer.bin").write_bytes(b"cut")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wavegen"):
        train(config_for(tiny_corpus, "train.max_steps=2", *common), run, progress=False)
    assert f"resuming {run} from step 2" in caplog.text and "stopped before its next checkpoint;" not in caplog.text
    assert (f"{run / 'best'} holds the model of step 4 (validation {best[-1]['val_bits']:.4f} bits/sample), past "
            "step 2, the checkpoint the run resumes from (a session stopped before its next checkpoint, or a later "
            "one was removed or found damaged)") in caplog.text
    assert ("cleared the samples of 1 step past step 2 (of a session stopped before its checkpoint, or of a "
            "later checkpoint removed or found damaged, whose weights are gone)") in caplog.text


def test_a_run_whose_checkpoints_were_removed_says_it_starts_again_and_keeps_its_best(tiny_corpus, tmp_path, caplog):
    """checkpoints/ deleted by hand (to free the disk) and the command rerun to train on: the run started again
    from step 0 in silence, and its first validation replaced the best/ of the steps trained before (a worse
    model, its score no bar). Now the start again is said, and best/ stays until a validation beats it."""
    common = ["train.val_interval=2", "train.checkpoint_interval=2"]
    run = tmp_path / "run"
    train(config_for(tiny_corpus, "train.max_steps=6", *common), run, progress=False)
    best = [r for r in read_metrics(run) if r.get("best")][-1]
    kept = (run / "best" / "model.safetensors").read_bytes()
    shutil.rmtree(run / "checkpoints")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wavegen"):
        result = train(config_for(tiny_corpus, "train.max_steps=2", *common), run, progress=False)
    assert (f"{run}: no intact checkpoint to resume from, though its metrics.jsonl records training to step 6: "
            "the run trains again from step 0") in caplog.text
    assert (f"{run / 'best'} holds the model of step {best['step']} (validation {best['val_bits']:.4f} bits/sample), "
            "trained before the run started again from step 0") in caplog.text
    assert [r["val_bits"] for r in read_metrics(run) if "val_bits" in r][0] > best["val_bits"]  # not beaten
    assert (run / "best" / "model.safetensors").read_bytes() == kept and result["best_val_bits"] == best["val_bits"]


def test_a_kept_best_survives_its_checkpoints_removed_again(tiny_corpus, tmp_path, caplog):
    """The best/ kept by a start again (its checkpoints removed) lost its score there: metrics.jsonl was cut back to
    step 0, so when the new start's checkpoints went too (or it was killed before its first row), the next start
    found no row that scored best/ and replaced it in silence with a worse model. best/ now records its own score
    (weights.json), which a start again keeps as the one to beat."""
    common = ["train.val_interval=2", "train.checkpoint_interval=2"]
    run = tmp_path / "run"
    train(config_for(tiny_corpus, "train.max_steps=6", *common), run, progress=False)
    best = [r for r in read_metrics(run) if r.get("best")][-1]
    kept = (run / "best" / "model.safetensors").read_bytes()
    keep = (f"{run / 'best'} holds the model of step {best['step']} (validation {best['val_bits']:.4f} bits/sample), "
            "trained before the run started again from step 0")
    # removed once (the start again keeps best/), again (the first start's rows are gone now), and with every row
    # (a start killed before its first row)
    for cut in ("checkpoints", "checkpoints again", "checkpoints and every row"):
        shutil.rmtree(run / "checkpoints")
        if cut.endswith("row"):
            (run / "metrics.jsonl").write_text("")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="wavegen"):
            result = train(config_for(tiny_corpus, "train.max_steps=2", *common), run, progress=False)
        assert keep in caplog.text, (cut, caplog.text)
        assert [r["val_bits"] for r in read_metrics(run) if "val_bits" in r][0] > best["val_bits"]  # not beaten
        assert (run / "best" / "model.safetensors").read_bytes() == kept, cut
        assert result["best_val_bits"] == best["val_bits"], cut


def test_a_best_of_another_config_is_not_kept_by_its_start_again(tiny_corpus, tmp_path, caplog, monkeypatch):
    """Another config over a run whose checkpoints were removed starts anew; killed before its first validation and
    started again, it found its own config.json and the old run's best/ (its score recorded beside its weights),
    and kept that model of the other config as its best until beaten. best/'s record counts only where its own
    config.json would resume the run."""
    common = ["train.val_interval=2", "train.checkpoint_interval=2"]
    run = tmp_path / "run"
    train(config_for(tiny_corpus, "train.max_steps=6", *common), run, progress=False)
    shutil.rmtree(run / "checkpoints")
    other = config_for(tiny_corpus, "train.max_steps=2", "model.dim=16", *common)

    def killed(*args, **kwargs):  # the other config's first start dies in its first step
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(wavegen.train, "train_step", killed)
        with pytest.raises(KeyboardInterrupt):
            train(other, run, progress=False)
    assert json.loads((run / "best" / "config.json").read_text())["model"]["dim"] == 32  # the old run's, still
    with caplog.at_level(logging.INFO, logger="wavegen"):
        result = train(other, run, progress=False)
    assert "holds the model of step" not in caplog.text
    assert json.loads((run / "best" / "config.json").read_text())["model"]["dim"] == 16
    assert result["best_val_bits"] == [r for r in read_metrics(run) if r.get("best")][-1]["val_bits"]
