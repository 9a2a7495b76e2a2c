"""model.labels when a run takes its settings from another run or model folder: the labels are the
new corpus's (data, not a setting), unless --set names them; a mismatch says how to set them."""

import json

import pytest
from conftest import TINY_SAMPLERNN, melody, write_audio_file

from wavegen.cli import main
from wavegen.config import ConfigError
from wavegen.models import resolve_preset
from wavegen.prep import prepare
from wavegen.resolve import resolve_model
from wavegen.train import resolve_run_config

SR = 16000


@pytest.fixture
def labelled_corpus(tmp_path):
    rec = tmp_path / "labelled"
    for i, label in enumerate(["alpha", "alpha", "beta", "beta", "alpha", "beta"]):
        write_audio_file(rec / label / f"{label}{i}.wav", melody(4.0, SR, seed=i), SR)
    prepare([rec], tmp_path / "labelled_corpus", sample_rate=SR, val_fraction=0.2, test_fraction=0.2,
            labels="folders", progress=False)
    return tmp_path / "labelled_corpus"


def cli_train(model, corpus, run, *settings):
    args = ["-q", "train", "--data", str(corpus), "--model", str(model), "--run", str(run), "--max-steps", "1",
            "--threads", "1"]
    return main(args + [a for s in TINY_SAMPLERNN + list(settings) for a in ("--set", s)])


def test_a_run_folder_as_model_takes_the_labels_of_the_new_corpus(labelled_corpus, tiny_corpus, tmp_path, capsys):
    """It carried the old run's labels: on an unlabelled corpus "model.labels ['alpha', 'beta'] differ
    from the corpus labels []", with no way out named."""
    assert cli_train("samplernn-tiny", labelled_corpus, tmp_path / "labelled_run") == 0
    assert json.loads((tmp_path / "labelled_run" / "config.json").read_text())["model"]["labels"] == ["alpha", "beta"]
    assert cli_train(tmp_path / "labelled_run", tiny_corpus, tmp_path / "plain_run") == 0
    assert json.loads((tmp_path / "plain_run" / "config.json").read_text())["model"]["labels"] == []
    assert cli_train(tmp_path / "plain_run" / "best", labelled_corpus, tmp_path / "again") == 0
    assert json.loads((tmp_path / "again" / "config.json").read_text())["model"]["labels"] == ["alpha", "beta"]


def test_labels_set_by_hand_that_differ_from_the_corpus_say_how_to_set_them(labelled_corpus, tiny_corpus, tmp_path):
    base = resolve_preset("samplernn-tiny")
    with pytest.raises(ConfigError) as err:
        resolve_run_config(base, labelled_corpus, ['model.labels=["beta","alpha"]'])
    assert str(err.value) == (f"model.labels ['beta', 'alpha'] differ from the labels of corpus {labelled_corpus}, "
                              "['alpha', 'beta']: a model trains on its corpus's labels; set them with "
                              """--set 'model.labels=["alpha","beta"]'""")
    trained = tmp_path / "labelled_run"
    assert cli_train("samplernn-tiny", labelled_corpus, trained) == 0
    with pytest.raises(ConfigError, match=r"""--set 'model.labels=\[\]'"""):  # --set wins over the corpus
        resolve_run_config(resolve_model(trained).config, tiny_corpus, ["model.labels=alpha,beta"])
