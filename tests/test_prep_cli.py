"""`wavegen prep` as a person runs it: what the console shows."""

import subprocess
import sys

import numpy as np

from wavegen.audio import AudioError, decode_audio


def _prep(*args, cwd, quiet=False):
    return subprocess.run([sys.executable, "-m", "wavegen", *(["--quiet"] if quiet else []), "prep",
                           *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_a_garbage_mp3_is_named_as_not_mp3_and_the_decoders_notes_stay_off_the_console(tmp_path, make_tone):
    """A garbage .mp3 was skipped as "File does not exist or is not a regular file (possibly a pipe?)",
    after three lines of mpg123's own "Note: Illegal Audio-MPEG-Header ..." on the console."""
    rec = tmp_path / "rec"
    make_tone(rec / "tone.wav", 3.0, 16000)
    (rec / "garbage.mp3").write_bytes(np.random.default_rng(0).bytes(50_000))
    done = _prep(rec, tmp_path / "corpus", cwd=tmp_path, quiet=True)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert not [line for line in lines if line.startswith(("Note:", "[src/", "Warning:"))], done.stderr
    (skip,) = [line for line in lines if "garbage.mp3" in line]
    assert "not decodable as MP3" in skip and "regular file" not in skip and "pipe" not in skip
    assert "the decoder said: " in skip  # its words are kept, in the message
    # the same from the library: AudioError naming the file
    try:
        decode_audio(rec / "garbage.mp3")
    except AudioError as err:
        assert err.path == str(rec / "garbage.mp3") and err.reason.startswith("cannot decode audio (not decodable")
    else:
        raise AssertionError("a garbage .mp3 decoded")


def test_prep_prints_one_summary(tmp_path, make_tone):
    """The CLI printed its own summary ("corpus C: train 0.1 min, ...") after prep's ("prepared C: ...")."""
    rec = tmp_path / "rec"
    for i in range(3):
        make_tone(rec / f"t{i}.wav", 2.0, 16000, freq=200 + 100 * i)
    done = _prep(rec, tmp_path / "corpus", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summaries = [line for line in done.stderr.splitlines() if " train " in line]
    assert len(summaries) == 1 and summaries[0].startswith("prepared "), done.stderr
    again = _prep(rec, tmp_path / "corpus", cwd=tmp_path)  # up to date: one line says so, no summary
    assert [line for line in again.stderr.splitlines() if "corpus" in line] == \
        [f"corpus up to date: {tmp_path / 'corpus'}"], again.stderr
