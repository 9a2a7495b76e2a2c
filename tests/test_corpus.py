"""wavegen.corpus: the reader of a prepared corpus folder."""

import json

import numpy as np
import pytest

from wavegen.audio import float_to_int16
from wavegen.audio_decode import load_mono
from wavegen.corpus import Corpus, CorpusError
from wavegen.prep import prepare

SR = 16000


def test_corpus_reader(tmp_path, make_tone):
    make_tone(tmp_path / "rec" / "a.wav", 1.5, 44100, 440, channels=2)
    m = prepare([tmp_path / "rec"], tmp_path / "c", val_fraction=0, test_fraction=0, progress=False)
    c = Corpus(tmp_path / "c")
    train = c.split("train")
    assert isinstance(train, np.memmap) and train.dtype == np.int16 and not train.flags.writeable
    np.testing.assert_array_equal(train, float_to_int16(load_mono(tmp_path / "rec" / "a.wav", SR)))
    assert c.segments("train").tolist() == [[0, len(train), 0]]
    assert c.segment_labels("train").tolist() == [-1] and c.labels == []
    assert c.seconds("train") == pytest.approx(len(train) / SR) and c.seconds("test") == 0.0
    assert c.split("val").shape == (0,) and c.segment_labels("val").shape == (0,)
    assert c.manifest == m
    saved = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert saved["format_version"] == 1 and saved["params"]["inputs"] == [str(tmp_path / "rec")]
    with pytest.raises(ValueError, match="train, val, test"):
        c.split("dev")


def test_corpus_reader_errors(tmp_path):
    with pytest.raises(CorpusError, match="wavegen prep"):
        Corpus(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(CorpusError, match="format_version 99"):
        Corpus(tmp_path)


def test_hold_keeps_a_reader_on_its_audio_and_refuses_a_corpus_already_prepared_again(tmp_path, make_tone):
    make_tone(tmp_path / "rec" / "a.wav", 1.5, 16000, 440)
    prepare([tmp_path / "rec"], tmp_path / "c", val_fraction=0, test_fraction=0, progress=False)
    held, late = Corpus(tmp_path / "c"), Corpus(tmp_path / "c")
    held.hold("train", "val")
    before = np.array(held.split("train"))
    make_tone(tmp_path / "rec" / "b.wav", 2.0, 16000, 220)  # prepared again with more audio
    prepare([tmp_path / "rec"], tmp_path / "c", val_fraction=0, test_fraction=0, progress=False)
    assert np.array_equal(held.split("train"), before)  # the files it mapped, not the new ones
    with pytest.raises(CorpusError, match=r"train.npy: \d+ samples in 2 segments, its manifest says "
                                          r"\d+ in 1 \(the corpus was being prepared again\?\)"):
        late.hold("train")  # opened before, mapped after: the manifest it read no longer describes the files


def test_hold_counts_one_segment_with_its_noun_agreeing(tmp_path, make_tone):
    """A corpus prepared again under a reader that read the manifest before: "1 segment" (was "1 segment(s)")."""
    make_tone(tmp_path / "rec" / "a.wav", 1.5, 16000, 440)
    prepare([tmp_path / "rec"], tmp_path / "c", val_fraction=0, test_fraction=0, progress=False)
    late = Corpus(tmp_path / "c")
    late._manifest["splits"]["train"]["segments"] = 2  # as if it had been read from an earlier prep's manifest
    with pytest.raises(CorpusError, match=r"train.npy: \d+ samples in 1 segment, its manifest says \d+ in 2 "):
        late.hold("train")
