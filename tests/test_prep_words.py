"""prep's counts agree with their nouns: "1 source changed", "2 sources new", "1 file is in no subfolder" (they
said "1 source(s)", "1 file(s) are"), said with progress.counted."""

import logging
from pathlib import Path

import pytest

from wavegen import prep, prep_decode, prep_inputs
from wavegen.audio_ogg import CHAINED_OGG
from wavegen.corpus import CorpusError
from wavegen.split import SPLITS


def _manifest(paths: dict) -> dict:
    return {"files": [{"path": p, "sha256": sha} for p, sha in paths.items()]}


def test_sources_changed_are_counted_with_their_noun_agreeing():
    old = _manifest({"a.wav": "1", "b.wav": "2", "c.wav": "3"})
    new = _manifest({"a.wav": "9", "d.wav": "4", "e.wav": "5"})
    assert prep._sources_changed(old, new) == ["1 source changed (a.wav)", "2 sources new",
                                               "2 sources gone or skipped now (b.wav, c.wav)"]


def _entry(name: str, **kw) -> dict:
    return {"path": name, "split": "train", "label": None, "gain_db": 0.0, "partial": False, **kw}


def test_the_summary_of_a_prep_counts_one_file_and_two_with_their_nouns_agreeing(tmp_path, caplog):
    splits = {s: {"seconds": 1.0} for s in SPLITS}
    one = {"files": [_entry("a.wav", gain_db=-1.0, partial=True, partial_reason=CHAINED_OGG + ": ...")],
           "skipped": [], "splits": splits, "split_mode": "file"}
    two = {"files": [_entry(f"{n}.wav", gain_db=-1.0, partial=True, partial_reason=CHAINED_OGG, recovered=1)
                     for n in "ab"], "skipped": [], "splits": splits, "split_mode": "file"}
    with caplog.at_level(logging.INFO, logger="wavegen"):
        prep._log_summary(tmp_path, one)
    assert f"prepared {tmp_path}: 1 file used, 0 skipped;" in caplog.text
    assert "1 file scaled down to full scale (gain_db); 1 chained Ogg file kept in part: its first stream " \
           "(partial)" in caplog.text, caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wavegen"):
        prep._log_summary(tmp_path, two)
    assert f"prepared {tmp_path}: 2 files used, 0 skipped;" in caplog.text
    assert "2 files scaled down to full scale (gain_db); 2 unfinished WAV files recovered (recovered); 2 chained " \
           "Ogg files kept in part: their first stream (partial)" in caplog.text, caplog.text


def test_the_labels_split_in_time_are_said_with_their_noun_agreeing(tmp_path, caplog):
    splits = {s: {"seconds": 1.0} for s in SPLITS}
    files = [_entry("a.wav", label="x", split="time"), _entry("b.wav", label="y", split="time")]
    for cut, said in ((files[:1], "the label with too few files: x)"), (files, "the labels with too few files: x, y)")):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="wavegen"):
            prep._log_summary(tmp_path, {"files": cut, "skipped": [], "splits": splits, "split_mode": "mixed"})
        assert f"split by file; by time for {said}" in caplog.text, caplog.text


def test_the_other_reasons_of_skipped_files_are_counted_with_their_noun_agreeing():
    skipped = [{"reason": f"reason {word}"} for word in ("a", "b", "c", "d", "d", "e")]
    assert prep_decode._most_common_reasons(skipped[:5]).endswith("; 1 other reason")
    assert prep_decode._most_common_reasons(skipped).endswith("; 2 other reasons")


@pytest.mark.parametrize("n, said", [(1, "1 file is in no subfolder"), (2, "2 files are in no subfolder")])
def test_files_in_no_subfolder_are_counted_with_their_noun_and_verb_agreeing(tmp_path, n, said):
    found = [(tmp_path / f"{i}.wav", tmp_path) for i in range(n)]
    with pytest.raises(CorpusError) as err:
        prep_inputs.folder_labels(found)
    assert said in str(err.value), err.value
    assert f"move {'it' if n == 1 else 'them'} into one (INPUT/LABEL/file.wav)" in str(err.value)


@pytest.mark.parametrize("n, said", [(1, "passing over 1 audio file in formats prep cannot decode"),
                                     (2, "passing over 2 audio files in formats prep cannot decode")])
def test_audio_files_of_other_formats_are_counted_with_their_noun_agreeing(caplog, n, said):
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        prep_inputs._warn_other_audio([Path(f"/rec/{i}.m4a") for i in range(n)])
    assert said in caplog.text and caplog.text.rstrip().endswith(
        "convert it to FLAC or WAV to use it" if n == 1 else "convert them to FLAC or WAV to use them"), caplog.text


@pytest.mark.parametrize("at, said, damaged", [
    ((1.0,), "1 sample above 24.1 dBFS and at least 40 dB above all the rest (at 1.000 s: 1e+30)",
     "a damaged sample, under which its sound would have counted as silence or been scaled down; replace it in"),
    ((1.0, 2.0), "2 samples above 24.1 dBFS and at least 40 dB above all the rest (the first at 1.000 s: 1e+30)",
     "damaged samples, under which its sound would have counted as silence or been scaled down; replace them in")],
    ids=["one", "two"])
def test_spikes_clipped_are_said_with_their_pronouns_agreeing(tmp_path, make_audio, make_tone, caplog, at, said,
                                                               damaged):
    """One spike clipped was "1 sample above ... (the first at 1.000 s: ...)" and "damaged samples ... replace
    them": "the first" of one, and "them" of it."""
    import numpy as np
    from conftest import melody
    from test_prep_inputs import prep, tones

    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    x = melody(4.0, 16000, seed=3)
    for seconds in at:
        x[int(seconds * 16000)] = 1e30
    make_audio(rec / "spike.wav", x.astype(np.float32), 16000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="wavegen.prep"):
        manifest = prep([rec], tmp_path / "c")
    (entry,) = [f for f in manifest["files"] if f["path"].endswith("spike.wav")]
    assert entry["clipped"].startswith(said), entry["clipped"]
    (line,) = [r.getMessage() for r in caplog.records if "clipped to the rest's peak" in r.getMessage()]
    assert f"{entry['clipped']}: {damaged} the file to keep it unclipped" in line, line


@pytest.mark.parametrize("n, said", [(1, "in 1 of its 96,000 frames, at 0.500 s (damaged"),
                                     (2, "in 2 of its 96,000 frames, the first at 0.500 s (damaged")])
def test_non_finite_frames_are_said_with_the_first_only_of_several(n, said):
    """NaN in one frame was "in 1 of its 96,000 frames, the first at 0.500 s": "the first" of one."""
    assert said in prep_decode._nonfinite(n, 8000, 96000, 16000)
