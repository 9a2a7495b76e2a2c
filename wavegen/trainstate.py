"""State the training loop keeps beside the model and the optimizer.

- :class:`Carry`: what each micro-batch's streams carry from one window to the next (SampleRNN's
  hidden state; WaveNet's is empty), regathered over the global batch for checkpoints, so a run
  resumes under any number of processes.
- :class:`WeightAverage`: the exponential moving average of the weights (``train.ema_decay``),
  the model that validation, best/, training samples and checkpoint renders use.
- :class:`NonFiniteWatch`: the first step whose loss or gradient was not finite, recorded on the
  device (no host sync per step) and read where the loop syncs anyway, before anything is saved (what is
  kept of the weights that gave it, and the finite checks of what a checkpoint keeps: wavegen.divergence).
- :func:`train_step`: one optimizer step over ``train.grad_accum`` micro-batches (the loop's, wavegen.train, and
  bench --train's).
- :func:`check_resume`: may this config resume that run (RESUMABLE_CHANGES)? :func:`resume_warnings`:
  what a resume is warned of (:func:`earlier_train`: the run's lr, grad_clip and intervals before it);
  :func:`lr_factor`: the learning-rate schedule.
- :func:`agree`, :func:`checked`, :func:`broadcast`: what every process of a launch must decide alike
  (wavegen.errors.every_process marks an error all of them raise: the first process alone prints it);
  :func:`on_main`: a step the main process alone takes, whose failure stops every process; :func:`save_failed`: a
  checkpoint, best/ or other file of the run that could not be written, as one line naming the checkpoint kept;
  :func:`training_lost`: another process ended or stopped answering (``train.group_timeout_seconds``): one line
  naming the checkpoint kept.
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from wavegen.config import ConfigError, TrainConfig, to_dict
from wavegen.distributed import lost_contact, lost_with_own_error, process_lost
from wavegen.errors import WavegenError, every_process

if TYPE_CHECKING:
    from wavegen.data import BatchStream


# Settings that may change when a run is resumed; anything else must match config.json.
# grad_accum may change because batches are drawn per global stream (data.py): moving from
# one GPU with grad_accum=8 to 8 GPUs with grad_accum=1 continues the same run. lr and grad_clip may
# change because they are the remedy a non-finite step names (NonFiniteWatch.check): the run goes on
# from its last good checkpoint with a lower learning rate or with clipping on.
RESUMABLE_CHANGES = {"max_steps", "log_interval", "val_interval", "checkpoint_interval",
                     "keep_checkpoints", "num_workers", "val_seconds", "grad_accum", "compile",
                     "mixed_precision", "sample_interval", "sample_seconds", "sample_streams",
                     "group_timeout_seconds", "lr", "grad_clip"}
# what a resume with another value of says (resume_warnings): how often the run is checkpointed, validated, sampled
INTERVALS = ("checkpoint_interval", "val_interval", "sample_interval")


def check_resume(run_dir: Path, config: dict) -> None:
    """ConfigError unless ``config`` may resume the run in ``run_dir``: its config.json (of a wavegen
    config's shape, else one line naming it) differs only in RESUMABLE_CHANGES, on the same corpus."""
    from wavegen.resolve import read_config

    saved = read_config(run_dir / "config.json")
    moved = _check_same_corpus(run_dir, saved, config)
    diffs = []
    for section in ("model_type", "model", "train", "data"):
        a, b = saved.get(section), config.get(section)
        if section == "model" and saved.get("model_type") != config.get("model_type"):
            continue  # another family: its every setting differs, and model_type says it
        if section == "train" and isinstance(a, dict):  # a setting added since the run began has its default
            a = {**to_dict(TrainConfig()), **a}
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                # corpus_id is _check_same_corpus's (a run older than it has none, nor split_ids, which the
                # same corpus id holds the same); the same audio in another folder (a corpus moved or copied)
                # resumes, and config.json records the new folder
                if section == "data" and (key in ("corpus_id", "split_ids") or key == "corpus" and moved):
                    continue
                if a.get(key) != b.get(key) and not (section == "train" and key in RESUMABLE_CHANGES):
                    diffs.append(f"{section}.{key}: {a.get(key)!r} → {b.get(key)!r}")
        elif a != b:
            diffs.append(f"{section}: {a!r} → {b!r}")
    if diffs:
        raise ConfigError(f"{run_dir} holds a run started with a different config ({'; '.join(diffs)}); "
                          "rerun with the same settings to resume, or give a new --run folder")


def _check_same_corpus(run_dir: Path, saved: dict, config: dict) -> bool:
    """A run resumes only on the corpus it began on: prepared again from other recordings or with
    other settings, the same folder would feed the rest of the run (and its exact resume) other audio.
    True when both ids are recorded and equal (the same audio, wherever the folder now lies)."""
    data = saved.get("data") if isinstance(saved.get("data"), dict) else {}
    was, now = data.get("corpus_id"), config["data"].get("corpus_id")
    if was is not None and now is not None and was != now:
        began, given = data.get("corpus", "?"), config["data"]["corpus"]
        other = ("it has been prepared again since, from other recordings or with other settings" if began == given
                 else f"--data {given} holds other audio")
        labels = [(section.get("labels") or []) if isinstance(section, dict) else []
                  for section in (saved.get("model"), config.get("model"))]
        # a label folder renamed, added or removed: said, the audio may be the same
        relabelled = f"; its labels are {labels[1]}, the run's {labels[0]}" if labels[0] != labels[1] else ""
        raise ConfigError(
            f"{run_dir} began on the corpus in {began} as it was prepared then (corpus id {was}); {other} "
            f"(corpus id {now}){relabelled}, so the run cannot resume on it: give --data the run's corpus, prepare "
            "the run's recordings again with its settings, or give a new --run folder (--model with this run takes "
            "its settings, not its weights)")
    return was is not None and was == now


def lr_factor(step: int, train: TrainConfig) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then the schedule."""
    if train.warmup_steps and step < train.warmup_steps:
        return (step + 1) / train.warmup_steps
    if train.lr_schedule == "constant":
        return 1.0
    span = max(1, train.max_steps - train.warmup_steps)
    progress = min(1.0, (step - train.warmup_steps) / span)
    if train.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


def earlier_train(run_dir: Path) -> dict:
    """The lr, grad_clip and INTERVALS of the run's config.json as it was (a checkpoint records no intervals, and
    one older than the record of lr and grad_clip in its state has none: a resume with others is still said)."""
    try:
        train = json.loads((run_dir / "config.json").read_text()).get("train", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {key: train[key] for key in ("lr", "grad_clip", *INTERVALS) if isinstance(train, dict) and key in train}


def resume_warnings(cfg: TrainConfig, step: int, saved: dict) -> list[str]:
    """What a run resumed at ``step`` under ``cfg`` from a checkpoint whose state is ``saved`` is warned of: a
    max_steps it is already past (nothing trains: said, not a bare "finished"); a learning rate or clipping other
    than the checkpoint's (the remedy a non-finite step names: the run no longer goes on as it would have); a
    checkpoint, validation or sample interval other than the run's config.json had (a --set left off that the
    run began with: the run went on at the preset's interval in silence); a decaying schedule stretched to a new
    end (its learning rate jumping at once), with the numbers. The checkpoint's max_steps, lr and grad_clip, and
    the intervals (earlier_train): absent in an older one (max_steps: no stretch said; the others: taken as
    unchanged)."""
    if step > cfg.max_steps:
        return [f"the run is at step {step}, past train.max_steps={cfg.max_steps}: nothing to train (a larger "
                f"--max-steps goes on from step {step}; an earlier step's checkpoint renders with --checkpoint "
                "step_N)"]
    was, was_lr = saved.get("max_steps"), saved.get("lr", cfg.lr)
    changes = [f"train.{key} {saved[key]:g} → {getattr(cfg, key):g}" for key in ("lr", "grad_clip")
               if key in saved and saved[key] != getattr(cfg, key)]
    said = [f"{' and '.join(changes)}: the run goes on from step {step} with the new "
            f"{'value' if len(changes) == 1 else 'values'}, recorded in its config.json"] if changes else []
    every = [f"train.{key} {saved[key]} → {getattr(cfg, key)}" for key in INTERVALS
             if key in saved and saved[key] != getattr(cfg, key)]
    if every:
        said.append(f"{' and '.join(every)}: the run goes on from step {step} at the new "
                    f"{'interval' if len(every) == 1 else 'intervals'}, recorded in its config.json")
    if was in (None, cfg.max_steps) or cfg.lr_schedule == "constant" or step == cfg.max_steps:
        return said
    before, now = (was_lr * lr_factor(min(step, was), replace(cfg, max_steps=was)), cfg.lr * lr_factor(step, cfg))
    if math.isclose(before, now, rel_tol=1e-3):
        return said
    return said + [f"train.max_steps {was} → {cfg.max_steps} with train.lr_schedule={cfg.lr_schedule}: the schedule "
                   f"is stretched to end at step {cfg.max_steps}, so the learning rate "
                   f"{'jumps' if now > before else 'drops'} from {before:.3g} to {now:.3g} at step {step + 1}"]


class NonFiniteError(WavegenError):
    """Training met a NaN or infinite loss or gradient; the message names the first such step."""


class SaveError(WavegenError):
    """A checkpoint or model folder could not be written (a full disk, a folder made read-only);
    the message names the folder, the reason and the checkpoint that is still intact."""


def save_failed(what: str, err: OSError, last: Path | None) -> SaveError:
    """The one-line error for ``what`` (a folder) that could not be written: the reason, and the
    checkpoint that is still intact (``last``: the newest saved or resumed from)."""
    reason = f"{err.filename}: {err.strerror}" if err.filename and err.strerror else f"{type(err).__name__}: {err}"
    kept = (f"the last intact checkpoint, {last}, is kept (a rerun resumes from it)" if last is not None
            else "no checkpoint was saved before (a rerun starts again from step 0)")
    return SaveError(f"cannot write {what}: {reason}; training stopped and {kept}: free some space or make the "
                     "folder writable, then rerun")


def agree(accelerator, flag: bool) -> bool:
    """True on every process when ``flag`` is true on any (a collective under several processes)."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, "sum").item() > 0)


def checked(accelerator, check):
    """``check()`` on every process; when it raises on any of them, every process raises (so none
    waits at the next collective for one that has left). A WavegenError: its own, or on a process
    whose check passed, the first failing process's message, marked ``every_process`` (the first
    process alone prints it). Any other error (a bug) keeps its traceback where it was raised; the
    other processes stop with one line naming it. Where the agreement meets a lost process, a process whose
    own check failed with a user error raises the loss marked with it (distributed.lost_with_own_error: the one
    line, :func:`training_lost`, says both)."""
    error, value = None, None
    try:
        value = check()
    except Exception as err:  # noqa: BLE001 - every process must learn of a failure, whatever it is
        error = err
    try:
        if not agree(accelerator, error is not None):
            return value
        said = []
        if accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            said = [m for m in gather_object([None if error is None else _said(error, accelerator.process_index)])
                    if m is not None]
    except Exception as lost:
        if error is None or not lost_contact(lost):
            raise
        if not isinstance(error, WavegenError):
            raise error from None  # a bug keeps its traceback
        # its own failure is said by this process with the loss (the process that would say it may be the one gone)
        raise lost_with_own_error(lost, error)
    if error is not None and not isinstance(error, WavegenError):
        raise error
    raise every_process(error or WavegenError(said[0]))


def _said(error: Exception, rank: int) -> str:
    """What the other processes say of ``error``: a user's error as it is, a bug by process and type."""
    if isinstance(error, WavegenError):
        return str(error)
    return f"process {rank} failed ({type(error).__name__}: {error}; its traceback is above)"


def on_main(accelerator, work, what: str, last: Path | None = None):
    """``work()`` on the main process alone (what only it writes: config.json, metrics, best/ ...),
    then every process learns whether it failed (:func:`checked`; a collective under several), so a
    failure stops them all at once instead of leaving the others waiting at their next collective.
    An OSError is SaveError naming ``what`` and ``last``, the intact checkpoint a rerun resumes from
    (:func:`save_failed`). Returns ``work()``'s value on the main process, None on the others."""
    def main_work():
        if not accelerator.is_main_process:
            return None
        try:
            return work()
        except OSError as err:
            raise save_failed(what, err, last) from None

    return checked(accelerator, main_work)


def training_lost(err: Exception, cfg: TrainConfig, world: int, run_dir: Path | None = None, step: int | None = None,
                  last: Path | None = None) -> WavegenError:
    """The one line for ``err``, a collective that failed as another process of the training ended or did not
    answer (distributed.lost_contact): what is kept and how to go on. ``run_dir``, ``step``, ``last``: the run's
    folder, step and last checkpoint saved (None: it had not started). The newest checkpoint in the folder is
    named: one the main process finished as the other ended is there, and a rerun takes it."""
    from wavegen.checkpoint import checkpoints

    if run_dir is None:
        kept = "the training had not begun its steps; rerun the same command"
    else:
        try:
            last = (checkpoints(run_dir) or [(None, last)])[-1][1]
        except OSError:
            pass
        kept = (f"the training had reached step {step} with no checkpoint saved yet; rerun the same command"
                if last is None else f"the training had reached step {step}; the last checkpoint, {last}, is kept: "
                "rerun the same command to resume from it")
    return process_lost(err, f"this training ({world} processes)", kept,
                        f"train.group_timeout_seconds={cfg.group_timeout_seconds:g}")


def broadcast(accelerator, value):
    """The main process's ``value`` on every process."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


class Carry:
    """Per micro-batch ``m``, ``slots[m]``: the State (named tensors, streams at dim 1) the model
    returned for that micro-batch's streams' last window, handed back with their next one."""

    def __init__(self, grad_accum: int):
        self.grad_accum = grad_accum
        self.slots: list[dict | None] = [None] * grad_accum

    def gather(self, accelerator) -> dict[str, torch.Tensor]:
        """Every process's slots → one CPU tensor per name over the global batch (stream order:
        process, then micro-batch, then stream). Collective under several processes."""
        if not any(self.slots):
            return {}
        out = {}
        for name in sorted(self.slots[0]):
            local = torch.cat([s[name].transpose(0, 1) for s in self.slots]).contiguous()
            full = accelerator.gather(local) if accelerator.num_processes > 1 else local
            out[name] = full.transpose(0, 1).cpu()
        return out

    def scatter(self, accelerator, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`gather` for this process's (possibly new) share of the streams."""
        self.slots = [None] * self.grad_accum
        if not tensors:
            return
        total = next(iter(tensors.values())).shape[1]
        per = total // (accelerator.num_processes * self.grad_accum)
        for m in range(self.grad_accum):
            first = (accelerator.process_index * self.grad_accum + m) * per
            self.slots[m] = {name: t[:, first: first + per].to(accelerator.device) for name, t in tensors.items()}


class WeightAverage:
    """An exponential moving average of a model's parameters and buffers: torch's AveragedModel
    with its EMA function, ``avg = decay * avg + (1 - decay) * weights`` after every optimizer step
    (the first update copies the weights). ``model`` is the averaged copy (eval mode, no gradients)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        self._averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self._averaged.requires_grad_(False)
        self.model = self._averaged.module.eval()

    def update(self, model: torch.nn.Module) -> None:
        self._averaged.update_parameters(model)

    @property
    def updates(self) -> int:
        return int(self._averaged.n_averaged)

    def weights(self) -> dict[str, torch.Tensor]:
        """The averaged model's state dict on the CPU (the keys of the model's own), for a checkpoint
        (AVERAGED_MODEL; its trainer state records :attr:`updates` as ``ema_updates``)."""
        return {name: t.detach().cpu().contiguous() for name, t in self.model.state_dict().items()}

    def restore(self, folder: Path, trainer_state: dict) -> None:
        """Back to the average checkpoint ``folder`` kept; CheckpointError naming the file when it cannot."""
        from wavegen.checkpoint import CheckpointError, load_weights
        from wavegen.resolve import AVERAGED_MODEL

        path = Path(folder) / AVERAGED_MODEL
        weights = load_weights(path)
        try:
            self.model.load_state_dict(weights, strict=True)
            self._averaged.n_averaged.fill_(int(trainer_state["ema_updates"]))
        except (KeyError, RuntimeError) as err:
            raise CheckpointError(f"{path}: cannot restore the average of the weights ({type(err).__name__}: "
                                  f"{err})") from None


class NonFiniteWatch:
    """The first step with a non-finite loss or gradient norm: ``[step, loss bad, gradient bad]`` on the device.

    Gradients are not watched under fp16 loss scaling: there an overflowing gradient is routine
    (the scaler skips that step and lowers its scale).
    """

    def __init__(self, accelerator, train_cfg):
        self.accelerator = accelerator
        self.grad_clip = train_cfg.grad_clip
        self.gradients = getattr(accelerator, "scaler", None) is None
        device = accelerator.device
        self.record = torch.full((3,), -1, dtype=torch.long, device=device)
        self.step = torch.zeros((), dtype=torch.long, device=device)
        self._no = torch.zeros((), dtype=torch.bool, device=device)

    def reset(self, step: int) -> None:
        """Start counting at ``step`` (the step a run resumes from)."""
        self.step.fill_(step)
        self.record.fill_(-1)

    def note(self, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> None:
        """After a step's backward: record it when it is the first non-finite one (device ops only)."""
        self.step += 1
        grad_bad = ~torch.isfinite(grad_norm) if grad_norm is not None and self.gradients else self._no
        bad = torch.stack([~torch.isfinite(loss.detach()), grad_bad]).long()
        first = (self.record[0] < 0) & (bad.sum() > 0)
        self.record = torch.where(first, torch.cat([self.step.view(1), bad]), self.record)

    def first_bad(self) -> tuple[int, str] | None:
        """The first non-finite step and what was not finite ("the loss", "the gradient", both), or None (a host
        sync; collective under several processes, every process answers alike)."""
        record = self.record.view(1, 3)
        if self.accelerator.num_processes > 1:
            record = self.accelerator.gather(record)
        rows = [r for r in record.tolist() if r[0] >= 0]
        if not rows:
            return None
        step = min(r[0] for r in rows)
        loss_bad = any(r[1] for r in rows if r[0] == step)
        grad_bad = any(r[2] for r in rows if r[0] == step)
        what = " and ".join(w for w, bad in (("the loss", loss_bad), ("the gradient", grad_bad)) if bad)
        return step, f"{what} {'was' if ' and ' not in what else 'were'}"

    def check(self, last_checkpoint: Path | None, kept=None) -> None:
        """Raise NonFiniteError naming the first bad step (a host sync; collective under several processes).
        ``kept(step)``, called on every process once the first bad step is known: what a rerun resumes from
        (wavegen.divergence.kept_after_divergence); else ``last_checkpoint``."""
        bad = self.first_bad()
        if bad is None:
            return
        step, what = bad
        from wavegen.divergence import resumes_from

        said = kept(step) if kept is not None else resumes_from(last_checkpoint)
        raise every_process(NonFiniteError(f"step {step}: {what} not finite (NaN or inf); training stopped and "
                                           f"nothing from step {step} on was saved ({said}): {self.hint}"))

    @property
    def hint(self) -> str:
        return "lower train.lr" + ("" if self.grad_clip > 0 else " or clip the gradient (train.grad_clip, e.g. 1.0)")

    def check_state(self, step: int, named: dict, last_checkpoint: Path | None) -> None:
        """Raise NonFiniteError when a tensor of ``named`` (what holds it → its tensors: the weights, their
        average, the optimizer's state) holds a NaN or inf after step ``step``'s update, whose loss and gradient
        were finite (an update too large: the learning rate): called before anything saves them. One host
        sync (divergence.not_finite), and a collective under several processes."""
        from wavegen.divergence import not_finite, resumes_from

        bad = not_finite(named)
        if not agree(self.accelerator, bool(bad)):
            return
        what = " and ".join(bad) or "another process's weights"
        raise every_process(NonFiniteError(
            f"step {step}: {what} {'were' if len(bad) != 1 or what.endswith('s') else 'was'} not finite (NaN or inf) "
            f"after its update, though its loss and gradient were finite; training stopped and nothing of step "
            f"{step} was saved ({resumes_from(last_checkpoint)}): {self.hint}"))


def train_step(accelerator, model, optimizer, stream: BatchStream, train_cfg: TrainConfig, step: int,
               carry: Carry, watch: NonFiniteWatch | None = None) -> torch.Tensor:
    """One optimizer step at ``step`` over ``train_cfg.grad_accum`` micro-batches from ``stream``.

    Every micro-batch is built first, so a stop while building (BatchBuildingStopped) leaves the
    model, the optimizer and ``carry`` as they were. Then: the learning rate, gradients accumulated
    (DDP all-reduces only on the last micro-batch), each micro-batch's state carried in ``carry``,
    clipping, Adam. ``watch`` notes a non-finite loss or gradient on the device. Returns the mean
    loss (nats per sample) as a 0-d tensor on the device: reading it waits for the device, so the
    caller does that only when it logs.
    """
    batches = [stream.next() for _ in range(train_cfg.grad_accum)]
    for group in optimizer.param_groups:
        group["lr"] = train_cfg.lr * lr_factor(step, train_cfg)
    total = None
    for micro, batch in enumerate(batches):
        last = micro == train_cfg.grad_accum - 1
        with nullcontext() if last else accelerator.no_sync(model):
            with accelerator.autocast():
                loss, carry.slots[micro] = model(batch, carry.slots[micro])
            accelerator.backward(loss / train_cfg.grad_accum)
        part = loss.detach() / train_cfg.grad_accum
        total = part if total is None else total + part
    norm = None
    if train_cfg.grad_clip > 0:
        norm = accelerator.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
    elif watch is not None and watch.gradients:
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    if watch is not None:
        watch.note(total, norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total
