"""wavegen.analysis_audio: only the excerpts the analysis judges are read; a render that cannot be
judged is skipped, named with why, and the others are judged."""

import re
import shutil
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
from conftest import melody, prepared_corpus, write_audio_file

from wavegen.analysis import AnalysisError, excerpts_of
from wavegen.analysis_audio import read_renders, split_excerpts
from wavegen.audio import int16_to_float
from wavegen.audio_decode import load_mono
from wavegen.corpus import Corpus

RATE = 8000


def peak_bytes(work):
    """(work()'s result, the most memory numpy and Python held at once while it ran, in bytes)."""
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_undecodable_render_is_skipped_with_why_and_the_others_are_judged(tmp_path):
    """One file of text named .wav and one WAV cut inside its header no longer stop the analysis of the
    rest: each is skipped, named with libsndfile's reason; only a folder of nothing readable is refused."""
    folder = tmp_path / "renders"
    write_audio_file(folder / "good.wav", melody(3.0, RATE, seed=1), RATE)
    (folder / "notes.wav").write_text("this is not audio\n")
    (folder / "cut.wav").write_bytes((folder / "good.wav").read_bytes()[:30])
    renders = read_renders(folder, RATE, 10.0)
    assert renders.names == ["good.wav"] and len(renders.excerpts) == 1
    assert [s["file"] for s in renders.skipped] == ["cut.wav", "notes.wav"]
    assert all(s["reason"].startswith("cannot decode audio (") for s in renders.skipped), renders.skipped
    (folder / "good.wav").unlink()
    with pytest.raises(AnalysisError, match=r"renders: no audio file can be analysed \(cut.wav: cannot decode "
                                            r"audio .*; notes.wav: cannot decode audio"):
        read_renders(folder, RATE, 10.0)


def test_a_long_render_is_read_only_where_its_excerpts_lie(tmp_path):
    """10 minutes judged on 20 s: the two excerpts read (the same samples as cutting the whole file),
    not the whole file (19 MB as float32; it was decoded whole before)."""
    x = (0.1 * np.random.default_rng(0).standard_normal(600 * RATE)).astype(np.float32)
    sf.write(tmp_path / "long.wav", x, RATE, subtype="FLOAT")
    renders, peak = peak_bytes(lambda: read_renders(tmp_path, RATE, 20.0))
    expected = excerpts_of([x], RATE, 20.0)
    assert [len(e) for e in renders.excerpts] == [10 * RATE, 10 * RATE]
    for got, want in zip(renders.excerpts, expected):
        np.testing.assert_array_equal(got, want)
    assert peak < 0.25 * x.nbytes, f"{peak / 1e6:.1f} MB held to read 20 s of a {x.nbytes / 1e6:.1f} MB render"


def test_a_render_of_another_rate_and_channels_is_read_by_excerpt_like_it_is_whole(tmp_path):
    """A stereo 22.05 kHz render judged at 8 kHz: each excerpt is read with a margin and resampled alone,
    matching the whole file mixed and resampled (read from a sample on its output grid), for a fraction of
    its memory."""
    rate = 22050
    x = np.stack([melody(120.0, rate, seed=2), melody(120.0, rate, seed=3)], 1)
    sf.write(tmp_path / "stereo.wav", x, rate, subtype="FLOAT")
    renders, peak = peak_bytes(lambda: read_renders(tmp_path, RATE, 20.0))
    expected = excerpts_of([load_mono(tmp_path / "stereo.wav", RATE)], RATE, 20.0)
    assert [len(e) for e in renders.excerpts] == [len(e) for e in expected] == [10 * RATE, 10 * RATE]
    for got, want in zip(renders.excerpts, expected):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert peak < 0.5 * x.astype(np.float32).nbytes


def test_a_render_cut_short_past_its_header_is_judged_on_what_decodes(tmp_path, caplog):
    """A FLAC whose header promises 40 s and holds ~20: the excerpt past its end cannot be read, so it is
    decoded whole (warning naming it) and the excerpts planned again over what there is."""
    x = (0.2 * np.random.default_rng(1).standard_normal(40 * RATE)).astype(np.float32)
    sf.write(tmp_path / "whole.flac", x, RATE)
    data = (tmp_path / "whole.flac").read_bytes()
    (tmp_path / "whole.flac").unlink()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    with caplog.at_level("WARNING"):
        renders = read_renders(tmp_path, RATE, 40.0)
    assert "cut.flac: cut short" in caplog.text
    assert renders.names == ["cut.flac"] and renders.skipped == []
    seconds = sum(map(len, renders.excerpts)) / RATE
    assert 15.0 < seconds < 25.0
    np.testing.assert_allclose(renders.excerpts[0], x[: 10 * RATE], atol=1e-4)


def test_a_corpus_split_gives_the_excerpts_of_its_segments(tmp_path):
    corpus = Corpus(prepared_corpus(tmp_path, files=4, seconds=6.0, sample_rate=RATE, val_fraction=0.25,
                                    test_fraction=0.25))
    audio = corpus.split("train")
    whole = [int16_to_float(np.asarray(audio[s: s + n])) for s, n, _ in corpus.segments("train")]
    for cap in (3.0, 7.0, None):
        got = split_excerpts(corpus, "train", cap)
        want = excerpts_of(whole, RATE, cap) if cap is not None else excerpts_of(whole, RATE, 1e9)
        assert len(got) == len(want) > 0
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_a_float_render_far_beyond_full_scale_is_skipped_with_why_not_a_librosa_traceback(tmp_path):
    """A float WAV may hold finite samples of 1e20: their spectra overflow float32, and librosa's
    "Input must be finite" came out of wavegen eval --renders as a traceback. Such a file is skipped
    like one holding NaN; a float render that merely clips (4x full scale) is still judged."""
    pytest.importorskip("librosa")
    from wavegen.analysis import compare_renders

    corpus = prepared_corpus(tmp_path, files=4, seconds=2.0, sample_rate=RATE, val_fraction=0.25, test_fraction=0.25)
    renders = tmp_path / "renders"
    write_audio_file(renders / "huge.wav", melody(1.0, RATE, seed=1) * 1e20, RATE, subtype="FLOAT")
    write_audio_file(renders / "loud.wav", melody(1.0, RATE, seed=2) * 10, RATE, subtype="FLOAT")
    result = compare_renders(renders, corpus, max_seconds=10.0)
    assert result["render_files"] == ["loud.wav"]
    [skipped] = result["skipped_files"]
    assert skipped["file"] == "huge.wav" and skipped["reason"].startswith("samples up to 4")
    assert skipped["reason"].endswith("times full scale (audio is -1..1; over 1000 is not audio to judge)")


def test_an_archives_newest_part_still_being_written_is_said_as_such(tmp_path):
    """A live stream's newest part holds a fraction of a second after it begins: it was skipped as "shorter than
    0.25 s", as if the render were cut short. It is named for what it is; a short file elsewhere keeps its word."""
    archive = tmp_path / "archive"
    write_audio_file(archive / "broadcast_00000.wav", melody(1.0, RATE, seed=1), RATE)
    write_audio_file(archive / "broadcast_00001.wav", melody(0.1, RATE, seed=2), RATE)
    write_audio_file(archive / "broadcast_00002.wav", np.zeros(0, np.float32), RATE)  # its header alone so far
    (archive / ".state").mkdir()
    (archive / ".state" / "params.json").write_text('{"model_folder": "/models/m"}')
    renders = read_renders(archive, RATE, 10.0)
    assert renders.names == ["broadcast_00000.wav"]
    reasons = {s["file"]: s["reason"] for s in renders.skipped}
    assert reasons["broadcast_00002.wav"] == ("the archive's newest part, still being written (0.000 s so far; "
                                              "the analysis needs 0.25 s)")
    assert reasons["broadcast_00001.wav"] == "shorter than the 0.25 s the analysis needs (0.100 s)"
    (archive / "broadcast_00002.wav").unlink()
    shutil.rmtree(archive / ".state")  # parts copied out of the archive: finished files, one of them short
    assert read_renders(archive, RATE, 10.0).skipped == [
        {"file": "broadcast_00001.wav", "reason": "shorter than the 0.25 s the analysis needs (0.100 s)"}]


def test_an_empty_test_split_names_the_corpus_and_the_fix(tmp_path):
    """A corpus prepared with --test-fraction 0 got "no audio to compare with" alone: the error says why and
    what to give (--split val, where it holds audio, or the corpus prepared again)."""
    from wavegen.analysis import compare_renders

    corpus = prepared_corpus(tmp_path, files=3, seconds=2.0, sample_rate=RATE, val_fraction=0.34, test_fraction=0.0)
    write_audio_file(tmp_path / "renders" / "a.wav", melody(1.0, RATE), RATE)
    with pytest.raises(AnalysisError) as err:
        compare_renders(tmp_path / "renders", corpus, max_seconds=1.0)
    assert str(err.value) == (f"the test split of {corpus} has no audio to compare with (it was prepared with "
                              f"--test-fraction 0); give --split val (its {Corpus(corpus).seconds('val'):.1f} s), "
                              f"or prepare it again with --test-fraction above 0 (wavegen prep RECORDINGS {corpus} "
                              "--test-fraction 0.1)")


def test_every_format_prep_reads_is_judged_and_undecodable_audio_is_named(tmp_path):
    """A render converted to .w64 or .caf (sox, Logic) was "no audio files", though prep reads those formats;
    an .m4a beside the renders was passed over in silence. Every format prep reads is judged, and audio that
    libsndfile cannot decode is skipped with why (the only file: the error names it)."""
    from wavegen.analysis import AUDIO_SUFFIXES
    from wavegen.prep_inputs import AUDIO_EXTENSIONS

    assert set(AUDIO_SUFFIXES) == AUDIO_EXTENSIONS
    folder = tmp_path / "renders"
    write_audio_file(folder / "a.w64", melody(1.0, RATE, seed=1), RATE, format="W64")
    write_audio_file(folder / "b.caf", melody(1.0, RATE, seed=2), RATE, format="CAF")
    (folder / "c.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A ")
    (folder / "notes.txt").write_text("not audio, not named\n")
    renders = read_renders(folder, RATE, 10.0)
    why = ".m4a audio, which libsndfile cannot decode: convert it to .flac or .wav to judge it"
    assert renders.names == ["a.w64", "b.caf"] and renders.skipped == [{"file": "c.m4a", "reason": why}]
    (folder / "a.w64").unlink()
    (folder / "b.caf").unlink()
    with pytest.raises(AnalysisError, match=f"no audio files .*; c.m4a: {re.escape(why)}$"):
        read_renders(folder, RATE, 10.0)


def test_an_empty_render_file_is_said_to_be_empty_as_prep_says(tmp_path):
    """A render file of 0 bytes (a copy or a render that failed before its first write) was skipped as "cannot
    decode audio (Format not recognised)", as if of a wrong format; prep says "empty: a file of 0 bytes" of it."""
    folder = tmp_path / "renders"
    write_audio_file(folder / "good.wav", melody(3.0, RATE, seed=1), RATE)
    (folder / "empty.wav").write_bytes(b"")
    renders = read_renders(folder, RATE, 10.0)
    assert renders.names == ["good.wav"]
    assert renders.skipped == [{"file": "empty.wav", "reason": "empty: a file of 0 bytes"}], renders.skipped
    with pytest.raises(AnalysisError, match=r"empty.wav: no audio file can be analysed \(empty.wav: empty: a file "
                                            r"of 0 bytes\)$"):
        read_renders(folder / "empty.wav", RATE, 10.0)


def _test_files_gone_and_prepared_again(folder, settings):
    """A corpus of four whole files prepared with settings, its test files then deleted and prep run again: the
    others keep their splits, test is empty."""
    import json
    import os

    from wavegen.prep import prepare

    corpus = prepared_corpus(folder, files=4, seconds=2.0, **settings)
    for f in json.loads((corpus / "manifest.json").read_text())["files"]:
        if f["split"] == "test":
            os.remove(f["path"])
    prepare([folder / "rec"], corpus, **settings)
    return corpus


def test_a_test_split_emptied_by_a_prep_run_again_asks_for_recordings_or_a_seed_not_a_fraction(tmp_path):
    """Prepared with --test-fraction 0.25, its test file gone, prep run again keeps the others' splits and leaves
    test empty: eval said "prep gave every recording to the other splits" and asked for --test-fraction above 0
    (0.1), less than it was prepared with. It says why and asks for more recordings or another --seed. A split
    of stretches cut in time that came to nothing asks for a larger fraction than it was prepared with."""
    from wavegen.analysis import compare_renders

    settings = {"sample_rate": RATE, "val_fraction": 0.25, "test_fraction": 0.25, "progress": False}
    corpus = _test_files_gone_and_prepared_again(tmp_path / "a", settings)
    write_audio_file(tmp_path / "renders" / "a.wav", melody(1.0, RATE), RATE)
    with pytest.raises(AnalysisError) as err:
        compare_renders(tmp_path / "renders", corpus, max_seconds=1.0)
    assert str(err.value) == (f"the test split of {corpus} has no audio to compare with (its recordings were gone "
                              "when it was prepared again, and the others kept their splits); give --split val (its "
                              f"{Corpus(corpus).seconds('val'):.1f} s), or prepare it again with more recordings, or "
                              f"with another --seed to draw every split again (wavegen prep RECORDINGS {corpus} "
                              "--seed 1)")
    one = prepared_corpus(tmp_path / "b", files=1, seconds=2.0, **dict(settings, test_fraction=0.00001))
    with pytest.raises(AnalysisError) as err:
        compare_renders(tmp_path / "renders", one, max_seconds=1.0)
    assert "(its --test-fraction 1e-05 of each recording cut in time came to nothing)" in str(err.value)
    assert str(err.value).endswith("a larger --test-fraction (wavegen prep RECORDINGS "
                                   f"{one} --test-fraction 0.1)"), err.value


def test_a_test_split_of_whole_files_emptied_says_why_whatever_its_manifests_fractions_hold(tmp_path):
    """No recording cut in time: the fractions prep recorded are not asked (they are of a cut's stretch). They were
    read first, and a manifest whose test_fraction is null (damaged) ended eval in a TypeError, not its reason."""
    import json

    from wavegen.analysis import compare_renders

    settings = {"sample_rate": RATE, "val_fraction": 0.25, "test_fraction": 0.25, "progress": False}
    corpus = _test_files_gone_and_prepared_again(tmp_path / "a", settings)
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert "time" not in {f["split"] for f in manifest["files"]}
    manifest["params"]["test_fraction"] = None
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    write_audio_file(tmp_path / "renders" / "a.wav", melody(1.0, RATE), RATE)
    with pytest.raises(AnalysisError) as err:
        compare_renders(tmp_path / "renders", corpus, max_seconds=1.0)
    assert str(err.value).startswith(f"the test split of {corpus} has no audio to compare with (its recordings were "
                                     "gone when it was prepared again, and the others kept their splits); "), err.value


def test_a_test_stretch_held_past_the_audio_kept_now_is_not_blamed_on_its_fraction(tmp_path):
    """One recording cut in time, its last 0.6 s quiet: prepared with --top-db 40 its test stretch (0.2 of it) is
    that tail; prepared again with --top-db 30 the tail is trimmed, the cut held where it was, and test is empty.
    eval said "its --test-fraction 0.2 of each recording cut in time came to nothing" (it gives 0.3 s of the audio
    kept now) and asked for a larger one. It says the cut held lies past the audio kept, and asks for another --seed."""
    from wavegen.analysis import compare_renders
    from wavegen.prep import prepare

    t = np.arange(2 * RATE) / RATE
    x = 0.5 * np.sin(2 * np.pi * 330 * t)
    x[int(1.4 * RATE):] *= 10 ** (-35 / 20)  # above --top-db 40's floor, under 30's
    write_audio_file(tmp_path / "rec" / "a.wav", x.astype(np.float32), RATE)
    write_audio_file(tmp_path / "renders" / "a.wav", melody(1.0, RATE), RATE)
    settings = {"sample_rate": RATE, "val_fraction": 0.1, "test_fraction": 0.2, "progress": False}
    corpus = tmp_path / "c"
    prepare([tmp_path / "rec"], corpus, top_db=40.0, **settings)
    assert Corpus(corpus).seconds("test") > 0.3
    prepare([tmp_path / "rec"], corpus, top_db=30.0, **settings)
    assert [f["split"] for f in Corpus(corpus).manifest["files"]] == ["time"] and Corpus(corpus).seconds("test") == 0
    with pytest.raises(AnalysisError) as err:
        compare_renders(tmp_path / "renders", corpus, max_seconds=1.0)
    said = str(err.value)
    assert said.startswith(f"the test split of {corpus} has no audio to compare with (each recording cut in time "
                           "keeps where an earlier prep cut it, and the audio kept of it now ends before its test "
                           "stretch: another --top-db, or the recordings changed); "), said
    assert said.endswith(f"prepare it again with another --seed to draw every split again (wavegen prep RECORDINGS "
                         f"{corpus} --seed 1)") and "fraction" not in said, said
