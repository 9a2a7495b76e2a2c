"""The training loop (accelerate): one process here, or ``accelerate launch`` / ``torchrun``.

The trainer knows a model only through ``model(batch) -> loss``, ``make_batches``,
``sequence_nll``, ``context_samples``, ``eval_length`` and ``training_state`` /
``load_training_state`` (state a model carries between batches, keyed ``slot{m}.NAME``
with the stream dimension at index 1, so it can be regathered when the process count changes).

Layout of a run folder::

    RUN/config.json              the resolved config (model, train, data)
    RUN/metrics.jsonl            one JSON row per log interval and per validation
    RUN/tb/                      TensorBoard logs
    RUN/checkpoints/step_N/      accelerate state + trainer_state.json, last N kept
    RUN/best/                    model.safetensors + config.json of the best validation NLL
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import torch

from wavegen.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, save_model
from wavegen.config import ConfigError, TrainConfig, from_dict, load_json, save_json
from wavegen.corpus import Corpus
from wavegen.data import BatchStream, eval_pieces
from wavegen.models import build_model, model_config

logger = logging.getLogger(__name__)

LN2 = math.log(2.0)

# Settings that may change when a run is resumed; anything else must match config.json.
# grad_accum may change because batches are drawn per global stream (data.py): moving from
# one GPU with grad_accum=8 to 8 GPUs with grad_accum=1 continues the same run.
RESUMABLE_CHANGES = {"max_steps", "log_interval", "val_interval", "checkpoint_interval",
                     "keep_checkpoints", "num_workers", "val_seconds", "grad_accum", "compile",
                     "mixed_precision"}


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


@torch.no_grad()
def evaluate_nll(model, audio, segments, segment_labels, *, piece_len: int, max_samples: int | None = None,
                 batch_size: int = 16, device="cpu", accelerator=None, n_labels: int = 0) -> dict:
    """NLL in bits per sample of a corpus split, over pieces of ``piece_len`` predicted samples.

    Under several processes each takes every world-th piece and the sums are reduced.
    Returns ``{"nll_bits_per_sample", "samples", "unigram_entropy_bits", "per_label": {index: {...}}}``;
    the unigram entropy of the same codes is the score of a model that ignores context.
    """
    from wavegen.audio import int16_to_float, quantize

    cfg = model.config
    context = model.context_samples
    pieces = eval_pieces(segments, segment_labels, context, piece_len, max_samples)
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    mine = pieces[rank::world]
    n_slots = max(1, n_labels)
    sums = torch.zeros(n_slots, dtype=torch.float64, device=device)
    counts = torch.zeros(n_slots, dtype=torch.float64, device=device)
    histogram = torch.zeros(cfg.q_levels, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    for i in range(0, len(mine), batch_size):
        part = mine[i: i + batch_size]
        raw = np.stack([np.asarray(audio[s: s + context + piece_len]) for s in part[:, 0]])
        codes = torch.from_numpy(quantize(int16_to_float(raw), cfg.q_levels, cfg.quantization)).to(device)
        labels = torch.from_numpy(part[:, 1]).to(device)
        ctx = accelerator.autocast() if accelerator else torch.autocast("cpu", enabled=False)
        with ctx:
            nll = model.sequence_nll(codes, labels if n_labels else None).double().sum(1)
        histogram += torch.bincount(codes[:, context:].reshape(-1), minlength=cfg.q_levels).double()
        slot = labels.clamp(min=0) if n_labels else torch.zeros_like(labels)
        sums.index_add_(0, slot, nll)
        counts.index_add_(0, slot, torch.full_like(nll, float(piece_len)))
    if was_training:
        model.train()
    if accelerator is not None and world > 1:
        sums, counts = accelerator.reduce(sums, "sum"), accelerator.reduce(counts, "sum")
        histogram = accelerator.reduce(histogram, "sum")
    total = float(counts.sum())
    p = histogram[histogram > 0] / histogram.sum() if total else histogram[:0]
    result = {"nll_bits_per_sample": float(sums.sum()) / total / LN2 if total else float("nan"),
              "samples": int(total), "unigram_entropy_bits": float(-(p * torch.log2(p)).sum()),
              "per_label": {}}
    if n_labels:
        for k in range(n_labels):
            if counts[k] > 0:
                result["per_label"][k] = {"nll_bits_per_sample": float(sums[k] / counts[k]) / LN2,
                                          "samples": int(counts[k])}
    return result


def resolve_run_config(base: dict, corpus_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """Preset config + corpus + ``--set`` overrides → the validated run config dict."""
    from wavegen.config import apply_overrides

    corpus = Corpus(corpus_dir)
    config = json.loads(json.dumps(base))
    config["data"] = {"corpus": str(Path(corpus_dir).resolve()), "sample_rate": corpus.sample_rate}
    if corpus.labels and not config["model"].get("labels"):
        config["model"]["labels"] = list(corpus.labels)
    config = apply_overrides(config, overrides or [])
    train = from_dict(TrainConfig, config["train"], "train")
    train.validate()
    cfg = model_config(config)
    cfg.validate(train)
    if cfg.labels and list(cfg.labels) != list(corpus.labels):
        raise ConfigError(f"model.labels {cfg.labels} differ from the corpus labels {corpus.labels}")
    config["model"] = json.loads(json.dumps(cfg.__dict__))
    config["train"] = json.loads(json.dumps(train.__dict__))
    return config


def _check_resume(run_dir: Path, config: dict) -> None:
    saved = load_json(run_dir / "config.json")
    diffs = []
    for section in ("model_type", "model", "train", "data"):
        a, b = saved.get(section), config.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key) and not (section == "train" and key in RESUMABLE_CHANGES):
                    diffs.append(f"{section}.{key}: {a.get(key)!r} → {b.get(key)!r}")
        elif a != b:
            diffs.append(f"{section}: {a!r} → {b!r}")
    if diffs:
        raise ConfigError(f"{run_dir} holds a run started with a different config ({'; '.join(diffs)}); "
                          "rerun with the same settings to resume, or give a new --run folder")


class _StopFlag:
    """Ctrl-C / SIGTERM: finish the step, checkpoint, exit. A second Ctrl-C aborts at once."""

    def __init__(self):
        self.raised = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.raised and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.raised = True
        logger.warning("signal %d: saving a checkpoint after this step (Ctrl-C again to abort)", signum)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def make_accelerator(mixed_precision: str, cpu: bool = False):
    """The run's Accelerator; picks up ``accelerate launch`` / ``torchrun`` from the environment.

    ``mixed_precision``: auto (bf16 on CUDA, else none) | no | bf16 | fp16. ``cpu``: stay on the
    CPU even where there is a GPU. Several processes without CUDA run on CPU with gloo:
    accelerate takes that path only when told ``cpu=True`` (otherwise each process would train
    alone, unaware of the others).
    """
    from accelerate import Accelerator

    cuda = torch.cuda.is_available() and not cpu
    if mixed_precision == "auto":
        mixed_precision = "bf16" if cuda else "no"
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(mixed_precision=mixed_precision, cpu=not cuda and (cpu or several))


def _gather_training_state(accelerator, model, accum: int) -> dict[str, torch.Tensor]:
    """Per-slot carried state on every rank → one tensor per name over the global batch."""
    state = model.training_state()
    if not state:
        return {}
    names = sorted({k.split(".", 1)[1] for k in state})
    out = {}
    for name in names:
        local = torch.cat([state[f"slot{m}.{name}"].transpose(0, 1) for m in range(accum)]).contiguous()
        out[name] = accelerator.gather(local).transpose(0, 1).cpu() if accelerator.num_processes > 1 \
            else local.transpose(0, 1).cpu()
    return out


def _scatter_training_state(accelerator, model, tensors: dict[str, torch.Tensor], accum: int) -> None:
    """Inverse of :func:`_gather_training_state` for this rank's (possibly new) share of streams."""
    if not tensors:
        model.load_training_state({})
        return
    total = next(iter(tensors.values())).shape[1]
    per = total // (accelerator.num_processes * accum)
    state = {}
    for name, t in tensors.items():
        for m in range(accum):
            first = (accelerator.process_index * accum + m) * per
            state[f"slot{m}.{name}"] = t[:, first: first + per].to(accelerator.device)
    model.load_training_state(state)


def keep_freed_memory() -> bool:
    """CPU training under glibc: keep freed memory in the heap instead of handing it back to the OS.

    A large batch's activations are hundreds of MB each. glibc serves blocks that big with mmap
    and unmaps them when they are freed, so every step faults all of them in again (measured on
    samplernn-deepsound at batch 32: 650,000 minor page faults and ~1 s of system time per step;
    with this, none). Turning mmap and trimming off keeps them in the heap for the next step.
    The baseline's figures were taken with the same tuning (through MALLOC_* variables).
    Process-wide; returns False (and changes nothing) where there is no glibc.
    """
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from malloc.h
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def build_training(config: dict, train_cfg: TrainConfig, accelerator):
    """Seeded model + Adam, compiled if asked, prepared by accelerate (DDP under several processes).

    Returns ``(model, optimizer, inner)``: ``model`` is what the step calls, ``inner`` the plain
    nn.Module (for its methods, state and saving).
    """
    from accelerate.utils import set_seed

    if accelerator.device.type == "cpu":
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


def train_step(accelerator, model, optimizer, stream: BatchStream, train_cfg: TrainConfig, step: int) -> torch.Tensor:
    """One optimizer step at ``step`` over ``train_cfg.grad_accum`` micro-batches from ``stream``.

    Sets the learning rate, accumulates gradients (DDP all-reduces only on the last micro-batch),
    clips, steps. Returns the mean loss (nats per sample) as a 0-d tensor on the device: reading
    it (``float``) waits for the device, so the caller does that only when it logs.
    """
    for group in optimizer.param_groups:
        group["lr"] = train_cfg.lr * lr_factor(step, train_cfg)
    total = None
    for micro in range(train_cfg.grad_accum):
        batch = stream.next()
        sync = micro == train_cfg.grad_accum - 1
        with accelerator.no_sync(model) if not sync else _null():
            with accelerator.autocast():
                loss = model(batch)
            accelerator.backward(loss / train_cfg.grad_accum)
        part = loss.detach() / train_cfg.grad_accum
        total = part if total is None else total + part
    if train_cfg.grad_clip > 0:
        accelerator.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def train(config: dict, run_dir: str | Path, progress: bool = True) -> dict:
    """Train (or resume) the run in ``run_dir`` with the resolved ``config``.

    Returns ``{"step", "status": "finished"|"interrupted", "best_val_bits", "run_dir"}``.
    """
    run_dir = Path(run_dir)
    train_cfg = from_dict(TrainConfig, config["train"], "train")
    train_cfg.validate()
    accelerator = make_accelerator(train_cfg.mixed_precision)
    on_cuda = accelerator.device.type == "cuda"
    if on_cuda:  # fp32 matmuls outside autocast (e.g. mixed_precision=no) may use TF32
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    main = accelerator.is_main_process
    rank, world = accelerator.process_index, accelerator.num_processes

    if (run_dir / "config.json").is_file():
        _check_resume(run_dir, config)
    accelerator.wait_for_everyone()
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_json(run_dir / "config.json", config)

    corpus = Corpus(config["data"]["corpus"])
    if corpus.sample_rate != config["data"]["sample_rate"]:
        raise ConfigError(f"corpus {corpus.sample_rate} Hz, config says {config['data']['sample_rate']} Hz")
    model, optimizer, inner = build_training(config, train_cfg, accelerator)
    n_params = sum(p.numel() for p in inner.parameters())
    batches = inner.make_batches(corpus.split("train"), corpus.segments("train"),
                                 corpus.segment_labels("train"), train_cfg, rank, world)

    step, best_val, state = 0, None, {}
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        state, tensors = load_checkpoint(accelerator, ckpt)
        _scatter_training_state(accelerator, inner, tensors, train_cfg.grad_accum)
        step, best_val = state["step"], state.get("best_val_bits")
        if main:
            saved_by = state.get("processes", world)
            logger.info("resuming %s from step %d%s", run_dir, step,
                        f" (checkpoint written by {saved_by} process(es), now {world})" if saved_by != world else "")
    if main:
        _truncate_metrics(run_dir / "metrics.jsonl", step)
        logger.info("model %s: %.2fM parameters; %d process(es) on %s; batch %d x %d samples",
                    config.get("preset") or config["model_type"], n_params / 1e6, world,
                    accelerator.device, train_cfg.batch_size, train_cfg.seq_len)

    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(run_dir / "tb"))
    val_audio, val_segments = corpus.split("val"), corpus.segments("val")
    if len(val_segments) == 0 and main:
        logger.warning("the corpus has no validation audio: best/ will hold the latest model")

    samples_per_step = train_cfg.batch_size * train_cfg.seq_len
    stream = BatchStream(batches, step, train_cfg.grad_accum, accelerator.device,
                         workers=train_cfg.num_workers, pin=on_cuda)
    bar = None
    if main and progress:
        from tqdm import tqdm
        bar = tqdm(total=train_cfg.max_steps, initial=step, unit="step", dynamic_ncols=True)

    def validate(at_step: int) -> float | None:
        nonlocal best_val
        if len(val_segments) == 0:
            if main:
                save_model(inner, config, run_dir / "best")
            return None
        result = evaluate_nll(inner, val_audio, val_segments, corpus.segment_labels("val"),
                              piece_len=inner.eval_length(train_cfg),
                              max_samples=int(train_cfg.val_seconds * corpus.sample_rate),
                              device=accelerator.device, accelerator=accelerator,
                              n_labels=len(inner.config.labels))
        bits = result["nll_bits_per_sample"]
        improved = best_val is None or bits < best_val
        if improved:
            best_val = bits
        if main:
            if improved:
                save_model(inner, config, run_dir / "best")
            _append_metrics(run_dir / "metrics.jsonl", {"step": at_step, "val_bits": bits,
                                                        "val_samples": result["samples"], "best": improved})
            writer.add_scalar("val/nll_bits", bits, at_step)
            logger.info("step %d: validation %.4f bits/sample%s", at_step, bits, " (best)" if improved else "")
        return bits

    def checkpoint(at_step: int) -> None:
        tensors = _gather_training_state(accelerator, inner, train_cfg.grad_accum)
        save_checkpoint(accelerator, run_dir, at_step,
                        {"step": at_step, "best_val_bits": best_val, "processes": world,
                         "grad_accum": train_cfg.grad_accum}, tensors, train_cfg.keep_checkpoints)

    status, start_step = "finished", step
    model.train()
    # Hot loop: nothing below reads a device value back to the host except at log steps
    # (the loss) and, under several processes, the stop flag agreed at log/checkpoint steps.
    running = torch.zeros((), device=accelerator.device)
    window_steps, window_start = 0, time.perf_counter()
    last_val_step = -1
    try:
        with _StopFlag() as stop:
            while step < train_cfg.max_steps:
                running += train_step(accelerator, model, optimizer, stream, train_cfg, step)
                step += 1
                window_steps += 1

                log_now = step % train_cfg.log_interval == 0 or step == train_cfg.max_steps
                if log_now:
                    mean = accelerator.reduce(running, "mean") if world > 1 else running
                    loss_bits = float(mean) / window_steps / LN2
                    elapsed = time.perf_counter() - window_start
                    rate = samples_per_step * window_steps / max(elapsed, 1e-9)
                    if main:
                        _append_metrics(run_dir / "metrics.jsonl", {
                            "step": step, "loss_bits": loss_bits, "lr": optimizer.param_groups[0]["lr"],
                            "samples_per_second": rate})
                        writer.add_scalar("train/loss_bits", loss_bits, step)
                        writer.add_scalar("train/samples_per_second", rate, step)
                        if bar is not None:
                            bar.set_postfix(loss_bits=f"{loss_bits:.3f}", samples_s=f"{rate:,.0f}")
                    running.zero_()
                    window_steps, window_start = 0, time.perf_counter()
                if bar is not None:
                    bar.update(1)

                paused = time.perf_counter()  # validation and checkpoints do not count in samples/s
                if step % train_cfg.val_interval == 0:
                    validate(step)
                    last_val_step = step
                at_checkpoint = step % train_cfg.checkpoint_interval == 0
                # One process alone reads its flag for free; several agree (a collective, so a
                # host sync) only at steps every process knows: log and checkpoint steps.
                if world == 1:
                    stopping = stop.raised
                elif log_now or at_checkpoint:
                    stopping = _agree(accelerator, stop.raised)
                else:
                    stopping = False
                if at_checkpoint or stopping:
                    checkpoint(step)
                window_start += time.perf_counter() - paused
                if stopping:
                    status = "interrupted"
                    break

            if status == "finished" and step > start_step:
                if last_val_step != step:
                    validate(step)
                if step % train_cfg.checkpoint_interval:
                    checkpoint(step)
    finally:
        stream.close()
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    accelerator.wait_for_everyone()
    if main:
        logger.info("%s at step %d; best validation %s bits/sample; model in %s", status, step,
                    f"{best_val:.4f}" if best_val is not None else "n/a", run_dir / "best")
    accelerator.end_training()
    return {"step": step, "status": status, "best_val_bits": best_val, "run_dir": str(run_dir)}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _agree(accelerator, flag: bool) -> bool:
    """Every process stops together when any of them was signalled."""
    if accelerator.num_processes == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(t, "sum").item() > 0)


def _append_metrics(path: Path, row: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint we resume from (they will be logged again)."""
    if not path.is_file():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in rows if json.loads(line)["step"] <= step]
    if len(kept) != len(rows):
        path.write_text("".join(line + "\n" for line in kept))


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
