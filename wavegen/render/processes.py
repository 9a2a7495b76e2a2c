"""The processes of one render: rank and world size under torchrun / accelerate launch, and how
they agree on an outcome so that an error in one process reaches every other at once (no
process is left waiting at a barrier for one that has already given up), marked as raised by
every process: the first process alone prints it (wavegen.distributed.leave_to_another_process)."""

from __future__ import annotations

import datetime
import os

from wavegen.config import ConfigError
from wavegen.distributed import before_process_group
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

    def close(self) -> None:
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owned = False

    def share(self, value, src: int = 0):
        """``value`` of process ``src`` → every process (JSON-able or picklable small objects)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value if self.rank == src else None]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def gather(self, value) -> list:
        """Every process's ``value``, in rank order, on every process."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, value)
        return out

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
        if src is not None:
            value, failure = self.share((value, failure), src)
            failures = {src: failure}
        else:
            failures = dict(enumerate(self.gather(failure)))
        if error is not None:
            raise every_process(error) if isinstance(error, WavegenError) else error
        for rank, found in failures.items():
            if found is not None:
                remote = _remote_error(rank, *found)
                raise every_process(remote) if isinstance(remote, WavegenError) else remote
        return value


def _remote_error(rank: int, kind: str, message: str, user_error: bool) -> BaseException:
    """The error another process raised, to raise here: a user error as one (its message, the
    same class where it is one of _SHARED_ERRORS), a bug as a RuntimeError pointing to it."""
    if kind == "KeyboardInterrupt":
        return KeyboardInterrupt()
    if not user_error:
        return RuntimeError(f"process {rank} of this render failed with {kind}: {message} (its traceback is above)")
    return _SHARED_ERRORS.get(kind, WavegenError)(message)
