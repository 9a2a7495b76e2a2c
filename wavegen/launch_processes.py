"""What this machine's /proc tells of the processes of a launch (torchrun's children): a process's pid space
(:func:`pid_space`), its state (:func:`process_state`), how it ended while its launcher has not reaped it
(:func:`ended_by_sigterm`), and the ranks of this launch that run here now (:func:`ranks_running_here`), read from
their environments. wavegen.distributed's meetings judge lost processes from these."""

from __future__ import annotations

import os
import signal
import time


def pid_space() -> str:
    """Where this process's pid means something: this kernel's boot and this pid namespace (two containers of one
    host name see each other's pids as absent: their name alone would take a live process for ended)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot:
            return f"{boot.read().strip()} {os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return f"unseen {os.getpid()} {time.time()}"  # no other process takes it for its own


def process_state(space: str, pid: int) -> str | None:
    """The state of process ``pid`` of pid space ``space`` (:func:`pid_space`) where this process sees it: "ended",
    "stopped" (SIGSTOP, Ctrl-Z) or "running"; None where it runs elsewhere (or cannot be seen)."""
    if space != pid_space():
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except FileNotFoundError:
        return "ended"
    except OSError:
        return None
    state = text[text.rindex(")") + 2:][:1]
    return "ended" if state in "ZXx" else "stopped" if state in "Tt" else "running"


def ended_by_sigterm(pid: int) -> bool:
    """Whether process ``pid`` of this pid space ended by a SIGTERM it did not handle, and is still there to tell
    (a zombie: torchrun reaps a process it stopped only once it has waited for those of lower ranks, which hold
    theirs); False where it runs, is gone or ended otherwise (one of a lower rank than every process still holding
    its SIGTERM is reaped at once: gone, its exit status with it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
        fields = text[text.rindex(")") + 2:].split()
        return fields[0] == "Z" and int(fields[49]) & 0x7F == signal.SIGTERM  # (its wait status: proc(5)'s exit_code)
    except (OSError, ValueError, IndexError):
        return False


_wrapped: set = set()  # the launches (run id, restart count) where this process was seen started by a wrapper
_seen_pids: dict = {}  # pid → (launch, rank) of the processes seen running (a zombie's environment is gone)


def _this_launch() -> tuple[str, str]:
    """This process's launch under torchrun's agent: (its run id, its restart count)."""
    return os.environ.get("TORCHELASTIC_RUN_ID", ""), os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")


def ranks_running_here(world: int) -> set[int] | None:
    """The ranks of this launch whose processes run now, where every process of the launch runs on this machine
    under one torchrun agent (its children, all started before any of them imports torch); None where that cannot
    be told (several machines, another launcher, a wrapper between the agent and this process, /proc unreadable). A
    process killed, or ended, is not running (a zombie not yet reaped by the agent neither)."""
    if os.environ.get("LOCAL_WORLD_SIZE", "").strip() != str(world) or "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    mine = _this_launch()
    parent, running = os.getppid(), set()
    try:
        if mine in _wrapped or _launched_as(_environ(parent), mine) is not None:
            _wrapped.add(mine)  # a wrapper's child (torchrun ran a shell script that runs wavegen): the others are
            return None  # children of other wrappers, not seen from here (nor once the wrapper has ended)
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                text = stat.read()
            fields = text[text.rindex(")") + 2:].split()
            if int(fields[1]) != parent or fields[0] in "ZXx":
                continue
            rank = _launched_as(_environ(pid), mine)
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile, or not ours to read
        if rank is not None:
            running.add(rank)
            _seen_pids[pid] = (mine, rank)
    return running if len(running) <= world else None


def pids_seen(rank: int) -> list[int]:
    """The pids :func:`ranks_running_here` saw running as process ``rank`` of this process's launch (an ended one's
    environment, where its rank was read, is gone: its pid is what is left to look at)."""
    return [pid for pid, seen in _seen_pids.items() if seen == (_this_launch(), rank)]


def _environ(pid: int) -> dict:
    """Process ``pid``'s environment, in bytes (OSError where it cannot be read)."""
    with open(f"/proc/{pid}/environ", "rb") as environ:
        return dict(item.split(b"=", 1) for item in environ.read().split(b"\0") if b"=" in item)


def _launched_as(env: dict, launch: tuple[str, str]) -> int | None:
    """The rank under which a process of ``env`` (:func:`_environ`) was started by torchrun's agent of ``launch``
    (its run id, its restart count); None where it was not (the agent itself, another launch's process)."""
    theirs = (env.get(b"TORCHELASTIC_RUN_ID", b"").decode(errors="replace"),
              env.get(b"TORCHELASTIC_RESTART_COUNT", b"0").decode(errors="replace"))
    return int(env[b"RANK"]) if theirs == launch and env.get(b"RANK", b"").isdigit() else None
