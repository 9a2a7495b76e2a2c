"""A run's best/ written past its last checkpoint by a training session killed before the next one: the
resumed run keeps it as its best model, and what it reports of best/ (and records to beat) is its score."""

from __future__ import annotations

import json
import shutil

from conftest import TINY_SAMPLERNN, prepared_corpus

from wavegen.fileio import sha256_file
from wavegen.models import resolve_preset
from wavegen.runlog import read_metrics
from wavegen.train import resolve_run_config, train


def test_a_best_written_after_the_last_checkpoint_is_reported_with_its_score(tmp_path):
    corpus = prepared_corpus(tmp_path, val_fraction=0.25, test_fraction=0.25, sample_rate=8000)
    settings = TINY_SAMPLERNN + ["train.val_interval=3", "train.checkpoint_interval=4", "train.keep_checkpoints=3"]
    run = tmp_path / "run"
    train(resolve_run_config(resolve_preset("samplernn-tiny"), corpus, settings + ["train.max_steps=6"]), run,
          progress=False)
    # as if killed after step 6's validation wrote best/, before its checkpoint: the last kept is step 4
    shutil.rmtree(run / "checkpoints" / "step_6")
    scores = {row["step"]: row["val_bits"] for row in read_metrics(run) if "val_bits" in row}
    assert scores[6] < scores[3], scores  # step 6's model is the one in best/
    best = sha256_file(run / "best" / "model.safetensors")
    assert json.loads((run / "checkpoints" / "step_4" / "trainer_state.json").read_text())["best_val_bits"] == \
        scores[3]
    result = train(resolve_run_config(resolve_preset("samplernn-tiny"), corpus, settings + ["train.max_steps=4"]),
                   run, progress=False)
    assert result["step"] == 4 and result["best_val_bits"] == scores[6]  # not step 3's: best/ holds step 6's
    assert sha256_file(run / "best" / "model.safetensors") == best
    # trained on past it: the replayed validation of step 6 scores the same, so best/ stays that model
    result = train(resolve_run_config(resolve_preset("samplernn-tiny"), corpus, settings + ["train.max_steps=6"]),
                   run, progress=False)
    assert result["best_val_bits"] == scores[6]
    assert sha256_file(run / "best" / "model.safetensors") == best
