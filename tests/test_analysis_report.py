"""wavegen/analysis_report.py: the text report of a comparison, on a result built by hand (no librosa)."""

import math

from wavegen.analysis import FRAME_FEATURES, SETS, SUMMARY_FEATURES
from wavegen.analysis_report import format_comparison


def _result(likeness=0.5):
    """A compare_renders result: every summary 1.0 (tempo undefined for the renders), distances 2.0."""
    summary = {key: 1.0 for key in SUMMARY_FEATURES}
    sets = {s: {"summary": dict(summary)} for s in SETS}
    sets["renders"]["summary"]["tempo_bpm"] = math.nan
    distances = {s: {"frechet": 2.0, "features": {k: 2.0 for k in FRAME_FEATURES}} for s in SETS if s != "test"}
    verdict = {"frechet_renders": 3.0, "frechet_noise": 4.0, "frechet_album": 5.0, "album_likeness": likeness,
               "periodic_fraction_renders": 0.25, "periodic_fraction_album": 0.75}
    return {"sets": sets, "distances": distances, "verdict": verdict}


def test_the_table_has_a_column_per_set_and_says_why_a_number_is_undefined():
    lines = format_comparison(_result()).splitlines()
    assert lines[0].split() == list(SETS)
    tempo = next(line for line in lines if line.startswith("tempo_bpm"))
    assert tempo.split()[1:] == ["-", "1.000", "1.000", "1.000", "1.000"]
    assert "- tempo_bpm of renders: no excerpt of 4 s or more to estimate a tempo on" in "\n".join(lines)
    frechet = next(line for line in lines if line.startswith("frechet (MFCC"))
    assert frechet.split()[-5:] == ["2.00", "-", "2.00", "2.00", "2.00"]  # the test split is the reference
    # every number named by the set it is of: the periodic fraction beside the renders' is the reference
    # split's (the test split's), the Frechet distance called the album's is the training split's
    assert lines[-2:] == ["album likeness 0.50 (1: as near the test split as the training split, 0: as far as "
                          "noise)",
                          "frechet to the test split: renders 3.00, nearer noise 4.00, training split 5.00; "
                          "periodic frames: renders 0.25, test split 0.75"]
    assert "distance to the test split (0: identical; train = the training split, the album;" in "\n".join(lines)


def test_a_comparison_against_the_validation_split_names_that_split():
    result = {**_result(), "split": "val"}
    text = format_comparison(result)
    assert "distance to the val split (" in text and "the test column is the val split itself" in text
    assert text.splitlines()[-1] == ("frechet to the val split: renders 3.00, nearer noise 4.00, training split "
                                     "5.00; periodic frames: renders 0.25, val split 0.75")
    assert "test split" not in text


def test_an_undefined_likeness_says_why_instead_of_a_number():
    text = format_comparison(_result(likeness=math.nan))
    assert "album likeness undefined: the nearer noise (4.00) is no farther from the test split than the " \
           "training split (5.00)" in text
    assert "album likeness nan" not in text


def test_numbers_undefined_for_one_reason_share_one_note():
    """A silent render has no spectrum or pitch: six numbers undefined for one reason are one note, not six."""
    result = _result()
    silent = ("centroid_hz_median", "bandwidth_hz_median", "flatness_median", "contrast_db_median",
              "chroma_entropy_bits_median", "chroma_profile_similarity")
    for key in silent:
        result["sets"]["renders"]["summary"][key] = math.nan
    text = format_comparison(result)
    assert f"- {', '.join(silent)} of renders: every frame is silent (under -60 dBFS): no spectrum or pitch " \
           "to measure" in text.splitlines()
    assert "- tempo_bpm of renders: no excerpt of 4 s or more" in text
