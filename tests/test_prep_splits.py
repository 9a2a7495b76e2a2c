"""wavegen prep: which split each file goes to (by file, by time, per label) and the arrays that hold them."""

import os

import numpy as np
import pytest

from test_prep_inputs import SR, prep, tones

from wavegen.audio import float_to_int16
from wavegen.audio_decode import load_mono
from wavegen.corpus import Corpus, CorpusError
from wavegen.split import SPLITS


def check_split_arrays(c: Corpus):
    """Segments tile each split array exactly and agree with the manifest."""
    total = 0
    for name in SPLITS:
        seg, audio = c.segments(name), c.split(name)
        assert seg.dtype == np.int64 and seg.shape[1:] == (3,) and audio.dtype == np.int16
        if len(seg):
            assert seg[0, 0] == 0 and np.array_equal(seg[1:, 0], np.cumsum(seg[:-1, 1]))
        assert seg[:, 1].sum() == len(audio) == c.manifest["splits"][name]["samples"]
        assert c.manifest["splits"][name]["segments"] == len(seg)
        total += len(audio)
    kept = sum(round(f["kept_seconds"] * c.sample_rate) for f in c.manifest["files"])
    assert total == kept


def test_split_by_file(tmp_path, make_tone):
    tones(tmp_path / "rec", make_tone, 10)
    m = prep([tmp_path / "rec"], tmp_path / "c", val_fraction=0.2, test_fraction=0.2, seed=3)
    assert m["split_mode"] == "file"
    c = Corpus(tmp_path / "c")
    check_split_arrays(c)
    owners = {}
    for name in SPLITS:
        for i in np.unique(c.segments(name)[:, 2]):
            assert i not in owners, f"file {i} in {owners.get(i)} and {name}"
            owners[i] = name
            assert m["files"][i]["split"] == name
    assert sorted(owners) == list(range(10))
    counts = {s: sum(f["split"] == s for f in m["files"]) for s in SPLITS}
    assert counts["val"] >= 1 and counts["test"] >= 1 and counts["train"] >= 5
    total = sum(c.seconds(s) for s in SPLITS)
    assert abs(c.seconds("test") / total - 0.2) < 0.1 and abs(c.seconds("val") / total - 0.2) < 0.1
    # same seed, same assignment
    m2 = prep([tmp_path / "rec"], tmp_path / "c2", val_fraction=0.2, test_fraction=0.2, seed=3)
    assert [f["split"] for f in m2["files"]] == [f["split"] for f in m["files"]]


def test_small_holdout_still_gets_a_file_and_train_keeps_one(tmp_path, make_tone):
    tones(tmp_path / "rec", make_tone, 3)
    m = prep([tmp_path / "rec"], tmp_path / "c", val_fraction=0.01, test_fraction=0.01)
    assert m["split_mode"] == "file"
    assert sorted(f["split"] for f in m["files"]) == ["test", "train", "val"]
    check_split_arrays(Corpus(tmp_path / "c"))


def test_two_files_one_holdout_split_by_file(tmp_path, make_tone):
    tones(tmp_path / "rec", make_tone, 2)
    m = prep([tmp_path / "rec"], tmp_path / "c", val_fraction=0.0, test_fraction=0.3)
    assert m["split_mode"] == "file"
    assert sorted(f["split"] for f in m["files"]) == ["test", "train"]
    c = Corpus(tmp_path / "c")
    assert c.split("val").shape == (0,) and c.segments("val").shape == (0, 3)


def test_single_file_splits_by_time(tmp_path, make_tone):
    make_tone(tmp_path / "one.flac", 4.0, 44100, 440, channels=2)
    m = prep([tmp_path / "one.flac"], tmp_path / "c", val_fraction=0.1, test_fraction=0.2)
    assert m["split_mode"] == "time" and m["files"][0]["split"] == "time"
    c = Corpus(tmp_path / "c")
    check_split_arrays(c)
    n = {s: len(c.split(s)) for s in SPLITS}
    total = sum(n.values())
    assert n["test"] == round(0.2 * total) and n["val"] == round(0.1 * total)
    # the three splits are consecutive stretches of the same audio
    whole = np.concatenate([c.split(s) for s in SPLITS])
    np.testing.assert_array_equal(whole, float_to_int16(load_mono(tmp_path / "one.flac", SR)))


def test_two_files_two_holdouts_split_by_time(tmp_path, make_tone):
    tones(tmp_path / "rec", make_tone, 2, seconds=2.0)
    m = prep([tmp_path / "rec"], tmp_path / "c", val_fraction=0.25, test_fraction=0.25)
    assert m["split_mode"] == "time" and {f["split"] for f in m["files"]} == {"time"}
    c = Corpus(tmp_path / "c")
    check_split_arrays(c)
    for name in SPLITS:  # every file contributes to every split
        assert sorted(np.unique(c.segments(name)[:, 2])) == [0, 1]


def test_labels_from_folders_stratified(tmp_path, make_tone):
    rec = tmp_path / "rec"
    tones(rec / "piano", make_tone, 3)
    tones(rec / "voice" / "takes", make_tone, 4, seconds=1.05)  # nested: label is still "voice"
    m = prep([rec], tmp_path / "c", val_fraction=0.2, test_fraction=0.2, labels="folders")
    assert m["labels"] == ["piano", "voice"] and m["split_mode"] == "file"
    for f in m["files"]:
        assert f["label"] == ("voice" if "voice" in f["path"] else "piano")
    for label in ("piano", "voice"):
        splits = sorted(f["split"] for f in m["files"] if f["label"] == label)
        assert splits.count("train") >= 1 and "val" in splits and "test" in splits
    c = Corpus(tmp_path / "c")
    check_split_arrays(c)
    assert c.labels == ["piano", "voice"]
    for name in SPLITS:
        got = c.segment_labels(name)
        want = [m["labels"].index(m["files"][i]["label"]) for i in c.segments(name)[:, 2]]
        assert got.tolist() == want and set(want) == {0, 1}


def test_label_with_too_few_files_is_split_by_time(tmp_path, make_tone):
    rec = tmp_path / "rec"
    tones(rec / "piano", make_tone, 3)
    make_tone(rec / "drone" / "d.wav", 3.0, SR, 90)
    m = prep([rec], tmp_path / "c", labels="folders")
    assert m["split_mode"] == "mixed"
    assert {f["split"] for f in m["files"] if f["label"] == "drone"} == {"time"}
    assert {f["split"] for f in m["files"] if f["label"] == "piano"} == {"train", "val", "test"}
    check_split_arrays(Corpus(tmp_path / "c"))


def test_labels_need_subfolders(tmp_path, make_tone):
    tones(tmp_path / "rec" / "piano", make_tone, 2)
    make_tone(tmp_path / "rec" / "loose.wav", 1.0, SR, 999)
    with pytest.raises(CorpusError, match="loose.wav"):
        prep([tmp_path / "rec"], tmp_path / "c", labels="folders")


def test_symlinked_folders_are_followed_and_labels_come_from_the_link_names(tmp_path, make_tone, caplog):
    artists = tmp_path / "artists"
    tones(artists / "a", make_tone, 2)
    tones(artists / "b", make_tone, 2, seconds=1.5)
    (artists / "a" / "again").symlink_to("../a")  # a link loop
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "alpha").symlink_to(artists / "a")
    (linked / "beta").symlink_to(artists / "b")
    with caplog.at_level("WARNING"):
        m = prep([linked], tmp_path / "c", labels="folders", val_fraction=0, test_fraction=0)
    assert m["labels"] == ["alpha", "beta"] and m["skipped"] == []
    got = sorted((f["label"], os.path.relpath(f["path"], linked)) for f in m["files"])
    assert got == [("alpha", "alpha/t00.wav"), ("alpha", "alpha/t01.wav"),
                   ("beta", "beta/t00.wav"), ("beta", "beta/t01.wav")]
    assert "link loop" in caplog.text and str(linked / "alpha" / "again") in caplog.text
