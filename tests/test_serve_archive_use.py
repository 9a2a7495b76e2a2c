"""wavegen serve --archive as people use it: a folder that another wavegen command wrote (a render, a model,
a run, a corpus) is refused before the model loads, left as it was; a second server on one archive is
refused at once, naming the first, which plays on; a disk that fills while the archive is written stops the
server in one line, and the same command continues the archive byte for byte once there is room.

The servers are the CLI in subprocesses (test_serve's helpers)."""

from __future__ import annotations

import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import prepared_corpus
from process_helpers import error_lines
from test_render_model_gone import make_run
from test_serve import ENV, SR, Server, make_model, reference_pcm, serve_here
from test_serve_archive import _archived, _contents


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("serve_archive_use") / "tiny")


def _one_error_line(capsys) -> str:
    lines = error_lines(capsys.readouterr().err, "serve")
    assert len(lines) == 1, lines
    return lines[0]


def test_a_folder_another_wavegen_command_wrote_is_refused_untouched(model, tmp_path, capsys, monkeypatch):
    """--archive naming a render's folder, a model or run folder or a prepared corpus: one line saying what the
    folder holds, before the model loads, nothing written there (an archive was written into a finished render's
    folder, whose rerun then took the archive's .state/params.json for its own; into a run folder it took the
    run's .lock). An empty folder, or one of other files, is an archive's as before."""
    from wavegen.cli import main
    from wavegen.render import render
    from wavegen.render import RenderSettings
    from wavegen.serve import station

    def loaded(ref):
        raise AssertionError("the model loaded before the archive folder was checked")

    rendered = tmp_path / "rendered"
    render(model, rendered, RenderSettings(seconds=0.1, backend="torch", spectrogram=False, guard=False),
           progress=False)
    folders = {rendered: "it holds a render (what wavegen render --out wrote)",
               model: "it holds a model (model.safetensors)",
               make_run(model, tmp_path / "run"): "it holds a training run (what wavegen train --run wrote)",
               prepared_corpus(tmp_path / "prep", files=2, seconds=1.0): "it holds a prepared corpus (what wavegen "
                                                                          "prep wrote)"}
    monkeypatch.setattr(station, "_load_model", loaded)
    for folder, held in folders.items():
        before = _contents(folder) | {".lock": (folder / ".lock").exists()}
        assert main(["serve", str(model), "--port", "0", "--archive", str(folder)]) == 2
        assert _one_error_line(capsys) == (
            f"wavegen serve: error: --archive {folder}: {held}; an archive there would mix its files (.state/, "
            ".lock, broadcast parts) into it: choose another folder, e.g. an empty one")
        assert _contents(folder) | {".lock": (folder / ".lock").exists()} == before, folder
    from wavegen.resolve_why import other_use  # render's --out is checked by the same (test_render_out_folder)

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("other files")
    (tmp_path / "notes" / "config.json").write_text("{}")  # another program's settings: not a run's
    assert other_use(tmp_path / "notes", "archive") is None and other_use(tmp_path / "not-yet", "archive") is None
    assert other_use(rendered, "render") is None  # a render's own folder: its resume


@pytest.mark.slow
def test_a_second_server_on_one_archive_is_refused_at_once_and_the_first_plays_on(model, tmp_path):
    archive = tmp_path / "archive"
    args = ("--no-guard", "--archive", str(archive), "--snapshot-seconds", "1")
    first = Server(model, *args)
    try:
        tick = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "wavegen", "serve", str(model), "--port", "0", "--allow-slow",
                                 *args], capture_output=True, text=True, env=ENV, timeout=120)
        assert second.returncode == 2 and second.stdout == "", (second.stdout, second.stderr)
        line, = second.stderr.splitlines()
        assert line.startswith(f"wavegen serve: error: {archive}: another wavegen serve archive is writing here "
                               f"(process {first.proc.pid} on "), line
        assert time.monotonic() - tick < 60  # refused before its model was timed
        written = first.status()["archive"]["snapshot_seconds"]
        first.wait_for(lambda s: s["archive"]["snapshot_seconds"] >= written + 1.0)  # the first plays on
    finally:
        assert first.stop() == 130, "".join(first.stderr)
    pcm = _archived(archive)
    assert np.array_equal(pcm, reference_pcm(model, len(pcm)))


def _limit_file_size(limit: int):
    """For a child process: no file written past ``limit`` bytes (EFBIG, as a full disk's ENOSPC: a write that
    fails; Python ignores SIGXFSZ, so the write raises instead of the process dying)."""
    def limit_it():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_it


@pytest.mark.slow
def test_a_disk_that_fills_stops_the_server_in_one_line_and_the_archive_continues(model, tmp_path, caplog):
    """The archive's part cannot grow (the file-size limit stands in for a full disk): the server stops in one line
    naming the part and how much of the archive is intact, exit 2; the same command, with room again, continues
    the archive from its snapshot, byte for byte as a server never stopped. (The sessions before and after are
    the same command played in this process: the one the disk stops is the process checked.)"""
    archive = tmp_path / "archive"
    args = ["serve", str(model), "--port", "0", "--allow-slow", "--no-guard", "--archive", str(archive),
            "--snapshot-seconds", "1", "--buffer-seconds", "8"]
    played = {"guard": False, "archive": str(archive), "snapshot_seconds": 1.0, "buffer_seconds": 8.0}
    # the first session: the engine compiled and cached, a snapshot taken
    serve_here(model, lambda s: s["archive"]["snapshot_seconds"] >= 1.0, **played)
    part = archive / "broadcast_00000.wav"
    limit = part.stat().st_size + 2 * SR * 2  # two seconds more
    full = subprocess.run([sys.executable, "-m", "wavegen", *args], capture_output=True, text=True, env=ENV,
                          timeout=180, preexec_fn=_limit_file_size(limit))
    assert full.returncode == 2, full.stderr
    errors = [line for line in full.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert len(errors) == 1 and errors[0].startswith(f"wavegen serve: error: cannot write {part}: File too large; "
                                                     "the archive up to "), full.stderr
    assert errors[0].endswith("s is intact; free space (or make the folder writable) and rerun the same command to "
                              "continue"), errors[0]
    intact = float(errors[0].split("the archive up to ")[1].split(" s is intact")[0])
    assert intact >= 1.0
    caplog.set_level(logging.INFO)
    _, s = serve_here(model, lambda s: s["archive"]["snapshot_seconds"] >= intact + 1.0, **played)  # room again
    assert f"archive {archive}: continuing at {intact:.1f} s" in caplog.messages
    pcm = _archived(archive)
    assert len(pcm) >= s["archive"]["snapshot_seconds"] * SR
    assert np.array_equal(pcm, reference_pcm(model, len(pcm)))
