"""Pictures (wavegen/plotting.py): the summary finds a tone; the PNG is a real image, written atomically; a
picture's file name is checked against the formats matplotlib writes."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wavegen.config import ConfigError
from wavegen.plotting import (can_mark, check_picture_format, holds_mark, mark_metadata, picture_formats, save_figure,
                               spectrogram_png, spectrogram_summary)


def test_spectrogram_summary_finds_the_tone_and_png_is_valid(tmp_path):
    path = tmp_path / "tone.wav"
    t = np.arange(8000 * 12) / 8000
    sf.write(str(path), (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 8000, subtype="PCM_16")
    db, seconds, sr = spectrogram_summary(path, n_fft=1024, columns=40)
    assert (seconds, sr) == (12.0, 8000)
    assert db.shape == (40, 513)
    peak_hz = db.argmax(axis=1) * sr / 1024
    assert np.all(np.abs(peak_hz - 1000) <= sr / 1024)
    png = spectrogram_png(path, tmp_path / "tone.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1000, 400)


def _tone_file(tmp_path):
    path = tmp_path / "tone.wav"
    t = np.arange(8000 * 2) / 8000
    sf.write(str(path), (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 8000, subtype="PCM_16")
    return path


def test_a_picture_is_written_atomically_a_full_disk_leaves_the_old_one_or_none(tmp_path, monkeypatch):
    import errno
    import io

    from matplotlib.figure import Figure

    audio = _tone_file(tmp_path)
    old = spectrogram_png(audio, tmp_path / "kept.png").read_bytes()
    real = Figure.savefig

    def half_then_full(self, target, **kwargs):  # writes half the picture, then the disk is full
        buffer = io.BytesIO()
        real(self, buffer, **kwargs)
        data = buffer.getvalue()
        if isinstance(target, (str, Path)):
            Path(target).write_bytes(data[: len(data) // 2])
        else:
            target.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", half_then_full)
    for name in ("new.png", "kept.png"):
        with pytest.raises(OSError, match="No space left on device"):
            spectrogram_png(audio, tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.png", "tone.wav"]  # no partial file, no temporary
    assert (tmp_path / "kept.png").read_bytes() == old


def test_a_picture_name_is_checked_against_what_matplotlib_writes(tmp_path):
    (tmp_path / "folder").mkdir()
    for name in ("p.png", "p.PDF", "p.svg", "no_extension", "new/p.png", "folder"):  # the name only
        check_picture_format(tmp_path / name, "--plot")
    with pytest.raises(ConfigError, match=r"^--plot .*p\.txt: matplotlib cannot write \.txt pictures; end the name "
                                          r"with one of .*\.pdf.*\.png.*\.svg"):
        check_picture_format(tmp_path / "p.txt", "--plot")
    assert not (tmp_path / "new").exists()
    assert {"png", "pdf", "svg"} <= set(picture_formats())


def test_a_picture_path_is_checked_once_with_the_pictures_messages(tmp_path, monkeypatch):
    """--plot was checked twice, by plotting.check_picture_path and cli.options.check_output_file, each
    stat-ing the path: one check now (check_picture_file: the format, then the path's checks)."""
    from wavegen import fileio
    from wavegen.cli.options import check_picture_file

    looked = []
    real = fileio.not_a_file
    monkeypatch.setattr(fileio, "not_a_file", lambda path: looked.append(str(path)) or real(path))
    check_picture_file(tmp_path / "new" / "p.png", "--plot", "compare.png", "m")
    assert looked == [str(tmp_path / "new" / "p.png")] and (tmp_path / "new").is_dir()
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError, match=r"^--plot .*folder: is a folder; give a file name for the picture "
                                          r"\(e\.g\. .*folder/compare\.png\)$"):
        check_picture_file(tmp_path / "folder", "--plot", "compare.png", "m")
    os.mkfifo(tmp_path / "pipe")  # a FIFO (or a device): the picture would replace it
    with pytest.raises(ConfigError, match=r"^--plot .*pipe: is a FIFO, not a regular file; give a file name for "
                                          r"the picture$"):
        check_picture_file(tmp_path / "pipe", "--plot", "compare.png", "m")
    with pytest.raises(ConfigError, match=r"matplotlib cannot write \.txt pictures"):  # before any folder is made
        check_picture_file(tmp_path / "other" / "p.txt", "--plot", "compare.png", "m")
    assert not (tmp_path / "other").exists()


def test_a_picture_never_replaces_a_fifo(tmp_path):
    from wavegen.errors import WavegenError

    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(WavegenError, match=r"pipe: is a FIFO, not a regular file; nothing was written"):
        spectrogram_png(_tone_file(tmp_path), tmp_path / "pipe")
    assert (tmp_path / "pipe").is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["pipe", "tone.wav"]


def test_every_format_matplotlib_names_is_written_as_its_extension_says(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    save_figure(fig, tmp_path / "a.svg")
    save_figure(fig, tmp_path / "a.PDF")
    save_figure(fig, tmp_path / "bare")
    assert b"<svg" in (tmp_path / "a.svg").read_bytes()[:400]
    assert (tmp_path / "a.PDF").read_bytes()[:5] == b"%PDF-"
    assert (tmp_path / "bare").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # no extension: png


def test_pictures_of_files_and_models_named_in_bytes_that_are_not_utf8(tmp_path):
    """A folder named in Latin-1 (b"r\\xe9un": surrogate escapes in Python): soundfile refused the path (it
    encodes a str strictly as UTF-8) and matplotlib refused the name in a title; both pictures are drawn."""
    from wavegen.plotting import speed_png

    folder = tmp_path / os.fsdecode(b"r\xe9un")
    folder.mkdir()
    wav = folder / "tone.wav"
    wav.write_bytes(_tone_file(tmp_path).read_bytes())
    db, seconds, _ = spectrogram_summary(wav, n_fft=256, columns=10)
    assert seconds == 2.0 and db.shape == (10, 129)
    assert spectrogram_png(wav, folder / "tone.png").read_bytes()[:4] == b"\x89PNG"
    rows = [{"backend": "numba", "batch": b, "samples_per_second": 1000.0 * b} for b in (1, 2)]
    result = {"model": {"name": str(folder), "sample_rate": 8000}, "rows": rows,
              "machine": {"device": "cpu", "cpu": "test", "torch_threads": 1}}
    assert speed_png(result, folder / "speed.png").read_bytes()[:4] == b"\x89PNG"


def test_silence_is_drawn_dark_not_as_loud_as_can_be(tmp_path):
    """Each spectrogram spans 80 dB under its own peak: a silent render (every bin at the -120 dB floor) was
    drawn in the colour of that peak, the brightest, as if it were full-scale noise (eval's --plot, a
    render's PNG). It is drawn in the darkest; a sounding file keeps its own 80 dB range."""
    from matplotlib.figure import Figure

    from wavegen.plotting import _db_image

    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(8000, np.float32), 8000, subtype="PCM_16")
    for path, darkest in ((silent, True), (_tone_file(tmp_path), False)):
        db, seconds, sr = spectrogram_summary(path)
        image = _db_image(Figure().add_subplot(), db, seconds, sr / 2)
        colours = image.to_rgba(image.get_array())
        if darkest:
            assert np.allclose(colours, image.cmap(0.0))
        else:
            assert image.get_clim() == (float(db.max()) - 80, float(db.max()))


def test_a_picture_carries_a_mark_known_again_in_every_format_that_has_metadata(tmp_path):
    """eval --plot replaces only its own pictures: the mark is written where the format holds metadata (a PNG's
    tEXt chunk, an SVG's description, compressed in .svgz, a PDF's subject, PostScript's creator) and found
    again; a picture drawn without it, or any other file, is not taken for one."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    for fmt in ("png", "svg", "svgz", "pdf", "eps"):
        fig = Figure(figsize=(2, 2))
        fig.add_subplot().plot([0, 1])
        marked, plain = tmp_path / f"marked.{fmt}", tmp_path / f"plain.{fmt}"
        save_figure(fig, marked, **mark_metadata(marked, "wavegen test mark"))
        save_figure(fig, plain)
        assert can_mark(marked) and holds_mark(marked, "wavegen test mark"), fmt
        assert not holds_mark(plain, "wavegen test mark") and not holds_mark(marked, "another mark"), fmt
    assert mark_metadata(tmp_path / "a.jpg", "m") == {} and not can_mark(tmp_path / "a.jpg")
    assert not holds_mark(tmp_path / "missing.png", "m")
