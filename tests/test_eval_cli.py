"""`wavegen eval` (NLL) at its edges: a cap of one sample, the progress it shows, untrained weights."""

from __future__ import annotations

import json
import math
import re

import pytest
from conftest import melody, prepared_corpus, save_tiny_model, tiny_config, tiny_run_config, write_audio_file

from wavegen.cli import main
from wavegen.corpus import Corpus

SR = 8000


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", sample_rate=SR, dim=16, emb_size=8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepared_corpus(tmp_path_factory.mktemp("eval"), files=4, seconds=2.0, sample_rate=SR,
                           val_fraction=0.25, test_fraction=0.25)


def test_a_cap_of_one_sample_prints_its_length_and_an_entropy_of_zero(model, corpus, capsys):
    assert main(["-q", "eval", str(model), "--data", str(corpus), "--max-seconds", "0.0002", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 1 and result["seconds"] == 1 / SR
    assert result["unigram_entropy_bits"] == 0.0 and math.copysign(1.0, result["unigram_entropy_bits"]) == 1.0
    assert main(["-q", "eval", str(model), "--data", str(corpus), "--max-seconds", "0.0002"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith(f" bits/sample over 1 sample of {corpus} (0.000125 s; unigram entropy 0.000 bits)"), first


def test_a_count_of_samples_agrees_with_its_noun_and_keeps_its_thousands(model, corpus, capsys):
    """One sample was "over 1 samples"; more keep their thousands separated."""
    assert main(["-q", "eval", str(model), "--data", str(corpus), "--max-seconds", "0.2"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert re.search(rf" bits/sample over 1,600 samples of {re.escape(str(corpus))} \(0\.2 s;", first), first


def test_the_progress_ends_at_the_seconds_scored(model, corpus, capsys, caplog):
    with caplog.at_level("INFO"):
        assert main(["eval", str(model), "--data", str(corpus), "--max-seconds", "0.55", "--json"]) == 0
    seconds = json.loads(capsys.readouterr().out)["seconds"]
    assert seconds == pytest.approx(0.55, abs=1 / SR)
    ends = re.findall(r"eval test: (\S+)/(\S+) s \((\d+)%\)", caplog.text)
    assert ends and ends[-1][0] == ends[-1][1] and ends[-1][2] == "100", caplog.text  # not 0.55/0.6 s (92%)
    assert float(ends[-1][1]) == pytest.approx(seconds, abs=0.005)


def test_untrained_weights_are_said_to_be_a_baseline(corpus, tmp_path, capsys, caplog):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(tiny_config(sample_rate=SR, dim=16, emb_size=8)))
    with caplog.at_level("WARNING"):
        assert main(["eval", str(config), "--data", str(corpus), "--max-seconds", "0.01"]) == 0
    assert "scoring untrained weights (a preset or config file): a baseline, not a model's score" in caplog.text
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main(["eval", str(tmp_path.parent / "nothing"), "--data", str(corpus)]) == 2
    assert "untrained" not in caplog.text


def test_json_takes_a_file_or_prints_and_a_model_after_a_bare_json_is_the_model(model, corpus, tmp_path, capsys):
    """--json [FILE], as in info and bench: --json FILE writes the JSON and prints the text; a model folder
    after a bare --json is the model (argparse gave it to --json as its FILE); a word that names no model
    there stays the FILE, and the missing model is said with where the word went."""
    base = ["-q", "eval", "--data", str(corpus), "--max-seconds", "0.1"]
    assert main([*base, str(model), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert main([*base, "--json", str(model)]) == 0
    assert json.loads(capsys.readouterr().out) == printed
    out = tmp_path / "scores" / "eval.json"
    assert main([*base, str(model), "--json", str(out)]) == 0
    assert capsys.readouterr().out.startswith("test: ") and json.loads(out.read_text()) == printed
    assert main([*base, "--json", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.endswith(f"(--json took {tmp_path / 'nope'} as the file to write: give the model "
                                            "before --json)\n")
    assert main([*base, str(model), "--json", str(tmp_path)]) == 2  # a folder: refused before the scoring
    folder = f"--json {tmp_path}: is a folder; give a file name (e.g. {tmp_path / 'eval.json'})"
    assert folder in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores"]


def test_json_onto_a_file_that_is_not_an_eval_result_is_refused_before_the_scoring(model, corpus, tmp_path, capsys):
    """--json FILE replaced whatever was there, after the work: a render's WAV, or a corpus's manifest.json
    (`--json corpus/manifest.json`: the corpus then read as no corpus), became the result."""
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes((corpus / "manifest.json").read_bytes())
    wav = tmp_path / "stream_000.wav"
    wav.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    base = ["-q", "eval", str(model), "--data", str(corpus), "--max-seconds", "0.01"]
    for target, holds in ((wav, "something other than JSON, not"), (manifest, "JSON that is not")):
        before = target.read_bytes()
        assert main([*base, "--json", str(target)]) == 2
        assert capsys.readouterr().err == (f"wavegen eval: error: --json {target}: holds {holds} a wavegen eval "
                                           f"result; not overwritten: give --json a new file name (or remove "
                                           f"{target} first)\n")
        assert target.read_bytes() == before
    earlier = tmp_path / "eval.json"  # an earlier result: replaced
    earlier.write_text('{"split": "test", "nll_bits_per_sample": 9.0}')
    assert main([*base, "--json", str(earlier)]) == 0
    assert json.loads(earlier.read_text())["samples"] == 80


def test_the_corpus_the_model_trained_on_prepared_again_since_is_said_before_its_split_is_scored(
        corpus, tmp_path, capsys, caplog):
    """prep draws the splits again from what a corpus holds (a recording added moves others between them): the
    model's own corpus, prepared again since, may have recordings it trained on in the split scored, an NLL
    better than on new audio, and it was printed without a word. Another corpus (or the same one unchanged) is
    scored without the warning."""
    from wavegen.corpus import Corpus

    other = prepared_corpus(tmp_path / "other", files=4, seconds=2.0, sample_rate=SR, val_fraction=0.25,
                            test_fraction=0.25, seed=1)
    model = save_tiny_model(tmp_path / "model", sample_rate=SR, dim=16, emb_size=8)
    config = json.loads((model / "config.json").read_text())
    now = Corpus(corpus).content_id
    for corpus_id, data, said in ((now, corpus, False), ("0123456789abcdef", corpus, True),
                                  ("0123456789abcdef", other, False)):
        config["data"].update(corpus=str(corpus), corpus_id=corpus_id)
        (model / "config.json").write_text(json.dumps(config))
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert main(["-q", "eval", str(model), "--data", str(data), "--max-seconds", "0.5"]) == 0
        capsys.readouterr()
        warning = (f"{corpus}: the corpus {model} was trained on has been prepared again since (corpus id "
                   f"0123456789abcdef then, {now} now): its test split may have been drawn again and may hold "
                   "recordings the model trained on")  # a model older than data.split_ids: no split to compare
        assert (warning in caplog.text) == said, (data, caplog.text)


def test_a_corpus_prepared_again_that_kept_its_test_split_is_scored_without_a_word(tmp_path, capsys, caplog):
    """prep run again with a recording added keeps each earlier file's split: the test split holds the recordings
    the model's run recorded (data.split_ids), none trained on, and the NLL is printed without the warning (it
    said the split was drawn again). Prepared again with another --seed, the split holds another recording: said."""
    from wavegen.prep import prepare

    settings = {"sample_rate": SR, "val_fraction": 0.25, "test_fraction": 0.25, "progress": False}
    corpus = prepared_corpus(tmp_path, files=4, seconds=1.0, **settings)
    model = save_tiny_model(tmp_path / "model", sample_rate=SR, dim=16, emb_size=8)
    config = json.loads((model / "config.json").read_text())
    config["data"] = tiny_run_config(corpus)["data"]  # as training records it: the corpus, its id, its splits'
    (model / "config.json").write_text(json.dumps(config))

    def held_out():
        files = json.loads((corpus / "manifest.json").read_text())["files"]
        return {f["sha256"] for f in files if f["split"] == "test"}

    def warnings():
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert main(["-q", "eval", str(model), "--data", str(corpus), "--max-seconds", "0.2"]) == 0
        assert capsys.readouterr().out.startswith("test: ")
        return [r.getMessage() for r in caplog.records if "prepared again since" in r.getMessage()]

    test = held_out()
    write_audio_file(tmp_path / "rec" / "song4.wav", melody(1.0, SR, seed=4), SR)
    prepare([tmp_path / "rec"], corpus, **settings)
    assert held_out() == test and config["data"]["corpus_id"] != Corpus(corpus).content_id  # kept, corpus changed
    assert warnings() == []
    prepare([tmp_path / "rec"], corpus, seed=3, **settings)
    assert held_out() != test  # drawn again: another recording held out
    said = warnings()
    assert len(said) == 1 and said[0].endswith(
        ": its test split differs from then's (other recordings, or the same ones re-encoded) and may hold "
        "recordings the model trained on, which would score better than new audio"), said


def test_a_remastered_test_file_is_not_said_to_be_another_recording(tmp_path, capsys, caplog):
    """A file of the test split remastered (new bytes at its path) keeps its split when prep runs again, but the
    run records only a digest of the split's files' bytes (data.split_ids), not their paths: eval said the split
    "holds other recordings than then", untrue of a remaster. It says now only what it knows: the split differs."""
    from pathlib import Path

    from wavegen.prep import prepare

    settings = {"sample_rate": SR, "val_fraction": 0.25, "test_fraction": 0.25, "progress": False}
    corpus = prepared_corpus(tmp_path, files=4, seconds=1.0, **settings)
    model = save_tiny_model(tmp_path / "model", sample_rate=SR, dim=16, emb_size=8)
    config = json.loads((model / "config.json").read_text())
    config["data"] = tiny_run_config(corpus)["data"]
    (model / "config.json").write_text(json.dumps(config))

    def held_out():
        files = json.loads((corpus / "manifest.json").read_text())["files"]
        return {f["path"]: f["sha256"] for f in files if f["split"] == "test"}

    before = held_out()
    (remastered,) = before
    i = int(Path(remastered).stem[len("song"):])
    write_audio_file(remastered, 0.8 * melody(1.0, SR, seed=i), SR)  # the same recording, quieter: new bytes
    prepare([tmp_path / "rec"], corpus, **settings)
    after = held_out()
    assert list(after) == [remastered] and after[remastered] != before[remastered]  # kept in test, new bytes
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main(["-q", "eval", str(model), "--data", str(corpus), "--max-seconds", "0.2"]) == 0
    assert capsys.readouterr().out.startswith("test: ")
    said = [r.getMessage() for r in caplog.records if "prepared again since" in r.getMessage()]
    assert len(said) == 1 and "other recordings than then" not in said[0], said
    assert "its test split differs from then's (other recordings, or the same ones re-encoded)" in said[0], said


def test_a_corpus_cut_in_time_prepared_again_with_another_top_db_is_scored_without_a_word(tmp_path, capsys, caplog):
    """Two recordings cut in time, with quiet ends, prepared again with another --top-db: prep holds each cut where
    it was in the file ("time_cuts_seconds"), so the test split holds the same recordings' same stretches and none
    of what the model trained on, though each kept less: scored without the warning (it said the split held other
    recordings: data.split_ids hashed each file's kept seconds beside its cut)."""
    from wavegen.prep import prepare

    for i in range(2):
        x = melody(3.0, SR, seed=i)
        x[:SR // 2] *= 0.003  # about -50 dB: trimmed at --top-db 40, kept at 60
        x[-SR // 2:] *= 0.003
        write_audio_file(tmp_path / "rec" / f"song{i}.wav", x, SR)
    settings = {"sample_rate": SR, "val_fraction": 0.2, "test_fraction": 0.2, "progress": False}
    corpus = tmp_path / "corpus"
    before = prepare([tmp_path / "rec"], corpus, **settings)["files"]
    model = save_tiny_model(tmp_path / "model", sample_rate=SR, dim=16, emb_size=8)
    config = json.loads((model / "config.json").read_text())
    config["data"] = tiny_run_config(corpus)["data"]
    (model / "config.json").write_text(json.dumps(config))
    after = prepare([tmp_path / "rec"], corpus, top_db=60.0, **settings)["files"]
    assert [f["split"] for f in after] == ["time", "time"]
    assert [f["time_cuts_seconds"] for f in after] == [f["time_cuts_seconds"] for f in before]  # held
    assert all(a["kept_seconds"] > b["kept_seconds"] for a, b in zip(after, before))  # the quiet ends kept now
    assert config["data"]["corpus_id"] != Corpus(corpus).content_id
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert main(["-q", "eval", str(model), "--data", str(corpus), "--max-seconds", "0.2"]) == 0
    assert capsys.readouterr().out.startswith("test: ")
    assert not [r for r in caplog.records if "prepared again since" in r.getMessage()], caplog.text


def test_a_model_without_data_is_scored_on_the_corpus_it_was_trained_on(corpus, tmp_path, capsys, caplog):
    """`wavegen eval RUN` was refused ("give ... --data CORPUS") though the run's config names its corpus, which
    --renders already took as its default: it scores that corpus now, as --data would, and says which. A model that
    names none (a preset) is refused by name; one whose corpus is gone is told to give --data."""
    model = save_tiny_model(tmp_path / "model", sample_rate=SR, dim=16, emb_size=8)
    config = json.loads((model / "config.json").read_text())
    config["data"] = tiny_run_config(corpus)["data"]
    (model / "config.json").write_text(json.dumps(config))
    assert main(["eval", str(model), "--data", str(corpus), "--max-seconds", "0.2", "--json"]) == 0
    given = json.loads(capsys.readouterr().out)
    with caplog.at_level("INFO", logger="wavegen.eval"):
        assert main(["eval", str(model), "--max-seconds", "0.2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == given
    assert f"scoring the test split of {corpus}, the corpus {model} was trained on" in caplog.text
    assert main(["eval", "samplernn-tiny"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "samplernn-tiny (random weights) names no corpus it was trained on: give --data CORPUS to score its NLL")
    config["data"]["corpus"] = str(tmp_path / "moved")
    (model / "config.json").write_text(json.dumps(config))
    assert main(["eval", str(model)]) == 2
    assert "is no prepared corpus now (no manifest.json): give --data CORPUS" in capsys.readouterr().err


def test_the_result_names_the_corpus_and_split_it_scored_under_quiet_too(corpus, tmp_path, capsys):
    """`wavegen -q eval RUN` (the corpus its config names) printed "test: 8.5 bits/sample over 800 samples ..." and
    its --json held no corpus: only an INFO line, which -q hides, said which corpus was scored. The result line
    names it, and the JSON holds it with the split."""
    model = save_tiny_model(tmp_path / "model", sample_rate=SR, dim=16, emb_size=8)
    config = json.loads((model / "config.json").read_text())
    config["data"] = tiny_run_config(corpus)["data"]
    (model / "config.json").write_text(json.dumps(config))
    assert main(["-q", "eval", str(model), "--split", "val", "--max-seconds", "0.05"]) == 0
    captured = capsys.readouterr()
    first = captured.out.splitlines()[0]
    assert first.startswith("val: ") and f" samples of {config['data']['corpus']} (" in first, first
    assert captured.err == ""
    assert main(["-q", "eval", str(model), "--split", "val", "--max-seconds", "0.05", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["corpus"] == config["data"]["corpus"] and result["split"] == "val", result


def test_a_model_without_data_whose_nll_is_not_finite_names_the_corpus_scored(corpus, tmp_path, capsys):
    """Scored on the corpus its config names (no --data), a model whose NLL is not finite was said to score so on
    "the test split of None": the error named --data as given, not the corpus scored."""
    import torch

    from wavegen.checkpoint import save_model
    from wavegen.resolve import resolve_model

    model = save_tiny_model(tmp_path / "model", sample_rate=SR, dim=16, emb_size=8)
    config = json.loads((model / "config.json").read_text())
    config["data"] = tiny_run_config(corpus)["data"]
    weights = resolve_model(str(model)).load("cpu")
    with torch.no_grad():
        next(weights.parameters()).fill_(float("nan"))
    save_model(weights, config, tmp_path / "nan")
    assert main(["-q", "eval", str(tmp_path / "nan"), "--max-seconds", "0.1"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"wavegen eval: error: {tmp_path / 'nan'}: its NLL on the test split of {corpus} is not finite (nan): the "
        "model's weights or outputs hold NaN or inf; evaluate another checkpoint (--checkpoint step_N) or model")


def test_a_config_file_s_corpus_is_not_said_to_be_what_its_random_weights_trained_on(corpus, tmp_path, capsys,
                                                                                      caplog):
    """A config file that names a corpus (a run's config.json copied) is scored on it without --data, its weights
    random: the line said "the corpus cfg.json (...; random weights) was trained on", untrue of weights never
    trained. It says the corpus its config names; a trained model's line still says it was trained on it."""
    config = tiny_config(sample_rate=SR, dim=16, emb_size=8)
    config["data"] = tiny_run_config(corpus)["data"]
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    with caplog.at_level("INFO", logger="wavegen.eval"):
        assert main(["eval", str(tmp_path / "cfg.json"), "--max-seconds", "0.05", "--json"]) == 0
    capsys.readouterr()
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("scoring the test split of ")]
    assert len(said) == 1 and "trained on" not in said[0], said
    assert said[0].startswith(f"scoring the test split of {corpus}, the corpus {tmp_path / 'cfg.json'} ") \
        and said[0].endswith("random weights) names in its config (data.corpus)"), said
