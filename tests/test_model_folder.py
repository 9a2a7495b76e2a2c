"""A model folder (best/, an exported model) records its weights' size and sha256 (weights.json):
a weights file damaged in the middle, size and header intact, is refused by name wherever the
model is loaded (info, render, eval); a folder of an older wavegen, without the record, is trusted."""

import json
import shutil
import struct

import pytest
from conftest import prepared_corpus, save_tiny_model

from wavegen.checkpoint import CheckpointError, save_model
from wavegen.weights_file import tensors_sha256
from wavegen.cli import main
from wavegen.fileio import sha256_file
from wavegen.resolve import WEIGHTS_RECORD, resolve_model

TINY = {"dim": 16, "emb_size": 4}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepared_corpus(tmp_path_factory.mktemp("model_folder"), files=4, seconds=3.0, sample_rate=8000,
                           val_fraction=0.25, test_fraction=0.25)


def damage_the_middle(weights, count=4000):
    """The repro: bytes just after the header set to 0xff; the size and the header stay as they were."""
    data = bytearray(weights.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    data[8 + n:8 + n + count] = b"\xff" * count
    weights.write_bytes(bytes(data))


def one_line_naming(capsys, path) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err, err
    assert "its content differs from what was written (sha256)" in err and "--checkpoint" in err, err
    return err


def test_the_record_is_written_with_the_folder(tmp_path):
    folder = save_tiny_model(tmp_path / "m", **TINY)
    weights = folder / "model.safetensors"
    assert json.loads((folder / WEIGHTS_RECORD).read_text()) == {
        "files": {"model.safetensors": {"bytes": weights.stat().st_size, "sha256": sha256_file(weights),
                                        "tensors_sha256": tensors_sha256(weights)}}}
    ref = resolve_model(folder)
    assert ref.load() is not None and ref.sha256 == sha256_file(weights)
    assert ref.weights_sha256() == sha256_file(weights)  # the digest load() checked, for render's and serve's params


def test_weights_damaged_in_the_middle_are_refused_by_name(tmp_path, corpus, capsys):
    run = tmp_path / "run"
    save_tiny_model(run / "best", sample_rate=8000, **TINY)
    weights = run / "best" / "model.safetensors"
    size = weights.stat().st_size
    damage_the_middle(weights)
    assert weights.stat().st_size == size
    with pytest.raises(CheckpointError, match=rf"^{weights}: its content differs from what was written \(sha256\)"):
        resolve_model(run).load()
    capsys.readouterr()
    assert main(["info", str(run)]) == 2
    one_line_naming(capsys, weights)
    assert main(["render", str(run), "--seconds", "1", "--out", str(tmp_path / "rd")]) == 2
    one_line_naming(capsys, weights)
    assert not (tmp_path / "rd" / "stream_000.wav").exists()
    assert main(["eval", str(run), "--data", str(corpus)]) == 2
    one_line_naming(capsys, weights)


def test_a_size_changed_or_unreadable_record_is_named(tmp_path):
    folder = save_tiny_model(tmp_path / "m", **TINY)
    weights = folder / "model.safetensors"
    with open(weights, "ab") as f:
        f.write(b"\0" * 16)  # safetensors pads its header; bytes after the data are not read
    with pytest.raises(CheckpointError, match=rf"^{weights}: \d+ bytes, \d+ were written \(truncated or changed\)"):
        resolve_model(folder).load()
    (folder / WEIGHTS_RECORD).write_text("{")
    with pytest.raises(CheckpointError, match=rf"^{folder / WEIGHTS_RECORD}: not valid JSON"):
        resolve_model(folder).load()
    (folder / WEIGHTS_RECORD).write_text("[]")
    with pytest.raises(CheckpointError, match=rf"^{folder / WEIGHTS_RECORD}: not a record"):
        resolve_model(folder).load()


def test_a_folder_of_an_older_wavegen_without_the_record_still_loads(tmp_path, corpus, capsys):
    run = tmp_path / "run"
    save_tiny_model(run / "best", sample_rate=8000, **TINY)
    (run / "best" / WEIGHTS_RECORD).unlink()
    ref = resolve_model(run)
    # trusted (no record to check against); load hashes the bytes it read (what a render records is what it played)
    assert ref.load() is not None and ref.sha256 == sha256_file(ref.weights)
    assert ref.weights_sha256() == sha256_file(ref.weights)
    assert main(["info", str(run)]) == 0
    assert main(["eval", str(run), "--data", str(corpus)]) == 0
    capsys.readouterr()


def test_a_copied_or_resaved_folder_keeps_a_true_record(tmp_path):
    """A folder copied whole stays verified; a folder written again over a damaged one (train's best/,
    bestmodel.restore_best) records its new weights."""
    folder = save_tiny_model(tmp_path / "m", **TINY)
    shutil.copytree(folder, tmp_path / "copy")
    assert resolve_model(tmp_path / "copy").load() is not None
    damage_the_middle(folder / "model.safetensors")
    model = resolve_model(tmp_path / "copy").load()
    save_model(model, resolve_model(tmp_path / "copy").config, folder)
    assert resolve_model(folder).load() is not None
