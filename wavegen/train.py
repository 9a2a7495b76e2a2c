"""The training loop (accelerate): one process here, or ``accelerate launch`` / ``torchrun``.

The trainer knows a model through the contract in :mod:`wavegen.models.contract`:
``loss, state = model(batch, state)``. The state a stream carries from one window to the next
(SampleRNN's hidden state) is the trainer's: it keeps one per micro-batch (:class:`Carry`),
saves it in checkpoints and regathers it over the global batch when the process count changes.
Validation and the run's best/ model are :mod:`wavegen.bestmodel`'s. What the main process alone
writes (config.json, the logs, best/, pruning) goes through trainstate.on_main: when it fails, every
process stops with the same one-line error, none left waiting at its next collective. A collective that
fails because another process ended, or did not answer within train.group_timeout_seconds, stops this one
with one line naming the last checkpoint (distributed.process_lost), not gloo's traceback.

Layout of a run folder::

    RUN/config.json              the resolved config (model, train, data with the corpus id the run resumes on only;
                                 the preset and the --set overrides)
    RUN/metrics.jsonl            one JSON row per log interval and per validation (wavegen.runlog)
    RUN/tb/                      TensorBoard logs
    RUN/checkpoints/step_N/      accelerate state + training_state (+ averaged_model) + trainer_state.json, last N kept
    RUN/best/                    model.safetensors + config.json (+ album.json) of the best validation NLL
                                 (with train.ema_decay: the averaged weights, as validation scored them)
    RUN/album.json               the training split's feature ranges, for the render guard (wavegen.render.album)
    RUN/samples/step_N/          audio + spectrograms rendered from step N's weights (wavegen.samples)
    RUN/.lock                    held by the training writing here (a second one is refused)
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from wavegen.bestmodel import best_on_record, restore_missing_best, start_again, trained_before, where_the_model_is
from wavegen.bestmodel import validate as _validate  # (tests patch wavegen.train._validate)
from wavegen.checkpoint import load_checkpoint, newest_intact, prune_checkpoints, save_checkpoint, tidy_run_folder
from wavegen.config import ConfigError, TrainConfig, from_dict
from wavegen.corpus import Corpus
from wavegen.data import BatchBuildingStopped, BatchStream, batch_warnings, local_streams, make_batches
from wavegen.distributed import end_accelerator, lost_contact, make_accelerator
from wavegen.divergence import check_finite, check_resumed, note_loss, watch_loss
from wavegen.fileio import write_json
from wavegen.folders import check_writable
from wavegen.models import build_model, model_config
from wavegen.progress import counted
from wavegen.render.album import ensure_run_profile
from wavegen.runconfig import check_run_folder, resolve_run_config  # noqa: F401  (as wavegen.train.resolve_run_config)
from wavegen.runlog import RunLog, check_log_paths
from wavegen.runlog import read_metrics  # noqa: F401  (the public reader, as wavegen.train.read_metrics)
from wavegen.samples import TrainingSamples, run_key
from wavegen.signals import StopSignals, first_process_says
from wavegen.signals import logger as signals_logger
from wavegen.trainstate import (Carry, NonFiniteWatch, WeightAverage, agree, broadcast, check_resume, checked,
                                earlier_train, on_main, resume_warnings, train_step, training_lost)
from wavegen.trainstate import lr_factor  # noqa: F401  (as wavegen.train.lr_factor)

logger = logging.getLogger(__name__)

LN2 = math.log(2.0)


def build_training(config: dict, train_cfg: TrainConfig, accelerator):
    """Seeded model + Adam, compiled if asked, prepared by accelerate (DDP under several processes).

    Returns ``(model, optimizer, inner)``: ``model`` is what the step calls, ``inner`` the plain
    nn.Module (for its attributes, state and saving).
    """
    from accelerate.utils import set_seed

    if accelerator.device.type == "cpu":
        from wavegen.memory import keep_freed_memory

        keep_freed_memory()
    set_seed(train_cfg.seed)
    model = build_model(config)
    # fused Adam: one kernel for every parameter on CUDA; the plain loop elsewhere
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay,
                                 fused=accelerator.device.type == "cuda" or None)
    if train_cfg.compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    inner = accelerator.unwrap_model(model)
    if hasattr(inner, "_orig_mod"):
        inner = inner._orig_mod
    return model, optimizer, inner


@dataclass
class _Run:
    """Everything one training run's functions share (no closures over train()'s locals)."""

    config: dict
    cfg: TrainConfig
    accelerator: object
    run_dir: Path
    corpus: Corpus
    model: object  # what the step calls (DDP / compiled)
    optimizer: object
    inner: object  # the plain model
    batches: object
    carry: Carry
    watch: NonFiniteWatch
    step: int = 0
    start_step: int = 0
    best_val: float | None = None
    best_samples: int | None = None  # validation audio the best scored (None: not known yet)
    best_step: int | None = None  # the step whose validation scored best_val (None: not known)
    best_saved_step: int | None = None  # the step whose model this session wrote to best/
    checkpoint: Path | None = None  # the newest checkpoint saved or resumed from
    resumed_from: Path | None = None  # never pruned in this session
    intact: set = field(default_factory=set)  # checkpoints known intact in this session (main process)
    last_val_step: int = -1
    log: RunLog | None = None
    samples: TrainingSamples | None = None
    album: dict | None = None  # the training split's profile (RUN/album.json), copied into best/
    average: WeightAverage | None = None  # train.ema_decay's average of the weights
    running: torch.Tensor | None = None  # summed loss since the last log row, on the device
    running_steps: int = 0  # steps summed in running (a resume restores those before it)
    window: list = field(default_factory=lambda: [0, time.perf_counter()])  # steps, start of the log window

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def judged(self):
        """The model that validation scores, best/ keeps and samples render: the average when kept."""
        return self.average.model if self.average is not None else self.inner


# What the first SIGINT or SIGTERM says it will do (wavegen.signals), while the run starts up, then while it trains
STOP_STARTING = "stopping once the run has started up, before its first step"
STOP_TRAINING = "finishing the step and saving a checkpoint"


def train(config: dict, run_dir: str | Path, progress: bool = True, stop: StopSignals | None = None) -> dict:
    """Train (or resume) the run in ``run_dir`` with the resolved ``config``.

    Returns ``{"step", "status": "finished"|"interrupted", "best_val_bits", "run_dir", "checkpoint"}``.
    Raises FolderBusyError when another training holds ``run_dir``, NonFiniteError at the first
    non-finite loss or gradient (nothing after the last good checkpoint is saved), ConfigError /
    CorpusError / OutOfMemoryError before anything is written when the run cannot work.

    A first SIGINT or SIGTERM (wavegen.signals) at any point stops cleanly: while the run starts up,
    the start-up finishes (nothing is left half-written) and no step trains ("interrupted" at the
    step it started from); later, the step finishes and a checkpoint is saved. ``stop``: the
    StopSignals a caller installed before this call (the CLI's, before its imports, under
    signals.first_process_says), else train's own (under it too).
    """
    if stop is not None:  # the caller's StopSignals: its lines are said as the caller arranged (the CLI: once)
        stop.message = STOP_STARTING
        return _train(config, Path(run_dir), progress, stop)
    # what a stop signal will do is said once, by the first process of a launch (each of them hears it)
    with StopSignals() as stop, first_process_says(signals_logger.name):
        stop.message = STOP_STARTING
        return _train(config, Path(run_dir), progress, stop)


def _train(config: dict, run_dir: Path, progress: bool, stop: StopSignals) -> dict:
    train_cfg = from_dict(TrainConfig, config["train"], "train")
    train_cfg.validate()
    model_config(config).validate(train_cfg)
    check_run_folder(run_dir, config)  # not the corpus, nor a folder of recordings
    try:  # several processes meet here first (gloo connects them within train.group_timeout_seconds)
        accelerator = make_accelerator(train_cfg.mixed_precision, timeout_seconds=train_cfg.group_timeout_seconds)
    except Exception as err:
        if not lost_contact(err):
            raise
        raise training_lost(err, train_cfg, int(os.environ.get("WORLD_SIZE", "1"))) from err
    if accelerator.device.type == "cpu" and accelerator.mixed_precision == "fp16" and accelerator.is_main_process:
        logger.warning("train.mixed_precision=fp16: fp16 autocast has no effect on a CPU, so this run trains in fp32; "
                       "bf16 is the CPU's half precision (--set train.mixed_precision=bf16)")
    if accelerator.device.type == "cuda":  # fp32 matmuls outside autocast (e.g. mixed_precision=no) may use TF32
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    run = None
    try:
        with _run_lock(accelerator, run_dir):
            run = _start(config, train_cfg, accelerator, run_dir)
            if agree(accelerator, stop.requested):  # a signal while it started up: no step trains
                status = "interrupted"
                if run.main:
                    logger.warning("%s: stopped before training step %d", stop.name or "a signal to another process",
                                   run.step + 1)
            else:
                status = _train_steps(run, progress, stop)
            accelerator.wait_for_everyone()
        if run.main:
            logger.info("%s at step %d; %s", status, run.step, where_the_model_is(run))
    except Exception as err:
        if not lost_contact(err):  # a lost process is said in one line; anything else raised as it is
            raise
        where = (run.run_dir, run.step, run.checkpoint) if run is not None else ()
        raise training_lost(err, train_cfg, accelerator.num_processes, *where) from err
    finally:
        if run is not None:  # DDP's reducer must not hold the process group's last reference
            run.model = run.optimizer = None
        end_accelerator(accelerator)
    return {"step": run.step, "status": status, "best_val_bits": run.best_val, "run_dir": str(run_dir),
            "checkpoint": str(run.checkpoint) if run.checkpoint else None}


def _train_steps(run: _Run, progress: bool, stop: StopSignals) -> str:
    """The logs, the samples and the batch stream of a run that has started up, then its steps (_run_steps)."""
    cfg, accelerator = run.cfg, run.accelerator
    run.log = _made_on_main(run, "the logs", lambda main: RunLog(run.run_dir, run.step, cfg.max_steps, main, progress))
    stream, status = None, None
    try:  # the logs are closed whatever fails after them (a second train() in one process reopens them)
        run.samples = _made_on_main(run, "the samples", lambda main: TrainingSamples(
            run.run_dir, cfg, accelerator.device, run.corpus.sample_rate, main, run.log, run.album,
            run_key(run.config), start_step=run.step))
        stream = BatchStream(run.batches, run.step, cfg.grad_accum, accelerator.device, workers=cfg.num_workers,
                             pin=accelerator.device.type == "cuda")
        status = _run_steps(run, stream, stop)
        return status
    finally:
        if stream is not None:
            stream.close()
        run.log.close(warn=status is not None)  # a failure's own line is not followed by the logs' (a full disk)


def _made_on_main(run: _Run, what: str, make):
    """``make(main)``: the main process's (which writes in the run folder: a failure stops every process,
    trainstate.on_main), or another process's (which writes nothing)."""
    return (on_main(run.accelerator, lambda: make(True), f"{what} of {run.run_dir}", run.checkpoint)
            or make(False))


@contextmanager
def _run_lock(accelerator, run_dir: Path):
    """The main process holds RUN/.lock for the whole training; when it cannot, every process stops."""
    from wavegen.folders import FolderLock, missing_folders, remove_unused

    main = accelerator.is_main_process
    made = missing_folders(run_dir) if main else []  # the lock makes them
    lock = checked(accelerator, lambda: FolderLock(run_dir, "training run").acquire() if main else None)
    try:
        yield lock
    finally:
        if lock is not None:
            remove_unused(made)  # a run refused before it wrote anything (a corpus too short) leaves no folder
            lock.release()


def _start(config: dict, train_cfg: TrainConfig, accelerator, run_dir: Path) -> _Run:
    """Every check that can refuse the run, then the model, then config.json, then the resume."""
    main = accelerator.is_main_process
    checked(accelerator, lambda: _check_writable(run_dir))
    corpus = checked(accelerator, lambda: _corpus_of(config))
    found, damaged = checked(accelerator, lambda: newest_intact(run_dir) if main else (None, []))
    checked(accelerator, lambda: _check_before_building(config, train_cfg, accelerator, run_dir, found))
    found = broadcast(accelerator, on_main(accelerator, lambda: tidy_run_folder(run_dir, found, damaged),
                                           f"the checkpoints of {run_dir}", found and found[1]))
    model, optimizer, inner = build_training(config, train_cfg, accelerator)
    batches = checked(accelerator, lambda: make_batches(
        inner, corpus.split("train"), corpus.segments("train"), corpus.segment_labels("train"), train_cfg,
        accelerator.process_index, accelerator.num_processes))
    last = found and found[1]
    earlier = earlier_train(run_dir) if found is not None and main else {}  # before config.json is replaced
    trained = broadcast(accelerator, trained_before(run_dir, config) if found is None and main else None)
    on_main(accelerator, lambda: write_json(run_dir / "config.json", config), f"{run_dir / 'config.json'}", last)
    run = _Run(config, train_cfg, accelerator, run_dir, corpus, model, optimizer, inner, batches,
               Carry(train_cfg.grad_accum), NonFiniteWatch(accelerator, train_cfg),
               running=torch.zeros((), device=accelerator.device),
               album=on_main(accelerator, lambda: ensure_run_profile(run_dir, config, corpus),
                             f"{run_dir / 'album.json'}", last),
               average=WeightAverage(inner, train_cfg.ema_decay) if train_cfg.ema_decay > 0 else None)
    if found is not None:
        _resume(run, found[1], earlier)
    elif trained is not None:
        start_again(run, *trained)
    run.watch.reset(run.step)
    if main:
        n_params = sum(p.numel() for p in inner.parameters())
        named = config.get("preset") or config["model_type"]
        if config.get("overrides"):
            named += " with " + " ".join(config["overrides"])
        logger.info("model %s: %.2fM parameters; %s on %s; batch %d x %d samples", named, n_params / 1e6,
                    counted(run.world, "process", "processes"), accelerator.device, train_cfg.batch_size,
                    train_cfg.seq_len)
        if len(corpus.segments("val")) == 0:
            logger.warning("the corpus has no validation audio: best/ will hold the latest model")
        for warning in batch_warnings(batches, inner, train_cfg):
            logger.warning("%s", warning)
    return run


def _check_writable(run_dir: Path) -> None:
    """RUN and RUN/checkpoints can be written, and the logs' paths are what they must be
    (runlog.check_log_paths): found now, not at the first checkpoint hours later."""
    for folder in (run_dir, run_dir / "checkpoints"):
        if folder.is_dir():
            check_writable(folder, "--run folder")
    check_log_paths(run_dir)


def _corpus_of(config: dict) -> Corpus:
    corpus = Corpus(config["data"]["corpus"])
    if corpus.sample_rate != config["data"]["sample_rate"]:
        raise ConfigError(f"corpus {corpus.dir} is at {corpus.sample_rate} Hz, the config says data.sample_rate="
                          f"{config['data']['sample_rate']}: leave data.sample_rate to the corpus")
    corpus.hold("train", "val")  # prepared again while the run trains, the run stays on these
    return corpus


def _check_before_building(config: dict, train_cfg: TrainConfig, accelerator, run_dir: Path, found) -> None:
    """The config against the run's (when a step was saved: a run with none is started anew), the batch against
    the processes and accumulation steps it splits into, and the memory the training needs against the memory
    here (after the split: a batch that does not split was refused for memory, advised to lower the batch)."""
    from wavegen.memory import check_training_memory

    if found is not None and (run_dir / "config.json").is_file():
        check_resume(run_dir, config)
    local_streams(train_cfg, accelerator.process_index, accelerator.num_processes)
    check_training_memory(config, train_cfg, accelerator.device, accelerator.mixed_precision != "no",
                          int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes)))


def _resume(run: _Run, folder: Path, earlier: dict) -> None:
    """Model, optimizer, RNG and the carried state from checkpoint ``folder``, under any process count;
    earlier: the run's lr and grad_clip before this command (what a checkpoint that lacks them had)."""
    state, tensors = load_checkpoint(run.accelerator, folder)
    run.carry.scatter(run.accelerator, tensors)
    run.step = run.start_step = state["step"]
    run.best_val, run.checkpoint = best_on_record(run.run_dir, run.step, state.get("best_val_bits")), folder
    run.resumed_from = folder
    run.intact.add(folder)
    # the loss summed since the last log row before the checkpoint (an older checkpoint has none)
    run.running.fill_(state.get("log_loss_sum", 0.0))
    run.running_steps = state.get("log_loss_steps", 0)
    if run.average is not None:
        run.average.restore(folder, state)
    check_resumed(run, folder)
    if run.main:
        for warning in resume_warnings(run.cfg, run.step, {**earlier, **state}):
            logger.warning("%s", warning)
        saved_by = state.get("processes", run.world)
        moved = (f" (checkpoint written by {counted(saved_by, 'process', 'processes')}, now {run.world})"
                 if saved_by != run.world else "")
        logger.info("resuming %s from step %d%s", run.run_dir, run.step, moved)
    restore_missing_best(run)  # best/ removed: back from the step that scored it


def _run_steps(run: _Run, stream: BatchStream, stop: StopSignals) -> str:
    """Steps until max_steps ("finished") or a stop signal ("interrupted"), then the final saves.

    Hot loop: nothing reads a device value back to the host except at log, validation and
    checkpoint steps (the loss, the non-finite record, the stop flag agreed by several processes).
    """
    cfg = run.cfg
    run.model.train()
    stop.message = STOP_TRAINING
    if run.world == 1:  # a single process may abandon a step's batch building (nothing to agree on)
        run.batches.should_stop = lambda: stop.requested
    while run.step < cfg.max_steps:
        try:
            loss = train_step(run.accelerator, run.model, run.optimizer, stream, cfg, run.step, run.carry,
                              run.watch)
        except BatchBuildingStopped:
            logger.warning("stopped while building the batches of step %d", run.step + 1)
            check_finite(run, state=run.step > run.start_step)
            _judge_since_row(run)
            if run.step > run.start_step:
                _save_once(run)  # a stop during validation or samples: this step's checkpoint may be saved
            return "interrupted"
        if run.average is not None:
            run.average.update(run.inner)
        run.running += loss
        note_loss(run, loss)  # far above a uniform guess: counted on the device, judged at log rows (watch_loss)
        run.running_steps += 1
        run.step += 1
        run.window[0] += 1
        run.log.step_done()
        if _after_step(run, stop):
            return "interrupted"
    if run.step > run.start_step:
        check_finite(run, state=True)
        if run.last_val_step != run.step:
            _validate(run)
        _save_once(run)
    return "finished"


def _after_step(run: _Run, stop: StopSignals) -> bool:
    """Log, validate and checkpoint where due; True when the run must stop (a signal)."""
    cfg, step = run.cfg, run.step
    log_now = step % cfg.log_interval == 0 or step == cfg.max_steps
    # the last step validates before its checkpoint, so the checkpoint records the score (and a resume,
    # or a restored best/, knows it)
    val_now = step % cfg.val_interval == 0 or step == cfg.max_steps
    at_checkpoint = step % cfg.checkpoint_interval == 0
    sample_now = run.samples.due(step)
    # One process alone reads its flag for free; several agree (a collective, so a host sync)
    # only at steps every process knows: log and checkpoint steps.
    if run.world == 1:
        stopping = stop.requested
    else:
        stopping = agree(run.accelerator, stop.requested) if log_now or at_checkpoint else False
    if not (log_now or val_now or at_checkpoint or stopping or sample_now):
        return False
    paused = time.perf_counter()
    # before anything is written: the first non-finite step stops the run, and non-finite weights are never saved
    check_finite(run, state=val_now or at_checkpoint or stopping)
    if log_now:
        _log_train(run, paused)
    elif stopping:
        _judge_since_row(run)
    if val_now:
        _validate(run)
    # Alone, the samples come first: a kill while they are drawn resumes before the step, and draws them again.
    # Under several processes the checkpoint does: the main process draws them alone, the others waiting at most
    # train.group_timeout_seconds, and a wait that runs out loses no step
    save_first = run.world > 1
    if (at_checkpoint or stopping) and save_first:
        _save(run)
    if sample_now:
        run.samples.write(step, run.judged)
    if (at_checkpoint or stopping) and not save_first:
        _save(run)
    run.window[1] += time.perf_counter() - paused  # validation and checkpoints do not count in samples/s
    return stopping


def _running_mean(run: _Run) -> torch.Tensor:
    """The loss summed since the last log row, averaged over the processes (a collective under several)."""
    return run.accelerator.reduce(run.running, "mean") if run.world > 1 else run.running


def _log_train(run: _Run, now: float) -> None:
    steps, start = run.window  # timed since the last log row or the resume
    loss_bits = float(_running_mean(run)) / run.running_steps / LN2
    watch_loss(run, loss_bits)  # far above a uniform guess for LOSS_STEPS steps: warned once (train.lr)
    rate = run.cfg.batch_size * run.cfg.seq_len * steps / max(now - start, 1e-9)
    lr = run.optimizer.param_groups[0]["lr"]
    on_main(run.accelerator, lambda: run.log.train_row(run.step, loss_bits, lr, rate),
            f"the metrics of {run.run_dir}", run.checkpoint)
    run.running.zero_()
    run.running_steps = 0
    run.window[:] = [0, time.perf_counter()]


def _judge_since_row(run: _Run) -> None:
    """A stop between log rows: the steps trained since the last row judged by the loss guard as a row judges them
    (divergence.watch_loss); no row is written (the checkpoint keeps their sum: a resume's first row logs them)."""
    if run.running_steps:
        watch_loss(run, float(_running_mean(run)) / run.running_steps / LN2, at_row=False)


def _save_once(run: _Run) -> None:
    """This step's checkpoint unless it was saved (or resumed from) already."""
    if run.checkpoint is None or run.checkpoint.name != f"step_{run.step}":
        _save(run)


def _save(run: _Run) -> None:
    tensors = run.carry.gather(run.accelerator)
    state = {"step": run.step, "best_val_bits": run.best_val, "processes": run.world,
             "grad_accum": run.cfg.grad_accum, "max_steps": run.cfg.max_steps,
             "lr": run.cfg.lr, "grad_clip": run.cfg.grad_clip,  # a resume may change them: said, with the old
             # the log window so far: a resume logs the same first loss_bits row as a run not stopped here
             "log_loss_sum": float(_running_mean(run)), "log_loss_steps": run.running_steps}
    averaged = None
    if run.average is not None:
        state["ema_updates"] = run.average.updates
        averaged = run.average.weights() if run.main else None
    run.checkpoint = save_checkpoint(run.accelerator, run.run_dir, run.step, state, tensors, averaged, run.checkpoint)
    def prune():  # only intact checkpoints count; the one just written and the one resumed from stay
        run.intact.add(run.checkpoint)
        prune_checkpoints(run.run_dir, run.cfg.keep_checkpoints, run.intact, (run.checkpoint, run.resumed_from))

    on_main(run.accelerator, prune, f"the checkpoints of {run.run_dir}", run.checkpoint)
