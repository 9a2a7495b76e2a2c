"""Review of 4d2299a: segment starts read back from an earlier corpus (prep_earlier.Earlier._starts) that are
ordered and one per segment, yet put a segment past the file's end (a damaged manifest), are refused: that file
is decoded again, so the cut in time recorded for it is its real one."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from conftest import melody
from test_prep_inputs import SR, prep
from test_prep_memory import _capped_prep, _declare_most_frames, _decodes


@pytest.mark.parametrize("where", ["at_the_end", "running_past_it"])
def test_starts_past_the_files_end_are_damaged_and_the_file_decoded_again(tmp_path, monkeypatch, where):
    """Starts ordered, one per segment, each within a float's reach, but the file's only segment begins at its
    recorded end (or runs past it): its cut was recorded from them, clipped to the file's end ([d, d]: val and
    test empty in the file's time), so the next re-prep moved this corpus's val and test audio of it into train.
    Refused as damaged: the file is decoded again, its entry and cut what a fresh prep records."""
    rec = tmp_path / "rec"
    for n in range(3):  # label b: one file in each split, each followed by 1 s of silence
        sound = np.concatenate([melody(1.0 + 0.2 * n, SR, seed=n), np.zeros(SR, np.float32)])
        (rec / "b").mkdir(parents=True, exist_ok=True)
        sf.write(rec / "b" / f"b{n}.wav", sound, SR, subtype="PCM_16")
    (train,) = [f["path"] for f in prep([rec], tmp_path / "probe", labels="folders")["files"] if f["split"] == "train"]
    (rec / "a").mkdir()  # label a: a FLAC of the train file's audio whose header declares hours (skipped, retried)
    sf.write(rec / "a" / "same.flac", sf.read(train, dtype="int16")[0], SR, subtype="PCM_16")
    _declare_most_frames(rec / "a" / "same.flac")
    first = _capped_prep(64, rec, tmp_path / "c", "--labels", "folders", "--quiet").manifest
    held_file = next(f for f in first["files"] if f["path"] != train)
    assert len(held_file["segment_starts_seconds"]) == 1
    end = held_file["duration_seconds"]
    held_file["segment_starts_seconds"] = [end if where == "at_the_end" else end - held_file["kept_seconds"] / 2]
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(first))
    decoded = _decodes(monkeypatch)
    again = prep([rec], tmp_path / "c", labels="folders")
    now = next(f for f in again["files"] if f["path"] == held_file["path"])
    assert sorted(decoded) == sorted(["same.flac", os.path.basename(held_file["path"])])
    fresh = prep([rec], tmp_path / "fresh", labels="folders")
    assert now == next(f for f in fresh["files"] if f["path"] == held_file["path"])
    assert now["split"] == "time" and now["time_cuts_seconds"][1] < now["duration_seconds"] - 0.1
