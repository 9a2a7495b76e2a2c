"""A link to nothing where a command makes its output folder (folders.ensure_folder, and the folder of an output
file: cli.options.check_output_file), as a user meets it: every command says, in one line, that the link leads
nowhere, naming the link and its target ("a file, not a folder" before, or "cannot make its folder (File
exists)"), and makes nothing at the target."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import prepared_corpus, save_tiny_model


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("links")
    return {"model": save_tiny_model(root / "model", sample_rate=16000),
            "corpus": prepared_corpus(root / "prep", files=2, seconds=1.0), "rec": root / "prep" / "rec"}


def _error(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("below", ["", "sub"])
def test_every_command_names_a_link_to_nothing_where_its_output_folder_goes(made, tmp_path, capsys, below):
    from wavegen.cli import main

    link, target = tmp_path / "link", tmp_path / "gone"
    os.symlink(target, link)
    out = link / below if below else link
    said = f"{link} is a link to {target}, which does not exist"
    commands = {
        "render": (["render", str(made["model"]), "--out", str(out), "--seconds", "0.05"], "--out", "render output"),
        "train": (["train", "--model", "samplernn-tiny", "--data", str(made["corpus"]), "--run", str(out),
                   "--max-steps", "1"], None, "training run"),
        "prep": (["prep", str(made["rec"]), str(out)], None, "corpus"),
        "serve": (["serve", str(made["model"]), "--port", "0", "--archive", str(out)], None, "--archive folder"),
        "eval --json": (["eval", str(made["model"]), "--data", str(made["corpus"]), "--json", str(out / "x.json")],
                        "--json", None),
        "eval --plot": (["eval", "--renders", str(made["rec"]), "--data", str(made["corpus"]), "--plot",
                         str(out / "x.png")], "--plot", None),
    }
    for name, (argv, flag, what) in commands.items():
        assert main(argv) == 2, name
        line = _error(capsys)
        command = argv[0]
        if flag is not None and what is None:  # an output file: its folder, or one above it, is the link
            assert line == (f"wavegen {command}: error: {flag} {argv[argv.index(flag) + 1]}: {said}: make that "
                            f"folder, or give {flag} a file in another folder"), name
        elif flag is not None and not below:  # render's own check of --out, before the model loads
            assert line == f"wavegen {command}: error: --out {said}: make that folder, or give another --out", name
        elif below:
            assert line.startswith(f"wavegen {command}: error: {said}: cannot create the {what} {out}; make that "
                                   f"folder, or give another {what}"), (name, line)
        else:
            assert line == f"wavegen {command}: error: {said}: make that folder, or give another {what}", (name, line)
        assert not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["link"], name


def test_a_chain_of_links_is_named_to_its_end_and_a_link_under_a_file_says_so(tmp_path):
    """A link to a link to nothing was said as "a link to L2, which does not exist: make that folder" (L2 exists, as
    a link: mkdir there fails); a link to FILE/sub as if that folder could be made."""
    from wavegen.folders import link_to_nothing

    (tmp_path / "file").write_text("x")
    os.symlink(tmp_path / "nowhere", tmp_path / "l2")
    os.symlink(tmp_path / "l2", tmp_path / "l1")
    os.symlink(tmp_path / "file" / "sub", tmp_path / "l3")
    assert link_to_nothing(tmp_path / "l1") == (
        f"{tmp_path / 'l1'} is a link to {tmp_path / 'l2'}, a link that leads to {tmp_path / 'nowhere'}, which does "
        "not exist", "make that folder")
    assert link_to_nothing(tmp_path / "l2") == (f"{tmp_path / 'l2'} is a link to {tmp_path / 'nowhere'}, which does "
                                                "not exist", "make that folder")
    assert link_to_nothing(tmp_path / "l3") == (f"{tmp_path / 'l3'} is a link to {tmp_path / 'file' / 'sub'}, which "
                                                "lies under a file, not a folder", "point it at a folder")
