"""Render files at a rate below the corpus's are noted: resampled up, they hold nothing above half their own rate,
and were judged far from the album with no hint why (8 kHz renders of a 16 kHz corpus: a Frechet distance of 1306,
noise's 95). A note, not a refusal: they are judged all the same."""

import logging

from conftest import melody, write_audio_file

from wavegen.analysis_audio import read_renders

RATE = 16000


def test_renders_below_the_corpus_rate_are_noted_in_one_line_naming_them(tmp_path, caplog):
    folder = tmp_path / "renders"
    write_audio_file(folder / "low.wav", melody(3.0, 8000, seed=1), 8000)
    write_audio_file(folder / "lower.flac", melody(3.0, 11025, seed=2), 11025)
    write_audio_file(folder / "same.wav", melody(3.0, RATE, seed=3), RATE)
    write_audio_file(folder / "higher.wav", melody(3.0, 44100, seed=4), 44100)
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        renders = read_renders(folder, RATE, 10.0)
    assert renders.names == ["higher.wav", "low.wav", "lower.flac", "same.wav"]  # judged all the same
    said = [r.getMessage() for r in caplog.records if "below the corpus's" in r.getMessage()]
    assert said == [f"{folder}: 2 of 4 render files at a rate below the corpus's 16000 Hz (low.wav at 8000 Hz, "
                    "lower.flac at 11025 Hz): resampled up, they hold nothing above 5512 Hz, where the corpus's audio "
                    "may reach 8000 Hz, and can be judged far from it for that alone; judge them against a corpus "
                    "prepared at their rate (wavegen prep --sample-rate 8000)"], caplog.text


def test_renders_at_or_above_the_corpus_rate_get_no_note(tmp_path, caplog):
    folder = tmp_path / "renders"
    write_audio_file(folder / "same.wav", melody(3.0, RATE, seed=3), RATE)
    write_audio_file(folder / "higher.wav", melody(3.0, 44100, seed=4), 44100)
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        renders = read_renders(folder, RATE, 10.0)
    assert len(renders.names) == 2 and "below the corpus" not in caplog.text
