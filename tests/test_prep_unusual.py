"""wavegen prep on files that are valid but unusual: what a user is told about a float file with NaN or
infinite samples, and about a file whose sound lies above half the corpus's rate."""

import logging
import os

import numpy as np
import soundfile as sf
from test_prep_inputs import SR, prep, tones

from wavegen.audio_decode import decode_mono
from wavegen.prep import prepare


def _reasons(manifest):
    return {os.path.basename(s["path"]): s["reason"] for s in manifest["skipped"]}


def _float_file_with_bad_samples(make_audio, path, rate=48000):
    t = np.arange(2 * rate) / rate
    x = np.stack([0.4 * np.sin(2 * np.pi * 300 * t), 0.3 * np.sin(2 * np.pi * 450 * t)], axis=1)
    x[rate // 2, 1] = np.nan  # at 0.5 s, in the second channel
    x[rate, 0] = np.inf
    make_audio(path, x, rate, subtype="FLOAT")


def test_decode_mono_counts_the_frames_with_nan_or_infinite_samples(tmp_path, make_audio, make_tone):
    _float_file_with_bad_samples(make_audio, tmp_path / "bad.wav")
    bad = decode_mono(tmp_path / "bad.wav", SR)
    assert (bad.nonfinite_frames, bad.first_nonfinite) == (2, 24000)
    make_tone(tmp_path / "good.wav", 1.0, 48000)
    good = decode_mono(tmp_path / "good.wav", SR)
    assert (good.nonfinite_frames, good.first_nonfinite) == (0, None)


def test_nan_or_infinite_samples_are_counted_and_placed_in_the_reason(tmp_path, make_audio, make_tone):
    """The reason read "contains NaN or infinite samples": not how many, nor where, nor what to do (one NaN in
    an hour's float recording, a plugin's glitch, kept the whole file out)."""
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    _float_file_with_bad_samples(make_audio, rec / "glitch.wav")
    reason = _reasons(prep([rec], tmp_path / "c"))["glitch.wav"]
    assert reason.startswith("contains NaN or infinite samples in 2 of its 96,000 frames, the first at 0.500 s"), \
        reason
    assert "re-export the file" in reason


def test_sound_above_half_the_corpus_rate_is_said_so(tmp_path, make_tone):
    """A 44.1 kHz file of 3 s of a 12 kHz tone, prepared at 16 kHz: the reason read "no stretch of sound of at
    least 0.5 s", of a file that is sound from end to end; its sound lies where 16 kHz samples cannot hold it."""
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    make_tone(rec / "cymbal.wav", 3.0, 44100, 12000)
    make_tone(rec / "ok_high.wav", 3.0, 44100, 3000)  # under 8 kHz: kept as ever
    m = prep([rec], tmp_path / "c")
    reason = _reasons(m)["cymbal.wav"]
    assert reason.startswith("its sound lies above 8000 Hz, half the corpus's rate"), reason
    assert "higher --sample-rate" in reason
    assert "ok_high.wav" in {os.path.basename(f["path"]) for f in m["files"]}
    # at 32 kHz the same file is kept
    kept = prep([rec], tmp_path / "c32", sample_rate=32000)
    assert "cymbal.wav" in {os.path.basename(f["path"]) for f in kept["files"]}


def test_au_and_rf64_files_cut_short_are_said_to_be_damaged(tmp_path, make_audio, make_tone):
    """A .au or an RF64 WAV (a recorder's past 4 GiB) cut short was kept as whole: no warning, "partial": false
    in the manifest. libsndfile names their size fields in two words ("Data Size", "Riff size"), which the
    search for a chunk declaring more than the file holds passed over."""
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    t = np.arange(4 * 8000) / 8000
    make_audio(rec / "cut.au", 0.4 * np.sin(2 * np.pi * 300 * t), 8000, format="AU", subtype="ALAW")
    make_audio(rec / "cut_rf64.wav", 0.4 * np.sin(2 * np.pi * 350 * t), 8000, format="RF64", subtype="PCM_16")
    make_audio(rec / "whole.au", 0.4 * np.sin(2 * np.pi * 400 * t), 8000, format="AU", subtype="PCM_16")
    make_audio(rec / "whole_rf64.wav", 0.4 * np.sin(2 * np.pi * 450 * t), 8000, format="RF64", subtype="PCM_16")
    for name in ("cut.au", "cut_rf64.wav"):
        path = rec / name
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6) + 1])
    files = {os.path.basename(f["path"]): f for f in prep([rec], tmp_path / "c")["files"]}
    assert files["cut.au"]["partial"] and files["cut_rf64.wav"]["partial"]
    assert files["cut.au"]["partial_reason"].startswith("cut short: its Data chunk declares 32000 bytes, the file "
                                                        "holds "), files["cut.au"]["partial_reason"]
    assert files["cut_rf64.wav"]["partial_reason"].startswith("cut short: its Riff chunk declares")
    assert not files["whole.au"]["partial"] and not files["whole_rf64.wav"]["partial"]
    assert 2.3 < files["cut.au"]["kept_seconds"] < 2.5


def test_the_same_audio_retagged_or_in_another_container_is_a_duplicate(tmp_path, make_audio, make_tone):
    """A duplicate was known by its file's bytes alone: the same track in its album and, retagged, in a
    compilation (or as FLAC beside its WAV) was kept twice, and could train in one split and be tested in
    another."""
    import soundfile as sf

    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    x = 0.4 * np.sin(2 * np.pi * 330 * np.arange(2 * 44100) / 44100)
    make_audio(rec / "album" / "song.wav", x, 44100, subtype="PCM_16")
    (rec / "best_of").mkdir()
    with sf.SoundFile(str(rec / "best_of" / "song.wav"), "w", 44100, 1, subtype="PCM_16") as f:
        f.title = "Song (Best of)"  # a LIST chunk: other bytes, the same audio
        f.write(x)
    pcm, _ = sf.read(str(rec / "album" / "song.wav"), dtype="int16")
    sf.write(str(rec / "best_of" / "song.flac"), pcm, 44100, subtype="PCM_16")  # converted: its samples
    assert (rec / "best_of" / "song.wav").read_bytes() != (rec / "album" / "song.wav").read_bytes()
    m = prep([rec], tmp_path / "c")
    kept = {os.path.relpath(f["path"], rec) for f in m["files"]}
    assert "album/song.wav" in kept and not kept & {"best_of/song.wav", "best_of/song.flac"}
    reasons = {os.path.relpath(s["path"], rec): s["reason"] for s in m["skipped"]}
    for name in ("best_of/song.wav", "best_of/song.flac"):
        assert reasons[name] == f"duplicate of {rec / 'album' / 'song.wav'} (the same audio: other tags or another " \
                                "container)", reasons


def test_a_float_aiff_whose_sample_size_libsndfile_mends_is_not_said_cut_short(tmp_path):
    """libsndfile mends an fl32 AIFF-C whose COMM chunk says 64-bit samples and logs "Sample Size : 64 (should
    be 32)": a size field's line, like AU's "Data Size", but not a chunk running past the file's end."""
    import struct

    from wavegen.audio_decode import decode_audio

    x = (0.4 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000)).astype(np.float32)
    path = tmp_path / "f.aiff"
    sf.write(str(path), x, 16000, format="AIFF", subtype="FLOAT")
    data = bytearray(path.read_bytes())
    at = data.index(b"COMM")
    data[at + 14: at + 16] = struct.pack(">h", 64)
    path.write_bytes(bytes(data))
    decoded = decode_audio(path)
    assert np.array_equal(decoded.samples[:, 0], x)
    assert decoded.damage is None, decoded.damage


def test_files_skipped_for_reasons_that_differ_only_in_their_figures_are_summed_up_as_one(tmp_path, caplog):
    """Past the first skip lines, reasons are summed up by their words: each file's own level in "its sound lies
    above 8000 Hz ..." made every reason another, and the summary listed three files and "N other reason(s)"."""
    rec = tmp_path / "rec"
    rec.mkdir()
    t = np.arange(3 * 44100) / 44100
    for i in range(26):
        sf.write(str(rec / f"high{i:02d}.wav"), (0.1 + 0.01 * i) * np.sin(2 * np.pi * (12000 + 50 * i) * t), 44100)
    sf.write(str(rec / "ok.wav"), 0.4 * np.sin(2 * np.pi * 300 * np.arange(3 * 16000) / 16000), 16000)
    with caplog.at_level(logging.WARNING):
        prepare([rec], tmp_path / "c", progress=False, sample_rate=16000)
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
    assert len(summary) == 1 and "other reason" not in summary[0], summary
    assert "6: its sound lies above 8000 Hz, half the corpus's rate" in summary[0], summary
    assert "its level falls from -… dBFS to -… dBFS RMS" in summary[0], summary
