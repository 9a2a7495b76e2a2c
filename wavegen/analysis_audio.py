"""The audio :func:`wavegen.analysis.compare_renders` judges, read and no more.

Where the excerpts lie is planned from lengths alone (:func:`wavegen.analysis.plan_excerpts`): a
render's length from its file's header, a corpus segment's from the corpus. Only the planned
excerpts are then read (a seek and a read each) and converted to float: a 3-hour render judged on
120 s costs 120 s of memory, not 3 hours. Files that cannot be read that way (MP3, whose decoder
returns zeros after a seek; a file that turns out damaged) are decoded whole, as prep decodes them; a WAV
whose header was never finished (its data size 0) too, through wavegen.prep_wav's view of it, with a warning.

A render file that cannot be judged (undecodable, shorter than MIN_RENDER_SECONDS, NaN or infinite
samples, or samples over MAX_PEAK times full scale, in what is read) is skipped with a warning naming
it and why; the folder is refused only when no file is left. One file named is judged alone.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from wavegen.analysis import AUDIO_SUFFIXES, MIN_RENDER_SECONDS, AnalysisError, plan_excerpts
from wavegen.errors import some_of
from wavegen.progress import counted
from wavegen.resolve_why import ARCHIVE_PARTS, is_archive

logger = logging.getLogger(__name__)

RESAMPLE_MARGIN_SECONDS = 0.01  # read either side of an excerpt to be resampled: the filter's reach
MAX_PEAK = 1000.0  # a float render's samples beyond this many times full scale (+60 dB) are not judged


class Renders(NamedTuple):
    """What :func:`read_renders` returns: the planned excerpts (each [T] float32 at the corpus's rate),
    the names of the files judged, and the files skipped as ``{"file", "reason"}``."""

    excerpts: list[np.ndarray]
    names: list[str]
    skipped: list[dict]


class _Unreadable(Exception):
    """A render file that cannot be judged; the message says why."""


def _size(path: Path) -> int | None:
    """path's size in bytes, None where it cannot be looked at (gone meanwhile: its decode says why)."""
    try:
        return path.stat().st_size
    except OSError:
        return None


class _Source:
    """One render file: its length in samples at ``sample_rate`` (from its header), its excerpts read
    on demand; decoded whole (``whole``) where a partial read cannot be trusted."""

    def __init__(self, path: Path, sample_rate: int):
        import soundfile as sf

        from wavegen.audio_decode import WHOLE_READ_SUBTYPES, damage_in_log
        from wavegen.audio_ogg import ogg_links

        self.path, self.sample_rate, self.whole, self.rate_in = path, sample_rate, None, None
        if _size(path) == 0:  # said as prep says it, not as libsndfile's "Format not recognised"
            raise _Unreadable("empty: a file of 0 bytes")
        try:
            info = sf.info(os.fsencode(path))
        except Exception:  # libsndfile's failures are RuntimeErrors: decode_audio words the reason
            info = None
        if info is not None:
            self.rate_in = int(info.samplerate)  # its own rate, which resampling to the corpus's cannot widen
        # decoded whole, as prep decodes: what fails to open (load_mono says why), MP3, a header that
        # says the file is cut short, a chained Ogg file (load_mono warns, naming the file; libsndfile declares
        # its first stream's frames, or where its last stream is another's, 2**63 - 1: excerpts were planned over
        # them until memory ran out)
        if (info is None or info.format == "RAW" or info.subtype in WHOLE_READ_SUBTYPES or info.frames <= 0
                or damage_in_log(info.extra_info) is not None
                or (info.format == "OGG" and len(ogg_links(os.fsencode(path))) > 1)):
            self.decode_whole()
        else:
            self.rate, self.frames = int(info.samplerate), int(info.frames)
            self.length = int(self.frames * sample_rate // self.rate)

    def decode_whole(self) -> None:
        """Decode the file whole, mono at the corpus's rate (wavegen.audio_decode.load_mono, as prep decodes: in blocks;
        a damaged file gives what decodes, with a warning); _Unreadable where nothing does."""
        from wavegen.audio_decode import AudioError, load_mono

        try:
            unfinished = self._decode_unfinished()
            if not unfinished:
                self.whole = load_mono(self.path, self.sample_rate)
        except AudioError as err:
            raise _Unreadable(err.reason) from None
        self.length = len(self.whole)

    def _decode_unfinished(self) -> bool:
        """A WAV whose header was never finished (its data size 0: libsndfile reads no frame of it) decoded as
        prep decodes it, through wavegen.prep_wav's view of it finished, with a warning; False for another file."""
        from wavegen.audio_decode import decode_mono
        from wavegen.prep_wav import UNFINISHED_WAV, read_finished, unfinished_wav

        try:
            wav = unfinished_wav(self.path)
        except (EOFError, OSError) as err:
            raise _Unreadable(f"cannot read file ({getattr(err, 'strerror', None) or err})") from None
        if wav is None:
            return False
        if wav.audio_bytes == 0:
            raise _Unreadable(f"{UNFINISHED_WAV} and no whole frame of audio follows it")
        samples, why = read_finished(self.path, wav,
                                     lambda view: decode_mono(self.path, self.sample_rate, source=view).samples)
        if why is not None:
            raise _Unreadable(why)
        self.whole = samples
        logger.warning("%s: %s; the audio after it read to its last whole frame", self.path, UNFINISHED_WAV)
        return True

    def read(self, start: int, n: int) -> np.ndarray:
        """Samples [start, start + n) at the corpus's rate, mono float32 ([<= n]). Where the file
        gives less than its header promised, it is decoded whole and ``_Replan`` raised."""
        if self.whole is not None:
            return self.whole[start: start + n]
        import soundfile as sf

        from wavegen.audio import resample, to_mono

        # read from an input sample that falls on an output sample (every rate/gcd input samples), some
        # way before the excerpt: the resampled excerpt then lies on the whole file's output grid
        step = math.gcd(self.rate, self.sample_rate)
        period_in, period_out = self.rate // step, self.sample_rate // step
        margin = 0 if self.rate == self.sample_rate else int(RESAMPLE_MARGIN_SECONDS * self.sample_rate) + 1
        out_first = max(0, start - margin) // period_out * period_out
        first = out_first // period_out * period_in
        last = min(self.frames, -(-(start + n + margin) * self.rate // self.sample_rate))
        try:
            with sf.SoundFile(os.fsencode(self.path)) as f:
                f.seek(first)
                x = f.read(last - first, dtype="float32", always_2d=True)
        except Exception:
            x = None
        if x is None or len(x) < last - first:  # damaged past its header: decode what there is
            self.decode_whole()
            raise _Replan
        y = resample(to_mono(x), self.rate, self.sample_rate)
        return y[start - out_first: start - out_first + n]


class _Replan(Exception):
    """A file's length turned out other than its header said: plan the excerpts again."""


def read_renders(renders_dir: str | Path, sample_rate: int, max_seconds: float | None = None) -> Renders:
    """The excerpts the analysis takes of every audio file directly in ``renders_dir`` but hidden ones, or
    of the one audio file ``renders_dir`` names (mono, at ``sample_rate``; planned by plan_excerpts over
    ``max_seconds``, None: all), reading only those. Files that cannot be judged are skipped with a warning
    (``skipped``); AnalysisError when the folder holds no audio file, or none that can be judged."""
    given, folder = Path(renders_dir), _folder(renders_dir)  # one file named: its folder says what it is part of
    files, skipped = _audio_files(folder) if given == folder else _one_file(given)
    unfinished = _unfinished_render(folder)
    if not files:
        raise AnalysisError(f"{given}: no audio files ({', '.join(AUDIO_SUFFIXES)})" + (
            "; it is a render that has not finished (a FLAC render writes its files at the end): rerun the render "
            "command to finish it" if unfinished else "".join(f"; {s['file']}: {s['reason']}" for s in skipped)
            or _in_subfolders(folder)))
    archive = unfinished and is_archive(folder)  # an archive has .state/ for good: it never finishes
    # the part a live stream writes now: short for its first seconds, and not a render cut short
    parts = [p for p in _audio_files(folder)[0] if p.match(ARCHIVE_PARTS)] if archive else []
    writing = max(parts, default=None)
    sources, total = [], len(files) + len(skipped)
    for path in files:
        try:
            sources.append(_Source(path, sample_rate))
        except _Unreadable as err:
            skipped.append({"file": path.name, "reason": str(err)})
    excerpts, sources = _read_planned(sources, sample_rate, max_seconds, skipped, writing)
    reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped)
    if not sources:
        raise AnalysisError(f"{given}: no audio file can be analysed ({reasons})")
    if skipped:
        logger.warning("%s: skipping %d of %s (%s)", folder, len(skipped), counted(total, "audio file"), reasons)
    _note_lower_rates(folder, sources, sample_rate)
    if archive:
        logger.warning("%s: a live stream's archive (wavegen serve --archive): its parts hold the broadcast so "
                       "far, the newest perhaps still being written", folder)
    elif unfinished:  # judged as it is, but not taken for the whole render
        logger.warning("%s: its render has not finished (.state/ there, no complete render_report.json): its "
                       "files hold only the audio rendered so far; rerun the render command to finish it",
                       folder)
    return Renders(excerpts, [s.path.name for s in sources], skipped)


def _note_lower_rates(folder: Path, sources: list[_Source], sample_rate: int) -> None:
    """A note where render files judged are at a rate below the corpus's: resampled up, they hold nothing above
    half their own rate, which the album has, and are judged far from it for that alone (8 kHz renders of a 16 kHz
    corpus scored a Frechet distance of 1306, noise 95)."""
    lower = [s for s in sources if s.rate_in is not None and s.rate_in < sample_rate]
    if not lower:
        return
    rates = sorted({s.rate_in for s in lower})
    files = some_of([f"{s.path.name} at {s.rate_in} Hz" for s in lower], 3)
    they, hold, them, their = ("it", "holds", "it", "its") if len(lower) == 1 else ("they", "hold", "them", "their")
    logger.warning("%s: %d of %s at a rate below the corpus's %d Hz (%s): resampled up, %s %s nothing above %d Hz, "
                   "where the corpus's audio may reach %d Hz, and can be judged far from it for that alone; judge %s "
                   "against a corpus prepared at %s rate (wavegen prep --sample-rate %d)", folder, len(lower),
                   counted(len(sources), "render file"), sample_rate, files, they, hold, rates[-1] // 2,
                   sample_rate // 2, them, their, rates[0])


def _audio_files(folder: Path) -> tuple[list[Path], list[dict]]:
    """(the audio files directly in ``folder`` that are judged, sorted; the audio files of a format libsndfile
    cannot decode (.m4a, ...), as skipped ``{"file", "reason"}``: prep passes them over with a warning, and
    eval passed them over in silence). Hidden files are passed over: macOS's "._NAME.wav" holds no audio."""
    return _by_format(sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")))


def _by_format(paths: list[Path]) -> tuple[list[Path], list[dict]]:
    """(the audio files of ``paths`` libsndfile decodes; those of a format it cannot, as skipped)."""
    from wavegen.prep_inputs import OTHER_AUDIO_EXTENSIONS

    undecodable = [{"file": p.name, "reason": f"{p.suffix} audio, which libsndfile cannot decode: convert it to "
                                              ".flac or .wav to judge it"}
                   for p in paths if p.suffix.lower() in OTHER_AUDIO_EXTENSIONS]
    return [p for p in paths if p.suffix.lower() in AUDIO_SUFFIXES], undecodable


def _read_planned(sources: list[_Source], sample_rate: int, max_seconds: float | None,
                  skipped: list[dict], writing: Path | None = None) -> tuple[list[np.ndarray], list[_Source]]:
    """(the planned excerpts, the sources judged): a source too short, or with NaN or inf in what is
    read, is moved to ``skipped`` and the excerpts planned again without it. ``writing``: an archive's
    newest part, which a live stream is still writing (said as such where it is too short yet)."""
    least = int(MIN_RENDER_SECONDS * sample_rate)
    while True:
        for s in [s for s in sources if s.length < least]:
            so_far = f"{s.length / sample_rate:.3f} s"
            skipped.append({"file": s.path.name, "reason": (
                f"the archive's newest part, still being written ({so_far} so far; the analysis needs "
                f"{MIN_RENDER_SECONDS} s)" if s.path == writing else
                f"shorter than the {MIN_RENDER_SECONDS} s the analysis needs ({so_far})")})
        sources = [s for s in sources if s.length >= least]
        excerpts, index = [], None
        try:
            for index, start, n in plan_excerpts([s.length for s in sources], sample_rate, max_seconds):
                piece = sources[index].read(start, n)
                if not np.isfinite(piece).all():  # a float file can hold them; no feature is defined there
                    raise _Unreadable("NaN or infinite samples")
                peak = float(np.abs(piece).max(initial=0.0))
                if peak > MAX_PEAK:  # a float file's: its spectra overflow float32 (librosa refused them)
                    raise _Unreadable(f"samples up to {peak:.3g} times full scale (audio is -1..1; over "
                                      f"{MAX_PEAK:g} is not audio to judge)")
                excerpts.append(piece)
        except _Replan:
            continue
        except _Unreadable as err:
            skipped.append({"file": sources.pop(index).path.name, "reason": str(err)})
            continue
        return excerpts, sources


def _folder(renders_dir) -> Path:
    """The folder of renders ``renders_dir`` names: itself, or the folder of the one file it names."""
    folder = Path(renders_dir)
    if folder.is_file():
        return folder.parent
    if not folder.is_dir():
        raise AnalysisError(f"{folder}: no such folder of renders or audio file")
    return folder


def _one_file(path: Path) -> tuple[list[Path], list[dict]]:
    """:func:`_audio_files` for one file named (hidden or not); AnalysisError for a file that is no audio by its
    name."""
    from wavegen.prep_inputs import OTHER_AUDIO_EXTENSIONS

    if path.suffix.lower() not in (*AUDIO_SUFFIXES, *OTHER_AUDIO_EXTENSIONS):
        raise AnalysisError(f"{path}: not an audio file ({', '.join(AUDIO_SUFFIXES)}): give a render's audio file "
                            "or the folder of renders")
    return _by_format([path])


def _in_subfolders(folder: Path) -> str:
    """"; its subfolders A, B hold audio files: ..." where a folder of render folders was given, else ""."""
    holders = [d.name for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")
               and any(p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".") for p in d.iterdir())]
    if not holders:
        return ""
    shown = some_of(holders, 5)
    said = f"subfolder {shown} holds audio files: give it" if len(holders) == 1 else \
        f"subfolders {shown} hold audio files: give one of them"
    return f"; its {said} (the files directly in the folder given are judged, one render folder at a time)"


def _unfinished_render(folder: Path) -> bool:
    """Whether ``folder`` is a render that has not finished (stopped, or still running): it keeps
    ``.state/`` (wavegen.render.folder.STATE_DIR) until its render_report.json says "complete"."""
    from wavegen.fileio import read_json_object

    if not (folder / ".state").is_dir():
        return False
    try:
        return read_json_object(folder / "render_report.json").get("status") != "complete"
    except (OSError, ValueError):
        return True


def split_segments(corpus, split: str, label: int | None = None) -> np.ndarray:
    """A corpus split's segments, int64 [N, 3] rows as corpus.segments gives them (``label``: only that label's,
    an index into corpus.labels)."""
    rows = np.asarray(corpus.segments(split), dtype=np.int64).reshape(-1, 3)
    if label is not None and len(rows):
        rows = rows[corpus.segment_labels(split) == label]
    return rows


def split_excerpts(corpus, split: str, max_seconds: float | None, label: int | None = None) -> list[np.ndarray]:
    """The excerpts plan_excerpts plans for a corpus split's segments (``label``: only that label's, an index
    into corpus.labels), as float32 [T] (only those converted from the corpus's int16); where none is long
    enough to cut one, its segments."""
    from wavegen.audio import int16_to_float

    audio = corpus.split(split)
    segments = [(int(s), int(n)) for s, n, _ in split_segments(corpus, split, label)]
    # no excerpt: every segment is too short, and compare_clips says so (they are short: read them)
    plan = plan_excerpts([n for _, n in segments], corpus.sample_rate, max_seconds) or [
        (i, 0, n) for i, (_, n) in enumerate(segments)]
    return [int16_to_float(np.asarray(audio[segments[i][0] + start: segments[i][0] + start + n]))
            for i, start, n in plan]
