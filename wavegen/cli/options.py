"""Options several commands share (defined once; no heavy imports at parse time)."""

from __future__ import annotations


def add_threads(parser, what: str = "numba and torch") -> None:
    """``--threads N``: applied by :func:`apply_threads` (wavegen.bench.set_threads)."""
    parser.add_argument("--threads", type=int, default=None, help=f"threads for {what} (default: theirs)")


def apply_threads(args) -> None:
    """Set numba's and torch's thread counts from ``--threads`` (nothing when it was not given)."""
    from wavegen.bench import set_threads

    set_threads(args.threads)


def add_device(parser) -> None:
    """``--device``: checked by :func:`check_device` when the command runs."""
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (cuda:N) for a GPU (default cpu)")


def check_device(device: str) -> str:
    """``--device`` as given, once it names the CPU or a CUDA GPU that is there; ConfigError otherwise
    (a command must not fail on it halfway, or measure the CPU when a GPU was asked for)."""
    import torch

    from wavegen.config import ConfigError

    try:
        where = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {device}: not a device (cpu, cuda or cuda:N)") from None
    if where.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA GPU is available here (torch.cuda.is_available() "
                              f"is false); use --device cpu")
        if where.index is not None and where.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif where.type != "cpu":
        raise ConfigError(f"--device {device}: wavegen runs on cpu or cuda")
    return device
