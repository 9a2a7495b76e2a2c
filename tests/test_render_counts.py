"""Counts a render says, their noun agreeing at 1 (wavegen.progress.counted): a stream file's refusals on resume
("1 byte", "1 sample"), the guard's windows given up after "1 redraw" (--guard-attempts 1), an album profile of
"1 window", a finished file's size, the prime refused for a model's frame of "1 sample". Each said "1 samples",
"1 redraws" and the like."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from render_helpers import SR, Q
from wavegen.config import ConfigError
from wavegen.render import GuardLog, RenderFolder, RenderStateError
from wavegen.render import writers as render_writers
from wavegen.render.settings import prime_codes

CHANGED = "it was changed since; rerun with --restart to start over"


def stream_file(tmp_path, samples: int):
    """A stream's WAV as a render leaves it, holding ``samples`` samples."""
    path = tmp_path / "stream_000.wav"
    writer = render_writers.PCMWriter(path, SR)
    writer.write(np.arange(samples, dtype=np.int16))
    writer.close()
    return path


def refusal(path, frames: int, crc32: int | None = None) -> str:
    with pytest.raises(RenderStateError) as caught:
        render_writers.PCMWriter(path, SR, resume_frames=frames, resume_crc32=crc32)
    return str(caught.value)


def test_a_stream_files_refusals_on_resume_say_1_byte_and_1_sample(tmp_path):
    """Each said "1 bytes" or "1 samples" of a file or a snapshot holding one."""
    missing = tmp_path / "gone.wav"
    assert refusal(missing, 1) == (f"{missing} is missing: it was removed since the render's last snapshot (which "
                                   "holds 1 sample of it); rerun with --restart to start over")
    path = stream_file(tmp_path, 1)
    assert refusal(path, 5) == f"{path} holds 1 sample, fewer than the 5 its snapshot claims: {CHANGED}"
    assert refusal(path, 1, crc32=0) == (f"{path}: its first 1 sample are not the ones this render wrote (their "
                                         f"CRC-32 differs from its snapshot's): {CHANGED}")
    os.truncate(path, 1)
    assert refusal(path, 1) == (f"{path} is cut short (1 byte, less than a WAV header; its snapshot counts 1 "
                                f"sample): {CHANGED}")
    assert path.stat().st_size == 1  # left as it was


def test_a_stream_files_refusals_on_resume_count_many_in_the_plural(tmp_path):
    path = stream_file(tmp_path, 3)
    assert refusal(path, 5) == f"{path} holds 3 samples, fewer than the 5 its snapshot claims: {CHANGED}"
    assert refusal(path, 2, crc32=0).startswith(f"{path}: its first 2 samples are not the ones this render wrote")
    os.truncate(path, 2)
    assert refusal(path, 3) == (f"{path} is cut short (2 bytes, less than a WAV header; its snapshot counts 3 "
                                f"samples): {CHANGED}")


@pytest.mark.parametrize("redraws, said", [(1, "after 1 redraw;"), (3, "after 3 redraws;")])
def test_a_window_given_up_says_how_many_redraws_it_had(caplog, redraws, said):
    """--guard-attempts 1: a window given up was "still silence after 1 redraws"."""
    log = GuardLog(SR)
    with caplog.at_level("INFO", logger="wavegen.render"):
        log.add(2, SR, "silence", redraws, last=True)
        log.add(2, SR, "gave up", redraws, detected="silence")
    assert caplog.messages == [f"guard: stream 2 at 1.0 s still silence {said} keeping it"]


class OneStretchCorpus:
    """A corpus whose training split is one stretch of ``seconds`` of a tone (what ensure_run_profile reads)."""

    sample_rate = SR

    def __init__(self, seconds: float):
        t = np.arange(int(seconds * SR)) / SR
        self.audio = (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)

    def split(self, name):
        return self.audio

    def segments(self, name):
        return [(0, len(self.audio), "tone")]


@pytest.mark.parametrize("seconds, said", [(3.0, "album profile of 1 window of"),
                                           (4.5, "album profile of 2 windows of")])
def test_an_album_profile_says_how_many_windows_it_measured(tmp_path, caplog, seconds, said):
    """A training split of one stretch under two windows long made an "album profile of 1 windows"."""
    from wavegen.render.album import ALBUM_FILE, ensure_run_profile

    config = {"model": {"q_levels": Q, "quantization": "mu-law"}, "data": {"corpus": "tone"}}
    with caplog.at_level("INFO", logger="wavegen.render"):
        profile = ensure_run_profile(tmp_path, config, OneStretchCorpus(seconds))
    assert profile is not None and json.loads((tmp_path / ALBUM_FILE).read_text())["source"] == profile["source"]
    assert caplog.messages == [f"{said} the training split → {tmp_path / ALBUM_FILE}"]


@pytest.mark.parametrize("size, said", [(1, "1 byte"), (7, "7 bytes")])
def test_a_finished_file_of_another_size_is_said_in_bytes_agreeing(tmp_path, caplog, size, said):
    """A finished render's file cut to one byte was said as "1 bytes, not the 1044 this render wrote"."""
    folder = RenderFolder(tmp_path / "out", 1, "wav")
    path = tmp_path / "out" / "stream_000.wav"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"x" * size)
    with caplog.at_level("WARNING", logger="wavegen.render"):
        folder.warn_if_changed({"paths": [str(path)], "file_bytes": [1044]})
    assert caplog.messages == [f"{path}: {said}, not the 1044 this render wrote: it was changed since it finished; "
                               "pass --restart to render it again"]


def test_a_prime_shorter_than_a_frame_of_1_sample_says_1_sample(tmp_path, make_tone):
    """A model whose frame is one sample (context 1) refused a too short --prime-seconds as "of 1 samples"."""
    make_tone(tmp_path / "prime.wav", 0.01, SR)
    with pytest.raises(ConfigError) as caught:
        prime_codes(str(tmp_path / "prime.wav"), SR, 0.0001, Q, "mu-law", 1)
    assert str(caught.value) == ("--prime-seconds 0.0001: less than the model's frame of 1 sample at 4000 Hz; "
                                 "give at least 0.00025 s")
    with pytest.raises(ConfigError) as caught:
        prime_codes(str(tmp_path / "prime.wav"), SR, 0.0001, Q, "mu-law", 16)
    assert "less than the model's frame of 16 samples at 4000 Hz" in str(caught.value)
