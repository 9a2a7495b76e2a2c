"""A best/ album.json that is not UTF-8, or that could not be read at all, kept as the load read it with the weights
(ModelRef.read_beside: the bytes, or the error met; a FIFO not opened): judged as a read of the file judges it, whether
or not the model was loaded first, and not read a second time. RUN/album.json no regular file: refused by training's
write alone."""

from __future__ import annotations

import logging

from test_resolve_race import _album, _run

from wavegen.render.guard import GuardCriteria, criteria_for
from wavegen.resolve import resolve_model


def test_a_utf16_album_is_refused_after_the_load_as_without_it(tmp_path, caplog):
    """album.json written as UTF-16 (a text editor's "Unicode"): read from disk it is not text (ignored, fixed
    thresholds); the bytes the load kept went to json.loads, which takes UTF-16, so a render (which loads first) was
    judged by a profile every other reader refuses. Both now refuse it, naming the byte."""
    run = _run(tmp_path)
    (run / "best" / "album.json").write_text(_album(220), encoding="utf-16")
    caplog.set_level(logging.WARNING)
    unloaded = criteria_for(GuardCriteria(), resolve_model(run))
    loaded_ref = resolve_model(run)
    loaded_ref.load("cpu")
    assert isinstance(loaded_ref.read_beside["album.json"], bytes)
    loaded = criteria_for(GuardCriteria(), loaded_ref)
    assert unloaded == loaded == GuardCriteria(), (unloaded, loaded)
    said = [r.getMessage() for r in caplog.records if "album.json" in r.getMessage()]
    assert len(said) == 2 and all("can't decode byte 0xff" in line and "fixed thresholds" in line for line in said), said


def test_an_album_the_load_could_not_read_is_judged_by_that_read_not_read_again(tmp_path, caplog):
    """A folder at best/album.json when the model was loaded (its read met IsADirectoryError), a profile written at
    that name before the guard looked: the load had left the album out of what it read, so the guard read the file
    again and judged model A by a profile the load never saw. The error the load met is the verdict: the fixed
    thresholds, one warning naming the file and the error; and without the load, the folder is named the same way
    (it was skipped in silence)."""
    import shutil

    run = _run(tmp_path)
    (run / "best" / "album.json").mkdir()
    caplog.set_level(logging.WARNING)
    unloaded = criteria_for(GuardCriteria(), resolve_model(run))
    loaded_ref = resolve_model(run)
    loaded_ref.load("cpu")
    shutil.rmtree(run / "best" / "album.json")
    (run / "best" / "album.json").write_text(_album(220))  # readable now: not the file the load met
    loaded = criteria_for(GuardCriteria(), loaded_ref)
    assert unloaded == loaded == GuardCriteria(), (unloaded, loaded)
    said = [r.getMessage() for r in caplog.records if "album.json" in r.getMessage()]
    assert len(said) == 2 and all(line.startswith(f"{run / 'best' / 'album.json'}: ignored (Is a directory)")
                                  for line in said), said


def test_an_album_the_load_was_refused_is_not_read_again(tmp_path, caplog, monkeypatch):
    """best/album.json refused to the load (permission denied: root is not refused, so every read of it is made to
    raise it): the guard read it again and met the same error a second time. One read, one warning naming it."""
    import errno
    from pathlib import Path

    run = _run(tmp_path)
    (run / "best" / "album.json").write_text(_album(220))
    album_reads = []

    def refused(real):
        def read(self, *args, **kwargs):
            if self.name == "album.json":
                album_reads.append(self)
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real(self, *args, **kwargs)
        return read

    monkeypatch.setattr(Path, "read_bytes", refused(Path.read_bytes))
    monkeypatch.setattr(Path, "read_text", refused(Path.read_text))
    caplog.set_level(logging.WARNING)
    ref = resolve_model(run)
    ref.load("cpu")
    assert criteria_for(GuardCriteria(), ref) == GuardCriteria()
    assert album_reads == [run / "best" / "album.json"], album_reads
    said = [r.getMessage() for r in caplog.records if "album.json" in r.getMessage()]
    assert said == [f"{run / 'best' / 'album.json'}: ignored (Permission denied); the guard uses its fixed "
                    "thresholds"], said


def test_a_fifo_at_the_albums_name_is_named_not_opened(tmp_path, caplog):
    """A FIFO at best/album.json: the load's read of it (and, without a load, the guard's) opened it and waited for a
    writer, for ever: a render or a station that never started. It is named, not opened, loaded or not."""
    import os
    import threading
    import time

    run = _run(tmp_path)
    fifo = run / "best" / "album.json"
    os.mkfifo(fifo)
    caplog.set_level(logging.WARNING)
    judged = {}

    def judge():
        loaded_ref = resolve_model(run)
        loaded_ref.load("cpu")
        judged["loaded"] = criteria_for(GuardCriteria(), loaded_ref)
        judged["unloaded"] = criteria_for(GuardCriteria(), resolve_model(run))

    worker = threading.Thread(target=judge, daemon=True)
    worker.start()
    worker.join(60)
    opened = worker.is_alive()
    deadline = time.monotonic() + 30
    while worker.is_alive() and time.monotonic() < deadline:  # a read waiting for a writer: given end of file
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader waits (yet)
            pass
        time.sleep(0.05)
    assert not opened, "the FIFO at best/album.json was opened: its read waited for a writer"
    assert judged == {"loaded": GuardCriteria(), "unloaded": GuardCriteria()}, judged
    said = [r.getMessage() for r in caplog.records if "album.json" in r.getMessage()]
    assert len(said) == 2 and all(line.startswith(f"{fifo}: ignored (a FIFO, not a regular file)") for line in said), \
        said


def test_a_folder_or_fifo_at_the_runs_album_name_is_refused_by_the_write_alone(tiny_corpus, tmp_path, caplog):
    """A folder or a FIFO at RUN/album.json when training starts: read as a profile (f472051, ef113bf) it was said
    "ignored (...); the guard uses its fixed thresholds" before the write refused it and the training stopped: two
    lines, the first false. It is not read: the write's refusal names it, in one line, and nothing else is said."""
    import os
    import re

    import pytest

    from wavegen.corpus import Corpus
    from wavegen.fileio import NotAFileError
    from wavegen.render.album import ensure_run_profile

    config = {"model": {"q_levels": 256, "quantization": "mu-law"}, "data": {"corpus": str(tiny_corpus)}}
    caplog.set_level(logging.INFO)
    for kind, make in (("folder", os.mkdir), ("FIFO", os.mkfifo)):
        run = tmp_path / kind
        run.mkdir()
        make(run / "album.json")
        caplog.clear()
        refused = "^" + re.escape(f"{run / 'album.json'}: is a {kind}, not a regular file; nothing was written")
        with pytest.raises(NotAFileError, match=refused):
            ensure_run_profile(run, config, Corpus(tiny_corpus))
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert said == [], (kind, said)



def test_a_damaged_runs_album_is_said_measured_again_not_left_to_the_guards_thresholds(tiny_corpus, tmp_path, caplog):
    """A damaged RUN/album.json (cut short, UTF-16) when training starts is measured again from the training split and
    written over; its warning said "the guard uses its fixed thresholds", which the training then made untrue."""
    import json

    from wavegen.corpus import Corpus
    from wavegen.render.album import ensure_run_profile, measures_everything

    config = {"model": {"q_levels": 256, "quantization": "mu-law"}, "data": {"corpus": str(tiny_corpus)}}
    caplog.set_level(logging.WARNING)
    for name, damaged in (("cut short", b'{"version": '), ("UTF-16", _album(220).encode("utf-16"))):
        run = tmp_path / name
        run.mkdir()
        (run / "album.json").write_bytes(damaged)
        caplog.clear()
        profile = ensure_run_profile(run, config, Corpus(tiny_corpus))
        assert measures_everything(profile) and json.loads((run / "album.json").read_text()) == profile, name
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and said[0].startswith(f"{run / 'album.json'}: ignored (") and \
            said[0].endswith("; measured again from the training split"), (name, said)

def test_a_stop_met_while_the_next_batches_are_built_is_judged(tiny_corpus, tmp_path, caplog, monkeypatch):
    """A SIGTERM during step 8's validation (its stop flag read before it, so step 8 goes on): met while the batches of
    step 9 are built (train's BatchBuildingStopped branch, a single process), the 8 steps since the last row (none:
    one every 1000) are judged there, once, naming step 8."""
    import os
    import signal

    import wavegen.train
    from conftest import tiny_run_config

    real = wavegen.train._validate

    def validate(run):
        real(run)
        if run.step == 8:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(wavegen.train, "_validate", validate)
    caplog.set_level(logging.WARNING)
    result = wavegen.train.train(tiny_run_config(tiny_corpus, "train.lr=1e6", "train.max_steps=1000",
                                                 "train.log_interval=1000", "train.val_interval=8",
                                                 "train.checkpoint_interval=1000"), tmp_path / "run", progress=False)
    assert result["status"] == "interrupted" and result["step"] == 8, result
    said = [r.getMessage() for r in caplog.records]
    assert any("stopped while building the batches of step 9" in line for line in said), said
    guard = [line for line in said if "the model is learning nothing" in line]
    assert len(guard) == 1 and guard[0].startswith("step 8: ") and "judged at the stop" in guard[0], guard
