"""A training run's outputs for people: metrics.jsonl, TensorBoard, the progress bar.

Only the main process writes them; on the others a RunLog does nothing. On resume the rows
logged after the checkpoint are dropped (they are logged again), and so is a half-written
last line (a full disk, a power loss), with a warning naming the file; TensorBoard is told to
hide its events of those steps (SummaryWriter's purge_step), so each step shows once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import weakref
from pathlib import Path

from wavegen.errors import WavegenError
from wavegen.fileio import atomic_write, utf8_path
from wavegen.folders import check_writable

logger = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
TENSORBOARD = "tb"


class LogPathError(WavegenError):
    """A path of the run's logs is taken by something of the wrong kind; the message names it."""


def check_log_paths(run_dir: Path) -> None:
    """RUN/metrics.jsonl a file (or absent), RUN/tb a writable folder (or absent): found before the model
    is built, as LogPathError naming the path and what to do."""
    run_dir = Path(run_dir)
    metrics, board = run_dir / METRICS, run_dir / TENSORBOARD
    if metrics.exists() and not metrics.is_file():
        raise LogPathError(f"{metrics}: not a file (the run's metrics log): move it away (a rerun starts a new log "
                           "from the checkpoint's step), or give another --run folder")
    if board.exists() or board.is_symlink():
        if not board.is_dir():
            raise LogPathError(f"{board}: not a folder (the run's TensorBoard logs): move it away, or give another "
                               "--run folder")
        check_writable(board, "--run folder")


def _parse(path: Path) -> tuple[list[dict], list[int]]:
    """metrics.jsonl → (rows, numbers of the lines that are not a JSON row)."""
    rows, bad = [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
        else:
            bad.append(number)
    return rows, bad


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of ``RUN/metrics.jsonl`` (lines that are not a row, e.g. half-written, skipped)."""
    path = Path(run_dir) / METRICS
    return _parse(path)[0] if path.is_file() else []


def best_validation(run_dir: str | Path, upto: int | None = None) -> tuple[int, float] | None:
    """``(step, val_bits)`` of the last validation metrics.jsonl marks best (at step ``upto`` or
    before); None when no validation has run."""
    row = best_row(run_dir, upto)
    return None if row is None else (row["step"], float(row["val_bits"]))


def best_row(run_dir: str | Path, upto: int | None = None) -> dict | None:
    """The metrics.jsonl row of the last validation marked best (at step ``upto`` or before): its
    ``step``, ``val_bits`` and ``val_samples`` (the audio it scored); None when none has run."""
    rows = [r for r in read_metrics(run_dir) if r.get("best") and isinstance(r.get("val_bits"), (int, float))
            and (upto is None or r["step"] <= upto)]
    return rows[-1] if rows else None


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the rows of steps <= ``step`` (a resumed run logs the later ones again); drop lines that
    are not a row, with a warning naming the file and line."""
    if not path.is_file():
        return
    rows, bad = _parse(path)
    if bad:
        logger.warning("%s: dropping %s %s that %s not a complete row (a write cut short?)", path,
                       "line" if len(bad) == 1 else "lines", ", ".join(map(str, bad)),
                       "is" if len(bad) == 1 else "are")
    kept = [row for row in rows if row["step"] <= step]
    if bad or len(kept) != len(rows):
        atomic_write(path, "".join(json.dumps(row) + "\n" for row in kept))


_WRITER_THREADS: weakref.WeakSet = weakref.WeakSet()  # the TensorBoard writer threads of RunLogs
_hook_before = None  # threading.excepthook when _writer_thread_hook was installed


def _writer_thread_hook(args) -> None:
    """TensorBoard's writer thread, failing to write (a full disk), keeps the error for the writer's next call,
    which raises it (on_main's one line, or RunLog.close's), then lets it go on to threading.excepthook too,
    whose traceback would come before that line: not printed for a RunLog's own writer threads; any other
    thread's error (another SummaryWriter's too) goes on to the hook there was."""
    if not (isinstance(args.exc_value, OSError) and args.thread in _WRITER_THREADS):
        (_hook_before or threading.__excepthook__)(args)


@contextlib.contextmanager
def _writer_threads_kept():
    """The threads a SummaryWriter made in the block (its writer thread) added to _WRITER_THREADS, and the hook
    installed once per process (never taken out: where no such thread fails it passes every error on)."""
    global _hook_before
    if threading.excepthook is not _writer_thread_hook:
        _hook_before, threading.excepthook = threading.excepthook, _writer_thread_hook
    before = set(threading.enumerate())
    try:
        yield
    finally:
        _WRITER_THREADS.update(t for t in threading.enumerate()
                               if t not in before and type(t).__name__ == "_AsyncWriterThread")


class RunLog:
    """metrics.jsonl rows, TensorBoard scalars and the progress bar of one run (main process only).

    ``enabled=False`` (the other processes): every method does nothing.
    """

    def __init__(self, run_dir: Path, step: int, max_steps: int, enabled: bool, progress: bool):
        self.enabled = enabled
        self._file = self._writer = self.bar = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        from wavegen.progress import progress_bar

        truncate_metrics(run_dir / METRICS, step)
        self._file = open(run_dir / METRICS, "a")
        # purge_step: TensorBoard hides the events of this step and later ones written before (a resumed run
        # logs the steps after its checkpoint again, as metrics.jsonl keeps only the rows up to it)
        # TensorBoard encodes its path as UTF-8: a run folder named in other bytes is reached through a descriptor,
        # held open while the writer lives
        self._board = contextlib.ExitStack()
        self._board_path = run_dir / TENSORBOARD
        try:
            folder = self._board.enter_context(utf8_path(run_dir / TENSORBOARD))
            with _writer_threads_kept():
                self._writer = SummaryWriter(folder, purge_step=step + 1)
        except BaseException:
            self._board.close()
            self._file.close()
            raise
        if progress:
            self.bar = progress_bar(total=max_steps, initial=step, desc="train", unit="step")

    def _row(self, row: dict) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def train_row(self, step: int, loss_bits: float, lr: float, samples_per_second: float) -> None:
        if not self.enabled:
            return
        self._row({"step": step, "loss_bits": loss_bits, "lr": lr, "samples_per_second": samples_per_second})
        self._writer.add_scalar("train/loss_bits", loss_bits, step)
        self._writer.add_scalar("train/samples_per_second", samples_per_second, step)
        if self.bar is not None:
            self.bar.set_postfix(loss_bits=f"{loss_bits:.3f}", samples_s=f"{samples_per_second:,.0f}")

    def val_row(self, step: int, val_bits: float, samples: int, best: bool) -> None:
        if not self.enabled:
            return
        self._row({"step": step, "val_bits": val_bits, "val_samples": samples, "best": best})
        self._writer.add_scalar("val/nll_bits", val_bits, step)
        logger.info("step %d: validation %.4f bits/sample%s", step, val_bits, " (best)" if best else "")

    def samples(self, step: int, audio, sample_rate: int, pngs: list, scalars: dict) -> None:
        """Training samples (wavegen.samples) in TensorBoard: audio [B, n] float, one PNG path (or None)
        per stream, scalars (None values skipped)."""
        if not self.enabled:
            return
        import torch

        for k, clip in enumerate(audio):
            self._writer.add_audio(f"samples/stream_{k}", torch.as_tensor(clip).view(1, -1), step, sample_rate)
            if pngs[k] is not None:
                from matplotlib.image import imread

                self._writer.add_image(f"samples/stream_{k}", imread(str(pngs[k]))[..., :3], step,
                                       dataformats="HWC")
        for name, value in scalars.items():
            if value is not None:
                self._writer.add_scalar(f"samples/{name}", value, step)
        self._writer.flush()

    def step_done(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self, warn: bool = True) -> None:
        """Close the bar, TensorBoard and metrics.jsonl, each whatever the others do. A write that fails here
        (a full disk: TensorBoard's queued events, a row left in the buffer) is not raised: the run's outcome
        stands (an error already stopping it keeps its one line); with ``warn``, one line names the file."""
        if self.bar is not None:
            self.bar.close()
        if self._writer is not None:
            with self._board:  # the folder's descriptor let go, whatever the writer's close raises
                self._closed(self._writer, self._board_path, warn)
        if self._file is not None:
            self._closed(self._file, Path(self._file.name), warn)
        self._file = self._writer = self.bar = None

    @staticmethod
    def _closed(log, path: Path, warn: bool) -> None:
        try:
            log.close()
        except OSError as err:
            (logger.warning if warn else logger.debug)(
                "%s: the last of the training's logs could not be written (%s); its checkpoints are not affected",
                path, err.strerror or err)
