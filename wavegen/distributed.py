"""What every multi-process part of wavegen (render under torchrun, DDP training through
accelerate) does before its process group exists, how a training's accelerator (and group)
starts, and how it ends."""

from __future__ import annotations

import contextlib
import datetime
import gc
import json
import logging
import os
import re
import signal
import time

import torch

from wavegen.config import TrainConfig
from wavegen.errors import WavegenError
from wavegen.launch_processes import ended_by_sigterm, pid_space, pids_seen, process_state, ranks_running_here
from wavegen.signals import (drop_pending_stop_lines, expect_the_others, held_a_launchers_term, launch_rank,
                             met_the_others)

logger = logging.getLogger(__name__)


# How long a process of a multi-process training waits for the others at a collective (its process group's
# timeout): train.group_timeout_seconds's default, accelerate's for NCCL, used for gloo too (torch's is 30 minutes)
GROUP_TIMEOUT_SECONDS = TrainConfig.group_timeout_seconds


class ProcessLostError(WavegenError):
    """Another process of a launch ended, or stopped answering, while this one waited for it at a collective:
    this one stops too, saying what is kept (:func:`process_lost`). The first survivor to meet it says it
    (:func:`first_to_say_the_loss`; the process that says a launch's errors may be the one lost); made, it
    drops the line of a launcher's SIGTERM held meanwhile (wavegen.signals: that SIGTERM ended the survivors)."""

    def __init__(self, *args):
        super().__init__(*args)
        drop_pending_stop_lines()
        self.said_elsewhere = False  # another survivor says this loss (first_to_say_the_loss)


def _agent_store(store=None):
    """The launch's store where torchrun's agent holds it (it outlives any process of the launch): the group's, or
    ``store`` (the group's to be, before it exists); else None (a store one of the processes holds may be the lost
    one's: no waiting on it)."""
    import torch.distributed as dist

    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() != "true":
        return None
    if store is not None or not dist.is_initialized():
        return store
    from torch.distributed.distributed_c10d import _get_default_store

    return _get_default_store()


def _who_key(rank: int) -> str:
    return f"wavegen/who/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{rank}"


def record_this_process(store=None, rank: int | None = None) -> None:
    """This process of a launch in ``store`` (by default its agent's, where torchrun's agent holds it; a render
    gives its group's, before the group exists: with its ``rank``): its pid space and pid under its rank, so that
    the others can tell whether it has ended or stopped (:func:`recorded_process`, :func:`process_state`) and name
    it when it is lost (:func:`lost_process`)."""
    import torch.distributed as dist

    with contextlib.suppress(Exception):  # (the store's own errors): the others say "another process"
        store = _agent_store() if store is None else store
        if store is not None:
            store.set(_who_key(dist.get_rank() if rank is None else rank), json.dumps([pid_space(), os.getpid()]))


def recorded_process(store, rank: int) -> tuple[str, int] | None:
    """The process of rank ``rank`` that :func:`record_this_process` recorded in ``store``: ``(pid space, pid)``,
    to give to :func:`process_state`; None where none is recorded (yet)."""
    if not store.check([_who_key(rank)]):
        return None
    space, pid = json.loads(store.get(_who_key(rank)))
    return space, int(pid)


def lost_process(wait_seconds: float = 0.0) -> tuple[int, str] | None:
    """The first process of this launch (:func:`record_this_process`) that this one sees ended or stopped:
    ``(rank, "ended" | "stopped")``, looked for up to ``wait_seconds`` (a process whose connections have closed may
    still be ending); None where none is seen so (it ran on another machine, or none recorded)."""
    import torch.distributed as dist

    try:
        store = _agent_store()
        if store is None:
            return None
        recorded = {rank: recorded_process(store, rank) for rank in range(dist.get_world_size())
                    if rank != dist.get_rank()}
    except Exception:  # noqa: BLE001 (the store's own errors): not named
        return None
    deadline = time.monotonic() + wait_seconds
    while True:
        for rank, who in recorded.items():
            state = None if who is None else process_state(*who)
            if state in ("ended", "stopped"):
                return rank, state
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def first_to_say_the_loss(err: ProcessLostError, store=None, rank: int | None = None) -> ProcessLostError:
    """``err``, marked ``said_elsewhere`` where another survivor of the launch has claimed the saying of a lost
    process first (in the launcher's store, under torchrun's agent), so that a launch of 3 or more processes says
    its loss once; before the group exists, in ``store``, the group's to be, as process ``rank``. Anywhere the
    claim cannot be made (no group, no launcher's store, the store gone) it says it."""
    import torch.distributed as dist

    try:
        store = _agent_store(store)
        if store is None:
            return err
        rank = str(dist.get_rank() if rank is None else rank)
        key = f"wavegen/lost/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        err.said_elsewhere = store.compare_set(key, "", rank).decode() != rank
    except Exception:  # noqa: BLE001 (the store's own errors): this process says it
        pass
    return err


_POLL_SECONDS = 0.05  # how often a process waiting for the others before the group looks at the store


def meet_before_the_group(store, rank: int, world: int, work: str, kept: str, who: dict | None = None,
                          seconds: float = GROUP_TIMEOUT_SECONDS, setting: str | None = None) -> None:
    """Before the process group exists: this process recorded in ``store`` (:func:`record_this_process`, the
    group's store to be), then a wait there until every process of the launch has, as gloo's connect would wait for
    them (in C++, deaf to signals: the launcher killed a survivor 30 s after its SIGTERM, without a word).
    ProcessLostError, one line (``work``: "this training (2 processes)"; ``kept``: what is kept, how to go on), at
    once for processes that cannot come any more: one recorded and ended since; one of this machine's that no
    longer runs (:func:`ranks_running_here`), seen running before or once the launcher's SIGTERM is held (the
    launcher ends the others when one ends: killed while it started, torch's imports). Where the missing cannot be
    seen (another machine, another launcher), once that SIGTERM is held: those that had not come when the launcher
    stopped this one (slow, or ended: nothing tells which). Past ``seconds`` (the group's timeout; ``setting``: the
    setting that sets it), for those that did not come: the start bounded once, not the meeting's wait and gloo's
    connect after it. ``who``: rank → recorded process, filled in. The store's own errors are raised. Meanwhile a
    launcher's SIGTERM held waits for the meeting's word (wavegen.signals.expect_the_others)."""
    expect_the_others()
    try:
        _wait_for_the_others(store, rank, world, work, kept, {} if who is None else who, seconds, setting)
    finally:
        met_the_others()


def _wait_for_the_others(store, rank: int, world: int, work: str, kept: str, who: dict, seconds: float,
                         setting: str | None) -> None:
    """:func:`meet_before_the_group`'s wait."""
    seen: set = set()
    record_this_process(store, rank)
    deadline = time.monotonic() + seconds
    while True:
        for other in range(world):
            if other != rank and other not in who:
                found = recorded_process(store, other)
                if found is not None:
                    who[other] = found
        missing = [other for other in range(world) if other != rank and other not in who]
        ended = [other for other, process in who.items() if process_state(*process) == "ended"]
        running = ranks_running_here(world) if missing else None
        if running is not None:
            seen |= running  # (a process not under the agent itself, a wrapper's child, is never seen: not judged)
            ended += [other for other in missing if other not in running and (other in seen or held_a_launchers_term())]
        if ended:
            ended = sorted(set(ended))
            raise first_to_say_the_loss(ProcessLostError(
                f"{_processes(ended)} of {work} {_how_they_ended(ended, who, rank)}; this process stopped too: {kept}"),
                store, rank)
        if missing and running is None and held_a_launchers_term():  # not seen: slow to come, or ended, who knows
            raise first_to_say_the_loss(ProcessLostError(
                f"{_processes(missing)} of {work} had not come when the launcher stopped this one (slow to start, or "
                f"ended where this one cannot see it? the launcher's report says); this process stopped: {kept}"),
                store, rank)
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise_it = f"; if a process is merely that slow to start, raise {setting}" if setting else ""
            raise first_to_say_the_loss(ProcessLostError(
                f"{_processes(missing)} of {work} did not come within {seconds:g} s (stopped, swapped out, slow to "
                f"start, or ended on another machine?); this process stopped: {kept}{raise_it}"), store, rank)
        time.sleep(_POLL_SECONDS)


def _how_they_ended(ended: list[int], who: dict, rank: int) -> str:
    """How processes ``ended`` of a launch ended, as process ``rank``'s meeting before the group says it: by a SIGTERM
    where each is seen so (:func:`ended_by_sigterm`: still starting, before wavegen's handlers held it), else
    "unexpectedly". Once this process holds a launcher's SIGTERM, one of a lower rank that never came is gone
    whichever way it ended (torchrun reaps the processes it stopped in the order of their ranks, and waits for this
    one before those above it: a zombie of a higher rank can be read, one of a lower rank cannot): it ended
    unexpectedly, or by that SIGTERM (the launch stopped while it started), and is said so, not "unexpectedly"."""
    def pids(other: int) -> list[int]:  # recorded in ``who``, or seen running (ranks_running_here)
        if other in who:
            return [who[other][1]] if who[other][0] == pid_space() else []
        return pids_seen(other)

    by_term = [other for other in ended if any(map(ended_by_sigterm, pids(other)))]
    unsure = [other for other in ended if other not in by_term and other < rank and other not in who
              and held_a_launchers_term()]
    unexpected = [other for other in ended if other not in by_term and other not in unsure]
    if not by_term and not unsure:
        return "ended unexpectedly (killed, or out of memory? the launcher's report says why)"
    if not unexpected and not unsure:
        if held_a_launchers_term():  # the launcher stopped its whole launch (its own SIGTERM or Ctrl-C, a machine's)
            return ("ended by the launcher's SIGTERM while it started, before it could hold one (the launcher stopped "
                    "the launch: this process had its SIGTERM too)")
        return "ended by a SIGTERM while it started, before it could hold one"
    if not unexpected and not by_term:
        it = "it" if len(unsure) == 1 else "they"
        return (f"ended while {it} started, unexpectedly (killed, or out of memory?) or by the launcher's SIGTERM "
                f"before {it} could hold one (the launcher's report says which)")
    said = [f"{_processes(unexpected)} unexpectedly (killed, or out of memory?)"] if unexpected else []
    if unsure:
        said.append(f"{_processes(unsure)} unexpectedly or by the launcher's SIGTERM")
    if by_term:  # the launcher's only where its SIGTERM came here too (as where they alone ended so)
        sender = "the launcher's" if held_a_launchers_term() else "a"
        said.append(f"{_processes(by_term)} by {sender} SIGTERM")
    return f"ended: {', '.join(said[:-1])} and {said[-1]} (the launcher's report says how each ended)"


def _processes(ranks: list[int]) -> str:
    """"process 1", "processes 1 and 2", "processes 1, 2 and 3"."""
    if len(ranks) == 1:
        return f"process {ranks[0]}"
    return f"processes {', '.join(map(str, ranks[:-1]))} and {ranks[-1]}"


def wait_for_the_launchers_store(work: str, kept: str, seconds: float) -> float:
    """Before a connection to torchrun's agent's store (MASTER_ADDR:MASTER_PORT), there from before this process
    started: a look that it takes one, up to ``seconds``, while nothing has stopped this process. Refused once a
    launcher's SIGTERM is held: the launcher has ended, and torch's connect would have waited for it ``seconds``
    (the group's timeout) in C++, deaf to signals, alone; ProcessLostError, one line (``work``: "this training (2
    processes)", ``kept``). A process of a wrapper that does not exec (a shell script) is left so: the launcher's
    SIGTERM, to the wrapper's process group, ends the wrapper, which the launcher took for this process. → the seconds
    left of ``seconds`` (one at least: torch's connect then says a store that never answered); all of them at once
    where torchrun's agent does not hold the store (a process of the launch makes it: it may not exist yet). Call it
    before ``dist.rendezvous("env://")``, giving that what it returns as its timeout."""
    import socket

    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() != "true" or "MASTER_ADDR" not in os.environ:
        return seconds
    address = (os.environ["MASTER_ADDR"], int(os.environ.get("MASTER_PORT", "0") or 0))
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection(address, timeout=1.0):
                return max(deadline - time.monotonic(), 1.0)
        except OSError as err:
            if held_a_launchers_term():
                raise ProcessLostError(
                    f"the launcher of {work} stopped this process while it started and has ended since (its store "
                    f"at {address[0]}:{address[1]} no longer answers: {err.strerror or err}), so the others cannot "
                    f"be met; this process stopped: {kept} (started by a wrapper script that does not exec wavegen? "
                    f"the launcher's SIGTERM ends the wrapper, and the launcher does not wait for wavegen)") from None
        if time.monotonic() >= deadline:
            return 1.0
        time.sleep(_POLL_SECONDS)


def launchers_store(work: str, kept: str, seconds: float):
    """``dist.rendezvous("env://")``'s (store, rank, world): a client of the launcher's store (torchrun's agent's, or
    the one process 0 makes), looked for first by :func:`wait_for_the_launchers_store` (``work``: "this training",
    said with the launch's process count), its connect bounded by what is left of ``seconds`` (the look waited the
    rest) and the store's own waits by ``seconds``."""
    import torch.distributed as dist

    left = wait_for_the_launchers_store(f"{work} ({os.environ.get('WORLD_SIZE', '?')} processes)", kept, seconds)
    store, rank, world = next(dist.rendezvous("env://", timeout=datetime.timedelta(seconds=left)))
    store.set_timeout(datetime.timedelta(seconds=seconds))
    return store, rank, world


def meet_the_launch(work: str, kept: str, seconds: float = GROUP_TIMEOUT_SECONDS, setting: str | None = None) -> None:
    """:func:`meet_before_the_group` for a process group that another makes from the environment afterwards
    (accelerate's, through ``init_process_group("env://")``), where torchrun's agent holds the store (a store a
    process of the launch holds is made by that group's making: nothing to meet in before). ``work``: "this
    training", its process count added."""
    import torch.distributed as dist

    if (dist.is_initialized() or os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() != "true"
            or "MASTER_ADDR" not in os.environ):
        return
    store, rank, world = launchers_store(work, kept, seconds)
    # the keys under init_process_group's prefix, where record_this_process and lost_process look once it exists
    meet_before_the_group(dist.PrefixStore("default_pg", store), rank, world, f"{work} ({world} processes)", kept,
                          seconds=seconds, setting=setting)


# Where gloo's TCP transport raises (a peer gone: "Connection closed by peer", "Read error ... Connection reset
# by peer"; a peer silent past the group's timeout: "Timed out waiting ...ms"): a plain RuntimeError that names it
_GLOO_TRANSPORT = "gloo/transport/"


def lost_contact(err: BaseException) -> bool:
    """Whether ``err`` is a collective failing because another process ended or stopped answering (gloo's
    transport, torch's DistError of NCCL and the store), not a bug of this process's own."""
    import torch.distributed as dist

    return isinstance(err, dist.DistError) or (isinstance(err, RuntimeError) and _GLOO_TRANSPORT in str(err))


# The attribute of a lost_contact error that holds the user error this process had failed with when the collective
# that was to share it met the loss (trainstate.checked): process_lost says it first
OWN_ERROR = "wavegen_own_error"


def lost_with_own_error(lost: BaseException, own: BaseException) -> BaseException:
    """``lost`` (a :func:`lost_contact` error met while sharing ``own``, this process's own user error), marked
    so that :func:`process_lost` says ``own`` with the loss (the process that would have said it may be gone)."""
    setattr(lost, OWN_ERROR, own)
    return lost


def process_lost(err: BaseException, work: str, kept: str, setting: str | None = None) -> ProcessLostError:
    """The one line for :func:`lost_contact` error ``err`` of ``work`` ("this training"): another process ended
    (where this one sees it gone; else it "lost its connection": it may run on, here or on another machine), or did
    not answer within the group's timeout (``setting``: the setting that sets it, with its value:
    "train.group_timeout_seconds=600"); then ``kept``, what is saved and how to go on. This process's own
    error, where the collective was sharing one (:func:`lost_with_own_error`), comes first."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    said = re.sub(r"^\[[^\]]*\]\s*", "", first)  # gloo's source file and line, of no use to a user
    own = getattr(err, OWN_ERROR, None)
    ended = "timed out" not in said.lower() and "timeout" not in said.lower()  # (gloo's connect: "Connect timeout")
    lost = lost_process(1.0 if ended else 0.0)  # named where this process sees it (one machine)
    who = f"process {lost[0]} of {work}" if lost else f"another process of {work}"
    if ended and lost and lost[1] == "ended":  # seen gone
        line = (f"{who} ended unexpectedly (killed, or out of memory? the launcher's report says why; {said}); "
                f"this process stopped too: {kept}")
    elif ended:  # its connection closed; not seen gone: it may run on, here or on another machine
        if lost:  # (seen stopped)
            how = "it is stopped: SIGSTOP or Ctrl-Z"
        else:
            waited = f", or it stopped after waiting {setting}" if setting else ""
            how = f"ended, or its machine is unreachable? the launcher's report names it{waited}"
        line = f"{who} lost its connection ({how}; {said}); this process stopped too: {kept}"
    else:
        limit = f" within {setting}" if setting else ""
        raise_it = f"; if a process is merely that slow, raise {setting.split('=')[0]}" if setting else ""
        why = ("it is stopped (SIGSTOP or Ctrl-Z)" if lost and lost[1] == "stopped" else
               "it is frozen (stopped, swapped out, stuck on a disk) or worked alone for longer")
        line = f"{who} did not answer{limit} ({said}): {why}; this process stopped: {kept}{raise_it}"
    if own is not None:  # its own error is its own to say
        return ProcessLostError(f"{own}; and {line}")
    return first_to_say_the_loss(ProcessLostError(line))


def leave_to_another_process(err: BaseException) -> bool:
    """Whether this process of a launch leaves user error ``err`` to another one to print, so that a
    refusal reads once, not once per process: every process but the first when each of them raised
    the same (``err.every_process``, set where the processes agreed on it: trainstate.checked), else
    every process but the first of its machine (an error found before the processes could talk: the
    same arguments and files give the same error on one machine; another machine may differ)."""
    if isinstance(err, ProcessLostError):  # the process that would say it may be the one that is gone
        return err.said_elsewhere
    rank, local_rank = launch_rank()
    return rank != 0 and (getattr(err, "every_process", False) or local_rank != 0)


LAUNCHER_WAIT_SECONDS = 10.0  # wait_for_the_launcher's, by default


def wait_for_the_launcher(err: BaseException, seconds: float | None = None) -> None:
    """What a process that left user error ``err`` to another process of its launch
    (:func:`leave_to_another_process`) does before it says it after all: wait up to ``seconds`` for the
    launcher to end it. A launcher (torchrun, accelerate
    launch, mpirun) ends every process once one has exited with an error (torchrun within 0.1 s):
    this one exiting first could end the printing process before it printed, and the error would
    read nowhere. Once the printing process has exited with it, the launcher ends this one here;
    still alive after ``seconds`` (that process did not fail), the caller prints the error itself.
    A process whose launcher's SIGTERM was held while it met the error (wavegen.signals: a survivor of
    a lost process that left the loss to another; one slower to start than the process that met the
    same refusal, printed it and exited) ends now by that SIGTERM: it was asked to end already, and
    the error is the other process's to say (it was, or it was lost and the launcher says so)."""
    if held_a_launchers_term():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    try:
        time.sleep(LAUNCHER_WAIT_SECONDS if seconds is None else seconds)
    except KeyboardInterrupt:  # Ctrl-C reached every process: no launcher to wait for
        pass


def before_process_group() -> None:
    """Import torch.distributed.nn.functional while no process group exists.

    That module takes the default group as a default argument when it is first imported (building
    a model imports it, through torch._dynamo). Imported after the group exists, it keeps the group
    alive past destroy_process_group, so gloo's worker threads end during interpreter exit, racing
    it: "terminate called without an active exception" (SIGABRT), now and then, under load. Imported
    first, it holds None, and the group (and its threads) really ends when it is destroyed, as
    long as nothing else holds it (see end_accelerator).
    """
    import torch.distributed.nn.functional  # noqa: F401


def end_accelerator(accelerator) -> None:
    """End a training's accelerator, and its process group, once the caller has dropped its own
    references to the prepared (DDP) model and optimizer.

    gloo's worker threads need the GIL to let go of a finished collective's tensors, so the group
    must end inside destroy_process_group, which waits for them with the GIL released. Ended by the
    release of a DDP reducer holding its last reference instead, it deadlocks (the reducer joins the
    workers with the GIL held); ended at interpreter exit, it can abort.
    """
    accelerator.free_memory()  # the accelerator's own references to the prepared objects
    gc.collect()
    accelerator.end_training()
    made = getattr(accelerator, _MADE_STATE, None)
    if made is not None:
        _forget_accelerate_state(*made)


# make_accelerator marks an Accelerator whose making initialized accelerate's AcceleratorState (no other
# Accelerator lived in this process), with whether it made the PartialState under it too (accelerate.utils.save,
# and other helpers, make one alone): end_accelerator then clears what it made
_MADE_STATE = "_wavegen_made_state"


def _forget_accelerate_state(partial: bool) -> None:
    """Clear accelerate's process-wide state (AcceleratorState, GradientState; ``partial``: PartialState
    too, which holds the device and process group, not the precision), so the next
    Accelerator of this process starts afresh: accelerate keeps one mixed precision (and device) per
    process and refuses another ("AcceleratorState has already been initialized"), which stopped a second
    train() in one Python process (a notebook) with another train.mixed_precision. Only once the training
    that made it has ended (its process group destroyed): a new Accelerator then makes its own."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=partial)
    GradientState._reset_state()


# what a training's process lost before its group existed keeps (trainstate.training_lost's words for it)
NOT_BEGUN = "the training had not begun its steps; rerun the same command"


def make_accelerator(mixed_precision: str, cpu: bool = False, timeout_seconds: float = GROUP_TIMEOUT_SECONDS,
                     work: str = "this training", kept: str = NOT_BEGUN,
                     setting: str | None = "train.group_timeout_seconds"):
    """The run's Accelerator; picks up ``accelerate launch`` / ``torchrun`` from the environment.

    ``mixed_precision``: auto (bf16 on CUDA, else none) | no | bf16 | fp16. ``cpu``: stay on the
    CPU even where there is a GPU. Several processes without CUDA run on CPU with gloo:
    accelerate takes that path only when told ``cpu=True`` (otherwise each process would train
    alone, unaware of the others). ``timeout_seconds``: how long a process waits for the others at
    a collective before it fails (the process group's timeout, gloo's or NCCL's). Several processes meet in
    torchrun's store first (:func:`meet_the_launch`): one killed while they started is named in one line,
    ProcessLostError (``work``, "this training", and what is ``kept``), within seconds; one that does not come
    within ``timeout_seconds`` (``setting`` sets it) too.
    """
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    cuda = torch.cuda.is_available() and not cpu
    if mixed_precision == "auto":
        mixed_precision = "bf16" if cuda else "no"
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if several:
        before_process_group()
        meet_the_launch(work, kept, timeout_seconds, setting)
    from accelerate.state import AcceleratorState, PartialState

    # no Accelerator of another's lives in this process; a PartialState may (accelerate.utils.save makes one)
    made = (not PartialState._shared_state,) if not AcceleratorState._shared_state else None
    # accelerate passes on only what differs from its handler's default (600 s): a timeout of exactly that would
    # be dropped, and gloo would take torch's 30 minutes; a microsecond more is passed on
    timeout = datetime.timedelta(seconds=timeout_seconds)
    if timeout == InitProcessGroupKwargs().timeout:
        timeout += datetime.timedelta(microseconds=1)
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=not cuda and (cpu or several),
                              kwargs_handlers=[InitProcessGroupKwargs(timeout=timeout)])
    setattr(accelerator, _MADE_STATE, made)
    met_the_others()  # its group made (a launcher's without an agent's store: no meeting before it)
    if accelerator.num_processes > 1:
        record_this_process()
    if accelerator.num_processes == 1 and asked_for_several_cpu_processes():
        logger.warning("accelerate launch --cpu started this one process, whatever --num_processes says (its --cpu "
                       "launcher starts a single process outside mpirun): it runs alone, at one process's speed. "
                       "For N processes on the CPU (gloo), launch with --multi_gpu --num_processes N on a machine "
                       "without GPUs, --config_file recipes/accelerate/one_node.yaml --num_processes N, or "
                       "torchrun --nproc_per_node N")
    return accelerator


def asked_for_several_cpu_processes() -> bool:
    """Whether ``accelerate launch --cpu --num_processes N`` (N > 1) started this process: its single-process
    launcher sets ACCELERATE_USE_CPU, and MASTER_ADDR only when asked for several, but no WORLD_SIZE."""
    return (os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("true", "1", "yes")
            and "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ)
