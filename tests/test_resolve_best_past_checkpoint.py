"""A run's best/ written past its last checkpoint by a training session killed before the next one: the
resumed run keeps it as its best model, and what it reports of best/ (and records to beat) is its score;
under DDP every process takes the main process's answer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
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


# Each process of a torchrun launch asks keep_best_past_checkpoint about a run folder resumed from step 4, whose
# metrics.jsonl marks step 6's validation best; the main process sees best/ there, process 1 sees a folder without
# it (as it could, reading while the main process writes best/): the files disagree, the processes must not
_KEEP_BEST = """
import json, sys
from pathlib import Path
from types import SimpleNamespace
from wavegen.bestmodel import keep_best_past_checkpoint
from wavegen.distributed import end_accelerator, make_accelerator

accelerator = make_accelerator("no", cpu=True)
rank = accelerator.process_index
root = Path(sys.argv[1])
run = SimpleNamespace(accelerator=accelerator, main=accelerator.is_main_process, run_dir=root / f"seen_by_{rank}",
                      step=4, best_val=5.0, best_samples=800, best_step=3)
keep_best_past_checkpoint(run)
(root / f"rank{rank}.json").write_text(json.dumps([run.best_val, run.best_samples, run.best_step]))
end_accelerator(accelerator)
"""


@pytest.mark.slow
def test_under_ddp_every_process_takes_the_main_process_view_of_best(tmp_path):
    """Each process read metrics.jsonl and best/ itself, while the main one wrote best/: they could disagree
    on the best on record, and then call different collectives at the next validation (one of them asks the
    others what the record scored, only when it has one): test_train_ddp hung once in CI."""
    rows = [{"step": 3, "val_bits": 5.0, "val_samples": 800, "best": True},
            {"step": 6, "val_bits": 4.5, "val_samples": 800, "best": True}]
    for rank in (0, 1):
        folder = tmp_path / f"seen_by_{rank}"
        folder.mkdir()
        (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "seen_by_0" / "best").mkdir()
    (tmp_path / "seen_by_0" / "best" / "model.safetensors").write_bytes(b"step 6's model")
    script = tmp_path / "keep_best.py"
    script.write_text(textwrap.dedent(_KEEP_BEST))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path)], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    seen = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert seen == [[4.5, 800, 6], [4.5, 800, 6]]  # best/ holds step 6's model: on every process
