"""wavegen.audio_decode: audio files decoded into samples, damaged ones as far as they decode."""

import os

import numpy as np
import pytest
import soundfile as sf
from test_audio import peak_hz

from wavegen.audio import int16_to_float, resample, to_mono
from wavegen.audio_decode import (AudioError, damage_in_log, decode_audio, decode_mono, frames_held, load_mono,
                                  read_audio)


def test_read_audio_stereo_values(tmp_path, make_audio):
    rng = np.random.default_rng(2)
    x = rng.uniform(-0.9, 0.9, size=(500, 2)).astype(np.float32)
    path = make_audio(tmp_path / "s.wav", x, 22050, subtype="FLOAT")
    y, sr = read_audio(path)
    assert sr == 22050 and y.dtype == np.float32 and y.shape == (500, 2)
    np.testing.assert_array_equal(y, x)
    mono_path = make_audio(tmp_path / "m.flac", x[:, 0], 8000)
    y, sr = read_audio(mono_path)
    assert y.shape == (500, 1) and sr == 8000
    np.testing.assert_allclose(y[:, 0], x[:, 0], atol=1 / 32768)


def test_read_audio_errors_name_the_file(tmp_path):
    bad = tmp_path / "x.wav"
    bad.write_bytes(np.random.default_rng(3).bytes(4000))
    with pytest.raises(AudioError, match="x.wav") as info:
        read_audio(bad)
    assert info.value.path == str(bad) and "decode" in info.value.reason
    with pytest.raises(AudioError, match="missing.flac.*no such file"):
        read_audio(tmp_path / "missing.flac")


def test_load_mono_mixes_and_resamples(tmp_path, make_audio):
    sr = 44100
    t = np.arange(sr) / sr
    left = 0.6 * np.sin(2 * np.pi * 440 * t)
    right = 0.2 * np.sin(2 * np.pi * 440 * t)
    path = make_audio(tmp_path / "st.wav", np.stack([left, right], 1), sr, subtype="FLOAT")
    y = load_mono(path, 16000)
    assert y.dtype == np.float32 and abs(len(y) - 16000) <= 1
    assert abs(peak_hz(y, 16000) - 440) < 1.5
    assert abs(np.abs(y[500:-500]).max() - 0.4) < 0.01  # mean of 0.6 and 0.2


@pytest.mark.parametrize("suffix", ["wav", "flac"])
def test_pcm16_reads_as_int_over_32768_and_floats_keep_values_above_full_scale(tmp_path, suffix):
    rng = np.random.default_rng(4)
    pcm = rng.integers(-32768, 32768, size=(1000, 2), dtype=np.int16)
    sf.write(str(tmp_path / f"pcm.{suffix}"), pcm, 16000, subtype="PCM_16")
    y, sr = read_audio(tmp_path / f"pcm.{suffix}")
    assert sr == 16000 and y.shape == (1000, 2)
    np.testing.assert_array_equal(y, int16_to_float(pcm))
    loud = rng.uniform(-50, 50, size=(300, 1)).astype(np.float32)  # +34 dB: prep scales, not the decoder
    sf.write(str(tmp_path / "loud.wav"), loud, 8000, subtype="FLOAT")
    decoded = decode_audio(tmp_path / "loud.wav")
    assert decoded.damage is None and decoded.sample_rate == 8000
    np.testing.assert_array_equal(decoded.samples, loud)


def test_an_mp3_decodes_whole_without_gaps(tmp_path):
    """libsndfile's MPEG decoder, read in blocks, put runs of zeros at the start of every block
    after the first (10% of a 10 s tone): the file must decode as the tone, every block of it."""
    sr, seconds = 44100, 10
    t = np.arange(sr * seconds) / sr
    path = tmp_path / "tone.mp3"
    sf.write(str(path), 0.5 * np.sin(2 * np.pi * 310 * t), sr, format="MP3")
    decoded = decode_audio(path)
    y = decoded.samples[:, 0]
    assert decoded.damage is None and len(y) == sr * seconds
    # 0.1 s windows past the encoder's start: each one the tone at its level (a gap is near silence)
    windows = y[sr // 10:].reshape(-1, sr // 10)
    rms = np.sqrt((windows.astype(np.float64) ** 2).mean(axis=1))
    assert rms.min() > 0.34 and rms.max() < 0.37  # 0.5 / sqrt(2) = 0.354
    assert int((y[sr // 10:] == 0).sum()) < 10


def test_a_file_whose_name_is_not_utf8_decodes(tmp_path):
    x = (0.25 * np.sin(np.arange(16000) / 16000 * 2 * np.pi * 220)).astype(np.float32)
    sf.write(str(tmp_path / "plain.wav"), x, 16000, subtype="FLOAT")
    os.rename(os.fsencode(tmp_path / "plain.wav"), os.fsencode(tmp_path) + b"/Bj\xf6rk - J\xf3ga.wav")
    (path,) = tmp_path.iterdir()  # the name as Python sees it: surrogate escapes for the Latin-1 bytes
    y, sr = read_audio(path)
    assert sr == 16000
    np.testing.assert_array_equal(y[:, 0], x)


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"),
                                         ("MP3", "MPEG_LAYER_III")])
def test_a_file_cut_short_decodes_in_part_and_says_so(tmp_path, fmt, subtype, caplog):
    rng = np.random.default_rng(5)
    x = (0.3 * rng.standard_normal((3 * 16000, 1))).astype(np.float32)
    whole = tmp_path / f"whole.{fmt.lower()}"
    sf.write(str(whole), x, 16000, format=fmt, subtype=subtype)
    full = decode_audio(whole)
    assert full.damage is None and full.samples.shape == (48000, 1)
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    part = decode_audio(cut)
    assert part.damage.startswith("cut short") and 0.8 * 16000 < len(part.samples) < 0.65 * 48000
    np.testing.assert_array_equal(part.samples, full.samples[: len(part.samples)])  # a prefix, exactly
    with caplog.at_level("WARNING"):
        y, _ = read_audio(cut)
    assert len(y) == len(part.samples) and f"{cut}: cut short" in caplog.text
    headers_only = tmp_path / f"headers.{fmt.lower()}"
    headers_only.write_bytes(whole.read_bytes()[:40])
    with pytest.raises(AudioError, match="headers.*cannot decode"):
        decode_audio(headers_only)


def test_an_mp3_with_junk_in_the_middle_keeps_what_decodes_before_it(tmp_path):
    """An MP3 is read in one call; when mpg123 gave up at a damaged stretch, the whole file was lost
    ("cut short: decoding stops at 0.00 s"), though the audio before the damage had decoded."""
    sr = 48000
    x = 0.3 * np.sin(np.arange(3 * sr) * 0.05)
    whole = tmp_path / "whole.mp3"
    sf.write(str(whole), x, sr, format="MP3")
    data = whole.read_bytes()
    damaged = tmp_path / "damaged.mp3"
    damaged.write_bytes(data[: len(data) // 3] + np.random.default_rng(0).bytes(5000) + data[len(data) // 3:])
    part = decode_audio(damaged)
    assert part.damage.startswith("cut short: decoding stops at") and "the decoder said: " in part.damage
    assert 0.5 * sr < len(part.samples) < 1.1 * sr  # the first third, about
    np.testing.assert_array_equal(part.samples, decode_audio(whole).samples[: len(part.samples)])


def test_a_file_named_au_without_an_au_header_is_not_decoded_as_noise(tmp_path):
    """libsndfile opens any .au lacking the ".snd" magic as headerless 8 kHz u-law: a text file or a saved
    error page named .au went into the corpus as seconds of noise."""
    real = tmp_path / "real.au"
    x = (0.25 * np.sin(np.arange(8000) / 8000 * 2 * np.pi * 220)).astype(np.float32)
    sf.write(str(real), x, 8000, subtype="PCM_16")
    assert decode_audio(real).samples.shape == (8000, 1)
    fake = tmp_path / "fake.au"
    fake.write_bytes(b"<html><body>404 Not Found</body></html>\n" * 200)
    with pytest.raises(AudioError, match=r"fake\.au: cannot decode audio \(no audio header"):
        decode_audio(fake)


def _stereo_music(seconds, rate, channels=2, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = np.stack([0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.05 * rng.standard_normal(len(t))
                  for c in range(channels)], axis=1)
    return x.astype(np.float32)


@pytest.mark.parametrize("fmt,subtype,rate,channels", [("WAV", "PCM_16", 48000, 2), ("FLAC", "PCM_24", 44100, 3),
                                                       ("OGG", "VORBIS", 22050, 2), ("WAV", "FLOAT", 16000, 1),
                                                       ("MP3", "MPEG_LAYER_III", 44100, 2)])
@pytest.mark.parametrize("cut", [False, True])
def test_decode_mono_gives_the_samples_of_the_whole_file_mixed_and_resampled(tmp_path, fmt, subtype, rate,
                                                                               channels, cut):
    """decode_mono reads in blocks (mixed and resampled as they come): the samples, damage and loudest
    channel are exactly those of the whole file decoded, mixed to mono and resampled at once (prep's corpus
    bytes unchanged), a file cut short included."""
    path = tmp_path / f"x.{fmt.lower()}"
    x = _stereo_music(3.3, rate, channels)  # many decoding blocks
    x[:, 0] *= 1.5  # the first channel the loudest
    sf.write(str(path), x, rate, format=fmt, subtype=subtype)
    if cut:
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.7)])
    whole = decode_audio(path)
    assert (whole.damage is not None) == cut
    for out_rate in (16000, 8000, None):
        got = decode_mono(path, out_rate)
        want = resample(to_mono(whole.samples), whole.sample_rate, out_rate or whole.sample_rate)
        assert got.samples.dtype == np.float32 and len(got.samples) > 0.5 * len(want)
        np.testing.assert_array_equal(got.samples, want)
        assert (got.sample_rate_in, got.frames, got.channels, got.damage) == \
               (whole.sample_rate, len(whole.samples), channels, whole.damage)
        loudest = float(np.abs(whole.samples).max()) if channels > 1 else None
        assert got.loudest_channel == loudest


def test_decode_mono_holds_the_mono_result_not_the_files_channels(tmp_path):
    """A file was decoded whole, [frames, channels] float32 at its own rate, then mixed and resampled: a
    2-hour 48 kHz stereo recording needed GBs (over 3x its 16 kHz mono). numpy's arrays are traced by
    tracemalloc: the peak is measured, not guessed."""
    import tracemalloc

    path, rate, seconds, channels = tmp_path / "long.wav", 48000, 20, 6
    with sf.SoundFile(str(path), "w", rate, channels, subtype="PCM_16") as f:
        for _ in range(seconds):
            f.write(_stereo_music(1.0, rate, channels))
    whole_bytes = seconds * rate * channels * 4
    mono_bytes = seconds * 16000 * 4
    tracemalloc.start()
    try:
        y = decode_mono(path, 16000).samples
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(y) == seconds * 16000
    assert peak < 2 * mono_bytes < whole_bytes / 4, (peak, mono_bytes, whole_bytes)  # whole: over 18x the mono


def test_damage_in_log_names_a_chunk_cut_short(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(str(path), np.zeros(16000, np.float32), 16000, subtype="PCM_16")
    assert damage_in_log(sf.info(str(path)).extra_info) is None
    path.write_bytes(path.read_bytes()[:20000])
    assert damage_in_log(sf.info(str(path)).extra_info) == "its RIFF chunk declares 32036 bytes, the file holds 19992"


def lying_flac(path, make_tone, seconds=2.0, sample_rate=16000):
    """A real FLAC whose STREAMINFO declares 2**36 - 1 frames (its largest), as a damaged header may: libsndfile
    takes that number as the file's length."""
    make_tone(path, seconds, sample_rate, 300, format="FLAC", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    total = int.from_bytes(data[8 + 13 : 8 + 18], "big") | (2**36 - 1)  # its 36 low bits: the total frames
    data[8 + 13 : 8 + 18] = total.to_bytes(5, "big")
    path.write_bytes(bytes(data))
    assert sf.info(str(path)).frames == 2**36 - 1
    return path


def test_the_frames_a_file_holds_are_bounded_by_its_size():
    assert frames_held(10**9, 44 + 32000, "WAV", "PCM_16", 2) == (44 + 32000) // 4 + 1  # 4 bytes a frame
    assert frames_held(100, 44 + 32000, "WAV", "PCM_16", 2) == 100  # a header that says less is believed
    assert frames_held(2**36 - 1, 15_000, "FLAC", "PCM_16", 1) == int(15_000 * 65535 / 9) + 1  # compressed
    assert frames_held(10**12, 5000, "MPEG", "MPEG_LAYER_III", 2) == int(5000 * 1152 / 4) + 1
    assert frames_held(10**12, 5000, "CAF", "ALAC_16", 2) == 10**12  # no bound known: the header's


def test_a_flac_whose_header_declares_more_frames_than_it_holds_keeps_what_decodes(tmp_path, make_tone):
    """Its header's 2**36 frames asked 256 GiB of room up front: the file was skipped as "too long to decode in
    memory" (and tried again by every prep). The room made is what its size can hold; the audio decodes."""
    path = lying_flac(tmp_path / "lie.flac", make_tone)
    decoded = decode_mono(path, 16000)
    assert decoded.damage is not None and decoded.damage.startswith("cut short")
    assert 16000 <= decoded.frames <= 32000 and len(decoded.samples) == decoded.frames
    make_tone(tmp_path / "whole.flac", 2.0, 16000, 300, format="FLAC", subtype="PCM_16")
    whole = decode_mono(tmp_path / "whole.flac", 16000)
    np.testing.assert_array_equal(decoded.samples, whole.samples[: decoded.frames])


def test_a_flac_with_a_bad_frame_keeps_the_audio_up_to_that_frame(tmp_path, make_audio):
    """libsndfile cannot seek a FLAC back once a read met a bad frame: the block read before it (1.02 s at
    16 kHz) was all that was kept. It is opened afresh there, and read on in small blocks up to the damage."""
    from conftest import melody

    x = melody(4.0, 16000, seed=3)
    path = make_audio(tmp_path / "bad.flac", x, 16000, format="FLAC", subtype="PCM_16")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # about 2 s in
    data[middle : middle + 200] = np.random.default_rng(1).integers(0, 256, 200, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    for decoded in (decode_mono(path), decode_audio(path)):
        assert decoded.damage.startswith("cut short: decoding stops at"), decoded.damage
        kept = decoded.samples.reshape(len(decoded.samples), -1)[:, 0]
        assert 1.5 * 16000 < len(kept) < 2.5 * 16000
        np.testing.assert_allclose(kept, x[: len(kept)], atol=1 / 32768)


@pytest.mark.parametrize("channels, said", [(1, "of 1 channel, "), (2, "of 2 channels, ")])
def test_a_file_too_long_for_memory_counts_its_channels_with_their_noun_agreeing(tmp_path, channels, said):
    """The memory refusal of a file: "1 channel" (was "1 channel(s)")."""
    from types import SimpleNamespace

    from wavegen.audio_decode import AudioMemoryError, _room

    f = SimpleNamespace(frames=2**48, samplerate=16000, channels=channels)
    with pytest.raises(AudioMemoryError) as err:
        _room(tmp_path / "long.wav", f, (2**48, channels), "as read")  # petabytes: no machine holds them
    assert f"its header declares {2**48 / 16000 / 3600:,.1f} h {said}" in str(err.value), err.value


@pytest.mark.parametrize("tail, said", [(b"O", "1 byte of it"), (b"Og", "2 bytes of it")])
def test_an_ogg_page_cut_short_in_its_header_counts_its_bytes_with_their_noun_agreeing(tmp_path, tail, said):
    """A whole last page and then the start of another: "1 byte of it" (was "1 byte(s)")."""
    from wavegen.audio_ogg import ogg_end_damage

    page = b"OggS" + bytes([0, 4]) + bytes(20) + bytes([1, 0])  # the end-of-stream flag, one empty lacing value
    (tmp_path / "cut.ogg").write_bytes(page + tail)
    assert ogg_end_damage(str(tmp_path / "cut.ogg")) == f"its last Ogg page is cut short in its header: {said}"
