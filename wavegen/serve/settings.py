"""What a live stream is asked to do: :class:`ServeSettings`, the options of ``wavegen serve`` (host and port,
seed and temperature, label, backend, pitch-sync, postfilter, archive, buffering, listener limits, guard, control
token), and their validation, which needs no model: a setting that cannot work is named before anything loads.

What serve shares with ``wavegen render`` (seed, temperature, guard, snapshots, pitch-sync, postfilter) is
checked as render checks it, through :meth:`ServeSettings.render_settings`.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from wavegen.render import RenderSettings
from wavegen.render.settings import check_seconds
from wavegen.serve.archive import ServeError
from wavegen.serve.control import check_token

PUBLIC_PER_CLIENT = 4  # listeners from one address, by default, on a server others reach directly
# the shortest archive part: each part is a WAV file of its own, and 1e-9 made one per sample (16,000 files a
# second, the station slowed to a crawl writing them)
MIN_PART_SECONDS = 1.0
# the shortest --idle-seconds: a connection is closed this long after it opens unless its request has come, so
# 0.01 served no client whose request took a network's 50 ms to arrive (the server said it played all the same)
MIN_IDLE_SECONDS = 1.0


def loopback(host: str) -> bool:
    """Whether --host binds this machine's loopback only (127.0.0.1, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve beyond this machine
        return False


@dataclass
class ServeSettings:
    """What ``wavegen serve`` was asked for, one field per option; :meth:`validate` before anything loads."""

    host: str = "127.0.0.1"
    port: int = 8000
    seed: int = 0
    temperature: float = 1.0
    label: str | None = None  # "name" or a blend "a:0.7,b:0.3"
    backend: str = "auto"
    device: str = "cpu"
    archive: str | None = None  # folder for the archive (long-form render of the broadcast)
    archive_part_seconds: float = 3600.0
    archive_keep_parts: int = 0  # the newest archive parts kept, older ones removed (0: all)
    snapshot_seconds: float = 30.0  # archived audio between snapshots
    buffer_seconds: float = 4.0  # audio rendered ahead of the live edge (more while a window is finished)
    # audio a new listener receives at once: browsers wait for ~32 KB before they play (Icecast bursts
    # 64 KB for the same reason), ~4 s at 64 kb/s
    burst_seconds: float = 6.0
    max_listeners: int = 100
    # listeners from one address (an IPv6 /64) at once, so one client cannot take every place; 0: no limit.
    # None: PUBLIC_PER_CLIENT where the server listens beyond this machine, no limit where it binds only
    # loopback (there every listener comes through a reverse proxy or is this machine's own user)
    max_listeners_per_client: int | None = None
    stall_seconds: float = 10.0  # a listener whose socket takes no data for this long is dropped
    lag_seconds: float = 30.0  # a listener this far behind the live edge skips ahead to it
    # a connection with no request under way (none yet, one half sent, or idle between two) is closed after
    # this long: aiohttp's default holds one for an hour, and each holds a file descriptor (the page asks
    # for /status every second, on the same connection)
    idle_seconds: float = 15.0
    allow_slow: bool = False  # play a model slower than real time, with a growing delay
    guard: bool = True
    guard_seconds: float = 2.0
    guard_attempts: int = 4
    control_token: str | None = None  # POST /label with this token switches the label live (None: off)
    pitch_sync: float = 0.0  # rho of render's pitch-synchronous draws (wavegen.render.pitchsync); 0: off
    postfilter: float = 0.0  # G of render's pitch postfilter on the audio handed on (wavegen.render.postfilter); 0 off

    def __post_init__(self):
        if self.max_listeners_per_client is None:
            self.max_listeners_per_client = 0 if loopback(self.host) else PUBLIC_PER_CLIENT

    def validate(self) -> None:
        """ServeError (or render's ConfigError) naming the first setting that cannot work; needs no model."""
        for name in ("archive_part_seconds", "buffer_seconds", "stall_seconds", "lag_seconds", "idle_seconds"):
            check_seconds(f"--{name.replace('_', '-')}", getattr(self, name))
        if self.archive_part_seconds < MIN_PART_SECONDS:
            raise ServeError(f"--archive-part-seconds {self.archive_part_seconds}: must be at least "
                             f"{MIN_PART_SECONDS:g} s (each part is a WAV file of its own)")
        if self.idle_seconds < MIN_IDLE_SECONDS:
            raise ServeError(f"--idle-seconds {self.idle_seconds}: must be at least {MIN_IDLE_SECONDS:g} s (a "
                             "connection is closed that long after it opens unless its request has come)")
        if not (math.isfinite(self.burst_seconds) and self.burst_seconds >= 0):
            raise ServeError(f"--burst-seconds {self.burst_seconds}: must be a finite number of seconds, 0 or more")
        if self.lag_seconds <= self.burst_seconds:
            raise ServeError(f"--lag-seconds {self.lag_seconds} must exceed --burst-seconds {self.burst_seconds}")
        if self.max_listeners < 1:
            raise ServeError(f"--max-listeners {self.max_listeners}: need at least one")
        if self.archive_keep_parts < 0:
            raise ServeError(f"--archive-keep-parts {self.archive_keep_parts}: must be 0 (keep all) or more")
        if self.max_listeners_per_client < 0:
            raise ServeError(f"--max-listeners-per-client {self.max_listeners_per_client}: must be 0 (no limit) or "
                             "more")
        if not 0 <= self.port <= 65535:
            raise ServeError(f"--port {self.port}: not a TCP port (0 picks a free one)")
        check_token(self.control_token)
        # what serve shares with render (seed, temperature, guard, snapshots, pitch-sync, postfilter) is checked as
        # render checks it
        self.render_settings().validate()

    def render_settings(self) -> RenderSettings:
        """The settings a render with this stream's seed, temperature, snapshots, guard, pitch-sync and
        postfilter would have."""
        return RenderSettings(seconds=1.0, seed=self.seed, temperature=self.temperature, label=self.label,
                              backend=self.backend, device=self.device, snapshot_seconds=self.snapshot_seconds,
                              guard=self.guard, guard_seconds=self.guard_seconds, guard_attempts=self.guard_attempts,
                              pitch_sync=self.pitch_sync, postfilter=self.postfilter)
