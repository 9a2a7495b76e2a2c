"""The web side of ``wavegen serve`` (aiohttp): the player page, ``/stream``, ``/status``, ``/metrics``.

Safe by default: no route reads or writes a path a client names (the page's three files are
read from the package once, at start, and served by fixed routes); listeners past the cap are
refused with 503 and a Retry-After.
"""

from __future__ import annotations

import logging
import socket
import time
from importlib import resources

from aiohttp import web

from wavegen.serve.broadcast import Broadcast
from wavegen.serve.encoder import CONTENT_TYPE
from wavegen.serve.station import Station

logger = logging.getLogger(__name__)

PAGE_FILES = {"/": ("index.html", "text/html"), "/player.js": ("player.js", "text/javascript"),
              "/style.css": ("style.css", "text/css")}
STATUS_EVENTS = 20  # guard events listed by /status (all are counted)
SEND_BUFFER_BYTES = 64 * 1024  # per listener socket: a stalled client holds little and is found sooner
RETRY_AFTER_SECONDS = 30
SLOW_DELAY_SECONDS = 0.5  # a broadcast this far behind real time is reported slow


def status(station: Station, broadcast: Broadcast) -> dict:
    """What /status answers (and the page shows)."""
    s, sr = station.settings, station.sample_rate
    live = broadcast.live_seconds()
    rendered = station.position / sr
    archive = None
    if station.archive is not None:
        archive = {"seconds": station.archive.position / sr,
                   "snapshot_seconds": station.archive.snapshot_position / sr}
    return {
        "model": station.name, "kind": station.ref.kind, "preset": station.ref.config.get("preset"),
        "model_type": station.ref.config.get("model_type"), "trained": station.ref.trained,
        "label": s.label, "labels": list(station.engine.labels), "seed": s.seed,
        "temperature": float(station.temperature[0]), "sample_rate": sr, "backend": station.engine.backend,
        "codec": "Ogg Opus", "position_seconds": round(live, 3), "rendered_seconds": round(rendered, 3),
        "buffered_seconds": round(max(rendered - live, 0.0), 3),
        "realtime_factor": station.realtime_factor, "measured_realtime_factor": station.measured_realtime,
        "slow": station.slow or broadcast.delay_seconds > SLOW_DELAY_SECONDS,
        "delay_seconds": round(broadcast.delay_seconds, 3),
        "listeners": broadcast.listeners, "max_listeners": s.max_listeners,
        "listeners_peak": broadcast.listeners_peak, "listeners_total": broadcast.listeners_total,
        "refused_total": broadcast.refused_total, "dropped_total": broadcast.dropped_total,
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
    ("refused_total", "counter", "Listeners refused at the cap.", "refused_total"),
    ("dropped_total", "counter", "Listeners dropped for taking no data.", "dropped_total"),
    ("skips_total", "counter", "Times a listener fell behind and skipped to the live edge.", "skips_total"),
    ("sent_bytes_total", "counter", "Stream bytes sent to all listeners.", "bytes_sent_total"),
    ("encoded_bytes_total", "counter", "Stream bytes encoded (once for all listeners).", "encoded_bytes_total"),
    ("generator_cpu_seconds_total", "counter", "CPU time of the station thread (engine, guard, archive, "
                                               "encoder).", "generator_cpu_seconds"),
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


def make_app(station: Station, broadcast: Broadcast) -> web.Application:
    settings = station.settings
    folder = resources.files("wavegen.serve") / "static"
    page = {route: ((folder / name).read_bytes(), ctype) for route, (name, ctype) in PAGE_FILES.items()}

    async def page_file(request: web.Request) -> web.Response:
        body, ctype = page[request.path]
        return web.Response(body=body, content_type=ctype, headers={"Cache-Control": "no-cache"})

    async def status_json(request: web.Request) -> web.Response:
        return web.json_response(status(station, broadcast), headers={"Cache-Control": "no-store"})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=metrics_text(status(station, broadcast)),
                            content_type="text/plain", charset="utf-8", headers={"Cache-Control": "no-store"})

    async def stream(request: web.Request) -> web.StreamResponse:
        if not broadcast.admit(settings.max_listeners):
            return web.Response(status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                                text=f"This stream has {settings.max_listeners} listeners, its limit; please try "
                                     f"again in a little while.\n")
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-cache, no-store",
                                               "X-Content-Type-Options": "nosniff"})
        try:
            sock = request.transport.get_extra_info("socket") if request.transport else None
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            await response.prepare(request)
            if request.method != "HEAD" and not await broadcast.feed(response.write):
                if request.transport is not None:
                    request.transport.abort()  # stalled: nothing more will reach it
        except ConnectionError:
            pass  # the listener went away
        finally:
            broadcast.leave()
        return response

    app = web.Application()
    for route in PAGE_FILES:
        app.router.add_get(route, page_file)
    app.router.add_get("/status", status_json)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/stream", stream)
    return app
