"""Memory a model or a training run needs, estimated before anything is allocated.

A size typo (``model.dim=1e6``, ``train.batch_size=100000000``, a config.json saying
``dim: 30000``) would otherwise allocate until the machine swaps or the kernel kills the
process. The estimate comes from the config alone: the model is built on the meta device
(shapes, no memory) for its parameter count, and one forward pass on meta tensors measures
the activations kept for the backward pass (what autograd saves), at two lengths and two
batch sizes, extrapolated linearly to the real batch.

:func:`keep_freed_memory` tunes glibc's heap for CPU training (big blocks kept, not unmapped).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from pathlib import Path

import torch
from torch import nn

from wavegen.config import ConfigError
from wavegen.errors import WavegenError
from wavegen.progress import counted

# Peak activation memory of a training step / what autograd saves in the forward: the backward
# pass holds the gradients of the activations beside them. Measured on the CPU (peak RSS growth
# over 3 steps, samplernn-tiny and wavenet-tiny at batch 16-64 x 256-4096, dim 128-512): 2.3-3.2.
# The lower end, so a run that fits is not refused.
ACTIVATION_PEAK_FACTOR = 2.5

# ... unless one saved tensor dominates (a wide WaveNet end layer: model.end_channels=30000): the backward
# pass then holds, beside everything saved, about four tensors of that tensor's size at once: the gradient
# of its consumer's input, the gradient through its activation (relu's threshold_backward), and the
# convolution's backward buffers (aten::resize_ of its output gradient, the input read for the weight
# gradient); the forward held two (before and after the relu). Measured on the CPU (one thread, glibc heap
# kept as training keeps it, peak RSS (VmHWM) growth over 3 steps: tests/test_memory_peak.py's measurement;
# torch.profiler's per-op memory for the kinds): wavenet-tiny end_channels=20000, batch 2 x 512: 0.57 GiB
# real, S x 2.5 said 0.30 GiB in all, S + 4 L 0.48; end_channels=30000, batch 4 x 512: 1.41 GiB real,
# largest saved tensor L 0.23 GiB, all saved S 0.24 GiB (0.74 GiB said in all before, 1.29 now); batch 16
# (`wavegen bench --train --model wavenet-tiny --set model.end_channels=30000 --batch 16 --steps 2
# --threads 1`): peak 5.42 GiB, about 4.7 above the start, L 0.92, S 0.96. S x 2.5 said 2.55 GiB in all;
# S + 4 L says 4.76 GiB. For the narrow
# presets S x 2.5 is the larger (their saved tensors are many and small): their estimates do not change.
LARGEST_TENSOR_COPIES = 4

# Beside that, the backward pass of the loss holds tensors of the logits' size ([streams x samples x
# q_levels] float32) that autograd did not save: the cross-entropy's gradient, the gradient through the
# output layer, the softmax it is computed from. Where the logits are a large share of what is saved (the
# tiny presets: samplernn-tiny at batch 16-128 x 256, wavenet-tiny at 16-48 x 512) the peak was 3.1-3.6x
# what autograd saved, not 2.5: the residual over 2.5x the saved tensors was 3.2-4.9 logit tensors. Measured
# with tests/test_memory_peak.py's measurement; the wide presets (samplernn-3tier, wavenet-medium: 2.2-2.6x
# the saved tensors) gain 1-5% from these copies.
LOGIT_COPIES = 4

# What a training step's first run allocates whatever its size: the autograd engine, Adam's step, the
# libtorch code its operators page in, the allocator's arenas. Peak RSS growth over 3 steps of the smallest
# steps (samplernn-tiny and wavenet-tiny, 1 stream x 64 samples: 16-19 MiB, of which weights, gradients
# and Adam under 5 MiB; wavenet-tiny at 2 x 512: 48.6-52 MiB in four runs, about 30 over its activations'
# share, which grow by ~10 MiB a stream). Rounded up, so that the run-to-run spread stays under it.
STEP_OVERHEAD_BYTES = 40 * 2**20

# What to change when the model itself is too big, per family.
SIZE_SETTINGS = {"samplernn": "model.dim or model.n_rnn", "wavenet": "model.layers or the model.*_channels"}


class OutOfMemoryError(WavegenError):
    """The estimated memory exceeds what the machine has; the message gives the estimate and the setting."""


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**27 else f"{n / 2**20:.1f} MiB"


def available_memory(device="cpu") -> tuple[int, str]:
    """(bytes available, what they are): free GPU memory on CUDA; on the CPU MemAvailable,
    bounded by the cgroup's limit (a container's) where there is one."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {torch.cuda.get_device_name(device)}"
    available, what = None, "available RAM"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limit = _cgroup_room()
    if limit is not None and limit < available:
        available, what = limit, "left under this container's memory limit"
    return int(available), what


def _cgroup_room() -> int | None:
    """Bytes left under a cgroup v2 (or v1) memory limit, None where there is no limit."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit == "max" or int(limit) >= 2**60:
                return None
            return max(0, int(limit) - int(Path(usage_file).read_text().strip()))
        except (OSError, ValueError):
            continue
    return None


# torch.nn.init's initialisers: on the meta device there are no values to fill, and some of
# them (normal_, orthogonal_: nn.Embedding's and the RNNs' inits) would first import torch's
# compiler stack there, 1.3-1.9 s of every command that builds a model (render, eval, info).
_INITIALISERS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                 "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                 "sparse_")
_INIT_PATCH = threading.RLock()  # torch.nn.init is process-wide: one thread (re-entrantly) patches it at a time


@contextlib.contextmanager
def _meta_without_init():
    """Build on the meta device with torch.nn.init's initialisers passing meta tensors through
    (real tensors are initialised as always); the initialisers are restored on the way out, also
    when threads build meta models at once (each would otherwise save another's patch as the original)."""
    with _INIT_PATCH:
        saved = {name: getattr(nn.init, name) for name in _INITIALISERS if hasattr(nn.init, name)}
        try:
            for name, init in saved.items():
                setattr(nn.init, name, _passing_meta(init))
            with torch.device("meta"):
                yield
        finally:
            for name, init in saved.items():
                setattr(nn.init, name, init)


def _passing_meta(init):
    """``init`` for real tensors; a meta tensor is returned as it is."""
    @functools.wraps(init)
    def wrapper(tensor, *args, **kwargs):
        return tensor if tensor.is_meta else init(tensor, *args, **kwargs)
    return wrapper


def meta_model(config: dict):
    """The config's model on the meta device: every shape, no memory, no initialisation work."""
    from wavegen.models import build_model

    from wavegen.config import ConfigError

    with _meta_without_init():
        try:
            return build_model(config)
        except RuntimeError as err:  # a tensor of more elements than 64 bits count ("storage size ... overflowed")
            huge = [f"model.{k}={v}" for k, v in config.get("model", {}).items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 2**24]
            raise ConfigError(f"the model's sizes are too large to build ({str(err).splitlines()[0]}): check "
                              f"{', '.join(huge) or SIZE_SETTINGS.get(config.get('model_type'), 'model.*')}") from None


def parameter_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def activation_peak_bytes(model, streams: int, length: int) -> int:
    """Peak bytes of a training step's activations: what autograd saves times ACTIVATION_PEAK_FACTOR, or,
    when one saved tensor dominates, everything saved plus LARGEST_TENSOR_COPIES of that tensor. What
    autograd saves is measured on meta tensors at small sizes and extrapolated (linear in both)."""
    measured = _saved_at_small_sizes(model)
    saved = _extrapolated(measured, streams, length, _total)
    largest = _extrapolated(measured, streams, length, _largest)
    return int(max(ACTIVATION_PEAK_FACTOR * saved, saved + LARGEST_TENSOR_COPIES * largest))


def _total(sizes: dict[int, int]) -> int:
    return sum(sizes.values())


def _largest(sizes: dict[int, int]) -> int:
    return max(sizes.values(), default=0)


def _saved_at_small_sizes(model) -> tuple[int, list[dict[int, int]]]:
    """(unit, the saved tensors' sizes at 1 stream x unit, 1 x 2 units and 2 x unit samples)."""
    unit = model.context_samples if model.family == "samplernn" else max(1, model.context_samples)
    return unit, [_measure_saved(model, b, n) for b, n in ((1, unit), (1, 2 * unit), (2, unit))]


def _extrapolated(measured: tuple[int, list[dict[int, int]]], streams: int, length: int, measure) -> int:
    """``measure`` of the saved tensors' sizes at ``streams`` x ``length``, linear in both from
    :func:`_saved_at_small_sizes`."""
    unit, sizes = measured
    m11, m12, m21 = (measure(s) for s in sizes)
    per_sample = max(0.0, (m12 - m11) / unit)
    per_stream = max(0.0, m21 - m11 - per_sample * unit)  # context and per-stream constants
    fixed = max(0.0, m11 - per_stream - per_sample * unit)  # e.g. weight-normed weights, once per batch
    return int(fixed + streams * (per_stream + per_sample * length))


def _measure_saved(model, streams: int, length: int) -> dict[int, int]:
    """Bytes of each tensor autograd saves in one meta forward of ``streams`` x ``length`` (by storage)."""
    params = {id(p) for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        base = t if t._base is None else t._base
        if id(t) not in params and id(base) not in params:
            saved[id(base)] = base.numel() * base.element_size()
        return t

    codes = torch.zeros(streams, model.context_samples + length, dtype=torch.long, device="meta")
    batch = {"codes": codes, "reset": torch.ones(streams, dtype=torch.bool, device="meta")}
    if model.config.labels:
        batch["labels"] = torch.zeros(streams, dtype=torch.long, device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(batch)
    return saved


def training_estimate(config: dict, streams: int, seq_len: int, mixed_precision: bool = False,
                      average: bool = False) -> dict:
    """Bytes one training process needs: ``{"weights", "gradients", "optimizer", "average", "activations",
    "overhead", "total"}``.

    streams: streams per micro-batch on this process; seq_len: predicted samples per window.
    Adam keeps two moments per weight; ``average``: a copy of the weights (train.ema_decay);
    activations: what autograd saves, and what the backward pass adds to it (:func:`activation_peak_bytes`)
    and LOGIT_COPIES float32 tensors of the logits' size (the loss's backward; float32 under mixed
    precision too, where the rest is half size); overhead: STEP_OVERHEAD_BYTES.
    """
    model = meta_model(config)
    weights = parameter_bytes(model)
    activations = activation_peak_bytes(model, streams, seq_len)
    if mixed_precision:
        activations //= 2
    activations += LOGIT_COPIES * 4 * streams * seq_len * model.config.q_levels
    out = {"weights": weights, "gradients": weights, "optimizer": 2 * weights, "average": weights if average else 0,
           "activations": activations, "overhead": STEP_OVERHEAD_BYTES}
    out["total"] = sum(out.values())
    return out


def check_fits(nbytes: float, what: str, change: str, device="cpu") -> None:
    """OutOfMemoryError unless ``nbytes`` (an array about to be made: ``what``, e.g. "--samples
    10000000000 x batch 1 of random draws") fits in the memory here; ``change`` says what to lower."""
    available, where = available_memory(device)
    if nbytes > available:
        raise OutOfMemoryError(f"{what} needs about {gib(nbytes)}, more than the {gib(available)} {where}: {change}")


def check_training_memory(config: dict, train, device, mixed_precision: bool, processes_here: int = 1) -> dict:
    """Refuse a training whose estimate exceeds the memory here (OutOfMemoryError with the estimate and
    the setting to change); returns the estimate. ``processes_here``: processes sharing this machine's
    RAM (on the CPU)."""
    # at least 1, as estimated: training refuses a batch smaller than its parts before (local_streams), bench after;
    # said here, it was "for 0 streams"
    streams = max(1, train.batch_size // max(1, train.grad_accum * int(os.environ.get("WORLD_SIZE", "1"))))
    estimate = training_estimate(config, streams, train.seq_len, mixed_precision, train.ema_decay > 0)
    available, what = available_memory(device)
    if torch.device(device).type != "cuda":
        available //= max(1, processes_here)
        what += f" / {processes_here} processes" if processes_here > 1 else ""
    if estimate["total"] > available:
        e = estimate
        if e["activations"] >= e["total"] - e["activations"] - e["overhead"]:  # against what the weights bring
            change = ("lower train.batch_size (or raise train.grad_accum, which splits each batch) or "
                      "train.seq_len")
        else:
            change = f"make the model smaller ({SIZE_SETTINGS.get(config['model_type'], 'model.*')})"
        average = f"average of the weights {gib(e['average'])}, " if e["average"] else ""
        raise OutOfMemoryError(
            f"training needs about {gib(e['total'])} (weights {gib(e['weights'])}, gradients "
            f"{gib(e['gradients'])}, Adam {gib(e['optimizer'])}, {average}activations {gib(e['activations'])} for "
            f"{counted(streams, 'stream')} x {counted(train.seq_len, 'sample')} per micro-batch, a step's fixed "
            f"{gib(e['overhead'])}), more than the {gib(available)} "
            f"{what}: {change}")
    return estimate


def check_model_memory(config: dict, weights: Path | None = None, device="cpu") -> None:
    """Before a model is built for use: its weights file must hold the tensors its config describes
    (read from the file's header, so a mismatched config is named before anything is allocated),
    and the weights must fit in memory (on the CPU, where the model is built, and on ``device``)."""
    model = meta_model(config)
    need = parameter_bytes(model)
    if weights is not None:
        _check_weights_match(model, weights, need)
    for where in {"cpu", str(torch.device(device))}:
        available, what = available_memory(where)
        if need > available:
            raise OutOfMemoryError(
                f"the model needs {gib(need)} for its weights alone ({sum(p.numel() for p in model.parameters()):,} "
                f"parameters from its config), more than the {gib(available)} {what}: check the config's sizes "
                f"({SIZE_SETTINGS.get(config['model_type'], 'model.*')})")


def _check_weights_match(model, weights: Path, need: int) -> None:
    from wavegen.weights_file import weights_shapes
    from wavegen.resolve import strip_wrappers

    stored = strip_wrappers(weights_shapes(weights))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if stored != expected:
        differ = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
        shown = ", ".join(f"{k}: file {stored.get(k, 'missing')} vs config {expected.get(k, 'none')}"
                          for k in differ[:3])
        raise ConfigError(f"{weights} does not match its config (the config describes {gib(need)} of weights, "
                          f"the file holds {gib(weights.stat().st_size)}; {counted(len(differ), 'tensor')} "
                          f"{'differs' if len(differ) == 1 else 'differ'}: {shown}"
                          f"{' ...' if len(differ) > 3 else ''})")


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
