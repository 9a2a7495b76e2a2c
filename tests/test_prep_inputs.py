"""wavegen prep against inputs that are not plain recordings: FIFOs, settings out of range, audio
too quiet for 16 bits or riding on a DC offset, empty label folders, files changed behind their
timestamps. Each is skipped or refused with one line naming the file or value."""

import contextlib
import os
import threading
import time

import numpy as np
import pytest

import wavegen.prep_decode as prep_decode
import wavegen.prep_inputs as prep_inputs
from wavegen.cli import main
from wavegen.config import ConfigError
from wavegen.corpus import Corpus, CorpusError
from wavegen.prep import PrepSettings, prepare

SR = 16000


def prep(inputs, out, **kw):
    kw.setdefault("progress", False)
    return prepare(inputs, out, **kw)


def tones(folder, make_tone, n, seconds=1.0):
    return [make_tone(folder / f"t{i:02d}.wav", seconds + 0.1 * i, SR, 200 + 37 * i) for i in range(n)]


def refuse_reading(monkeypatch):
    """Make any read of an input fail the test: a setting must be refused before any file is read."""
    def fail(*args, **kwargs):
        raise AssertionError("read an input before refusing the settings")

    monkeypatch.setattr(prep_decode, "decode_mono", fail)
    monkeypatch.setattr(prep_inputs, "sha256_file", fail)


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines[-1].startswith("wavegen prep: error: "), lines
    return lines[-1]


# ----------------------------------------------------------------------------- FIFOs


@contextlib.contextmanager
def fifo_readers(path):
    """Counts the times something opens the FIFO at path to read, and lets each go at once (it
    reads end of file): a prep that opens it fails the test instead of waiting forever."""
    opened, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while no one reads
            except OSError:
                time.sleep(0.005)
                continue
            opened.append(time.monotonic())
            os.close(fd)
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield opened
    finally:
        stop.set()
        thread.join()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_among_the_inputs_is_skipped_never_opened(tmp_path, make_tone, caplog, capsys):
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    os.mkfifo(rec / "pipe.wav")
    with fifo_readers(rec / "pipe.wav") as opened, caplog.at_level("WARNING"):
        m = prep([rec], tmp_path / "c", val_fraction=0, test_fraction=0)
        assert prep([rec], tmp_path / "c", val_fraction=0, test_fraction=0) == m  # up to date: not opened either
        os.chmod(rec / "t00.wav", 0o600)  # a new ctime: the inputs are rehashed, the FIFO is not
        assert prep([rec], tmp_path / "c", val_fraction=0, test_fraction=0)["files"] == m["files"]
    assert opened == []
    assert m["skipped"] == [{"path": str(rec / "pipe.wav"), "reason": "not a regular file: a FIFO (named pipe)"}]
    assert len(m["files"]) == 3
    assert f"skipping {rec / 'pipe.wav'}: not a regular file: a FIFO" in caplog.text
    # named as the input: one line, through the CLI exit code 2
    with fifo_readers(rec / "pipe.wav") as opened:
        with pytest.raises(CorpusError, match=r"input .*pipe.wav is a FIFO \(named pipe\), not a file"):
            prep([rec / "pipe.wav"], tmp_path / "c2")
        assert main(["-q", "prep", str(rec / "pipe.wav"), str(tmp_path / "c3")]) == 2
    assert opened == []
    assert f"{rec / 'pipe.wav'} is a FIFO" in error_line(capsys)
    assert not (tmp_path / "c2").exists() and not (tmp_path / "c3").exists()


# ----------------------------------------------------------------------------- settings


def test_a_negative_seed_is_one_line_before_any_file_is_read(tmp_path, make_tone, monkeypatch, capsys):
    tones(tmp_path / "rec", make_tone, 3)
    refuse_reading(monkeypatch)
    for seed in (-1, 1.5, True, float("nan")):
        with pytest.raises(ConfigError, match=rf"^seed={seed!r}: must be a whole number >= 0"):
            prep([tmp_path / "rec"], tmp_path / "c", seed=seed)
    assert main(["-q", "prep", str(tmp_path / "rec"), str(tmp_path / "c"), "--seed", "-1"]) == 2
    assert "seed=-1: must be a whole number >= 0" in error_line(capsys)
    assert not (tmp_path / "c").exists()
    assert PrepSettings(inputs=("x",), seed=2**40).seed == 2**40  # any size numpy seeds with


def test_a_sample_rate_below_1000_hz_is_refused(tmp_path, make_tone, monkeypatch, capsys):
    tones(tmp_path / "rec", make_tone, 3)
    refuse_reading(monkeypatch)
    for rate in (1, 7, 999):
        with pytest.raises(ConfigError, match=rf"^sample_rate={rate}: must be at least 1000 Hz"):
            prep([tmp_path / "rec"], tmp_path / "c", sample_rate=rate)
    assert main(["-q", "prep", str(tmp_path / "rec"), str(tmp_path / "c"), "--sample-rate", "7"]) == 2
    assert "sample_rate=7: must be at least 1000 Hz" in error_line(capsys)
    assert PrepSettings(inputs=("x",), sample_rate=1000).sample_rate == 1000


# ----------------------------------------------------------------------------- silence


def test_float_audio_too_quiet_for_16_bits_is_skipped_as_silent(tmp_path, make_audio, make_tone, caplog):
    rec = tmp_path / "rec"
    t = np.arange(2 * SR) / SR
    for i in range(3):
        make_audio(rec / f"q{i}.wav", 1e-6 * np.sin(2 * np.pi * (300 + 50 * i) * t), SR, subtype="FLOAT")
    with pytest.raises(CorpusError, match=r"q0.wav: silent at 16-bit resolution: peaks at -120.0 dBFS"):
        prep([rec], tmp_path / "c")
    tones(rec, make_tone, 2)
    with caplog.at_level("WARNING"):
        m = prep([rec], tmp_path / "c", val_fraction=0, test_fraction=0)
    assert sorted(os.path.basename(f["path"]) for f in m["files"]) == ["t00.wav", "t01.wav"]
    assert sorted(os.path.basename(s["path"]) for s in m["skipped"]) == ["q0.wav", "q1.wav", "q2.wav"]
    assert all(s["reason"].startswith("silent at 16-bit resolution") for s in m["skipped"])
    assert f"skipping {rec / 'q1.wav'}: silent at 16-bit resolution" in caplog.text
    assert np.count_nonzero(Corpus(tmp_path / "c").split("train")) > 0.9 * m["splits"]["train"]["samples"]


def test_audio_whose_every_sample_rounds_to_zero_is_silent(tmp_path, make_audio):
    # frames that vary (+0.49 steps, then +-0.49 steps) yet no sample reaches half a 16-bit step
    step = 1 / 32767
    x = np.concatenate([np.full(SR, 0.49 * step), 0.49 * step * np.sign(np.sin(np.arange(SR) / 3 + 0.1))])
    make_audio(tmp_path / "rec" / "flicker.wav", x, SR, subtype="FLOAT")
    with pytest.raises(CorpusError, match=r"flicker.wav: silent at 16-bit resolution: .* every stored sample "
                                          r"would be zero"):
        prep([tmp_path / "rec"], tmp_path / "c")


def tone_with_rests(dc):
    """3 s silence, 2 s tone at 0.5, 3 s silence, 2 s tone, 3 s silence: all plus dc."""
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(2 * SR) / SR)
    rest = np.zeros(3 * SR)
    return np.concatenate([rest, tone, rest, tone, rest]) + dc


def test_silence_is_trimmed_under_a_dc_offset(tmp_path, make_audio):
    make_audio(tmp_path / "plain" / "a.wav", tone_with_rests(0.0), SR, subtype="PCM_16")
    make_audio(tmp_path / "dc" / "a.wav", tone_with_rests(0.005), SR, subtype="PCM_16")
    make_audio(tmp_path / "dc" / "b.wav", tone_with_rests(-0.01), SR, subtype="FLOAT")
    plain = prep([tmp_path / "plain"], tmp_path / "c1", val_fraction=0, test_fraction=0)["files"][0]
    assert plain["kept_seconds"] == pytest.approx(4.208)  # what prep kept before: unchanged
    m = prep([tmp_path / "dc"], tmp_path / "c2", val_fraction=0, test_fraction=0)
    assert [f["kept_seconds"] for f in m["files"]] == [plain["kept_seconds"]] * 2
    assert Corpus(tmp_path / "c2").manifest["splits"]["train"]["segments"] == 4


def test_a_dc_offset_alone_is_silent(tmp_path, make_audio, make_tone):
    rec = tmp_path / "rec"
    make_audio(rec / "dc.wav", np.full(2 * SR, 0.3), SR, subtype="PCM_16")
    with pytest.raises(CorpusError, match=r"dc.wav: silent: a constant DC offset of \+0.3 and no sound over it"):
        prep([rec], tmp_path / "c")


# ----------------------------------------------------------------------------- labels


def test_an_empty_label_folder_is_named_in_a_warning(tmp_path, make_tone, caplog):
    rec = tmp_path / "rec"
    tones(rec / "piano", make_tone, 3)
    tones(rec / "voice", make_tone, 3, seconds=1.05)
    (rec / "drums").mkdir()  # empty
    (rec / "notes").mkdir()
    (rec / "notes" / "todo.txt").write_text("no audio here")
    (rec / ".git").mkdir()  # hidden: not a label folder anyone meant
    (rec / "broken").mkdir()
    (rec / "broken" / "x.wav").write_bytes(b"RIFF garbage")
    with caplog.at_level("WARNING"):
        m = prep([rec], tmp_path / "c", labels="folders")
    assert m["labels"] == ["piano", "voice"]
    for name in ("drums", "notes"):
        assert f"label folder {rec / name} holds no audio files" in caplog.text
        assert f"there will be no label '{name}'" in caplog.text
    assert "every file of label folder 'broken' was skipped" in caplog.text
    assert ".git" not in caplog.text and "label folder " + str(rec / "piano") not in caplog.text


def test_a_label_folder_named_in_bytes_that_are_not_utf8_is_warned_of_and_its_label_still_renders(
        tmp_path, make_tone, caplog):
    """A folder named in Latin-1 (b"Bj\\xf6rk"): its label is those bytes, which a UTF-8 terminal cannot
    type as "Björk"; prep says so, and the label as the bytes give it is what --label takes."""
    from wavegen.render import parse_label

    rec = tmp_path / "rec"
    tones(rec / "piano", make_tone, 3)
    tones(rec / "later", make_tone, 3, seconds=1.05)  # (soundfile writes only to names that are text)
    os.rename(os.fsencode(rec / "later"), os.fsencode(rec) + b"/Bj\xf6rk")
    with caplog.at_level("WARNING"):
        m = prep([rec], tmp_path / "c", labels="folders")
    label = os.fsdecode(b"Bj\xf6rk")
    assert m["labels"] == [label, "piano"] and Corpus(tmp_path / "c").labels == m["labels"]
    assert f"the label folder {label!r} has a name that is not UTF-8" in caplog.text
    assert "'piano'" not in caplog.text
    assert parse_label(os.fsdecode(b"Bj\xf6rk"), m["labels"]).tolist() == [1.0, 0.0]
    with pytest.raises(ConfigError, match="not one of this model's labels"):
        parse_label("Björk", m["labels"])


# ----------------------------------------------------------------------------- changed inputs


def test_an_input_changed_behind_its_size_and_mtime_is_prepared_again(tmp_path, make_tone):
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    m1 = prep([rec], tmp_path / "c", val_fraction=0, test_fraction=0)
    before = Corpus(tmp_path / "c").split("train").copy()
    path = rec / "t00.wav"
    st = path.stat()
    make_tone(path, 1.0, SR, 999)  # new audio, the same length: the same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as touch -r, rsync -t or a tag editor leave it
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    m2 = prep([rec], tmp_path / "c", val_fraction=0, test_fraction=0)
    assert m2["files"][0]["sha256"] != m1["files"][0]["sha256"]
    assert m2["files"][1:] == m1["files"][1:]
    after = Corpus(tmp_path / "c").split("train")
    assert len(after) == len(before) and not np.array_equal(after, before)


def test_audio_in_a_format_prep_cannot_decode_is_named_not_passed_over_in_silence(tmp_path, make_tone, caplog):
    """An iTunes folder (.m4a) beside a few WAVs made a corpus of the WAVs alone, and nothing said that
    the album's other tracks were left out."""
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    (rec / "itunes").mkdir()
    for name in ("one.m4a", "two.M4A", "three.wma"):
        (rec / "itunes" / name).write_bytes(b"\0" * 100)
    (rec / "notes.txt").write_text("not audio")
    with caplog.at_level("WARNING", logger="wavegen.prep"):
        m = prep([rec], tmp_path / "c")
    assert len(m["files"]) == 3 and m["skipped"] == []
    (line,) = [r.getMessage() for r in caplog.records if "cannot decode" in r.getMessage()]
    assert line.startswith("passing over 3 audio files in formats prep cannot decode (2 .m4a, 1 .wma; e.g. ")
    assert "notes.txt" not in caplog.text


def test_a_folder_given_twice_or_inside_another_input_is_not_called_empty(tmp_path, make_tone, caplog):
    """`wavegen prep rec rec/live`: the second input's files were found already through the first, and prep
    warned "no audio files found in rec/live", which holds them. Each file is taken once, said of no folder."""
    tones(tmp_path / "rec", make_tone, 2)
    tones(tmp_path / "rec" / "live", make_tone, 2, seconds=1.5)
    (tmp_path / "empty").mkdir()
    with caplog.at_level("WARNING"):
        m = prep([tmp_path / "rec", tmp_path / "rec" / "live", tmp_path / "rec", tmp_path / "empty"],
                 tmp_path / "c", val_fraction=0, test_fraction=0)
    assert len(m["files"]) == 4 and m["skipped"] == []
    assert [r.getMessage() for r in caplog.records if "no audio files" in r.getMessage()] == [
        f"no audio files found in {tmp_path / 'empty'}"]
