"""A model config file written by hand given to ``train --model``: the data.sample_rate it gives itself, where
the corpus is at another rate, is refused in one line naming the file, the rate and the corpus's (as ``--set
data.sample_rate`` is), not replaced by the corpus's rate without a word. A preset's rate, and a run's
config.json's (the rate of the corpus it trained on, as a run folder's), follow the corpus."""

import json

import pytest
from conftest import prepared_corpus

from wavegen.cli import main
from wavegen.resolve import resolve_model
from wavegen.resolve_config import check_rate_given

SR = 8000
TINY = {"model_type": "samplernn", "model": {"frame_sizes": [16, 4], "dim": 16, "emb_size": 8}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepared_corpus(tmp_path_factory.mktemp("rate"), files=3, seconds=1.0, sample_rate=SR,
                           val_fraction=0.34, test_fraction=0.0)


def write(path, content) -> str:
    path.write_text(json.dumps(content))
    return str(path)


@pytest.mark.parametrize("content", [
    {**TINY, "data": {"sample_rate": 16000}},  # naming no preset: the rate is required, and written as wanted
    {"preset": "samplernn-tiny", "data": {"sample_rate": 16000}},
], ids=["no preset", "over a preset"])
def test_a_rate_the_file_gives_that_is_not_the_corpus_s_is_refused_naming_both(corpus, tmp_path, capsys, content):
    path, run = write(tmp_path / "m.json", content), tmp_path / "run"
    assert main(["-q", "train", "--data", str(corpus), "--model", path, "--run", str(run), "--max-steps", "1",
                 "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"wavegen train: error: {path}: data.sample_rate 16000, but corpus {corpus} is at {SR} Hz: a run "
                   f"trains at its corpus's rate; give {SR} in the file (or leave it out where the file names a "
                   f"preset), or prepare the corpus at 16000 Hz"), err
    assert not run.exists()  # refused before the run was begun
    assert json.loads((tmp_path / "m.json").read_text()) == content


@pytest.mark.parametrize("content, given", [
    ({**TINY, "data": {"sample_rate": SR}}, SR),  # the corpus's own rate: nothing to say
    ({"preset": "samplernn-tiny"}, None),  # the preset's rate (16 kHz) follows the corpus, as the preset's name does
    ({**TINY, "data": {"sample_rate": 16000, "corpus": "/elsewhere"}}, None),  # a run's config.json
], ids=["the corpus's rate", "a preset's", "a run's config.json"])
def test_a_rate_that_follows_the_corpus_or_matches_it_is_taken(corpus, tmp_path, content, given):
    ref = resolve_model(write(tmp_path / "m.json", content))
    assert ref.rate_given == given
    check_rate_given(str(tmp_path / "m.json"), ref.rate_given, str(corpus))  # no error


def test_a_preset_named_alone_follows_the_corpus():
    assert resolve_model("samplernn-tiny").rate_given is None
