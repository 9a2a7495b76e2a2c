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


def check_output_file(path, flag: str, example: str, what: str = "") -> None:
    """ConfigError naming ``flag`` and ``path`` where the file a command writes at its end (--json,
    --plot) cannot be written, found before the work whose result it holds: a folder (``example`` is
    the file name suggested in it), a device, FIFO or socket (wavegen.fileio.not_a_file), a file where
    a folder of its path goes, a folder that cannot be made or takes no new file (tried: a probe file
    is made there and removed; root passes os.access everywhere). Makes the file's folder.
    ``what``: what the file is, in the messages that ask for a file name (" for the picture")."""
    import tempfile
    from pathlib import Path

    from wavegen.config import ConfigError
    from wavegen.fileio import not_a_file

    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; give a file name{what} (e.g. {path / example})")
    kind = not_a_file(path)
    if kind is not None:
        raise ConfigError(f"{flag} {path}: is a {kind}, not a regular file; give a file name{what}")
    folder = path.parent
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"{flag} {path}: {blocking} is a file, not a folder: cannot make its folder {folder}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{flag} {path}: cannot make its folder {folder} ({err.strerror or err})") from None
    # a file made there and removed: os.access says yes to root everywhere (a read-only mount, /proc,
    # /sys). Named like the temporary file the output is written through; an existing output is untouched.
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".wavegen-probe-"):
            pass
    except OSError as err:
        raise ConfigError(f"{flag} {path}: its folder {folder} takes no new file ({err.strerror or err}); "
                          f"give {flag} a file in a writable folder") from None


def check_picture_file(path, flag: str, example: str) -> None:
    """:func:`check_output_file` for a picture (--plot): first its extension, one matplotlib writes
    (wavegen.plotting.check_picture_format; before the folder is made), then the path."""
    from wavegen.plotting import check_picture_format

    check_picture_format(path, flag)
    check_output_file(path, flag, example, " for the picture")


def refuse_json_file_name(args) -> None:
    """ConfigError where ``--json out.json`` was given to a command whose --json is a switch that prints
    (eval, info; bench's takes a file): argparse took out.json for the model, which was then "no such
    preset". Said only where that .json is not there (a config .json is a model these commands take)."""
    from pathlib import Path

    from wavegen.config import ConfigError

    model = getattr(args, "model", None)
    if args.json and model is not None and str(model).lower().endswith(".json") and not Path(model).exists():
        raise ConfigError(f"{model}: no such model; --json prints the result and takes no file name: to keep "
                          f"it in a file, write --json > {model}")
