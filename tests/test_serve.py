"""wavegen serve: real servers on loopback (subprocesses of the CLI), real HTTP clients, real decoding.

The model is a tiny random SampleRNN at 16 kHz (~50x real time on the numba engine), saved as a
model folder; the stream it plays is checked against the same engine run directly, sample
position by sample position.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import save_tiny_model
from process_helpers import error_lines
from wavegen.audio import dequantize, float_to_int16
from wavegen.generate import make_engine, uniforms
from wavegen.serve.broadcast import Broadcast
from wavegen.serve.encoder import GRANULE_RATE, OggOpusEncoder, Page, split_pages

SR = 16000
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
START_TIMEOUT = 120  # a cold numba cache compiles the engine first


def make_model(folder: Path, sample_rate: int = SR, output_bias=None) -> Path:
    """A tiny SampleRNN model folder. ``output_bias [Q]``: zero the output weights and set this
    bias, so every sample is drawn from softmax(bias) whatever came before."""
    return save_tiny_model(folder, sample_rate=sample_rate, output_bias=output_bias, dim=32, emb_size=8)


def silent_model(folder: Path) -> Path:
    """A model that always draws the same code: a flat line the guard calls silence."""
    bias = np.full(256, -30.0, dtype=np.float32)
    bias[128] = 30.0
    return make_model(folder, output_bias=bias)


def reference_pcm(model_dir: Path, n: int, seed: int = 0) -> np.ndarray:
    """What the station must play without the guard: the engine run directly, int16 [n]."""
    from wavegen.checkpoint import load_model

    model, _ = load_model(model_dir)
    engine = make_engine(model, 1, "auto")
    engine.reset()
    codes = engine.generate(uniforms(seed, [0], 0, n), 1.0)[0]
    return float_to_int16(dequantize(codes, engine.q_levels, engine.spec["quantization"]))


class Server:
    """``wavegen serve MODEL --port 0 ...`` in a subprocess; ``url`` once it listens. ``entry``: what
    runs the CLI (``-m wavegen``, or ``-c CODE`` that calls ``wavegen.cli.main(sys.argv[1:])``)."""

    def __init__(self, model: Path, *args: str, cwd: Path | None = None, entry: tuple[str, ...] = ("-m", "wavegen")):
        # --allow-slow: a machine busy with other work must not make a test server refuse to start
        self.args = [sys.executable, *entry, "serve", str(model), "--port", "0", "--allow-slow", *args]
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                                     cwd=cwd)
        self.stderr: list[str] = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        line = self._readline(START_TIMEOUT)
        if not line.startswith("listening: "):
            self.stop()
            time.sleep(0.5)  # the rest of its stderr
            raise AssertionError(f"server did not start: {line!r}\n{''.join(self.stderr)}")
        self.url = line.split(" ", 1)[1].strip().rstrip("/")
        self.port = int(self.url.rsplit(":", 1)[1])

    def _readline(self, timeout: float) -> str:
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        return box[0] if box else ""

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, dict, bytes]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def status(self) -> dict:
        return json.loads(self.get("/status")[2])

    def wait_for(self, what, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.status()
            if what(s):
                return s
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting; last status {s}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def serve_here(target: Path, until=lambda status: True, checkpoint: str | None = None, timeout: float = 30.0,
               **settings) -> tuple[dict, dict]:
    """``wavegen serve TARGET --port 0 --allow-slow`` run in this process, for a test about what a server plays,
    archives or logs (caplog) rather than about its process: ``settings`` are ServeSettings' fields (``guard``:
    True unless given). Played until ``until(status)`` holds (/status polled over HTTP, as Server.wait_for does),
    then stopped as a SIGTERM stops it (its final snapshot taken). → (the first /status, the one that met
    ``until``)."""
    import urllib.request

    from wavegen.serve import ServeSettings, serve
    from wavegen.signals import StopSignals

    stop, seen, failed = StopSignals(), [], []

    def watch(url: str) -> None:
        try:
            deadline = time.monotonic() + timeout
            while True:
                with urllib.request.urlopen(url + "status", timeout=10) as r:
                    seen.append(json.loads(r.read()))
                if until(seen[-1]):
                    return
                assert time.monotonic() < deadline, f"timed out waiting; last status {seen[-1]}"
                time.sleep(0.1)
        except BaseException as err:  # said by the test, once the server stopped
            failed.append(err)
        finally:
            stop.request()

    def ready(url: str) -> None:
        threading.Thread(target=watch, args=(url,), daemon=True).start()

    serve(str(target), ServeSettings(port=0, allow_slow=True, **settings), checkpoint=checkpoint, on_ready=ready,
          stop=stop)
    if failed:
        raise failed[0]
    assert stop.requested, "it stopped by itself"
    return seen[0], seen[-1]


def refused_here(target: Path, checkpoint: str | None = None, **settings) -> str:
    """``wavegen serve TARGET --port 0 --allow-slow`` (``settings`` as serve_here's) run in this process, refused
    before it ever listens (the CLI: no "listening:" line, one error line, exit 2) → its error, a user's to fix
    (WavegenError). One that listens is stopped at once and fails the test, refused after that or not."""
    from wavegen.errors import WavegenError
    from wavegen.serve import ServeSettings, serve
    from wavegen.signals import StopSignals

    stop, listened = StopSignals(), []

    def ready(url: str) -> None:
        listened.append(url)
        stop.request()

    try:
        serve(str(target), ServeSettings(port=0, allow_slow=True, **settings), checkpoint=checkpoint, on_ready=ready,
              stop=stop)
    except WavegenError as err:
        assert not listened, f"it listened ({listened[0]}) before it refused: {err}"
        return str(err)
    raise AssertionError(f"it started (listening: {listened}), not refused")


# ----- clients ------------------------------------------------------------------------------------

async def listen(port: int, audio_seconds: float, timeout: float = 40.0) -> list[tuple[float, bytes]]:
    """Read /stream until ``audio_seconds`` of audio pages arrived → [(arrival time, page bytes)]."""
    import aiohttp

    pages, buffer, first = [], bytearray(), None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        async with session.get(f"http://127.0.0.1:{port}/stream") as response:
            assert response.status == 200 and response.headers["Content-Type"] == "audio/ogg"
            async for chunk in response.content.iter_any():
                buffer += chunk
                now = time.monotonic()
                for data, _, granule, _ in split_pages(buffer):
                    pages.append((now, data))
                    if granule > 0:
                        first = granule if first is None else first
                        if (granule - first) / GRANULE_RATE >= audio_seconds:
                            return pages
    raise AssertionError(f"the stream ended after {len(pages)} pages")


def best_offset(probe: np.ndarray, x: np.ndarray, lo: int, hi: int) -> int:
    """The offset o in [lo, hi) where x[o:o + len(probe)] matches probe best (FFT cross-correlation)."""
    lo, hi = max(lo, 0), min(hi, len(x) - len(probe) + 1)
    segment = x[lo:hi + len(probe) - 1]
    n = 1 << int(np.ceil(np.log2(len(segment) + len(probe))))
    corr = np.fft.irfft(np.fft.rfft(segment, n) * np.conj(np.fft.rfft(probe, n)), n)[:hi - lo]
    return lo + int(np.argmax(corr))


def _granule(page: bytes) -> int:
    return int.from_bytes(page[6:14], "little", signed=True)


def _seq(page: bytes) -> int:
    return int.from_bytes(page[18:22], "little")


def check_continuous(pages: list[tuple[float, bytes]], reference: np.ndarray) -> np.ndarray:
    """A listener's pages: header, then consecutive audio pages that decode, at the model's rate, to a
    contiguous stretch of ``reference`` (int16). → the decoded audio."""
    datas = [d for _, d in pages]
    assert datas[0][28:36] == b"OpusHead" and b"OpusTags" in datas[1][:64]
    audio = datas[2:]
    seqs = [_seq(d) for d in audio]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"pages missing: {seqs}"
    serials = {d[14:18] for d in datas}
    assert len(serials) == 1, "one Ogg stream"
    decoded, rate = sf.read(io.BytesIO(b"".join(datas)), dtype="float32")
    assert rate == SR
    span = (_granule(audio[-1]) - _granule(audio[0])) / GRANULE_RATE
    assert 0.5 < len(decoded) / SR - span <= 1.05  # and the first page's own second
    # where in the broadcast it starts: the best match within the first page's second
    x = reference.astype(np.float32) / 32768
    first_end = _granule(audio[0]) // 3
    skip = SR // 10  # Opus needs a moment after a join
    probe = decoded[skip:skip + SR // 2]
    offset = best_offset(probe, x, first_end - 2 * SR, first_end + SR // 2) - skip
    # every half second after that continues the reference exactly where it should (Opus is lossy:
    # correlation, not equality; a skipped or repeated page would drop it to ~0)
    half = SR // 2
    for k in range(skip, len(decoded) - half, half):
        a, b = decoded[k:k + half], x[offset + k: offset + k + half]
        corr = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))
        assert corr > 0.6, f"audio at {k / SR:.1f} s of this listener does not continue the broadcast ({corr:.2f})"
    return decoded


def lateness(pages: list[tuple[float, bytes]]) -> float:
    """How late any page that came after the first burst was against real time, at most: the spread
    of (arrival time - broadcast time) over those pages (on-time pages all share one value)."""
    audio = [(t, _granule(d) / GRANULE_RATE) for t, d in pages[2:]]
    live = [t - g for t, g in audio if t > audio[0][0] + 0.1]
    return max(live) - min(live)


# ----- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def server(model):
    s = Server(model, "--no-guard", "--burst-seconds", "2", "--lag-seconds", "10", "--max-listeners", "30",
               "--stall-seconds", "3", "--max-listeners-per-client", "0")  # its 21 listeners share an address
    yield s
    assert s.stop() == 130, "".join(s.stderr)  # stopped on request


# ----- the stream ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_listeners_get_continuous_live_audio_and_one_encode_serves_all(server, model):
    server.wait_for(lambda s: s["position_seconds"] > 2.5)

    async def phase(n: int, seconds: float, stalled: bool):
        before = server.status()
        sock = None
        if stalled:  # connects, asks for the stream, never reads
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        results = await asyncio.gather(*(listen(server.port, seconds) for _ in range(n)))
        during = await asyncio.to_thread(server.status)
        if sock is not None:
            sock.close()
        return before, during, results

    before1, after1, (one,) = asyncio.run(phase(1, 10.0, stalled=False))
    before2, during2, many = asyncio.run(phase(20, 5.0, stalled=True))
    assert during2["listeners_peak"] >= 21  # the 20 and the stalled one

    n = int(max(_granule(d) for c in [one, *many] for _, d in c) / 3) + SR
    reference = reference_pcm(model, n)
    for client in [one, *many]:
        decoded = check_continuous(client, reference)
        assert len(decoded) >= (10.0 if client is one else 5.0) * SR
        # after the burst, pages come at real time, the stalled listener notwithstanding
        assert lateness(client) < 0.5
    # one encode for all: every listener got the very same bytes for the same page
    by_seq: dict[int, bytes] = {}
    for client in many:
        for _, data in client[2:]:
            assert by_seq.setdefault(_seq(data), data) == data
    # and the station's CPU per second of audio does not grow with the listeners
    def cpu_per_second(a, b):
        cpu = b["generator_cpu_seconds"] - a["generator_cpu_seconds"]
        return cpu / (b["rendered_seconds"] - a["rendered_seconds"])
    one_listener = cpu_per_second(before1, after1)
    twenty = cpu_per_second(before2, during2)
    assert twenty < 1.5 * one_listener + 0.01, (one_listener, twenty)
    sent = during2["bytes_sent_total"] - before2["bytes_sent_total"]
    assert sent >= 20 * 5 * (during2["encoded_bytes_total"] / during2["rendered_seconds"])


def _not_json(constant: str):
    raise AssertionError(f"/status holds {constant}, which is not JSON")


def test_status_metrics_page_and_nothing_else(server):
    # run alone, the station may not have started yet, nor played its first window (position 0 until then)
    server.wait_for(lambda s: s["buffered_seconds"] > 0 and s["position_seconds"] > 0)
    s = json.loads(server.get("/status")[2], parse_constant=_not_json)
    for key in ("model", "preset", "label", "seed", "position_seconds", "realtime_factor", "buffered_seconds",
                "listeners", "max_listeners", "guard"):
        assert key in s
    assert s["model"] == "tiny" and s["preset"] == "samplernn-tiny" and s["sample_rate"] == SR
    assert s["realtime_factor"] > 1 and 0 < s["buffered_seconds"] <= 4 + 1 + 0.5
    assert s["max_listeners"] == 30
    code, headers, body = server.get("/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    values = {}
    for line in body.decode().splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values["wavegen_serve_max_listeners"] == 30 and values["wavegen_serve_position_seconds"] > 0
    assert values["wavegen_serve_realtime_factor"] > 1
    code, headers, body = server.get("/")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert b"<audio" in body and b"/player.js" in body and b"<canvas" in body
    # its icon is in the page: a browser asks for no /favicon.ico (a 404 in the log at every visit)
    assert b'<link rel="icon" href="data:,">' in body
    assert server.get("/player.js")[0] == 200 and server.get("/style.css")[0] == 200
    for path in ("/static/index.html", "/etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2fsetup.py", "/player.js/x"):
        assert server.get(path)[0] == 404, path


class RawListener(threading.Thread):
    """A /stream client on a raw socket with a small receive buffer (so TCP shows its reading in small
    steps) that reads ``rate`` bytes per second, in small reads, or (rate 0) never."""

    def __init__(self, port: int, rate: float):
        super().__init__(daemon=True)
        self.rate, self.got, self.ended, self.longest_wait, self.done = rate, 0, None, 0.0, threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        self.sock.settimeout(15)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")

    def run(self) -> None:
        start = last = time.monotonic()
        while not self.done.is_set() and self.rate > 0 and self.ended is None:
            want = int(self.rate * (time.monotonic() - start)) - self.got
            if want > 0:
                try:
                    data = self.sock.recv(min(want, 512))
                    self.got, self.ended = self.got + len(data), None if data else "EOF"
                except OSError as err:
                    self.ended = repr(err)
                self.longest_wait, last = max(self.longest_wait, time.monotonic() - last), time.monotonic()
            time.sleep(0.05)

    def closed_by_server(self) -> bool:
        """(For one that never read) the server closed or reset it: the rest of its data, then the end."""
        self.sock.settimeout(5)
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionError:
            pass
        except socket.timeout:
            return False
        return True


@pytest.mark.slow
def test_a_slow_listener_skips_ahead_and_only_a_stalled_one_is_dropped(model):
    """One listener reads 1 KB/s, well under the stream's ~8 KB/s; another never reads. The slow one
    falls --lag-seconds behind and skips to the live edge (and plays on), however long its waits for
    room on its connection; the one that takes nothing is dropped."""
    s = Server(model, "--no-guard", "--burst-seconds", "0.5", "--lag-seconds", "1", "--stall-seconds", "3",
               "--buffer-seconds", "1")
    try:
        slow, stalled = RawListener(s.port, 1000), RawListener(s.port, 0)
        slow.start()
        state = s.wait_for(lambda st: st["skips_total"] >= 1 and st["dropped_total"] >= 1, timeout=20)
        assert state["dropped_total"] == 1 and state["listeners"] == 1, state
        got = slow.got
        time.sleep(1.0)
        assert slow.ended is None and slow.got > got, "the slow listener plays on after its skip"
        assert slow.longest_wait < 1.5  # it kept reading all along
        assert stalled.closed_by_server()
        slow.done.set()
    finally:
        assert s.stop() == 130, "".join(s.stderr)  # stopped on request
    log = "".join(s.stderr)
    assert "skipped ahead to it" in log and log.count("took no data for") == 1


def test_malformed_requests_are_logged_in_one_line_each(server):
    bad = [b"GET /stream HTTP/9.9\r\n\r\n", b"GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
           b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8200 + b"\r\n\r\n"]
    before = len(server.stderr)
    for request in bad:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(request)
            assert sock.recv(4096).split(b"\r\n")[0] in (b"HTTP/1.0 400 Bad Request", b"HTTP/1.1 400 Bad Request")
    time.sleep(0.5)  # its log lines
    lines = server.stderr[before:]
    assert sum("a malformed HTTP request from 127.0.0.1" in line for line in lines) == 3, lines
    assert not any("Traceback" in line or "Error handling request" in line for line in lines), lines
    assert server.status()["listeners"] == 0  # and the server serves on


def test_errors_of_our_own_handlers_keep_their_traceback(caplog):
    from aiohttp.http_exceptions import BadStatusLine

    from wavegen.serve.app import http_logger

    caplog.set_level(logging.INFO)
    for exc in (BadStatusLine("HTTP/9.9"), RuntimeError("a bug of ours")):  # as aiohttp logs them
        http_logger().error("Error handling request from %s", "127.0.0.1", exc_info=(type(exc), exc, None))
    bad, ours = caplog.records[-2:]
    assert bad.levelno == logging.INFO and bad.exc_info is None and "\n" not in bad.getMessage()
    assert ours.levelno == logging.ERROR and ours.exc_info[0] is RuntimeError


@pytest.mark.slow
def test_a_stop_on_request_exits_130_as_train_and_render_do(model):
    """SIGINT (Ctrl-C) or SIGTERM stopped a playing server with exit 0, which a supervisor could not tell from
    an end nobody asked for; train and render exit 130 when a signal stops them, and so does serve now."""
    s = Server(model, "--no-guard")
    assert s.stop(signal.SIGINT) == 130, "".join(s.stderr)
    time.sleep(0.2)  # the rest of its stderr
    log = "".join(s.stderr)
    assert "SIGINT: stopping the stream" in log and "Traceback" not in log


# ----- the cap and the guard: a model stuck in silence ----------------------------------------------

@pytest.fixture(scope="module")
def silent_server(tmp_path_factory):
    folder = silent_model(tmp_path_factory.mktemp("silent") / "silent")
    s = Server(folder, "--max-listeners", "2", "--guard-seconds", "0.5", "--guard-attempts", "1",
               "--burst-seconds", "1", "--lag-seconds", "5")
    yield s
    assert s.stop() == 130, "".join(s.stderr)  # stopped on request


def _response_head(data: bytes) -> tuple[int, dict[str, str]]:
    """A raw HTTP response's start → (status, headers but Date and Connection: they vary by request)."""
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers.pop("Date", None)
    headers.pop("Connection", None)
    return int(lines[0].split(" ")[1]), headers


def test_listener_cap_refuses_politely_and_frees_slots(silent_server):
    """A HEAD of /stream is answered as a GET would be then (RFC 9110: the same status and headers, no
    body), 200 while there is room and 503 at the cap, without being a listener or a refused one."""
    def connect():
        sock = socket.create_connection(("127.0.0.1", silent_server.port))
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        data = sock.recv(4096)
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        return sock, _response_head(data)

    def request(method: bytes) -> tuple[int, dict[str, str], bytes]:
        with socket.create_connection(("127.0.0.1", silent_server.port), timeout=10) as sock:
            sock.sendall(method + b" /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        return (*_response_head(data), data.split(b"\r\n\r\n", 1)[1])

    before = silent_server.status()
    code, head_free, body = request(b"HEAD")  # a look at the stream, not a listener: counted nowhere
    assert code == 200 and body == b""
    (a, (code_a, get_free)), (b, (code_b, _)) = connect(), connect()
    assert code_a == code_b == 200 and get_free["Content-Type"] == "audio/ogg"
    assert head_free == {k: v for k, v in get_free.items() if k != "Transfer-Encoding"}  # a HEAD has no body to frame
    code, get_full, body = request(b"GET")
    assert code == 503 and get_full["Retry-After"] == "30" and b"limit" in body
    assert int(get_full["Content-Length"]) == len(body)
    assert request(b"HEAD") == (503, get_full, b"")  # what a GET gets now, but not a refused listener
    s = silent_server.status()
    assert s["refused_total"] == 1 and s["listeners_total"] == before["listeners_total"] + 2
    a.close()
    silent_server.wait_for(lambda s: s["listeners"] == 1, timeout=10)  # noticed at the next page
    assert request(b"HEAD")[:2] == (200, head_free)
    c, (code_c, _) = connect()
    assert code_c == 200
    b.close()
    c.close()
    assert silent_server.status()["listeners_total"] == before["listeners_total"] + 3


def test_guard_runs_on_the_stream(silent_server):
    s = silent_server.wait_for(lambda s: s["guard"]["counts"].get("gave up", 0) >= 2)
    assert s["guard"]["enabled"] and s["guard"]["counts"]["silence"] >= 4  # found, redrawn, found again
    events = s["guard"]["events"]
    gave_up = [i for i, e in enumerate(events) if e["kind"] == "gave up"]
    for i in gave_up[1:]:  # each window: found, redrawn once, found again, kept
        window = events[i - 2:i + 1]
        assert [(e["kind"], e["attempt"]) for e in window] == [("silence", 0), ("silence", 1), ("gave up", 1)]
        assert len({e["seconds"] for e in window}) == 1 and window[2]["detected"] == "silence"
    metrics = silent_server.get("/metrics")[2].decode()
    assert 'wavegen_serve_guard_events_total{kind="silence"}' in metrics
    log = "".join(silent_server.stderr)  # --guard-attempts 1: one redraw a window, then the giving up
    assert "silence; redraw 1" in log and "redraw 2" not in log and "still silence after 1 redraw;" in log


def test_the_station_guards_with_the_models_album_profile(model, tmp_path):
    """A model folder with album.json: the live stream's guard judges by the album (as a render
    does), records it in its parameters; without one, the fixed thresholds."""
    from wavegen.checkpoint import load_model, save_model
    from wavegen.render.album import ALBUM_FILE, album_profile
    from wavegen.render.guard import GuardCriteria
    from wavegen.serve import ServeSettings, Station

    t = np.arange(2 * SR) / SR
    tones = [0.3 * np.sin(2 * np.pi * f * t) for f in (220, 330, 440, 550)]
    profile = album_profile(tones, SR)
    net, config = load_model(model)
    with_album = save_model(net, config, tmp_path / "with_album", {ALBUM_FILE: json.dumps(profile)})
    plain = Station(str(model), ServeSettings())
    by_album = Station(str(with_album), ServeSettings())
    assert plain.guard_criteria == GuardCriteria() and "album_profile" not in plain.params["guard"]
    assert by_album.guard_criteria.album_profile == str(with_album / ALBUM_FILE)
    assert by_album.params["guard"]["album_profile"] == str(with_album / ALBUM_FILE)
    assert by_album.guard_criteria.noise_flatness < 0.5 < plain.guard_criteria.noise_flatness  # a tone album's line


# ----- refusals -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_station_that_falls_behind_real_time_says_so_once(tmp_path):
    """The start-up check times generation alone; a model the guard redraws window after window
    (here: stuck in silence, 40 redraws a window) passes it, then plays slower than real time. The
    log says so, once (not every window)."""
    folder = silent_model(tmp_path / "silent")
    s = Server(folder, "--guard-seconds", "0.5", "--guard-attempts", "40", "--burst-seconds", "1",
               "--lag-seconds", "5")
    behind = lambda: [line for line in s.stderr if "falling behind real time" in line]  # noqa: E731
    try:
        # waited for by what happens, not for a set time: on a busy machine a window of 41 draws takes
        # seconds, and the first late one can come after more than 30 s
        late = s.wait_for(lambda state: state["delay_seconds"] > 0.5, timeout=START_TIMEOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not behind():
            time.sleep(0.2)
        # a later window, late too: the delay grows again, with no second warning
        state = s.wait_for(lambda state: state["delay_seconds"] > late["delay_seconds"] + 0.1, timeout=START_TIMEOUT)
    finally:
        assert s.stop() == 130, "".join(s.stderr)  # stopped on request
    warnings = behind()
    assert len(warnings) == 1, "".join(s.stderr[-20:])
    # slower than real time with the redraws, or (a fast machine) faster but bunched: the redraws are why
    assert re.search(r"with the guard's redraws \(\d+ in them|the guard's \d+ redraws come bunched", warnings[0])
    assert "growing delay" in warnings[0] and "fewer --guard-attempts" in warnings[0]
    assert state["slow"] and state["delay_seconds"] > 0.5 and state["realtime_factor"] < 1


def _one_error_line(capsys) -> str:
    lines = error_lines(capsys.readouterr().err, "serve")
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("flag, value, message", [
    ("--seed", "-5", "must be a whole number from 0 to 18446744073709551615"),
    ("--temperature", "inf", "every temperature must be a positive number"),
    ("--temperature", "nan", "every temperature must be a positive number"),
    ("--temperature", "1e+39", "every temperature must lie within float32's range, the engines' (1e+39 is not)"),
    ("--guard-seconds", "inf", "must be a finite number of seconds above zero"),
    ("--archive-part-seconds", "inf", "must be a finite number of seconds above zero"),
    ("--archive-part-seconds", "1e-09", "must be at least 1 s (each part is a WAV file of its own)"),
    ("--archive-part-seconds", "0.5", "must be at least 1 s (each part is a WAV file of its own)"),
    ("--snapshot-seconds", "nan", "must be a finite number of seconds above zero"),
    ("--buffer-seconds", "inf", "must be a finite number of seconds above zero"),
    ("--stall-seconds", "inf", "must be a finite number of seconds above zero"),
    ("--lag-seconds", "inf", "must be a finite number of seconds above zero"),
    ("--idle-seconds", "0.0", "must be a finite number of seconds above zero"),
    ("--idle-seconds", "-3.0", "must be a finite number of seconds above zero"),
    ("--idle-seconds", "nan", "must be a finite number of seconds above zero"),
    ("--idle-seconds", "0.01", "must be at least 1 s (a connection is closed that long after it opens unless its "
     "request has come)"),
    ("--burst-seconds", "inf", "must be a finite number of seconds, 0 or more"),
    ("--max-listeners-per-client", "-1", "must be 0 (no limit) or more"),
    ("--archive-keep-parts", "-2", "must be 0 (keep all) or more"),
    ("--pitch-sync", "1", "must be a number from 0 up to (not including) 1 (0: off)"),  # render's words
    ("--pitch-sync", "-0.1", "must be a number from 0 up to (not including) 1 (0: off)"),
    ("--pitch-sync", "nan", "must be a number from 0 up to (not including) 1 (0: off)"),
    ("--threads", "0", "need at least one"),
])
def test_settings_that_cannot_work_are_refused_in_one_line_before_the_model_loads(tmp_path, capsys, flag, value,
                                                                                  message):
    from wavegen.cli import main

    # no model there: the refusal comes before anything looks for one
    assert main(["serve", str(tmp_path / "no-model"), "--port", "0", flag, value]) == 2
    assert f"{flag} {value}: {message}" in _one_error_line(capsys)


def cli_station(model: Path, monkeypatch, *args: str) -> tuple[int, dict]:
    """``wavegen serve MODEL --port 0 --allow-slow ARGS`` run in this process (wavegen.cli.main) until its station's
    thread has made one window, then stopped by the station → (exit code, what that thread saw: "threads", torch's
    thread count, and "station")."""
    import torch

    from wavegen.cli import main
    from wavegen.serve.station import Station

    seen, made = {}, Station._next_window

    def next_window(self, state):
        pages = made(self, state)
        seen.update(threads=torch.get_num_threads(), station=self)
        self._stop.set()
        return pages

    monkeypatch.setattr(Station, "_next_window", next_window)
    return main(["serve", str(model), "--port", "0", "--allow-slow", *args]), seen


def test_threads_sets_the_engines_torch_threads(model, monkeypatch):
    """--threads N, as render's: the station's engine runs on N torch threads (serve had no --threads)."""
    import torch

    before = torch.get_num_threads()
    try:
        code, seen = cli_station(model, monkeypatch, "--no-guard", "--threads", str(before + 1))
        assert code == 0 and seen["threads"] == before + 1
    finally:
        torch.set_num_threads(before)


def test_a_port_in_use_is_refused_before_the_model_loads(tmp_path, capsys):
    from wavegen.cli import main

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", str(tmp_path / "no-model"), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}: " in _one_error_line(capsys)


def test_an_archive_folder_that_cannot_be_made_is_refused_before_the_model_loads(model, tmp_path, capsys,
                                                                                     monkeypatch):
    from wavegen.cli import main
    from wavegen.serve import station

    def loaded(ref):
        raise AssertionError("the model loaded before the archive folder was checked")

    monkeypatch.setattr(station, "_load_model", loaded)
    (tmp_path / "taken").write_text("a file where the archive's parent goes")
    archive = tmp_path / "taken" / "archive"
    assert main(["serve", str(model), "--port", "0", "--archive", str(archive)]) == 2
    assert f"{tmp_path / 'taken'} is a file, not a folder: cannot create the --archive folder {archive}" \
        in _one_error_line(capsys)


def test_pages_published_after_the_server_loop_closed_are_dropped():
    """A second Ctrl-C closes the server's loop while the station takes its final snapshot and says
    it stopped: its last publish must not raise in the station's thread."""
    from wavegen.serve import _publisher

    loop = asyncio.new_event_loop()
    encoder = OggOpusEncoder(SR)
    broadcast = Broadcast(encoder.header, 0.0, burst_seconds=1.0, lag_seconds=5.0, stall_seconds=5.0)
    publish = _publisher(loop, encoder, broadcast)
    page = Page(b"p", 0.0, 1.0, True)
    publish([page])
    loop.run_until_complete(asyncio.sleep(0))
    assert [p for p, _ in broadcast.pending] == [page]
    loop.close()
    publish([Page(b"q", 1.0, 2.0, True)])
    publish(None)
    assert [p for p, _ in broadcast.pending] == [page]


def test_a_model_too_slow_for_real_time_is_refused(model):
    from wavegen.errors import WavegenError
    from wavegen.serve import ServeSettings, Station

    station = Station(str(model), ServeSettings(backend="torch"))  # ~0.2x real time at 16 kHz
    # on a busy machine the message adds what it would do with a CPU to itself
    with pytest.raises(WavegenError, match=r"x real time here \(torch backend, the best of 5 timings(, [0-9.e-]+x "
                                           r"with a CPU to itself)?\); a live stream needs at least 1.2x.*"
                                           r"--allow-slow"):
        station.open()


def test_a_slow_station_delays_the_broadcast_and_says_so():
    """The pacer with pages that come late (--allow-slow): the live edge waits, the delay grows."""
    async def run():
        b = Broadcast(b"HEAD", 0.0, burst_seconds=1.0, lag_seconds=5.0, stall_seconds=5.0)
        pacer = asyncio.create_task(b.pace())
        starts = []
        for k in range(4):  # a page of 0.2 s of audio every 0.4 s: half real time
            b.add_pages(b"HEAD", [Page(b"p%d" % k, 0.2 * k, 0.2 * (k + 1), True)])
            await asyncio.sleep(0.4)
            starts.append(b.live_seconds())
        b.close()
        pacer.cancel()
        return b, starts

    b, starts = asyncio.run(run())
    assert [p.seq for p in b.ring] == [0, 1, 2, 3]
    assert 0.45 < b.delay_seconds < 0.75  # three pages, each 0.2 s late
    assert all(later - earlier < 0.3 for earlier, later in zip(starts, starts[1:]))  # the edge waited


# ----- the encoder --------------------------------------------------------------------------------

def test_encoder_pages_time_the_stream_and_a_late_join_decodes():
    """A rate Opus cannot code (22.05 kHz) is resampled to 48 kHz; pages are about a second each."""
    rate = 22050
    t = np.arange(6 * rate) / rate
    noise = np.random.default_rng(0).standard_normal(len(t))
    x = float_to_int16(0.3 * np.convolve(noise, np.ones(8) / 8, "same"))  # no period to match twice
    encoder = OggOpusEncoder(rate, start_seconds=100.0)
    pages = []
    for i in range(0, len(x), 4410):
        pages += encoder.encode(x[i:i + 4410])
    pages += encoder.close()
    assert encoder.header[:4] == b"OggS" and b"OpusHead" in encoder.header
    assert pages[0].start_seconds == 100.0 and abs(pages[-1].end_seconds - 106.0) < 0.03
    assert all(a.end_seconds == b.start_seconds for a, b in zip(pages, pages[1:]))
    assert all(0.5 < p.end_seconds - p.start_seconds <= 1.05 for p in pages[:-2]) and all(p.joinable for p in pages)
    late = pages[2:]
    decoded, sr = sf.read(io.BytesIO(encoder.header + b"".join(p.data for p in late)), dtype="float32")
    assert sr == 48000
    assert abs(len(decoded) / sr - (late[-1].end_seconds - late[0].start_seconds)) < 0.05
    # the decoded audio is the source from the page's start on (after Opus's pre-skip, 312 samples)
    ref = np.interp(np.arange(7 * sr) / sr, t, x.astype(np.float32) / 32768)
    skip = sr // 10
    offset = best_offset(decoded[skip:skip + sr // 2], ref, 0, 5 * sr) - skip
    assert abs(offset - ((late[0].start_seconds - 100.0) * sr + 312)) < sr / 1000
    assert np.corrcoef(decoded[skip:], ref[offset + skip:offset + len(decoded)])[0, 1] > 0.9
