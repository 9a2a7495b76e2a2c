"""wavegen.split: silence detection, and where a file cut in time is cut (the rest of the train/val/test
assignment is tested through prep)."""

import numpy as np

from wavegen.split import FRAME_LENGTH, HOP_LENGTH, SILENCE_FLOOR, frame_levels, split_on_silence

SR = 16000


def gapped_signal():
    """0.5 s silence, 1.5 s tone, 0.2 s rest, 1.0 s tone, 2.0 s near-silence, 1.5 s tone, 0.7 s."""
    rng = np.random.default_rng(0)
    t = lambda s, f: 0.5 * np.sin(2 * np.pi * f * np.arange(int(s * SR)) / SR)
    z = lambda s: np.zeros(int(s * SR))
    hiss = 1e-4 * rng.standard_normal(2 * SR)  # -70 dB: silence to a 40 dB gate
    parts = [z(0.5), t(1.5, 300), z(0.2), t(1.0, 500), hiss, t(1.5, 400), z(0.7)]
    return np.concatenate(parts).astype(np.float32)


def test_split_on_silence_trims_and_splits_on_long_gaps():
    x = gapped_signal()
    seg = split_on_silence(x, SR, top_db=40, min_silence_seconds=1.0, min_segment_seconds=0.5)
    assert seg.dtype == np.int64 and seg.shape == (2, 2)
    # true sound: [0.5 s, 3.2 s) with the 0.2 s rest kept inside, and [5.2 s, 6.7 s)
    true = np.array([[0.5, 3.2], [5.2, 6.7]]) * SR
    assert np.all(seg[:, 0] <= true[:, 0]) and np.all(seg[:, 0] >= true[:, 0] - FRAME_LENGTH)
    assert np.all(seg[:, 1] >= true[:, 1]) and np.all(seg[:, 1] <= true[:, 1] + FRAME_LENGTH)


def test_split_on_silence_short_pieces_and_silent_input():
    x = np.zeros(4 * SR, np.float32)
    x[SR : SR + int(0.3 * SR)] = 0.5  # a 0.3 s blip, alone
    x[int(2.5 * SR) : int(3.5 * SR)] = 0.5
    seg = split_on_silence(x, SR, min_segment_seconds=0.5)
    assert len(seg) == 1 and abs(seg[0, 0] - 2.5 * SR) <= FRAME_LENGTH
    assert len(split_on_silence(x, SR, min_segment_seconds=0.1)) == 2
    assert split_on_silence(np.zeros(SR, np.float32), SR).shape == (0, 2)
    assert split_on_silence(np.zeros(0, np.float32), SR).shape == (0, 2)


def test_a_dc_offset_is_not_sound():
    x = gapped_signal()
    plain = split_on_silence(x, SR)
    for dc in (0.005, -0.02, 0.3):  # the gaps sit at the offset: silent, as at zero
        np.testing.assert_array_equal(split_on_silence(x + np.float32(dc), SR), plain)
        np.testing.assert_array_equal(split_on_silence(x + np.float32(dc), SR, top_db=60), plain)
    assert split_on_silence(np.full(2 * SR, 0.3, np.float32), SR).shape == (0, 2)  # a constant: silent
    assert frame_levels(np.full(2 * SR, 0.3, np.float32)).max() < SILENCE_FLOOR


def rms_about_zero(x):
    """The plain frame RMS, frame by frame: what a file without an offset is measured by."""
    return np.array([np.sqrt(np.mean(x[i : i + FRAME_LENGTH].astype(np.float64) ** 2))
                     for i in range(0, len(x), HOP_LENGTH)])


def test_files_without_an_offset_are_measured_about_zero():
    # low notes cut mid-period, around digital silence: the file's mean is not zero, and a 64 ms
    # frame holds under two periods of 30 Hz (a frame's own mean is not zero either)
    t = lambda s, f: (0.5 * np.sin(2 * np.pi * f * np.arange(int(s * SR)) / SR)).astype(np.float32)
    x = np.concatenate([np.zeros(SR // 2, np.float32), t(0.71, 30), np.zeros(2 * SR, np.float32), t(1.37, 41),
                        np.zeros(SR // 3, np.float32)])
    assert abs(x.mean()) > 5e-4  # over a 60 dB gate: silence measured about the mean would be sound
    np.testing.assert_allclose(frame_levels(x), rms_about_zero(x), rtol=1e-9, atol=1e-12)
    seg = split_on_silence(x, SR, top_db=60)  # the silences stay silent at any gate
    assert len(seg) == 2 and abs(seg[0, 0] - SR // 2) <= FRAME_LENGTH


def test_sound_under_half_a_16_bit_step_is_silence():
    t = np.arange(3 * SR) / SR
    quiet = (1e-6 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # -120 dBFS: int16 zeros
    assert split_on_silence(quiet, SR).shape == (0, 2)
    assert split_on_silence(quiet, SR, top_db=200).shape == (0, 2)
    assert split_on_silence(100 * quiet, SR).shape == (1, 2)  # -80 dBFS: a few 16-bit steps, sound


def test_a_held_file_cut_in_time_keeps_its_recorded_cut_when_its_segments_change():
    """A file cut in time records its cuts in its own time (seconds), and a re-prep whose silence trimming kept
    other stretches of it (another --top-db) cuts it there again: each moment of the file stays in its split (the
    cut was at fractions of the new kept length, moving earlier val audio into train)."""
    from wavegen.split import assign_splits, earlier_splits

    rate = 1000
    entry = {"path": "/r/a.wav", "sha256": "a", "label": None, "split": None}
    files = [dict(entry)]
    assign_splits(files, [[10000]], 0.2, 0.2, 0, seg_starts=[[0]], sample_rate=rate)
    assert files[0]["split"] == "time" and files[0]["time_cuts_seconds"] == [6.0, 8.0]
    earlier = earlier_splits({"files": files})
    again = [dict(entry)]  # 3 s to 5 s trimmed now, and the last second: kept [0, 3) and [5, 9)
    pieces, _, _ = assign_splits(again, [[3000, 4000]], 0.2, 0.2, 0, earlier, seg_starts=[[0, 5000]], sample_rate=rate)
    assert pieces == {"train": [(0, 0, 3000), (0, 3000, 1000)], "val": [(0, 4000, 2000)], "test": [(0, 6000, 1000)]}
    assert again[0]["time_cuts_seconds"] == [6.0, 8.0]
    fresh = [dict(entry)]  # a cut that falls between two segments is recorded at the earlier one's end
    assign_splits(fresh, [[3000, 2000]], 0.0, 0.4, 0, seg_starts=[[0, 7000]], sample_rate=rate)
    assert fresh[0]["time_cuts_seconds"] == [3.0, 3.0]


def test_empty_holdouts_are_said_with_their_verb_agreeing(caplog):
    """One empty split "holds" no audio, two "hold" none (was "hold(s)")."""
    import logging

    from wavegen.split import _say_empty_holdouts

    with caplog.at_level(logging.WARNING, logger="wavegen"):
        _say_empty_holdouts("a", ["file"], 0.0, 0.1)
    assert "label 'a': test now holds no audio: no file held there" in caplog.text, caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        _say_empty_holdouts("", ["file"], 0.1, 0.1)
    assert "the corpus: val and test now hold no audio: no file held there" in caplog.text, caplog.text
