"""wavegen serve --archive where the archive's state is behind a symbolic link that leads nowhere useful: a link to
nothing at .state/params.json is named as a link with its target (as one at the snapshot's name is). Real files and
links.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from test_serve import SR
from test_serve_archive import PARAMS, _archive


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
