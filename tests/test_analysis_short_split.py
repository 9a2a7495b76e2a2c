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
    # train keeps 0.6 of the audio: what stops a larger fraction is the largest one suggested, not train's share
    assert f"--{split}-fraction 0.3 is already at or past 0.3, the largest share a held-out split is suggested" in text
    assert "as much as train can spare" not in text


def test_a_fraction_past_the_largest_suggested_is_said_as_such_not_as_trains_share(tmp_path):
    """A val split of short segments prepared with --val-fraction 0.34 beside --test-fraction 0 was told that the two
    "already hold out as much as train can spare" (train keeps 0.66): it is the hint's cap that stops a larger one."""
    corpus, renders = _short_val_without_test(tmp_path)
    with pytest.raises(AnalysisError) as caught:
        compare_renders(renders, corpus, split="val", max_seconds=1.0)
    assert str(caught.value) == (
        f"the val split of {corpus} holds no clip of at least {MIN_RENDER_SECONDS} s to compare with (its longest "
        f"segment: 0.200 s); prepare it again from more or longer recordings (--val-fraction 0.34 is already at or "
        f"past 0.3, the largest share a held-out split is suggested)")


def test_a_fraction_below_the_largest_suggested_is_never_said_past_it(tmp_path):
    """--val-fraction 0.22 beside --test-fraction 0.275 leaves train no larger hundredth to spare (the hint's
    rounding), and was said "--val-fraction 0.22 is already at or past 0.3": train's share is what stops it."""
    corpus = prepared_corpus(tmp_path / "c", files=4, seconds=0.2, sample_rate=RATE, val_fraction=0.22,
                             test_fraction=0.275, min_segment_seconds=0.05)
    renders = tmp_path / "renders"
    write_audio_file(renders / "a.wav", melody(1.0, RATE, seed=9), RATE)
    with pytest.raises(AnalysisError) as caught:
        compare_renders(renders, corpus, split="val", max_seconds=1.0)
    said = str(caught.value)
    assert said.endswith("prepare it again from more or longer recordings (--val-fraction 0.22 beside "
                         "--test-fraction 0.275 already holds out as much as train can spare)"), said


def test_an_empty_test_split_does_not_send_to_a_val_split_too_short_to_judge(tmp_path):
    """A corpus prepared with --test-fraction 0 whose val split holds only segments under MIN_RENDER_SECONDS was told
    "give --split val (its 0.2 s)", where --split val then ended in the val split's own "no clip of at least 0.25 s":
    now the val split is said to be short too, and the corpus prepared again is what is asked."""
    corpus, renders = _short_val_without_test(tmp_path)
    with pytest.raises(AnalysisError) as caught:
        compare_renders(renders, corpus, split="test", max_seconds=1.0)
    assert str(caught.value) == (
        f"the test split of {corpus} has no audio to compare with (it was prepared with --test-fraction 0); the val "
        f"split holds no clip of at least {MIN_RENDER_SECONDS} s either (its longest segment: 0.200 s): prepare it "
        f"again with --test-fraction above 0 (wavegen prep RECORDINGS {corpus} --test-fraction 0.1)")


def _short_val_without_test(tmp_path):
    """A corpus prepared with --val-fraction 0.34 beside --test-fraction 0 whose val split holds only 0.2 s segments
    (under MIN_RENDER_SECONDS), and a folder with one render: (corpus, renders)."""
    corpus = prepared_corpus(tmp_path / "c", files=3, seconds=0.2, sample_rate=RATE, val_fraction=0.34,
                             test_fraction=0.0, min_segment_seconds=0.05)
    renders = tmp_path / "renders"
    write_audio_file(renders / "a.wav", melody(1.0, RATE, seed=9), RATE)
    return corpus, renders
