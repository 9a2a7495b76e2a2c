"""A finished render whose render_report.json was damaged since (wavegen.render.folder, folder_report): where the
folder proves the render finished (the parameters the report's readable part, or a .state/ a kill left, records;
every stream at its full length) a rerun of the same command writes the report again, says so in one line naming
it, keeps the damaged one and renders nothing; where it does not, the rerun is refused naming the report, and
nothing is changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from render_helpers import QUICK_FLAGS, make_model, render_cli, run_with_step_5
from wavegen.cli import main
from wavegen.fileio import sha256_file, write_json


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module", params=["wav", "flac"])
def finished(model, tmp_path_factory, request):
    """(format, a finished 2-stream render's folder, its report's text)."""
    out = tmp_path_factory.mktemp("finished") / "out"
    assert render_cli(model, out, "--streams", 2, "--format", request.param) == 0
    return request.param, out, (out / "render_report.json").read_text()


def snapshot_of(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file but .lock (which names the last holder) → (bytes, mtime)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


def copy_of(finished, tmp_path) -> Path:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(finished[1], out)
    return out


def cut_after_params(text: str) -> str:
    return text[:text.index('"paths"') + 3]  # a copy stopped halfway: the parameters whole, the rest cut


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_cut_report_is_written_again_from_the_folder_and_nothing_is_rendered(model, finished, tmp_path, capsys):
    """It was refused, "rerun with --restart", which renders every stream again (hours, for a long render)."""
    fmt, _, text = finished
    out = copy_of(finished, tmp_path)
    report_path = out / "render_report.json"
    damaged = cut_after_params(text)
    report_path.write_text(damaged)
    streams = {name: kept for name, kept in snapshot_of(out).items() if name.startswith("stream_")}
    capsys.readouterr()
    assert render_cli(model, out, "--streams", 2, "--format", fmt) == 0
    line = error_line(capsys)
    assert line.startswith(f"{report_path}: unreadable render report (")
    assert "its 2 streams are complete" in line and "kept as render_report.json.damaged" in line
    assert {n: k for n, k in snapshot_of(out).items() if n.startswith("stream_")} == streams  # nothing rendered
    assert (out / "render_report.json.damaged").read_text() == damaged
    report, original = json.loads(report_path.read_text()), json.loads(text)
    assert report["status"] == "complete" and report["params"] == original["params"]
    assert report["paths"] == original["paths"] and report["seconds"] == original["seconds"]
    assert report["file_bytes"] == original["file_bytes"] and "damaged" in report["rebuilt"]
    assert render_cli(model, out, "--streams", 2, "--format", fmt) == 0  # complete now: said nothing more
    assert capsys.readouterr().err == ""


def test_a_report_left_with_state_is_written_again_from_its_params_json(model, finished, tmp_path, capsys):
    """Garbage where the report was, and the .state/params.json a kill while .state/ was removed left."""
    fmt, _, text = finished
    out = copy_of(finished, tmp_path)
    (out / ".state").mkdir()
    write_json(out / ".state" / "params.json", json.loads(text)["params"], indent=1)
    (out / "render_report.json").write_bytes(b"\x00\x17garbage")
    assert render_cli(model, out, "--streams", 2, "--format", fmt) == 0
    assert ".state/ (a kill left it)" in error_line(capsys)
    assert json.loads((out / "render_report.json").read_text())["status"] == "complete"
    assert not (out / ".state").exists()


@pytest.mark.parametrize("damage", ["garbage", "cut_in_params", "empty"])
def test_a_damaged_report_that_records_no_parameters_is_refused_naming_it(model, finished, tmp_path, capsys, damage):
    fmt, _, text = finished
    out = copy_of(finished, tmp_path)
    report_path = out / "render_report.json"
    report_path.write_text({"garbage": "<html>not a report</html>", "cut_in_params": text[:120], "empty": ""}[damage])
    before = snapshot_of(out)
    assert render_cli(model, out, "--streams", 2, "--format", fmt) == 2
    line = error_line(capsys)
    assert line.startswith(f"wavegen render: error: {report_path}: unreadable render report")
    assert "nothing else in" in line and "--restart" in line
    assert snapshot_of(out) == before


def test_a_damaged_report_and_a_stream_cut_short_is_refused_naming_both(model, finished, tmp_path, capsys):
    fmt, _, text = finished
    out = copy_of(finished, tmp_path)
    (out / "render_report.json").write_text(cut_after_params(text))
    cut = out / f"stream_001.{fmt}"
    cut.write_bytes(cut.read_bytes()[:cut.stat().st_size * 3 // 4])
    before = snapshot_of(out)
    assert render_cli(model, out, "--streams", 2, "--format", fmt) == 2
    line = error_line(capsys)
    assert f"{out / 'render_report.json'}: unreadable render report" in line
    assert f"and {cut} " in line and "does not show a finished render" in line and "--restart" in line
    assert snapshot_of(out) == before


def test_a_foreign_stream_of_the_full_length_beside_a_damaged_report_is_refused_naming_it(model, finished, tmp_path,
                                                                                         capsys):
    """Another program's file at a stream's name, of the render's length, rate, channels and format, was taken for
    the render's: the report was written again over it, "complete". The streams' CRC-32s, which the report records
    right after its parameters (so a cut report keeps them), tell it; a report of an older wavegen, without them, is
    judged by the length alone, as before."""
    from test_render_stream_crc import noise_like

    fmt, _, text = finished
    out = copy_of(finished, tmp_path)
    report_path, foreign = out / "render_report.json", out / f"stream_001.{fmt}"
    report_path.write_text(cut_after_params(text))
    noise_like(foreign)
    before = snapshot_of(out)
    assert render_cli(model, out, "--streams", 2, "--format", fmt) == 2
    line = error_line(capsys)
    assert line.startswith(f"wavegen render: error: {report_path}: unreadable render report")
    assert f", and {foreign} is not the stream this render wrote (its audio's CRC-32 differs from the one the " \
        "report's readable part records: another program's file, or changed since); put the render's own file " \
        f"back, or move it out of {out} to keep it and rerun with --restart to render every stream again" in line
    assert snapshot_of(out) == before
    older = json.loads(text)
    del older["stream_crc32"]
    report_path.write_text(cut_after_params(json.dumps(older, indent=1)))
    assert render_cli(model, out, "--streams", 2, "--format", fmt) == 0
    assert "its 2 streams are complete and the parameters" in error_line(capsys)


def test_a_damaged_report_rerun_with_another_setting_is_refused_as_any_other(model, finished, tmp_path, capsys):
    fmt, _, text = finished
    out = copy_of(finished, tmp_path)
    (out / "render_report.json").write_text(cut_after_params(text))
    before = snapshot_of(out)
    assert render_cli(model, out, "--streams", 2, "--format", fmt, "--seed", 7) == 2
    assert "seed=0, but this command asks for seed=7" in error_line(capsys)
    assert snapshot_of(out) == before


def test_a_damaged_reports_render_rerun_with_another_length_is_said_finished_not_sent_to_resume(model, finished,
                                                                                                tmp_path, capsys):
    """The report's readable part records a finished render's parameters: a rerun with other --seconds was told
    "Rerun the original command to resume it", where that rerun writes the report again and renders nothing."""
    fmt, _, text = finished
    out = copy_of(finished, tmp_path)
    (out / "render_report.json").write_text(cut_after_params(text))
    before = snapshot_of(out)
    assert render_cli(model, out, "--streams", 2, "--format", fmt, "--seconds", "0.5") == 2
    assert error_line(capsys) == (
        f"wavegen render: error: {out} holds a render with seconds=0.125, but this command asks for seconds=0.5. It "
        "is finished: there is nothing to resume; pass --restart to discard it and render anew, or choose another "
        "--out")
    assert snapshot_of(out) == before


def damaged_beside_state(out: Path) -> None:
    """The finished render in ``out`` as a kill while .state/ was removed left it, its report damaged since beyond
    its parameters: whether it finished is known from nothing but its streams."""
    (out / ".state").mkdir()
    write_json(out / ".state" / "params.json", json.loads((out / "render_report.json").read_text())["params"],
               indent=1)
    (out / "render_report.json").write_bytes(b"\x00\x17garbage")


def test_a_damaged_report_beside_a_kills_state_rerun_with_another_setting_is_not_said_to_resume(model, finished,
                                                                                               tmp_path, capsys):
    """The parameters come from the .state/ a kill left (the report records none): whether the render finished is
    not known, and the refusal said "Rerun the original command to resume it", where that rerun may find it finished
    and write its report again."""
    fmt, _, text = finished
    out = copy_of(finished, tmp_path)
    (out / ".state").mkdir()
    write_json(out / ".state" / "params.json", json.loads(text)["params"], indent=1)
    (out / "render_report.json").write_bytes(b"\x00\x17garbage")
    before = snapshot_of(out)
    assert render_cli(model, out, "--streams", 2, "--format", fmt, "--seed", 7) == 2
    assert error_line(capsys) == (
        f"wavegen render: error: {out} holds a render with seed=0, but this command asks for seed=7. Rerun the "
        "original command: it resumes the render, or says it is finished; pass --restart to discard it, or choose "
        "another --out")
    assert snapshot_of(out) == before


def test_a_damaged_report_beside_a_kills_state_rerun_with_another_model_is_not_said_to_resume(model, tmp_path,
                                                                                              capsys):
    """The same for other weights in the run's best/ (trained further): the refusal said "resume it with
    --checkpoint step_5", where that rerun finds the render finished and writes its report again."""
    import shutil

    run, out = run_with_step_5(model, tmp_path / "run"), tmp_path / "out"
    assert render_cli(run, out) == 0
    damaged_beside_state(out)
    other = make_model(tmp_path / "other", seed=3)
    for name in ("model.safetensors", "weights.json"):  # trained further: best/ written again
        shutil.copy(other / name, run / "best")
    before = snapshot_of(out)
    capsys.readouterr()
    assert render_cli(run, out) == 2
    line = error_line(capsys)
    assert line.startswith(f"wavegen render: error: {out} holds a render begun from the model in "
                           f"{(run / 'best').resolve()}, which changed since (trained further or replaced"), line
    assert line.endswith(f"is now {sha256_file(other / 'model.safetensors')[:12]}...). Pass --checkpoint step_5 (the "
                         "weights it began with): it resumes the render, or says it is finished; pass --restart to "
                         "discard it, or choose another --out"), line
    assert snapshot_of(out) == before
    assert main(["-q", "render", str(run), "--checkpoint", "step_5", "--out", str(out), *QUICK_FLAGS]) == 0
    assert "its 1 stream is complete" in error_line(capsys)  # that rerun: finished, its report written again
    assert json.loads((out / "render_report.json").read_text())["status"] == "complete"


# ----- what the rebuilt report records, and the records it is read by ------------------------------------------------

def test_a_report_rebuilt_beside_a_state_a_kill_left_takes_what_its_snapshots_measured(tmp_path, caplog):
    """A kill while the finished render removed .state/ left its final snapshots, which record its guard events, wall
    time and sessions: the rebuilt report wrote None for them, then .state/ was removed, and they were lost."""
    from render_helpers import MOSTLY_SILENT, SR, one_hot_bias, settings
    from wavegen.render import folder as render_folder
    from wavegen.render import render

    model = make_model(tmp_path / "iid", output_bias=one_hot_bias(MOSTLY_SILENT))
    out = tmp_path / "out"
    s = settings(24 * 8 / SR, streams=2, guard=True, guard_seconds=8 / SR, guard_attempts=3)
    with pytest.MonkeyPatch.context() as patch:  # the kill: write_report's removal of .state/ never happened
        patch.setattr(render_folder.shutil, "rmtree", lambda *a, **k: None)
        original = render(model, out, s, progress=False)
    assert (out / ".state" / "rank0.npz").is_file() and original["guard"]["events"]  # the guard redrew some windows
    text = (out / "render_report.json").read_text()
    (out / "render_report.json").write_text(cut_after_params(text))
    caplog.set_level("INFO", logger="wavegen.render")
    rebuilt = json.loads(json.dumps(render(model, out, s, progress=False)))
    for key in ("wall_seconds", "realtime_factor", "realtime_factor_all_streams", "sessions", "guard"):
        assert rebuilt[key] == original[key], key
    assert rebuilt["max_rss_mb"] is None and "from the snapshots its end left in .state/" in rebuilt["rebuilt"]
    assert json.loads((out / "render_report.json").read_text())["guard"] == original["guard"]
    assert not (out / ".state").exists()


def test_a_report_rebuilt_without_snapshots_says_what_is_not_known(model, finished, tmp_path, capsys):
    fmt, _, text = finished
    out = copy_of(finished, tmp_path)
    (out / "render_report.json").write_text(cut_after_params(text))
    assert render_cli(model, out, "--streams", 2, "--format", fmt) == 0
    report = json.loads((out / "render_report.json").read_text())
    assert report["wall_seconds"] is None and report["sessions"] is None and report["guard"]["events"] is None
    assert "its wall time, sessions, guard events and peak memory are not known" in report["rebuilt"]


def test_a_primed_render_whose_prime_is_gone_has_its_damaged_report_written_again(model, tmp_path, capsys):
    """The prime's digest the damaged report's readable part records was not asked: "--prime ...: no such file"."""
    import numpy as np
    import soundfile as sf

    prime, out = tmp_path / "prime.wav", tmp_path / "out"
    sf.write(prime, (np.random.default_rng(0).standard_normal(400) * 0.1).astype("float32"), 4000)
    assert render_cli(model, out, "--streams", 2, "--prime", prime) == 0
    text = (out / "render_report.json").read_text()
    (out / "render_report.json").write_text(cut_after_params(text))
    prime.unlink()
    capsys.readouterr()
    assert render_cli(model, out, "--streams", 2, "--prime", prime) == 0
    assert "its 2 streams are complete" in capsys.readouterr().err
    assert json.loads((out / "render_report.json").read_text())["params"] == json.loads(text)["params"]


def test_restart_over_a_damaged_report_removes_the_streams_it_records(model, tmp_path, capsys):
    """--restart learns the old render's streams from the damaged report's readable part: it left stream_002.wav
    ("no readable record names them")."""
    out = tmp_path / "out"
    assert render_cli(model, out, "--streams", 3) == 0
    (out / "render_report.json").write_text(cut_after_params((out / "render_report.json").read_text()))
    capsys.readouterr()
    assert render_cli(model, out, "--streams", 2, "--restart") == 0
    assert "no readable record" not in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".lock", "render_report.json", "stream_000.wav", "stream_001.wav"]


def test_a_damaged_report_beside_an_unfinished_render_is_set_aside_and_the_render_resumes(tmp_path, caplog):
    """It was refused "rerun with --restart", which loses what the snapshots hold."""
    from render_helpers import SR, direct_pcm, read_pcm, settings, stopped_render
    from wavegen.render import render

    model = make_model(tmp_path / "tiny")
    out = tmp_path / "out"
    s = settings(1.0, streams=2, block_seconds=0.25)
    stopped_render(model, out, s, 2)
    params = json.loads((out / ".state" / "params.json").read_text())
    damaged = '{\n "status": "complete",\n "params": ' + json.dumps(params, indent=1) + ',\n "pa'
    (out / "render_report.json").write_text(damaged)
    caplog.set_level("INFO", logger="wavegen.render")
    report = render(model, out, s, progress=False)
    said = [r.getMessage() for r in caplog.records]
    assert any("the damaged report is set aside as render_report.json.damaged and the render resumes" in m
               for m in said), said
    assert any(m.startswith(f"resuming {out} at 0.5 s") for m in said), said
    assert report["status"] == "complete" and report["sessions"] == 2
    assert (out / "render_report.json.damaged").read_text() == damaged
    whole = direct_pcm(model, 2, SR)
    assert all((read_pcm(out / f"stream_{i:03d}.wav") == whole[i]).all() for i in range(2))



@pytest.mark.parametrize("progress", [True, False])
def test_the_streams_measured_to_write_a_damaged_report_again_are_said_with_progress(model, finished, tmp_path,
                                                                                       caplog, progress):
    """A long FLAC render's streams are decoded to the end to write its report again (a WAV render's read, to check
    them against their CRC-32s): minutes of silence for hours of audio. It is said first, and the reading shows
    progress (a plain line where stderr is no terminal), none where the render shows none."""
    from render_helpers import settings
    from wavegen.render import render

    fmt, _, text = finished
    out = copy_of(finished, tmp_path)
    report_path = out / "render_report.json"
    report_path.write_text(cut_after_params(text))
    with caplog.at_level("INFO"):
        render(model, out, settings(0.125, streams=2, format=fmt), progress=progress)
    said = caplog.messages
    how = "decoding 0.25 s of FLAC" if fmt == "flac" else "reading 0.25 s of WAV audio"
    measuring = f"{report_path} is damaged: measuring its 2 streams from their files ({how} to the end, checked " \
        "against the CRC-32s the report's readable part records) to see whether the render is complete and write " \
        "the report again"
    assert measuring in said, said
    rebuilt = next(i for i, line in enumerate(said) if "its 2 streams are complete" in line)
    assert said.index(measuring) < rebuilt
    verb = "decoded" if fmt == "flac" else "read"
    decoded = [line for line in said if line.startswith(("decoded: ", "read: "))]
    if progress:  # every stream's seconds, decoded (FLAC) or read (WAV: checked against its CRC-32)
        assert len(decoded) == 1 and decoded[0].startswith(f"{verb}: 0.25/0.25 s (100%)"), said
        assert said.index(measuring) < said.index(decoded[0]) < rebuilt
    else:  # no progress asked for: nothing to show
        assert decoded == []


def test_the_decoding_bar_on_a_terminal_ends_at_the_seconds_decoded(model, tmp_path):
    """On a terminal (a pty here), the bar of a damaged report's FLAC streams decoded ends at their seconds: it added
    each block's seconds, and 3 streams x 0.1 s came to 0.30000000000000004 of 0.3, shown so, with an ETA of -00:00."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    from render_helpers import ENV, QUICK_FLAGS

    out = tmp_path / "out"
    flags = [*QUICK_FLAGS, "--seconds", "0.1", "--streams", "3", "--format", "flac"]
    assert render_cli(model, out, *flags[len(QUICK_FLAGS):]) == 0
    report_path = out / "render_report.json"
    report_path.write_text(cut_after_params(report_path.read_text()))
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))  # (0 columns: no bar at all)
    run = subprocess.Popen([sys.executable, "-m", "wavegen", "render", str(model), "--out", str(out), *flags],
                           stdout=subprocess.PIPE, stderr=terminal, env=ENV)
    os.close(terminal)
    said = b""
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # (EIO: the render has ended)
            break
        if not chunk:
            break
        said += chunk
    os.close(master)
    assert run.wait(timeout=120) == 0, said[-3000:]
    run.stdout.close()
    frames = [part for part in said.decode(errors="replace").replace("\r", "\n").split("\n") if "decoded:" in part]
    assert frames and "100%" in frames[-1] and "| 0.3/0.3 s [" in frames[-1], frames
    assert "-00:00" not in frames[-1] and "0.30000000000000004" not in said.decode(errors="replace"), frames
    assert "its 3 streams are complete" in said.decode(errors="replace")


def test_a_damaged_report_beside_a_kills_state_whose_best_is_gone_is_not_said_only_to_resume(model, tmp_path, capsys):
    """best/ gone, a kept checkpoint holding its weights: the rerun went on with it, saying "resuming the render
    with it", and found the render finished and wrote its report again."""
    import shutil

    run, out = run_with_step_5(model, tmp_path / "run"), tmp_path / "out"
    assert render_cli(run, out) == 0
    damaged_beside_state(out)
    shutil.rmtree(run / "best")
    capsys.readouterr()
    assert render_cli(run, out) == 0
    said = capsys.readouterr().err.strip().splitlines()
    assert said[0] == (
        f"{run}: {(run / 'best').resolve()}, the model the render in {out.resolve()} began with, is gone (deleted, or "
        f"being replaced by a training); the kept checkpoint {(run / 'checkpoints' / 'step_5').resolve()} holds the "
        "weights it began with, the same tensors: resuming the render with it, or, if it is finished, checking it and "
        "writing its damaged report again"), said
    assert len(said) == 2 and "its 1 stream is complete" in said[1], said  # it was finished: report written
    assert json.loads((out / "render_report.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("began", ["best", "step_5"])
def test_a_damaged_report_beside_a_kills_state_whose_model_no_one_holds_is_not_said_only_unresumable(
        model, tmp_path, capsys, began):
    """No model holds the weights the render began with (best/ and step_5 gone; step_5 pruned, best/ trained on):
    refused "so it cannot be resumed", where the render may be finished, with nothing to resume."""
    import shutil

    run, out = run_with_step_5(model, tmp_path / "run"), tmp_path / "out"
    which = () if began == "best" else ("--checkpoint", "step_5")
    assert render_cli(run, out, *which) == 0
    damaged_beside_state(out)
    shutil.rmtree(run / "checkpoints" / "step_5")
    shutil.rmtree(run / "best")
    if began == "step_5":
        make_model(run / "best", seed=3)  # trained on: other weights
    before = snapshot_of(out)
    capsys.readouterr()
    assert render_cli(run, out, *which) == 2
    line = error_line(capsys)
    assert "is gone (" in line and "holds its weights, so it cannot be resumed, nor, if it is finished, checked and " \
        "its damaged report written again: pass --restart with a model that is there" in line, line
    assert snapshot_of(out) == before
