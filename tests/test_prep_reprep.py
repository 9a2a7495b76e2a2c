"""wavegen prep run again into the same corpus after recordings were added: every earlier file keeps its split;
a file cut in time keeps its cut in the file's time; and spikes judged on the source, at its own rate (a file of
silence and one 1e30 named so; a spike that resampling brings under +6 dBFS still a spike)."""

import json
import logging
import os
import shutil

import numpy as np
import soundfile as sf
from conftest import melody
from test_prep_inputs import SR, prep

from wavegen.split import SPLITS, assign_splits, earlier_splits


def _melodies(folder, names, seconds=1.0):
    folder.mkdir(parents=True, exist_ok=True)
    for n, name in enumerate(names):
        sf.write(folder / name, melody(seconds + 0.1 * n, SR, seed=sum(map(ord, name))), SR)


def _splits(manifest) -> dict:
    return {os.path.basename(f["path"]): f["split"] for f in manifest["files"]}


def test_a_reprep_after_adding_files_keeps_every_earlier_files_split(tmp_path, caplog):
    """assign_splits shuffled the whole file list with the seed: adding one recording and preparing again moved
    earlier files between train, val and test (a run resumed on it trained on what it had validated on). Files of
    the corpus there keep their split, found by bytes (moved or renamed) or else by path where its old bytes are
    gone (the same recording, remastered); only new files are assigned, toward the fractions; a changed --seed draws all again."""
    rec = tmp_path / "rec"
    _melodies(rec, [f"t{i:02d}.wav" for i in range(10)])
    first = _splits(prep([rec], tmp_path / "c"))
    assert set(first.values()) == set(SPLITS)
    _melodies(rec, [f"t{i:02d}.wav" for i in range(10, 14)], seconds=1.5)
    (rec / "moved").mkdir()
    shutil.move(rec / "t03.wav", rec / "moved" / "renamed.wav")  # the same bytes elsewhere
    sf.write(rec / "t05.wav", melody(1.2, SR, seed=99), SR)  # the same name, other audio: remastered
    with caplog.at_level(logging.INFO, logger="wavegen.prep"):
        manifest = prep([rec], tmp_path / "c")
    again = _splits(manifest)
    assert again.pop("renamed.wav") == first.pop("t03.wav")
    assert {name: again[name] for name in first} == first
    assert all(again[f"t{i:02d}.wav"] in SPLITS for i in range(10, 14))
    assert f"{tmp_path / 'c'}: 10 earlier files kept their split, 4 new files assigned" in caplog.text
    seconds = {s: manifest["splits"][s]["seconds"] for s in SPLITS}
    assert seconds["train"] > 0.6 * sum(seconds.values()) and seconds["val"] > 0 and seconds["test"] > 0
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wavegen.prep"):
        prep([rec], tmp_path / "c", seed=5)
    assert "seed 0 → 5: every file's split is drawn again" in caplog.text


def test_a_label_cut_in_time_keeps_its_cut_when_files_join_it():
    """A label that had one file (cut in time) and gets three more: the first stays cut in time, its pieces where
    they were; the new ones go whole to a split, so no audio moves from val or test into train."""
    files = [{"path": f"/r/{n}.wav", "sha256": n, "label": None, "split": None} for n in "abcd"]
    lengths = [[16000], [8000], [8000], [8000]]
    assign_splits(files[:1], lengths[:1], 0.2, 0.2, 0)
    assert files[0]["split"] == "time"
    earlier = earlier_splits({"files": [dict(files[0], split="time")]})
    for f in files:
        f["split"] = None
    pieces, mode, kept = assign_splits(files, lengths, 0.2, 0.2, 0, earlier)
    assert files[0]["split"] == "time" and mode == "mixed" and kept == {0}
    assert all(f["split"] in SPLITS for f in files[1:])
    assert [p for p in pieces["test"] if p[0] == 0] == [(0, 12800, 3200)]


def test_renumbered_takes_and_a_copy_over_another_keep_their_audios_split(tmp_path, caplog):
    """Earlier files were matched by path before bytes: renumbering takes (take_06 -> take_07, a new take_01) gave
    each path's old split to other audio, val audio went to train, and the count called every file kept. Bytes
    match first; a copy of a val file over a train file is val audio (the copy's source skipped as its duplicate)."""
    rec = tmp_path / "rec"
    _melodies(rec, [f"take_{i:02d}.wav" for i in range(1, 11)])
    first = prep([rec], tmp_path / "c")
    by_bytes = {f["sha256"]: f["split"] for f in first["files"]}
    for i in range(10, 0, -1):
        os.rename(rec / f"take_{i:02d}.wav", rec / f"take_{i + 1:02d}.wav")
    sf.write(rec / "take_01.wav", melody(1.05, SR, seed=99), SR)
    with caplog.at_level(logging.INFO, logger="wavegen.prep"):
        again = prep([rec], tmp_path / "c")
    assert {f["sha256"]: f["split"] for f in again["files"] if f["sha256"] in by_bytes} == by_bytes
    assert f"{tmp_path / 'c'}: 10 earlier files kept their split, 1 new file assigned" in caplog.text
    splits = _splits(again)
    train = min(n for n, s in splits.items() if s == "train")
    val = max(n for n, s in splits.items() if s == "val")
    shutil.copyfile(rec / val, rec / train)
    copied = _splits(prep([rec], tmp_path / "c"))
    assert val not in copied and copied[train] == "val"


def test_a_corpus_or_label_left_with_only_held_val_and_test_files_is_drawn_again(tmp_path, caplog):
    """Only files held in val or test left (the others removed), none new: train was empty without a word, for
    the corpus or for one label. That label is drawn again as a fresh prep draws it (cut in time here), said."""
    rec = tmp_path / "rec"
    _melodies(rec, [f"t{i:02d}.wav" for i in range(10)])
    first = prep([rec], tmp_path / "c")
    for f in first["files"]:
        if f["split"] != "val":
            os.remove(f["path"])
    with caplog.at_level(logging.WARNING):
        again = prep([rec], tmp_path / "c")
    fresh = prep([rec], tmp_path / "fresh")
    assert again["splits"]["train"]["samples"] > 0 and again["splits"] == fresh["splits"]
    assert "the corpus: every file left was in val or test before and none is new: drawn again" in caplog.text
    labelled = tmp_path / "labelled"
    _melodies(labelled / "a", [f"a{i}.wav" for i in range(6)])
    _melodies(labelled / "b", ["b0.wav", "b1.wav", "b2.wav"])
    for f in prep([labelled], tmp_path / "l", labels="folders")["files"]:
        if f["label"] == "b" and f["split"] == "train":
            os.remove(f["path"])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = prep([labelled], tmp_path / "l", labels="folders")
    assert [f["split"] for f in again["files"] if f["label"] == "b"] == ["time", "time"]
    assert "label 'b': every file left was in val or test before" in caplog.text


def test_a_change_of_labels_draws_every_split_again(tmp_path, caplog):
    """labels None -> "folders" groups the files otherwise (a label of two files is cut in time when prepared
    fresh): like a changed seed, every file's split is drawn again, said."""
    rec = tmp_path / "rec"
    _melodies(rec / "a", [f"a{i}.wav" for i in range(8)])
    _melodies(rec / "b", ["b0.wav", "b1.wav"])
    prep([rec], tmp_path / "c")
    with caplog.at_level(logging.INFO, logger="wavegen.prep"):
        again = prep([rec], tmp_path / "c", labels="folders")
    assert "labels None → 'folders': every file's split is drawn again" in caplog.text
    fresh = prep([rec], tmp_path / "fresh", labels="folders")
    assert _splits(again) == _splits(fresh) and again["splits"] == fresh["splits"]


def _quiet_intro(path):
    """10 s of noise whose first 2 s are 50 dB down: kept at --top-db 60, trimmed at 40. Returns its int16 samples."""
    x = 0.2 * np.random.default_rng(0).standard_normal(10 * SR).astype(np.float32)
    x[: 2 * SR] *= 10 ** (-50 / 20)
    sf.write(path, x, SR, subtype="FLOAT")
    return np.round(x.astype(np.float64) * 32767).astype(np.int16)


def _file_times(corpus, source) -> dict:
    """{split: [(start, end)]}: the seconds of source (its int16 samples, at SR) each piece of a split holds, found by
    its samples (the corpus's own records not trusted)."""
    out, raw = {}, source.tobytes()
    for name in SPLITS:
        audio, rows = np.load(corpus / f"{name}.npy"), np.load(corpus / f"{name}_segments.npy")
        out[name] = []
        for start, length, _ in rows:
            at = raw.find(audio[start : start + 64].tobytes())
            while at % 2:  # a match must start on a sample
                at = raw.find(audio[start : start + 64].tobytes(), at + 1)
            assert at >= 0 and np.array_equal(source[at // 2 : at // 2 + length], audio[start : start + length])
            out[name].append((at // 2 / SR, (at // 2 + length) / SR))
    return out


def test_a_held_file_cut_in_time_keeps_its_cut_in_the_files_time_under_another_top_db(tmp_path, caplog):
    """A file cut in time kept "time", its cut at fractions of its kept length: another --top-db (its quiet intro
    dropped now) moved the cut 0.39 s later, so 0.39 s of its val audio went into train (it was only named). The
    cut is recorded in the file's time ("time_cuts_seconds") and kept: each moment of it stays in its split."""
    rec = tmp_path / "rec"
    rec.mkdir()
    source = _quiet_intro(rec / "only.wav")
    first = prep([rec], tmp_path / "c", top_db=60)["files"][0]
    before = _file_times(tmp_path / "c", source)
    assert first["split"] == "time" and before == {"train": [(0.0, 8.0)], "val": [(8.0, 9.0)], "test": [(9.0, 10.0)]}
    with caplog.at_level(logging.WARNING):
        again = prep([rec], tmp_path / "c", top_db=40)
    after = _file_times(tmp_path / "c", source)
    assert again["files"][0]["kept_seconds"] < 8.1  # its intro dropped now
    assert all(end <= 8.0 for _, end in after["train"]), after  # was: train to 8.39 s, into the old val audio
    assert after["val"] == before["val"] and after["test"] == before["test"]
    assert "its val and test parts moved" not in caplog.text
    assert first["time_cuts_seconds"] == again["files"][0]["time_cuts_seconds"] == [8.0, 9.0]
    back = prep([rec], tmp_path / "c", top_db=60)  # the intro kept again: in train, before the cut
    assert _file_times(tmp_path / "c", source) == before and back["files"][0]["time_cuts_seconds"] == [8.0, 9.0]


def test_a_file_cut_in_time_by_a_prep_that_recorded_no_cut_is_named_when_its_length_changed(tmp_path, caplog):
    """An earlier corpus from before the cuts were recorded: the cut stays at fractions of the kept length, which
    another --top-db changed, so earlier val and test audio lands in train. It is named, in one warning."""
    rec = tmp_path / "rec"
    rec.mkdir()
    _quiet_intro(rec / "only.wav")
    assert prep([rec], tmp_path / "c", top_db=40)["files"][0]["split"] == "time"
    manifest_path = tmp_path / "c" / "manifest.json"
    older = json.loads(manifest_path.read_text())
    del older["files"][0]["time_cuts_seconds"]
    manifest_path.write_text(json.dumps(older))
    with caplog.at_level(logging.WARNING):
        again = prep([rec], tmp_path / "c", top_db=60)
    assert (f"{rec / 'only.wav'}: cut in time before, its kept audio is 10.000 s now, was 8.048 s (another "
            "--top-db, or the file changed), and the earlier corpus records no time of its cuts (an older prep): "
            "its val and test parts moved") in caplog.text
    assert again["files"][0]["time_cuts_seconds"] == [8.0, 9.0]  # recorded from now on


def test_damaged_recorded_cuts_in_an_earlier_manifest_are_passed_over_or_held_without_a_crash(tmp_path, caplog):
    """An earlier manifest's "time_cuts_seconds" damaged: an integer beyond a float's range stopped prep with a
    TypeError (np.isfinite), a time whose samples overflow a float (1.7e308 s) with an OverflowError. A value that
    is no time, or a time past the file's recorded duration_seconds (1.7e308 s, or [100, 200] in a 10 s file: prep
    records none there, and holding it left val and test empty without a word) is passed over, named as damaged
    (not as a manifest from before cuts were recorded); a time within the file is held (here at its very end: its
    kept audio in train)."""
    rec = tmp_path / "rec"
    rec.mkdir()
    _quiet_intro(rec / "only.wav")
    for n, (value, readable) in enumerate((([10**400, 10**401], False), (["8", "9"], False),
                                           ([1.7e308, 1.7e308], False), ([100, 200], False), ([10, 10], True))):
        corpus = tmp_path / f"c{n}"
        prep([rec], corpus, top_db=60)
        manifest_path = corpus / "manifest.json"
        damaged = json.loads(manifest_path.read_text())
        damaged["files"][0]["time_cuts_seconds"] = value
        manifest_path.write_text(json.dumps(damaged))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            again = prep([rec], corpus, top_db=40)
        entry, splits = again["files"][0], again["splits"]
        assert entry["split"] == "time" and sum(s["samples"] for s in splits.values()) == round(entry["kept_seconds"] * SR)
        if readable:
            assert entry["time_cuts_seconds"] == value and splits["val"]["samples"] == splits["test"]["samples"] == 0
        else:
            assert entry["time_cuts_seconds"] == [8.390375, 9.195187]  # the fractions of its kept audio now
            assert f'{rec / "only.wav"}: cut in time before, and the earlier corpus\'s "time_cuts_seconds" for it is ' \
                   "damaged" in caplog.text and "not two ordered times in seconds within the file" in caplog.text, value


def test_a_damaged_earlier_manifest_entry_is_passed_over(tmp_path):
    """An earlier manifest whose entry has a list for its path or a dict for its sha256 stopped prep with a
    TypeError (unhashable): such entries are passed over; the others keep their split."""
    rec = tmp_path / "rec"
    _melodies(rec, [f"t{i}.wav" for i in range(6)])
    for key, value in (("path", ["x"]), ("sha256", {"a": 1})):
        (rec / "t9.wav").unlink(missing_ok=True)
        first = _splits(prep([rec], tmp_path / key))
        manifest_path = tmp_path / key / "manifest.json"
        damaged = json.loads(manifest_path.read_text())
        damaged["files"][0][key] = value
        manifest_path.write_text(json.dumps(damaged))
        _melodies(rec, ["t9.wav"], seconds=1.3)
        again = _splits(prep([rec], tmp_path / key))
        del first["t0.wav"]
        assert {name: again[name] for name in first} == first and again["t0.wav"] in SPLITS


def test_a_file_of_silence_and_one_huge_sample_is_skipped_naming_the_spike(tmp_path, make_tone):
    """Pure silence with one 1e30 sample was skipped as "no stretch of sound of at least 0.5 s": its reason
    names the spike now, its value and time."""
    rec = tmp_path / "rec"
    _melodies(rec, ["a.wav", "b.wav", "c.wav"])
    x = np.zeros(3 * 44100, np.float32)
    x[22050] = 1e30
    sf.write(rec / "spike.wav", x, 44100, subtype="FLOAT")
    (skip,) = prep([rec], tmp_path / "c")["skipped"]
    assert skip["reason"].startswith("it holds only silence and a spike of 1e+30 at 0.500 s (1 sample above "
                                     "24.1 dBFS: damaged float audio); without it, silent"), skip["reason"]


def test_a_spike_that_resampling_brings_under_6_dbfs_is_a_spike_at_any_corpus_rate(tmp_path):
    """A spike of +26 dBFS in quiet music at 192 kHz is under +6 dBFS once resampled to 16 kHz: the file was
    scaled down 4 dB as a loud one (its music then 30 dB down) at 16 kHz, yet clipped as a spike at 48 kHz.
    Spikes are judged by the source's own peak: the same verdict at either rate (and for a 44.1 kHz file)."""
    rec = tmp_path / "rec"
    _melodies(rec, ["a.wav", "b.wav", "c.wav"])
    for name, rate in (("hi.wav", 192000), ("cd.wav", 44100)):
        x = 0.1 * melody(3.0, rate, seed=2)
        x[rate] = 20.0
        sf.write(rec / name, x, rate, subtype="FLOAT")
    for corpus_rate in (SR, 48000):
        files = {os.path.basename(f["path"]): f for f in prep([rec], tmp_path / f"c{corpus_rate}",
                                                               sample_rate=corpus_rate)["files"]}
        for name in ("hi.wav", "cd.wav"):
            entry = files[name]
            assert entry["gain_db"] == 0.0 and entry["clipped"].startswith(
                "1 sample above 24.1 dBFS and at least 40 dB above all the rest (at 1.000 s: 20)"), \
                (corpus_rate, name, entry)


def test_a_held_file_whose_kept_audio_now_ends_before_its_cut_is_said_and_its_cut_stays_in_the_file(tmp_path, caplog):
    """A held file cut in time whose kept audio now ends before (or just after) its recorded cut (another --top-db
    trimmed a quiet tail: val 0.048 s, test 0; a remaster to 7 s: both empty) left val and test with next to nothing
    without a word. No audio changes split still; it is said, with what val and test hold of it against what its
    fractions would give, and how to draw again. A cut past the shorter file's end is recorded at its end (a time of
    the file, said again on each prep), not [8, 9] in a 7 s file forever."""
    rec = tmp_path / "rec"
    rec.mkdir()
    x = 0.2 * np.random.default_rng(0).standard_normal(10 * SR).astype(np.float32)
    x[8 * SR :] *= 10 ** (-50 / 20)  # a quiet tail: kept at --top-db 60, trimmed at 40
    sf.write(rec / "only.wav", x, SR, subtype="FLOAT")
    assert prep([rec], tmp_path / "c", top_db=60)["files"][0]["time_cuts_seconds"] == [8.0, 9.0]
    with caplog.at_level(logging.WARNING):
        again = prep([rec], tmp_path / "c", top_db=40)
    assert again["splits"]["test"]["samples"] == 0 and again["files"][0]["time_cuts_seconds"] == [8.0, 9.0]
    assert (f"{rec / 'only.wav'}: cut in time before at 8.000 s and 9.000 s of the file, and held there (no val or "
            "test audio moves into train), but its kept audio now lies between 0.000 s and 8.048 s of it (another "
            "--top-db, or the file changed): train holds 8.000 s of it, val 0.048 s and test 0.000 s, where its "
            "fractions would give 6.438 s, 0.805 s and 0.805 s; to cut it again by its fractions, prepare with "
            "another --seed") in caplog.text
    sf.write(rec / "only.wav", 0.9 * x[: 7 * SR], SR, subtype="FLOAT")  # remastered, 7 s
    for top_db in (60, 50):  # said again on the next prep (another --top-db), from the cut recorded at its end
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            short = prep([rec], tmp_path / "c", top_db=top_db)
        assert short["splits"]["val"]["samples"] == short["splits"]["test"]["samples"] == 0
        assert short["files"][0]["time_cuts_seconds"] == [7.0, 7.0]
        assert "train holds 7.000 s of it, val 0.000 s and test 0.000 s, where its fractions would give 5.600 s, " \
            "0.700 s and 0.700 s" in caplog.text
    caplog.clear()
    sf.write(rec / "only.wav", x, SR, subtype="FLOAT")  # the 10 s file back: its old val audio to test, not train
    with caplog.at_level(logging.WARNING):
        back = prep([rec], tmp_path / "c", top_db=60)
    assert back["splits"]["train"]["samples"] == 7 * SR and back["splits"]["test"]["samples"] == 3 * SR
    assert "at 7.000 s and 7.000 s of the file" in caplog.text and "train holds 7.000 s of it, val 0.000 s and " \
        "test 3.000 s" in caplog.text  # val empty: still said


def test_a_held_file_whose_kept_audio_now_begins_after_its_train_cut_is_said(tmp_path, caplog):
    """A held file cut in time whose kept audio now begins after its recorded train cut (another --top-db trimmed a
    quiet intro longer than its train part): train holds none of it, said of no file (the other file of the corpus
    keeps train from being empty, so nothing is drawn again). No audio changes split; it is named in one line with
    what each split holds against what its fractions would give, and how to cut it again."""
    rec = tmp_path / "rec"
    rec.mkdir()
    x = 0.2 * np.random.default_rng(0).standard_normal(10 * SR).astype(np.float32)
    x[: int(8.5 * SR)] *= 10 ** (-50 / 20)  # a quiet intro: kept at --top-db 60, trimmed at 40
    sf.write(rec / "late.wav", x, SR, subtype="FLOAT")
    sf.write(rec / "other.wav", melody(6.0, SR, seed=3), SR)
    first = prep([rec], tmp_path / "c", top_db=60)
    assert [(f["split"], f["time_cuts_seconds"]) for f in first["files"]] == [("time", [8.0, 9.0]),
                                                                             ("time", [4.8, 5.4])]
    with caplog.at_level(logging.WARNING):
        again = prep([rec], tmp_path / "c", top_db=40)
    assert again["files"][0]["time_cuts_seconds"] == [8.0, 9.0] and again["files"][0]["kept_seconds"] < 1.6
    assert not [row for row in np.load(tmp_path / "c" / "train_segments.npy") if row[2] == 0]  # none of it in train
    assert (f"{rec / 'late.wav'}: cut in time before at 8.000 s and 9.000 s of the file, and held there (no val or "
            "test audio moves into train), but its kept audio now lies between 8.448 s and 10.000 s of it (another "
            "--top-db, or the file changed): train holds 0.000 s of it, val 0.552 s and test 1.000 s, where its "
            "fractions would give 1.242 s, 0.155 s and 0.155 s; to cut it again by its fractions, prepare with "
            "another --seed (every file's split is drawn again) or into a new folder") in caplog.text
    assert "other.wav" not in caplog.text


def test_a_label_drawn_again_counts_no_file_as_kept(tmp_path, caplog):
    """A label drawn again (every file left held in val or test): its files were counted as having "kept their
    split" where they landed in the same split again. assign_splits says which files kept theirs."""
    rec = tmp_path / "rec"
    rec.mkdir()
    _quiet_intro(rec / "only.wav")
    prep([rec], tmp_path / "c", top_db=60)
    manifest_path = tmp_path / "c" / "manifest.json"
    held = json.loads(manifest_path.read_text())
    held["files"][0]["time_cuts_seconds"] = [0, 0]  # all of it in test: no train audio, drawn again
    manifest_path.write_text(json.dumps(held))
    with caplog.at_level(logging.INFO, logger="wavegen"):
        again = prep([rec], tmp_path / "c", top_db=40)
    assert again["files"][0]["split"] == "time" and again["splits"]["train"]["samples"] > 0
    assert "the corpus: every file left was in val or test before and none is new: drawn again" in caplog.text
    assert f"{tmp_path / 'c'}: 0 earlier files kept their split, 0 new files assigned, 1 drawn again" \
        in caplog.text


def test_a_reprep_that_leaves_val_or_test_empty_says_so(tmp_path, caplog):
    """The recordings that made up the test split removed and prep run again: every other file kept its split,
    so test held no audio, said only as "test 0.00 h (0 s)" in the summary (a fresh prep of the same folder fills
    it; eval then met "the test split ... has no audio" with no word of why). Prep names the empty split and the
    remedy; a removed train file says nothing of the kind."""
    rec = tmp_path / "rec"
    _melodies(rec, [f"t{i:02d}.wav" for i in range(6)])
    first = _splits(prep([rec], tmp_path / "c"))
    train = [name for name, split in first.items() if split == "train"]
    assert len(train) >= 2 and "test" in first.values()
    (rec / train[0]).unlink()
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        prep([rec], tmp_path / "c")
    assert "no audio: no file held there" not in caplog.text
    for name, split in first.items():
        if split == "test":
            (rec / name).unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        manifest = prep([rec], tmp_path / "c")
    assert manifest["splits"]["test"]["seconds"] == 0 and manifest["splits"]["val"]["seconds"] > 0
    assert ("the corpus: test now holds no audio: no file held there is left and the files kept their earlier "
            "splits (none new went there); add recordings, or prepare with another --seed") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        fresh = prep([rec], tmp_path / "c", seed=1)
    assert fresh["splits"]["test"]["seconds"] > 0 and "no audio: no file held there" not in caplog.text
