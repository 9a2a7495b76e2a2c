"""wavegen.prep: what a user is told, found preparing real music (the README's "Your own recordings"):
why a file was skipped, why a rerun does the work again, how the splits were made; and that a
folder prep refuses is left exactly as it was."""

import os
from pathlib import Path

import numpy as np
import pytest

from test_prep_inputs import SR, prep, tones
from test_prep_memory import _capped_prep, _declaring_hours

from wavegen.corpus import CorpusError


def _reasons(manifest):
    return {os.path.basename(s["path"]): s["reason"] for s in manifest["skipped"]}


@pytest.mark.parametrize("rate", [44100, 22050, 16000])
def test_a_dc_offset_alone_is_named_at_any_sample_rate(tmp_path, make_audio, make_tone, rate):
    """Resampled, a constant rang at its edges above the silence floor: the reason read "no stretch of
    sound of at least 0.5 s" for a 3 s file, at any rate but the corpus's."""
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    make_audio(rec / "dc.wav", np.full(3 * rate, 0.3), rate, subtype="FLOAT")
    make_audio(rec / "dc_hiss.wav", 0.3 + 1e-6 * np.random.default_rng(0).standard_normal(3 * rate), rate,
               subtype="FLOAT")
    reasons = _reasons(prep([rec], tmp_path / "c"))
    for name in ("dc.wav", "dc_hiss.wav"):
        assert reasons[name].startswith("silent: a constant DC offset of +0.3 and no sound over it"), reasons


def test_a_zero_byte_file_is_called_empty(tmp_path, make_tone, caplog):
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    (rec / "copy_failed.flac").write_bytes(b"")  # was "cannot decode audio (Format not recognised)"
    with caplog.at_level("WARNING"):
        m = prep([rec], tmp_path / "c")
    assert _reasons(m) == {"copy_failed.flac": "empty: a file of 0 bytes"}
    assert "copy_failed.flac: empty: a file of 0 bytes" in caplog.text


def _unfinished_wav(path, make_tone, seconds=2.0, tail=b""):
    """A real stereo WAV (soundfile) whose RIFF and data chunk sizes are then set to 0, as a recorder killed
    before it finished the header leaves them; tail: bytes after it (part of a frame)."""
    import struct

    make_tone(path, seconds, SR, 330, channels=2, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.index(b"data")
    assert data[:4] == b"RIFF" and struct.unpack("<I", data[at + 4 : at + 8])[0] == seconds * SR * 4
    data[4:8] = data[at + 4 : at + 8] = bytes(4)
    path.write_bytes(bytes(data) + tail)
    return path


def test_a_wav_whose_header_was_never_finished_keeps_its_audio(tmp_path, make_tone, caplog):
    """A recording whose recorder was killed before it wrote the sizes (libsndfile reads 0 frames of it) was
    skipped as "empty: no audio frames": the whole recording lost. A header cut short keeps what is there."""
    import soundfile as sf

    from wavegen.prep import PrepSettings
    from wavegen.prep_decode import decode_one

    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    _unfinished_wav(rec / "take1.wav", make_tone, tail=b"\x01\x02\x03")  # the last frame half written
    _unfinished_wav(rec / "take2.wav", make_tone, seconds=0.0)  # killed before any audio
    make_tone(rec / "cut.wav", 2.0, SR, 440, subtype="PCM_16")
    (rec / "cut.wav").write_bytes((rec / "cut.wav").read_bytes()[: 44 + SR * 2])  # 1 s of the 2 its header says
    assert sf.info(str(rec / "take1.wav")).frames == 0
    with caplog.at_level("WARNING"):
        m = prep([rec], tmp_path / "c")
    kept = {os.path.basename(f["path"]): f for f in m["files"]}
    take = kept["take1.wav"]
    # recovered, not damaged: its audio is all there (it was counted and said as "damaged, kept in part")
    assert (take["duration_seconds"], take["channels_in"], take["partial"]) == (2.0, 2, False)
    assert "partial_reason" not in take and take["recovered"].startswith("unfinished WAV header: its data chunk "
                                                                         "size is 0"), take
    assert f"{rec / 'take1.wav'} recovered (unfinished WAV header" in caplog.text
    assert "take1.wav is damaged" not in caplog.text
    assert "1 unfinished WAV file recovered (recovered); 1 damaged file kept in part (partial)" in caplog.text
    assert (kept["cut.wav"]["duration_seconds"], kept["cut.wav"]["partial"]) == (1.0, True)
    assert _reasons(m) == {"take2.wav": "empty: unfinished WAV header: its data chunk size is 0, as a recorder "
                                        "stopped before it closed the file leaves it and no whole frame of audio "
                                        "follows it"}
    # the audio is the recording's, sample for sample
    whole = tmp_path / "whole.wav"
    make_tone(whole, 2.0, SR, 330, channels=2, subtype="PCM_16")
    settings = PrepSettings(inputs=(str(rec),), sample_rate=SR)
    recovered, lengths, _ = decode_one(rec / "take1.wav", settings, "0" * 64)
    expected, expected_lengths, _ = decode_one(whole, settings, "0" * 64)
    assert lengths == expected_lengths and np.array_equal(recovered, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "rec", "whole.wav"]  # no copy of it made


def test_an_unfinished_wav_past_the_riff_size_limit_is_read_with_an_rf64_header(tmp_path, make_tone, monkeypatch):
    """Past 4 GiB a RIFF size cannot be written (struct.error: the whole prep stopped with a traceback): the
    header it is read with is RF64. The limit lowered to a few bytes here: the same header, decoded by libsndfile."""
    from wavegen import prep_decode, prep_wav
    from wavegen.prep import PrepSettings

    take = _unfinished_wav(tmp_path / "take.wav", make_tone)
    whole = tmp_path / "whole.wav"
    make_tone(whole, 2.0, SR, 330, channels=2, subtype="PCM_16")
    settings = PrepSettings(inputs=(str(tmp_path),), sample_rate=SR)
    expected = prep_decode.decode_one(whole, settings, "0" * 64)
    monkeypatch.setattr(prep_wav, "WAV_SIZE_LIMIT", 1000)
    recovered = prep_decode.decode_one(take, settings, "0" * 64)
    assert recovered[1] == expected[1] and np.array_equal(recovered[0], expected[0])
    assert recovered[2]["recovered"].startswith("unfinished WAV header") and not recovered[2]["partial"], recovered[2]


def test_a_finished_wav_with_an_empty_data_chunk_and_a_chunk_after_it_is_empty(tmp_path, make_tone):
    """A WAV closed properly (its RIFF size the file's) whose data chunk is empty, a metadata chunk after it:
    that chunk's bytes were read as 6 s of "audio" (noise in the corpus); it is empty, as it says."""
    import struct

    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    make_tone(rec / "meta.wav", 0.0, SR, 330, subtype="PCM_16")
    head = (rec / "meta.wav").read_bytes()
    meta = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    body = head[8:] + b"id3 " + struct.pack("<I", len(meta)) + meta
    (rec / "meta.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    m = prep([rec], tmp_path / "c")
    assert _reasons(m) == {"meta.wav": "empty: no audio frames"}


def test_a_refused_folder_is_left_as_it_was(tmp_path, make_tone):
    tones(tmp_path / "rec", make_tone, 3)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text('{"name": "my app"}')
    with pytest.raises(CorpusError, match="not a wavegen corpus but holds manifest.json"):
        prep([tmp_path / "rec"], mine)
    assert sorted(p.name for p in mine.iterdir()) == ["manifest.json"]  # no .lock left in it


def test_a_rerun_that_rebuilds_a_damaged_array_says_which_one(tmp_path, make_tone, caplog):
    tones(tmp_path / "rec", make_tone, 3)
    m1 = prep([tmp_path / "rec"], tmp_path / "c")
    val = tmp_path / "c" / "val.npy"
    with open(val, "r+b") as f:
        f.truncate(val.stat().st_size - 10)
    with caplog.at_level("INFO"):
        assert prep([tmp_path / "rec"], tmp_path / "c") == m1
    assert f"{val} is not the array {tmp_path / 'c' / 'manifest.json'} describes (cut short, replaced or " \
           "missing): preparing the corpus again" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):
        prep([tmp_path / "rec"], tmp_path / "c")  # whole again: up to date, nothing said about arrays
    assert "corpus up to date" in caplog.text and "is not the array" not in caplog.text


def test_a_split_by_file_and_by_time_names_the_labels_cut_in_time(tmp_path, make_tone, caplog):
    rec = tmp_path / "rec"
    tones(rec / "album", make_tone, 4)
    tones(rec / "single", make_tone, 1, seconds=3.0)
    with caplog.at_level("INFO"):
        m = prep([rec], tmp_path / "c", labels="folders")
    assert m["split_mode"] == "mixed"
    assert "(split by file; by time for the label with too few files: single)" in caplog.text
    assert "split by mixed" not in caplog.text


def test_a_link_to_nothing_is_named_not_passed_over(tmp_path, make_tone, caplog):
    """A label folder's link whose target moved was passed over in silence (its label just missing)."""
    rec = tmp_path / "rec"
    tones(rec / "album", make_tone, 3)
    (rec / "moved_album").symlink_to(tmp_path / "elsewhere" / "album")
    (rec / "album" / "gone.wav").symlink_to(tmp_path / "nothing.wav")
    with caplog.at_level("WARNING"):
        m = prep([rec], tmp_path / "c", labels="folders")
    assert f"skipping {rec / 'moved_album'}: a link to nothing ({tmp_path / 'elsewhere' / 'album'})" in caplog.text
    assert _reasons(m) == {"gone.wav": f"a link to nothing ({tmp_path / 'nothing.wav'})"}
    assert m["labels"] == ["album"]


def test_replacing_a_corpus_names_the_source_that_changed(tmp_path, make_tone, caplog):
    """One file edited in place was "1 source(s) new or changed; 1 source(s) gone or changed"."""
    rec = tmp_path / "rec"
    tones(rec, make_tone, 4)
    prep([rec], tmp_path / "c")
    make_tone(rec / "t01.wav", 1.1, SR, 999)  # edited: the same name, other sound
    make_tone(rec / "t99.wav", 1.3, SR, 777)  # added
    with caplog.at_level("WARNING"):
        prep([rec], tmp_path / "c")
    assert "1 source changed (t01.wav); 1 source new); a training run" in caplog.text, caplog.text


def test_replacing_a_corpus_names_the_sources_gone(tmp_path, make_tone, caplog):
    """Recordings removed and prep run again: the warning said "4 source(s) gone or skipped now" without a name,
    so which recordings the new corpus lacks (a folder moved, a disk not mounted) had to be found by hand. Now the
    first three are named, and how many more."""
    rec = tmp_path / "rec"
    tones(rec, make_tone, 7)
    prep([rec], tmp_path / "c")
    for i in (1, 2, 4, 5):
        (rec / f"t{i:02d}.wav").unlink()
    with caplog.at_level("WARNING"):
        prep([rec], tmp_path / "c")
    assert "4 sources gone or skipped now (t01.wav, t02.wav, t04.wav and 1 more)); a training run" in caplog.text
    (rec / "t06.wav").unlink()
    caplog.clear()
    with caplog.at_level("WARNING"):
        prep([rec], tmp_path / "c")
    assert "1 source gone or skipped now (t06.wav)); a training run" in caplog.text, caplog.text


def test_a_stereo_file_whose_channels_cancel_is_named_out_of_phase(tmp_path, make_audio, make_tone):
    """A loud stereo file, one channel the other's inverse (a wiring slip), mixes to nothing: it was
    skipped as "silent at 16-bit resolution", which the musician, hearing it loud, could not believe."""
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(3 * 44100) / 44100)
    make_audio(rec / "phase.wav", np.stack([x, -x], axis=1), 44100)
    make_audio(rec / "quiet.wav", np.stack([1e-6 * x, 1e-6 * x], axis=1), 44100, subtype="FLOAT")
    reasons = _reasons(prep([rec], tmp_path / "c"))
    assert reasons["phase.wav"].startswith("its channels cancel in the mono mix (out of phase: they peak at -6.0 "
                                           "dBFS"), reasons
    assert "silent" in reasons["phase.wav"] and "cancel" not in reasons["quiet.wav"]  # quiet, not cancelled


def test_channels_that_cancel_under_a_spike_in_each_are_named_not_called_silence(tmp_path, make_audio):
    """A float stereo file of a tone and its inverse, a spike in each channel (1e30 at 1 s in one, 40 at 2 s in the
    other): skipped as "only silence and a spike of 5e+29 ...; without it, silent", true of the mix, false of the
    channels: every channel held a spike, so none was judged for the sound under it. The mixer keeps each channel's
    peak at or under the spike floor: the tone named as cancelling, the spikes as several."""
    from wavegen.audio_decode import decode_mono

    rec = tmp_path / "rec"
    rec.mkdir()
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(3 * SR) / SR)).astype(np.float32)
    x = np.stack([tone, -tone], axis=1)
    x[SR, 0], x[2 * SR, 1] = 1e30, 40.0
    make_audio(rec / "both.wav", x, SR, subtype="FLOAT")
    silence = np.zeros((3 * SR, 2), np.float32)
    silence[SR, 0], silence[2 * SR, 1] = 1e30, 40.0
    make_audio(rec / "silence.wav", silence, SR, subtype="FLOAT")
    make_audio(rec / "music.wav", np.stack([tone, tone], axis=1), SR)
    reasons = _reasons(prep([rec], tmp_path / "c"))
    assert reasons["both.wav"] == (
        "its mono mix holds spikes, the first of 5e+29 at 1.000 s (2 samples above 18.1 dBFS in the mono mix of its 2 "
        "channels, where a channel's 24.1 dBFS is 18.1 dBFS: damaged float audio) and, without them, its channels "
        "cancel in the mono mix (out of phase: they peak at -10.5 dBFS, the mix at -inf dBFS: mix it to mono "
        "yourself, one channel alone, say); the mix: silent: every sample is zero"), reasons
    assert reasons["silence.wav"].startswith("its mono mix holds only silence and spikes, the first of 5e+29"), reasons
    assert reasons["silence.wav"].endswith("; without them, silent: every sample is zero"), reasons
    assert "music.wav" not in reasons
    # the tone under the spikes: each channel's peak at or under the spike floor, not the spike
    assert decode_mono(rec / "both.wav").channel_peaks == (pytest.approx(0.3, rel=1e-3),) * 2


def test_a_file_declaring_more_audio_than_memory_holds_is_skipped_and_the_rest_prepared(tmp_path, make_tone):
    """A decode buffer larger than memory ended the whole prep in a numpy MemoryError traceback. Memory capped
    by RLIMIT_AS (_capped_prep): a kernel that grants any allocation (vm.overcommit_memory=1) refuses it too."""
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    _declaring_hours(rec / "concert.flac")
    m = _capped_prep(64, rec, tmp_path / "c").manifest
    reason = _reasons(m)["concert.flac"]
    assert reason.startswith("too long to decode in memory: its header declares 1,193.0 h of 8 channels, "), reason
    assert "split it into shorter files" in reason
    assert sorted(os.path.basename(f["path"]) for f in m["files"]) == ["t00.wav", "t01.wav", "t02.wav"]


def test_thousands_of_skipped_files_are_named_up_to_a_limit_then_summed_up(tmp_path, make_tone, caplog):
    """A folder of thousands of tiny files wrote a line for each, burying every other line in them."""
    from wavegen.prep_decode import SKIP_LINES

    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    many = SKIP_LINES + 7
    for i in range(many):
        make_tone(rec / "clicks" / f"c{i:03d}.wav", 0.05, SR, 300 + i)
    (rec / "empty.wav").write_bytes(b"")
    with caplog.at_level("WARNING", logger="wavegen.prep"):
        m = prep([rec], tmp_path / "c")
    assert len(m["skipped"]) == many + 1  # the manifest still lists every one
    lines = [r.getMessage() for r in caplog.records if r.name == "wavegen.prep"]
    assert sum(line.startswith("skipping ") for line in lines) == SKIP_LINES
    summary = [line for line in lines if line.startswith("skipped ")]
    assert summary == ["skipped 8 more files without a line each (7: no stretch of sound of at least 0.5 s; "
                       "1: empty: a file of 0 bytes); "
                       "--verbose names them, and manifest.json's \"skipped\" lists every skipped file and why"]


def test_a_file_skipped_for_lack_of_memory_is_tried_again_by_the_next_prep(tmp_path, make_tone):
    """A skip for lack of memory was remembered: the rerun (on a machine with more memory, say) said
    "corpus up to date" and never tried the file again. A corpus made before "retry" was recorded too.
    Memory capped by RLIMIT_AS (_capped_prep), whatever vm.overcommit_memory says."""
    import json

    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    _declaring_hours(rec / "concert.flac")
    corpus = tmp_path / "c"
    (skip,) = _capped_prep(64, rec, corpus).manifest["skipped"]
    assert skip["retry"] is True and skip["reason"].startswith("too long to decode in memory")
    older = json.loads((corpus / "manifest.json").read_text())
    del older["skipped"][0]["retry"]
    (corpus / "manifest.json").write_text(json.dumps(older))
    for _ in range(2):
        again = _capped_prep(64, rec, corpus)
        assert f"{corpus} skipped 1 file for lack of memory ({rec / 'concert.flac'}): trying again" in again.log
        assert "corpus up to date" not in again.log and again.decoded == ["concert.flac"]
        assert again.manifest["skipped"][0]["retry"] is True
    os.remove(rec / "concert.flac")  # the other skips are remembered: the rerun is quick again
    _capped_prep(64, rec, corpus)
    again = _capped_prep(64, rec, corpus)
    assert "corpus up to date" in again.log and again.decoded == []


def test_a_long_stereo_file_is_prepared_in_the_memory_of_its_mono_result(tmp_path):
    """prep decoded each file whole, [frames, channels] float32 at its own rate, then mixed and resampled
    it, and quantized the kept audio through float64 copies of it all: a 2-hour 48 kHz stereo recording
    needed GBs. numpy's arrays are traced by tracemalloc: the peak is measured, not guessed."""
    import tracemalloc

    import soundfile as sf

    from wavegen.prep import PrepSettings
    from wavegen.prep_decode import decode_one

    path, rate, seconds = tmp_path / "long.wav", 48000, 30
    t = np.arange(rate) / rate
    with sf.SoundFile(str(path), "w", rate, 2, subtype="PCM_16") as f:
        for second in range(seconds):
            tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (second % 5 < 3)  # a 2 s rest every 5 s
            f.write(np.stack([tone, 0.5 * tone], axis=1))
    mono_bytes = seconds * SR * 4
    tracemalloc.start()
    try:
        pcm, lengths, entry = decode_one(path, PrepSettings(inputs=(str(path),), sample_rate=SR), "0" * 64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert entry["channels_in"] == 2 and len(lengths) == 6 and pcm.dtype == np.int16
    assert peak < 3 * mono_bytes, (peak, mono_bytes)  # decoded whole it was 20x the mono: 2 x 4 bytes x 3 x rate


def test_an_unfinished_wav_is_read_where_it_lies_with_no_copy_written(tmp_path, make_tone):
    """Its audio was copied whole (a finished copy, into the corpus folder) before it was decoded: an hour's
    recording took its size again on the disk, and a disk without that room lost it. Here no file may grow past
    4 KiB (RLIMIT_FSIZE): a 128 KB copy fails with EFBIG; read where it lies, the recording decodes."""
    import subprocess
    import sys

    take = _unfinished_wav(tmp_path / "take.wav", make_tone)
    code = ("import resource, signal, sys\n"
            "from pathlib import Path\n"
            "from wavegen.prep import PrepSettings\n"
            "from wavegen.prep_decode import decode_one\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
            "pcm, lengths, entry = decode_one(Path(sys.argv[1]), PrepSettings(inputs=(sys.argv[1],)), '0' * 64)\n"
            "print(len(pcm), entry['duration_seconds'], entry['partial'])\n")
    out = subprocess.run([sys.executable, "-c", code, str(take)], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(2 * SR), "2.0", "False"]


def test_a_recovered_file_is_taken_from_the_corpus_by_a_rerun_after_a_memory_skip(tmp_path, make_tone):
    """A rerun that tries again a file skipped for lack of memory takes every other file from the corpus
    (prep_decode.Earlier): an entry marked "recovered" is one of them, not decoded again."""
    from wavegen.prep_decode import Earlier

    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    take = _unfinished_wav(rec / "take.wav", make_tone)
    m = prep([rec], tmp_path / "c")
    outcome = Earlier(tmp_path / "c", m).outcome(str(take))
    assert outcome is not None and outcome[2]["recovered"].startswith("unfinished WAV header"), outcome
    assert sum(n for _, n in outcome[1]) == round(next(f for f in m["files"] if f["path"] == str(take))["kept_seconds"] * SR)


def test_a_header_rate_so_high_that_no_sample_is_left_is_named_not_called_silent(tmp_path, make_tone):
    """A WAV of 1 s of tone whose header says 2,147,483,647 Hz (damaged) lasts 7 microseconds at that rate, not
    one sample at the corpus's: it was skipped as "silent: every sample is zero", which it is not."""
    import struct

    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    make_tone(rec / "rate.wav", 1.0, SR, 440, subtype="PCM_16")
    data = bytearray((rec / "rate.wav").read_bytes())
    assert data[12:16] == b"fmt " and struct.unpack("<I", data[24:28])[0] == SR
    data[24:32] = struct.pack("<II", 2**31 - 1, 2**31 - 1)  # the rate, and the bytes a second (sound as it was)
    (rec / "rate.wav").write_bytes(bytes(data))
    reason = _reasons(prep([rec], tmp_path / "c"))["rate.wav"]
    assert reason == (f"its 16,000 frames at 2,147,483,647 Hz, the rate its header says, last 7.45e-06 s: not one "
                      f"sample at {SR} Hz (a damaged header?)"), reason


def test_a_wav_cut_inside_its_fmt_chunk_is_skipped_with_why_not_a_traceback(tmp_path, make_tone):
    """A download that stopped after 20 bytes ("RIFF", "WAVE", a fmt chunk's name and size, none of its fields):
    the look for an unfinished header unpacked the missing fields and the whole prep stopped in struct.error."""
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    make_tone(rec / "head.wav", 1.0, SR, 440, subtype="PCM_16")
    (rec / "head.wav").write_bytes((rec / "head.wav").read_bytes()[:20])
    reason = _reasons(prep([rec], tmp_path / "c"))["head.wav"]
    assert reason.startswith("cannot decode audio (") and "fmt" in reason, reason
