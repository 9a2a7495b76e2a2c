"""`wavegen prep` as a person runs it: what the console shows."""

import subprocess
import sys

import numpy as np
import pytest

from wavegen.audio_decode import AudioError, decode_audio


def _prep(*args, cwd, quiet=False):
    return subprocess.run([sys.executable, "-m", "wavegen", *(["--quiet"] if quiet else []), "prep",
                           *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_a_garbage_mp3_is_named_as_not_mp3_and_the_decoders_notes_stay_off_the_console(tmp_path, make_tone):
    """A garbage .mp3 was skipped as "File does not exist or is not a regular file (possibly a pipe?)",
    after three lines of mpg123's own "Note: Illegal Audio-MPEG-Header ..." on the console."""
    rec = tmp_path / "rec"
    make_tone(rec / "tone.wav", 3.0, 16000)
    (rec / "garbage.mp3").write_bytes(np.random.default_rng(0).bytes(50_000))
    done = _prep(rec, tmp_path / "corpus", cwd=tmp_path, quiet=True)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert not [line for line in lines if line.startswith(("Note:", "[src/", "Warning:"))], done.stderr
    (skip,) = [line for line in lines if "garbage.mp3" in line]
    assert "not decodable as MP3" in skip and "regular file" not in skip and "pipe" not in skip
    assert "the decoder said: " in skip  # its words are kept, in the message
    # the same from the library: AudioError naming the file
    try:
        decode_audio(rec / "garbage.mp3")
    except AudioError as err:
        assert err.path == str(rec / "garbage.mp3") and err.reason.startswith("cannot decode audio (not decodable")
    else:
        raise AssertionError("a garbage .mp3 decoded")


def test_prep_prints_one_summary(tmp_path, make_tone):
    """The CLI printed its own summary ("corpus C: train 0.1 min, ...") after prep's ("prepared C: ...")."""
    rec = tmp_path / "rec"
    for i in range(3):
        make_tone(rec / f"t{i}.wav", 2.0, 16000, freq=200 + 100 * i)
    done = _prep(rec, tmp_path / "corpus", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summaries = [line for line in done.stderr.splitlines() if " train " in line]
    assert len(summaries) == 1 and summaries[0].startswith("prepared "), done.stderr
    again = _prep(rec, tmp_path / "corpus", cwd=tmp_path)  # up to date: one line says so, no summary
    assert [line for line in again.stderr.splitlines() if "corpus" in line] == \
        [f"corpus up to date: {tmp_path / 'corpus'}"], again.stderr


def test_sigterm_stops_prep_as_ctrl_c_does_keeping_the_old_corpus_and_no_temporary_folder(tmp_path, make_tone):
    """SIGTERM (kill, timeout, a scheduler) killed prep mid-way, leaving its temporary folder of decoded audio
    in the corpus folder; it now means what Ctrl-C means (wavegen.signals): exit 130, the old corpus as it was."""
    import os
    import signal

    rec = tmp_path / "rec"
    make_tone(rec / "a.wav", 2.0, 16000, 330)
    assert _prep(rec, tmp_path / "c", cwd=tmp_path, quiet=True).returncode == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir() if p.is_file() and p.name != ".lock"}
    for i in range(1500):  # clicks, each skipped with a line: prep is mid-way once the first line shows (seconds to go)
        make_tone(rec / "clicks" / f"c{i:04d}.wav", 0.02, 16000, 200 + i)
    proc = subprocess.Popen([sys.executable, "-m", "wavegen", "prep", str(rec), str(tmp_path / "c")],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()
    assert first.startswith("skipping "), first
    os.kill(proc.pid, signal.SIGTERM)
    rest = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and rest.strip().splitlines()[-1] == "wavegen prep: interrupted", rest[-2000:]
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted([*before, ".lock"])  # no .prep-* left
    assert all((tmp_path / "c" / name).read_bytes() == data for name, data in before.items())


@pytest.mark.parametrize("corpus_was_there", [False, True])
def test_a_stopped_prep_of_a_new_corpus_leaves_no_folder_and_one_over_a_corpus_keeps_it(tmp_path, make_tone,
                                                                                        corpus_was_there):
    """A prep stopped (SIGTERM, as Ctrl-C) in a corpus folder it made (and the new parent folder it made for it) left
    both behind, the corpus folder holding only its .lock; now neither is left. Stopped over a corpus prepared
    before, that corpus is kept as it was, loadable, its .lock beside it."""
    import os
    import signal

    from wavegen.corpus import Corpus

    rec, corpus = tmp_path / "rec", tmp_path / "new" / "c"
    make_tone(rec / "a.wav", 2.0, 16000, 330)
    if corpus_was_there:
        assert _prep(rec, corpus, cwd=tmp_path, quiet=True).returncode == 0
    before = {p.name: p.read_bytes() for p in corpus.glob("*") if p.name != ".lock"}
    for i in range(1500):  # clicks, each skipped with a line: prep is mid-way once the first line shows (seconds to go)
        make_tone(rec / "clicks" / f"c{i:04d}.wav", 0.02, 16000, 200 + i)
    proc = subprocess.Popen([sys.executable, "-m", "wavegen", "prep", str(rec), str(corpus)], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()
    assert first.startswith("skipping "), first
    os.kill(proc.pid, signal.SIGTERM)
    rest = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and rest.strip().splitlines()[-1] == "wavegen prep: interrupted", rest[-2000:]
    if not corpus_was_there:
        assert not (tmp_path / "new").exists()
        return
    assert sorted(p.name for p in corpus.iterdir()) == sorted([*before, ".lock"])
    assert all((corpus / name).read_bytes() == data for name, data in before.items())
    assert Corpus(corpus).seconds("train") > 0


def test_a_refused_prep_of_a_new_corpus_leaves_no_folder(tmp_path):
    """No usable audio (every file silent): the refusal left the corpus folder it made, holding only its .lock."""
    import soundfile as sf

    (tmp_path / "rec").mkdir()
    sf.write(tmp_path / "rec" / "quiet.wav", np.zeros(16000, dtype=np.float32), 16000)
    done = _prep(tmp_path / "rec", tmp_path / "c", cwd=tmp_path, quiet=True)
    assert done.returncode == 2 and "no usable audio" in done.stderr, done.stderr
    assert not (tmp_path / "c").exists()



def test_a_full_disk_under_a_new_corpus_folder_says_the_room_free_on_that_disk(tmp_path, make_tone, monkeypatch,
                                                                             capsys):
    """A disk that fills as prep decodes into a corpus folder it made: the folder is gone again as it stops, and
    the line said "0 bytes are free now", the room free asked of that folder, removed. It says the disk's."""
    import errno
    import shutil
    from collections import namedtuple

    import wavegen.prep_decode as prep_decode
    from wavegen.cli import main

    make_tone(tmp_path / "rec" / "a.wav", 2.0, 16000, 330)
    usage, real = namedtuple("usage", "total used free"), shutil.disk_usage

    def disk_usage(path):
        real(path)  # a folder that is not there: FileNotFoundError, as ever
        return usage(10**12, 10**12 - 123_456_789, 123_456_789)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)
    monkeypatch.setattr(prep_decode, "decode_files", full)
    assert main(["-q", "prep", str(tmp_path / "rec"), str(tmp_path / "new" / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wavegen prep: error: cannot write the corpus in {tmp_path / 'new' / 'c'}: No space "
                          "left on device: preparing it takes up to ") and err.count("\n") == 1, err
    assert err.endswith(", 123.5 MB are free now; the corpus there, if any, is kept as it was\n"), err
    assert not (tmp_path / "new").exists()


# `wavegen prep argv[1] argv[2]` sent a SIGTERM once its temporary folder is made, and the same again (a recipe's
# forwarding of it, beside its sender's to the process group) as the stop removes that folder
TERM_THEN_ITS_ECHO = """
import os, shutil, signal, sys
import wavegen.cli, wavegen.prep

real_prepare_in, real_rmtree = wavegen.prep._prepare_in, shutil.rmtree


def prepare_in(tmp, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return real_prepare_in(tmp, *args, **kwargs)


def rmtree(path, *args, **kwargs):
    if os.path.basename(path).startswith(".prep-"):
        os.kill(os.getpid(), signal.SIGTERM)
    return real_rmtree(path, *args, **kwargs)


wavegen.prep._prepare_in, shutil.rmtree = prepare_in, rmtree
sys.exit(wavegen.cli.main(["prep", "--quiet", sys.argv[1], sys.argv[2]]))
"""


def test_a_sigterm_handed_on_twice_does_not_cut_preps_cleanup_short(tmp_path, make_tone):
    """A SIGTERM forwarded by a recipe beside its sender's (ms apart): the second was a Ctrl-C again, raised inside
    the first's cleanup, and prep's temporary folder of decoded audio (gigabytes) stayed in the corpus folder. Now one
    within TERM_ECHO_SECONDS of the first asks nothing more: the folder is removed, one line, exit 130."""
    rec, corpus = tmp_path / "rec", tmp_path / "c"
    make_tone(rec / "a.wav", 2.0, 16000, 330)
    done = subprocess.run([sys.executable, "-c", TERM_THEN_ITS_ECHO, str(rec), str(corpus)], capture_output=True,
                          text=True, timeout=120)
    assert (done.returncode, done.stderr) == (130, "wavegen prep: interrupted\n")
    assert not corpus.exists()  # no .prep-* left, nothing published: the new corpus's folder is gone with its lock
