"""wavegen.analysis: renders judged against an album (features checked on signals of known values)."""

import json
import math
import re
import shutil
import warnings

import numpy as np
import pytest

import soundfile as sf
from conftest import melody, prepared_corpus, tone, write_audio_file
from wavegen import analysis, analysis_features, plotting
from wavegen.analysis_audio import read_renders
from wavegen.analysis_report import format_comparison
from wavegen.fileio import strict_json

pytest.importorskip("librosa")

RATE = 16000


@pytest.mark.slow  # the first test to call librosa pays its imports (~10 s on a busy 2-core machine)
def test_features_of_known_signals():
    """Values a wrong feature would miss: level, centroid, pitch class, periodicity, flatness, onsets."""
    a440 = tone(4.0, RATE, freq=440.0, amplitude=0.5)[:, 0]
    f = analysis_features.excerpt_features(a440, RATE)
    inner = slice(4, -4)  # frames away from the zero-padded ends
    assert np.median(f["rms_db"][inner]) == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.1)
    assert np.median(f["centroid_hz"][inner]) == pytest.approx(440.0, rel=0.03)
    assert np.median(f["bandwidth_hz"][inner]) < 60.0
    assert np.median(f["chroma"][inner], axis=0).argmax() == 9  # A (chroma starts at C)
    assert np.median(f["chroma_entropy_bits"][inner]) < 1.5
    assert (f["periodicity"][inner] > 0.99).all()
    assert 10 ** np.median(f["log10_flatness"][inner]) < 1e-3

    white = analysis.noise("white", 4.0, RATE, rms=0.1)
    g = analysis_features.excerpt_features(white, RATE)
    assert np.median(g["rms_db"]) == pytest.approx(-20.0, abs=0.5)
    # flat spectrum: the middle of the analysed band (0 .. 90% of Nyquist)
    assert np.median(g["centroid_hz"]) == pytest.approx(analysis_features.BAND_TOP * RATE / 4, rel=0.03)
    assert 0.4 < 10 ** np.median(g["log10_flatness"]) < 0.7
    assert (g["periodicity"] > analysis_features.PERIODIC_THRESHOLD).mean() < 0.01
    assert np.median(g["chroma_entropy_bits"]) > 3.4

    # a click every 0.5 s: 2 onsets per second, 120 BPM
    clicks = np.zeros(8 * RATE, dtype=np.float32)
    for start in range(RATE // 4, len(clicks), RATE // 2):
        clicks[start: start + 200] = 0.8 * np.exp(-np.arange(200) / 30.0) * np.sign(np.sin(np.arange(200)))
    h = analysis_features.excerpt_features(clicks, RATE)
    assert h["onsets"] / h["seconds"] == pytest.approx(2.0, abs=0.25)
    assert h["tempo_bpm"] == pytest.approx(120.0, rel=0.05)


def test_periodicity_follows_the_lag_range():
    """A 200 Hz tone (5 ms period) is periodic, noise is not, silence scores 0; a 3 kHz tone is
    periodic at the 1 ms lag (3 periods) and no peak exceeds 1 (normalized over the overlap)."""
    n_fft, hop = analysis_features.frame_size(RATE)
    assert (n_fft, hop) == (1024, 256)
    t = np.arange(RATE) / RATE
    periodic = analysis_features.periodicity(np.sin(2 * np.pi * 200 * t), RATE, n_fft, hop)
    assert periodic[2:-2].min() > 0.99
    rng = np.random.default_rng(0)
    assert analysis_features.periodicity(rng.standard_normal(RATE), RATE, n_fft, hop).max() < 0.3
    high = analysis_features.periodicity(np.sin(2 * np.pi * 3000 * t), RATE, n_fft, hop)
    assert high[2:-2].min() > 0.99 and high.max() <= 1.0 + 1e-9
    assert analysis_features.periodicity(np.zeros(RATE), RATE, n_fft, hop).max() == 0.0


def test_frechet_distance_of_shifted_gaussians():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((20000, 3))
    b = rng.standard_normal((20000, 3)) * np.array([1.0, 1.0, 2.0]) + np.array([2.0, 0.0, 0.0])
    ones, zeros = np.ones(3), np.zeros(3)
    # mean shift 2 → 4; variances 1 vs 4 in one dimension → (1 - 2)^2 = 1
    assert analysis.frechet_distance(a, b, zeros, ones) == pytest.approx(5.0, abs=0.15)
    assert analysis.frechet_distance(a, a, zeros, ones) == pytest.approx(0.0, abs=1e-6)
    # rounding took a set's distance to itself under 0, printed "-0.00"; a distance is never negative
    for seed in range(8):
        c = np.random.default_rng(seed).standard_normal((400, 39)) * np.linspace(0.5, 3.0, 39)
        assert analysis.frechet_distance(c, c, np.zeros(39), np.ones(39)) >= 0.0
    assert analysis.wasserstein_1d(a[:, 0], a[:, 0] + 3.0) == pytest.approx(3.0, abs=1e-9)


def test_frechet_distance_of_a_constant_set_is_exact_and_quiet():
    """A silent render's frames are one vector: its covariance is singular, and the distance is
    |c - mu_b|^2 + tr(Sb) exactly, with no warning (scipy's sqrtm warned and rounded here)."""
    rng = np.random.default_rng(2)
    b = rng.standard_normal((5000, 39)) * np.linspace(0.5, 2.0, 39)
    c = np.full((300, 39), 0.25)
    zeros, ones = np.zeros(39), np.ones(39)
    expected = ((0.25 - b.mean(axis=0)) ** 2).sum() + np.trace(np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert analysis.frechet_distance(c, b, zeros, ones) == pytest.approx(expected, rel=1e-9)
        assert analysis.frechet_distance(b, c, zeros, ones) == pytest.approx(expected, rel=1e-9)


@pytest.fixture(scope="module")
def tone_album(tmp_path_factory):
    """A corpus of melodies (the album) and three render folders: melodies, white noise, silence-ish."""
    root = tmp_path_factory.mktemp("album")
    corpus = prepared_corpus(root, files=8, seconds=10.0, val_fraction=0.125, test_fraction=0.25)
    folders = {name: root / name for name in ("tones", "noise")}
    for i in range(2):
        write_audio_file(folders["tones"] / f"stream_{i:03d}.wav", melody(10.0, 22050, seed=100 + i), 22050)
        write_audio_file(folders["noise"] / f"stream_{i:03d}.wav",
                         analysis.noise("white", 10.0, RATE, rms=0.1, seed=7 + i), RATE)
    return corpus, folders


@pytest.mark.slow
def test_tone_renders_score_near_the_album_and_noise_near_noise(tone_album, tmp_path):
    corpus, folders = tone_album
    tones = analysis.compare_renders(folders["tones"], corpus, max_seconds=20.0)
    noisy = analysis.compare_renders(folders["noise"], corpus, max_seconds=20.0, examples=True)

    for result in (tones, noisy):  # the references are the same measurements in both
        assert result["sets"]["test"]["summary"]["periodic_fraction"] > 0.9
        assert result["sets"]["white_noise"]["summary"]["periodic_fraction"] < 0.05
        d = result["distances"]
        assert d["train"]["frechet"] < min(d["white_noise"]["frechet"], d["pink_noise"]["frechet"]) / 3

    t, n = tones["verdict"], noisy["verdict"]
    assert t["periodic_fraction_renders"] > 0.9
    assert t["frechet_renders"] < t["frechet_noise"] / 3
    assert t["album_likeness"] > 0.7
    assert n["periodic_fraction_renders"] < 0.05
    assert n["album_likeness"] < 0.2
    # white-noise renders sit where the white-noise reference sits, on every frame feature
    for name, value in noisy["distances"]["renders"]["features"].items():
        ref = noisy["distances"]["white_noise"]["features"][name]
        assert value == pytest.approx(ref, rel=0.3, abs=0.1), name
    assert tones["sets"]["renders"]["summary"]["chroma_profile_similarity"] > 0.5
    assert abs(noisy["sets"]["renders"]["summary"]["chroma_profile_similarity"]) < 0.5

    text = format_comparison(tones)
    assert "album likeness" in text and "periodic_fraction" in text
    png = plotting.plot_comparison(tones, tmp_path / "cmp.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # examples: the first 10 s excerpt of the renders and of the test split, for the plot's spectrograms
    assert "examples" not in tones
    examples = noisy["examples"]
    first, _ = sf.read(folders["noise"] / "stream_000.wav", dtype="float32")
    assert examples["renders"].dtype == np.float32 and np.array_equal(examples["renders"], first[:10 * RATE])
    assert len(examples["test"]) == 10 * RATE and np.abs(examples["test"]).max() > 0.1
    both = plotting.plot_comparison(noisy, tmp_path / "both.png", examples)
    assert _png_size(both)[0] == _png_size(png)[0] and _png_size(both)[1] > _png_size(png)[1]  # a row more


def _png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's header."""
    head = path.read_bytes()[:24]
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_clear_errors_name_the_folder(tone_album, tmp_path):
    corpus, _ = tone_album
    with pytest.raises(analysis.AnalysisError, match="no such folder"):
        analysis.compare_renders(tmp_path / "missing", corpus)
    one = write_audio_file(tmp_path / "one" / "stream_000.wav", melody(1.0, RATE, seed=1), RATE)
    assert analysis.compare_renders(one, corpus, max_seconds=1)["render_files"] == ["stream_000.wav"]  # judged alone
    notes = tmp_path / "one" / "notes.txt"
    notes.write_text("not audio")
    with pytest.raises(analysis.AnalysisError, match=f"{re.escape(str(notes))}: not an audio file"):
        analysis.compare_renders(notes, corpus)
    (tmp_path / "empty").mkdir()
    with pytest.raises(analysis.AnalysisError, match="empty: no audio files"):
        analysis.compare_renders(tmp_path / "empty", corpus)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "stream_000.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(analysis.AnalysisError, match="stream_000.wav"):
        analysis.compare_renders(bad, corpus)
    (bad / "stream_000.wav").unlink()  # macOS's AppleDouble file beside a copied render: hidden, no audio
    (bad / "._stream_001.wav").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    write_audio_file(bad / "stream_001.wav", melody(1.0, RATE, seed=1), RATE)
    assert read_renders(bad, RATE).names == ["stream_001.wav"]
    short = tmp_path / "short"  # a file too short to cut an excerpt from is named, not "no audio"
    write_audio_file(short / "stream_000.wav", melody(0.04, RATE, seed=1), RATE)
    with pytest.raises(analysis.AnalysisError, match=r"stream_000.wav: shorter than the 0.25 s .* \(0.040 s\)"):
        analysis.compare_renders(short, corpus)


def test_renders_holding_nan_or_inf_are_skipped_and_named(tmp_path, caplog):
    """A float WAV can hold NaN or inf, where no feature is defined: the file is skipped with a warning
    naming it, as a file too short is; a folder of nothing else is refused, naming the files."""
    bad = melody(3.0, RATE, seed=3)
    bad[1000:1100] = np.nan
    write_audio_file(tmp_path / "mixed" / "nan.wav", bad, RATE, subtype="FLOAT")
    write_audio_file(tmp_path / "mixed" / "inf.wav", np.where(np.arange(len(bad)) == 5, np.inf, 0.1), RATE,
                     subtype="FLOAT")
    write_audio_file(tmp_path / "mixed" / "ok.wav", melody(3.0, RATE, seed=4), RATE)
    clips, names, skipped = read_renders(tmp_path / "mixed", RATE)
    assert names == ["ok.wav"] and len(clips) == 1 and np.isfinite(clips[0]).all()
    assert skipped == [{"file": f, "reason": "NaN or infinite samples"} for f in ("inf.wav", "nan.wav")]
    assert "skipping 2 of 3 audio files (inf.wav: NaN or infinite samples; nan.wav: NaN or infinite samples)" \
        in caplog.text
    write_audio_file(tmp_path / "nan" / "nan.wav", bad, RATE, subtype="FLOAT")
    with pytest.raises(analysis.AnalysisError, match=r"nan: no audio file can be analysed \(nan.wav: NaN or "
                                                     r"infinite samples\)"):
        read_renders(tmp_path / "nan", RATE)


def test_max_seconds_below_one_excerpt_shortens_the_excerpt():
    """--max-seconds 3 on a 30 s render: one 3 s excerpt, not a whole 10 s one (the noises are 3 s, so
    every set compared is the same length); below the shortest analysable clip it is refused."""
    clip = np.zeros(30 * RATE, dtype=np.float32)
    assert [len(p) for p in analysis.excerpts_of([clip], RATE, 3.0)] == [3 * RATE]
    assert [len(p) for p in analysis.excerpts_of([clip], RATE, 25.0)] == [10 * RATE] * 2
    assert [len(p) for p in analysis.excerpts_of([clip[: 8 * RATE]], RATE, 3.0)] == [3 * RATE]
    assert [len(p) for p in analysis.excerpts_of([clip[: RATE // 2]], RATE, 120.0)] == [RATE // 2]
    with pytest.raises(analysis.AnalysisError, match=r"^--max-seconds 0.1: the analysis needs at least 0.25 s"):
        analysis.compare_clips([clip], [clip], [clip], RATE, max_seconds=0.1)


@pytest.mark.slow
def test_every_set_is_capped_at_max_seconds(tone_album):
    corpus, folders = tone_album
    result = analysis.compare_renders(folders["tones"], corpus, max_seconds=3.0)
    assert {name: s["seconds"] for name, s in result["sets"].items()} == {name: 3.0 for name in analysis.SETS}
    assert math.isnan(result["sets"]["renders"]["summary"]["tempo_bpm"])  # no excerpt of 4 s: no tempo


def test_the_training_split_is_not_compared_with_itself(tone_album):
    corpus, folders = tone_album
    with pytest.raises(analysis.AnalysisError, match=r"^--split train: the train split is the album reference .* "
                                                     r"compare with test or val$"):
        analysis.compare_renders(folders["tones"], corpus, split="train")


def test_undefined_numbers_are_a_dash_with_a_note_in_the_table_and_null_in_json():
    """The eval table printed "nan": tempo_bpm where no excerpt is 4 s long, album likeness where the
    nearer noise is no farther from the test split than the training split. Now "-" and a line saying
    why; the JSON (strict_json) holds null; the result itself keeps NaN (docs/QUALITY.md)."""
    import json

    from wavegen.fileio import strict_json

    pitched = tone(1.5, RATE, freq=330.0, amplitude=0.3)[:, 0]
    hiss = analysis.noise("white", 1.5, RATE, rms=0.2, seed=3)
    result = analysis.compare_clips([pitched], [hiss], [pitched], RATE, max_seconds=10.0)
    assert math.isnan(result["sets"]["renders"]["summary"]["tempo_bpm"])
    assert math.isnan(result["verdict"]["album_likeness"])
    text = format_comparison(result)
    assert "nan" not in text.lower()
    tempo_row = next(line for line in text.splitlines() if line.startswith("tempo_bpm"))
    assert tempo_row.split() == ["tempo_bpm"] + ["-"] * len(analysis.SETS)
    assert ("- tempo_bpm of renders, test, train, white_noise, pink_noise: no excerpt of 4 s or more to estimate "
            "a tempo on") in text
    assert "album likeness undefined: the nearer noise" in text and "album likeness nan" not in text
    # a defined number is still printed as a number beside an undefined one
    flat_row = next(line for line in text.splitlines() if line.startswith("flatness_median"))
    assert float(flat_row.split()[2]) > 0.3  # the test split is white noise
    parsed = json.loads(strict_json(result), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert parsed["sets"]["test"]["summary"]["tempo_bpm"] is None and parsed["verdict"]["album_likeness"] is None
    # a defined album likeness has no note
    fine = analysis.compare_clips([pitched], [pitched], [pitched], RATE, max_seconds=10.0)
    fine_text = format_comparison(fine)
    assert "album likeness undefined" not in fine_text and re.search(r"^album likeness -?\d+\.\d\d ", fine_text, re.M)


def test_a_split_of_clips_too_short_to_analyse_is_named():
    """A test split whose every clip is under 0.25 s was numpy's "need at least one array to concatenate"."""
    pitched = tone(1.0, RATE, freq=330.0, amplitude=0.3)[:, 0]
    with pytest.raises(analysis.AnalysisError, match=r"^nothing to compare: the test split holds no clip of at "
                                                     r"least 0\.25 s$"):
        analysis.compare_clips([pitched], [pitched[: RATE // 10]], [pitched], RATE, max_seconds=10.0)
    without_train = analysis.compare_clips([pitched], [pitched], [pitched[: RATE // 10]], RATE, max_seconds=10.0)
    assert "train" not in without_train["sets"] and "album_likeness" not in without_train["verdict"]


def test_a_silent_set_has_no_spectral_shape_or_pitch_instead_of_white_noise_flatness():
    """Silent frames have flatness 1 and chroma entropy 0 (white noise, one pitch class): a silent render
    must not read so. Its spectral and pitch medians are undefined; a half-silent one's are its sound's."""
    silent = analysis_features.summarize(analysis_features.set_features([np.zeros(RATE, np.float32)], RATE))
    for key in ("centroid_hz_median", "bandwidth_hz_median", "flatness_median", "contrast_db_median",
                "chroma_entropy_bits_median", "chroma_profile_similarity", "periodic_fraction"):
        assert math.isnan(silent[key]), key  # a periodic fraction of 0 would read as noise
    assert silent["silent_fraction"] == 1.0
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE).astype(np.float32)
    half = analysis_features.summarize(
        analysis_features.set_features([np.concatenate([np.zeros(RATE, np.float32), tone])], RATE))
    whole = analysis_features.summarize(analysis_features.set_features([tone], RATE))
    assert half["flatness_median"] == pytest.approx(whole["flatness_median"], rel=0.5) and half["flatness_median"] < 0.1
    assert half["centroid_hz_median"] == pytest.approx(whole["centroid_hz_median"], rel=0.1)
    assert half["chroma_entropy_bits_median"] == pytest.approx(whole["chroma_entropy_bits_median"], abs=0.3)


def test_an_unfinished_render_is_judged_with_a_warning_naming_it(tmp_path, caplog):
    """A render stopped (or still running) leaves OUT/.state/ and no complete render_report.json: its files
    hold only the audio rendered so far, which was judged as if it were the render, without a word."""
    out = tmp_path / "out"
    write_audio_file(out / "stream_000.wav", melody(1.0, RATE, seed=5), RATE)
    (out / ".state").mkdir()
    (out / ".state" / "params.json").write_text('{"seconds": 60.0}')
    with caplog.at_level("WARNING"):
        names = read_renders(out, RATE).names
    assert names == ["stream_000.wav"]
    assert f"{out}: its render has not finished (.state/ there, no complete render_report.json)" in caplog.text
    flac = tmp_path / "flac"  # an unfinished FLAC render has no audio file yet (PCM under .state/)
    (flac / ".state").mkdir(parents=True)
    with pytest.raises(analysis.AnalysisError, match=r"flac: no audio files \(.*\); it is a render that has "
                                                     r"not finished \(a FLAC render writes its files at the end\)"):
        read_renders(flac, RATE)
    caplog.clear()
    (out / "render_report.json").write_text('{"status": "complete"}')  # finished: nothing to say
    shutil.rmtree(out / ".state")
    with caplog.at_level("WARNING"):
        read_renders(out, RATE)
    assert caplog.text == ""


def test_a_live_streams_archive_is_judged_with_a_warning_that_fits_it(tmp_path, caplog):
    """An archive (wavegen serve --archive) keeps .state/ for good: it was said to be "a render that has not
    finished", with "rerun the render command", a command that never made it."""
    archive = tmp_path / "archive"
    for part in range(2):
        write_audio_file(archive / f"broadcast_{part:05d}.wav", melody(1.0, RATE, seed=part), RATE)
    (archive / ".state").mkdir()
    (archive / ".state" / "params.json").write_text('{"model_folder": "/models/m", "unsnapshot_seconds": 2.0}')
    with caplog.at_level("WARNING"):
        names = read_renders(archive, RATE).names
    assert names == ["broadcast_00000.wav", "broadcast_00001.wav"]
    assert f"{archive}: a live stream's archive (wavegen serve --archive): its parts hold the broadcast so far" \
           in caplog.text
    assert "render" not in caplog.text


def test_a_corpus_at_a_low_rate_is_analysed_or_refused_by_name_not_a_librosa_traceback():
    """Spectral contrast's octave bands from 100 Hz reach past Nyquist at 6400 Hz and under (prep takes
    1000 Hz and up): librosa's ParameterError came out as a traceback. From 3000 Hz they start lower, under
    it the analysis is refused naming the rate; above 6400 Hz the bands, and every figure, are as before."""
    low = 4000
    clips = [melody(2.0, low, seed=s) for s in range(3)]
    result = analysis.compare_clips(clips[:1], clips[1:2], clips[2:], low, max_seconds=2.0)
    assert all(math.isfinite(result["sets"][s]["summary"]["contrast_db_median"]) for s in analysis.SETS)
    assert analysis_features.contrast_fmin(8000) == analysis_features.contrast_fmin(16000) == 100.0
    with pytest.raises(analysis.AnalysisError, match=r"the audio compared is at 2000 Hz: comparing renders needs "
                                                     r"audio at 3000 Hz or more"):
        analysis.compare_clips(clips[:1], clips[1:2], clips[2:], 2000, max_seconds=2.0)


def test_silent_renders_have_no_periodic_fraction_and_no_likeness():
    """An all-silent render reported "periodic frames: renders 0.00", which reads as noise, and a likeness as if
    silence had a place between album and noise: its periodic fraction is undefined (null, "n/a" in the
    verdict), and the likeness too, the verdict saying that the renders are silent."""
    rate = 8000
    album = [melody(2.0, rate, seed=s) for s in range(2)]
    for renders, silent in (([np.zeros(rate, np.float32)], True), ([melody(1.0, rate, seed=5)], False)):
        result = analysis.compare_clips(renders, album[:1], album[1:], rate, max_seconds=1.0)
        summary, verdict = result["sets"]["renders"]["summary"], result["verdict"]
        assert math.isnan(summary["periodic_fraction"]) == silent
        assert verdict.get("renders_silent", False) == silent and math.isnan(verdict["album_likeness"]) == silent
        text = format_comparison(result)
        assert ("periodic frames: renders n/a (no sounding frame)" in text) == silent, text
        assert ("album likeness undefined: the renders are silent (every frame under -60 dBFS)" in text) == silent
        assert (", chroma_profile_similarity, periodic_fraction of renders: every frame is silent" in text) == silent
    assert json.loads(strict_json(result))["verdict"]["periodic_fraction_renders"] > 0.5  # the melody's
    silence = analysis.compare_clips([np.zeros(rate, np.float32)], album[:1], album[1:], rate, max_seconds=1.0)
    silent_json = json.loads(strict_json(silence))
    assert silent_json["verdict"]["periodic_fraction_renders"] is None
    assert silent_json["verdict"]["album_likeness"] is None


def test_renders_much_shorter_than_the_references_are_warned_of(caplog):
    """The same music judged on 0.3 s read at twice the Frechet distance it has on 8 s, beside references of
    3 s: a short render's likeness reads low without a word. A warning says so and gives the --max-seconds
    that evens the lengths; renders as long as the references get none. It names the split compared with, not
    "the reference sets" at that split's length beside a training split three times as long."""
    rate = 8000
    album = [melody(2.0, rate, seed=s) for s in range(4)]
    for seconds, warned in ((0.5, True), (2.0, False)):
        caplog.clear()
        with caplog.at_level("WARNING"):
            analysis.compare_clips([melody(seconds, rate, seed=9)], album[:1], album[1:], rate, max_seconds=10.0)
        said = "the renders hold 0.5 s of audio, the split they are compared with 2 s: a Frechet distance from " \
               "fewer frames reads farther than it is, and the album likeness lower; give --max-seconds 0.5 to judge " \
               "every set"
        assert (said in caplog.text) == warned, caplog.text
