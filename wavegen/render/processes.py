"""The processes of one render: rank and world size under torchrun / accelerate launch, and how
they agree on an outcome so that an error in one process reaches every other at once (no
process is left waiting at a barrier for one that has already given up), marked as raised by
every process: the first process alone prints it (wavegen.distributed.leave_to_another_process).
Mid-render, a process that stops (a write refused, a Ctrl-C of its own) leaves word in the group's
store, which the others read at each window: they save a snapshot and stop with it, instead of
rendering on until the final agreement. A process that dies (a collective fails: another process is gone)
leaves the others one line each, their snapshots kept (distributed.process_lost), not gloo's traceback.

A process may render alone for hours before the others meet it (a shard of more streams, a slower machine), so
how long a process works is no sign that it is lost: each says it is alive in the store every HEARTBEAT_SECONDS
(a thread of its own, whatever its windows take), and the others, waiting for it in the store before each
collective, take it for lost after SILENCE_SECONDS without a beat (frozen: SIGSTOP, swapped out, stuck on a disk),
or at once where it ran on their machine and has ended, naming it."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import threading
import time
import uuid

from wavegen.config import ConfigError
from wavegen.distributed import (GROUP_TIMEOUT_SECONDS, ProcessLostError, before_process_group, first_to_say_the_loss,
                                 launchers_store, lost_contact, meet_before_the_group, process_lost,
                                 record_this_process, recorded_process)
from wavegen.errors import FolderBusyError, WavegenError, every_process
from wavegen.launch_processes import process_state
from wavegen.render.settings import RenderStateError, RenderWriteError
from wavegen.signals import carried

logger = logging.getLogger(__name__)

def say_stopped_elsewhere(news: BaseException, rank: int, how: str) -> None:
    """``news`` of another process (:meth:`Processes.failure_elsewhere`) that this one (``rank``) stopped with, a
    snapshot of what it rendered saved: where it is that process's stop (a KeyboardInterrupt it recorded), said once,
    by the first process: "process N was stopped (SIGINT/SIGTERM): HOW; snapshot saved. Rerun ..."."""
    if isinstance(news, KeyboardInterrupt) and getattr(news, "from_rank", None) is not None and rank == 0:
        logger.warning("process %d was stopped (SIGINT/SIGTERM): %s; snapshot saved. Rerun the same command to resume",
                       news.from_rank, how)


# errors a process may hand to the others, by name (anything else arrives as a plain WavegenError)
_SHARED_ERRORS = {cls.__name__: cls for cls in (ConfigError, FolderBusyError, RenderStateError, RenderWriteError)}

HEARTBEAT_SECONDS = 1.0  # how often each process of a render says, in the store, that it is alive
# a process not heard from for this long, while another waits for it, is taken for lost (WAVEGEN_SILENCE_SECONDS)
SILENCE_SECONDS = 60.0
_POLL_SECONDS = 0.05  # how often a process waiting for the others looks at the store
_KEPT = "what it had rendered is kept (its snapshot, saved at each window): rerun the same command to resume"
_UNTOUCHED = "nothing was written yet (not every process had come): rerun the same command"  # (a lost start)


class Processes:
    """This process's rank and the world size (1 unless launched with WORLD_SIZE > 1).

    Under several processes a gloo group carries only small objects (outcomes). A shard that finishes
    early may wait for hours: it waits in the store (:meth:`_all_here`), watching the others' heartbeats,
    and meets them in gloo only once all have come, so the group's timeout (GROUP_TIMEOUT_SECONDS) bounds
    the connection and the exchange alone.
    """

    def __init__(self):
        self.rank, self.world, self.owned = 0, 1, False
        self._key, self._heartbeat, self._who = None, None, {}
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return
        import torch.distributed as dist

        before_process_group()
        if not dist.is_initialized():
            timeout = datetime.timedelta(seconds=GROUP_TIMEOUT_SECONDS)
            # init_process_group's rendezvous; a launcher's store gone while this process started (its wrapper, a
            # shell without exec, ended by the launcher's SIGTERM, which is held here): said at once, not after
            # the timeout in torch's connect
            store, self.rank, self.world = launchers_store("this render", _UNTOUCHED, GROUP_TIMEOUT_SECONDS)
            # the group's store as init_process_group makes it without one (given one, it takes it as it is)
            store = dist.PrefixStore("default_pg", store)
            self._all_came(store)
            dist.init_process_group("gloo", store=store, rank=self.rank, world_size=self.world, timeout=timeout)
            self.owned = True
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        key = self.share(uuid.uuid4().hex)  # this render's own keys in the store
        # where a process that fails mid-render leaves word for the others
        self._failure_key = f"wavegen/render/failed/{key}"
        self._key, self._meetings = f"wavegen/render/{key}", 0
        record_this_process(_store())  # as training does: a gloo error met outside _all_here names the lost one too
        self._heartbeat = _Heartbeat(f"{self._key}/alive/{self.rank}")

    def _all_came(self, store) -> None:
        """Before the group: the processes meet in ``store`` (distributed.meet_before_the_group: one killed while
        the render started, torch's imports, is named at once, nothing written); a store gone with the process
        that held it (no launcher's agent): one line too."""
        try:
            meet_before_the_group(store, self.rank, self.world, f"this render ({self.world} processes)", _UNTOUCHED,
                                  self._who)
        except RuntimeError as err:  # the store gone with the process that held it (no launcher's agent)
            if not lost_contact(err):
                raise
            raise self._lost_with_the_store(err) from err

    def _lost_with_the_store(self, err: RuntimeError) -> ProcessLostError:
        """The one line for a store that went away before the group existed (:func:`lost_contact` ``err``): the
        process that held it, seen ended among those recorded (looked for up to a second: it may still be
        ending), else "another process"."""
        deadline = time.monotonic() + 1.0
        while True:
            for rank, who in self._who.items():
                if process_state(*who) == "ended":
                    return self._lost(rank, "ended", _UNTOUCHED)
            if time.monotonic() >= deadline:
                return process_lost(err, f"this render ({self.world} processes)", _UNTOUCHED)
            time.sleep(_POLL_SECONDS)

    def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
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
            self.tell_failure(carried(err))  # (a loss StopSignals raised: the loss, not its carrier)
            raise

    def failure_elsewhere(self) -> BaseException | None:
        """The error another process stopped with (:meth:`tell_failure`), to raise here, naming that
        process; None while none has. A KeyboardInterrupt for a stop request (a Ctrl-C that reached
        that process alone), unless another process is seen ended: that stop may be the recorder's answer to
        the loss (its launcher's SIGTERM), and the loss is the news (:meth:`lost_elsewhere`)."""
        if self.world == 1:
            return None
        try:
            store = _store()
            if not store.check([self._failure_key]):
                return self.lost_elsewhere()
            rank, kind, message, user_error = json.loads(store.get(self._failure_key))
        except Exception:  # noqa: BLE001 (the store's own errors): no word here; the agreement still hears it
            return self.lost_elsewhere()
        if rank == self.rank:
            return self.lost_elsewhere()
        if kind == "KeyboardInterrupt":
            lost = self.lost_elsewhere(but=rank)
            if lost is not None:
                return lost
        if user_error:
            message = (f"process {rank} of {self.world} failed, and the others stopped with it (what they had "
                       f"written is saved): {message}")
        error = _remote_error(rank, kind, message, user_error)
        error.from_rank = rank
        return error

    def _stopped_elsewhere(self) -> bool:
        """Whether another process recorded a stop (a Ctrl-C: :meth:`tell_failure`), none seen ended beside it."""
        try:
            return isinstance(self.failure_elsewhere(), KeyboardInterrupt)
        except Exception:  # noqa: BLE001 (the store's own errors): not known, the loss is said
            return False

    def lost_elsewhere(self, but: int | None = None) -> ProcessLostError | None:
        """ProcessLostError naming another process of this machine (not ``but``) that has ended (killed), to raise
        here (its launcher's SIGTERM to this one is held meanwhile: wavegen.signals); None while none has."""
        for rank in range(self.world):
            if rank not in (self.rank, but) and self._state_of(rank) == "ended":
                error = self._lost(rank, "ended")
                error.from_rank = rank
                return error
        return None

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
        """A collective, once every process has come to it (:meth:`_all_here`): where another process has ended
        (or stopped answering), ProcessLostError saying what this one keeps, not gloo's traceback. A Ctrl-C met while
        this one waits is told to the others (:meth:`tell_failure`): one that meets this one's end at the exchange
        (its step, outside StopSignals, ended by the same Ctrl-C: a damaged report's rebuild) stops as asked,
        not as for a lost process (:meth:`agree`)."""
        try:
            if self._key is not None:
                self._all_here()
            yield
        except KeyboardInterrupt:  # a Ctrl-C met waiting for the others: said to them, who meet its end as a stop
            if self._key is not None:
                self.tell_failure(KeyboardInterrupt())
            raise
        except RuntimeError as err:
            if not lost_contact(err):
                raise
            raise process_lost(err, f"this render ({self.world} processes)", _KEPT) from err

    def _all_here(self) -> None:
        """Wait in the store until every process has come to this collective (each comes to the same ones, in
        the same order). A process that has not come and is not heard from for SILENCE_SECONDS, or that ran on
        this machine and has ended: ProcessLostError naming it."""
        self._meetings += 1
        store = _store()
        here = [f"{self._key}/at/{self._meetings}/{rank}" for rank in range(self.world)]
        store.set(here[self.rank], "1")
        heard: dict[int, tuple[int, float]] = {}  # rank → (its beats, when they last changed)
        while not store.check(here):
            now = time.monotonic()
            for rank in range(self.world):
                if rank == self.rank or store.check([here[rank]]):
                    continue
                beats = store.add(f"{self._key}/alive/{rank}", 0)
                if heard.get(rank, (None,))[0] != beats:
                    heard[rank] = (beats, now)
                state = self._state_of(rank)
                if state == "ended" or now - heard[rank][1] > silence_seconds():
                    raise self._lost(rank, state)
            time.sleep(_POLL_SECONDS)

    def _state_of(self, rank: int, store=None) -> str | None:
        """Process ``rank``'s state where it runs on this machine, among the processes this one sees: "ended",
        "stopped" (SIGSTOP, Ctrl-Z) or "running"; None where it runs elsewhere (or cannot be seen, or is not
        recorded in ``store``, the group's by default, yet)."""
        if rank not in self._who:
            who = recorded_process(_store() if store is None else store, rank)
            if who is None:  # (it records it just after the group's first exchange)
                return None
            self._who[rank] = who
        return process_state(*self._who[rank])

    def _lost(self, rank: int, state: str | None, kept: str = _KEPT, store=None) -> ProcessLostError:
        """The one line for process ``rank``, lost while this one waited for it; ``kept``: what is kept; ``store``:
        the group's to be, before it exists."""
        work = f"process {rank} of this render ({self.world} processes)"
        if state == "ended":
            return first_to_say_the_loss(ProcessLostError(
                f"{work} ended unexpectedly (killed, or out of memory? the launcher's report says why); this process "
                f"stopped too: {kept}"), store, self.rank)
        why = "it is stopped (SIGSTOP or Ctrl-Z)" if state == "stopped" else \
            "frozen: stopped, swapped out or stuck on a disk, or ended on another machine"
        return first_to_say_the_loss(ProcessLostError(
            f"{work} has not answered for {silence_seconds():g} s ({why}) while this one waited for it; this process "
            f"stopped: {kept}"))

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
                if err is not carried(err):  # a loss StopSignals raised (a held SIGTERM's look_for_loss): that loss,
                    err = carried(err)  # met far from a window (the FLAC encoding): another's stop said as one says it
                    say_stopped_elsewhere(err, self.rank, "this one stopped with it")
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
            if isinstance(error, ProcessLostError):  # it met the loss first (at a window): said once
                raise error from None
            if isinstance(error, WavegenError):  # its own failure first, said by this process (not left to another)
                raise ProcessLostError(f"{error}; and {lost}") from error
            if isinstance(error, KeyboardInterrupt) and (getattr(error, "from_rank", None) is not None or
                                                         self._stopped_elsewhere()):
                # another process's stop, met (and said) here; or this one's Ctrl-C, the lost one's end its own stop
                raise error from None  # (the same Ctrl-C, met at the collective: :meth:`_talking`)
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


def silence_seconds() -> float:
    """How long a render's process may go unheard (SILENCE_SECONDS, or the environment's WAVEGEN_SILENCE_SECONDS:
    a machine that swaps for minutes may need more) before another that waits for it takes it for lost."""
    value = os.environ.get("WAVEGEN_SILENCE_SECONDS", "").strip()
    try:
        return max(3 * HEARTBEAT_SECONDS, float(value)) if value else SILENCE_SECONDS
    except ValueError:
        raise ConfigError(f"WAVEGEN_SILENCE_SECONDS={value!r}: give a number of seconds") from None


def _store():
    """The process group's key-value store (the launcher's, under torchrun)."""
    from torch.distributed.distributed_c10d import _get_default_store

    return _get_default_store()


class _Heartbeat:
    """A thread adding one to ``key`` in the store every HEARTBEAT_SECONDS until :meth:`stop`: this process is
    alive, whatever its windows take (a frozen process's threads stop with it)."""

    def __init__(self, key: str):
        self._key, self._store, self._done = key, _store(), threading.Event()
        self._store.add(key, 1)
        self._thread = threading.Thread(target=self._beat, name="wavegen-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._done.wait(HEARTBEAT_SECONDS):
            try:
                self._store.add(self._key, 1)
            except Exception:  # noqa: BLE001 (the store's own errors: the launcher gone): the waits say it
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _remote_error(rank: int, kind: str, message: str, user_error: bool) -> BaseException:
    """The error another process raised, to raise here: a user error as one (its message, the
    same class where it is one of _SHARED_ERRORS), a bug as a RuntimeError pointing to it."""
    if kind == "KeyboardInterrupt":
        return KeyboardInterrupt()
    if not user_error:
        return RuntimeError(f"process {rank} of this render failed with {kind}: {message} (its traceback is above)")
    return _SHARED_ERRORS.get(kind, WavegenError)(message)
