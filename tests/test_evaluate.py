"""wavegen.evaluate: every sample of every segment scored once, the state carried through a segment;
the cap, labels and the CLI's --checkpoint and refusals."""

import json
import math
import os

import numpy as np
import pytest
import torch
from conftest import TINY_SAMPLERNN, prepared_corpus, tiny_samplernn, tiny_wavenet, tone

from wavegen.audio import quantize, int16_to_float, silence_code
from wavegen.cli import main
from wavegen.config import ConfigError
from wavegen.corpus import Corpus
from wavegen.evaluate import WINDOW_SAMPLES, evaluate
from wavegen.models import resolve_preset
from wavegen.resolve import resolve_model
from wavegen.train import resolve_run_config, train

SR = 8000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Four 3 s melodies at 8 kHz (one file in val, one in test): each segment spans several windows."""
    return prepared_corpus(tmp_path_factory.mktemp("eval"), files=4, seconds=3.0, sample_rate=SR,
                           val_fraction=0.25, test_fraction=0.25)


def reference_nll_bits(model, corpus, split):
    """Each segment in ONE forward pass from silence, its tail padded: (bits summed, samples)."""
    cfg, c = model.config, Corpus(corpus)
    context = model.context_samples
    silence = silence_code(cfg.q_levels, cfg.quantization)
    total, count = 0.0, 0
    for start, length, _ in c.segments(split):
        codes = quantize(int16_to_float(np.asarray(c.split(split)[start: start + length])), cfg.q_levels,
                         cfg.quantization)
        padded = -(-length // context) * context
        seq = np.full(context + padded, silence, dtype=np.int64)
        seq[context: context + length] = codes
        with torch.no_grad():
            nll, _ = model.sequence_nll(torch.from_numpy(seq)[None])
        total += float(nll[0, :length].double().sum()) / math.log(2)
        count += int(length)
    return total, count


@pytest.mark.parametrize("family", ["samplernn", "wavenet"])
def test_every_sample_of_every_segment_is_scored_with_the_state_carried(family, corpus):
    model = tiny_samplernn([16, 4], n_rnn=1) if family == "samplernn" else tiny_wavenet(layers=4, max_dilation=8)
    segments = Corpus(corpus).segments("train")
    assert segments[:, 1].max() > 2 * WINDOW_SAMPLES  # the windows, and the state across them, are exercised
    result = evaluate(model, corpus, "train")
    want_bits, want_samples = reference_nll_bits(model, corpus, "train")
    assert result["samples"] == want_samples == int(segments[:, 1].sum())
    assert result["segments"] == len(segments) and result["seconds"] == pytest.approx(want_samples / SR)
    # float rounding of the windows against one pass: ~5e-11; not carrying the state moves it 3e-7 or more
    assert result["nll_bits_per_sample"] * result["samples"] == pytest.approx(want_bits, rel=1e-9)
    assert 0 < result["unigram_entropy_bits"] <= math.log2(model.config.q_levels)


def test_max_seconds_takes_the_same_first_part_of_every_segment(corpus):
    model = tiny_wavenet(layers=3, max_dilation=4)
    lengths = Corpus(corpus).segments("train")[:, 1]
    result = evaluate(model, corpus, "train", max_seconds=1.0)
    assert SR - len(lengths) < result["samples"] <= SR
    share = max(s for s in range(int(lengths.max()) + 1) if sum(min(n, s) for n in lengths) <= SR)
    assert result["samples"] == sum(min(n, share) for n in lengths)  # the same S from every segment
    assert f"the first {share} samples" in result["scored"]
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="--max-seconds .*: give a positive number"):
            evaluate(model, corpus, "train", max_seconds=bad)
    with pytest.raises(ConfigError, match=r"--max-seconds 1e-05: less than one sample from each of the \d+ "
                                          r"segments of the train split at \d+ Hz"):
        evaluate(model, corpus, "train", max_seconds=1e-5)


def test_labels_and_rates_are_checked(corpus, tmp_path):
    model = tiny_samplernn([8, 2], labels=["a", "b"])
    with pytest.raises(ConfigError, match=r"blend has no audio of its own"):
        evaluate(model, corpus, "test", label="a:0.5,b:0.5")
    with pytest.raises(ConfigError, match=r"'c' is not one of this model's labels: a, b$"):
        evaluate(model, corpus, "test", label="c")
    ref = resolve_model("samplernn-tiny")  # a preset: 16 kHz
    with pytest.raises(ConfigError, match=f"is at {SR} Hz, the model .* at 16000 Hz"):
        evaluate(ref, corpus, "test")


def test_a_label_holding_a_colon_or_comma_is_that_label(tmp_path):
    """A label's own name is that label, ':' and ',' included (render reads it so too); only a text that
    is no label is read as a blend, and refused. A leading space is part of the name."""
    from conftest import write_audio_file
    from wavegen.prep import prepare

    names = [" lead", "odd lab:é,x"]  # sorted, as prep names folder labels
    for i in range(3):
        for k, name in enumerate(names):
            write_audio_file(tmp_path / "rec" / name / f"f{i}.wav", tone(1.5, SR, freq=300 + 900 * k + 50 * i), SR)
    prepare([tmp_path / "rec"], tmp_path / "corpus", sample_rate=SR, val_fraction=0.2, test_fraction=0.2,
            labels="folders", progress=False)
    model = tiny_samplernn([8, 2], labels=names)
    both = evaluate(model, tmp_path / "corpus", "test")
    for name in names:
        one = evaluate(model, tmp_path / "corpus", "test", label=name)
        assert list(one["per_label"]) == [name] and one["samples"] == both["per_label"][name]["samples"]
    with pytest.raises(ConfigError, match=r"blend has no audio of its own"):
        evaluate(model, tmp_path / "corpus", "test", label="odd lab:é,x:0.5, lead:0.5")


def test_the_label_scored_is_named_in_the_text_and_json_a_model_without_labels_too(tmp_path, capsys):
    """A model not conditioned on labels, scored on one label's audio of a labelled corpus, has no per-label
    line: the outputs of --label a and --label b (and of none) could not be told apart."""
    from conftest import save_tiny_model, write_audio_file
    from wavegen.prep import prepare

    for i in range(3):
        for k, name in enumerate(("a", "b")):
            write_audio_file(tmp_path / "rec" / name / f"f{i}.wav", tone(1.5, SR, freq=300 + 900 * k + 50 * i), SR)
    prepare([tmp_path / "rec"], tmp_path / "corpus", sample_rate=SR, val_fraction=0.2, test_fraction=0.2,
            labels="folders", progress=False)
    model = save_tiny_model(tmp_path / "model", sample_rate=SR, dim=16, emb_size=8)
    for label, named in ((("--label", " b"), "b"), ((), None)):  # " b": read as b, as render reads it
        code, out, _ = eval_cli(capsys, model, "--data", tmp_path / "corpus", *label)
        assert code == 0
        assert [line for line in out.splitlines() if line.startswith("  label: ")] == (
            [f"  label: {named}"] if named else [])
        code, out, _ = eval_cli(capsys, model, "--data", tmp_path / "corpus", *label, "--json")
        assert json.loads(out)["label"] == named and json.loads(out)["per_label"] == {}


def test_a_conditioned_model_on_a_corpus_without_labels_is_told_what_to_do(corpus):
    """It was told the corpus "holds audio of label(s) ['(none)']" and to choose a label with --label, which
    then found "no audio of that label"."""
    model = tiny_samplernn([8, 2], labels=["alpha", "beta"])
    with pytest.raises(ConfigError) as caught:
        evaluate(model, corpus, "test")
    message = str(caught.value)
    assert message.startswith(f"corpus {corpus} has no labels, while this model is conditioned on labels "
                              "alpha, beta: evaluate it on a corpus prepared with labels (wavegen prep "
                              "--labels folders), or score the test split as one label's audio with --label NAME")
    assert "(none)" not in message
    whole = evaluate(model, corpus, "test", label="alpha")  # as it says: every segment, conditioned on alpha
    assert list(whole["per_label"]) == ["alpha"]
    assert whole["samples"] == int(Corpus(corpus).segments("test")[:, 1].sum())
    beta = evaluate(model, corpus, "test", label="beta")
    assert beta["samples"] == whole["samples"] and beta["nll_bits_per_sample"] != whole["nll_bits_per_sample"]


def test_eval_reads_a_label_as_render_does(corpus, tmp_path):
    """--label " alpha" was "not one of this model's labels" in eval, while render took it as alpha."""
    from wavegen.render.settings import parse_label

    labels = ["alpha", "beta"]
    model = tiny_samplernn([8, 2], labels=labels)
    assert parse_label(" alpha", labels).tolist() == [1.0, 0.0]  # render: the space before a name skipped
    plain = evaluate(model, corpus, "test", label="alpha")
    for text in (" alpha", "alpha:1", " alpha , beta:0"):
        assert evaluate(model, corpus, "test", label=text) == plain
    with pytest.raises(ConfigError, match=r"blend has no audio of its own"):
        evaluate(model, corpus, "test", label=" alpha:0.5, beta:0.5")


@pytest.fixture(scope="module")
def run(corpus):
    config = resolve_run_config(resolve_preset("samplernn-tiny"), corpus,
                                TINY_SAMPLERNN + ["train.max_steps=4", "train.checkpoint_interval=2",
                                                  "train.val_interval=100", "train.lr=1e-2"])
    train(config, corpus.parent / "run", progress=False)
    return corpus.parent / "run"


def eval_cli(capsys, *args):
    capsys.readouterr()
    code = main(["-q", "eval", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_evaluates_a_checkpoint_and_refuses_a_cap_that_is_no_cap(run, corpus, capsys):
    code, out, _ = eval_cli(capsys, run, "--data", corpus, "--split", "val", "--checkpoint", "last", "--json")
    assert code == 0
    last = json.loads(out.strip().splitlines()[-1])
    code, out, _ = eval_cli(capsys, run, "--data", corpus, "--split", "val", "--checkpoint", "step_2", "--json")
    step2 = json.loads(out.strip().splitlines()[-1])
    assert "step_4" in last["model"] and "step_2" in step2["model"]
    assert last["samples"] == step2["samples"] == int(Corpus(corpus).segments("val")[:, 1].sum())
    assert last["nll_bits_per_sample"] != step2["nll_bits_per_sample"]  # different weights
    for cap in ("0", "-1"):
        code, out, err = eval_cli(capsys, run, "--data", corpus, "--checkpoint", "last", "--max-seconds", cap)
        assert code == 2 and "give a positive number of seconds" in err and not out
    code, out, err = eval_cli(capsys, run, "--data", corpus, "--checkpoint", "last", "--threads", "0")
    assert code == 2 and "--threads 0: need at least one" in err and not out
    weights = run / "checkpoints" / "step_2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])  # cut short
    code, out, err = eval_cli(capsys, run, "--data", corpus, "--checkpoint", "step_2")
    assert code == 2 and f"{weights}: " in err and "the checkpoint is damaged" in err and not out


def test_the_printed_result_names_the_model_or_checkpoint_it_scored(run, corpus, capsys):
    """The text, as the JSON's "model", names what was scored: two checkpoints' outputs told apart."""
    printed = {}
    for checkpoint in ((), ("--checkpoint", "last")):
        code, out, _ = eval_cli(capsys, run, "--data", corpus, "--split", "val", "--max-seconds", "0.1", *checkpoint)
        assert code == 0
        printed[checkpoint] = [line for line in out.splitlines() if line.startswith("  model: ")]
    assert printed[()] == [f"  model: {run / 'best'}"]
    assert printed[("--checkpoint", "last")] == [f"  model: {run / 'checkpoints' / 'step_4'} (step 4)"]


def test_a_model_whose_nll_is_not_finite_is_one_line_naming_it(run, corpus, tmp_path, capsys):
    from wavegen.checkpoint import save_model

    ref = resolve_model(str(run))
    model = ref.load("cpu")
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    save_model(model, ref.config, tmp_path / "nan")
    for json_flag in ((), ("--json",)):
        code, out, err = eval_cli(capsys, tmp_path / "nan", "--data", corpus, *json_flag)
        assert code == 2 and not out
        assert err.strip().splitlines() == [f"wavegen eval: error: {tmp_path / 'nan'}: its NLL on the test split of "
                                            f"{corpus} is not finite (nan): the model's weights or outputs hold NaN "
                                            "or inf; evaluate another checkpoint (--checkpoint step_N) or model"]


def _no_nan(constant):
    raise AssertionError(f"not standard JSON: {constant}")


@pytest.mark.slow  # librosa's first import and two analyses of five sets
def test_cli_judges_renders_against_the_album(run, corpus, tmp_path, capsys):
    """wavegen eval --renders on generated audio: melodies (the album's kind) come out nearer the album
    than white noise; the run's corpus is the default --data; --json, --plot and the table."""
    pytest.importorskip("librosa")
    from conftest import melody, write_audio_file

    from wavegen.analysis import noise

    for i in range(2):
        write_audio_file(tmp_path / "tones" / f"stream_{i:03d}.wav", melody(3.0, SR, seed=50 + i), SR)
        write_audio_file(tmp_path / "noise" / f"stream_{i:03d}.wav", noise("white", 3.0, SR, rms=0.1, seed=i), SR)
    (tmp_path / "a-file").write_text("not a folder")
    code, out, err = eval_cli(capsys, run, "--renders", tmp_path / "tones", "--plot", tmp_path / "a-file" / "p.png")
    assert code == 2 and "cannot make its folder" in err and not out  # refused before the analysis
    code, out, err = eval_cli(capsys, run, "--renders", tmp_path / "tones", "--plot", tmp_path / "p.txt")
    assert code == 2 and "matplotlib cannot write .txt pictures" in err and not out
    os.mkfifo(tmp_path / "pipe")  # a FIFO (or /dev/full) is refused up front, and never replaced
    code, out, err = eval_cli(capsys, run, "--renders", tmp_path / "tones", "--plot", tmp_path / "pipe")
    assert code == 2 and f"--plot {tmp_path / 'pipe'}: is a FIFO, not a regular file" in err and not out
    assert (tmp_path / "pipe").is_fifo()
    code, out, err = eval_cli(capsys, run, "--renders", tmp_path / "tones", "--split", "train")
    assert code == 2 and "--split train: the train split is the album reference" in err and not out
    bad = melody(3.0, SR, seed=9)
    bad[1000:1100] = np.nan
    write_audio_file(tmp_path / "nan" / "stream_000.wav", bad, SR, subtype="FLOAT")
    code, out, err = eval_cli(capsys, run, "--renders", tmp_path / "nan", "--json")
    assert code == 2 and not out
    assert err.strip().splitlines()[-1] == (f"wavegen eval: error: {tmp_path / 'nan'}: no audio file can be analysed "
                                            "(stream_000.wav: NaN or infinite samples)")
    png = tmp_path / "plots" / "new" / "p.png"  # a folder that is not there yet is made
    code, out, _ = eval_cli(capsys, run, "--renders", tmp_path / "tones", "--json", "--plot", png)
    assert code == 0
    tones = json.loads(out.strip().splitlines()[-1], parse_constant=_no_nan)
    assert tones["sets"]["renders"]["summary"]["tempo_bpm"] is None  # 3 s renders: no tempo, null not NaN
    assert tones["corpus"] == str(corpus) and tones["render_files"] == ["stream_000.wav", "stream_001.wav"]
    assert tones["split"] == "test" and tones["plot"] == str(png)
    assert "examples" not in tones  # the plot's audio stays out of the JSON
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, table, _ = eval_cli(capsys, "--renders", tmp_path / "noise", "--data", corpus)
    assert code == 0 and "periodic_fraction" in table and "frechet (MFCC+chroma+contrast)" in table
    # 3 s renders: no tempo, shown as "-" with the reason under the table (the table said "nan")
    assert "nan" not in table.lower() and "\n- tempo_bpm of renders" in table
    assert "no excerpt of 4 s or more to estimate a tempo on" in table
    noise_likeness = float(table.split("album likeness ")[1].split()[0])
    noise_frechet = float(table.split("frechet to the test split: renders ")[1].split(",")[0])
    assert tones["verdict"]["album_likeness"] > 0.5 > noise_likeness
    assert tones["verdict"]["frechet_renders"] < noise_frechet / 3
    assert tones["sets"]["renders"]["summary"]["periodic_fraction"] > 0.8
    code, out, err = eval_cli(capsys, "--renders", tmp_path / "tones")
    assert code == 2 and "give --data CORPUS" in err and not out
    # options that do nothing here are refused, not ignored
    code, out, err = eval_cli(capsys, "--renders", tmp_path / "tones", "--data", corpus, "--device", "cuda:7")
    assert code == 2 and "--device cuda:7 does not apply to --renders" in err and not out
    code, out, err = eval_cli(capsys, "--renders", tmp_path / "tones", "--data", corpus, "--checkpoint", "step_5")
    assert code == 2 and "--checkpoint step_5 goes with a run folder" in err and not out
    code, out, err = eval_cli(capsys, run, "--data", corpus, "--plot", tmp_path / "q.png")
    assert code == 2 and "--plot goes with --renders" in err


def test_a_corpus_of_other_labels_is_told_which_labels_both_have(tmp_path):
    """It was told to "choose one of its labels with --label" where none of them had audio there, so
    --label then said the corpus had no audio of it."""
    from conftest import write_audio_file
    from wavegen.prep import prepare

    for i in range(3):
        for k, name in enumerate(["a", "b"]):
            write_audio_file(tmp_path / "rec" / name / f"f{i}.wav", tone(1.0, SR, freq=300 + 500 * k + 50 * i), SR)
    prepare([tmp_path / "rec"], tmp_path / "corpus", sample_rate=SR, val_fraction=0.2, test_fraction=0.2,
            labels="folders", progress=False)
    with pytest.raises(ConfigError) as caught:
        evaluate(tiny_samplernn([8, 2], labels=["x", "y"]), tmp_path / "corpus", "train")
    assert str(caught.value).endswith("(its labels: x, y); none of its labels has audio there: evaluate "
                                      "on a corpus prepared with the model's labels")
    shared = tiny_samplernn([8, 2], labels=["a", "z"])
    with pytest.raises(ConfigError, match=r"holds audio of a label b this .*; choose one of the labels both "
                                          r"have with --label \(a\)$"):
        evaluate(shared, tmp_path / "corpus", "train")
    assert list(evaluate(shared, tmp_path / "corpus", "train", label="a")["per_label"]) == ["a"]  # as it says
