"""Validation during training, and the run's ``best/`` model: scored, kept, restored, reported.

At each validation step :func:`validate` scores the judged model (the average of the weights
where the run keeps one) on the corpus's validation split, shared out over the processes
(:func:`wavegen.evaluate.evaluate`), and writes ``RUN/best/`` (with the album profile) when the
score improved; a run without validation audio keeps its latest model there. A resumed run beats
the best on record (:func:`best_on_record`) and writes best/ again from the checkpoint that scored
it when best/ went missing (:func:`restore_missing_best`, :func:`restore_best`); a run that trains again from step 0,
its checkpoints gone, says so and keeps its best/ as the score to beat (:func:`start_again`). Only the main process
writes; every process learns at once when that failed (trainstate.on_main). The functions take the training's
``_Run`` (wavegen.train).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from wavegen.checkpoint import BEST_SCORE, save_model
from wavegen.errors import WavegenError, every_process
from wavegen.fileio import read_json_object
from wavegen.render.album import ALBUM_FILE
from wavegen.resolve import WEIGHTS_RECORD, resolve_model
from wavegen.runlog import best_row, best_validation, read_metrics
from wavegen.trainstate import NonFiniteError, broadcast, check_resume, on_main, save_failed

logger = logging.getLogger(__name__)


def validate(run) -> None:
    """Validation NLL (wavegen.evaluate, shared out over the processes); best/ when it improved."""
    from wavegen.evaluate import evaluate

    run.last_val_step = run.step
    if len(run.corpus.segments("val")) == 0:
        on_main(run.accelerator, lambda: save_best(run), f"the best model in {run.run_dir / 'best'}", run.checkpoint)
        return
    result = evaluate(run.judged, run.corpus, "val", max_seconds=run.cfg.val_seconds, accelerator=run.accelerator)
    bits = result["nll_bits_per_sample"]
    if not math.isfinite(bits):
        raise every_process(NonFiniteError(  # the processes' sums make one score: all of them stop here
            f"step {run.step}: the validation NLL is {bits} with finite weights; training stopped and nothing of this "
            f"step was saved (last checkpoint: {run.checkpoint or 'none'})"))
    if run.best_val is not None and _scored_other_audio(run, result["samples"]):
        run.best_val = None  # its score is of other audio: no bar for this one
    # a tie is no improvement, but for the step whose model best/ holds, validated again by a resumed run (its
    # session stopped before the step's checkpoint): the same weights scored the same, and that is the best
    again = bits == run.best_val and run.step == run.best_step
    improved = run.best_val is None or bits < run.best_val or again
    if improved:
        run.best_val, run.best_samples, run.best_step = bits, result["samples"], run.step

    def keep():
        if improved:
            save_best(run, {"step": run.step, "val_bits": bits, "val_samples": result["samples"]})
        run.log.val_row(run.step, bits, result["samples"], improved)

    on_main(run.accelerator, keep, f"the best model and the metrics of {run.run_dir}", run.checkpoint)


def _scored_other_audio(run, samples: int) -> bool:
    """Whether the best on record scored another amount of validation audio than ``samples`` (a run
    resumed with another train.val_seconds): its bits are no bar for this validation's (a longer excerpt
    of harder audio scores higher, and best/ would never move again). Said once, by the main process."""
    if run.best_samples is None:  # resumed: the record's row says what it scored (older rows: nothing)
        row = best_row(run.run_dir, run.step) if run.main else None
        run.best_samples = broadcast(run.accelerator, (row or {}).get("val_samples") or samples)
    if run.best_samples == samples:
        return False
    if run.main:
        logger.warning("validation scores %d samples now, the best on record (%.4f bits/sample) %d: train.val_seconds "
                       "changed, so best/ is chosen anew from this validation on", samples, run.best_val,
                       run.best_samples)
    return True


def best_extra(run) -> dict | None:
    """The files best/ carries beside the model: the album profile, where the run has one."""
    return {ALBUM_FILE: json.dumps(run.album, indent=2) + "\n"} if run.album else None


def best_on_record(run_dir: Path, step: int, saved: float | None) -> float | None:
    """The best validation a resumed run must beat: its checkpoint's, or metrics.jsonl's best up to the
    checkpoint's step where that is lower. (A checkpoint of an older wavegen was written before its
    step's validation: it records the best before that one, and a run resumed from it replaced
    best/ with a worse model.)"""
    scored = best_validation(run_dir, step)
    if scored is not None and (saved is None or scored[1] < saved):
        return scored[1]
    return saved


def has_best(run) -> bool:
    return any((run.run_dir / name / "model.safetensors").is_file() for name in ("best", "best.old"))


def restore_missing_best(run) -> None:
    """A resumed run whose best/ was removed: back from the checkpoint that scored it (main process;
    every process stops when that write fails). A best/ written past the checkpoint (by a session killed
    before its next checkpoint) is kept, and its score is the one to beat (:func:`keep_best_past_checkpoint`)."""
    keep_best_past_checkpoint(run)

    def restore():
        if run.best_val is not None and not has_best(run):
            restore_best(run.run_dir, run.config, run.best_val, run.step, best_extra(run))

    on_main(run.accelerator, restore, f"the best model in {run.run_dir / 'best'}", run.checkpoint)


def restore_best(run_dir: Path, config: dict, best_val: float, upto: int, extra: dict | None = None) -> bool:
    """``RUN/best/`` written again from the checkpoint that scored ``best_val`` (the step metrics.jsonl
    marks best, up to step ``upto``), when that checkpoint is kept and intact; True when it was."""
    row = best_row(run_dir, upto)
    if row is None or float(row["val_bits"]) != best_val:
        return False
    try:
        model = resolve_model(run_dir, checkpoint=f"step_{row['step']}").load("cpu")
    except WavegenError as err:  # not kept (pruned), or damaged
        logger.info("best/ cannot be restored from step %d's checkpoint (%s)", row["step"], err)
        return False
    save_model(model, config, Path(run_dir) / "best", extra,
               {"step": row["step"], "val_bits": best_val, "val_samples": row.get("val_samples")})
    logger.warning("%s was missing: restored from checkpoints/step_%d, the step that scored the best validation "
                   "(%.4f bits/sample)", Path(run_dir) / "best", row["step"], best_val)
    return True


def keep_best_past_checkpoint(run, recorded: dict | None = None) -> None:
    """Every process (the main one reads, the others take its answer), on resuming from step ``run.step``: where
    metrics.jsonl (not yet cut back to the
    checkpoint) marks a validation after that step as best and best/ is there, best/ holds that validation's
    model (written before its row), from a session stopped before its next checkpoint or a later checkpoint
    removed or moved aside as damaged (not told apart: both are said). Where no row and no checkpoint gives a
    score, best/'s own record of it does (:func:`recorded_best`: a start again whose checkpoints went too, its
    rows cut back to step 0; ``recorded``: that record where :func:`trained_before` read it already). It stays best/,
    and its score becomes the best on record, so what the run reports of best/ is true and a later model replaces it
    only by beating it."""
    row = best_row(run.run_dir) if run.main else None
    if row is None and run.main and run.best_val is None:  # no row scored it, nor the checkpoint: its own record
        row = recorded or recorded_best(run.run_dir, run.config)
    if row is not None and (row["step"] <= run.step or not has_best(run) or
                            run.best_val is not None and float(row["val_bits"]) >= run.best_val):
        row = None
    # decided by the main process alone: another reading the files while the main one writes them could see
    # otherwise, and the processes would then call different collectives (a hang, seen under DDP in CI)
    row = broadcast(run.accelerator, row)
    if row is None:
        return
    bits = float(row["val_bits"])
    if run.main:
        past = (f"past step {run.step}, the checkpoint the run resumes from (a session stopped before its next "
                "checkpoint, or a later one was removed or found damaged)" if run.step else
                "trained before the run started again from step 0")
        logger.warning("%s holds the model of step %d (validation %.4f bits/sample), %s; it stays the best model "
                       "until a validation beats it", run.run_dir / "best", row["step"], bits, past)
    run.best_val, run.best_samples, run.best_step = bits, row.get("val_samples"), row["step"]


def recorded_best(run_dir: Path, config: dict) -> dict | None:
    """The validation best/ (or best.old, a swap cut short) records of itself (checkpoint.BEST_SCORE, written
    with it) as a metrics row: ``step``, ``val_bits``, ``val_samples``; None where it records none (written by
    an older wavegen, or without validation audio) or a damaged one, or where its config.json would not resume
    ``config`` (a model of another config, whose own start was killed before it validated: replaced as before).
    What a run keeps as the score to beat when no metrics row and no checkpoint give it (a start again whose own
    checkpoints went too)."""
    for name in ("best", "best.old"):
        try:
            scored = read_json_object(run_dir / name / WEIGHTS_RECORD).get(BEST_SCORE)
        except (OSError, ValueError):
            continue
        if (isinstance(scored, dict) and isinstance(scored.get("step"), int)
                and isinstance(scored.get("val_bits"), (int, float)) and math.isfinite(scored["val_bits"])):
            try:
                check_resume(run_dir / name, config)
            except WavegenError:
                continue
            samples = scored.get("val_samples")
            return {"step": scored["step"], "val_bits": float(scored["val_bits"]),
                    "val_samples": samples if isinstance(samples, int) else None}
    return None


def trained_before(run_dir: Path, config: dict) -> tuple[int, dict | None] | None:
    """For a run that finds no intact checkpoint: the last step its metrics.jsonl records where the run folder
    holds an earlier start of this same run (config would resume it: checkpoints since removed, or every one
    damaged or diverged), 0 where it records no step but best/ records its score (a start killed before its
    first row); else None (a new run, or another config over an old one, replaced as before). With the step,
    best/'s record (:func:`recorded_best`) where it was read here (no step recorded), handed on to
    :func:`start_again` so that a start reads it once."""
    rows = [r for r in read_metrics(run_dir) if isinstance(r.get("step"), int)]
    recorded = None if rows else recorded_best(run_dir, config)
    if not (rows or recorded) or not (run_dir / "config.json").is_file():
        return None
    try:
        check_resume(run_dir, config)
    except WavegenError:
        return None
    return max((r["step"] for r in rows), default=0), recorded


def start_again(run, trained: int, recorded: dict | None = None) -> None:
    """Every process: a run that trained to step ``trained`` (trained_before) and starts again from step 0 says
    so (it looked like a resume: extending a run whose checkpoints were deleted to free the disk trained a new
    model in silence), and keeps its validated best/ until a validation beats it (was replaced by the first).
    ``recorded``: best/'s record of its score as trained_before read it (None: not read there)."""
    if run.main and trained:
        logger.warning("%s: no intact checkpoint to resume from, though its metrics.jsonl records training to step "
                       "%d: the run trains again from step 0 (its log rows and samples from then are replaced)",
                       run.run_dir, trained)
    keep_best_past_checkpoint(run, recorded)


def save_best(run, scored: dict | None = None) -> None:
    """The judged model → best/; ``scored``: the validation that chose it, recorded beside its weights
    (checkpoint.BEST_SCORE: the score a later start again keeps, :func:`recorded_best`)."""
    try:
        save_model(run.judged, run.config, run.run_dir / "best", best_extra(run), scored)
        run.best_saved_step = run.step
    except OSError as err:
        raise save_failed(f"the best model in {run.run_dir / 'best'}", err, run.checkpoint) from None


def where_the_model_is(run) -> str:
    """For the last line of a training: where its best model and its latest checkpoint are."""
    best = run.run_dir / "best"
    parts = []
    if (best / "model.safetensors").is_file():
        val = f"validation {run.best_val:.4f} bits/sample" if run.best_val is not None else "no validation audio"
        parts.append(f"best model ({val}) in {best}")
    else:
        parts.append(_no_best(run))
    if run.checkpoint is not None:
        parts.append(f"latest checkpoint {run.checkpoint} (render or evaluate it with --checkpoint last)")
    return "; ".join(parts)


def _no_best(run) -> str:
    """Why the run has no best/ now, for :func:`where_the_model_is`: training moved it aside after a divergence
    (best.diverged: named, with what it holds and what to use instead), no validation has run, or it went missing
    though validations ran."""
    from wavegen.resolve_why import best_aside

    best, aside = run.run_dir / "best", best_aside(run.run_dir)
    if aside:
        instead = ("render or evaluate the latest checkpoint instead (--checkpoint last)" if run.checkpoint
                   else f"no checkpoint is kept yet: train on until one is saved (give {aside[-1]} to render the "
                        "diverged weights anyway)")
        return (f"no {best} now: training moved it aside to {aside[-1]} after a divergence (it holds the weights that "
                "gave the run's first non-finite step, which no finite validation score vouches for; kept for you, "
                f"never the run's model); {instead}; best/ comes back at the next validation")
    if run.best_val is None:
        return "no best/ model yet (no validation has run)"
    return (f"{best} is missing, though validations ran (the best scored {run.best_val:.4f} bits/sample; the "
            "checkpoint that scored it is not kept, or not intact, so best/ cannot be restored from it): render or "
            "evaluate a checkpoint with --checkpoint step_N; best/ comes back at the next validation that beats it")
