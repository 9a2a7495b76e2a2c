"""wavegen prep on damage a user meets: a float file whose one huge sample (1e30) made all its music count as
silence, an Ogg file (Opus, Vorbis) cut short inside its last page, a file whose name holds a newline."""

import io
import logging
import os
import re

import numpy as np
import soundfile as sf
from conftest import melody
from test_prep_inputs import SR, prep, tones

from wavegen.audio_decode import decode_mono


def _music_with_a_spike(make_audio, path, rate, value, at_seconds=1.0, channels=1):
    x = np.stack([melody(4.0, rate, seed=3)] * channels, axis=1)
    x[int(at_seconds * rate), 0] = value
    make_audio(path, x, rate, subtype="FLOAT")
    return x


def test_one_huge_sample_is_clipped_and_said_and_the_music_is_kept(tmp_path, make_audio, make_tone, caplog):
    """A float WAV of music with one sample of 1e30 was skipped as "no stretch of sound": the loudness judged
    against that sample made the rest silence. Now the sample is clipped to the rest's peak, said with its time
    and value, recorded in the manifest, and the music kept."""
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    x = _music_with_a_spike(make_audio, rec / "spike.wav", 44100, 1e30, channels=2)
    _music_with_a_spike(make_audio, rec / "huge.wav", 48000, 3e38, at_seconds=2.5)  # resampled: overflows
    _music_with_a_spike(make_audio, rec / "dimmed.wav", 48000, -50.0, at_seconds=0.5)  # the rest scaled down 34 dB
    with caplog.at_level(logging.WARNING, logger="wavegen.prep"):
        manifest = prep([rec], tmp_path / "c")
    assert manifest["skipped"] == []
    files = {os.path.basename(f["path"]): f for f in manifest["files"]}
    spike = files["spike.wav"]
    assert spike["clipped"].startswith("1 sample above 18.1 dBFS and at least 34 dB above all the rest in the "
                                       "mono mix of its 2 channels, where a channel's 24.1 dBFS is 18.1 dBFS (at "
                                       "1.000 s: 5e+29) clipped to the rest's peak"), spike["clipped"]
    assert spike["kept_seconds"] > 3.5 and spike["gain_db"] == 0.0
    assert files["huge.wav"]["clipped"].startswith("1 sample above 24.1 dBFS and at least 40 dB above all the "
                                                   "rest (at 2.500 s: 3e+38)")
    assert files["dimmed.wav"]["clipped"].startswith("1 sample above 24.1 dBFS and at least 40 dB above all "
                                                     "the rest (at 0.500 s: -50)")
    assert files["dimmed.wav"]["gain_db"] == 0.0 and "instead of clipping" not in caplog.text
    said = [r.getMessage() for r in caplog.records if "clipped" in r.getMessage()]
    assert len(said) == 3 and all("a damaged sample, under" in line and "replace it in the file" in line
                                for line in said), said
    assert "t00.wav" in files and "clipped" not in files["t00.wav"]
    # the music kept: the corpus holds the melody's level, not a click and silence
    left = np.concatenate([np.load(tmp_path / "c" / f"{name}.npy") for name in ("train", "val", "test")])
    assert np.abs(left).max() > 0.3 * 32767 * np.abs(x[:, 1]).max()


def test_loud_float_audio_and_a_click_in_music_are_no_spikes():
    """Float audio hot above full scale throughout (scaled down, as before), or a click 20 dB over the music,
    is sound: only samples far above everything else are taken for damage."""
    from wavegen.spikes import find_spikes

    music = melody(2.0, SR, seed=1)
    assert find_spikes(4.0 * music) is None
    clicked = music.copy()
    clicked[100] = 10.0 * np.abs(music).max()
    assert find_spikes(clicked) is None
    clicked[200] = -1e9
    spikes = find_spikes(clicked)
    assert (spikes.count, spikes.first, spikes.value) == (1, 200, -1e9)
    assert spikes.rest_peak == np.float32(10.0 * np.abs(music).max())


def test_a_spike_in_one_channel_of_a_stereo_file_is_clipped_not_the_file_scaled(tmp_path, make_audio, make_tone):
    """A +26 dBFS sample (20.0) in one channel of quiet stereo music is +20 dBFS in the mono mix, under the
    +24 dBFS floor: the file was scaled down 20 dB as a hot one. A channel's sample above the floor lowers floor
    and ratio by the number of channels mixed: clipped, said, the music's level kept. What is said is the mix's,
    threshold and value alike: it said "above 24.1 dBFS" of a sample of 10 (+20 dBFS). A stereo file of silence and
    such a spike is skipped naming it so, not as channels that cancel in the mix (the spike was their peak)."""
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    x = np.stack([0.1 * melody(3.0, 44100, seed=1)] * 2, axis=1)
    x[44100, 1] = 20.0
    make_audio(rec / "stereo.wav", x, 44100, subtype="FLOAT")
    silence = np.zeros((3 * 44100, 2), np.float32)
    silence[22050, 0] = 1e30
    make_audio(rec / "silence.wav", silence, 44100, subtype="FLOAT")
    manifest = prep([rec], tmp_path / "c")
    files = {os.path.basename(f["path"]): f for f in manifest["files"]}
    entry = files["stereo.wav"]
    said = ("1 sample above 18.1 dBFS and at least 34 dB above all the rest in the mono mix of its 2 channels, "
            "where a channel's 24.1 dBFS is 18.1 dBFS (at 1.000 s: 10) clipped to the rest's peak")
    assert entry["gain_db"] == 0.0 and entry["clipped"].startswith(said), entry
    floor_db, value = float(re.search(r"above (\S+) dBFS", entry["clipped"])[1]), 10.0
    assert 20 * np.log10(value) > floor_db  # the value said is above the threshold said
    (skip,) = manifest["skipped"]
    assert skip["reason"] == ("its mono mix holds only silence and a spike of 5e+29 at 0.500 s (1 sample above 18.1 dBFS in "
                              "the mono mix of its 2 channels, where a channel's 24.1 dBFS is 18.1 dBFS: damaged float "
                              "audio); without it, silent: every sample is zero"), skip


def test_a_spike_over_channels_that_cancel_is_said_with_the_channels_not_as_silence(tmp_path, make_audio):
    """Four channels, a tone and its inverse in two, one sample of 40 in the third: skipped as "it holds only
    silence and a spike ...; without it, silent: every sample is zero", false of a file with a tone in two channels.
    The mix is what is silent; its channels without a spike cancel there, said (from the peaks the one decode saw)."""
    rec = tmp_path / "rec"
    rec.mkdir()
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(3 * SR) / SR)).astype(np.float32)
    x = np.zeros((3 * SR, 4), np.float32)
    x[:, 0], x[:, 1], x[SR, 2] = tone, -tone, 40.0
    make_audio(rec / "cancel.wav", x, SR, subtype="FLOAT")
    silence = np.zeros((3 * SR, 4), np.float32)
    silence[SR, 2] = 40.0
    make_audio(rec / "silence.wav", silence, SR, subtype="FLOAT")
    sf.write(rec / "music.wav", melody(2.0, SR, seed=2), SR)
    reasons = {os.path.basename(s["path"]): s["reason"] for s in prep([rec], tmp_path / "c")["skipped"]}
    assert reasons["cancel.wav"].startswith("its mono mix holds a spike of 10 at 1.000 s (1 sample above 12.0 "
                                            "dBFS in the mono mix of its 4 channels"), reasons
    assert reasons["cancel.wav"].endswith(
        "and, without it, its channels cancel in the mono mix (out of phase: they peak at -10.5 dBFS, the mix at -inf "
        "dBFS: mix it to mono yourself, one channel alone, say); the mix: silent: every sample is zero"), reasons
    assert reasons["silence.wav"].startswith("its mono mix holds only silence and a spike of 10"), reasons
    assert "cancel" not in reasons["silence.wav"]


def test_in_a_mix_of_many_channels_sound_is_no_spike():
    """With 100 channels or more the ratio a spike in one of them has over the mix, 40 dB less 20 log10(channels),
    fell to 0 dB or less: in a 128-channel tone with 20.0 in one channel, 31 samples of the tone were clipped as
    spikes. The ratio is never under SPIKE_MIN_DB: the tone is kept; a spike far over it is still one."""
    from wavegen.spikes import Spikes, find_spikes

    t = np.arange(2 * SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.random.default_rng(1).standard_normal(len(t)))
    x = np.repeat(tone.astype(np.float32)[:, None], 128, 1)
    x[SR // 2, 0] = 20.0
    assert find_spikes(x.mean(axis=1), 128) is None
    x[SR // 2, 0] = 1e30
    spikes = find_spikes(x.mean(axis=1), 128)
    assert (spikes.count, spikes.first) == (1, SR // 2) and spikes.above_db == 20.0  # spikes.SPIKE_MIN_DB
    assert Spikes(1, 0, 1.0, 0.0, 2).above_db == 40.0 - 20 * np.log10(2)  # two channels: as before


def test_digital_clicks_a_little_over_full_scale_are_sound_scaled_down_not_clipped(tmp_path, make_tone):
    """Single-sample clicks at 1.5 over quiet noise (-70 dBFS) are 40 dB above the rest, yet plausible audio: they
    were clipped into the noise, the corpus keeping only noise. Only samples above +24 dBFS (16.0) are damage:
    the file is scaled down as any hot float file is, its clicks kept."""
    rate = 22050
    rng = np.random.default_rng(5)
    x = (10 ** (-70 / 20) * rng.uniform(-1, 1, 30 * rate)).astype(np.float32)
    x[np.arange(60) * rate // 2 + 1000] = 1.5
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    sf.write(rec / "clicks.wav", x, rate, subtype="FLOAT")
    files = {os.path.basename(f["path"]): f for f in prep([rec], tmp_path / "c", sample_rate=rate)["files"]}
    assert "clipped" not in files["clicks.wav"] and files["clicks.wav"]["gain_db"] < -3.0, files["clicks.wav"]
    left = np.concatenate([np.load(tmp_path / "c" / f"{name}.npy") for name in ("train", "val", "test")])
    assert np.abs(left).max() > 0.9 * 32767  # the clicks, at full scale (was: the noise alone, -56 dBFS)


def test_a_hot_file_is_decoded_once(tmp_path, make_audio, monkeypatch):
    """A float file a little above full scale (a hot master, an MP3's decode overshooting) was decoded a second
    time at its own rate to look for spikes (a 10-minute MP3 took twice as long); only a file whose own peak is
    above +24 dBFS is."""
    from wavegen import prep_decode

    calls = []
    real = prep_decode.decode_mono
    monkeypatch.setattr(prep_decode, "decode_mono", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    rec = tmp_path / "rec"
    rec.mkdir()
    music = melody(4.0, 44100, seed=2)
    make_audio(rec / "hot.wav", (1.3 / np.abs(music).max()) * music[:, None], 44100, subtype="FLOAT")
    files = prep([rec], tmp_path / "c", sample_rate=SR)["files"]
    assert files[0]["gain_db"] < -1.0 and "clipped" not in files[0]
    assert [p.name for p in calls] == ["hot.wav"]


def _ogg(subtype, rate, seconds=15.0):
    buffer = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, format="OGG", subtype=subtype)
    return buffer.getvalue()


def test_an_ogg_file_cut_inside_its_last_page_is_said_to_be_cut_short(tmp_path, make_tone):
    """An Opus or Vorbis file cut a few bytes short (inside its last page) was kept as whole: libsndfile decodes it
    to the end of the last whole page and says only "Junk after the last page". Its pages are walked now:
    "partial", with the page's declared and present sizes, as a WAV or FLAC cut short is."""
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    for name, subtype, rate in (("cut.opus", "OPUS", 48000), ("cut.ogg", "VORBIS", SR)):
        whole = _ogg(subtype, rate)
        (rec / name.replace("cut", "whole")).write_bytes(whole)
        (rec / name).write_bytes(whole[:-10])
        last_page = len(whole) - whole.rindex(b"OggS")
        assert decode_mono(rec / name).damage == (f"cut short: its last Ogg page declares {last_page} bytes, "
                                                  f"the file holds {last_page - 10}")
    (rec / "header.opus").write_bytes(whole[: whole.rindex(b"OggS") + 5])  # cut in the last page's header
    assert decode_mono(rec / "header.opus").damage.startswith("cut short: ")
    files = {os.path.basename(f["path"]): f for f in prep([rec], tmp_path / "c")["files"]}
    assert files["cut.opus"]["partial"] and files["cut.ogg"]["partial"]
    assert not files["whole.opus"]["partial"] and not files["whole.ogg"]["partial"]
    assert files["cut.opus"]["kept_seconds"] < files["whole.opus"]["kept_seconds"]


def test_a_file_named_with_a_newline_is_named_on_one_line(tmp_path, make_tone, caplog):
    """A file whose name holds a newline split prep's skip line in two, its second half looking like a line of
    its own. Every prep line writes a name's control characters as repr does."""
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    sf.write(rec / "bad\nname\x1b[31m.wav", np.zeros(SR, np.float32), SR)
    with caplog.at_level(logging.WARNING, logger="wavegen.prep"):
        manifest = prep([rec], tmp_path / "c")
    assert manifest["skipped"][0]["path"] == str(rec / "bad\nname\x1b[31m.wav")  # the manifest keeps the real name
    (line,) = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert line == f"skipping {rec}/bad\\nname\\x1b[31m.wav: silent: every sample is zero"


def test_an_input_named_with_a_newline_is_named_on_one_line_in_prep_errors(tmp_path):
    import pytest

    from wavegen.corpus import CorpusError

    with pytest.raises(CorpusError, match=r"^input not found: .*/no\\nsuch$"):
        prep([tmp_path / "no\nsuch"], tmp_path / "c")
    (tmp_path / "empty\tfolder").mkdir()
    with pytest.raises(CorpusError, match=r"found in: .*/empty\\tfolder$"):
        prep([tmp_path / "empty\tfolder"], tmp_path / "c")
