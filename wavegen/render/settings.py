"""What a render is asked to do: its settings, their checks, and the inputs they name.

Every mistake a user can make here is a :class:`wavegen.errors.WavegenError` naming the
value: :class:`~wavegen.config.ConfigError` for a setting or input that cannot work,
:class:`RenderStateError` / :class:`RenderWriteError` for the output folder.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wavegen.config import ConfigError
from wavegen.engine import PRECISIONS
from wavegen.errors import WavegenError

FORMATS = ("wav", "flac")
WAV_HEADER_BYTES = 44
WAV_MAX_BYTES = 0xFFFFFFFF  # RIFF sizes are 32-bit
FLAC_MAX_SAMPLES = 1 << 36  # STREAMINFO's total-samples field is 36 bits
FLAC_MAX_RATE = 655350  # the highest rate libsndfile's FLAC encoder takes (the format's 20-bit field: more)
WAV_MAX_RATE = WAV_MAX_BYTES // 2  # the header's byte rate (2 x the rate, 16-bit mono) is 32-bit
SEED_MAX = 2**64 - 1  # wavegen.engine.uniforms keys on the seed as a numpy uint64

logger = logging.getLogger("wavegen.render")


class RenderStateError(WavegenError, ValueError):
    """The output folder holds another render (or a damaged one); the message says what differs."""


def rerun_ending(stopped: str, finished: bool | None, anew: str = "discard it and render anew",
                 rerun: str | None = None) -> str:
    """How the refusal of a rerun into a render folder ends: ``stopped`` ("Pass --threads 2 to resume it,
    --restart to discard it, or choose another --out") where the render there stopped part way; where it is
    ``finished`` there is nothing to resume (a rerun as it was made only reports it complete): said so, with
    --restart to ``anew``. ``finished`` None: not known (the parameters come from the .state/ a kill left, beside a
    damaged report): the ``rerun`` that matches ("Pass --threads 2") is said to resume it or say it is finished."""
    if finished is None and rerun is not None:
        return f"{rerun}: it resumes the render, or says it is finished; pass --restart to discard it, or choose " \
            "another --out"
    if not finished:
        return stopped
    return f"It is finished: there is nothing to resume; pass --restart to {anew}, or choose another --out"


class RenderWriteError(WavegenError, RuntimeError):
    """Audio or state could not be written (disk full, read-only folder); what is on disk is resumable."""


def _check_number(flag: str, value, in_range, rule: str) -> None:
    """ConfigError "FLAG VALUE: must be RULE" unless ``value`` is an int or float (not a bool) for which
    ``in_range(value)`` holds (a comparison: nan passes none). --pitch-sync's and --postfilter's check."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not in_range(value):
        typed = f"{value:g}" if isinstance(value, float) else value
        raise ConfigError(f"{flag} {typed}: must be {rule}")


@dataclass
class RenderSettings:
    seconds: float
    streams: int = 1
    seed: int = 0
    temperature: list[float] = field(default_factory=lambda: [1.0])  # cycled over streams
    prime: str | None = None
    prime_seconds: float = 2.0  # the last this many seconds of --prime are run through the model
    label: str | None = None  # "name" or a blend "a:0.7,b:0.3"
    backend: str = "auto"
    device: str = "cpu"
    precision: str = "fp32"  # engine arithmetic / weight storage; changes the audio
    format: str = "wav"
    block_seconds: float = 1.0  # audio generated between progress updates / interrupt checks
    snapshot_seconds: float = 30.0  # audio between snapshots (rounded up to whole guard windows)
    spectrogram: bool = True
    # guard: the criteria of guard_verdict (wavegen.render.guard.GuardCriteria holds the same)
    guard: bool = True
    guard_seconds: float = 2.0
    guard_attempts: int = 4  # redraws before giving up and keeping the last one
    guard_silence_db: float = -60.0  # every 50 ms frame's RMS (mean removed) below this → silence
    guard_noise_flatness: float = 0.85  # spectral flatness above this ...
    guard_noise_db: float = -30.0  # ... with the window's RMS above this → noise
    guard_clip_level: float = 0.95  # |x| at or above this counts as clipped ...
    guard_clip_fraction: float = 0.1  # ... in more than this fraction of the window → clipping
    guard_album: bool = True  # the model's album profile (album.json) replaces the fixed thresholds above
    pitch_sync: float = 0.0  # rho of the pitch-synchronous draws (wavegen.render.pitchsync); 0: render's own
    postfilter: float = 0.0  # the pitch postfilter's weight G (wavegen.render.postfilter); 0: off

    def validate(self) -> None:
        """ConfigError naming the first setting that cannot work (checks that need no model)."""
        for flag, value in (("--seconds", self.seconds), ("--prime-seconds", self.prime_seconds),
                            ("--block-seconds", self.block_seconds), ("--snapshot-seconds", self.snapshot_seconds),
                            ("--guard-seconds", self.guard_seconds)):
            check_seconds(flag, value)
        if not isinstance(self.streams, (int, np.integer)) or self.streams < 1:
            raise ConfigError(f"--streams {self.streams}: need at least one")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool) \
                or not 0 <= int(self.seed) <= SEED_MAX:
            raise ConfigError(f"--seed {self.seed}: must be a whole number from 0 to {SEED_MAX} (2**64 - 1)")
        if self.format not in FORMATS:
            raise ConfigError(f"--format {self.format!r}: use one of {list(FORMATS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision {self.precision!r}: use one of {list(PRECISIONS)}")
        # a prime file that is gone is judged by render with its folder: a resume does not need it, a start does
        if self.prime is not None and os.path.exists(self.prime):
            check_prime_path(self.prime)
        _check_number("--pitch-sync", self.pitch_sync, lambda v: 0 <= v < 1,
                      "a number from 0 up to (not including) 1 (0: off)")
        _check_number("--postfilter", self.postfilter, lambda v: 0 <= v <= 1,
                      "a number from 0 (off) to 1 (the sample a pitch period before weighs as much as the sample itself)")
        if self.guard_attempts < 0:
            raise ConfigError(f"--guard-attempts {self.guard_attempts}: must be >= 0")
        temps = list(np.atleast_1d(np.asarray(self.temperature, dtype=np.float64)))
        problems = [_temperature_problem(t, f"{t:g}") for t in temps]
        if not temps or any(problems):
            typed = ",".join(f"{t:g}" for t in temps)  # as a user types it, not a Python list
            raise ConfigError(f"--temperature {typed}: "
                              + next((p for p in problems if p), "every temperature must be a positive number"))
        if len(temps) > self.streams:  # one stream per temperature at most: the rest would be dropped unsaid
            raise ConfigError(f"--temperature {','.join(f'{t:g}' for t in temps)}: {len(temps)} temperatures for "
                              f"--streams {self.streams}; give at most {self.streams} (a shorter list cycles over the "
                              "streams) or more --streams")

    def total_samples(self, sample_rate: int) -> int:
        """Samples per stream at ``sample_rate``; ConfigError where the length is impossible for the format."""
        return check_length(self.seconds, sample_rate, self.format)


def parse_temperatures(text: str) -> list[float]:
    """``--temperature`` as typed ("0.9" or a comma list "0.8,1,1.2") → the temperatures; ConfigError naming
    the value as typed when an item is empty, not a number, or not a positive number."""
    temps = []
    for item in str(text).split(","):
        if not item.strip():
            raise ConfigError(f"--temperature {text}: an empty item (two commas, or one at an end); give a number or "
                              "a comma list of numbers such as 0.8,1.0")
        try:
            temps.append(float(item))
        except ValueError:
            raise ConfigError(f"--temperature {text}: {item.strip()!r} is not a number; give a number or a comma "
                              "list of numbers such as 0.8,1.0") from None
        problem = _temperature_problem(temps[-1], item.strip())
        if problem:
            raise ConfigError(f"--temperature {text}: {problem}")
    return temps


def _temperature_problem(t: float, typed: str) -> str | None:
    """Why temperature t (typed so) cannot be rendered with (None: it can). The engines divide the logits by
    it in float32: a value beyond float32's range became inf there (every draw uniform noise, and a
    RuntimeWarning), one below its smallest 0 (the engine's error, not the option's)."""
    if not (math.isfinite(t) and t > 0):
        return f"every temperature must be a positive number ({typed} is not)"
    with np.errstate(over="ignore", under="ignore"):
        single = np.float32(t)
    if not (np.isfinite(single) and single > 0):
        return (f"every temperature must lie within float32's range, the engines' ({typed} is not): give a "
                "number such as 0.8 or 1.2")
    return None


def check_seconds(flag: str, value) -> None:
    try:
        ok = math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{flag} {value}: must be a finite number of seconds above zero")


def duration(seconds: float) -> str:
    """Seconds for people: "0.25 s", "90 s", "3.0 minutes", "12.0 hours", "12.5 days"."""
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:g} s"


def check_length(seconds: float, sample_rate: int, fmt: str) -> int:
    """``seconds`` per stream → samples per stream; ConfigError when that cannot be written.

    Limits: at least one sample; a WAV file holds at most 4 GiB (2^31 - 23 16-bit samples);
    a FLAC file at most 2^36 samples, at most 655350 Hz (:func:`check_rate`).
    """
    check_seconds("--seconds", seconds)
    check_rate(sample_rate, fmt)
    total = round(float(seconds) * sample_rate)  # a Python int: no overflow however large
    if total < 1:
        raise ConfigError(f"--seconds {seconds}: less than one sample at {sample_rate} Hz")
    if fmt == "wav" and WAV_HEADER_BYTES + 2 * total > WAV_MAX_BYTES:
        most = (WAV_MAX_BYTES - WAV_HEADER_BYTES) // 2 / sample_rate
        raise ConfigError(f"--seconds {seconds}: more than a WAV file can hold (4 GiB: at most {duration(most)} "
                          f"per stream at {sample_rate} Hz); use --format flac or fewer seconds")
    if fmt == "flac" and total > FLAC_MAX_SAMPLES:
        most = FLAC_MAX_SAMPLES / sample_rate
        raise ConfigError(f"--seconds {seconds}: more than a FLAC file can hold (2^36 samples: at most "
                          f"{duration(most)} per stream at {sample_rate} Hz)")
    return total


def check_rate(sample_rate: int, fmt: str) -> None:
    """ConfigError where a ``fmt`` file cannot be written at the model's ``sample_rate``: found before the
    render, not when its files are finished (a FLAC file is encoded once every sample is made)."""
    most, other = {"flac": (FLAC_MAX_RATE, "--format wav"), "wav": (WAV_MAX_RATE, "a model of a lower rate")}[fmt]
    if sample_rate > most:
        raise ConfigError(f"--format {fmt}: this model's sample rate is {sample_rate} Hz, and a {fmt.upper()} file "
                          f"holds at most {most} Hz; use {other}")


def estimate_bytes(streams: int, total: int, fmt: str) -> int:
    """Disk space a finished render of ``streams`` x ``total`` samples needs at its peak, in bytes.

    WAV: the files themselves. FLAC: the raw PCM kept under .state until the end, plus the
    FLAC files encoded from it (noise compresses hardly at all, so counted at the PCM's size).
    """
    pcm = 2 * total * streams
    return pcm + WAV_HEADER_BYTES * streams if fmt == "wav" else 2 * pcm


# ----- inputs -------------------------------------------------------------------------------------

def labels_said(labels: list[str]) -> str:
    """A model's labels for people: "rain, bells", not a Python list. One holding a comma or a space at either end
    is quoted as Python writes it (' lead', 'Earth, Wind & Fire'), so where each ends can still be seen."""
    return ", ".join(repr(name) if "," in name or name != name.strip() else name for name in labels)


def parse_label(text: str | None, labels: list[str]) -> np.ndarray | None:
    """``"name"`` or ``"a:0.7,b:0.3"`` → blend weights [n_labels] float32 (None when no label given).

    Weights are normalised to sum to 1. ConfigError for an unknown name (listing the known
    ones), a bad weight, or a label given to (or missing for) a model.
    """
    if not labels:
        if text:
            raise ConfigError(f"--label {text!r}: this model was not trained with labels")
        return None
    if not text:
        raise ConfigError(f"this model is conditioned on labels; choose one with --label (known: {labels_said(labels)})")
    weights = np.zeros(len(labels), dtype=np.float32)
    for name, value in _label_parts(text, labels):
        part = f"{name}:{value}" if value else name
        try:
            w = float(value) if value else 1.0
        except ValueError:
            raise ConfigError(f"--label {part!r}: weight {value!r} is not a number") from None
        if not w >= 0 or not math.isfinite(w):
            raise ConfigError(f"--label {part!r}: weights must be finite and not negative")
        with np.errstate(over="ignore"):  # past float32's range: refused below, not warned of
            weights[labels.index(name)] += w
    with np.errstate(over="ignore"):
        total = weights.sum()
    if total <= 0:  # every weight 0, or each below float32's smallest
        small = any(float(value) > 0 for _, value in _label_parts(text, labels) if value)
        raise ConfigError(f"--label {text!r}: " + ("weights too small; give them as shares, e.g. a:0.7,b:0.3"
                                                   if small else "weights sum to zero"))
    if not np.isfinite(total):  # inf / inf: a blend of NaN, which plays silence
        raise ConfigError(f"--label {text!r}: weights too large; give them as shares, e.g. a:0.7,b:0.3")
    return weights / total


def _label_parts(text: str, labels: list[str]) -> list[tuple[str, str]]:
    """``"a:0.7,b"`` → ``[("a", "0.7"), ("b", "")]``. Each part starts with a known label, the
    longest that fits, so a label holding ',' or ':' ("Earth, Wind & Fire", "Live: 1999") is read
    whole; an optional ``:weight`` follows, then ',' or the end. Spaces are part of a label (prep
    takes any folder name, " lead" included): a text that is exactly a label is that label, and a
    space before a part is skipped only where no label starts with it, so every label stays reachable."""
    if text in labels:
        return [(text, "")]
    longest_first = sorted(labels, key=len, reverse=True)
    rest, parts = text, []
    while rest.strip():
        name, rest = _next_label(rest, longest_first)
        if name is None:
            unknown = re.split(r"[:,]", rest, maxsplit=1)[0].strip()
            raise ConfigError(f"--label {unknown!r} is not one of this model's labels: {labels_said(labels)}")
        rest = rest[len(name):].lstrip()
        value = ""
        if rest.startswith(":"):
            value, _, rest = rest[1:].partition(",")
            value = value.strip()
        else:
            rest = rest[1:]  # the ',' (or nothing)
        parts.append((name, value))
    return parts


def _next_label(rest: str, longest_first: list[str]) -> tuple[str | None, str]:
    """The label ``rest`` starts with, followed by ':', ',' or the end, and ``rest`` from it on:
    the fewest leading spaces skipped first (" lead" before "lead"), then the longest label."""
    for skip in range(len(rest) - len(rest.lstrip()) + 1):
        for label in longest_first:
            if rest.startswith(label, skip) and rest[skip + len(label):].lstrip()[:1] in ("", ":", ","):
                return label, rest[skip:]
    return None, rest


def prime_codes(path: str, sample_rate: int, seconds: float, q_levels: int, quantization: str,
                multiple: int = 1) -> np.ndarray:
    """The last ``seconds`` of an audio file (any rate, any channels) → codes [T0] int64,
    T0 trimmed from the front to a multiple of ``multiple`` (a whole top frame). A float file
    above full scale is scaled down to it (as prep does), with a warning.

    ConfigError when the name is empty, the file is missing, not a regular file, too short (or
    ``seconds`` too short) or holds NaN/infinite samples; AudioError when it cannot be decoded.
    """
    from wavegen.audio import quantize, scale_to_full_scale
    from wavegen.audio_decode import AudioError, load_mono
    from wavegen.progress import counted

    check_prime_path(path)
    try:
        audio = load_mono(path, sample_rate)
    except AudioError as err:  # named as the option, as every other mistake of the prime is
        raise AudioError(f"--prime {err.path}", err.reason) from None
    if not np.all(np.isfinite(audio)):
        raise ConfigError(f"--prime {path}: holds NaN or infinite samples; give an audio file of finite samples")
    if len(audio) < multiple:
        raise ConfigError(f"--prime {path}: shorter than {counted(multiple, 'sample')} ({multiple / sample_rate:g} s) "
                          f"at {sample_rate} Hz, the model's frame; give a longer recording")
    keep = min(len(audio), int(round(seconds * sample_rate)))
    keep -= keep % multiple
    if keep <= 0:
        raise ConfigError(f"--prime-seconds {seconds:g}: less than the model's frame of "
                          f"{counted(multiple, 'sample')} at {sample_rate} Hz; give at least "
                          f"{multiple / sample_rate:g} s")
    audio, gain_db = scale_to_full_scale(audio)
    if gain_db < 0:
        logger.warning("--prime %s peaks %.1f dB above full scale: scaled down by %.1f dB instead of clipping",
                       path, -gain_db, -gain_db)
    return quantize(audio[len(audio) - keep:], q_levels, quantization)


def check_prime_path(path) -> None:
    """ConfigError unless ``path`` names an existing regular file."""
    from wavegen.fileio import not_a_file

    if not str(path).strip():
        raise ConfigError("--prime: give an audio file (the name is empty)")
    kind = not_a_file(path)
    if kind == "folder":
        raise ConfigError(f"--prime {path}: is a folder, not an audio file; give one file of the folder")
    if kind is not None:
        raise ConfigError(f"--prime {path}: is a {kind}, not a regular file; give an audio file")
    if not Path(path).is_file():
        raise ConfigError(f"--prime {path}: no such file")


def stream_paths(out_dir: Path, streams: int, fmt: str) -> list[Path]:
    """The audio files of a render: out_dir/stream_000.wav, ... (one per stream)."""
    return [Path(out_dir) / f"stream_{i:03d}.{fmt}" for i in range(streams)]


def shard_streams(streams: int, rank: int, world: int) -> list[int]:
    """The stream ids process ``rank`` of ``world`` renders: rank, rank + world, ... (maybe none)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of world size {world}")
    return list(range(rank, streams, world))
