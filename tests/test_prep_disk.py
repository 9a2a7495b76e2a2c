"""wavegen prep on a disk that cannot take the corpus: the room it takes, said before and when a write fails."""

import errno
import os

import pytest

import wavegen.prep_decode as prep_decode
from test_prep_inputs import SR, prep, tones

from wavegen.corpus import Corpus, CorpusError


def _prep_limited(rec, out, file_size_limit):
    """`wavegen prep rec out` in a process whose files may not grow past ``file_size_limit`` bytes
    (RLIMIT_FSIZE, SIGXFSZ ignored: a write past it fails with EFBIG, as a full disk fails with ENOSPC)."""
    import resource
    import signal
    import subprocess
    import sys

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run([sys.executable, "-m", "wavegen", "prep", str(rec), str(out)], preexec_fn=limit,
                          capture_output=True, text=True, timeout=120)


def test_a_write_that_fails_says_why_in_one_line(tmp_path, make_tone):
    """It said "cannot write the corpus in small/corpus: 128000 requested and 12288 written" (numpy's
    tofile), not why: here EFBIG ("File too large"); on a full disk, "No space left on device"."""
    tones(tmp_path / "rec", make_tone, 3, seconds=4.0)  # 128,000 bytes of int16 each, after trimming a little less
    out = _prep_limited(tmp_path / "rec", tmp_path / "c", 50_000)
    assert out.returncode == 2, out.stderr
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"wavegen prep: error: cannot write the corpus in {tmp_path / 'c'}: "
                                               f"{os.strerror(errno.EFBIG)}"), err
    assert "requested and" not in err[0] and ".pcm)" in err[0]
    assert not list((tmp_path / "c").glob(".prep-*"))


def test_a_disk_without_room_for_a_split_is_named_before_it_is_mapped(tmp_path, make_tone, monkeypatch):
    """The split arrays are filled through a memory map, where a full disk is a SIGBUS: room is checked first."""
    import shutil
    from collections import namedtuple

    tones(tmp_path / "rec", make_tone, 3)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(CorpusError) as caught:
        prep([tmp_path / "rec"], tmp_path / "c")
    assert str(caught.value).startswith(f"cannot write the corpus in {tmp_path / 'c'}: No space left on device: "
                                        "preparing it takes up to 0.3 MB free there (its audio as 16-bit samples")
    assert str(caught.value).endswith(", 1,000 bytes are free now; the corpus there, if any, is kept as it was")


def test_a_corpus_folder_that_takes_no_new_file_is_named_not_prep_s_temporary_folder(tmp_path, make_tone):
    """A corpus folder made immutable (chattr +i) said "cannot write the corpus in c: Operation not permitted
    (c/.prep-87mztfz6)", naming a folder that never existed."""
    import subprocess

    tones(tmp_path / "rec", make_tone, 3)
    prep([tmp_path / "rec"], tmp_path / "c")
    try:
        if subprocess.run(["chattr", "+i", str(tmp_path / "c")], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available here")
    except OSError:
        pytest.skip("no chattr here")
    try:
        with pytest.raises(CorpusError) as info:
            prep([tmp_path / "rec"], tmp_path / "c", top_db=30.0)
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "c")], capture_output=True)
    assert str(info.value) == f"cannot write the corpus in {tmp_path / 'c'}: {os.strerror(errno.EPERM)}"
    assert Corpus(tmp_path / "c").manifest["params"]["top_db"] == 40.0  # the corpus there is kept


def test_the_room_a_file_whose_header_lies_takes_is_what_its_size_can_hold(tmp_path, make_tone, caplog):
    """A FLAC of 2 s whose header declares 2**36 frames (1193 h) counted 275 GB of room: prep warned of a disk too
    small on any machine. It counts what the file can hold; the prep keeps the audio that decodes."""
    from test_audio_decode import lying_flac

    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    lie = lying_flac(rec / "lie.flac", make_tone)
    found = [(p, rec) for p in sorted(rec.iterdir())]
    need = prep_decode.room_needed(found, SR)
    honest = prep_decode.room_needed([f for f in found if f[0] != lie], SR)
    assert honest < need <= honest + 4 * lie.stat().st_size * 65535 // 9 + 64  # its size's bound, 16-bit twice
    assert need < 10**9  # its header's 2**36 frames: 275 GB
    with caplog.at_level("WARNING"):
        m = prep([rec], tmp_path / "c")
    assert m["skipped"] == [] and "takes up to" not in caplog.text
    entry = next(f for f in m["files"] if f["path"] == str(lie))
    assert entry["partial"] and 1.0 <= entry["duration_seconds"] <= 2.0
