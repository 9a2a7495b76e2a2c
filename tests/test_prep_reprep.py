"""wavegen prep run again into the same corpus after recordings were added: every earlier file keeps its split;
and spikes judged on the source, at its own rate (a file of silence and one 1e30 named so; a spike that
resampling brings under +6 dBFS still a spike)."""

import logging
import os
import shutil

import numpy as np
import soundfile as sf
from conftest import melody
from test_prep_inputs import SR, prep

from wavegen.split import SPLITS, assign_splits


def _melodies(folder, names, seconds=1.0):
    folder.mkdir(parents=True, exist_ok=True)
    for n, name in enumerate(names):
        sf.write(folder / name, melody(seconds + 0.1 * n, SR, seed=sum(map(ord, name))), SR)


def _splits(manifest) -> dict:
    return {os.path.basename(f["path"]): f["split"] for f in manifest["files"]}


def test_a_reprep_after_adding_files_keeps_every_earlier_files_split(tmp_path, caplog):
    """assign_splits shuffled the whole file list with the seed: adding one recording and preparing again moved
    earlier files between train, val and test (a run resumed on it trained on what it had validated on). Files of
    the corpus there keep their split, found by path (its audio changed: the same recording) or else by bytes
    (moved or renamed); only new files are assigned, toward the fractions; a changed --seed draws all again."""
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
    assert f"{tmp_path / 'c'}: 10 earlier file(s) kept their split, 4 new file(s) assigned" in caplog.text
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
    earlier = {("path", "/r/a.wav"): "time"}
    for f in files:
        f["split"] = None
    pieces, mode = assign_splits(files, lengths, 0.2, 0.2, 0, earlier)
    assert files[0]["split"] == "time" and mode == "mixed"
    assert all(f["split"] in SPLITS for f in files[1:])
    assert [p for p in pieces["test"] if p[0] == 0] == [(0, 12800, 3200)]


def test_a_file_of_silence_and_one_huge_sample_is_skipped_naming_the_spike(tmp_path, make_tone):
    """Pure silence with one 1e30 sample was skipped as "no stretch of sound of at least 0.5 s": its reason
    names the spike now, its value and time."""
    rec = tmp_path / "rec"
    _melodies(rec, ["a.wav", "b.wav", "c.wav"])
    x = np.zeros(3 * 44100, np.float32)
    x[22050] = 1e30
    sf.write(rec / "spike.wav", x, 44100, subtype="FLOAT")
    (skip,) = prep([rec], tmp_path / "c")["skipped"]
    assert skip["reason"].startswith("it holds only silence and a spike of 1e+30 at 0.500 s (1 sample(s) above "
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
                "1 sample(s) above 24.1 dBFS and at least 40 dB above all the rest (the first at 1.000 s: 20)"), \
                (corpus_rate, name, entry)
