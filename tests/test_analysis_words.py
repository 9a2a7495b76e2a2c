"""The analysis's lines count with their nouns agreeing: "1 of 1 render file ... it holds", "its subfolder a
holds audio files: give it", "analysing test: 1 excerpt" (were "render file(s) ... they hold", "subfolder(s)",
"excerpt(s)")."""

import logging

import pytest

from conftest import melody, tone, write_audio_file
from wavegen import analysis
from wavegen.analysis_audio import _in_subfolders, read_renders

RATE = 16000


def test_one_render_file_at_a_lower_rate_is_said_as_one(tmp_path, caplog):
    folder = tmp_path / "renders"
    write_audio_file(folder / "low.wav", melody(3.0, 8000, seed=1), 8000)
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        read_renders(folder, RATE, 10.0)
    said = [r.getMessage() for r in caplog.records if "below the corpus's" in r.getMessage()]
    assert said == [f"{folder}: 1 of 1 render file at a rate below the corpus's 16000 Hz (low.wav at 8000 Hz): "
                    "resampled up, it holds nothing above 4000 Hz, where the corpus's audio may reach 8000 Hz, and "
                    "can be judged far from it for that alone; judge it against a corpus prepared at its rate "
                    "(wavegen prep --sample-rate 8000)"], caplog.text


@pytest.mark.parametrize("names, said", [
    (["take_a"], "; its subfolder take_a holds audio files: give it (the files directly"),
    (["take_a", "take_b"], "; its subfolders take_a, take_b hold audio files: give one of them (the files directly")])
def test_subfolders_holding_audio_are_one_subfolder_or_two(tmp_path, names, said):
    for name in names:
        write_audio_file(tmp_path / name / "x.wav", tone(0.1, RATE), RATE)
    assert _in_subfolders(tmp_path).startswith(said)


def test_the_excerpts_analysed_are_counted_agreeing(caplog):
    short, long = tone(1.5, RATE, freq=330.0, amplitude=0.3)[:, 0], melody(25.0, RATE)
    with caplog.at_level(logging.INFO, logger="wavegen"):
        analysis.compare_clips([short], [long], [], RATE, max_seconds=20.0)
    said = [m.rsplit(",", 1)[0] for m in caplog.messages if m.startswith("analysing ")]
    assert said[:2] == ["analysing renders: 1 excerpt", "analysing test: 2 excerpts"], caplog.messages
