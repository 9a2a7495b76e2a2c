"""What a render does when something goes wrong after it started: a full disk while a spectrogram
PNG or a FLAC file is written (one line saying the audio is intact, nothing partial left, a rerun
finishes it), a stream file removed from an unfinished render (named, with --restart), and a
resume on another numba thread count (refused, naming both counts and the --threads to pass).

The full disk is simulated where the bytes are written (matplotlib's savefig, the FLAC encoder's
file) by an OSError(ENOSPC) after part of the data, as the kernel answers on a full disk."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from render_helpers import SR, direct_pcm, file_bytes, make_model, read_pcm, settings, stopped_render, write_streams
from wavegen.cli import main
from wavegen.fileio import atomic_write
from wavegen.render import (RenderFolder, RenderStateError, RenderWriteError, encode_flac, load_snapshot, render,
                            save_snapshot)
from wavegen.render import writers as render_writers

NO_SPACE = OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def reference(model) -> np.ndarray:
    """What a 1 s render of 2 streams of the model must contain, computed once for the module: int16 [2, SR] (the
    engine run directly; a shorter render, or one of fewer streams, holds its start: each stream's uniforms depend
    only on its index and position)."""
    return direct_pcm(model, 2, SR)


@pytest.fixture(scope="module")
def stopped(model, tmp_path_factory):
    """``stopped(fmt, out)``: ``out`` a copy of an unfinished render of 2 streams x 1 s in ``fmt``, stopped as by Ctrl-C
    in its third window (its last snapshot at 0.5 s: render_helpers.stopped_render), made once per format for the
    module; → its settings."""
    made = {}

    def copy(fmt: str, out: Path):
        s = settings(1.0, streams=2, format=fmt, block_seconds=0.25, snapshot_seconds=0.25)
        if fmt not in made:
            made[fmt] = tmp_path_factory.mktemp(f"stopped_{fmt}") / "r"
            stopped_render(model, made[fmt], s, windows=2)
        shutil.copytree(made[fmt], out)
        return s
    return copy


def leftovers(folder: Path) -> list[str]:
    """Partial files a failed write may leave: pictures, FLACs and atomic_write's temporary files."""
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".png", ".flac") or ".tmp" in p.name)


def render_cli(model, out, *extra) -> int:
    return main(["-q", "render", str(model), "--out", str(out), "--backend", "torch", "--no-guard",
                 *map(str, extra)])


# ----- a full disk while the spectrogram PNG is written ---------------------------------------------

@pytest.fixture
def png_disk_full(monkeypatch):
    """matplotlib writes half of each picture, then fails as a full disk does."""
    from matplotlib.figure import Figure

    real = Figure.savefig

    def savefig(self, target, **kwargs):
        buffer = io.BytesIO()
        real(self, buffer, **{"format": "png", **kwargs})
        half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        if isinstance(target, (str, os.PathLike)):
            Path(target).write_bytes(half)
        else:
            target.write(half)
        raise OSError(NO_SPACE.errno, NO_SPACE.strerror)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return monkeypatch


def test_a_full_disk_while_a_spectrogram_is_written_is_one_line_and_leaves_no_partial_png(model, reference, tmp_path,
                                                                                           capsys, png_disk_full):
    out = tmp_path / "o2"
    flags = ["--seconds", 0.25, "--streams", 2]
    assert render_cli(model, out, *flags) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"wavegen render: error: cannot write {out / 'stream_000.png'}: No space left on device; 0.2 s of "
                   "each stream written so far are intact; free space (or make the folder writable) and rerun the "
                   "same command to resume")
    assert leftovers(out) == []  # no truncated PNG, no temporary file
    with pytest.raises(RenderWriteError, match=r"stream_000\.png: No space left on device; 0\.2 s .* intact"):
        render(model, out, settings(0.25, streams=2, spectrogram=True), progress=False)
    png_disk_full.undo()  # space freed: the same command finishes the render
    assert render_cli(model, out, *flags) == 0
    report = json.loads((out / "render_report.json").read_text())
    assert report["spectrograms"] == ["stream_000.png", "stream_001.png"]
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in report["spectrograms"])
    expected = reference[:, :SR // 4]
    assert all(np.array_equal(read_pcm(out / f"stream_{i:03d}.wav"), expected[i]) for i in range(2))


# ----- a full disk while a FLAC file is encoded ------------------------------------------------------

class FullDisk:
    """A binary file that takes ``room`` bytes, then fails every write as a full disk does."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def write(self, data) -> int:
        if self.file.tell() + len(data) > self.room:
            raise OSError(NO_SPACE.errno, NO_SPACE.strerror)
        return self.file.write(data)

    def seek(self, offset, whence=0):
        return self.file.seek(offset, whence)

    def tell(self):
        return self.file.tell()


@pytest.fixture
def flac_disk_full(monkeypatch):
    """FLAC files (only) meet a full disk after 2000 bytes; snapshots and everything else are written."""
    def limited(path, data):
        if Path(path).suffix != ".flac":
            return atomic_write(path, data)
        return atomic_write(path, lambda f: data(FullDisk(f, 2000)))

    monkeypatch.setattr(render_writers, "atomic_write", limited)
    return monkeypatch


@pytest.fixture
def unraisable(monkeypatch):
    """What Python reports as ignored exceptions (cffi's callbacks print theirs through this hook)."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: seen.append(info.exc_value))
    return seen


def test_encode_flac_on_a_full_disk_raises_the_disk_error_and_prints_nothing(tmp_path, flac_disk_full, unraisable,
                                                                             capfd):
    pcm = tmp_path / "s.pcm"
    pcm.write_bytes((np.arange(SR * 2) * 997 % 65536 - 32768).astype("<i2").tobytes())
    with pytest.raises(OSError) as caught:
        encode_flac(pcm, tmp_path / "s.flac", SR)
    assert caught.value.errno == errno.ENOSPC and caught.value.strerror == "No space left on device"
    assert unraisable == [] and "Exception ignored" not in capfd.readouterr().err
    assert leftovers(tmp_path) == []
    # the encoder failing without a disk error to name still says what failed
    flac_disk_full.undo()
    import soundfile as sf

    def fail(self, data):
        raise AssertionError
    flac_disk_full.setattr(sf.SoundFile, "write", fail)
    with pytest.raises(RuntimeError, match=r"^the FLAC encoder \(libsndfile\) failed: AssertionError$"):
        encode_flac(pcm, tmp_path / "s.flac", SR)
    assert leftovers(tmp_path) == []


def test_a_full_disk_while_flac_is_encoded_names_the_reason_and_a_rerun_finishes(model, reference, tmp_path, capsys,
                                                                                 flac_disk_full, unraisable):
    out = tmp_path / "f"
    flags = ["--seconds", 0.5, "--format", "flac", "--no-spectrogram"]
    assert render_cli(model, out, *flags) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"wavegen render: error: cannot write {out / 'stream_000.flac'}: No space left on device; 0.5 s of "
                   "each stream written so far are intact; free space (or make the folder writable) and rerun the "
                   "same command to resume")
    assert unraisable == [] and leftovers(out) == []
    flac_disk_full.undo()
    assert render_cli(model, out, *flags) == 0
    ref = write_streams(tmp_path / "ref", reference[:1, :SR // 2], "flac")
    assert file_bytes(out, 1, "flac") == file_bytes(ref, 1, "flac")


def test_a_write_error_without_a_reason_still_gives_one(tmp_path):
    folder = RenderFolder(tmp_path / "out", 1, "flac")
    for err in (AssertionError(), RuntimeError("")):
        message = str(folder.io_error(folder.paths[0], err, SR, SR))
        assert message.startswith(f"cannot write {folder.paths[0]}: {type(err).__name__} (no reason given); 1.0 s")


# ----- a stream file removed from an unfinished render ---------------------------------------------

@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_a_stream_file_removed_from_an_unfinished_render_is_named_with_restart(model, reference, stopped, tmp_path,
                                                                              capsys, fmt):
    out = tmp_path / "dmg"
    s = stopped(fmt, out)
    removed = out / "stream_001.wav" if fmt == "wav" else out / ".state" / "stream_001.pcm"
    removed.unlink()
    message = (f"{removed} is missing: it was removed since the render's last snapshot (which holds 2000 samples of "
               "it); rerun with --restart to start over")
    with pytest.raises(RenderStateError) as caught:
        render(model, out, s, progress=False)
    assert str(caught.value) == message
    assert render_cli(model, out, "--seconds", 1.0, "--streams", 2, "--format", fmt, "--no-spectrogram",
                      "--snapshot-seconds", 0.25, "--block-seconds", 0.25) == 2
    assert capsys.readouterr().err.strip() == f"wavegen render: error: {message}"
    render(model, out, s, progress=False, restart=True)
    ref = write_streams(tmp_path / "ref", reference, fmt)
    assert file_bytes(out, 2, fmt) == file_bytes(ref, 2, fmt)


@pytest.mark.parametrize("fmt, edit", [("wav", "float"), ("wav", "gain"), ("flac", "gain")])
def test_a_stream_file_rewritten_between_sessions_is_refused_and_left_as_it_is(model, reference, stopped, tmp_path,
                                                                               fmt, edit):
    """A WAV opened in an editor and saved again (as float, or at another gain) was resumed: the length check
    passed, the file was cut to the snapshot's bytes and continued, and the render came out "complete" with
    its first seconds noise (float bytes read as 16-bit) or not what it rendered. Now the header and the
    samples' CRC-32 (recorded with each snapshot) are checked, and the file is left as the user made it."""
    import soundfile as sf

    out = tmp_path / "edit"
    s = stopped(fmt, out)
    path = out / "stream_001.wav" if fmt == "wav" else out / ".state" / "stream_001.pcm"
    if fmt == "wav":
        pcm = read_pcm(path)
        sf.write(str(path), pcm / 32768.0 if edit == "float" else pcm // 2, SR,
                 subtype="FLOAT" if edit == "float" else "PCM_16")
    else:
        pcm = np.frombuffer(path.read_bytes(), dtype="<i2")
        path.write_bytes((pcm // 2).astype("<i2").tobytes())
    edited = path.read_bytes()
    with pytest.raises(RenderStateError) as caught:
        render(model, out, s, progress=False)
    why = ("is a mono 4000 Hz 32-bit float WAV, not the mono 4000 Hz 16-bit WAV this render writes" if edit == "float"
           else "their CRC-32 differs from its snapshot's")
    assert str(caught.value).startswith(str(path)) and why in str(caught.value)
    assert "rerun with --restart" in str(caught.value)
    assert path.read_bytes() == edited
    render(model, out, s, progress=False, restart=True)
    ref = write_streams(tmp_path / "ref", reference, fmt)
    assert file_bytes(out, 2, fmt) == file_bytes(ref, 2, fmt)


def test_a_snapshot_without_crc32s_an_older_wavegen_wrote_still_resumes_byte_for_byte(model, reference, stopped,
                                                                                      tmp_path):
    out = tmp_path / "old"
    s = stopped("wav", out)
    snapshot = RenderFolder(out, 2, "wav").snapshot_path(0)
    state, written, meta = load_snapshot(snapshot)
    assert len(meta.pop("crc32")) == 2 and written == 2000
    save_snapshot(snapshot, state, written, meta)
    render(model, out, s, progress=False)
    ref = write_streams(tmp_path / "ref", reference, "wav")
    assert file_bytes(out, 2) == file_bytes(ref, 2)


# ----- the numba engine's thread count decides how a render rounds ---------------------------------

@pytest.fixture
def numba_threads():
    """numba, where its engine runs here and can use 2 threads; its thread count is put back after."""
    numba = pytest.importorskip("numba")
    from wavegen.generate import available_backends

    if available_backends("samplernn").get("numba") is not None or numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("no numba engine with 2 threads here")
    before = numba.get_num_threads()
    yield numba
    numba.set_num_threads(before)


def test_a_resume_on_another_numba_thread_count_is_refused_naming_both(model, tmp_path, capsys, numba_threads):
    out = tmp_path / "t"
    s = settings(1.0, streams=3, backend="numba", block_seconds=0.25, snapshot_seconds=0.25)
    numba_threads.set_num_threads(2)
    stopped_render(model, out, s, windows=2)
    assert json.loads((out / ".state" / "params.json").read_text())["threads"] == 2
    numba_threads.set_num_threads(1)
    message = (f"{out} holds a render made by the numba engine with threads=2, but this command runs threads=1 "
               "(--threads N, or all cores when not given); the engine's sums round by the thread count, so the "
               "audio would differ. Pass --threads 2 to resume it, --restart to discard it, or choose another --out")
    with pytest.raises(RenderStateError) as caught:
        render(model, out, s, progress=False)
    assert str(caught.value) == message
    flags = ["--seconds", 1.0, "--streams", 3, "--no-spectrogram", "--snapshot-seconds", 0.25, "--block-seconds", 0.25]
    assert main(["-q", "render", str(model), "--out", str(out), "--backend", "numba", "--no-guard",
                 *map(str, flags), "--threads", "1"]) == 2
    assert capsys.readouterr().err.strip() == f"wavegen render: error: {message}"
    numba_threads.set_num_threads(2)  # the count it was made with: resumed, as if never stopped
    report = render(model, out, s, progress=False)
    assert report["params"]["threads"] == 2 and report["sessions"] == 2
    render(model, tmp_path / "whole", s, progress=False)
    assert file_bytes(out, 3) == file_bytes(tmp_path / "whole", 3)
    numba_threads.set_num_threads(1)  # a finished render is refused on another count too, as any parameter
    with pytest.raises(RenderStateError, match="threads=2, but this command runs threads=1"):
        render(model, out, s, progress=False)


def test_a_count_beyond_this_machine_says_how_to_reach_it_and_one_stream_binds_no_count(model, tmp_path,
                                                                                        numba_threads):
    out = tmp_path / "far"
    s = settings(0.5, streams=2, backend="numba", block_seconds=0.25, snapshot_seconds=0.25)
    stopped_render(model, out, s, windows=1)
    params = json.loads((out / ".state" / "params.json").read_text())
    (out / ".state" / "params.json").write_text(json.dumps({**params, "threads": 100000}))  # made on a big machine
    with pytest.raises(RenderStateError, match=r"threads=100000, .* Pass --threads 100000 to resume it \(numba runs "
                                               r"at most \d+ threads here: also set NUMBA_NUM_THREADS=100000\)"):
        render(model, out, s, progress=False)
    # one stream runs in one group whatever the count: the count decides nothing and binds nothing
    one = settings(0.25, backend="numba")
    numba_threads.set_num_threads(2)
    assert render(model, tmp_path / "one", one, progress=False)["params"]["threads"] == 1
    numba_threads.set_num_threads(1)
    assert render(model, tmp_path / "one", one, progress=False)["params"]["threads"] == 1
    # the torch engine's audio does not depend on the count: none is recorded
    assert render(model, tmp_path / "torch", settings(0.25), progress=False)["params"]["threads"] is None


def test_a_render_recorded_before_thread_counts_were_resumed_with_a_warning(model, tmp_path, numba_threads, caplog):
    out = tmp_path / "old"
    s = settings(1.0, streams=2, backend="numba", block_seconds=0.25, snapshot_seconds=0.25)
    numba_threads.set_num_threads(2)
    stopped_render(model, out, s, windows=2)
    params_path = out / ".state" / "params.json"  # as an older wavegen wrote them: no "threads"
    params_path.write_text(json.dumps({k: v for k, v in json.loads(params_path.read_text()).items() if k != "threads"}))
    for snapshot in (out / ".state").glob("rank0*.npz"):
        state, written, meta = load_snapshot(snapshot)
        del meta["params"]["threads"]
        save_snapshot(snapshot, state, written, meta)
    numba_threads.set_num_threads(1)
    caplog.clear()
    with caplog.at_level("WARNING", logger="wavegen.render"):
        report = render(model, out, s, progress=False)
    assert report["status"] == "complete" and report["params"]["threads"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"{out}: started before renders recorded their thread count; resuming on 1 thread (if it "
                        "was started on another count, its streams may differ from an uninterrupted render)"]


def test_a_ctrl_c_while_flac_is_encoded_is_raised_between_blocks_and_leaves_nothing(tmp_path, unraisable, capfd):
    """A Ctrl-C arriving while libsndfile calls back into Python to write: raised there, cffi printed
    and dropped it and the encoder failed ("a full disk"); it is raised between blocks instead, and the
    partial FLAC goes with it."""
    import signal

    pcm = tmp_path / "s.pcm"
    pcm.write_bytes((np.arange(SR * 40) * 997 % 65536 - 32768).astype("<i2").tobytes())  # several blocks
    real, calls = render_writers._KeptErrorFile.write, []

    def write(self, data):
        calls.append(len(data))
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)  # Python's own handler: KeyboardInterrupt
        return real(self, data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(render_writers._KeptErrorFile, "write", write)
        with pytest.raises(KeyboardInterrupt):
            encode_flac(pcm, tmp_path / "s.flac", SR)
    assert unraisable == [] and "Exception ignored" not in capfd.readouterr().err
    assert leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back
    encode_flac(pcm, tmp_path / "s.flac", SR)  # and a signal-free encode is whole
    assert sf_frames(tmp_path / "s.flac") == SR * 40


def sf_frames(path) -> int:
    import soundfile as sf

    return sf.info(str(path)).frames


@pytest.mark.parametrize("size", [0, 4, 43])
def test_a_stream_file_cut_inside_its_header_is_said_to_be_cut_short(tmp_path, size):
    """A WAV cut to fewer bytes than its header was called "not the WAV this render writes (its header differs)":
    it was cut short, not rewritten."""
    path = tmp_path / "stream_000.wav"
    writer = render_writers.PCMWriter(path, SR)
    writer.write(np.arange(100, dtype=np.int16))
    writer.close()
    os.truncate(path, size)
    with pytest.raises(RenderStateError) as caught:
        render_writers.PCMWriter(path, SR, resume_frames=100)
    assert str(caught.value) == (f"{path} is cut short ({size} bytes, less than a WAV header; its snapshot counts 100 "
                                 "samples): it was changed since; rerun with --restart to start over")
    assert path.stat().st_size == size  # left as it was


def test_a_resume_that_reads_much_of_its_files_says_so_first(tmp_path, monkeypatch, caplog):
    """A resume reads each file's samples whole for their CRC-32 (an hour of 100 streams: 11.5 GB): said first."""
    paths = [tmp_path / f"stream_00{k}.wav" for k in range(2)]
    writers = render_writers.StreamWriters(paths, SR, True, None, RenderWriteError)
    writers.write(np.zeros((2, 1000), dtype=np.int16))
    writers.close()
    monkeypatch.setattr(render_writers, "SAY_CHECK_BYTES", 4000)  # the two files' 4000 bytes of samples
    with caplog.at_level("INFO", logger="wavegen.render"):
        render_writers.StreamWriters(paths, SR, True, 1000, RenderWriteError).close()
        render_writers.StreamWriters(paths, SR, True, 999, RenderWriteError).close()
    assert caplog.messages == ["checking the 2 files against the snapshot (0.0 GB read) before resuming"]
