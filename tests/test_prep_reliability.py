"""wavegen.prep on an artist's folder as it is found: a corpus on a read-only disk, a moved library's
links to nothing, link loops, many duplicates; what prep says of each, and that it goes on."""

import contextlib
import os
import shutil
import subprocess

import pytest

from test_prep_inputs import prep, tones
from test_prep_memory import _capped_prep, _declaring_hours

from wavegen.corpus import Corpus, CorpusError
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


@pytest.mark.parametrize("touched", [False, True])
def test_a_read_only_corpus_that_skipped_a_file_for_lack_of_memory_is_kept_as_it_is(tmp_path, make_tone, touched):
    """A corpus that skipped a file for lack of memory, made read-only: the rerun tries the file again, and
    failed on the lock file ("cannot open the lock file of this prep"), exit 2, though the corpus there is the
    one it would keep. touched: the inputs' times changed too (their bytes read again)."""
    rec, corpus = tmp_path / "rec", tmp_path / "c"
    tones(rec, make_tone, 3)
    _declaring_hours(rec / "concert.flac")
    first = _capped_prep(64, rec, corpus)
    assert [s.get("retry") for s in first.manifest["skipped"]] == [True]
    if touched:
        for path in rec.iterdir():
            os.utime(path)
    before = {p.name: p.read_bytes() for p in corpus.iterdir()}
    with read_only(corpus), read_only(corpus / ".lock"):
        again = _capped_prep(64, rec, corpus)  # exit 0: asserted there
    assert again.manifest == first.manifest and again.decoded == []
    assert {p.name: p.read_bytes() for p in corpus.iterdir()} == before
    said = [line for line in again.log.splitlines() if "cannot take its lock" in line]
    assert len(said) == 1 and str(corpus) in said[0] and "concert.flac" in said[0], again.log
    assert "the file it skipped for lack of memory" in said[0] and "try it again)" in said[0], said[0]
    assert "lock file" not in again.log.replace(said[0], "") and "error" not in again.log


@contextlib.contextmanager
def small_disk(folder, kib):
    """A file system of ``kib`` KiB mounted at folder (tmpfs) for the while: a full disk, for real (ENOSPC).
    Skips where mounting is not allowed (not root, or a container without the capability)."""
    folder.mkdir()
    try:
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(folder)],
                              capture_output=True)
    except OSError:
        pytest.skip("no mount here")
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_disk_that_fills_mid_prep_says_how_much_room_it_takes_and_keeps_the_corpus(tmp_path, make_tone, caplog):
    """A disk that filled while prep decoded said "No space left on device (c/.prep-ixwgsfrd/2.pcm)", naming a
    file in a folder already removed and not how much room the corpus takes. Now: said before decoding, and one
    line when it stops; the corpus there byte for byte as it was, nothing of prep's left."""
    rec = tmp_path / "rec"
    tones(rec, make_tone, 3, seconds=1.5)
    with small_disk(tmp_path / "disk", 400) as disk:
        corpus = disk / "c"
        first = prep([rec], corpus)
        before = {p.name: p.read_bytes() for p in corpus.iterdir() if p.name != ".lock"}
        free = shutil.disk_usage(disk).free
        for i in range(5):  # 1.2 MB more to prepare than the disk holds
            make_tone(rec / f"more{i}.wav", 2.5, 16000, 500 + 30 * i)
        with caplog.at_level("WARNING", logger="wavegen.prep"), pytest.raises(CorpusError) as caught:
            prep([rec], corpus)
        assert str(caught.value).startswith(f"cannot write the corpus in {corpus}: No space left on device: preparing "
                                            "it takes up to 1.2 MB free there (its audio as 16-bit samples twice over")
        assert str(caught.value).endswith(f", {free / 1e6:.1f} MB are free now; the corpus there, if any, is kept "
                                          "as it was")
        assert f"{corpus}: preparing it takes up to 1.2 MB free there" in caplog.text  # said before decoding
        assert {p.name: p.read_bytes() for p in corpus.iterdir() if p.name != ".lock"} == before
        assert shutil.disk_usage(disk).free == free  # nothing half-written left
        assert Corpus(corpus).manifest == first


def test_many_duplicates_are_summed_up_as_one_reason(tmp_path, make_tone, caplog):
    """Each "duplicate of <its original>" counted as a reason of its own: the summary line read
    "1: duplicate of .../t00.wav; 1: duplicate of .../t01.wav; 25 other reasons"."""
    rec = tmp_path / "rec"
    tones(rec / "album", make_tone, SKIP_LINES + 7)
    (rec / "backup").mkdir()
    for original in (rec / "album").iterdir():
        (rec / "backup" / original.name).write_bytes(original.read_bytes())
    with caplog.at_level("WARNING", logger="wavegen.prep"):
        m = prep([rec], tmp_path / "c")
    assert len(m["skipped"]) == SKIP_LINES + 7
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
    assert summary == ["skipped 7 more files without a line each (7: duplicate of a file kept); --verbose names "
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
    assert "passed over 31 more links, files or folders without a line each (31: a link to nothing); " \
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


def test_a_file_removed_after_the_search_is_skipped_with_why_and_prepared_once_it_is_back(tmp_path, make_tone,
                                                                                        monkeypatch):
    """A file found by the search and gone before it is read (a sync client replacing it, say): skipped with the
    system's reason, the others prepared; back in place, the next prep takes it (the corpus is not up to date)."""
    import wavegen.prep_inputs as prep_inputs

    rec = tmp_path / "rec"
    tones(rec, make_tone, 3)
    gone = rec / "t01.wav"
    kept = gone.read_bytes()
    search = prep_inputs.discover

    def search_then_remove(*args, **kwargs):
        found = search(*args, **kwargs)
        gone.unlink()
        return found

    monkeypatch.setattr(prep_inputs, "discover", search_then_remove)
    m = prep([rec], tmp_path / "c")
    assert m["skipped"] == [{"path": str(gone), "reason": "cannot read file (No such file or directory)"}]
    assert sorted(os.path.basename(f["path"]) for f in m["files"]) == ["t00.wav", "t02.wav"]
    monkeypatch.setattr(prep_inputs, "discover", search)
    gone.write_bytes(kept)
    m = prep([rec], tmp_path / "c")
    assert m["skipped"] == [] and len(m["files"]) == 3
