"""`wavegen eval --renders DIR --label L`: the renders of one label of a labelled corpus judged against that
label's audio alone (its test and training split), as `wavegen eval --label L` scores that label's audio alone
(it was refused: "--label does not apply to --renders")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tone, write_audio_file

from wavegen.cli import main
from wavegen.prep import prepare

SR = 8000


@pytest.fixture(scope="module")
def album(tmp_path_factory):
    """(corpus with labels "low" (tones near 200 Hz) and "high" (near 2 kHz), 3 files each; a render of a
    2 kHz tone; a corpus of the same files prepared without labels)."""
    root = tmp_path_factory.mktemp("labels")
    for label, base in (("low", 200.0), ("high", 2000.0)):
        for i in range(3):
            write_audio_file(root / "rec" / label / f"{label}{i}.wav", tone(2.0, SR, freq=base + 10 * i), SR)
    prepare([root / "rec"], root / "corpus", sample_rate=SR, val_fraction=0.34, test_fraction=0.34,
            labels="folders", progress=False)
    prepare([root / "rec"], root / "plain", sample_rate=SR, val_fraction=0.34, test_fraction=0.34, progress=False)
    write_audio_file(root / "renders" / "stream_000.wav", tone(2.0, SR, freq=2000.0), SR)
    return root / "corpus", root / "renders", root / "plain"


def judged(capsys, corpus, renders, *more) -> tuple[int, dict | None, str]:
    capsys.readouterr()
    code = main(["-q", "eval", "--renders", str(renders), "--data", str(corpus), "--max-seconds", "2", "--json",
                 *more])
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else None, err


def test_label_judges_the_renders_against_that_labels_audio_alone(album, capsys):
    corpus, renders, _ = album
    centroid = {}
    for label in ("low", "high"):
        code, result, err = judged(capsys, corpus, renders, "--label", label)
        assert code == 0, err
        assert result["label"] == label
        centroid[label] = {s: result["sets"][s]["summary"]["centroid_hz_median"] for s in ("test", "train")}
    # each label's own test and training audio: near 200 Hz for low, near 2 kHz for high
    assert all(c < 600 for c in centroid["low"].values()), centroid
    assert all(c > 1500 for c in centroid["high"].values()), centroid
    code, result, _ = judged(capsys, corpus, renders)
    assert code == 0 and result["label"] is None  # every label's audio, as before
    # the text names the label judged against
    assert main(["-q", "eval", "--renders", str(renders), "--data", str(corpus), "--max-seconds", "2",
                 "--label", "high"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (f"renders {renders} (1 file) against the test split of "
                                                       f"label 'high' of {corpus}")


def test_a_label_the_corpus_cannot_judge_by_is_one_line(album, capsys):
    corpus, renders, plain = album
    code, _, err = judged(capsys, corpus, renders, "--label", "low:0.5,high:0.5")
    assert code == 2 and err.strip() == ("wavegen eval: error: --label 'low:0.5,high:0.5': eval takes one label; a "
                                         "blend has no audio of its own to score (without --label the renders are "
                                         "judged against every label's audio)")
    code, _, err = judged(capsys, corpus, renders, "--label", "mid")
    assert code == 2 and err.strip() == (f"wavegen eval: error: --label 'mid': corpus {corpus} has no audio of that "
                                         "label (its labels: high, low)")
    code, _, err = judged(capsys, plain, renders, "--label", "high")
    assert code == 2 and err.strip() == (f"wavegen eval: error: --label 'high': corpus {plain} was prepared without "
                                         "labels: its whole split is the album; leave --label out")


def test_a_label_whose_split_is_too_short_is_said_of_that_label(album, tmp_path, capsys):
    """A label of one short recording, cut in time (0.2 s held out), beside a label of long ones: the refusal
    names the label and its own longest segment (it gave the whole split's, 3 s, and sent to --split val, as short)."""
    _, renders, _ = album
    for label, freq, seconds, files in (("low", 200.0, 3.0, 3), ("high", 2000.0, 0.6, 1)):
        for i in range(files):
            write_audio_file(tmp_path / "rec" / label / f"{label}{i}.wav", tone(seconds, SR, freq=freq), SR)
    corpus = tmp_path / "corpus"
    prepare([tmp_path / "rec"], corpus, sample_rate=SR, val_fraction=0.34, test_fraction=0.34, labels="folders",
            progress=False)
    code, _, err = judged(capsys, corpus, renders, "--label", "high")
    assert code == 2 and err.strip() == (
        f"wavegen eval: error: the test split of label 'high' of {corpus} holds no clip of at least 0.25 s to compare "
        f"with (its longest segment: 0.204 s); prepare it again from more or longer recordings (--test-fraction 0.34 "
        f"beside --val-fraction 0.34 already holds out as much as train can spare)"), err
    code, result, err = judged(capsys, corpus, renders, "--label", "low")  # the long label's is judged
    assert code == 0 and result["label"] == "low", err


def test_a_label_missing_from_the_test_split_is_not_sent_to_a_val_split_too_short(album, tmp_path, capsys):
    """A label whose test recording is gone (the corpus prepared again: the others keep their splits) and whose val
    audio is a 0.2 s recording was told "give --split val", where --split val then ended in that label's own "no
    clip of at least 0.25 s": now the val split is said to be short too, and the corpus prepared again is asked."""
    _, renders, _ = album
    for label, base, seconds in (("low", 200.0, 2.0), ("high", 2000.0, 0.2)):
        for i in range(3):
            write_audio_file(tmp_path / "rec" / label / f"{label}{i}.wav", tone(seconds, SR, freq=base + 50 * i), SR)
    corpus = tmp_path / "corpus"
    settings = dict(sample_rate=SR, val_fraction=0.34, test_fraction=0.34, labels="folders", progress=False,
                    min_segment_seconds=0.05)
    held_out = {f["split"]: Path(f["path"]) for f in prepare([tmp_path / "rec"], corpus, **settings)["files"]
                if f["label"] == "high"}
    held_out["test"].unlink()
    prepare([tmp_path / "rec"], corpus, **settings)
    code, _, err = judged(capsys, corpus, renders, "--label", "high")
    assert code == 2 and err.strip() == (
        f"wavegen eval: error: the test split of {corpus} holds no audio of label 'high' to compare with; the val "
        f"split holds no clip of it of at least 0.25 s either (its longest segment: 0.200 s): prepare the corpus "
        f"again with more or longer recordings"), err
    code, _, err = judged(capsys, corpus, renders, "--label", "low")  # the long label's test audio is judged
    assert code == 0, err


def test_a_label_in_a_corpus_prepared_without_a_test_split_names_that_cause(album, tmp_path, capsys):
    """A labelled corpus prepared with --test-fraction 0 was told "prepare the corpus again with more of its
    recordings" (more recordings give it no test split): the fraction of 0 is named, as without --label."""
    _, renders, _ = album
    for label, base in (("low", 200.0), ("high", 2000.0)):
        for i in range(2):
            write_audio_file(tmp_path / "rec" / label / f"{label}{i}.wav", tone(1.0, SR, freq=base + 10 * i), SR)
    fix = "with --test-fraction above 0 (wavegen prep RECORDINGS {} --test-fraction 0.1)"
    for val, instead in ((0.0, "prepare the corpus again"), (0.5, "give --split val, or prepare the corpus again")):
        corpus = tmp_path / f"corpus{val}"
        prepare([tmp_path / "rec"], corpus, sample_rate=SR, val_fraction=val, test_fraction=0.0, labels="folders",
                progress=False)
        code, _, err = judged(capsys, corpus, renders, "--label", "high")
        assert code == 2 and err.strip() == (
            f"wavegen eval: error: the test split of {corpus} holds no audio of label 'high' to compare with (it was "
            f"prepared with --test-fraction 0); {instead} {fix.format(corpus)}"), err
    code, result, err = judged(capsys, corpus, renders, "--label", "high", "--split", "val")  # as it says
    assert code == 0 and result["split"] == "val" and result["label"] == "high", err


def test_a_label_missing_from_the_test_split_is_sent_to_its_val_audio(album, tmp_path, capsys):
    """A label whose test recording is gone (the corpus prepared again: the others keep their splits) but whose val
    audio is long enough is sent to --split val, which then judges it."""
    _, renders, _ = album
    for label, base in (("low", 200.0), ("high", 2000.0)):
        for i in range(3):
            write_audio_file(tmp_path / "rec" / label / f"{label}{i}.wav", tone(1.0, SR, freq=base + 50 * i), SR)
    corpus = tmp_path / "corpus"
    settings = dict(sample_rate=SR, val_fraction=0.34, test_fraction=0.34, labels="folders", progress=False)
    held_out = {f["split"]: Path(f["path"]) for f in prepare([tmp_path / "rec"], corpus, **settings)["files"]
                if f["label"] == "high"}
    held_out["test"].unlink()
    prepare([tmp_path / "rec"], corpus, **settings)
    code, _, err = judged(capsys, corpus, renders, "--label", "high")
    assert code == 2 and err.strip() == (f"wavegen eval: error: the test split of {corpus} holds no audio of label "
                                         "'high' to compare with; give --split val"), err
    code, result, err = judged(capsys, corpus, renders, "--label", "high", "--split", "val")
    assert code == 0 and result["split"] == "val" and result["label"] == "high", err
