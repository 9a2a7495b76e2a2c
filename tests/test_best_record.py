"""best/'s own record of its score (weights.json's validation), as a start again reads it."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from conftest import tiny_run_config as config_for

import wavegen.bestmodel
from wavegen.train import read_metrics, train


def test_a_start_again_reads_the_record_of_best_once(tiny_corpus, tmp_path, caplog, monkeypatch):
    """A run whose checkpoints and metrics rows are gone (a start killed before its first row) starts again and keeps
    the best/ its record scores: trained_before read best/weights.json to find the run trained before, then
    keep_best_past_checkpoint read it again for the score. It is read once now, and best/ is kept as before."""
    common = ["train.val_interval=2", "train.checkpoint_interval=2"]
    run = tmp_path / "run"
    train(config_for(tiny_corpus, "train.max_steps=2", *common), run, progress=False)
    best = [r for r in read_metrics(run) if r.get("best")][-1]
    shutil.rmtree(run / "checkpoints")
    (run / "metrics.jsonl").write_text("")
    reads, real = [], wavegen.bestmodel.read_json_object

    def read(path):
        if Path(path).parent.name.startswith("best"):
            reads.append(Path(path))
        return real(path)

    monkeypatch.setattr(wavegen.bestmodel, "read_json_object", read)
    with caplog.at_level(logging.INFO, logger="wavegen"):
        result = train(config_for(tiny_corpus, "train.max_steps=2", *common), run, progress=False)
    assert reads == [run / "best" / "weights.json"]
    assert (f"{run / 'best'} holds the model of step {best['step']} (validation {best['val_bits']:.4f} bits/sample), "
            "trained before the run started again from step 0") in caplog.text
    assert result["best_val_bits"] <= best["val_bits"]
