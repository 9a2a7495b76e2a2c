"""``wavegen serve``: a model as an endless live stream, with a web player.

::

    serve("runs/my-band", ServeSettings(port=8000, seed=1, archive="archive/"), on_ready=print)

One :class:`~wavegen.serve.station.Station` renders the broadcast ahead of real time (guarded,
archived, encoded once to Ogg Opus); one :class:`~wavegen.serve.broadcast.Broadcast` puts it
on air at real time and fans it out; an aiohttp server (:mod:`wavegen.serve.app`) serves the
player page at ``/``, the audio at ``/stream``, ``/status`` (JSON) and ``/metrics``
(Prometheus); with an operator token, ``POST /label`` switches a conditioned model's label
live (:mod:`wavegen.serve.control`). SIGINT or SIGTERM stops it (the archive takes its snapshot first); a second
one stops at once.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
import time
from contextlib import nullcontext

from wavegen.serve.archive import ServeError
from wavegen.serve.settings import ServeSettings, loopback
from wavegen.serve.station import MIN_REALTIME, Station, load_text, speed
from wavegen.signals import StopSignals

__all__ = ["ServeError", "ServeSettings", "Station", "serve"]

logger = logging.getLogger(__name__)

STOP_POLL_SECONDS = 0.2  # how often the server looks for a stop request
KEPT_UP_SECONDS = 30.0  # this long without falling further behind: the station keeps up again


def _url(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a host name
    return f"http://{host}:{port}/"


def _cannot_listen(host: str, port: int, err: OSError, address: str | None = None) -> ServeError:
    """The refusal of ``host:port`` (``address``: the one of the addresses ``host`` names that could not be bound,
    where known), with the way on that fits: a host name that does not resolve or an address that is not this
    machine's is no matter of the port (another --port could not help, and 0 may be the one given). This machine's
    IPv6 loopback refused (IPv6 turned off: ::1, or localhost where it names ::1 too) is not another machine's."""
    where = f" (its address {address})" if address is not None and address != host else ""
    if err.errno == errno.EADDRNOTAVAIL and address is not None and _ipv6_loopback(address):
        way = "this machine has IPv6 turned off, so ::1 cannot be listened on: give --host 127.0.0.1"
    elif isinstance(err, socket.gaierror) or err.errno == errno.EADDRNOTAVAIL:
        way = "--host must be a name or address of this machine (127.0.0.1: this machine only; 0.0.0.0: every network)"
    elif err.errno == errno.EADDRINUSE:
        way = "choose another --port (0 picks a free one)"
    else:
        way = "choose another --port (0 picks a free one) or --host"
    return ServeError(f"cannot listen on {host}:{port}{where}: {err.strerror or err}; {way}")


def _ipv6_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # a scoped one: "fe80::1%eth0"
    except ValueError:
        return False
    return ip.version == 6 and ip.is_loopback


def _check_address(host: str, port: int) -> None:
    """ServeError where ``host:port`` cannot be listened on (a port in use, a host that is not this
    machine's), found before the model loads: each address is bound as asyncio's server binds it
    (SO_REUSEADDR on POSIX, IPv6 sockets IPv6 only), then let go; the one refused is named where ``host`` names
    several (localhost: 127.0.0.1 and ::1)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as err:
        raise _cannot_listen(host, port, err) from None
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as sock:
                if os.name == "posix":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
        except OSError as err:
            raise _cannot_listen(host, port, err, address[0]) from None


def _publisher(loop: asyncio.AbstractEventLoop, encoder, broadcast):
    """→ publish(pages) for the station's thread: the pages (None: the station stopped) handed to the
    broadcast on ``loop``. Once the loop is closed (a second Ctrl-C ends it while the station takes its
    final snapshot) no one listens any more, and the pages are dropped."""
    def publish(pages) -> None:
        try:
            loop.call_soon_threadsafe(broadcast.add_pages, encoder.header, pages)
        except RuntimeError:  # "Event loop is closed"
            if not loop.is_closed():
                raise

    return publish


def _why_behind(station: Station) -> tuple[str, str]:
    """(why the broadcast falls behind, what keeps up), in words, from what the station measured: its
    start-up check (generation alone: at best, and with a CPU to itself) and its last windows (the
    guard's redraws included)."""
    source, start, rate = station.ref.source, station.measured_realtime or 0.0, station.realtime_factor or 0.0
    alone = station.measured_alone or start
    windows, redraws = station.recent
    last = f"over its last {windows} window{'s' * (windows != 1)}"
    faster = "a smaller model or a faster backend keeps up"
    if alone < MIN_REALTIME:  # played with --allow-slow
        return (f"{source} generates {speed(start)} real time here (the start-up check, generation alone; a live "
                f"stream needs {MIN_REALTIME}x)", faster)
    if redraws and rate < 1:
        return (f"{source} generates {speed(rate)} real time {last} with the guard's redraws ({redraws} in them; the "
                f"start-up check, {speed(start)}, times generation alone)",
                f"a better-trained model, fewer --guard-attempts or --no-guard, or {faster}")
    if redraws:
        return (f"{source} generates {speed(rate)} real time {last}, redraws included, but the guard's {redraws} "
                f"redraws come bunched: a window drawn again and again takes longer than the "
                f"{station.settings.buffer_seconds:g} s rendered ahead",
                "a larger --buffer-seconds, a better-trained model or fewer --guard-attempts")
    return (f"{source} generates {speed(rate)} real time {last} with no redraws ({speed(start)} at start-up, "
            f"{speed(alone)} with a CPU to itself): other work on this machine takes the CPU it needs "
            f"({load_text()})", f"a machine less busy, a larger --buffer-seconds, or {faster}")


class _Pace:
    """Says when the broadcast starts falling behind real time, and when it keeps up again: once
    each, not every window. (The start-up check times generation alone; the guard's redraws can
    cost a barely-trained model more than it has to spare.)"""

    def __init__(self, station: Station, broadcast):
        self.station, self.broadcast = station, broadcast
        self.delay = broadcast.delay_seconds
        self.behind = False
        self.late_at = 0.0  # when it last fell further behind (monotonic)
        self.late_position = 0  # the samples the station had rendered then

    def check(self) -> None:
        delay, station, now = self.broadcast.delay_seconds, self.station, time.monotonic()
        if delay > self.delay:
            self.late_at, self.late_position = now, station.position
        if delay > self.delay and not self.behind:
            self.behind = True
            why, remedy = _why_behind(station)
            logger.warning("the broadcast is falling behind real time: %s; it plays on with a growing delay "
                           "(delay_seconds in /status): %s", why, remedy)
        # kept up: KEPT_UP_SECONDS played on time, and as much audio rendered meanwhile (not one window that
        # takes that long to render, after which it falls behind again and would say so again)
        elif self.behind and now - self.late_at >= KEPT_UP_SECONDS and \
                (station.position - self.late_position) / station.sample_rate >= KEPT_UP_SECONDS:
            self.behind = False
            logger.info("the broadcast keeps up with real time again (%.1f s behind in all)", delay)
        self.delay = delay


# What the first SIGINT or SIGTERM says it will do (wavegen.signals), while the server starts up, then while it plays
STOP_STARTING = "stopping once the model is loaded and timed, before the server listens"
STOP_PLAYING = "stopping the stream"


def serve(target: str, settings: ServeSettings, checkpoint: str | None = None, on_ready=None,
          stop: StopSignals | None = None) -> dict:
    """Play ``target`` (a preset, config, model, run folder or checkpoint) until stopped.

    ``on_ready(url)`` is called once the server listens and the station plays. Returns the
    last /status ({} where SIGINT or SIGTERM came before it listened: it stops without listening);
    ``stop.requested`` then says a signal stopped it (the CLI's exit 130). ``stop``: the StopSignals
    a caller installed before this call (the CLI's, before its imports), else serve's own.
    Raises ServeError (or ConfigError) for a setting that cannot work, a port in use (both before
    the model loads), an archive of another broadcast (before the model is timed), a model too slow
    for real time (without ``allow_slow``), or a failing disk.
    """
    settings.validate()
    _check_address(settings.host, settings.port)  # not after the model loaded and was timed
    with nullcontext(stop) if stop is not None else StopSignals() as stop:
        stop.message = STOP_STARTING
        # a stop asked for during the imports (the CLI's), the model's load or the start-up check: it never
        # listens, so never says it does
        if stop.requested:
            return _stopped_before_start(stop)
        station = Station(target, settings, checkpoint)
        try:  # a failure in open() lets the archive go: a caller in this process may open it again
            # a stop during the timing (seconds): the archive is not opened, so a new one is not bound to this command
            if stop.requested or not station.open(lambda: stop.requested):
                return _stopped_before_start(stop)
            stop.message = STOP_PLAYING + (" and saving the archive's snapshot" if settings.archive else "")
            return asyncio.run(_run(station, stop, on_ready))
        finally:
            station.stop()


def _stopped_before_start(stop: StopSignals) -> dict:
    logger.warning("%s: stopped before the stream started", stop.name)
    return {}


async def _run(station: Station, stop: StopSignals, on_ready) -> dict:
    from aiohttp import web

    from wavegen.serve.app import http_logger, make_app, status
    from wavegen.serve.broadcast import Broadcast

    s = station.settings
    loop = asyncio.get_running_loop()
    broadcast = Broadcast(station.encoder.header, station.position / station.sample_rate, s.burst_seconds,
                          s.lag_seconds, s.stall_seconds)
    runner = web.AppRunner(make_app(station, broadcast), handle_signals=False, access_log=None,
                           shutdown_timeout=2.0, logger=http_logger(), keepalive_timeout=s.idle_seconds)
    await runner.setup()
    try:
        site = web.TCPSite(runner, s.host, s.port)
        try:
            await site.start()
        except OSError as err:  # taken since _check_address
            raise _cannot_listen(s.host, s.port, err) from None
        port = runner.addresses[0][1] if runner.addresses else s.port
        if not loopback(s.host):
            logger.warning("listening on %s: anyone who can reach this machine can listen", s.host)
            if s.control_token is not None:
                logger.warning("POST /label's token travels in clear over plain HTTP: put an HTTPS proxy in front "
                               "of the server before you switch labels across a network")

        pacer = asyncio.create_task(broadcast.pace())
        station.start(_publisher(loop, station.encoder, broadcast), broadcast.live_seconds)
        url = _url(s.host, port)
        logger.info("playing %s at %s (Ctrl-C stops)", station.ref.source, url)
        if on_ready is not None:
            on_ready(url)
        pace = _Pace(station, broadcast)
        while not stop.requested and station.running:
            await asyncio.sleep(STOP_POLL_SECONDS)
            pace.check()
        final = status(station, broadcast)
        broadcast.close()
        await loop.run_in_executor(None, station.stop)
        pacer.cancel()
    finally:
        await runner.cleanup()
    if station.error is not None:
        raise station.error
    return final
