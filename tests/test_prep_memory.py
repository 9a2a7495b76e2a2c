"""wavegen.prep when memory is short: a file skipped for lack of memory is tried again by the next prep,
which decodes that file alone (the others are taken from the corpus), keeps the corpus as it was when
the file is still too long, and makes the corpus a prep that never skipped makes, byte for byte, once
the file fits."""

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import soundfile as sf

import wavegen.prep_decode as prep_decode
from wavegen.split import SPLITS
from conftest import melody
from test_prep_inputs import SR, prep, tones

CORPUS_FILES = ("manifest.json", "train.npy", "val.npy", "test.npy", "train_segments.npy", "val_segments.npy",
                "test_segments.npy")

# `wavegen prep` with the address space capped at what the process has mapped once its modules are
# loaded, plus argv[1] MiB (RLIMIT_AS: whatever vm.overcommit_memory says, a larger buffer is refused);
# the name of each file it decodes (decode_one, watched: it still decodes them) appended to argv[2]
_CAPPED_PREP = """import resource, sys
import numpy, soundfile, soxr, wavegen.cli, wavegen.prep, wavegen.prep_decode as prep_decode
extra_mib, decodes, *args = sys.argv[1:]
decode_one = prep_decode.decode_one
def watched(path, *args, **kwargs):
    with open(decodes, "a") as f:
        f.write(path.name + "\\n")
    return decode_one(path, *args, **kwargs)
prep_decode.decode_one = watched
mapped = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (mapped + (int(extra_mib) << 20), resource.RLIM_INFINITY))
sys.exit(wavegen.cli.main(["prep", *args]))
"""


class Capped(NamedTuple):
    manifest: dict  # the corpus's manifest.json after the prep
    decoded: list  # the names of the files the prep decoded, in turn
    log: str  # what it said (stderr)


def _capped_prep(extra_mib, rec, corpus, *options) -> Capped:
    decodes = Path(corpus).parent / "decoded.txt"
    decodes.unlink(missing_ok=True)
    out = subprocess.run([sys.executable, "-c", _CAPPED_PREP, str(extra_mib), str(decodes), str(rec), str(corpus),
                          *options], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    decoded = decodes.read_text().split() if decodes.exists() else []
    return Capped(json.loads((Path(corpus) / "manifest.json").read_text()), decoded, out.stderr)


def _declaring_hours(path, seconds=1.0, channels=8):
    """A real FLAC of ``seconds`` whose header (STREAMINFO's total samples, 36 bits) declares the most
    frames it can: ~1,200 h x ``channels``, terabytes decoded; what a damaged header can say."""
    x = 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * SR)) / SR)
    sf.write(path, np.repeat(x[:, None], channels, axis=1).astype(np.float32), SR)
    return _declare_most_frames(path)


def _declare_most_frames(path):
    """The FLAC at path, its header made to declare the most frames it can (~1,200 h at 16 kHz)."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # the first block is STREAMINFO
    fields = int.from_bytes(data[18:26], "big")  # rate 20 bits, channels 3, bits 5, total samples 36
    data[18:26] = (fields | (1 << 36) - 1).to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


def _decodes(monkeypatch) -> list[str]:
    """The names of the files prep decodes from here on (decode_one, watched: it still decodes them)."""
    decoded, real = [], prep_decode.decode_one

    def watched(path, *args, **kwargs):
        decoded.append(path.name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(prep_decode, "decode_one", watched)
    return decoded


def _long_tone(path, seconds=600, rate=1000):
    """A tone at 1 kHz, 1.2 MB: 38 MB as float32 mono at the corpus's 16 kHz (sound with rests of 10 s)."""
    t = np.arange(seconds * rate) / rate
    x = 0.3 * np.sin(2 * np.pi * 110 * t) * (np.sin(2 * np.pi * t / 40) > -0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), rate, subtype="PCM_16")


def _stamps(corpus):
    return {name: (os.stat(corpus / name).st_ino, os.stat(corpus / name).st_mtime_ns) for name in CORPUS_FILES}


def test_a_rerun_still_short_of_memory_decodes_that_file_alone_and_keeps_the_corpus(tmp_path, make_tone):
    """Every rerun on a machine still short of memory decoded every file again and rewrote the corpus.
    Memory capped by RLIMIT_AS (a kernel that grants any allocation, vm.overcommit_memory=1, refuses too)."""
    rec, corpus = tmp_path / "rec", tmp_path / "c"
    tones(rec, make_tone, 5)
    make_tone(rec / "t02_copy.wav", 1.2, SR, 274)  # a duplicate, judged again
    (rec / "empty.wav").write_bytes(b"")  # a skip, its reason taken again
    _declaring_hours(rec / "concert.flac")
    first = _capped_prep(64, rec, corpus)
    assert [(os.path.basename(s["path"]), s.get("retry")) for s in first.manifest["skipped"]] == \
        [("concert.flac", True), ("empty.wav", None), ("t02_copy.wav", None)]
    assert sorted(first.decoded) == ["concert.flac", "empty.wav", *(f"t{i:02d}.wav" for i in range(5))]
    before = _stamps(corpus)
    for _ in range(2):
        again = _capped_prep(64, rec, corpus)
        assert again.decoded == ["concert.flac"]
        assert f"{rec / 'concert.flac'}: still too long for this machine's memory: the corpus stays as it was" \
            in again.log
        assert again.manifest == first.manifest
        assert _stamps(corpus) == before  # not written again
    assert not list(corpus.glob(".prep-*"))


@pytest.mark.parametrize("touched", [False, True])
def test_a_file_that_fits_at_last_makes_the_corpus_a_prep_that_never_skipped_makes(tmp_path, make_tone, monkeypatch,
                                                                                  touched):
    """A file skipped for lack of memory, tried again with memory to spare: only it (and a file cut in time,
    whose segments the arrays no longer tell) is decoded; every file's entry and kept audio are a fresh prep's,
    the files of the earlier corpus keeping their splits (a run on it never trains on what it validated on).
    touched: the inputs' times changed meanwhile (their bytes read again, not decoded)."""
    rec = tmp_path / "rec"
    for i in range(3):  # label a: split by file; its long file and a copy of it between the others
        make_tone(rec / "a" / f"a{i}.wav", 1.0 + 0.3 * i, SR, 200 + 40 * i)
    _long_tone(rec / "a" / "a1_long.wav")
    (rec / "a" / "a2_again.wav").write_bytes((rec / "a" / "a1_long.wav").read_bytes())
    sf.write(rec / "a" / "a3_silent.wav", np.zeros(SR, np.float32), SR)
    make_tone(rec / "b" / "b0.wav", 3.0, SR, 330)  # label b: one file, cut in time
    first = _capped_prep(24, rec, tmp_path / "c", "--labels", "folders", "--quiet").manifest
    assert {os.path.basename(s["path"]): s.get("retry") for s in first["skipped"]} == \
        {"a1_long.wav": True, "a2_again.wav": True, "a3_silent.wav": None}
    assert first["skipped"][0]["reason"].startswith("too long to decode in memory: its header declares 0.2 h of 1 "
                                                    "channel, 36.6 MiB mono at 16000 Hz")  # was "0.0 GiB"
    if touched:
        for path in rec.rglob("*.wav"):
            os.utime(path)
    decoded = _decodes(monkeypatch)
    again = prep([rec], tmp_path / "c", labels="folders")
    assert sorted(decoded) == ["a1_long.wav", "b0.wav"]
    assert sorted(os.path.basename(f["path"]) for f in again["files"]) == ["a0.wav", "a1.wav", "a1_long.wav",
                                                                            "a2.wav", "b0.wav"]
    was = {f["path"]: f["split"] for f in first["files"]}
    assert {f["path"]: f["split"] for f in again["files"] if f["path"] in was} == was
    fresh = prep([rec], tmp_path / "fresh", labels="folders")
    for key in ("fingerprint", "content_fingerprint", "skipped", "params", "split_mode", "labels"):
        assert again[key] == fresh[key], key
    assert (again["split_mode"], again["labels"]) == ("mixed", ["a", "b"])
    (joined,) = [f for f in again["files"] if f["path"] not in was]  # the file that fits now: label a's, by file
    assert joined["path"].endswith("a1_long.wav") and joined["split"] in SPLITS
    assert [dict(f, split=None) for f in again["files"]] == [dict(f, split=None) for f in fresh["files"]]
    for i in range(len(fresh["files"])):
        assert _kept_audio(tmp_path / "c", i) == _kept_audio(tmp_path / "fresh", i)


@pytest.mark.parametrize("starts", ["recorded", "damaged", "older"])
def test_a_label_drawn_again_in_a_rerun_cuts_audio_from_the_corpus_in_time_recording_its_cut(tmp_path, monkeypatch,
                                                                                            starts):
    """A rerun after a memory skip takes the other files' audio from the corpus, whose entries recorded no segment
    starts: a file of it cut in time there (its label drawn again: the file that fits now, a FLAC whose header
    declares hours, has the audio of the label's only train file, which is skipped as its duplicate) recorded no
    "time_cuts_seconds", so the next re-prep (another --top-db) could not keep its cut. Each entry records its
    segments' starts ("segment_starts_seconds"), read back: the cut is recorded as a fresh prep records it. Damaged
    starts: that file is decoded again; a corpus of an older prep (none recorded): taken from the corpus, as
    before, with no cut recorded."""
    rec = tmp_path / "rec"
    for n in range(3):  # label b: split by file, one file in each split; each 1 s of silence at its end
        sound = np.concatenate([melody(1.0 + 0.2 * n, SR, seed=n), np.zeros(SR, np.float32)])
        (rec / "b").mkdir(parents=True, exist_ok=True)
        sf.write(rec / "b" / f"b{n}.wav", sound, SR, subtype="PCM_16")
    (train,) = [f["path"] for f in prep([rec], tmp_path / "probe", labels="folders")["files"] if f["split"] == "train"]
    (rec / "a").mkdir()  # label a, before b: its FLAC holds the train file's audio (its header declaring hours)
    sf.write(rec / "a" / "same.flac", sf.read(train, dtype="int16")[0], SR, subtype="PCM_16")
    _declare_most_frames(rec / "a" / "same.flac")
    first = _capped_prep(64, rec, tmp_path / "c", "--labels", "folders", "--quiet").manifest
    assert [(os.path.basename(s["path"]), s.get("retry")) for s in first["skipped"]] == [("same.flac", True)]
    manifest_path, held_file = tmp_path / "c" / "manifest.json", next(f for f in first["files"] if f["path"] != train)
    if starts == "damaged":
        held_file["segment_starts_seconds"] = ["0.0"]
    for f in first["files"] if starts == "older" else []:
        del f["segment_starts_seconds"]
    manifest_path.write_text(json.dumps(first))
    decoded = _decodes(monkeypatch)
    again = prep([rec], tmp_path / "c", labels="folders")
    assert sorted(decoded) == sorted(["same.flac"] + ([os.path.basename(held_file["path"])] if starts == "damaged"
                                                      else []))
    fresh = prep([rec], tmp_path / "fresh", labels="folders")
    assert [s["path"] for s in again["skipped"]] == [train]  # the duplicate of the file that fits now
    held = {f["path"]: f for f in again["files"] if f["label"] == "b"}
    assert [f["split"] for f in held.values()] == ["time", "time"] and again["splits"] == fresh["splits"]
    for f in fresh["files"]:
        if f["path"] in held and starts != "older":
            assert held[f["path"]].get("time_cuts_seconds") == f["time_cuts_seconds"] and held[f["path"]] == f
        elif f["path"] in held:
            assert "time_cuts_seconds" not in held[f["path"]]


def _kept_audio(corpus: Path, index: int) -> bytes:
    """The kept audio of a corpus's file index, its pieces in every split one after another (train, val, test)."""
    pieces = []
    for name in ("train", "val", "test"):
        audio = np.load(corpus / f"{name}.npy")
        pieces += [audio[s : s + n].tobytes() for s, n, i in np.load(corpus / f"{name}_segments.npy") if i == index]
    return b"".join(pieces)


def test_audio_taken_from_the_corpus_is_written_a_segment_at_a_time(tmp_path, make_tone):
    """Earlier.write_audio built a file's whole kept audio in memory (np.concatenate), on the path of a rerun
    on a machine short of it. Its .pcm is still the file's segments, one after another, as write_array writes
    them; numpy's buffers are traced by tracemalloc."""
    rec, corpus = tmp_path / "rec", tmp_path / "c"
    tones(rec, make_tone, 3)
    _long_tone(rec / "long.wav", seconds=120)  # its segments kept whole in one split: 2.6 MB at 16 kHz
    manifest = prep([rec], corpus)
    index = next(i for i, f in enumerate(manifest["files"]) if f["path"].endswith("long.wav"))
    split = manifest["files"][index]["split"]
    rows = np.load(corpus / f"{split}_segments.npy")
    audio = np.load(corpus / f"{split}.npy")
    expected = np.concatenate([audio[s : s + n] for s, n, i in rows if i == index]).tobytes()
    assert sum(rows[:, 2] == index) > 1 and len(expected) > 2_000_000
    earlier, tmp = prep_decode.Earlier(corpus, manifest), tmp_path / "tmp"
    tmp.mkdir()
    tracemalloc.start()
    try:
        earlier.write_audio(tmp, {3: index})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (tmp / "3.pcm").read_bytes() == expected
    assert peak < 200_000, f"{peak:,} bytes held while writing {len(expected):,}"
