"""The processes of one render: rank and world size under torchrun / accelerate launch, and how
they agree on an outcome so that an error in one process reaches every other at once (no
process is left waiting at a barrier for one that has already given up), marked as raised by
every process: the first process alone prints it (wavegen.distributed.leave_to_another_process).
Mid-render, a process that stops (a write refused, a Ctrl-C of its own) leaves word in the group's
store, which the others read at each window: they save a snapshot and stop with it, instead of
rendering on until the final agreement. A process that dies (a collective fails: another process is gone)
leaves the others one line each, their snapshots kept (distributed.process_lost), not gloo's traceback."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import uuid

from wavegen.config import ConfigError
from wavegen.distributed import ProcessLostError, before_process_group, first_process_says, lost_contact, process_lost
from wavegen.errors import FolderBusyError, WavegenError, every_process
from wavegen.render.settings import RenderStateError, RenderWriteError

# errors a process may hand to the others, by name (anything else arrives as a plain WavegenError)
_SHARED_ERRORS = {cls.__name__: cls for cls in (ConfigError, FolderBusyError, RenderStateError, RenderWriteError)}


class Processes:
    """This process's rank and the world size (1 unless launched with WORLD_SIZE > 1).

    Under several processes a gloo group carries only small objects (outcomes), so a shard
    that finishes early may wait for hours: the group's timeout is a week.
    """

    def __init__(self):
        self.rank, self.world, self.owned = 0, 1, False
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return
        import torch.distributed as dist

        before_process_group()
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
            self.owned = True
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        # where a process that fails mid-render leaves word for the others (this render's own key)
        self._failure_key = f"wavegen/render/failed/{self.share(uuid.uuid4().hex)}"

    def close(self) -> None:
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owned = False

    def tell_failure(self, err: BaseException) -> None:
        """This process stops mid-render with ``err``: word of it for the others, who look at each window
        (:meth:`failure_elsewhere`). Through the group's key-value store (a message to the launcher's
        store, no collective): it reaches them whatever this process's disk refuses. The first word stays."""
        if self.world == 1 or getattr(err, "from_rank", None) is not None:
            return
        record = json.dumps([self.rank, type(err).__name__, str(err), isinstance(err, WavegenError)])
        try:
            _store().compare_set(self._failure_key, "", record)
        except Exception:  # noqa: BLE001 (the store's own errors): the others hear of it at the agreement
            pass

    def telling_failure(self, step, *args):
        """``step(*args)``; an error it raises is told to the other processes at once (:meth:`tell_failure`)."""
        try:
            return step(*args)
        except BaseException as err:
            self.tell_failure(err)
            raise

    def failure_elsewhere(self) -> BaseException | None:
        """The error another process stopped with (:meth:`tell_failure`), to raise here, naming that
        process; None while none has. A KeyboardInterrupt for a stop request (a Ctrl-C that reached
        that process alone)."""
        if self.world == 1:
            return None
        try:
            store = _store()
            if not store.check([self._failure_key]):
                return None
            rank, kind, message, user_error = json.loads(store.get(self._failure_key))
        except Exception:  # noqa: BLE001 (the store's own errors): no word here; the agreement still hears it
            return None
        if rank == self.rank:
            return None
        if user_error:
            message = (f"process {rank} of {self.world} failed, and the others stopped with it (what they had "
                       f"written is saved): {message}")
        error = _remote_error(rank, kind, message, user_error)
        error.from_rank = rank
        return error

    def first_says(self, logger_name: str):
        """While inside: the warnings of logger ``logger_name`` said by the first process only (a Ctrl-C
        reaches every process of a launch, and each would say the same); errors still by every process."""
        return first_process_says(logger_name, self.rank)

    def share(self, value, src: int = 0):
        """``value`` of process ``src`` → every process (JSON-able or picklable small objects)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value if self.rank == src else None]
        with self._talking():
            dist.broadcast_object_list(box, src=src)
        return box[0]

    def gather(self, value) -> list:
        """Every process's ``value``, in rank order, on every process."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        out = [None] * self.world
        with self._talking():
            dist.all_gather_object(out, value)
        return out

    @contextlib.contextmanager
    def _talking(self):
        """A collective: where another process has ended (or stopped answering), ProcessLostError saying
        what this one keeps, not gloo's traceback."""
        try:
            yield
        except RuntimeError as err:
            if not lost_contact(err):
                raise
            raise process_lost(err, f"this render ({self.world} processes)", "what it had rendered is kept (its "
                               "snapshot, saved at each window): rerun the same command to resume") from err

    def agree(self, step, src: int | None = None):
        """Run ``step()`` (on process ``src`` only, or on all when None) and raise its error everywhere.

        Returns ``step()``'s value (shared from ``src`` when given). An error in one process is
        raised in that process as it was, and in the others as the same kind of user error (a
        KeyboardInterrupt as a KeyboardInterrupt), so every process exits with it promptly. A user
        error raised so is marked ``every_process``: the first process of the launch prints it.
        """
        value, failure, error = None, None, None
        if src is None or self.rank == src:
            try:
                value = step()
            except BaseException as err:
                failure, error = (type(err).__name__, str(err), isinstance(err, WavegenError)), err
        if self.world == 1:
            if error is not None:
                raise error
            return value
        try:
            if src is not None:
                value, failure = self.share((value, failure), src)
                failures = {src: failure}
            else:
                failures = dict(enumerate(self.gather(failure)))
        except ProcessLostError as lost:
            if isinstance(error, WavegenError):  # its own failure first, said by this process (not left to another)
                raise ProcessLostError(f"{error}; and {lost}") from error
            if error is not None and not isinstance(error, KeyboardInterrupt):
                raise error from None  # a bug keeps its traceback (a stop it was asked for says less than the loss)
            raise
        if error is not None:
            raise every_process(error) if isinstance(error, WavegenError) else error
        for rank, found in failures.items():
            if found is not None:
                remote = _remote_error(rank, *found)
                raise every_process(remote) if isinstance(remote, WavegenError) else remote
        return value


def _store():
    """The process group's key-value store (the launcher's, under torchrun)."""
    from torch.distributed.distributed_c10d import _get_default_store

    return _get_default_store()


def _remote_error(rank: int, kind: str, message: str, user_error: bool) -> BaseException:
    """The error another process raised, to raise here: a user error as one (its message, the
    same class where it is one of _SHARED_ERRORS), a bug as a RuntimeError pointing to it."""
    if kind == "KeyboardInterrupt":
        return KeyboardInterrupt()
    if not user_error:
        return RuntimeError(f"process {rank} of this render failed with {kind}: {message} (its traceback is above)")
    return _SHARED_ERRORS.get(kind, WavegenError)(message)
