"""wavegen.prep on an artist's folder as it is found: a corpus on a read-only disk, a moved library's
links to nothing, link loops, many duplicates; what prep says of each, and that it goes on."""

import contextlib
import os
import subprocess

import pytest

from test_prep_inputs import prep, tones

from wavegen.corpus import CorpusError
from wavegen.prep_inputs import SKIP_LINES


@contextlib.contextmanager
def read_only(folder):
    """A folder or file made read-only for the while: chattr +i for root (whom file modes do not stop), else chmod."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555 if folder.is_dir() else 0o444)
        try:
            yield
        finally:
            folder.chmod(mode)
        return
    try:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available here")
    except OSError:
        pytest.skip("no chattr here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)


def test_a_read_only_corpus_of_touched_inputs_is_up_to_date(tmp_path, make_tone, caplog):
    """Inputs touched (a copy, a backup restore) and the corpus read-only: the rehash found the same bytes,
    then taking the folder's lock to record it failed the whole prep ("cannot open the lock file")."""
    rec, corpus = tmp_path / "rec", tmp_path / "c"
    tones(rec, make_tone, 3)
    first = prep([rec], corpus)
    for path in rec.iterdir():
        os.utime(path)
    # as on a read-only disk: no file written, the lock file not opened for writing
    with read_only(corpus), read_only(corpus / ".lock"), caplog.at_level("INFO", logger="wavegen.prep"):
        again = prep([rec], corpus)
    assert again == first
    assert f"cannot record in {corpus / 'manifest.json'} that its inputs are unchanged" in caplog.text
    assert "corpus up to date" in caplog.text


def test_many_duplicates_are_summed_up_as_one_reason(tmp_path, make_tone, caplog):
    """Each "duplicate of <its original>" counted as a reason of its own: the summary line read
    "1: duplicate of .../t00.wav; 1: duplicate of .../t01.wav; 25 other reason(s)"."""
    rec = tmp_path / "rec"
    tones(rec / "album", make_tone, SKIP_LINES + 7)
    (rec / "backup").mkdir()
    for original in (rec / "album").iterdir():
        (rec / "backup" / original.name).write_bytes(original.read_bytes())
    with caplog.at_level("WARNING", logger="wavegen.prep"):
        m = prep([rec], tmp_path / "c")
    assert len(m["skipped"]) == SKIP_LINES + 7
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
    assert summary == ["skipped 7 more file(s) without a line each (7: duplicate of a file kept); --verbose names "
                       "them, and manifest.json's \"skipped\" lists every skipped file and why"]


def test_a_moved_library_s_links_are_named_up_to_a_limit_then_summed_up(tmp_path, make_tone, caplog):
    """A folder of links into a library moved away wrote a warning line for every link."""
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    (rec / "links").mkdir()
    for i in range(SKIP_LINES + 30):
        os.symlink(f"/moved/library/song{i:03d}.flac", rec / "links" / f"song{i:03d}.flac")
    os.symlink("/moved/library/cover.jpg", rec / "links" / "cover.jpg")  # said, not listed: not audio
    with caplog.at_level("WARNING", logger="wavegen.prep"):
        m = prep([rec], tmp_path / "c")
    assert len(m["skipped"]) == SKIP_LINES + 30  # the manifest still lists each one named like audio
    lines = [r.getMessage() for r in caplog.records]
    assert sum(line.startswith("skipping ") for line in lines) == SKIP_LINES
    assert "passed over 31 more link(s), file(s) or folder(s) without a line each (31: a link to nothing); " \
           "--verbose names them" in lines
    assert len(m["files"]) == 3


def test_a_link_in_a_loop_is_called_so(tmp_path, make_tone):
    """A link leading round in a loop was "a link to nothing", and as an input "input not found"."""
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    os.symlink("b.wav", rec / "a.wav")
    os.symlink("a.wav", rec / "b.wav")
    m = prep([rec], tmp_path / "c")
    reasons = {os.path.basename(s["path"]): s["reason"] for s in m["skipped"]}
    assert reasons == {"a.wav": "a link in a loop (b.wav)", "b.wav": "a link in a loop (a.wav)"}
    with pytest.raises(CorpusError, match=f"^input {rec / 'a.wav'} is a link in a loop$"):
        prep([rec / "a.wav"], tmp_path / "c2")
