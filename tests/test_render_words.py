"""render's lines say a count with its noun agreeing (wavegen.progress.counted): "rendering 1 stream", "a block of
1 stream", "checking the 1 file", "its 1 stream is complete" (they said "1 stream(s)", "1 file(s)", "its 1 stream(s)
are complete"). The report's keys are data and keep their names."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from render_helpers import SR, make_model, render_cli, settings, stopped_render
from wavegen import memory
from wavegen.render import RenderWriteError, render
from wavegen.render import writers as render_writers
from wavegen.render.folder_report import measured_by


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.mark.parametrize("streams, said", [(1, "1 stream"), (2, "2 streams")])
def test_a_renders_first_last_and_already_complete_lines_say_its_streams(model, tmp_path, caplog, streams, said):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="wavegen"):
        render(model, out, settings(0.125, streams=streams), progress=False)
        render(model, out, settings(0.125, streams=streams), progress=False)
    lines = caplog.messages
    assert any(m.startswith(f"rendering {said} x 0.125 s at {SR} Hz with the torch engine") for m in lines), lines
    assert any(m.startswith(f"rendered {said} x 0.125 s, generated in ") for m in lines), lines
    assert f"{out}: this render is already complete ({said} x 0.125 s); nothing to do" in lines, lines


@pytest.mark.parametrize("streams, said", [(1, "a block of 1 stream "), (2, "a block of 2 streams ")])
def test_a_block_too_big_for_memory_says_its_streams(model, tmp_path, monkeypatch, capsys, streams, said):
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": (2**20, "available RAM"))
    assert render_cli(model, tmp_path / "out", "--seconds", 100, "--block-seconds", 100, "--streams", streams) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"error: {said}(--block-seconds 100) needs about " in line, line


@pytest.mark.parametrize("files, said", [(1, "the 1 file"), (2, "the 2 files")])
def test_a_long_resume_check_says_its_files(tmp_path, monkeypatch, caplog, files, said):
    paths = [tmp_path / f"stream_00{k}.wav" for k in range(files)]
    writers = render_writers.StreamWriters(paths, SR, True, None, RenderWriteError)
    writers.write(np.zeros((files, 1000), dtype=np.int16))
    writers.close()
    monkeypatch.setattr(render_writers, "SAY_CHECK_BYTES", 0)
    with caplog.at_level("INFO", logger="wavegen.render"):
        render_writers.StreamWriters(paths, SR, True, 1000, RenderWriteError).close()
    assert caplog.messages == [f"checking {said} against the snapshot (0.0 GB read) before resuming"]


@pytest.mark.parametrize("streams, said", [(2, "those of stream 1 are not known: no snapshot of it"),
                                           (3, "those of streams 1, 2 are not known: no snapshot of theirs")])
def test_a_rebuilt_report_names_the_streams_no_snapshot_measured(streams, said):
    metas = [{"streams": [0], "events": [], "wall_seconds": 1.0, "sessions": 1}]
    measures, unknown = measured_by(metas, streams, 0.5)
    assert measures["wall_seconds"] == 1.0
    assert unknown == (f"its wall time, sessions and guard events ({said} is "
                       "readable) are from the snapshots its end left in .state/; its peak memory is not known")


@pytest.mark.parametrize("streams, said", [(1, "1 wav stream,"), (2, "2 wav streams,")])
def test_a_restart_says_the_layout_a_snapshot_recorded_with_its_streams(model, tmp_path, caplog, streams, said):
    out = tmp_path / "out"
    stopped_render(model, out, settings(0.5, streams=streams, block_seconds=0.125, snapshot_seconds=0.125), 2)
    (out / ".state" / "params.json").write_text("{")
    with caplog.at_level("INFO", logger="wavegen.render"):
        render(model, out, settings(0.125, format="flac"), progress=False, restart=True)
    (line,) = [m for m in caplog.messages if m.startswith("--restart")]
    assert f"(the render there was of {said} as its snapshot rank0.npz recorded: params.json is unreadable)" in line, \
        line


@pytest.mark.parametrize("streams, said, files, complete", [
    (1, "1 stream", "its file", "its 1 stream is complete (its audio"),
    (2, "2 streams", "their files", "its 2 streams are complete (their audio")])
def test_a_damaged_reports_lines_agree_with_its_streams(model, tmp_path, caplog, streams, said, files, complete):
    out = tmp_path / "out"
    render(model, out, settings(0.125, streams=streams), progress=False)
    report = out / "render_report.json"
    text = report.read_text()
    report.write_text(text[:text.index('"paths"') + 3])  # its parameters readable: written again from the files
    with caplog.at_level("INFO", logger="wavegen.render"):
        render(model, out, settings(0.125, streams=streams), progress=False)
    (measuring,) = [m for m in caplog.messages if " is damaged: measuring " in m]
    assert measuring.startswith(f"{report} is damaged: measuring its {said} from {files} ("), measuring
    (rebuilt,) = [m for m in caplog.messages if "written again from them" in m]
    assert f"; {complete} checked against the CRC-32s " in rebuilt, rebuilt
