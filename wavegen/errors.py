"""The family of errors meant for the user.

Every error a user can cause and fix (a setting, a file, a folder another process is using)
derives from :class:`WavegenError`; its message names the file or value and says what to do.
The CLI prints these as one line with exit code 2. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class WavegenError(Exception):
    """An error the user can act on; the message names the file or value and what to do."""


def some_of(names: list[str], shown: int = 3) -> str:
    """The first ``shown`` of ``names`` for a message, and how many more: "a.wav, b.wav, c.wav and 4 more"."""
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def every_process(error: WavegenError) -> WavegenError:
    """``error``, marked as raised by every process of the launch alike (so one of them prints it:
    wavegen.distributed.leave_to_another_process; trainstate.checked and render's
    Processes.agree mark what their processes agreed on)."""
    error.every_process = True
    return error


class FolderBusyError(WavegenError):
    """Another process holds a folder's lock (a second render into one --out, two trainings of one --run)."""


class CheckpointError(WavegenError):
    """A model or checkpoint file is damaged or unreadable; the message names the file."""
