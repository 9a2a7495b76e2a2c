"""The render folder as the user sees it: the report names its files relative to OUT (so a rerun
from another directory, or of a copied folder, checks and prints the right files), what cannot
work is refused before OUT is created (a seed outside uint64, more streams than the open-file
limit, a model that does not load)."""

from __future__ import annotations

import errno
import json
import math
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from render_helpers import (ENV, SR, cli, direct_pcm, file_bytes, make_model, read_pcm, render_cli, settings,
                            stopped_render)
from wavegen.cli import main
from wavegen.config import ConfigError
from wavegen.errors import WavegenError
from wavegen.render import RenderFolder, RenderStateError, render
from wavegen.render import writers as render_writers
from wavegen.render.params_check import check_params

resource = pytest.importorskip("resource")

@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "tiny")


# ----- the report names files relative to OUT -----------------------------------------------------

def test_a_rerun_from_another_directory_or_of_a_copied_folder_checks_its_own_files(model, tmp_path, monkeypatch,
                                                                                  capsys):
    monkeypatch.chdir(tmp_path)
    assert render_cli(model, "r/ng") == 0
    assert capsys.readouterr().out.splitlines() == ["r/ng/stream_000.wav"]
    report = json.loads((tmp_path / "r/ng/render_report.json").read_text())
    assert report["paths"] == ["stream_000.wav"]
    stamp = (tmp_path / "r/ng/stream_000.wav").stat().st_mtime_ns
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the same folder, named from another directory: complete
    assert render_cli(model, tmp_path / "r/ng") == 0
    assert capsys.readouterr().out.splitlines() == [f"{tmp_path}/r/ng/stream_000.wav"]
    assert (tmp_path / "r/ng/stream_000.wav").stat().st_mtime_ns == stamp
    monkeypatch.chdir(tmp_path)
    shutil.copytree("r/ng", "r/moved")
    (tmp_path / "r/ng/stream_000.wav").unlink()
    assert render_cli(model, "r/moved") == 0  # the copy is complete: its own files, not the original's
    assert capsys.readouterr().out.splitlines() == ["r/moved/stream_000.wav"]
    assert render_cli(model, "r/ng") == 2
    assert "r/ng holds a finished render but r/ng/stream_000.wav is gone; pass --restart" in capsys.readouterr().err


def test_the_returned_report_names_files_in_out_and_old_reports_are_read_by_file_name(model, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = render(model, "sp", settings(0.125, streams=2, spectrogram=True), progress=False)
    saved = json.loads(Path("sp/render_report.json").read_text())
    assert saved["paths"] == ["stream_000.wav", "stream_001.wav"]
    assert saved["spectrograms"] == ["stream_000.png", "stream_001.png"]
    assert first["paths"] == ["sp/stream_000.wav", "sp/stream_001.wav"]
    assert first["spectrograms"] == ["sp/stream_000.png", "sp/stream_001.png"]
    # reports written before: paths as --out was typed, or full paths elsewhere; taken by file name
    for old in ("/gone/away/", "other/rel/"):
        saved.update(paths=[old + p for p in ("stream_000.wav", "stream_001.wav")],
                     spectrograms=[old + p for p in ("stream_000.png", "stream_001.png")])
        Path("sp/render_report.json").write_text(json.dumps(saved))
        assert render(model, tmp_path / "sp", settings(0.125, streams=2, spectrogram=True), progress=False) == \
            {**first, "paths": [str(tmp_path / p) for p in first["paths"]],
             "spectrograms": [str(tmp_path / p) for p in first["spectrograms"]]}
    Path("sp/stream_001.wav").unlink()
    with pytest.raises(RenderStateError, match=r"sp/stream_001\.wav is gone"):
        render(model, "sp", settings(0.125, streams=2, spectrogram=True), progress=False)


# ----- a rerun that changes a setting is refused, naming it as it was typed -----------------------

RERUN = ". Rerun the original command to resume it, pass --restart to discard it, or choose another --out"
FINISHED = ". It is finished: there is nothing to resume; pass --restart to discard it and render anew, or choose " \
           "another --out"


def test_a_changed_setting_is_named_as_typed_not_as_recorded(model, tmp_path, capsys):
    out = tmp_path / "t"
    assert render_cli(model, out, "--streams", 3, "--temperature", "0.8,0.9") == 0
    capsys.readouterr()
    # recorded per stream in float32 ([0.800000011920929, 0.8999999761581421, 0.800000011920929])
    for temperature, message in (("0.8,0.95", "with temperature=0.8,0.9, but this command asks for "
                                              "temperature=0.8,0.95"),
                                 ("0.9", "with temperature=0.8,0.9, but this command asks for temperature=0.9")):
        assert render_cli(model, out, "--streams", 3, "--temperature", temperature) == 2
        err = capsys.readouterr().err.splitlines()[-1]
        assert err == f"wavegen render: error: {out} holds a render {message}{FINISHED}"
    # the guard: --no-guard as a flag, a changed criterion by itself, an album profile by --no-album-guard
    assert main(["-q", "render", str(model), "--out", str(out), "--seconds", "0.125", "--backend", "torch",
                 "--no-spectrogram", "--streams", "3", "--temperature", "0.8,0.9"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == \
        f"wavegen render: error: {out} holds a render made with --no-guard, but this command runs the guard{FINISHED}"
    guard = {"seconds": 2.0, "attempts": 4, "silence_db": -60.0, "noise_flatness": 0.85}
    for before, now, message in (
            (guard, False, "made with the guard on, but this command asks for --no-guard"),
            (guard, {**guard, "silence_db": -50.0000001, "attempts": 2},
             "with guard attempts=4, silence_db=-60, but this command asks for guard attempts=2, silence_db=-50"),
            ({**guard, "dc_offset": 0.05, "album_profile": "m/album.json"}, guard,
             "guarded by the album profile m/album.json, but this command asks for --no-album-guard"),
            (guard, {**guard, "album_profile": "m/album.json"},
             "made with --no-album-guard, but this command guards by the album profile m/album.json"),
            ({**guard, "dc_offset": 0.05}, guard, "with guard dc_offset=0.05, but this command asks for guard "
                                                  "dc_offset=unset")):
        with pytest.raises(RenderStateError) as err:
            check_params({"guard": before}, {"guard": now}, out)
        assert str(err.value) == f"{out} holds a render {message}{RERUN}"
    # the album profile's path as typed from another folder (or by the longform recipe, which makes the
    # model's path absolute) is the same profile: its thresholds bind, its spelling does not
    profiled = {**guard, "dc_offset": 0.05, "album_profile": "run/best/album.json"}
    check_params({"guard": profiled}, {"guard": {**profiled, "album_profile": "/home/me/run/best/album.json"}}, out)
    with pytest.raises(RenderStateError, match="with guard dc_offset=0.05, but this command asks for guard "
                                               "dc_offset=0.1. Rerun"):
        check_params({"guard": profiled}, {"guard": {**profiled, "album_profile": "/m/album.json", "dc_offset": 0.1}},
                     out)


def test_a_finished_render_rerun_with_another_length_is_not_sent_to_resume_it(model, tmp_path, capsys):
    """A finished render has nothing to resume: a rerun with other --seconds was told "Rerun the original command
    to resume it" (which only says it is complete). A stopped render of other seconds is still sent to resume."""
    finished, stopped = tmp_path / "finished", tmp_path / "stopped"
    assert render_cli(model, finished, "--seconds", "0.25") == 0
    capsys.readouterr()
    assert render_cli(model, finished, "--seconds", "0.5") == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"wavegen render: error: {finished} holds a render with seconds=0.25, but this command asks for "
        f"seconds=0.5{FINISHED}")
    quick = dict(block_seconds=0.25, snapshot_seconds=0.25)
    stopped_render(model, stopped, settings(0.75, **quick), windows=1)
    with pytest.raises(RenderStateError) as caught:
        render(model, stopped, settings(0.5, **quick), progress=False)
    assert str(caught.value) == \
        f"{stopped} holds a render with seconds=0.75, but this command asks for seconds=0.5{RERUN}"



def test_a_finished_render_rerun_on_another_engine_is_not_sent_to_resume_it(model, tmp_path, capsys):
    """A finished render rerun on another numba thread count, or with a --backend auto that runs another backend
    here, was told "Pass --threads 1 / --backend torch to resume it": a rerun so only says it is complete. It is
    said to be finished, as a rerun with other --seconds is (a stopped render's refusals are pinned in
    test_render_failures.py and test_render_state_loss.py, sent to resume)."""
    numba = pytest.importorskip("numba")
    from wavegen.generate import available_backends, choose_backend

    if available_backends("samplernn").get("numba") is not None or numba.config.NUMBA_NUM_THREADS < 2 or \
            choose_backend("samplernn", 1) != "numba":
        pytest.skip("no numba engine with 2 threads here, or --backend auto does not run it")
    threads = numba.get_num_threads()
    flags = ["--seconds", "0.125", "--streams", "2", "--no-guard", "--no-spectrogram"]
    try:
        out = tmp_path / "numba"
        assert main(["-q", "render", str(model), "--out", str(out), *flags, "--backend", "numba",
                     "--threads", "1"]) == 0
        capsys.readouterr()
        assert main(["-q", "render", str(model), "--out", str(out), *flags, "--backend", "numba",
                     "--threads", "2"]) == 2
        assert capsys.readouterr().err.splitlines()[-1] == (
            f"wavegen render: error: {out} holds a render made by the numba engine with threads=1, but this command "
            "runs threads=2 (--threads N, or all cores when not given); the engine's sums round by the thread count, "
            f"so the audio would differ{FINISHED}")
    finally:
        numba.set_num_threads(threads)
    out = tmp_path / "torch"
    assert render_cli(model, out) == 0
    capsys.readouterr()
    assert main(["-q", "render", str(model), "--out", str(out), "--seconds", "0.125", "--no-guard", "--no-spectrogram",
                 "--backend", "auto", "--threads", "1"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"wavegen render: error: {out} holds a render made with backend='torch', but this command's --backend auto "
        f"runs backend='numba' here; the audio may differ by backend{FINISHED}")

# ----- refused before OUT is created --------------------------------------------------------------

def test_seconds_that_give_the_same_samples_resume_one_render(model, tmp_path):
    """An older longform recipe passed --hours 1.1 as --seconds 3960.0000000000005 (a float's product), and now
    passes 3960.0: the same samples, so the same audio, yet a render begun with one was refused with the other.
    Seconds bind by the sample count: it resumes, byte-identical; another count is still refused."""
    out = tmp_path / "t"
    odd = math.nextafter(0.75, 1.0)  # 0.7500000000000001: a product's last-bit error, as 1.1 * 3600's
    quick = dict(block_seconds=0.25, snapshot_seconds=0.25)
    stopped_render(model, out, settings(odd, **quick), windows=2)
    report = render(model, out, settings(0.75, **quick), progress=False)
    assert report["sessions"] == 2 and report["seconds"] == 0.75
    render(model, tmp_path / "whole", settings(0.75, **quick), progress=False)
    assert file_bytes(out, 1) == file_bytes(tmp_path / "whole", 1)
    render(model, out, settings(odd, **quick), progress=False)  # complete: nothing to do, not refused
    with pytest.raises(RenderStateError, match=r"with seconds=0\.75, but this command asks for seconds=0\.8\. "):
        render(model, out, settings(0.8, **quick), progress=False)


def test_a_seed_outside_uint64_is_refused_up_front(model, tmp_path, capsys):
    out = tmp_path / "out"
    for seed in (-5, 2**64):
        with pytest.raises(ConfigError, match=rf"^--seed {seed}: must be a whole number from 0 to {2**64 - 1} "
                                              r"\(2\*\*64 - 1\)$"):
            render(model, out, settings(0.125, seed=seed), progress=False)
        assert render_cli(model, out, "--seed", seed) == 2
        assert capsys.readouterr().err.splitlines()[-1].startswith(f"wavegen render: error: --seed {seed}: ")
    assert not out.exists()
    render(model, out, settings(0.125, seed=2**64 - 1), progress=False)  # the largest is rendered
    assert np.array_equal(read_pcm(out / "stream_000.wav"), direct_pcm(model, 1, SR // 8, seed=2**64 - 1)[0])


def test_model_errors_leave_no_new_out_and_an_existing_one_untouched(model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:len(weights.read_bytes()) // 2])
    damaged = r"were written \(truncated or changed\): the model folder is damaged"
    for source, s, message in ((broken, settings(0.125), damaged),
                               (model, settings(0.125, precision="fp16"), "precision fp16 is not supported"),
                               (model, settings(0.125, label="a"), "not trained with labels")):
        with pytest.raises(WavegenError, match=message):
            render(source, tmp_path / "new" / "out", s, progress=False)
        assert not (tmp_path / "new").exists()
        (tmp_path / "mine").mkdir(exist_ok=True)
        with pytest.raises(WavegenError, match=message):
            render(source, tmp_path / "mine", s, progress=False)
        assert (tmp_path / "mine").is_dir()


# ----- one open file per stream -------------------------------------------------------------------

def _set_soft_limit(soft: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def test_a_low_soft_open_file_limit_is_raised_for_the_streams(model, tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 300:
        pytest.skip(f"hard open-file limit {hard} too low")
    try:
        _set_soft_limit(128)
        report = render(model, tmp_path / "many", settings(0.01, streams=200), progress=False)
        assert len(report["paths"]) == 200
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 200 + render_writers.OPEN_FILES_MARGIN
    finally:
        _set_soft_limit(soft)


def _limit_open_files(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def test_more_streams_than_the_open_file_limit_are_refused_before_anything_is_written(model, tmp_path):
    out = tmp_path / "s4"
    run = subprocess.run(cli(model, "--seconds", 0.01, "--streams", 300, "--out", out, "--backend", "torch",
                             "--no-guard", "--no-spectrogram"), env=ENV, capture_output=True, text=True,
                         timeout=300, preexec_fn=_limit_open_files(256))
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines()[-1] == ("wavegen render: error: --streams 300 needs about 364 open files, the "
                                          "limit is 256: raise it with ulimit -n or render fewer streams per folder")
    assert not out.exists()


def test_an_absurd_stream_count_fails_fast_and_no_rlimit_means_the_c_runtime_limit(model, tmp_path, monkeypatch):
    tick = time.monotonic()
    with pytest.raises(ConfigError, match=r"^--streams 100000000 needs about 100000064 open files, the limit is"):
        render(model, tmp_path / "huge", settings(0.01, streams=100_000_000), progress=False)
    assert time.monotonic() - tick < 30 and not (tmp_path / "huge").exists()
    monkeypatch.setattr(render_writers, "resource", None)  # Windows
    with pytest.raises(ConfigError, match="--streams 9000 needs about 9064 open files, the limit is 8192"):
        render(model, tmp_path / "win", settings(0.01, streams=9000), progress=False)
    assert not (tmp_path / "win").exists()


def test_running_out_of_open_files_names_the_limit_not_the_disk(tmp_path):
    folder = RenderFolder(tmp_path / "out", 2, "wav")
    message = str(folder.io_error(folder.paths[1], OSError(errno.EMFILE, "Too many open files"), 400, SR))
    assert message.startswith(f"cannot write {folder.paths[1]}: Too many open files: the render keeps a file open "
                              "per stream and reached this process's open-file limit (")
    assert "0.1 s of each stream written so far are intact" in message and "ulimit -n" in message
    assert "free space" not in message


# ----- what the folder reads back ----------------------------------------------------------------------

def test_the_checkpoint_a_changed_model_began_with_is_found_by_its_recorded_sha256(model, tmp_path, capsys,
                                                                                   monkeypatch):
    """A render begun from a run's checkpoint, whose weights then changed: the refusal names the kept
    checkpoint with those weights, read from its trainer_state.json's sha256 (a checkpoint of an older
    wavegen, without the record, is hashed). The render here began before renders recorded their tensors
    (params.json holds only model_sha256): it is judged by the weights file's sha256."""
    from wavegen import fileio
    from wavegen.fileio import sha256_file

    run = tmp_path / "run"
    shutil.copytree(model, run / "best")
    shutil.copy(model / "config.json", run / "config.json")
    weights = model / "model.safetensors"
    listed = {"bytes": weights.stat().st_size, "sha256": sha256_file(weights)}
    for step, files in ((5, {"model.safetensors": listed}), (7, None)):  # step_7: written before files were listed
        kept = run / "checkpoints" / f"step_{step}"
        kept.mkdir(parents=True)
        shutil.copy(make_model(tmp_path / f"m{step}", seed=step) / "model.safetensors" if step == 7 else weights, kept)
        (kept / "trainer_state.json").write_text(json.dumps({"step": step, **({"files": files} if files else {})}))
    out = tmp_path / "out"
    assert main(["-q", "render", str(run), "--checkpoint", "step_5", "--out", str(out), "--seconds", "0.125",
                 "--backend", "torch", "--no-guard", "--no-spectrogram"]) == 0
    (run / "checkpoints" / "step_5" / "model.safetensors").write_bytes(
        (run / "checkpoints" / "step_7" / "model.safetensors").read_bytes())  # step_5 replaced: same size
    (out / "render_report.json").unlink()  # an unfinished render of the first weights
    (out / ".state").mkdir()
    (out / ".state" / "params.json").write_text(json.dumps(
        {"model": str((run / "checkpoints" / "step_5").resolve()), "model_sha256": listed["sha256"]}))
    hashed = []
    monkeypatch.setattr(fileio, "sha256_file", lambda path: hashed.append(Path(path)) or sha256_file(path))
    with pytest.raises(RenderStateError, match=r"resume it with --checkpoint step_5 \(the weights it began with\)"):
        render(run, out, settings(0.125), checkpoint="step_7")
    assert run / "checkpoints" / "step_7" / "model.safetensors" in hashed
    assert run / "checkpoints" / "step_5" / "model.safetensors" not in hashed  # read from its record


def test_an_empty_out_is_refused_not_taken_as_the_current_directory(model, tmp_path, monkeypatch, capsys):
    """--out "$OUT" with OUT unset rendered into the current directory (Path("") is ".")."""
    monkeypatch.chdir(tmp_path)
    for empty in ("", " "):
        assert main(["-q", "render", str(model), "--out", empty, "--seconds", "0.125", "--backend", "torch"]) == 2
        assert capsys.readouterr().err.splitlines()[-1] == \
            "wavegen render: error: --out: give a folder for the render (the name is empty)"
    assert list(tmp_path.iterdir()) == []


def test_a_resume_with_another_prime_or_none_says_so_in_words_not_as_a_sha256_or_none(tmp_path):
    """The prime binds as the sha256 of its codes; a refusal showed "prime_sha256=None" to a user who had
    left --prime out, or added it."""
    a, b = "a" * 64, "b" * 64
    for before, now, words in (
            (None, a, "made without --prime, but this command gives --prime (its codes' sha256 aaaaaaaaaaaa...)"),
            (a, None, "begun with --prime (its codes' sha256 aaaaaaaaaaaa...), but this command gives no --prime"),
            (a, b, "begun with another prime (--prime, or --prime-seconds: its codes' sha256 was aaaaaaaaaaaa..., "
                   "this command's is bbbbbbbbbbbb...)")):
        with pytest.raises(RenderStateError) as caught:
            check_params({"prime_sha256": before}, {"prime_sha256": now}, tmp_path)
        assert str(caught.value) == (f"{tmp_path} holds a render {words}. Rerun the original command to resume it, "
                                     "pass --restart to discard it, or choose another --out")
    check_params({"prime_sha256": a}, {"prime_sha256": a}, tmp_path)


def test_a_refusal_where_it_is_not_known_whether_the_render_finished_does_not_send_the_user_to_resume_it(tmp_path):
    """Parameters read from the .state/ a kill left beside a damaged report (finished None): the refusals of another
    --threads or --backend said "Pass --threads 1 to resume it", where that rerun may find it finished."""
    either = ": it resumes the render, or says it is finished; pass --restart to discard it, or choose another --out"
    with pytest.raises(RenderStateError) as caught:
        check_params({"threads": 1}, {"threads": 2}, tmp_path, finished=None)
    assert str(caught.value).endswith("so the audio would differ. Pass --threads 1" + either)
    with pytest.raises(RenderStateError) as caught:
        check_params({"backend": "numba"}, {"backend": "torch"}, tmp_path, backend_asked="auto", finished=None)
    assert str(caught.value).endswith("may differ by backend. Pass --backend numba (where it runs)" + either)


def test_another_model_where_it_is_not_known_whether_the_render_finished_is_not_sent_to_resume_it(model, tmp_path):
    """The same for other weights (finished None): the refusal said "resume it without --checkpoint (the run's
    best/ holds the weights it began with)", where that rerun may find the render finished."""
    from wavegen.fileio import sha256_file
    from wavegen.weights_file import tensors_sha256

    run = tmp_path / "run"
    shutil.copytree(model, run / "best")
    shutil.copy(model / "config.json", run / "config.json")
    newer = make_model(run / "checkpoints" / "step_9", seed=1)

    def record(folder: Path, weights: Path) -> dict:
        return {"model": str(folder), "model_sha256": sha256_file(weights),
                "model_tensors_sha256": tensors_sha256(weights)}

    began = record((run / "checkpoints" / "step_5").resolve(), model / "model.safetensors")  # pruned since
    with pytest.raises(RenderStateError) as caught:
        check_params(began, record(newer.resolve(), newer / "model.safetensors"), tmp_path, finished=None)
    assert str(caught.value).endswith(
        "Rerun without --checkpoint (the run's best/ holds the weights it began with): it resumes the render, or says "
        "it is finished; pass --restart to discard it, or choose another --out"), str(caught.value)


def test_restart_reads_what_the_recorded_render_wrote_and_skips_a_record_it_cannot_read(model, tmp_path, capsys):
    """--restart removes the files of the render recorded in .state/params.json (3 FLAC streams here), with
    the one JSON reader the rerun check uses; a record that is not a JSON object is passed over, not fatal, and
    the streams it no longer knows as a render's are named as left (they were left without a word)."""
    out = tmp_path / "out"
    assert render_cli(model, out, "--streams", 3, "--format", "flac") == 0
    (out / "notes.txt").write_text("mine")
    folder = RenderFolder(out, 1, "wav")
    assert folder._written_names() == {"render_report.json", "stream_000.wav", "stream_000.png", "stream_001.flac",
                                       "stream_001.png", "stream_002.flac", "stream_002.png", "stream_000.flac"}
    (out / "render_report.json").write_text("[1, 2]")
    assert folder._written_names() == {"render_report.json", "stream_000.wav", "stream_000.png"}
    with pytest.raises(RenderStateError, match=r"render_report\.json: unreadable render report \(a JSON array, not "
                                               r"an object\); rerun with --restart"):
        folder.completed_report({})
    capsys.readouterr()
    assert render_cli(model, out, "--streams", 2, "--restart") == 0  # the FLACs are no longer known as its own
    assert (f"--restart: left stream_000.flac, stream_001.flac, stream_002.flac in {out}: no readable record there "
            "(.state/params.json, its snapshots, render_report.json) names them" in capsys.readouterr().err)
    assert sorted(p.name for p in out.iterdir()) == [".lock", "notes.txt", "render_report.json", "stream_000.flac",
                                                     "stream_000.wav", "stream_001.flac", "stream_001.wav",
                                                     "stream_002.flac"]


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_a_rerun_of_a_finished_render_whose_file_was_cut_short_says_so(model, tmp_path, caplog, fmt):
    """A finished render whose file was cut short since (a copy stopped halfway, an editor) was said to be
    complete, silently: the report's 0.5 s against a file of a fraction of it."""
    out = tmp_path / "cut"
    s = settings(0.5, streams=2, format=fmt)
    render(model, out, s, progress=False)
    caplog.clear()
    render(model, out, s, progress=False)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    path = out / f"stream_001.{fmt}"
    wrote = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(wrote // 2)
    report = render(model, out, s, progress=False)
    assert report["status"] == "complete"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"{path}: {wrote // 2} bytes, not the {wrote} this render wrote: it was changed since it "
                        "finished; pass --restart to render it again"]
    assert path.stat().st_size == wrote // 2  # left as it is


# ----- a killed writer's temporaries ----------------------------------------------------------------

def test_a_killed_writers_temporaries_are_removed_and_said_once_by_render_and_the_archive(tmp_path, caplog):
    """atomic_write's leftovers (.NAME.tmpPID) of a render or a live stream's archive killed mid-write are
    removed at the next start, the files around them kept, in one line each (one function for both)."""
    import logging

    from wavegen.serve.archive import Archive

    out = tmp_path / "out"
    (out / ".state").mkdir(parents=True)
    stale = [out / ".stream_000.wav.tmp41", out / ".state" / ".rank0.npz.tmp41", out / ".state" / ".params.json.tmp7"]
    kept = [out / ".notes.tmp41", out / "stream_000.wav", out / ".state" / "rank0.npz"]  # not a render's temporary
    for path in stale + kept:
        path.write_bytes(b"x")
    folder = RenderFolder(out, 1, "wav")
    with caplog.at_level(logging.INFO):
        folder.remove_stale_temporaries()
    assert [p for p in stale + kept if p.exists()] == kept
    assert [r.getMessage() for r in caplog.records if r.name == "wavegen.render"] == \
        [f"{out}: removed .stream_000.wav.tmp41, .params.json.tmp7, .rank0.npz.tmp41, left partial by a render that "
         "was killed while writing it"]
    caplog.clear()
    archive = tmp_path / "archive"
    (archive / ".state").mkdir(parents=True)
    (archive / ".state" / ".snapshot.npz.tmp99").write_bytes(b"x")
    a = Archive(archive, SR, {"seed": 0}, part_seconds=1.0)
    with caplog.at_level(logging.INFO):
        a.open()
    a.close()
    assert not (archive / ".state" / ".snapshot.npz.tmp99").exists()
    assert [r.getMessage() for r in caplog.records if "left partial" in r.getMessage()] == \
        [f"archive {archive}: removed .snapshot.npz.tmp99, left partial by a server killed while writing it"]
    assert [r.name for r in caplog.records if "left partial" in r.getMessage()] == ["wavegen.serve.archive"]


# ----- a folder at a stream's name ------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_a_folder_at_a_streams_name_is_refused_before_anything_is_written_even_with_restart(model, tmp_path, capsys,
                                                                                           fmt):
    """It was refused as "not part of a resumable render; pass --restart", and --restart left it, said "no readable
    record names it" and refused again, having removed the render's other files first."""
    out = tmp_path / "out"
    (out / f"stream_000.{fmt}").mkdir(parents=True)
    (out / f"stream_000.{fmt}" / "mine.txt").write_text("keep")
    for extra in ([], ["--restart"]):
        capsys.readouterr()
        assert render_cli(model, out, "--format", fmt, *extra) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"wavegen render: error: {out / f'stream_000.{fmt}'} is a folder, not a stream file: the render writes "
            "its stream there; move or rename that folder, or choose another --out"]
        assert sorted(p.name for p in out.iterdir()) == [f"stream_000.{fmt}"]  # nothing written
    finished = tmp_path / "finished"
    assert render_cli(model, finished, "--format", fmt) == 0
    kept = (finished / f"stream_000.{fmt}").read_bytes()
    (finished / f"stream_001.{fmt}").mkdir()
    assert render_cli(model, finished, "--format", fmt, "--streams", 2, "--restart") == 2
    assert f"{finished / f'stream_001.{fmt}'} is a folder, not a stream file" in capsys.readouterr().err
    assert (finished / f"stream_000.{fmt}").read_bytes() == kept and (finished / "render_report.json").is_file()
    assert (out / f"stream_000.{fmt}" / "mine.txt").read_text() == "keep"


@pytest.mark.parametrize("where", ["report_folder", "spectrogram_folder", "stream_fifo"])
def test_what_is_no_file_at_the_reports_or_a_spectrograms_name_is_refused_before_anything_is_written(model, tmp_path,
                                                                                                   capsys, where):
    """A folder at render_report.json (or at a stream's PNG, spectrograms on) was not refused: --restart removed the
    finished streams, rendered them all again, then failed writing there, every time; a FIFO at a stream's name was
    taken for a stream that is gone ("pass --restart"), which removes files only."""
    import os

    finished = tmp_path / "finished"
    flags = ["--seconds", "0.125", "--backend", "torch", "--no-guard", "--streams", 2]
    assert main(["-q", "render", str(model), "--out", str(finished), *map(str, flags)]) == 0
    name = {"report_folder": "render_report.json", "spectrogram_folder": "stream_001.png",
            "stream_fifo": "stream_001.wav"}[where]
    (finished / name).unlink()
    if where == "stream_fifo":
        os.mkfifo(finished / name)
        what, kind = "stream file", "FIFO"
    else:
        (finished / name).mkdir()
        (finished / name / "mine.txt").write_text("keep")
        what, kind = ("report" if name.endswith(".json") else "spectrogram") + " file", "folder"
    before = {p.name: p.stat().st_mtime_ns for p in finished.iterdir() if p.name != ".lock"}
    for extra in ([], ["--restart"]):
        capsys.readouterr()
        assert main(["-q", "render", str(model), "--out", str(finished), *map(str, flags), *extra]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"wavegen render: error: {finished / name} is a {kind}, not a {what}: the render writes "), lines
        assert lines[0].endswith(f"move or rename that {kind}, or choose another --out")
        assert {p.name: p.stat().st_mtime_ns for p in finished.iterdir() if p.name != ".lock"} == before
