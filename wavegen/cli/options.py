"""Options several commands share (defined once; no heavy imports at parse time)."""

from __future__ import annotations


def add_threads(parser, what: str = "numba and torch") -> None:
    """``--threads N``: applied by :func:`apply_threads` (wavegen.bench.set_threads)."""
    parser.add_argument("--threads", type=int, default=None, help=f"threads for {what} (default: all cores)")


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
            from wavegen.progress import counted

            raise ConfigError(f"--device {device}: this machine has "
                              f"{counted(torch.cuda.device_count(), 'CUDA device')}")
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
    from wavegen.folders import link_to_nothing_on_the_way

    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; give a file name{what} (e.g. {path / example})")
    kind = not_a_file(path)
    if kind is not None:
        raise ConfigError(f"{flag} {path}: is a {kind}, not a regular file; give a file name{what}")
    folder = path.parent
    dangling = link_to_nothing_on_the_way(folder)
    if dangling is not None:  # it, or a folder above it, a link to nothing: was "cannot make its folder (File exists)"
        said, todo = dangling[1]
        raise ConfigError(f"{flag} {path}: {said}: {todo}, or give {flag} a file in another folder")
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


def check_picture_file(path, flag: str, example: str, mark: str) -> None:
    """:func:`check_output_file` for a picture (--plot): first its extension, one matplotlib writes
    (wavegen.plotting.check_picture_format), and that a file there is one to replace (empty, or drawn
    earlier with ``mark``: wavegen.plotting.check_replaceable), both before the folder is made; then the path."""
    from wavegen.plotting import check_picture_format, check_replaceable

    check_picture_format(path, flag)
    check_replaceable(path, flag, mark)
    check_output_file(path, flag, example, " for the picture")


JSON_STDOUT = "-"  # --json alone (or --json -): the JSON on stdout


def add_json(parser, what: str, model_word: bool = True) -> None:
    """``--json [FILE]``, the same in every command: alone (or ``-``) ``what`` prints as one JSON object on
    stdout instead of the text; with FILE the text prints and the JSON is written to FILE (atomically).
    ``model_word``: the command takes its model as a positional argument, which a bare --json in front of
    it takes for its FILE (:func:`settle_json_word` gives it back); the help says so."""
    after = (" A word after a bare --json is its FILE, unless the model is missing and the word names one that "
             "is there (a preset, a folder, a model config .json): then it is the model") if model_word else ""
    parser.add_argument("--json", nargs="?", const=JSON_STDOUT, default=None, metavar="FILE",
                        help=f"{what} as JSON: --json alone prints it on stdout instead of the text; --json FILE "
                             f"writes it to FILE (the text still prints).{after}")


def json_file(args) -> str | None:
    """The file ``--json`` writes; None where --json was not given or prints on stdout."""
    return None if args.json in (None, JSON_STDOUT) else args.json


def settle_json_word(args, positional: str = "model") -> None:
    """argparse gives a bare ``--json`` the word after it (``wavegen info --json RUN``: RUN became the FILE and
    the model went missing). Where the command's ``positional`` is missing and that word names a model that
    is there (:func:`_names_a_model`: a preset, a folder, a model config .json), it is the model and --json
    prints; otherwise it stays the FILE (``eval --renders DIR --json out.json``). A model config is never
    taken as a file to overwrite."""
    word = json_file(args)
    if word is not None and getattr(args, positional, None) is None and _names_a_model(word):
        setattr(args, positional, word)
        args.json = JSON_STDOUT


def _names_a_model(word: str) -> bool:
    from pathlib import Path

    from wavegen.fileio import read_json
    from wavegen.models import PRESETS

    path = Path(word).expanduser()
    if path.is_dir() or (word in PRESETS and not path.exists()):
        return True
    if not (path.is_file() and path.suffix.lower() == ".json"):
        return False
    try:  # a config: every model setting (model_type) or a preset's with changes (preset)
        value = read_json(path)
    except OSError:
        return False
    except ValueError:  # not JSON: a config being written by hand, never replaced (resolve_model says what is wrong)
        return True
    return isinstance(value, dict) and ("model_type" in value or "preset" in value)


def check_json_file(args, example: str, what: str, is_ours) -> None:
    """:func:`check_output_file` for ``--json FILE`` (nothing where --json prints), before the work; and a FILE
    already there is written over only where it is empty or holds an earlier ``what`` (``is_ours(its JSON)``):
    never a WAV, a corpus's manifest.json, a model's config.json or anything else not JSON or not ``what``."""
    path = json_file(args)
    if path is None:
        return
    check_output_file(path, "--json", example)
    _check_earlier_result(path, what, is_ours)


RESULT_FILE_BYTES = 16 << 20  # a result is kilobytes (a comparison's histograms included): more is another file's


def _check_earlier_result(path: str, what: str, is_ours) -> None:
    from pathlib import Path

    from wavegen.config import ConfigError
    from wavegen.fileio import read_json

    target = Path(path).expanduser()
    if not target.is_file() or target.stat().st_size == 0:
        return
    keep = f"not overwritten: give --json a new file name (or remove {path} first)"
    if target.stat().st_size > RESULT_FILE_BYTES:
        raise ConfigError(f"--json {path}: holds {target.stat().st_size:,} bytes, not a {what}; {keep}")
    try:
        value = read_json(target)
    except OSError as err:
        raise ConfigError(f"--json {path}: cannot read what it holds ({err.strerror or err}); {keep}") from None
    except ValueError:
        raise ConfigError(f"--json {path}: holds something other than JSON, not a {what}; {keep}") from None
    if not is_ours(value):
        raise ConfigError(f"--json {path}: holds JSON that is not a {what}; {keep}")


def emit_json(args, result, indent: int | None = 2, kept: str = "") -> None:
    """``result`` as standard JSON (wavegen.fileio.strict_json: NaN as null) for ``--json``: printed on
    stdout, or written to its FILE atomically (a failed write leaves no part of it, and any earlier file
    whole), said in one line naming the file; ``kept``: where the result still is ("the table above has
    the results")."""
    import logging
    from pathlib import Path

    from wavegen.errors import WavegenError
    from wavegen.fileio import atomic_write, strict_json

    text = strict_json(result, indent=indent)
    path = json_file(args)
    if path is None:
        print(text)
        return
    try:
        atomic_write(Path(path).expanduser(), text + "\n")
    except OSError as err:
        raise WavegenError(f"--json {path}: cannot write it ({err.strerror or err})" + (f"; {kept}" if kept else "")) \
            from None
    logging.getLogger("wavegen").info("wrote %s", path)
