"""wavegen prep again on a corpus folder: a rerun that does no work, what is replaced, what is kept, and
what a prep stopped part way leaves (the corpus as it was, or the new one finished by the next prep)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

import wavegen.prep as prep_mod
import wavegen.prep_decode as prep_decode
import wavegen.prep_inputs as prep_inputs
import wavegen.prep_publish as prep_publish
from test_prep_inputs import SR, prep, tones
from test_prep_splits import check_split_arrays

from wavegen.corpus import Corpus, CorpusError
from wavegen.errors import WavegenError


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
    (tmp_path / "c" / prep_publish.CORPUS_MARKER).unlink()
    m2 = prep([tmp_path / "rec"], tmp_path / "c", seed=3)
    assert m2["params"]["seed"] == 3 != m1["params"]["seed"]
    assert (tmp_path / "c" / prep_publish.CORPUS_MARKER).is_file()


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


def test_output_that_is_a_file_is_refused_and_only_prep_temporaries_are_removed(tmp_path, make_tone):
    tones(tmp_path / "rec", make_tone, 2)
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(WavegenError, match="taken is a file, not a folder"):
        prep([tmp_path / "rec"], tmp_path / "taken")
    out = tmp_path / "c"
    (out / ".prep-mine").mkdir(parents=True)  # the user's own folder, named like prep's temporaries
    (out / ".prep-mine" / "notes.txt").write_text("keep me")
    stale = prep_publish.make_temporary(out)  # what a prep killed mid-way leaves behind
    (stale / "0.pcm").write_bytes(b"\0" * 64)
    prep([tmp_path / "rec"], out, val_fraction=0, test_fraction=0)
    assert (out / ".prep-mine" / "notes.txt").read_text() == "keep me"
    assert not stale.exists()
    assert sorted(p.name for p in out.glob(".prep-*")) == [".prep-mine"]


# `wavegen prep argv[1] argv[2]` sent the signal argv[4] (SIGKILL: nothing of Python's runs; SIGINT, SIGTERM: a
# Ctrl-C, a kill) as it renames argv[3] into the corpus folder in prep_publish.publish
STOPPED_AT_RENAME = """
import os, signal, sys
from pathlib import Path
import wavegen.cli

rename = os.replace


def replace(src, dst, *args, **kwargs):
    if Path(dst).name == sys.argv[3] and Path(dst).parent == Path(sys.argv[2]):
        os.kill(os.getpid(), getattr(signal, sys.argv[4]))
    return rename(src, dst, *args, **kwargs)


os.replace = replace
sys.exit(wavegen.cli.main(["prep", "--quiet", sys.argv[1], sys.argv[2]]))
"""


@pytest.mark.parametrize("stopped_at, how", [("manifest.json", "SIGKILL"), ("test.npy", "SIGKILL"),
                                              ("val.npy", "SIGINT"), ("manifest.json", "SIGTERM")])
def test_a_prep_stopped_while_it_moves_the_corpus_into_place_is_finished_by_the_next(tmp_path, make_tone,
                                                                                    monkeypatch, caplog, stopped_at,
                                                                                    how):
    """Stopped after the old manifest was removed and before the new one was renamed into place, the folder held
    new arrays (some still in the temporary folder, or old ones beside them) and no manifest; the next prep removed
    the temporary folder with the finished manifest (a Ctrl-C or SIGTERM removed it at once), decoding every file
    again, and with the inputs gone the corpus was lost. The next prep finishes the move: no file decoded."""
    import subprocess
    import sys

    rec, corpus = tmp_path / "rec", tmp_path / "c"
    tones(rec, make_tone, 3)
    prep([rec], corpus)
    make_tone(rec / "t03.wav", 1.7, SR, 999)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(prep_mod.__file__).parents[1]),
                                                                    os.environ.get("PYTHONPATH")])))
    stopped = subprocess.run([sys.executable, "-c", STOPPED_AT_RENAME, str(rec), str(corpus), stopped_at, how],
                             env=env, capture_output=True, text=True, timeout=120)
    assert stopped.returncode == (-9 if how == "SIGKILL" else 130), stopped.stderr
    assert not (corpus / "manifest.json").exists() and len(list(corpus.glob(".prep-*"))) == 1
    if how != "SIGKILL":
        assert "stopped while the corpus was moved into place: the next prep there finishes the move" in stopped.stderr
    with pytest.raises(CorpusError, match="no manifest.json"):
        Corpus(corpus)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a file: the stopped prep's corpus was made again")

    monkeypatch.setattr(prep_decode, "decode_mono", no_decoding)
    with caplog.at_level("INFO", logger="wavegen.prep"):
        m = prep([rec], corpus)
    assert "a prep was stopped while it moved the corpus into place: finished" in caplog.text
    assert "corpus up to date" in caplog.text
    assert sorted(os.path.basename(f["path"]) for f in m["files"]) == ["t00.wav", "t01.wav", "t02.wav", "t03.wav"]
    assert Corpus(corpus).manifest == m and not list(corpus.glob(".prep-*"))
    check_split_arrays(Corpus(corpus))
