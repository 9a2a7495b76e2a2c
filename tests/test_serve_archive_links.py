"""wavegen serve --archive where the archive's state is behind a symbolic link that leads nowhere useful: a link to
nothing at .state/params.json is named as a link with its target (as one at the snapshot's name is), and a .state
that is no folder (a link to nothing, a link to a file, a file) is refused in one line naming it, before the model
loads, with nothing written anywhere. Real files and links; the server in-process (test_serve.refused_here).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from test_serve import SR, make_model, refused_here
from test_serve_archive import PARAMS, _archive


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("serve_archive_links") / "tiny")


def _everything(root: Path) -> dict[str, object]:
    """Every path under ``root``, links not followed: a link → ("link", its target), a file → its bytes, a folder →
    "folder"; what a refusal must leave as it was (the lock file too: a refused folder gains none)."""
    seen = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            seen[name] = ("link", os.readlink(path))
        elif path.is_dir():
            seen[name] = "folder"
        else:
            seen[name] = path.read_bytes()
    return seen


def test_a_params_link_to_nothing_is_named_with_its_target_beside_a_good_snapshot(tmp_path):
    """params.json a link to nothing, the snapshot readable: refused as a link naming its target (it said "cannot
    read ...: No such file or directory; make it readable"), not written again from the snapshot over the link."""
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    folder = tmp_path / "archive"
    _archive(folder, 5.0, 1.0)
    params = folder / ".state" / "params.json"
    params.unlink()
    params.symlink_to(tmp_path / "elsewhere" / "params.json")
    before = _everything(tmp_path)
    with pytest.raises(ServeError) as err:
        Archive(folder, SR, PARAMS, part_seconds=3.0).open()
    said = str(err.value)
    assert said.startswith(f"{params} is a link to {tmp_path / 'elsewhere' / 'params.json'}, which does not exist"), said
    assert "\n" not in said and "choose another --archive" in said and "make it readable" not in said, said
    assert _everything(tmp_path) == before


LINKS_TO_NOTHING = {  # what .state/params.json is made → the words its refusal begins with, after its path
    "a loop": lambda params, tmp: (params.symlink_to(params), f"is a link to {params}, which leads back to itself"),
    "under a file": lambda params, tmp: ((tmp / "a_file").write_text("the user's"),
                                         params.symlink_to(tmp / "a_file" / "params.json"),
                                         f"is a link to {tmp / 'a_file' / 'params.json'}, which lies under a file")[1:],
}


@pytest.mark.parametrize("what", list(LINKS_TO_NOTHING))
def test_a_params_link_that_leads_nowhere_is_named_as_a_link_not_as_a_file_to_make_readable(tmp_path, what):
    """A loop of links, or a link under a file, at params.json: named as the link it is, as one to nothing is (it
    said "cannot read ...: Too many levels of symbolic links; make it readable", or "Not a directory; make it
    readable": no permission would mend either); nothing written."""
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    folder = tmp_path / "archive"
    _archive(folder, 5.0, 1.0)
    params = folder / ".state" / "params.json"
    params.unlink()
    _, begins = LINKS_TO_NOTHING[what](params, tmp_path)
    before = _everything(tmp_path)
    with pytest.raises(ServeError) as err:
        Archive(folder, SR, PARAMS, part_seconds=3.0).open()
    said = str(err.value)
    assert said.startswith(f"{params} {begins}"), said
    assert "\n" not in said and "make it readable" not in said and "point it at the archive's params.json" in said, said
    assert _everything(tmp_path) == before


def test_a_params_link_to_nothing_says_the_way_on_the_snapshot_gives_and_that_way_works(tmp_path):
    """params.json a link to nothing, its target lost: pointing the link at it cannot be done, and choosing another
    --archive leaves the broadcast behind. Where the snapshot records the parameters, the refusal says the way on
    (remove the link: params.json is written again from the snapshot); taken, the archive goes on where it was.
    Without a readable snapshot that way is not offered (the parts would then be refused as no archive)."""
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    folder = tmp_path / "archive"
    _archive(folder, 5.0, 1.0)
    params = folder / ".state" / "params.json"
    params.unlink()
    params.symlink_to(tmp_path / "lost" / "params.json")
    with pytest.raises(ServeError) as err:
        Archive(folder, SR, PARAMS, part_seconds=3.0).open()
    said = str(err.value)
    assert ", or remove the link (then params.json is written again from what .state/snapshot.npz recorded), or " \
        "choose another --archive" in said and "\n" not in said, said
    params.unlink()  # as the refusal says
    a = Archive(folder, SR, PARAMS, part_seconds=3.0)
    assert a.open()[1] == 5 * SR
    a.close()
    assert params.is_file() and not params.is_symlink()

    snap = folder / ".state" / "snapshot.npz"
    for path in (snap, snap.with_name("snapshot.prev.npz")):
        if path.exists():
            path.write_bytes(b"PK")  # no snapshot readable: no parameters to write it again from
    params.unlink()
    params.symlink_to(tmp_path / "lost" / "params.json")
    with pytest.raises(ServeError) as err:
        Archive(folder, SR, PARAMS, part_seconds=3.0).open()
    assert "point it at the archive's params.json, or choose another --archive" in str(err.value), str(err.value)
    assert "remove the link" not in str(err.value), str(err.value)


def _state_not_a_folder(folder: Path, what: str) -> str:
    """``folder``/.state made ``what``; → the words a refusal must begin with."""
    state = folder / ".state"
    if state.exists():
        os.rename(state, folder.parent / "state_moved_away")
    if what == "a link to nothing":
        state.symlink_to(folder.parent / "gone")
        return f"{state} is a link to {folder.parent / 'gone'}, which does not exist"
    if what == "a link to a file":
        (folder.parent / "a_file").write_text("the user's")
        state.symlink_to(folder.parent / "a_file")
        return f"{state} is a link to {folder.parent / 'a_file'}, a file, not a folder"
    state.write_text("the user's")
    return f"{state} is a file, not a folder"


WHAT = ["a link to nothing", "a link to a file", "a file"]


@pytest.mark.parametrize("archived", [False, True], ids=["new", "archived"])
@pytest.mark.parametrize("what", WHAT)
def test_a_state_that_is_no_folder_is_refused_by_serve_before_the_model_loads(model, tmp_path, what, archived):
    """A new archive was refused as "cannot create or use it (.../.state): File exists" after the model's load and
    timing (its .lock left behind); one with parts as having "no .state/params.json". Now: one line naming .state
    (and where its link leads), before the model loads, nothing written (no .lock, no folder where it leads)."""
    folder = tmp_path / "archive"
    if archived:
        _archive(folder, 5.0, 1.0)
    else:
        folder.mkdir()
    begins = _state_not_a_folder(folder, what)
    before = _everything(tmp_path)
    said = refused_here(model, guard=False, archive=str(folder))
    assert said.startswith(f"{begins}: the archive keeps its params.json and snapshots in a folder there"), said
    assert "\n" not in said and "choose another --archive" in said, said
    assert _everything(tmp_path) == before


@pytest.mark.parametrize("what", WHAT)
def test_a_state_that_is_no_folder_is_refused_by_the_archive_itself(tmp_path, what):
    """Archive.open() (serve's check before the model may be passed by): the same one line, nothing written."""
    from wavegen.serve import ServeError
    from wavegen.serve.archive import Archive

    folder = tmp_path / "archive"
    folder.mkdir()
    begins = _state_not_a_folder(folder, what)
    before = _everything(tmp_path)
    with pytest.raises(ServeError) as err:
        Archive(folder, SR, PARAMS, part_seconds=3.0).open()
    assert str(err.value).startswith(begins) and "\n" not in str(err.value), str(err.value)
    assert _everything(tmp_path) == before
