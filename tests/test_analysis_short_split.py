"""wavegen.analysis.compare_renders on a corpus whose compared split holds only segments shorter than the
analysis needs: one line naming the corpus, the split, its longest segment and what to do."""

import pytest
from conftest import melody, prepared_corpus, write_audio_file

from wavegen.analysis import MIN_RENDER_SECONDS, AnalysisError, compare_renders

RATE = 8000


def test_a_split_of_only_short_segments_names_the_corpus_and_the_fix(tmp_path):
    corpus = prepared_corpus(tmp_path / "c", files=4, seconds=0.2, sample_rate=RATE, val_fraction=0.25,
                             test_fraction=0.25, min_segment_seconds=0.05)
    renders = tmp_path / "renders"
    write_audio_file(renders / "a.wav", melody(2.0, RATE, seed=9), RATE)
    for split in ("test", "val"):
        with pytest.raises(AnalysisError) as caught:
            compare_renders(renders, corpus, split=split, max_seconds=5.0)
        text = str(caught.value)
        assert str(corpus) in text and f"the {split} split" in text
        assert f"at least {MIN_RENDER_SECONDS} s" in text and "longest segment: 0.200 s" in text
        assert f"--{split}-fraction" in text


@pytest.mark.parametrize("split", ["test", "val"])
def test_the_fraction_suggested_is_larger_than_the_one_prepared_with(tmp_path, split):
    """A corpus prepared with --test-fraction 0.2 is told 0.3 (was 0.2 again, whatever it was prepared with); one
    prepared with 0.3 is told no fraction at all (a larger one would starve train) but more or longer recordings."""
    renders = tmp_path / "renders"
    write_audio_file(renders / "a.wav", melody(2.0, RATE, seed=9), RATE)
    other = "val" if split == "test" else "test"
    for fraction, hint in ((0.2, f"--{split}-fraction 0.3)"), (0.3, "more or longer recordings")):
        corpus = prepared_corpus(tmp_path / f"c{fraction}", files=4, seconds=0.2, sample_rate=RATE,
                                 min_segment_seconds=0.05, **{f"{split}_fraction": fraction, f"{other}_fraction": 0.1})
        with pytest.raises(AnalysisError) as caught:
            compare_renders(renders, corpus, split=split, max_seconds=5.0)
        text = str(caught.value)
        assert hint in text, text
        assert f"--{split}-fraction 0.2)" not in text and "\n" not in text
    assert f"--{split}-fraction 0.3 beside --{other}-fraction 0.1 already holds out" in text
