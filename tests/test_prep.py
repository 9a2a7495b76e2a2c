"""wavegen.prep: recordings into a corpus folder: what is kept of each file (formats, silence, duplicates, loud
or damaged audio) and the settings. Splits: test_prep_splits.py; reruns and the corpus folder: test_prep_rerun.py;
a disk short of room: test_prep_disk.py; the inputs found: test_prep_inputs.py."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

import wavegen.prep_decode as prep_decode
from wavegen.audio_decode import load_mono
from wavegen.config import ConfigError
from wavegen.corpus import Corpus, CorpusError
from wavegen.prep import PrepSettings
from wavegen.split import FRAME_LENGTH

from test_prep_inputs import SR, prep, tones
from test_prep_splits import check_split_arrays
from test_split import gapped_signal  # sound at known times


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


# ----------------------------------------------------------------------------- what is kept of a file


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
    assert "2 files scaled down to full scale" in caplog.text
    assert "prep: 3/3 file (100%)" in caplog.text  # progress as plain lines: stderr is no terminal here


def test_a_file_a_hair_over_full_scale_is_said_scaled_by_what_it_was(tmp_path, make_audio, caplog):
    """wesnoth's battle.ogg at 8 kHz peaks 0.045 dB over full scale: prep said "peaks 0.0 dB above full scale:
    scaled down by 0.0 dB", a scaling by nothing, while the manifest recorded gain_db -0.045. Under 0.05 dB the
    amount is said to the 0.001 dB the manifest keeps."""
    t = np.arange(2 * SR) / SR
    wave = np.sin(2 * np.pi * 220 * t) * np.linspace(0.2, 1.0, len(t))
    rec = tmp_path / "rec"
    make_audio(rec / "hair.wav", 10 ** (0.045 / 20) * wave / np.abs(wave).max(), SR, subtype="FLOAT")
    with caplog.at_level("WARNING"):
        m = prep([rec], tmp_path / "c", val_fraction=0, test_fraction=0)
    assert m["files"][0]["gain_db"] == -0.045
    assert "hair.wav peaks 0.045 dB above full scale: scaled down by 0.045 dB instead of clipping" in caplog.text


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
    assert "3 damaged files kept in part" in caplog.text
    check_split_arrays(Corpus(tmp_path / "c"))


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
