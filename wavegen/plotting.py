"""Pictures of audio, of renders judged against their album, and of generation speed: shared by
render, bench, eval and training samples.

matplotlib is imported only when a picture is drawn (and only its object API, no pyplot, so
no global backend state): a machine without it renders audio and says why there is no PNG.
Every picture is written atomically (:func:`save_figure`): a full disk leaves the old file or
none, never a truncated one. :func:`check_picture_format` checks a picture's file name before the
work that draws it.
A Ctrl-C while matplotlib imports is an interrupt, never "matplotlib is not
installed" (:func:`_matplotlib`).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from wavegen.signals import import_held

logger = logging.getLogger(__name__)


def shown(name: str) -> str:
    """A path or name as a picture can draw it: one named in bytes that are not UTF-8 (surrogate escapes,
    which matplotlib refuses) with those bytes replaced."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _matplotlib(module: str):
    """The matplotlib module named ``module`` (``matplotlib.figure``), imported; None where matplotlib is not
    installed (or cannot import here).

    A Ctrl-C or SIGTERM while it imports is answered when the import ends: pybind11, which builds
    matplotlib's ft2font, reports a KeyboardInterrupt raised inside a module's initialisation as an
    ImportError ("initialization failed"). Taken for a missing matplotlib, the command went on, its next
    import meeting the half-imported package (an AttributeError or ValueError traceback); and the half-made
    module's types abort the interpreter as it exits (a fatal error, SIGABRT), even after the interrupt was
    said. Where signals cannot be held (not the main thread), such an ImportError is a KeyboardInterrupt.
    """
    try:
        return import_held(module)
    except ImportError as err:
        cause = err
        while cause is not None and not isinstance(cause, KeyboardInterrupt):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise KeyboardInterrupt from err
        return None


def spectrogram_summary(audio_path: str | Path, n_fft: int = 1024,
                        columns: int = 1200) -> tuple[np.ndarray, float, int]:
    """An audio file of any length, read block by block (memory flat) → (db [cols, n_fft/2 + 1], seconds, rate).

    Power of non-overlapping Hann frames, averaged into ``cols = min(columns, frames)`` equal
    time columns, in dB. ``n_fft`` shrinks (to a power of two, at least 16) for short files.
    """
    import soundfile as sf

    info = sf.info(os.fsencode(audio_path))  # bytes: soundfile encodes a str path strictly as UTF-8
    total, sr = int(info.frames), int(info.samplerate)
    n_fft = max(16, min(n_fft, 1 << int(math.log2(max(total, 1)))))
    n_frames = max(1, total // n_fft)
    cols = min(columns, n_frames)
    power = np.zeros((cols, n_fft // 2 + 1))
    counts = np.zeros(cols)
    window = np.hanning(n_fft)
    index = 0
    for block in sf.blocks(os.fsencode(audio_path), blocksize=n_fft * 64, dtype="float32", fill_value=0.0):
        if index >= n_frames:
            break
        k = min(64, n_frames - index)  # blocks are padded to full length with zeros
        seg = block[: k * n_fft].reshape(k, n_fft)
        col = np.arange(index, index + k) * cols // n_frames
        np.add.at(power, col, np.abs(np.fft.rfft(seg * window, axis=1)) ** 2)
        np.add.at(counts, col, 1)
        index += k
    return 10 * np.log10(power / np.maximum(counts, 1)[:, None] + 1e-12), total / sr, sr


def spectrogram_png(audio_path: str | Path, png_path: str | Path) -> Path | None:
    """Draw :func:`spectrogram_summary` of an audio file (80 dB range) as a 1000 x 400 PNG.

    Returns the PNG path, or None (with a warning) where matplotlib is not installed.
    """
    figure = _matplotlib("matplotlib.figure")
    if figure is None:
        logger.warning("matplotlib is not installed: no spectrogram (pip install matplotlib)")
        return None
    db, seconds, sr = spectrogram_summary(audio_path)
    scale, unit = (60.0, "min") if seconds > 600 else (1.0, "s")
    fig = figure.Figure(figsize=(10, 4), dpi=100)
    ax = fig.add_subplot()
    image = _db_image(ax, db, seconds / scale, sr / 2)
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("frequency (Hz)")
    ax.set_title(f"{shown(Path(audio_path).name)}: {seconds:.1f} s at {sr} Hz")
    fig.colorbar(image, ax=ax, label="dB")
    fig.tight_layout()
    return save_figure(fig, png_path)


def picture_formats() -> list[str] | None:
    """The file extensions (no dot) matplotlib writes pictures as; None where matplotlib is not installed."""
    backend_bases = _matplotlib("matplotlib.backend_bases")
    if backend_bases is None:
        return None
    return sorted(backend_bases.FigureCanvasBase.get_supported_filetypes())


def _picture_format(path: Path) -> str:
    """The format a picture at ``path`` is written in: its extension, or png where it has none."""
    return path.suffix[1:].lower() or "png"


def check_picture_format(path: str | Path, flag: str) -> None:
    """ConfigError naming ``flag`` and ``path`` where its extension names a format matplotlib does not
    write (none: png). The name only: where the file may go (a folder, a FIFO, a folder that cannot be
    made) is the CLI's wavegen.cli.options.check_picture_file. Without matplotlib nothing is refused:
    the drawing says why there is no picture."""
    from wavegen.config import ConfigError

    path = Path(path)
    formats = picture_formats()
    if formats is not None and _picture_format(path) not in formats:
        raise ConfigError(f"{flag} {path}: matplotlib cannot write .{_picture_format(path)} pictures; end the name "
                          f"with one of {', '.join('.' + f for f in formats)}")


def save_figure(fig, path: str | Path, **savefig_kwargs) -> Path:
    """``fig`` → ``path`` atomically (a temporary file renamed into place: a failed write, a full disk
    included, leaves no partial picture), in the format its extension names (png without one).
    Raises OSError where it cannot be written, ValueError for a format matplotlib does not write."""
    from wavegen.fileio import atomic_write

    path = Path(path)
    fmt = _picture_format(path)
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, **savefig_kwargs))
    return path


# The metadata key a picture's format carries a mark of who drew it in (savefig's metadata): a PNG's tEXt
# chunk, SVG's description, PDF's subject, PostScript's creator. The other formats matplotlib writes
# (jpg, tiff, webp, gif, ...) carry none.
MARK_KEYS = {"png": "Description", "svg": "Description", "svgz": "Description", "pdf": "Subject",
             "eps": "Creator", "ps": "Creator"}
MARKED_PICTURE_BYTES = 64 << 20  # a picture drawn here is a few MB at most: a larger file is another's
COMPARISON_MARK = "wavegen eval --plot: rendered audio compared with its album"
SPEED_MARK = "wavegen bench --plot: generation speed against streams"  # each mark names what drew it, to the colon


def mark_metadata(path: str | Path, mark: str) -> dict:
    """savefig's keyword arguments that write ``mark`` into the picture at ``path`` ({} where its format
    carries no metadata), so that :func:`holds_mark` knows it again."""
    key = MARK_KEYS.get(_picture_format(Path(path)))
    return {"metadata": {key: mark}} if key else {}


def can_mark(path: str | Path) -> bool:
    """Whether a picture at ``path`` (its format, from the extension) can carry a mark."""
    return _picture_format(Path(path)) in MARK_KEYS


def holds_mark(path: str | Path, mark: str) -> bool:
    """Whether the file at ``path`` is a picture drawn with ``mark`` (:func:`mark_metadata`): the mark's
    bytes in it (a gzip-compressed SVG unpacked first). False for any other file, or one not readable."""
    import gzip

    try:
        with open(path, "rb") as f:
            data = f.read(MARKED_PICTURE_BYTES + 1)
        if data[:2] == b"\x1f\x8b":  # svgz: unpacked up to the same bound
            with gzip.open(path, "rb") as f:
                data = f.read(MARKED_PICTURE_BYTES + 1)
    except (OSError, EOFError):  # gzip.BadGzipFile is an OSError
        return False
    return len(data) <= MARKED_PICTURE_BYTES and mark.encode("latin-1") in data



def check_replaceable(path: str | Path, flag: str, mark: str) -> None:
    """ConfigError where a file at ``path`` (``flag``'s) is not one to replace: a file is replaced only where it
    is empty or holds ``mark`` (a picture drawn earlier by the same command); a picture or any file of the
    user's is refused, named, before any work."""
    from wavegen.config import ConfigError

    target = Path(path).expanduser()
    if not target.is_file() or target.stat().st_size == 0 or holds_mark(target, mark):
        return
    why = (f"holds a picture or file that {mark.split(':')[0]} did not draw" if can_mark(target) else
           f"a file is there, and a {target.suffix} picture carries no mark of what drew it (a .png, .svg, .pdf "
           "or .eps does), so it may be yours")
    raise ConfigError(f"{flag} {path}: {why}; not overwritten: give {flag} a new file name (or remove {path} "
                      "first)")

FLOOR_DB = -120.0  # the spectrograms' power floor (1e-12): silence
RANGE_DB = 80.0


def _db_image(ax, db: np.ndarray, width: float, top_hz: float):
    """db [columns, bins] on ``ax`` as every spectrogram here is drawn: 80 dB under its peak (silence, at
    FLOOR_DB, drawn dark: its own peak would draw it as loud as can be), 0 .. ``width`` across (time),
    0 .. ``top_hz`` up. Returns the image (for a colorbar)."""
    peak = max(float(db.max()), FLOOR_DB + RANGE_DB)
    return ax.imshow(db.T, origin="lower", aspect="auto", cmap="magma", vmin=peak - RANGE_DB, vmax=peak,
                     extent=(0, width, 0, top_hz))


def speed_png(results: list[dict] | dict, png_path: str | Path) -> Path | None:
    """Generation speed (:func:`wavegen.bench.bench_generation` results) as a PNG: aggregate samples/s
    against batch, one line per backend, log axes, one panel per result (model).

    The dashed line is real time for every stream at the model's rate (rate x batch). The PNG's
    folder is made if missing. Returns the PNG path, or None (with a warning) without matplotlib.
    """
    figure = _matplotlib("matplotlib.figure")
    if figure is None:
        logger.warning("matplotlib is not installed: no speed plot (pip install matplotlib)")
        return None
    results = [results] if isinstance(results, dict) else list(results)
    fig = figure.Figure(figsize=(5.2 * len(results), 4.8))
    axes = fig.subplots(1, len(results), squeeze=False)
    markers = {"torch": "s", "numba": "o", "numba-fp16": "D", "cuda": "^"}
    for ax, result in zip(axes[0], results):
        for backend in dict.fromkeys(r["backend"] for r in result["rows"]):
            rows = sorted((r for r in result["rows"] if r["backend"] == backend), key=lambda r: r["batch"])
            ax.plot([r["batch"] for r in rows], [r["samples_per_second"] for r in rows],
                    marker=markers.get(backend, "x"), label=backend)
        batches = sorted({r["batch"] for r in result["rows"]})
        rate = result["model"]["sample_rate"]
        real_time = {"color": "k", "linestyle": "--", "linewidth": 0.8, "label": f"real time ({rate} Hz), every stream"}
        if len(batches) == 1:  # a line through one point draws nothing: its one rate across the panel
            ax.axhline(rate * batches[0], **real_time)
        else:
            ax.plot(batches, [rate * b for b in batches], **real_time)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("streams (batch)")
        ax.set_ylabel("samples / s, all streams")
        ax.set_title(shown(result["model"]["name"]), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        # below the panel: inside, it hid a point (one batch puts every point in the panel's middle column)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    m = results[0]["machine"]
    where = m["cpu"] if m["device"] == "cpu" else m.get("gpu")
    threads = f"numba {m.get('numba_threads')} / torch {m['torch_threads']} threads"
    fig.suptitle(f"generation speed: {where}, {threads}", fontsize=9)
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, png_path, dpi=110, **mark_metadata(png_path, SPEED_MARK))  # known again (bench --plot)


def plot_comparison(result: dict, path: str | Path, examples: dict | None = None) -> Path | None:
    """A :func:`wavegen.analysis.compare_renders` result as a PNG at ``path``: every frame
    feature's distribution, one line per set, and the Frechet distances; with ``examples``
    (``{"renders": y, "test": y}``, as ``compare_renders(..., examples=True)`` keeps them) a row
    of spectrograms below, a render beside the album, which shows what the numbers do not (a
    tone held for seconds where the album plays notes; a noise floor between the partials).

    Returns the path, or None (with a warning) where matplotlib is not installed.
    """
    figure = _matplotlib("matplotlib.figure")
    if figure is None:
        logger.warning("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    from wavegen.analysis import SETS
    from wavegen.analysis_features import FRAME_FEATURES

    names = list(result["histograms"])
    cols = 4
    rows = math.ceil((len(names) + 1) / cols)
    total_rows = rows + (1 if examples else 0)
    fig = figure.Figure(figsize=(4 * cols, 3 * total_rows), dpi=100)
    grid = fig.add_gridspec(total_rows, cols)
    styles = {"renders": ("tab:red", "-", 2.0), "test": ("black", "-", 2.0), "train": ("tab:blue", "--", 1.5),
              "white_noise": ("tab:gray", ":", 1.5), "pink_noise": ("tab:pink", ":", 1.5)}
    for i, name in enumerate(names):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        h = result["histograms"][name]
        edges = np.asarray(h["edges"])
        centers = (edges[1:] + edges[:-1]) / 2
        for s, density in h["density"].items():
            color, line, width = styles.get(s, (None, "-", 1.0))
            ax.plot(centers, density, color=color, linestyle=line, linewidth=width, label=s)
        unit = FRAME_FEATURES[name][0]
        ax.set_title(name + (f" ({unit})" if unit else ""), fontsize=9)
        ax.tick_params(labelsize=7)
    ax = fig.add_subplot(grid[len(names) // cols, len(names) % cols])
    sets = [s for s in SETS if s in result["distances"]]
    ax.bar(range(len(sets)), [result["distances"][s]["frechet"] for s in sets],
           color=[styles[s][0] for s in sets])
    ax.set_xticks(range(len(sets)), sets, rotation=30, fontsize=7)
    ax.set_yscale("log")
    # the "test" set is the split compared with (--split: test or val), of one label's audio where one was given
    split = result.get("split", "test")
    ax.set_title(f"Frechet distance to {split} (log)", fontsize=9)
    fig.axes[0].legend(loc="upper left", fontsize=7)
    label = result.get("label")
    album = f"the album ({split} split" + (f", label {label}" if label is not None else "") + ")"
    for k, name in enumerate(("renders", "test") if examples else ()):
        _spectrogram_panel(fig.add_subplot(grid[rows, 2 * k: 2 * k + 2]), examples[name], result["sample_rate"],
                           "a render" if name == "renders" else album)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, **mark_metadata(path, COMPARISON_MARK))  # known again as ours (eval --plot)


SPECTROGRAM_TOP_HZ = 5000.0  # the panels show 0 .. this (or Nyquist): where the notes and their partials lie


def _spectrogram_panel(ax, y: np.ndarray, sample_rate: int, title: str) -> None:
    """An 80 dB spectrogram of one excerpt (the comparison's frame size) on ``ax``."""
    from wavegen.analysis_features import frame_signal, frame_size

    n_fft, hop = frame_size(sample_rate)
    frames = frame_signal(np.asarray(y, np.float32), n_fft, hop) * np.hanning(n_fft)
    db = 10 * np.log10(np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12)
    top = min(SPECTROGRAM_TOP_HZ, sample_rate / 2)
    bins = int(top / (sample_rate / n_fft)) + 1
    _db_image(ax, db[:, :bins], len(y) / sample_rate, (bins - 1) * sample_rate / n_fft)
    ax.set_title(f"{title}: {len(y) / sample_rate:.0f} s", fontsize=9)
    ax.set_xlabel("time (s)", fontsize=8)
    ax.set_ylabel("Hz", fontsize=8)
    ax.tick_params(labelsize=7)
