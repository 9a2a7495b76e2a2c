"""wavegen.prep: recordings into a corpus folder (files found, decoded, trimmed, split, written)."""

import errno
import json
import os

import numpy as np
import pytest
import soundfile as sf

import wavegen.prep as prep_mod
import wavegen.prep_decode as prep_decode
import wavegen.prep_inputs as prep_inputs
from wavegen.audio import float_to_int16, load_mono
from wavegen.config import ConfigError
from wavegen.corpus import Corpus, CorpusError
from wavegen.errors import WavegenError
from wavegen.prep import PrepSettings, prepare
from wavegen.split import FRAME_LENGTH, SPLITS

from test_split import gapped_signal  # sound at known times

SR = 16000


def prep(inputs, out, **kw):
    kw.setdefault("progress", False)
    return prepare(inputs, out, **kw)


def tones(folder, make_tone, n, seconds=1.0, sample_rate=SR, suffix="wav"):
    """n files of distinct frequencies (distinct bytes) and durations seconds, seconds+0.1, ..."""
    return [
        make_tone(folder / f"t{i:02d}.{suffix}", seconds + 0.1 * i, sample_rate, 200 + 37 * i)
        for i in range(n)
    ]


def test_prepare_trims_silence(tmp_path, make_audio):
    make_audio(tmp_path / "in" / "gaps.wav", gapped_signal(), SR, subtype="FLOAT")
    m = prep([tmp_path / "in"], tmp_path / "c", val_fraction=0, test_fraction=0)
    c = Corpus(tmp_path / "c")
    lengths = c.segments("train")[:, 1]
    assert len(lengths) == 2
    assert np.all(np.abs(lengths - np.array([2.7 * SR, 1.5 * SR])) <= 2 * FRAME_LENGTH)
    assert m["files"][0]["duration_seconds"] == pytest.approx(7.4)
    assert m["files"][0]["kept_seconds"] == pytest.approx(4.2, abs=2 * 2 * FRAME_LENGTH / SR)


# ----------------------------------------------------------------------------- formats


def test_prepare_mixed_formats_skips_bad_files(tmp_path, make_tone, make_audio, caplog):
    src = tmp_path / "rec"
    make_tone(src / "a.wav", 2.0, 44100, 440, channels=2)
    make_tone(src / "sub" / "b.flac", 1.5, 22050, 330)
    make_tone(src / "c.OGG", 1.2, 32000, 550, format="OGG", subtype="VORBIS")
    expected = {"a.wav": (2.0, 44100, 2), "b.flac": (1.5, 22050, 1), "c.OGG": (1.2, 32000, 1)}
    if "MP3" in sf.available_formats():
        make_tone(src / "d.mp3", 1.0, 44100, 660, format="MP3")
        expected["d.mp3"] = (1.0, 44100, 1)
    (src / "x.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    make_audio(src / "empty.wav", np.zeros((0, 1)), SR)
    (src / "notes.txt").write_text("not audio")

    with caplog.at_level("WARNING"):
        m = prep([src], tmp_path / "c", val_fraction=0, test_fraction=0)
    skipped = {os.path.basename(s["path"]): s["reason"] for s in m["skipped"]}
    assert set(skipped) == {"x.wav", "empty.wav"}
    assert "decode" in skipped["x.wav"] and "empty" in skipped["empty.wav"]
    assert "x.wav" in caplog.text and "empty.wav" in caplog.text

    files = {os.path.basename(f["path"]): f for f in m["files"]}
    assert set(files) == set(expected)
    for name, (seconds, rate, channels) in expected.items():
        f = files[name]
        assert os.path.isabs(f["path"])
        assert f["duration_seconds"] == pytest.approx(seconds, abs=1e-3)
        assert f["kept_seconds"] == pytest.approx(seconds, abs=0.01)  # a tone: nothing cut
        assert (f["sample_rate_in"], f["channels_in"]) == (rate, channels)
        assert f["split"] == "train" and f["label"] is None and len(f["sha256"]) == 64
    c = Corpus(tmp_path / "c")
    assert c.sample_rate == SR
    assert len(c.split("train")) == pytest.approx(sum(v[0] for v in expected.values()) * SR, abs=100)


def test_no_usable_files_raises(tmp_path, make_audio):
    src = tmp_path / "rec"
    src.mkdir()
    (src / "x.wav").write_bytes(b"RIFF garbage")
    make_audio(src / "empty.wav", np.zeros((0, 1)), SR)
    make_audio(src / "silent.flac", np.zeros(SR), SR)
    with pytest.raises(CorpusError) as info:
        prep([src], tmp_path / "c")
    msg = str(info.value)
    assert "x.wav" in msg and "empty.wav" in msg and "silent.flac" in msg and "silent" in msg
    assert "\n" not in msg  # the CLI prints it as one line
    assert not (tmp_path / "c" / "manifest.json").exists()
    assert not list((tmp_path / "c").glob(".prep-*"))  # temporary files cleaned up


def test_missing_input_raises(tmp_path, make_tone):
    make_tone(tmp_path / "a.wav", 1.0, SR)
    with pytest.raises(CorpusError, match="nowhere"):
        prep([tmp_path / "a.wav", tmp_path / "nowhere"], tmp_path / "c")


def test_duplicate_recording_is_skipped(tmp_path, make_tone):
    make_tone(tmp_path / "rec" / "a.wav", 1.0, SR)
    (tmp_path / "rec" / "copy.wav").write_bytes((tmp_path / "rec" / "a.wav").read_bytes())
    make_tone(tmp_path / "rec" / "b.wav", 1.0, SR, 300)
    m = prep([tmp_path / "rec"], tmp_path / "c", val_fraction=0, test_fraction=0)
    assert [s["reason"] for s in m["skipped"]] == [f"duplicate of {tmp_path / 'rec' / 'a.wav'}"]


def test_a_duplicate_is_known_by_its_bytes_before_it_is_decoded(tmp_path, make_tone, monkeypatch):
    """A "best of" folder of copies was decoded whole, file by file, before each was found a duplicate:
    an album's worth of decoding for nothing. The sha256 prep reads first says it."""
    make_tone(tmp_path / "rec" / "album" / "a.wav", 1.0, SR)
    make_tone(tmp_path / "rec" / "album" / "b.wav", 1.0, SR, 300)
    (tmp_path / "rec" / "best of").mkdir()
    (tmp_path / "rec" / "best of" / "a.wav").write_bytes((tmp_path / "rec" / "album" / "a.wav").read_bytes())
    decoded = []

    def counted(path, *args):
        decoded.append(os.path.basename(os.path.dirname(path)) + "/" + os.path.basename(path))
        return real(path, *args)

    real = prep_decode.decode_mono
    monkeypatch.setattr(prep_decode, "decode_mono", counted)
    m = prep([tmp_path / "rec"], tmp_path / "c", val_fraction=0, test_fraction=0)
    assert [s["reason"] for s in m["skipped"]] == [f"duplicate of {tmp_path / 'rec' / 'album' / 'a.wav'}"]
    assert decoded == ["album/a.wav", "album/b.wav"]


def test_a_duplicate_under_another_label_names_the_label_it_trains_under(tmp_path, make_tone, caplog):
    """A link in one album folder to a file in another: one copy is kept, the first found; with labels
    from folders it trains under that folder's label, which the skip reason now says (it said only
    "duplicate of ...", and the recording silently changed albums)."""
    make_tone(tmp_path / "rec" / "b" / "song.wav", 1.0, SR)
    make_tone(tmp_path / "rec" / "b" / "other.wav", 1.0, SR, 300)
    (tmp_path / "rec" / "a").mkdir()
    (tmp_path / "rec" / "a" / "link.wav").symlink_to(tmp_path / "rec" / "b" / "song.wav")
    with caplog.at_level("WARNING"):
        m = prep([tmp_path / "rec"], tmp_path / "c", labels="folders", val_fraction=0, test_fraction=0)
    kept = str(tmp_path / "rec" / "a" / "link.wav")
    reason = f"duplicate of {kept}, kept under label 'a' (not 'b')"
    assert m["skipped"] == [{"path": str(tmp_path / "rec" / "b" / "song.wav"), "reason": reason}]
    assert reason in caplog.text
    assert sorted((f["label"], os.path.basename(f["path"])) for f in m["files"]) == [("a", "link.wav"),
                                                                                       ("b", "other.wav")]


# ----------------------------------------------------------------------------- splits


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


# ----------------------------------------------------------------------------- re-runs


def test_rerun_does_no_work(tmp_path, make_tone, monkeypatch, caplog):
    tones(tmp_path / "rec", make_tone, 3)
    m1 = prep([tmp_path / "rec"], tmp_path / "c")
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "c").iterdir()}

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded audio on an up-to-date corpus")

    monkeypatch.setattr(prep_decode, "decode_mono", no_decoding)
    with caplog.at_level("INFO", logger="wavegen.prep"):
        m2 = prep([tmp_path / "rec"], tmp_path / "c")
    assert m2 == m1 and "corpus up to date" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "c").iterdir()} == mtimes
    # changed parameters or inputs do the work again
    with pytest.raises(AssertionError, match="decoded"):
        prep([tmp_path / "rec"], tmp_path / "c", top_db=30.0)
    make_tone(tmp_path / "rec" / "t03.wav", 1.0, SR, 999)
    with pytest.raises(AssertionError, match="decoded"):
        prep([tmp_path / "rec"], tmp_path / "c")
    (tmp_path / "rec" / "t03.wav").unlink()
    make_tone(tmp_path / "rec" / "t00.wav", 1.0, SR, 999)  # new content
    with pytest.raises(AssertionError, match="decoded"):
        prep([tmp_path / "rec"], tmp_path / "c")


def test_touched_or_copied_inputs_are_rehashed_not_decoded(tmp_path, make_tone, monkeypatch, caplog):
    tones(tmp_path / "rec", make_tone, 3)
    m1 = prep([tmp_path / "rec"], tmp_path / "c")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded audio on an up-to-date corpus")

    monkeypatch.setattr(prep_decode, "decode_mono", no_decoding)
    os.utime(tmp_path / "rec" / "t00.wav", ns=(1, 1))  # touch: a new mtime (and ctime)
    os.chmod(tmp_path / "rec" / "t01.wav", 0o600)  # chmod: a new ctime
    (tmp_path / "rec" / "t02.wav").write_bytes((tmp_path / "rec" / "t02.wav").read_bytes())  # the same bytes
    with caplog.at_level("INFO", logger="wavegen.prep"):
        m2 = prep([tmp_path / "rec"], tmp_path / "c")
    assert "comparing their content" in caplog.text and "corpus up to date" in caplog.text
    assert m2["fingerprint"] != m1["fingerprint"] and m2 == dict(m1, fingerprint=m2["fingerprint"])
    assert Corpus(tmp_path / "c").manifest == m2  # recorded: the next run reads no file

    def no_reading(*args, **kwargs):
        raise AssertionError("read a file of an up-to-date corpus")

    monkeypatch.setattr(prep_inputs, "sha256_file", no_reading)
    assert prep([tmp_path / "rec"], tmp_path / "c") == m2


def test_failed_prep_keeps_previous_corpus(tmp_path, make_tone, monkeypatch):
    tones(tmp_path / "rec", make_tone, 3)
    m1 = prep([tmp_path / "rec"], tmp_path / "c")
    before = Corpus(tmp_path / "c").split("train").copy()

    def write_fails(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(prep_decode, "write_arrays", write_fails)
    with pytest.raises(CorpusError, match="disk full"):
        prep([tmp_path / "rec"], tmp_path / "c", seed=1)
    c = Corpus(tmp_path / "c")
    assert c.manifest == m1
    np.testing.assert_array_equal(c.split("train"), before)
    assert not list((tmp_path / "c").glob(".prep-*"))


def test_files_prep_did_not_write_are_never_replaced(tmp_path, make_tone):
    tones(tmp_path / "rec", make_tone, 3)
    mine = tmp_path / "mine"
    mine.mkdir()
    np.save(mine / "train.npy", np.arange(10))
    (mine / "manifest.json").write_text('{"name": "my app"}')
    with pytest.raises(CorpusError, match=r"mine is not a wavegen corpus but holds manifest.json, train.npy"):
        prep([tmp_path / "rec"], mine)
    np.testing.assert_array_equal(np.load(mine / "train.npy"), np.arange(10))
    assert json.loads((mine / "manifest.json").read_text()) == {"name": "my app"}
    (mine / "manifest.json").unlink()  # arrays alone, no manifest: refused as well
    with pytest.raises(CorpusError, match="holds train.npy"):
        prep([tmp_path / "rec"], mine)
    np.testing.assert_array_equal(np.load(mine / "train.npy"), np.arange(10))
    # a corpus made before the marker existed (a wavegen manifest, no marker) is prep's to replace
    m1 = prep([tmp_path / "rec"], tmp_path / "c")
    (tmp_path / "c" / prep_mod._CORPUS_MARKER).unlink()
    m2 = prep([tmp_path / "rec"], tmp_path / "c", seed=3)
    assert m2["params"]["seed"] == 3 != m1["params"]["seed"]
    assert (tmp_path / "c" / prep_mod._CORPUS_MARKER).is_file()


@pytest.mark.parametrize("damage", ["truncate", "swap", "delete"])
def test_a_damaged_array_is_rebuilt_by_a_rerun(tmp_path, make_tone, damage):
    tones(tmp_path / "rec", make_tone, 3)
    m1 = prep([tmp_path / "rec"], tmp_path / "c")
    before = Corpus(tmp_path / "c").split("train").copy()
    train = tmp_path / "c" / "train.npy"
    if damage == "truncate":  # a copy cut short: Corpus cannot load it
        with open(train, "r+b") as f:
            f.truncate(1000)
        with pytest.raises(CorpusError, match="train.npy: cannot load"):
            Corpus(tmp_path / "c").split("train")
    elif damage == "swap":  # another array of the right name: its length is not the manifest's
        np.save(train, before[:-7])
    else:
        train.unlink()
    m2 = prep([tmp_path / "rec"], tmp_path / "c")
    assert m2 == m1
    np.testing.assert_array_equal(Corpus(tmp_path / "c").split("train"), before)


# ----------------------------------------------------------------------------- hostile inputs


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


def test_loud_float_audio_is_scaled_to_full_scale_not_clipped(tmp_path, make_audio, caplog):
    t = np.arange(2 * SR) / SR
    wave = np.sin(2 * np.pi * 220 * t) * np.linspace(0.2, 1.0, len(t))  # peak at the end
    rec = tmp_path / "rec"
    make_audio(rec / "plus34db.wav", 50.0 * wave, SR, subtype="FLOAT")
    make_audio(rec / "plus1db.wav", 10 ** (1 / 20) * np.roll(wave, 999), SR, subtype="FLOAT")
    make_audio(rec / "quiet.wav", 0.5 * np.roll(wave, 333), SR, subtype="FLOAT")
    with caplog.at_level("INFO"):
        m = prep([rec], tmp_path / "c", val_fraction=0, test_fraction=0, progress=True)
    c = Corpus(tmp_path / "c")
    files = {os.path.basename(f["path"]): (i, f) for i, f in enumerate(m["files"])}
    for name, gain_db in (("plus34db.wav", -33.98), ("plus1db.wav", -1.0), ("quiet.wav", 0.0)):
        i, entry = files[name]
        assert entry["gain_db"] == pytest.approx(gain_db, abs=0.01) and entry["partial"] is False
        start, length, _ = c.segments("train")[c.segments("train")[:, 2] == i][0]
        pcm = np.asarray(c.split("train")[start : start + length], dtype=np.float64)
        source = load_mono(rec / name, SR)[: len(pcm)].astype(np.float64)
        expected = source * 10 ** (entry["gain_db"] / 20) * 32767  # gain_db is rounded to 0.001 dB
        assert np.abs(pcm - expected).max() <= 3.0  # the same waveform, no sample clipped
        if gain_db < 0:
            assert np.abs(pcm).max() >= 32767 - 3  # scaled to full scale, not below
    assert "plus34db.wav peaks 34.0 dB above full scale: scaled down by 34.0 dB" in caplog.text
    assert "plus1db.wav peaks 1.0 dB above full scale" in caplog.text and "quiet.wav peaks" not in caplog.text
    assert "2 file(s) scaled down to full scale" in caplog.text
    assert "prep: 3/3 file (100%)" in caplog.text  # progress as plain lines: stderr is no terminal here


def test_damaged_files_keep_the_part_that_decodes_and_are_marked_partial(tmp_path, make_audio, caplog):
    from conftest import melody

    rec = tmp_path / "rec"
    for i, (name, fmt, subtype) in enumerate([("cut.ogg", "OGG", "VORBIS"), ("cut.flac", "FLAC", "PCM_16"),
                                              ("cut.wav", "WAV", "PCM_16"), ("whole.flac", "FLAC", "PCM_16")]):
        path = make_audio(rec / name, melody(4.0, SR, seed=i), SR, format=fmt, subtype=subtype)
        if name.startswith("cut"):
            path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    with caplog.at_level("WARNING"):
        m = prep([rec], tmp_path / "c", val_fraction=0, test_fraction=0)
    assert m["skipped"] == []
    files = {os.path.basename(f["path"]): f for f in m["files"]}
    assert files["whole.flac"]["partial"] is False and "partial_reason" not in files["whole.flac"]
    assert files["whole.flac"]["duration_seconds"] == pytest.approx(4.0)
    for name in ("cut.ogg", "cut.flac", "cut.wav"):
        f = files[name]
        assert f["partial"] is True and f["partial_reason"].startswith("cut short"), f
        assert 1.0 < f["duration_seconds"] < 3.2 and f["kept_seconds"] > 1.0, f
        assert f"{rec / name} is damaged (cut short" in caplog.text
    assert "3 damaged file(s) kept in part" in caplog.text
    check_split_arrays(Corpus(tmp_path / "c"))


def test_output_that_is_a_file_is_refused_and_only_prep_temporaries_are_removed(tmp_path, make_tone):
    tones(tmp_path / "rec", make_tone, 2)
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(WavegenError, match="taken is a file, not a folder"):
        prep([tmp_path / "rec"], tmp_path / "taken")
    out = tmp_path / "c"
    (out / ".prep-mine").mkdir(parents=True)  # the user's own folder, named like prep's temporaries
    (out / ".prep-mine" / "notes.txt").write_text("keep me")
    stale = prep_mod._make_temporary(out)  # what a prep killed mid-way leaves behind
    (stale / "0.pcm").write_bytes(b"\0" * 64)
    prep([tmp_path / "rec"], out, val_fraction=0, test_fraction=0)
    assert (out / ".prep-mine" / "notes.txt").read_text() == "keep me"
    assert not stale.exists()
    assert sorted(p.name for p in out.glob(".prep-*")) == [".prep-mine"]


def test_settings_are_one_dataclass_that_is_the_manifest_params(tmp_path, make_tone):
    tones(tmp_path / "rec", make_tone, 3)
    m = prep([tmp_path / "rec"], tmp_path / "c", top_db=35, seed=4, val_fraction=0.3, test_fraction=0)
    settings = PrepSettings(inputs=(str(tmp_path / "rec"),), top_db=35.0, seed=4, val_fraction=0.3,
                            test_fraction=0.0)
    assert m["params"] == settings.params() == json.loads(json.dumps(settings.params()))
    for kwargs, message in [({"sample_rate": 0}, "sample_rate=0"), ({"labels": "files"}, "labels='files'"),
                            ({"val_fraction": 0.5, "test_fraction": 0.5}, "leaves nothing to train on"),
                            ({"top_db": -3}, "top_db=-3")]:
        with pytest.raises(ConfigError, match=message):
            PrepSettings(inputs=("x",), **kwargs)
    # a manifest written before gain_db / partial existed still reads
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    for f in manifest["files"]:
        del f["gain_db"], f["partial"]
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(manifest))
    c = Corpus(tmp_path / "c")
    assert c.seconds("val") > 0 and len(c.split("train")) == c.manifest["splits"]["train"]["samples"]


def _prep_limited(rec, out, file_size_limit):
    """`wavegen prep rec out` in a process whose files may not grow past ``file_size_limit`` bytes
    (RLIMIT_FSIZE, SIGXFSZ ignored: a write past it fails with EFBIG, as a full disk fails with ENOSPC)."""
    import resource
    import signal
    import subprocess
    import sys

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run([sys.executable, "-m", "wavegen", "prep", str(rec), str(out)], preexec_fn=limit,
                          capture_output=True, text=True, timeout=120)


def test_a_write_that_fails_says_why_in_one_line(tmp_path, make_tone):
    """It said "cannot write the corpus in small/corpus: 128000 requested and 12288 written" (numpy's
    tofile), not why: here EFBIG ("File too large"); on a full disk, "No space left on device"."""
    tones(tmp_path / "rec", make_tone, 3, seconds=4.0)  # 128,000 bytes of int16 each, after trimming a little less
    out = _prep_limited(tmp_path / "rec", tmp_path / "c", 50_000)
    assert out.returncode == 2, out.stderr
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"wavegen prep: error: cannot write the corpus in {tmp_path / 'c'}: "
                                               f"{os.strerror(errno.EFBIG)}"), err
    assert "requested and" not in err[0] and ".pcm)" in err[0]
    assert not list((tmp_path / "c").glob(".prep-*"))


def test_a_disk_without_room_for_a_split_is_named_before_it_is_mapped(tmp_path, make_tone, monkeypatch):
    """The split arrays are filled through a memory map, where a full disk is a SIGBUS: room is checked first."""
    import shutil
    from collections import namedtuple

    tones(tmp_path / "rec", make_tone, 3)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(CorpusError) as caught:
        prep([tmp_path / "rec"], tmp_path / "c")
    assert str(caught.value).startswith(f"cannot write the corpus in {tmp_path / 'c'}: No space left on device: "
                                        "preparing it takes up to 0.3 MB free there (its audio as 16-bit samples")
    assert str(caught.value).endswith(", 1,000 bytes are free now; the corpus there, if any, is kept as it was")


def test_a_corpus_folder_that_takes_no_new_file_is_named_not_prep_s_temporary_folder(tmp_path, make_tone):
    """A corpus folder made immutable (chattr +i) said "cannot write the corpus in c: Operation not permitted
    (c/.prep-87mztfz6)", naming a folder that never existed."""
    import subprocess

    tones(tmp_path / "rec", make_tone, 3)
    prep([tmp_path / "rec"], tmp_path / "c")
    try:
        if subprocess.run(["chattr", "+i", str(tmp_path / "c")], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available here")
    except OSError:
        pytest.skip("no chattr here")
    try:
        with pytest.raises(CorpusError) as info:
            prep([tmp_path / "rec"], tmp_path / "c", top_db=30.0)
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "c")], capture_output=True)
    assert str(info.value) == f"cannot write the corpus in {tmp_path / 'c'}: {os.strerror(errno.EPERM)}"
    assert Corpus(tmp_path / "c").manifest["params"]["top_db"] == 40.0  # the corpus there is kept
