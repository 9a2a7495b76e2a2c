"""The run's logs for people: each step once in TensorBoard after a resume; closed when the training
fails to start its steps (its batch stream; samples that cannot start warn instead, tests/test_samples.py)."""

import os
from pathlib import Path

import pytest
from conftest import tiny_run_config as config_for

import wavegen.train
from wavegen.runlog import RunLog
from wavegen.train import read_metrics, train


class Crash(Exception):
    """Stands for a kill -9: the process ends after logging, before the step's checkpoint."""


def tensorboard_steps(run, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run / "tb"))
    board.Reload()
    return [event.step for event in board.Scalars(tag)]


def test_a_resumed_run_shows_each_step_once_in_tensorboard(tiny_corpus, tmp_path, monkeypatch):
    """Steps logged after the last checkpoint were logged again on resume, and TensorBoard showed
    both (..., 4, 5, 5, 6) where metrics.jsonl, truncated to the checkpoint, showed each once."""
    run = tmp_path / "run"
    settings = ["train.checkpoint_interval=2", "train.val_interval=5", "train.log_interval=1"]
    real = wavegen.train._validate

    def crash_at_5(state):
        if state.step == 5:
            raise Crash()
        return real(state)

    with monkeypatch.context() as patch:
        patch.setattr(wavegen.train, "_validate", crash_at_5)
        with pytest.raises(Crash):
            train(config_for(tiny_corpus, "train.max_steps=8", *settings), run, progress=False)
    assert tensorboard_steps(run, "train/loss_bits") == [1, 2, 3, 4, 5]
    train(config_for(tiny_corpus, "train.max_steps=8", *settings), run, progress=False)
    assert [r["step"] for r in read_metrics(run) if "loss_bits" in r] == list(range(1, 9))
    assert tensorboard_steps(run, "train/loss_bits") == list(range(1, 9))
    assert tensorboard_steps(run, "val/nll_bits") == [5, 8]


def open_files_under(folder) -> list[str]:
    """The files under ``folder`` this process holds open (its /proc/self/fd links)."""
    fds = Path("/proc/self/fd")
    held = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # the descriptor closed while listed (iterdir's own)
            continue
        if target.startswith(f"{folder}/"):
            held.append(target)
    return sorted(held)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads the open files in /proc/self/fd")
def test_the_logs_of_a_training_whose_batch_stream_fails_to_start_are_closed(tiny_corpus, tmp_path, monkeypatch):
    """The logs are opened before the batch stream; when it failed to start (here its threads cannot start, as
    in a process at its thread limit), the error reached the caller with metrics.jsonl and TensorBoard's event
    file left open (and TensorBoard's writer thread running), in this process for good (a notebook, or a second
    train())."""
    def no_threads(*args, **kwargs):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(wavegen.train, "BatchStream", no_threads)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError) as raised:
        train(config_for(tiny_corpus, "train.max_steps=2", "train.num_workers=2"), run, progress=False)
    assert str(raised.value) == "can't start new thread"
    assert (run / "metrics.jsonl").is_file() and list((run / "tb").glob("events.*"))  # the logs were opened
    assert open_files_under(run) == []  # and closed, while the error (its frames hold the run) is still alive


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads the open files in /proc/self/fd")
def test_the_metrics_file_is_closed_when_tensorboard_cannot_start(tmp_path):
    # RUN/tb taken by a file (train checks it first, runlog.check_log_paths; here it appears after): RunLog opened
    # metrics.jsonl, then TensorBoard's writer failed, and the file stayed open
    (tmp_path / "tb").write_text("not a folder")
    with pytest.raises(OSError) as raised:
        RunLog(tmp_path, 0, 10, True, False)
    assert f"{tmp_path / 'tb'}" in str(raised.value) and (tmp_path / "metrics.jsonl").is_file()
    assert open_files_under(tmp_path) == []  # while the error (and the half-made RunLog it holds) is alive


def test_logs_closed_in_any_order_leave_other_threads_errors_said(tmp_path, monkeypatch):
    """A RunLog hides its own TensorBoard writer thread's OSError (its one line comes from the writer's next call):
    two RunLogs closed in the order they opened left the first one's hook installed for good, and it hid the
    OSError of any thread of that class, another SummaryWriter's included."""
    import threading

    said = []
    monkeypatch.setattr(threading, "excepthook", lambda args: said.append(args.exc_value))  # the process's hook
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    first, second = (RunLog(tmp_path / name, 0, 2, True, False) for name in ("a", "b"))
    first.close()
    second.close()

    class _AsyncWriterThread(threading.Thread):  # another writer's thread, of the class name TensorBoard gives it
        def run(self):
            raise OSError(28, "No space left on device")

    thread = _AsyncWriterThread()
    thread.start()
    thread.join()
    assert [str(e) for e in said] == ["[Errno 28] No space left on device"]
