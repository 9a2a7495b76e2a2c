"""The web side of ``wavegen serve`` (aiohttp): the player page, ``/stream``, ``/status``, ``/metrics``.

Safe by default: no route reads or writes a path a client names (the page's three files are
read from the package once, at start, and served by fixed routes); listeners past the cap are
refused with 503 and a Retry-After, and past the per-client limit (``max_listeners_per_client``
from one address: one client cannot take every place) with 429. ``POST /label`` (live label
switching, :mod:`wavegen.serve.control`) answers only requests with the operator's token, and
only where one was given at start.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import sys
import time
from importlib import resources

from aiohttp import web

from wavegen.fileio import strict_json
from wavegen.serve.broadcast import Broadcast
from wavegen.serve.control import label_handler
from wavegen.serve.encoder import CONTENT_TYPE
from wavegen.serve.station import Station

logger = logging.getLogger(__name__)
HTTP_LOGGER = "wavegen.serve.http"  # aiohttp's server log (AppRunner(logger=...)), see http_logger()

PAGE_FILES = {"/": ("index.html", "text/html"), "/player.js": ("player.js", "text/javascript"),
              "/style.css": ("style.css", "text/css")}
STATUS_EVENTS = 20  # guard events listed by /status (all are counted)
SEND_BUFFER_BYTES = 64 * 1024  # per listener socket: a stalled client holds little and is found sooner
RETRY_AFTER_SECONDS = 30
SLOW_DELAY_SECONDS = 0.5  # a broadcast this far behind real time is reported slow
BAD_REQUEST_CHARS = 120  # of what aiohttp says of a malformed request, logged
CLIENT_IPV6_PREFIX = 64  # one IPv6 client: its /64 (a host is handed a whole /64 and picks addresses in it)


def status(station: Station, broadcast: Broadcast) -> dict:
    """What /status answers (and the page shows)."""
    s, sr = station.settings, station.sample_rate
    live = broadcast.live_seconds()
    rendered = station.position / sr
    archive = None
    if station.archive is not None:
        archive = {"seconds": station.archive.position / sr,
                   "snapshot_seconds": station.archive.snapshot_position / sr,
                   "first_part": station.archive.first_part, "keep_parts": station.archive.keep_parts}
    return {
        "model": station.name, "kind": station.ref.kind, "preset": station.ref.config.get("preset"),
        "model_type": station.ref.config.get("model_type"), "trained": station.ref.trained,
        "label": station.label_state.text, "labels": list(station.engine.labels),
        "label_in_force": station.label_state.single,  # the page's control starts at it (by name, not text)
        "label_since_seconds": round(station.label_state.since / sr, 3),
        "label_switches": station.label_state.switches, "label_control": s.control_token is not None,
        "seed": s.seed, "pitch_sync": float(s.pitch_sync),  # 0: off
        "postfilter": float(s.postfilter),  # 0: off
        "temperature": float(station.temperature[0]), "sample_rate": sr, "backend": station.engine.backend,
        "codec": "Ogg Opus", "position_seconds": round(live, 3), "rendered_seconds": round(rendered, 3),
        "buffered_seconds": round(max(rendered - live, 0.0), 3),
        "realtime_factor": station.realtime_factor, "measured_realtime_factor": station.measured_realtime,
        "slow": station.slow or broadcast.delay_seconds > SLOW_DELAY_SECONDS,
        "delay_seconds": round(broadcast.delay_seconds, 3),
        "listeners": broadcast.listeners, "max_listeners": s.max_listeners,
        "listeners_peak": broadcast.listeners_peak, "listeners_total": broadcast.listeners_total,
        "max_listeners_per_client": s.max_listeners_per_client,
        "refused_total": broadcast.refused_total, "refused_per_client_total": broadcast.refused_per_client_total,
        "dropped_total": broadcast.dropped_total,
        "skips_total": broadcast.skips_total, "bytes_sent_total": broadcast.bytes_sent_total,
        "encoded_bytes_total": station.encoded_bytes, "generator_cpu_seconds": round(station.cpu_seconds, 4),
        "guard": {"enabled": s.guard, "counts": dict(station.event_counts),
                  "events": station.events[-STATUS_EVENTS:]},
        "archive": archive, "uptime_seconds": round(time.monotonic() - broadcast.started, 3),
    }


_METRICS = (  # name, type, help, status key
    ("position_seconds", "gauge", "Broadcast position of the live edge.", "position_seconds"),
    ("rendered_seconds", "gauge", "Audio rendered by the station so far.", "rendered_seconds"),
    ("buffered_seconds", "gauge", "Audio rendered ahead of the live edge.", "buffered_seconds"),
    ("realtime_factor", "gauge", "Generation speed over the last windows, x real time.", "realtime_factor"),
    ("delay_seconds", "gauge", "How far the broadcast fell behind real time (slow models).", "delay_seconds"),
    ("listeners", "gauge", "Listeners connected now.", "listeners"),
    ("max_listeners", "gauge", "The cap on listeners.", "max_listeners"),
    ("listeners_total", "counter", "Listeners admitted since start.", "listeners_total"),
    ("max_listeners_per_client", "gauge", "The cap on listeners from one address (0: none).",
     "max_listeners_per_client"),
    ("refused_total", "counter", "Listeners refused at the cap or the per-client limit.", "refused_total"),
    ("refused_per_client_total", "counter", "Listeners refused at the per-client limit.",
     "refused_per_client_total"),
    ("dropped_total", "counter", "Listeners dropped for taking no data.", "dropped_total"),
    ("skips_total", "counter", "Times a listener fell behind and skipped to the live edge.", "skips_total"),
    ("sent_bytes_total", "counter", "Stream bytes sent to all listeners.", "bytes_sent_total"),
    ("encoded_bytes_total", "counter", "Stream bytes encoded (once for all listeners).", "encoded_bytes_total"),
    ("generator_cpu_seconds_total", "counter", "CPU time of the station thread (engine, guard, archive, "
                                               "encoder).", "generator_cpu_seconds"),
    ("label_switches_total", "counter", "Label switches (POST /label) since the archive began, or since start.",
     "label_switches"),
    ("uptime_seconds", "gauge", "Seconds since the server started.", "uptime_seconds"),
)


def metrics_text(state: dict) -> str:
    """/status's figures in the Prometheus text format (version 0.0.4)."""
    lines = []
    for name, kind, text, key in _METRICS:
        value = state[key]
        lines += [f"# HELP wavegen_serve_{name} {text}", f"# TYPE wavegen_serve_{name} {kind}",
                  f"wavegen_serve_{name} {float('nan') if value is None else float(value)}"]
    lines += ["# HELP wavegen_serve_guard_events_total Guard events on the stream, by kind.",
              "# TYPE wavegen_serve_guard_events_total counter"]
    for kind, count in sorted(state["guard"]["counts"].items()):
        lines.append(f'wavegen_serve_guard_events_total{{kind="{kind}"}} {count}')
    return "\n".join(lines) + "\n"


class _BadRequestsInOneLine(logging.Filter):
    """aiohttp logs a malformed request (the client's fault: a bad request line, header or length)
    as an error with a traceback; this makes it one line at INFO (-v keeps the traceback). Errors of
    the handlers themselves pass as they are."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        log = logging.getLogger(record.name)
        if not isinstance(exc, HttpProcessingError) or log.isEnabledFor(logging.DEBUG):
            return True
        remote = record.args[0] if isinstance(record.args, tuple) and len(record.args) == 1 else "a client"
        lines = [line.strip() for line in str(exc.message).splitlines()]
        what = " ".join(line for line in lines if line.strip("^")) or type(exc).__name__  # not the ^ marker
        what = what if len(what) <= BAD_REQUEST_CHARS else what[:BAD_REQUEST_CHARS] + "..."
        record.msg, record.args = "a malformed HTTP request from %s: %s (answered %s)", (remote, what, exc.code)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return log.isEnabledFor(logging.INFO)


def http_logger() -> logging.Logger:
    """The logger for aiohttp's server (malformed requests in one line each)."""
    log = logging.getLogger(HTTP_LOGGER)
    if not any(isinstance(f, _BadRequestsInOneLine) for f in log.filters):
        log.addFilter(_BadRequestsInOneLine())
    return log


def _outq_ioctl():
    """The ioctl that reads a socket's unsent + unacknowledged bytes (Linux SIOCOUTQ), or None."""
    try:
        import fcntl
        import termios
    except ImportError:  # Windows
        return None
    request = getattr(termios, "TIOCOUTQ", None)  # the same number as SIOCOUTQ on Linux
    return None if request is None or not sys.platform.startswith("linux") else (fcntl.ioctl, request)


_OUTQ = _outq_ioctl()


def _queued(transport):
    """→ queued(): bytes written to this connection that its client has not taken yet (the event
    loop's buffer and, on Linux, the kernel's send queue), or None without a transport."""
    if transport is None:
        return None
    sock = transport.get_extra_info("socket")

    def queued() -> int:
        n = transport.get_write_buffer_size()
        if sock is not None and _OUTQ is not None:
            ioctl, request = _OUTQ
            try:
                n += struct.unpack("i", ioctl(sock.fileno(), request, b"\0" * 4))[0]
            except (OSError, ValueError):  # closed meanwhile
                pass
        return n

    return queued


def refusal_response(why: str, settings, client: str | None) -> web.Response:
    """The answer to a listener refused (``why``: "full" or "client", as Broadcast.refusal says)."""
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if why == "full":
        n = settings.max_listeners
        return web.Response(status=503, headers=headers,
                            text=f"This stream has {n} listener{'s' * (n != 1)}, its limit; please try again in a "
                                 "little while.\n")
    n = settings.max_listeners_per_client
    return web.Response(status=429, headers=headers,
                        text=f"This stream takes at most {n} listener{'s' * (n != 1)} from one address "
                             f"(--max-listeners-per-client {n}), and {client} has {'that many' if n != 1 else 'one'}; "
                             "stop one of them, or try again in a little while.\n")


def client_key(remote: str | None) -> str | None:
    """The client a connection's peer address (``request.remote``) counts for: the IPv4 address, an
    IPv6 address's /64 (an IPv4-mapped one as IPv4), or None where there is no address (a Unix socket)."""
    if not remote:
        return None
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])  # no zone index (fe80::1%eth0)
    except ValueError:
        return remote
    if address.version == 6 and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/{CLIENT_IPV6_PREFIX}", strict=False))
    return str(address)


def make_app(station: Station, broadcast: Broadcast) -> web.Application:
    settings = station.settings
    folder = resources.files("wavegen.serve") / "static"
    page = {route: ((folder / name).read_bytes(), ctype) for route, (name, ctype) in PAGE_FILES.items()}
    warned = []  # the first refusal at the per-client limit is logged (a reverse proxy's address, perhaps)

    def refused(why: str, client: str | None, count: bool) -> web.Response:
        if why == "client" and count and not warned:
            warned.append(client)
            n = settings.max_listeners_per_client
            logger.warning("refused a listener from %s, which has %d already: the limit per client "
                           "(--max-listeners-per-client %d). Behind a reverse proxy every listener comes from the "
                           "proxy's address: raise the limit, or 0 turns it off", client, n, n)
        return refusal_response(why, settings, client)

    async def page_file(request: web.Request) -> web.Response:
        body, ctype = page[request.path]
        return web.Response(body=body, content_type=ctype, headers={"Cache-Control": "no-cache"})

    async def status_json(request: web.Request) -> web.Response:
        return web.json_response(status(station, broadcast), dumps=strict_json, headers={"Cache-Control": "no-store"})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=metrics_text(status(station, broadcast)),
                            content_type="text/plain", charset="utf-8", headers={"Cache-Control": "no-store"})

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-cache, no-store",
                                               "X-Content-Type-Options": "nosniff"})
        client, limits = client_key(request.remote), (settings.max_listeners, settings.max_listeners_per_client)
        if request.method == "HEAD":  # a look, not a listener: what a GET would get now (RFC 9110, 9.3.2: the
            # same status and headers, no body; at the cap, the 503), counted nowhere
            why = broadcast.refusal(limits[0], client, limits[1])
            if why is not None:
                return refused(why, client, count=False)
            await response.prepare(request)
            return response
        why = broadcast.admit(limits[0], client, limits[1])
        if why is not None:
            return refused(why, client, count=True)
        try:
            sock = request.transport.get_extra_info("socket") if request.transport else None
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            await response.prepare(request)
            if not await broadcast.feed(response.write, _queued(request.transport)):
                if request.transport is not None:
                    request.transport.abort()  # stalled: nothing more will reach it
        except ConnectionError:
            pass  # the listener went away
        finally:
            broadcast.leave(client)
        return response

    app = web.Application()
    for route in PAGE_FILES:
        app.router.add_get(route, page_file)
    app.router.add_get("/status", status_json)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/stream", stream)
    app.router.add_post("/label", label_handler(station, broadcast))
    return app
