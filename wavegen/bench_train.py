"""Training speed: ``wavegen bench --train``.

:func:`bench_training` runs the trainer's own step (:func:`wavegen.train.train_step`: batches
from the memory-mapped corpus path, autocast, backward, clip, Adam) on synthetic audio, so no
corpus is needed; :func:`format_training_table` prints its rows. Shares only
:func:`wavegen.bench.machine_info` and :func:`wavegen.bench.set_threads` with the generation
benchmark. Under ``accelerate launch`` / ``torchrun`` the global batch is split over the
processes as training splits it (:func:`wavegen.data.local_streams`, :func:`wavegen.data.make_batches`),
DDP all-reduces the gradients, and the main process reports for the whole job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from wavegen import bench
from wavegen.bench import check_counts, check_seed, duration, machine_info, parameters_said, set_threads
from wavegen.config import ConfigError
from wavegen.distributed import GROUP_TIMEOUT_SECONDS
from wavegen.progress import counted

logger = logging.getLogger(__name__)


def synthetic_audio(samples: int, sample_rate: int, seed: int = 0) -> np.ndarray:
    """int16 [samples]: a slow sine sweep plus a little noise, standing in for a corpus split."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / sample_rate
    freq = 110.0 * 2 ** (2 * (0.5 + 0.5 * np.sin(2 * np.pi * t / 7.0)))  # 110..440 Hz
    x = 0.4 * np.sin(2 * np.pi * np.cumsum(freq) / sample_rate) + 0.02 * rng.standard_normal(samples)
    return np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)


def synthetic_segments(length: int, labels) -> tuple[np.ndarray, np.ndarray | None]:
    """(segments [N, 3], segment labels [N] or None) over ``length`` samples of synthetic audio: one
    segment of it all, or for a model conditioned on ``labels`` the same audio once per label (each
    labelled: an unlabelled window would index no label's embedding)."""
    n = len(labels or ())
    segments = np.array([[0, length, 0]] * max(1, n), dtype=np.int64)
    return segments, (np.arange(n, dtype=np.int64) if n else None)


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: "5" resets the process's peak resident set size (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what they are): CUDA max allocated, or the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda max allocated"
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024, "peak RSS of the process (VmHWM)"
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "peak RSS of the process (since start)"


def _training_config(base: dict, train: dict) -> tuple[dict, object]:
    """A preset's config with ``train`` settings overridden, validated → (config, TrainConfig)."""
    from wavegen.config import TrainConfig, from_dict, to_dict
    from wavegen.models import model_config

    config = {**base, "train": {**base["train"], **train}}
    train_cfg = from_dict(TrainConfig, config["train"], "train")
    train_cfg.validate()
    model_config(config).validate(train_cfg)
    config["train"] = to_dict(train_cfg)
    return config, train_cfg


def _timed(one_step, warmup: int, steps: int, dev: torch.device, long=None) -> tuple[float, float, float]:
    """``warmup`` untimed steps, then ``steps`` timed ones ending on a device sync → (the last
    loss, wall seconds, this process's CPU seconds of the timed steps); peak memory reset between.
    long(seconds): called where all the steps look to take over bench.LONG_ROW_SECONDS, from the second step's time
    (the first may compile), said then: ``--steps 1000000`` trained for hours with nothing said. Only a warm-up step
    is timed so (its time waits for the device): with --warmup-steps 0 or 1 nothing is foretold, and no sync falls
    among the timed steps."""
    loss = None
    for step in range(warmup):
        loss = _second_step_timed(one_step, step, warmup + steps, long)
    if loss is not None:
        float(loss)  # wait for the device
    _reset_peak_memory(dev)
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(warmup, warmup + steps):
        loss = one_step(step)
    loss = float(loss)  # waits for the device
    return loss, time.perf_counter() - start, time.process_time() - cpu_start


def _second_step_timed(one_step, step: int, total: int, long):
    """one_step(step); the second step of all (step 1, a warm-up step; synchronised, so its time is the device's
    too) timed, and long(seconds all ``total`` steps take at that pace) called where that is over
    bench.LONG_ROW_SECONDS."""
    if step != 1 or long is None:
        return one_step(step)
    start = time.perf_counter()
    loss = one_step(step)
    float(loss)
    seconds = (time.perf_counter() - start) * total
    if seconds > bench.LONG_ROW_SECONDS:
        long(seconds)
    return loss


# the training settings bench_training sets itself → what sets them (a bench --train option) or why
BENCH_SETS = {"batch_size": "use --batch", "seq_len": "use --seq-len", "grad_accum": "use --grad-accum",
              "compile": "use --compile", "num_workers": "use --workers", "seed": "use --seed",
              "mixed_precision": "use --precision", "max_steps": "use --steps",
              "warmup_steps": "the timed steps run at the full learning rate",
              "lr_schedule": "the timed steps run at the full learning rate"}


def _allowed(base: dict, overrides, seq_len: int | None) -> list[str]:
    """``overrides`` as a list, ConfigError for one that sets what bench --train sets itself (a
    train setting of :data:`BENCH_SETS`, named as training reads it: train.batch_size or batch_size)."""
    from wavegen.config import override_target

    overrides = list(overrides)
    for item in overrides:
        section, name = override_target(base, item)
        if section == "train" and name in BENCH_SETS and not (name == "seq_len" and seq_len is None):
            raise ConfigError(f"--set {item!r}: bench --train sets {name} itself ({BENCH_SETS[name]})")
    return overrides


@dataclass(frozen=True)
class _Measurement:
    """What bench --train was asked to measure, its arguments checked: ``model`` as given, the global batch sizes
    timed, ``seq_len`` (None: the config's), ``warmup`` untimed then ``steps`` timed steps on ``device``, the
    training settings it sets itself (:data:`BENCH_SETS`), the ``overrides`` (--set strings) taken, and whether
    the batch sizes were given (``batches_given``; false: the config's train.batch_size)."""

    model: str
    batches: list
    seq_len: int | None
    steps: int
    warmup: int
    device: str
    mixed_precision: str
    compile: bool
    grad_accum: int
    num_workers: int
    seed: int
    overrides: list
    batches_given: bool = True

    def row_settings(self, batch: int) -> dict:
        """The train settings this measurement sets for the row of global batch size ``batch``."""
        return {"batch_size": batch, "grad_accum": self.grad_accum, "compile": self.compile,
                "num_workers": self.num_workers, "seed": self.seed, "warmup_steps": 0, "lr_schedule": "constant",
                **({} if self.seq_len is None else {"seq_len": self.seq_len})}


class _Subject(NamedTuple):
    """The model timed: its config with the overrides applied, where it came from (training_model's source
    line), its sample rate in Hz."""

    config: dict
    source: str
    sample_rate: int


def training_model(model: str, seed: int = 0) -> tuple[dict, str, int]:
    """What ``--model`` names, as ``wavegen train --model`` reads it (:func:`wavegen.resolve.resolve_model`:
    a preset, a config .json, a model or run folder) → (its config with every train setting present,
    the source line, its sample rate). Training starts from random weights (``seed``), so a folder gives
    its settings only; ConfigError naming ``model`` when it is none of these."""
    from wavegen.config import train_settings
    from wavegen.resolve import resolve_settings

    ref = resolve_settings(model)
    config = {**ref.config, "train": train_settings(ref.config)}
    source = f"{ref.kind} {model}, random weights (seed {seed})"
    if ref.trained:
        source = f"{ref.kind} {model}: the settings of {ref.folder}, random weights (seed {seed}), not its trained ones"
    return config, source, ref.sample_rate


def bench_training(model: str, batches=None, seq_len: int | None = None, steps: int = 5, warmup: int = 2,
                   threads: int | None = None, device: str = "cpu", mixed_precision: str = "auto",
                   compile: bool = False, grad_accum: int = 1, num_workers: int = 0, seed: int = 0,
                   overrides=(), progress=None) -> dict:
    """Training speed of a model's config: ``{"mode": "training", "machine", "model", "rows"}``.

    ``model`` is what ``wavegen train --model`` takes (:func:`training_model`: a preset, a config .json,
    a model or run folder), always with random weights. For each batch size (the global batch,
    ``train.batch_size``; None: the config's) its training setup is built (``seq_len`` overrides its
    ``train.seq_len``), ``warmup`` steps run untimed (torch.compile
    and allocator warm-up), then ``steps`` steps are timed, ending on a device sync.
    ``overrides`` (``--set key=value`` strings, as training takes them) change the config's other
    settings: ``model.rnn_type=lstm`` times another cell; ``train.ema_decay=0.99`` updates an
    average of the weights after every step as training does (:class:`wavegen.trainstate.WeightAverage`),
    so its cost shows beside a row without it. The settings this function's own arguments set
    (:data:`BENCH_SETS`) are refused there, naming the argument that sets them.

    Under ``accelerate launch`` / ``torchrun`` each batch is split over the processes as training
    splits it (a batch that does not split is refused before anything is timed, named as the bench user
    gave it: :func:`_check_splits`), and the numbers are the whole job's; the main process returns the result,
    the others None.

    rows: ``batch``, ``seq_len``, ``steps``, ``seconds`` (all timed steps; the slowest process's),
    ``cpu_seconds`` (the CPU time of every process over them: on a shared machine, wall/CPU shows how
    much of it the run got), ``seconds_per_step``,
    ``samples_per_second`` (audio samples trained per second by the whole job: global batch x
    seq_len x steps / seconds), ``peak_memory_bytes`` and ``memory`` (what was measured: CUDA max
    allocated, or the process's peak RSS during the timed steps; the largest of the processes),
    ``loss_bits`` (the last step's, averaged over the processes: a sanity check), and with
    ``train.ema_decay`` ``ema_updates`` (the average's updates, warm-up steps included).
    """
    from wavegen.config import apply_overrides

    config, source, rate = training_model(model, seed)
    given = batches is not None
    batches = [config["train"]["batch_size"]] if batches is None else [int(b) for b in batches]
    if not batches:
        raise ConfigError("--batch: give at least one batch size")
    check_counts([*(("--batch", b, 1) for b in batches), ("--steps", steps, 1), ("--warmup-steps", warmup, 0),
                  *([("--seq-len", seq_len, 1)] if seq_len is not None else []), ("--grad-accum", grad_accum, 1),
                  ("--workers", num_workers, 0)])  # not "train.num_workers=-1", a key the user never wrote
    check_seed(seed, 2**32 - 1)  # numpy's seed range, as train.seed's; not "train.seed=-1" either
    set_threads(threads)
    overrides = _allowed(config, overrides, seq_len)
    measure = _Measurement(model, batches, seq_len, steps, warmup, device, mixed_precision, compile, grad_accum,
                           num_workers, seed, overrides, given)
    base = apply_overrides(config, overrides)
    timeout = float(base["train"].get("group_timeout_seconds", GROUP_TIMEOUT_SECONDS))
    with _said_when_lost(timeout), _held_stops() as stop:
        result = _bench_batches(measure, _Subject(base, source, rate), progress, timeout, stop)
    if stop.requested:  # asked after the last row's look (its result made, the accelerator ended): every row kept
        if result is None:  # another process of a launch: the main one says it
            raise KeyboardInterrupt
        raise bench.BenchStopped(result, len(batches), stop.name)
    return result


# what the first Ctrl-C or SIGTERM of a bench --train started alone does (StopSignals says it)
STOP_LINE = "stopping the bench before the next training step; the rows measured so far are printed"
# what a bench --train's process lost keeps, at start-up or while timing
_NOTHING_KEPT = "nothing was measured to keep: rerun the same command"


@contextlib.contextmanager
def _said_when_lost(timeout_seconds: float):
    """Inside: a collective that fails as another process of the launch ended or did not answer within
    ``timeout_seconds`` (train.group_timeout_seconds) is one line (distributed.ProcessLostError), as train says it."""
    from wavegen.distributed import lost_contact

    try:
        yield
    except Exception as err:
        if not lost_contact(err):
            raise
        raise _lost(err, timeout_seconds) from err


def _lost(err: Exception, timeout_seconds: float):
    """The one line of a lost process (distributed.process_lost), said while the process group still exists (it
    names the lost process, and one survivor says it)."""
    from wavegen.distributed import process_lost

    world = os.environ.get("WORLD_SIZE", "?")
    return process_lost(err, f"this bench --train ({world} processes)", _NOTHING_KEPT,
                        f"train.group_timeout_seconds={timeout_seconds:g}")


@contextlib.contextmanager
def _held_stops():
    """A first Ctrl-C or SIGTERM stops the bench (KeyboardInterrupt: bench.BenchStopped, with the rows measured):
    alone, before the next step; under a launch, every process together at the next step training would agree on
    one (train.log_interval), or at the end of the batch size being timed (a launcher's SIGTERM to the survivors of
    a lost process says the loss instead: wavegen.signals). A second stops at once. → the StopSignals."""
    from wavegen.signals import first_process_says
    from wavegen.signals import StopSignals, launched
    from wavegen.signals import logger as signals_logger

    line = "stopping every process at the next logged step" if launched() else STOP_LINE
    with StopSignals(line) as stop, first_process_says(signals_logger.name):
        yield stop


def _bench_batches(measure: _Measurement, subject: _Subject, progress, timeout: float, stop) -> dict | None:
    """bench_training's work once its arguments are checked (the accelerator made and ended here): a row for
    each batch size of measure, of subject; progress(line) before each (None: quiet); timeout: the seconds
    a collective waits for another process; stop: _held_stops's."""
    from wavegen.distributed import end_accelerator, lost_contact, make_accelerator
    from wavegen.memory import check_model_memory
    from wavegen.trainstate import agree

    accelerator = make_accelerator(measure.mixed_precision, cpu=torch.device(measure.device).type == "cpu",
                                   timeout_seconds=timeout, work="this bench --train", kept=_NOTHING_KEPT)
    try:
        world, main = accelerator.num_processes, accelerator.is_main_process
        setups = [_training_config(subject.config, measure.row_settings(batch)) for batch in measure.batches]
        _check_splits(setups, accelerator.process_index, world, measure.batches_given)
        check_model_memory(setups[0][0], None, accelerator.device)  # absurd sizes: refused before any is built
        rows, facts = [], {}
        try:
            if stop is not None and agree(accelerator, stop.requested):  # one held from torch's import: no row begun
                raise KeyboardInterrupt
            for config, train_cfg in setups:
                if progress is not None and main:
                    progress(f"train {measure.model} batch {train_cfg.batch_size} x "
                             f"{counted(train_cfg.seq_len, 'sample')}"
                             + (f" over {world} processes" if world > 1 else "")
                             + f": {measure.warmup} warm-up + {counted(measure.steps, 'timed step')}")
                row, facts = _bench_batch(config, train_cfg, accelerator, subject.sample_rate, measure, stop)
                rows.append(row)
                logger.debug("train batch %d: %.0f samples/s", train_cfg.batch_size, row["samples_per_second"])
                accelerator.free_memory()  # the model and optimizer of this batch size went with _bench_batch's frame
                if stop is not None and agree(accelerator, stop.requested):  # every process stops at the same point
                    raise KeyboardInterrupt
        except KeyboardInterrupt:  # a Ctrl-C or SIGTERM: the rows measured before it kept (the main process's)
            if not main:
                raise
            raise bench.BenchStopped(_result(rows, facts, measure, subject, accelerator, setups), len(setups),
                                     None if stop is None else stop.name) from None
        result = _result(rows, facts, measure, subject, accelerator, setups)
    except Exception as err:
        if not lost_contact(err):
            raise
        raise _lost(err, timeout) from err
    finally:
        end_accelerator(accelerator)
    return result if main else None


def _check_splits(setups, rank: int, world: int, given: bool) -> None:
    """Every batch size splits over the ``world`` processes and the accumulation steps, as training splits it
    (:func:`wavegen.data.local_streams`), before any is timed; one that does not is a ConfigError naming the
    options the bench user gave, --batch and --grad-accum, not training's keys (``given`` false: no --batch, the
    batch size is the model's train.batch_size, and said to be)."""
    from wavegen.data import local_streams

    for _, train_cfg in setups:
        batch = (f"--batch {train_cfg.batch_size}" if given else
                 f"the model's train.batch_size={train_cfg.batch_size} (no --batch given)")
        local_streams(train_cfg, rank, world, named=(batch, f"--grad-accum {train_cfg.grad_accum}"))


def _result(rows: list, facts: dict, measure: _Measurement, subject: _Subject, accelerator, setups) -> dict:
    """bench_training's result of ``rows`` (``facts``: the model's, from _bench_batch; none before a row)."""
    model_info = {"name": measure.model, "source": subject.source, **facts,
                  "sample_rate": subject.sample_rate, "mixed_precision": accelerator.mixed_precision,
                  "compile": measure.compile, "grad_accum": measure.grad_accum,
                  "num_workers": measure.num_workers, "warmup_steps": measure.warmup,
                  "overrides": list(measure.overrides), "ema_decay": setups[0][1].ema_decay,
                  "processes": accelerator.num_processes}
    return {"mode": "training", "machine": machine_info(str(accelerator.device)), "model": model_info, "rows": rows}


def _bench_batch(config: dict, train_cfg, accelerator, rate: int, measure: _Measurement,
                 stop=None) -> tuple[dict, dict]:
    """One row of :func:`bench_training` (one batch size: ``config`` and ``train_cfg``, audio at ``rate`` Hz), and
    the model's facts (parameters, family). ``stop`` (under a launch): agreed on every train.log_interval steps, as
    training does (alone: every step); KeyboardInterrupt once asked."""
    from wavegen.data import BatchStream, make_batches
    from wavegen.train import LN2, build_training, train_step
    from wavegen.trainstate import Carry, WeightAverage, agree

    dev = accelerator.device
    net, optimizer, inner = build_training(config, train_cfg, accelerator)
    facts = {"parameters": sum(p.numel() for p in inner.parameters()), "model_type": config["model_type"]}
    need = inner.context_samples + train_cfg.tbptt_windows * train_cfg.seq_len
    audio = synthetic_audio(4 * need + rate, rate, seed=measure.seed)
    segments, labels = synthetic_segments(len(audio), inner.config.labels)
    batches = make_batches(inner, audio, segments, labels, train_cfg, accelerator.process_index,
                           accelerator.num_processes)  # this process's part of the global batch
    stream = BatchStream(batches, 0, train_cfg.grad_accum, dev, workers=measure.num_workers, pin=dev.type == "cuda")
    carry = Carry(train_cfg.grad_accum)
    average = WeightAverage(inner, train_cfg.ema_decay) if train_cfg.ema_decay > 0 else None

    def one_step(step):
        loss = train_step(accelerator, net, optimizer, stream, train_cfg, step, carry)
        if average is not None:
            average.update(inner)
        if stop is not None and (accelerator.num_processes == 1 or (step + 1) % train_cfg.log_interval == 0) \
                and agree(accelerator, stop.requested):
            raise KeyboardInterrupt  # every process at the same step (alone: at the next one)
        return loss

    net.train()
    try:
        loss, seconds, cpu_seconds = _timed(one_step, measure.warmup, measure.steps, dev, long=None if not
                                            accelerator.is_main_process else lambda seconds: _say_long_batch(
                                                train_cfg, measure, seconds))
    finally:
        stream.close()
    peak, what = _peak_memory(dev)
    loss, seconds, cpu_seconds, peak = _whole_job(accelerator, loss, seconds, cpu_seconds, peak)
    if accelerator.num_processes > 1:
        what += f", the largest of {accelerator.num_processes} processes"
    batch, steps = train_cfg.batch_size, measure.steps
    row = {"batch": batch, "seq_len": train_cfg.seq_len, "steps": steps, "seconds": seconds,
           "cpu_seconds": cpu_seconds, "seconds_per_step": seconds / steps,
           "samples_per_second": batch * train_cfg.seq_len * steps / seconds,
           "peak_memory_bytes": peak, "memory": what, "loss_bits": loss / LN2,
           **({"ema_updates": average.updates} if average is not None else {})}
    return row, facts


def _say_long_batch(train_cfg, measure: _Measurement, seconds: float) -> None:
    logger.warning("train batch %d: %d warm-up + %s take about %s (from one step); a lower --steps, "
                   "--warmup-steps or --batch takes less", train_cfg.batch_size, measure.warmup,
                   counted(measure.steps, "timed step"), duration(seconds))


def _whole_job(accelerator, loss: float, seconds: float, cpu_seconds: float, peak: int):
    """One process's (loss, seconds, CPU seconds, peak memory) → the job's: the mean loss, the
    slowest process's seconds, every process's CPU seconds, the largest peak (itself under one process)."""
    if accelerator.num_processes == 1:
        return loss, seconds, cpu_seconds, peak
    mine = torch.tensor([[loss, seconds, cpu_seconds, peak]], dtype=torch.float64, device=accelerator.device)
    every = accelerator.gather(mine).cpu()  # [processes, 4]
    return (float(every[:, 0].mean()), float(every[:, 1].max()), float(every[:, 2].sum()),
            int(every[:, 3].max()))


def format_training_table(result: dict) -> str:
    """The rows of :func:`bench_training` as a fixed-width text table."""
    m, model = result["machine"], result["model"]
    where = m.get("gpu") or (f"{m['cpu']}, {counted(m['logical_cpus'], 'logical CPU')}, torch threads "
                             f"{m['torch_threads']}")
    lines = [f"training {model['name']} ({model['source']}; {parameters_said(model['parameters'])}; precision "
             f"{model['mixed_precision']}; compile {model['compile']}; grad_accum {model['grad_accum']}; "
             f"prefetch threads {model['num_workers']}"
             + (f"; {model['processes']} processes" if model.get("processes", 1) > 1 else "")
             + "".join(f"; {item}" for item in model.get("overrides", [])) + ")",
             f"{where}; torch {m['torch']}"
             + (f"; load average {m['load_average_1min']}" if "load_average_1min" in m else ""),
             "",
             f"{'batch':>5s} {'seq_len':>7s} {'steps':>5s} {'s/step':>8s} {'cpu s/step':>10s} {'samples/s':>10s} "
             f"{'peak memory':>12s}"]
    for r in result["rows"]:
        lines.append(f"{r['batch']:5d} {r['seq_len']:7d} {r['steps']:5d} {r['seconds_per_step']:8.3f} "
                     f"{r['cpu_seconds'] / r['steps']:10.3f} {r['samples_per_second']:10,.0f} "
                     f"{r['peak_memory_bytes'] / 2**30:9.2f} GiB")
    if result["rows"]:
        every = " by all processes" if model.get("processes", 1) > 1 else ""
        lines.append(f"samples/s: audio samples trained per second{every} (batch x seq_len per step); "
                     f"peak memory: {result['rows'][0]['memory']}")
    return "\n".join(lines)
