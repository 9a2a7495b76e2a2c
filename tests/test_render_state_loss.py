"""A render folder that lost part of its .state/ (wavegen.render.folder, wavegen.render.shard): snapshots gone while
its streams hold audio are refused, not rendered over (a FLAC render's raw PCM too; a WAV that is not the render's
is said to be another's); a damaged or missing params.json is rebuilt from the snapshots, which carry the same
parameters, and --restart learns from them what the old render wrote; a --backend auto that resolves to another
backend on a resume is said as typed and as resolved."""

from __future__ import annotations

import shutil
import signal
import struct
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf

from render_helpers import (ENV, SR, cli, direct_pcm, make_model, read_pcm, settings, stopped_render,
                            wait_for_snapshot)
from wavegen.cli import main
from wavegen.render import render
from wavegen.render.settings import WAV_HEADER_BYTES
from wavegen.render.writers import encode_flac, load_snapshot

SECONDS = 1.0
FLAGS = ["--seconds", SECONDS, "--backend", "torch", "--no-guard", "--no-spectrogram", "--snapshot-seconds", 0.125,
         "--block-seconds", 0.0625]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """(model folder, a render of it Ctrl-C'd by a real process once its snapshot holds a quarter second (its
    previous snapshot kept as rank0.prev.npz), the samples that snapshot holds)."""
    root = tmp_path_factory.mktemp("state_loss")
    model = make_model(root / "model")
    out = root / "stopped"
    proc = subprocess.Popen(cli(model, "--out", out, *FLAGS), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_snapshot(proc, out / ".state" / "rank0.npz", min_written=SR // 4)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    written = load_snapshot(out / ".state" / "rank0.npz")[1]
    assert (out / ".state" / "rank0.prev.npz").is_file() and written >= SR // 4
    return model, out, written


def copy_of(stopped, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(stopped[1], out)
    return out


def render_cli(model, out, *extra) -> int:
    """`wavegen -q render MODEL --out OUT` with FLAGS, in this process."""
    return main(["-q", "render", str(model), "--out", str(out), *map(str, FLAGS), *map(str, extra)])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_snapshots_gone_while_the_stream_holds_audio_is_refused_and_nothing_is_overwritten(stopped, tmp_path,
                                                                                             capsys):
    model, _, written = stopped
    out = copy_of(stopped, tmp_path)
    for name in ("rank0.npz", "rank0.prev.npz"):
        (out / ".state" / name).unlink()
    before = (out / "stream_000.wav").read_bytes()
    assert render_cli(model, out) == 2
    line = one_error_line(capsys)
    assert f"{out / 'stream_000.wav'} holds {written / SR:.1f} s of audio (a mono {SR} Hz 16-bit WAV" in line
    assert "rank0.npz and rank0.prev.npz" in line and "gone" in line and "--restart" in line
    assert (out / "stream_000.wav").read_bytes() == before  # nothing overwritten
    # --restart renders it again, from the start
    render(model, out, settings(SECONDS, snapshot_seconds=0.125), progress=False, restart=True)
    assert (read_pcm(out / "stream_000.wav") == direct_pcm(model, 1, int(SECONDS * SR))[0]).all()


def test_a_render_stopped_before_its_first_snapshot_still_just_starts(stopped, tmp_path):
    """No snapshot yet and a stream whose header was never flushed (that of an empty file, the audio after it
    buffered writes of a render killed before its first snapshot): the rerun starts, as before."""
    model = stopped[0]
    out = copy_of(stopped, tmp_path)
    for name in ("rank0.npz", "rank0.prev.npz"):
        (out / ".state" / name).unlink()
    wav = out / "stream_000.wav"
    data = bytearray(wav.read_bytes())
    data[4:8], data[40:44] = struct.pack("<I", 36), struct.pack("<I", 0)  # as PCMWriter wrote it before a flush
    wav.write_bytes(bytes(data))
    report = render(model, out, settings(SECONDS, snapshot_seconds=0.125), progress=False)
    assert report["status"] == "complete"
    assert (read_pcm(wav) == direct_pcm(model, 1, int(SECONDS * SR))[0]).all()


@pytest.mark.slow
def test_a_render_killed_before_its_first_snapshot_with_audio_in_its_stream_still_just_starts(stopped, tmp_path):
    """kill -9 of a real render once its stream holds audio (buffered writes) but before its first snapshot:
    the rerun starts from the beginning and renders the same audio."""
    model, seconds = stopped[0], 1.5
    out, flags = tmp_path / "out", [*map(str, FLAGS), "--seconds", seconds, "--snapshot-seconds", 100]
    wav = out / "stream_000.wav"
    proc = subprocess.Popen(cli(model, "--out", out, *flags), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (wav.is_file() and wav.stat().st_size > WAV_HEADER_BYTES):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.kill()
    proc.communicate(timeout=60)
    assert not (out / ".state" / "rank0.npz").exists() and (out / ".state" / "params.json").is_file()
    assert render_cli(model, out, *flags[len(FLAGS):]) == 0
    assert (read_pcm(wav) == direct_pcm(model, 1, int(seconds * SR))[0]).all()


def test_a_first_snapshot_that_fails_leaves_a_render_its_error_says_to_rerun(stopped, tmp_path, monkeypatch, capsys):
    """The first snapshot's save failing (a full disk: simulated at save_snapshot, after the audio was flushed): its
    error says to rerun the same command, and that rerun was refused as "its snapshots are gone", since the WAV's
    header already counted the audio. A header counts audio only once a snapshot holds it."""
    import errno

    import wavegen.render.shard as shard
    from wavegen.render import RenderWriteError

    model, out = stopped[0], tmp_path / "out"
    saved = shard.save_snapshot

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(shard, "save_snapshot", full)
    with pytest.raises(RenderWriteError, match="rerun the same command to resume"):
        render(model, out, settings(SECONDS, snapshot_seconds=0.125, block_seconds=0.0625), progress=False)
    assert not (out / ".state" / "rank0.npz").exists() and (out / "stream_000.wav").is_file()
    monkeypatch.setattr(shard, "save_snapshot", saved)
    assert main(["-q", "render", str(model), "--out", str(out), *map(str, FLAGS)]) == 0, capsys.readouterr().err
    assert (read_pcm(out / "stream_000.wav") == direct_pcm(model, 1, int(SECONDS * SR))[0]).all()


@pytest.mark.parametrize("damage", ["damaged", "unreadable", "gone"])
def test_a_damaged_or_missing_params_json_is_rebuilt_from_the_snapshot_and_the_render_resumes(stopped, tmp_path,
                                                                                               caplog, damage):
    model, _, written = stopped
    out = copy_of(stopped, tmp_path)
    params_path = out / ".state" / "params.json"
    recorded = params_path.read_text()
    if damage == "damaged":
        params_path.write_text(recorded[: len(recorded) // 2])  # cut short
    elif damage == "unreadable":
        params_path.write_text("[1, 2]")  # JSON, not an object
    else:
        params_path.unlink()
    with caplog.at_level("INFO", logger="wavegen.render"):
        report = render(model, out, settings(SECONDS, snapshot_seconds=0.125), progress=False)
    warned = [r.getMessage() for r in caplog.records if "params.json" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(f"{params_path} is {'gone' if damage == 'gone' else 'unreadable'}")
    assert "resuming with the parameters the render's snapshot rank0.npz recorded" in warned[0]
    assert f"resuming {out} at {written / SR:.1f} s" in caplog.text  # resumed, not started again
    assert report["status"] == "complete"
    assert (read_pcm(out / "stream_000.wav") == direct_pcm(model, 1, int(SECONDS * SR))[0]).all()


def test_params_json_rewritten_from_the_snapshot_still_refuses_another_setting(stopped, tmp_path, capsys):
    model = stopped[0]
    out = copy_of(stopped, tmp_path)
    (out / ".state" / "params.json").write_text("{")
    before = (out / "stream_000.wav").read_bytes()
    assert render_cli(model, out, "--seed", 7) == 2
    assert "holds a render with seed=0, but this command asks for seed=7" in one_error_line(capsys)
    assert (out / "stream_000.wav").read_bytes() == before
    assert (out / ".state" / "params.json").read_text() == "{"  # a refused command writes nothing


def test_damaged_params_json_and_no_readable_snapshot_is_still_refused_naming_it(stopped, tmp_path, capsys):
    model = stopped[0]
    out = copy_of(stopped, tmp_path)
    (out / ".state" / "params.json").write_text("{")
    for name in ("rank0.npz", "rank0.prev.npz"):
        (out / ".state" / name).write_bytes(b"damaged")
    assert render_cli(model, out) == 2
    line = one_error_line(capsys)
    assert "params.json: unreadable render parameters file" in line and "--restart" in line


def test_backend_auto_resolving_to_another_backend_on_resume_is_said_as_typed_and_resolved(stopped, tmp_path,
                                                                                             capsys):
    from wavegen.generate import choose_backend

    if choose_backend("samplernn", 1) == "torch":
        pytest.skip("--backend auto resolves to torch here (no numba): the render's own backend")
    model = stopped[0]
    out = copy_of(stopped, tmp_path)
    assert render_cli(model, out, "--backend", "auto") == 2
    line = one_error_line(capsys)
    resolved = choose_backend("samplernn", 1)
    assert (f"holds a render made with backend='torch', but this command's --backend auto runs "
            f"backend='{resolved}' here" in line)
    assert "Pass --backend torch to resume it" in line


@pytest.mark.parametrize("channels, rate, subtype, what", [
    (2, 44100, "PCM_16", "a stereo 44100 Hz 16-bit WAV"), (1, 8000, "PCM_16", "a mono 8000 Hz 16-bit WAV"),
    (1, SR, "FLOAT", f"a mono {SR} Hz 32-bit float WAV")])
def test_another_wav_beside_a_render_without_snapshots_is_said_not_to_be_its_stream(stopped, tmp_path, capsys,
                                                                                    channels, rate, subtype, what):
    """A stream_000.wav of another rate, channel count or format beside a render's .state/ (its snapshots gone) was
    refused as "N s of this render's audio", counted from its header's data size."""
    model = stopped[0]
    out = copy_of(stopped, tmp_path)
    for name in ("rank0.npz", "rank0.prev.npz"):
        (out / ".state" / name).unlink()
    wav = out / "stream_000.wav"
    sf.write(wav, np.zeros((SR, channels), dtype=np.int16), rate, subtype=subtype)
    before = wav.read_bytes()
    assert render_cli(model, out) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"wavegen render: error: {wav} is {what}, not a stream of this render (a mono {SR} Hz "
                           "16-bit WAV)")
    assert "this render's audio" not in line and "--restart" in line
    assert wav.read_bytes() == before


def test_restart_with_params_json_damaged_removes_the_files_its_snapshot_recorded(stopped, tmp_path, caplog):
    """--restart of another layout (FLAC here, the render there a WAV) with params.json damaged: the old render's
    stream_000.wav was left, its layout read from params.json alone; the snapshot records the same parameters."""
    model = stopped[0]
    out = copy_of(stopped, tmp_path)
    (out / ".state" / "params.json").write_text("{")
    (out / "notes.txt").write_text("mine")
    with caplog.at_level("INFO", logger="wavegen.render"):
        render(model, out, settings(0.125, format="flac"), progress=False, restart=True)
    said = [m for m in caplog.messages if m.startswith("--restart")]
    assert said == [f"--restart: removed .state, stream_000.wav from {out} (the render there was of 1 wav stream, "
                    "as its snapshot rank0.npz recorded: params.json is unreadable)"]
    assert sorted(p.name for p in out.iterdir()) == [".lock", "notes.txt", "render_report.json", "stream_000.flac"]


# ----- FLAC: the raw PCM under .state/ has no header to count what a snapshot holds ------------------------

FLAC = dict(format="flac", block_seconds=0.25, snapshot_seconds=0.25)


@pytest.fixture(scope="module")
def stopped_flac(stopped, tmp_path_factory):
    """(model, a FLAC render stopped with 0.5 s in its snapshot and raw PCM, the PCM's bytes)."""
    out = tmp_path_factory.mktemp("flac") / "out"
    stopped_render(stopped[0], out, settings(SECONDS, **FLAC), windows=2)
    assert load_snapshot(out / ".state" / "rank0.npz")[1] == SR // 2
    return stopped[0], out, (out / ".state" / "stream_000.pcm").read_bytes()


def test_a_flac_render_whose_snapshots_are_gone_is_refused_naming_its_raw_pcm(stopped_flac, tmp_path, capsys):
    """Its snapshots gone, the rerun began again and wrote over the half second the raw PCM held."""
    model, _, pcm = stopped_flac
    out = copy_of(stopped_flac, tmp_path)
    for name in ("rank0.npz", "rank0.prev.npz"):
        (out / ".state" / name).unlink()
    assert render_cli(model, out, "--format", "flac", "--block-seconds", 0.25) == 2
    line = one_error_line(capsys)
    assert f"{out / '.state' / 'stream_000.pcm'} holds 0.5 s of this render's audio (raw PCM" in line
    assert "rank0.npz and rank0.prev.npz" in line and "gone" in line and "--restart" in line
    assert (out / ".state" / "stream_000.pcm").read_bytes() == pcm


def test_a_finished_flac_stream_without_snapshots_is_refused(stopped_flac, tmp_path, capsys):
    """A .flac is encoded only once its stream's last snapshot is saved: one there without a snapshot (nor the mark
    of one: a render of an older wavegen) means they were removed; the rerun rendered over it."""
    model = stopped_flac[0]
    out = copy_of(stopped_flac, tmp_path)
    for name in ("rank0.npz", "rank0.prev.npz", "rank0.snapshotted"):
        (out / ".state" / name).unlink(missing_ok=True)  # the mark: none of an older wavegen's render
    encode_flac(out / ".state" / "stream_000.pcm", out / "stream_000.flac", SR)
    before = (out / "stream_000.flac").read_bytes()
    assert render_cli(model, out, "--format", "flac", "--block-seconds", 0.25) == 2
    line = one_error_line(capsys)  # no mark vouches for it: an older wavegen's render, or another program's file
    assert f"{out / 'stream_000.flac'} is a FLAC file where this render writes a stream, but there is no snapshot" \
        in line and "if this render wrote it, its snapshots are gone" in line
    assert (out / "stream_000.flac").read_bytes() == before


def test_a_flac_render_stopped_before_its_first_snapshot_still_just_starts(stopped_flac, tmp_path):
    """Raw PCM (buffered writes) and no snapshot, nor the mark of one: a render killed before its first: it starts."""
    model = stopped_flac[0]
    out = copy_of(stopped_flac, tmp_path)
    for name in ("rank0.npz", "rank0.prev.npz", "rank0.snapshotted"):
        (out / ".state" / name).unlink(missing_ok=True)  # the mark: none of an older wavegen's render
    report = render(model, out, settings(SECONDS, **FLAC), progress=False)
    assert report["status"] == "complete"
    assert (read_pcm(out / "stream_000.flac") == direct_pcm(model, 1, int(SECONDS * SR))[0]).all()


def test_a_flac_render_of_an_older_wavegen_without_the_mark_resumes_from_its_snapshot(stopped_flac, tmp_path,
                                                                                     caplog):
    """A render begun before the rank{r}.snapshotted mark existed, stopped before its .flac was written: its snapshot
    is there, so the mark is never asked for: it resumes from the snapshot (the raw PCM's half second kept, not
    rendered over) and finishes as an uninterrupted render."""
    model, _, pcm = stopped_flac
    out = copy_of(stopped_flac, tmp_path)
    (out / ".state" / "rank0.snapshotted").unlink()
    caplog.set_level("INFO", logger="wavegen.render")
    report = render(model, out, settings(SECONDS, **FLAC), progress=False)
    assert report["status"] == "complete"
    assert any(r.getMessage().startswith(f"resuming {out} at 0.5 s") for r in caplog.records)
    whole = direct_pcm(model, 1, int(SECONDS * SR))[0]
    assert (read_pcm(out / "stream_000.flac") == whole).all()
    assert np.frombuffer(pcm, dtype="<i2").tolist() == whole[:SR // 2].tolist()
