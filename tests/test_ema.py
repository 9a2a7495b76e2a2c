"""train.ema_decay: an exponential moving average of the weights is what validation scores, best/
keeps, checkpoints carry (exact resume) and ``--checkpoint`` renders."""

import json

import pytest
import torch
from conftest import tiny_run_config as config_for
from safetensors.torch import load_file

from wavegen.config import ConfigError
from wavegen.evaluate import evaluate
from wavegen.memory import training_estimate
from wavegen.resolve import AVERAGED_MODEL, resolve_model, strip_wrappers
from wavegen.train import read_metrics, train
from wavegen.trainstate import WeightAverage


def val_rows(run):
    return [(r["step"], r["val_bits"]) for r in read_metrics(run) if "val_bits" in r]


def test_the_average_is_the_exponential_moving_average_of_the_weights():
    model = torch.nn.Linear(3, 2)
    average = WeightAverage(model, decay=0.75)
    seen = []
    for value in (1.0, 2.0, 5.0):
        with torch.no_grad():
            model.weight.fill_(value)
        average.update(model)
        seen.append(value)
    want = seen[0]  # the first update copies the weights
    for value in seen[1:]:
        want = 0.75 * want + 0.25 * value
    assert torch.allclose(average.model.weight, torch.full((2, 3), want))
    assert average.updates == 3 and not average.model.weight.requires_grad
    assert torch.equal(model.weight, torch.full((2, 3), 5.0))  # the trained model is untouched


def test_an_averaged_run_scores_keeps_resumes_and_renders_the_average(tiny_corpus, tmp_path):
    # checkpoint at step 3 mid-chunk; validation at 4 and 8 scores the average, so a resume that lost
    # the average (or restored it wrong) would log other validation bits than the straight run
    common = ["train.ema_decay=0.8", "train.val_interval=4", "train.checkpoint_interval=3", "train.lr=3e-3"]
    straight = train(config_for(tiny_corpus, "train.max_steps=8", *common), tmp_path / "straight", progress=False)
    train(config_for(tiny_corpus, "train.max_steps=3", *common), tmp_path / "resumed", progress=False)
    resumed = train(config_for(tiny_corpus, "train.max_steps=8", *common), tmp_path / "resumed", progress=False)
    assert val_rows(tmp_path / "straight") == [r for r in val_rows(tmp_path / "resumed") if r[0] != 3]  # 3: the short run's end
    assert len(val_rows(tmp_path / "straight")) == 2
    step8 = [tmp_path / name / "checkpoints" / "step_8" for name in ("straight", "resumed")]
    a, b = (load_file(str(folder / AVERAGED_MODEL)) for folder in step8)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((step8[0] / "trainer_state.json").read_text())["ema_updates"] == 8

    # the average is not the trained weights, and best/ holds what validation scored
    ref = resolve_model(tmp_path / "straight", checkpoint="last")
    assert ref.weights.name == AVERAGED_MODEL and "averaged weights" in ref.source
    raw = ref.build()
    raw.load_state_dict(strip_wrappers(load_file(str(step8[0] / "model.safetensors"))))
    averaged = ref.load()
    assert any(not torch.equal(p, q) for p, q in zip(raw.state_dict().values(), averaged.state_dict().values()))
    best = resolve_model(tmp_path / "straight" / "best")
    scored = evaluate(best, tiny_corpus, "val", max_seconds=2)["nll_bits_per_sample"]
    assert scored == pytest.approx(straight["best_val_bits"], abs=1e-6) == resumed["best_val_bits"]


def test_the_decay_is_checked_and_fixed_for_a_run(tiny_corpus, tmp_path):
    with pytest.raises(ConfigError, match=r"train.ema_decay=1.0: give 0 <= decay < 1"):
        train(config_for(tiny_corpus, "train.ema_decay=1"), tmp_path / "bad", progress=False)
    train(config_for(tiny_corpus, "train.max_steps=2"), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match=r"train.ema_decay: 0.0 → 0.9"):
        train(config_for(tiny_corpus, "train.max_steps=4", "train.ema_decay=0.9"), tmp_path / "run", progress=False)
    # a run begun before the setting existed resumes as it was (no average)
    path = tmp_path / "run" / "config.json"
    saved = json.loads(path.read_text())
    del saved["train"]["ema_decay"]
    path.write_text(json.dumps(saved))
    assert train(config_for(tiny_corpus, "train.max_steps=4"), tmp_path / "run", progress=False)["step"] == 4
    assert not (tmp_path / "run" / "checkpoints" / "step_4" / AVERAGED_MODEL).exists()


def test_the_memory_estimate_counts_the_averaged_copy(tiny_corpus):
    config = config_for(tiny_corpus)
    plain = training_estimate(config, 4, 64)
    averaged = training_estimate(config, 4, 64, average=True)
    assert plain["average"] == 0 and averaged["average"] == plain["weights"] > 0
    assert averaged["total"] == plain["total"] + plain["weights"]
