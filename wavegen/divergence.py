"""A training that diverges: which tensors are not finite, and what is kept of the weights that gave its first
non-finite step.

- :func:`not_finite` (one host sync), :func:`state_tensors`: what a checkpoint would keep, checked before a save
  and on resume.
- :func:`kept_after_divergence`: at the first non-finite step, the checkpoint whose weights gave it moved aside
  to ``checkpoints/step_N.diverged`` (:func:`moved_aside`), and best/ to ``best.diverged`` where it holds those
  weights and no finite validation score vouches for them (a corpus without validation audio: best/ is the
  latest model). Both are kept for the user, never resumed from nor rendered by a run folder.
- :func:`check_finite`, :func:`check_resumed`: the training loop's checks (wavegen.train's ``_Run``).
- :class:`AboveUniform`, :func:`note_loss`, :func:`watch_loss`: a training whose loss stays far above what a
  uniform guess over the q_levels scores (log2(q_levels) bits) for LOSS_STEPS steps in a row past warm-up: finite,
  but learning nothing (a learning rate far too large, ``train.lr=1e6``; from a resumed session's first step on:
  the weights resumed from, ruined before it): every step's loss counted on the device, judged at the log rows (the
  last step always logs, so a run shorter than its log interval is judged too) and at a stop between them (Ctrl-C,
  SIGTERM: the steps trained since the last row), warned of once, in one line; the training goes on.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from wavegen.errors import every_process
from wavegen.fileio import free_name
from wavegen.trainstate import NonFiniteError, WeightAverage, agree, broadcast, on_main

logger = logging.getLogger(__name__)

# The loss a training is warned of: above the uniform guess's log2(q_levels) bits by half of it and by 2 bits at least
# (12 bits for 256 levels; a tiny model starts near 8.6 and an honest run falls from there), at each of LOSS_STEPS
# steps in a row past warm-up. Steps, not log rows: a row's mean is lifted by one step's spike, and a run shorter than
# three log intervals had no say. A lr too large but working spikes for a few steps and recovers (wavenet-tiny at
# lr=1: 3 steps above 9 bits, then below the uniform guess; at lr=2: 5); one far too large stays (lr=1e6: every step)
UNIFORM_RATIO, UNIFORM_MARGIN_BITS, LOSS_STEPS = 1.5, 2.0, 6


def all_finite(tensors) -> bool:
    """Whether every floating-point tensor of ``tensors`` is finite (one host sync)."""
    return not not_finite({"": tensors})


def not_finite(named: dict) -> list[str]:
    """The names of ``named`` (what holds them → their tensors) whose tensors hold a NaN or inf (one host sync
    for them all)."""
    flags, names = [], []
    for name, tensors in named.items():
        checks = [torch.isfinite(t).all() for t in tensors if torch.is_tensor(t) and t.is_floating_point()]
        if checks:
            flags.append(torch.stack([c.to(checks[0].device) for c in checks]).all())
            names.append(name)
    if not flags:
        return []
    finite = torch.stack([f.to(flags[0].device) for f in flags]).tolist()  # the one sync
    return [name for name, ok in zip(names, finite) if not ok]


def state_tensors(model, optimizer, average: WeightAverage | None) -> dict[str, list[torch.Tensor]]:
    """What a checkpoint keeps of a training, by name: the weights, Adam's state (through accelerate's wrapper),
    the average of the weights."""
    inner = getattr(optimizer, "optimizer", optimizer)
    named = {"the weights": list(model.state_dict().values()),
             "the optimizer's state": [v for state in inner.state.values() for v in state.values()
                                       if torch.is_tensor(v)]}
    if average is not None:
        named["the average of the weights"] = list(average.model.state_dict().values())
    return named


def resumes_from(checkpoint: Path | None) -> str:
    """What the error's line says a rerun resumes from, ``checkpoint`` kept as it is."""
    return (f"the last good checkpoint, {checkpoint}, is kept; a rerun resumes from it" if checkpoint
            else "no checkpoint had been saved; a rerun starts again from step 0")


def kept_after_divergence(checkpoint: Path | None, bad_step: int, run_dir: Path, best_step: int | None = None,
                          best_val: float | None = None, intact=(), keep: int | None = None) -> str:
    """Main process, at non-finite step ``bad_step``: the weights of step ``bad_step - 1`` made it, so when
    ``checkpoint`` (the newest saved or resumed from) is that step's, a rerun from it would meet the same
    step again whatever its learning rate: it is moved aside (:func:`moved_aside`; ``intact``: checkpoints known
    intact). So is best/ where it holds those weights (``best_step``: the step whose model this session wrote
    there; or the same tensors as that checkpoint's) and ``best_val``, the validation score on record, does not
    vouch for them (None: no validation audio, best/ is the latest model; or not finite): render or eval would
    take it. A best/ that scored a finite validation stays: its weights are good, the step after them met a bad
    batch or a too large step. ``keep``: train.keep_checkpoints (said where no earlier checkpoint is left). Returns
    what is kept and what a rerun resumes from, for the error's line."""
    doomed = checkpoint is not None and checkpoint.name == f"step_{bad_step - 1}"
    vouched = best_val is not None and math.isfinite(best_val)
    best = "" if vouched else _best_aside(run_dir, checkpoint if doomed else None, best_step == bad_step - 1)
    if not doomed:
        return best + resumes_from(checkpoint)
    return best + moved_aside(checkpoint, f"holds the weights that gave step {bad_step}, so a rerun from it would "
                                          "meet it again", run_dir, intact, keep)


def moved_aside(checkpoint: Path, why: str, run_dir: Path, intact=(), keep: int | None = None) -> str:
    """Main process: ``checkpoint`` (which ``why``: it must not be resumed from) moved aside to ``step_N.diverged``
    (kept for the user, never resumed from); returns what the error's line says of it and of what a rerun
    resumes from: the newest intact checkpoint left (``intact``: known so; the others checked as a resume
    checks them, checkpoint.checkpoint_damage); none left: the rerun starts from step 0, said with why (``keep``:
    train.keep_checkpoints, where known) and that going on from the one moved aside is futile."""
    from wavegen.checkpoint import DIVERGED, checkpoint_damage, checkpoints, set_aside

    moved = set_aside(checkpoint, why, DIVERGED, quiet=True)
    if moved is None:  # it could not be moved (warned): the rerun would resume from it
        return f"{checkpoint} {why}, and could not be moved aside: remove it, then rerun"
    older = [folder for _, folder in reversed(checkpoints(run_dir))]
    restart = next((folder for folder in older if folder in intact or checkpoint_damage(folder) is None), None)
    if restart is not None:
        rerun = f"a rerun resumes from {restart}, the newest intact checkpoint before it"
    elif older:
        rerun = (f"the checkpoints before it are damaged ({', '.join(folder.name for folder in older)}): a rerun "
                 "names them; remove them to start again from step 0")
    else:
        rerun = _from_step_0(moved, keep)
    return f"{checkpoint} {why}: moved aside to {moved.name}; {rerun}"


def _from_step_0(moved: Path, keep: int | None) -> str:
    """For the line of a checkpoint moved aside with no earlier one left: the rerun starts from step 0, why, and
    that resuming from the moved one (renamed back) would not help, whatever the learning rate."""
    why = ("train.keep_checkpoints=1 keeps only the newest" if keep == 1 else
           "none was saved before it, or train.keep_checkpoints pruned them")
    more = "; a larger train.keep_checkpoints leaves an earlier one to go back to" if keep == 1 else ""
    return (f"no earlier checkpoint is kept ({why}), so a rerun starts again from step 0 and the steps trained so far "
            f"are lost: going on from {moved.name} would meet the same non-finite step at any learning rate{more}")


def _best_aside(run_dir: Path, doomed: Path | None, written_then: bool) -> str:
    """best/ moved to ``best.diverged`` where it holds the weights that gave the non-finite step (``written_then``,
    or the tensors of the ``doomed`` checkpoint): what the error's line says of it ("" when it stays). A move
    that fails is said in the line too (the divergence is not lost behind a SaveError)."""
    from wavegen.checkpoint import CheckpointError, recorded_tensors_sha256
    from wavegen.resolve import MODEL_FILE
    from wavegen.resolve_checkpoints import checkpoint_weights

    best = Path(run_dir) / "best"
    if not (best / MODEL_FILE).is_file():
        return ""
    if not written_then and doomed is not None:
        try:
            written_then = recorded_tensors_sha256(best / MODEL_FILE) == recorded_tensors_sha256(
                checkpoint_weights(doomed))
        except (OSError, CheckpointError):
            return ""
    if not written_then:
        return ""
    target = free_name(best.with_name("best.diverged"))  # an earlier divergence's is kept too
    try:
        best.rename(target)
    except OSError as err:
        return (f"{best} holds the weights that gave it and could not be moved aside to {target.name} "
                f"({err.strerror or err}): move it away yourself, render and eval would take it; ")
    return f"{best} held the weights that gave it: moved aside to {target.name}; "


def check_finite(run, state: bool) -> None:
    """NonFiniteError at the run's first non-finite step (``run``: wavegen.train's ``_Run``; what is kept:
    :func:`kept_after_divergence`), or, with ``state``, where the weights, their average or Adam's state are
    not finite after this step's update (before validation or a checkpoint would keep them)."""
    def kept(bad_step: int) -> str:
        return broadcast(run.accelerator, on_main(run.accelerator, lambda: kept_after_divergence(
            run.checkpoint, bad_step, run.run_dir, run.best_saved_step, run.best_val, run.intact,
            run.cfg.keep_checkpoints),
            f"the checkpoints of {run.run_dir}", run.checkpoint))

    run.watch.check(run.checkpoint, kept)
    if state:
        run.watch.check_state(run.step, state_tensors(run.inner, run.optimizer, run.average), run.checkpoint)


def check_resumed(run, folder: Path) -> None:
    """NonFiniteError where the checkpoint ``folder`` ``run`` resumed from holds a NaN or inf (written by a
    training that diverged, before its weights were checked): moved aside, so the rerun the line names resumes
    from the one before it."""
    bad = not_finite(state_tensors(run.inner, run.optimizer, run.average))
    if not agree(run.accelerator, bool(bad)):
        return
    what = " and ".join(bad) or "another process's state"
    why = f"holds NaN or inf in {what}, so a run cannot go on from it"
    said = broadcast(run.accelerator, on_main(run.accelerator, lambda: moved_aside(folder, why, run.run_dir),
                                              f"the checkpoints of {run.run_dir}", folder))
    raise every_process(NonFiniteError(f"{said}: rerun the same command"))


class AboveUniform:
    """Whether a training's loss has stayed far above a uniform guess over ``q_levels`` (log2(q_levels) bits: what a
    model that learned nothing scores) at each of LOSS_STEPS steps in a row past ``warmup_steps``. :meth:`step`
    counts each step's loss on the device (no host sync); :meth:`note`, at a log row, returns the one line to warn
    with, once. ``start_step``: the step the session resumed from (0: a new training): a loss above the limit from the
    session's first step on blames the weights resumed from (ruined before it, whatever ``lr`` is now), not ``lr``."""

    def __init__(self, q_levels: int, lr: float, warmup_steps: int = 0, start_step: int = 0):
        self.uniform_bits = math.log2(q_levels)
        self.limit_bits = max(self.uniform_bits * UNIFORM_RATIO, self.uniform_bits + UNIFORM_MARGIN_BITS)
        self.q_levels, self.lr, self.warmup_steps, self.start_step = q_levels, lr, warmup_steps, start_step
        self.said, self.stretch = False, None  # stretch: the steps in a row above the limit, up to the last, a tensor

    def step(self, loss_nats) -> None:
        """One step's loss (nats per sample, a 0-d tensor on any device or a float) counted: the stretch of steps
        above the limit grows by one or begins again, on the loss's device."""
        if self.said:
            return
        loss = torch.as_tensor(loss_nats).detach()
        above = loss > self.limit_bits * math.log(2)
        if self.stretch is None:
            self.stretch = torch.zeros((), dtype=torch.int64, device=loss.device)
        self.stretch = torch.where(above, self.stretch + 1, torch.zeros_like(self.stretch))

    def note(self, step: int, loss_bits: float, at_row: bool = True, last: bool = False) -> str | None:
        """At the log row of step ``step`` (its mean loss ``loss_bits``; ``at_row`` False: a stop between rows, the
        mean of the steps since the last one; ``last``: the row of the training's last step), the steps counted so
        far: the warning's line where they make the stretch (once), else None. Reads the count back (one host
        sync)."""
        if self.said or self.stretch is None:
            return None
        stretch = int(self.stretch)
        if min(stretch, step - self.warmup_steps) < LOSS_STEPS:
            return None
        self.said = True
        mean = "this log row's mean" if at_row else "the mean since the last log row, judged at the stop"
        return (f"step {step}: the training loss has stayed above {self.limit_bits:.1f} bits/sample for {stretch} "
                f"steps in a row ({mean}: {loss_bits:.4g}), far above the {self.uniform_bits:.2f} "
                f"bits/sample of a uniform guess over the {self.q_levels} q_levels (ln({self.q_levels}) nats): the "
                f"model is learning nothing; {self._why(stretch >= step - self.start_step, at_row and not last)}")

    def _why(self, from_start: bool, running: bool = True) -> str:
        """The warning's cause and what to do: the weights resumed from, where the loss was above the limit from the
        session's first step (``from_start``); else the learning rate. A lower one suggested: a tenth of the one in
        use. A run still ``running`` is told to stop first; one judged at its stop or its last step is not."""
        lower = f"--set train.lr={self.lr / 10:g}"
        stop = "stop, and " if running else ""
        if self.start_step > 0 and from_start:
            return (f"it has been since the first step after the resume from step {self.start_step}: the weights "
                    f"resumed from step {self.start_step} are already far from any useful model, whatever train.lr "
                    f"(now {self.lr:g}): {stop}train again from step 0 in a new --run folder with a lower "
                    f"learning rate than the one that ruined them (e.g. {lower}, a tenth of this one)")
        return (f"train.lr={self.lr:g} is likely too large: {stop}train again with a lower one (e.g. {lower}) "
                "in a new --run folder")


def _guard(run) -> AboveUniform:
    """``run``'s loss guard, made at its first use."""
    guard = getattr(run, "above_uniform", None)
    if guard is None:
        guard = run.above_uniform = AboveUniform(run.inner.config.q_levels, run.cfg.lr, run.cfg.warmup_steps,
                                                 run.start_step)
    return guard


def note_loss(run, loss_nats: torch.Tensor) -> None:
    """After each step of ``run`` (wavegen.train's ``_Run``), its loss (nats, on the device): counted by the main
    process's guard (:class:`AboveUniform`), no host sync; the other processes' losses are not judged."""
    if run.main:
        _guard(run).step(loss_nats)


def watch_loss(run, loss_bits: float, at_row: bool = True) -> None:
    """At a log row of ``run`` (its mean loss ``loss_bits``), or (``at_row`` False) at a stop between rows (the mean of
    the steps since the last one): the main process warns once where the loss has stayed far above a uniform guess
    (:class:`AboveUniform`) at every step of a long enough stretch."""
    if not run.main:
        return
    said = _guard(run).note(run.step, loss_bits, at_row, last=run.step >= run.cfg.max_steps)
    if said is not None:
        logger.warning("%s", said)
