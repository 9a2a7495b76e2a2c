"""wavegen serve's limit per client: one address (an IPv6 /64) holds at most --max-listeners-per-client
listeners, so one client cannot take every place under --max-listeners and lock the others out.
A real server (the CLI) and raw sockets from two loopback addresses (127.0.0.1 and 127.0.0.2: two clients).
"""

from __future__ import annotations

import socket

import pytest

from test_serve import Server, _response_head, make_model
from wavegen.serve.app import client_key


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(make_model(tmp_path_factory.mktemp("clients") / "tiny"), "--no-guard", "--max-listeners", "4",
               "--max-listeners-per-client", "2", "--burst-seconds", "1", "--lag-seconds", "5")
    yield s
    assert s.stop() == 130, "".join(s.stderr)


def _connect(port: int, source: str, method: bytes = b"GET") -> tuple[socket.socket, int, dict, bytes]:
    """A request for /stream from ``source`` → (socket, status, headers, what came after them so far)."""
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(method + b" /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    data = sock.recv(4096)
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    code, headers = _response_head(data)
    body = data.split(b"\r\n\r\n", 1)[1]
    if code != 200 and method == b"GET":
        while len(body) < int(headers["Content-Length"]):
            body += sock.recv(4096)
    return sock, code, headers, body


def test_one_client_cannot_take_every_place(server):
    before = server.status()
    assert before["max_listeners_per_client"] == 2
    mine = [_connect(server.port, "127.0.0.1") for _ in range(2)]
    assert [m[1] for m in mine] == [200, 200]
    _, code, headers, body = _connect(server.port, "127.0.0.1")  # a third from the same address
    assert code == 429 and headers["Retry-After"] == "30"
    assert b"at most 2 listeners from one address (--max-listeners-per-client 2)" in body and b"127.0.0.1" in body
    assert _connect(server.port, "127.0.0.1", b"HEAD")[1:3] == (429, headers)  # a look: what a GET gets, not counted
    other = _connect(server.port, "127.0.0.2")  # another client still gets in: the stream is not full
    got = other[3]
    while b"OggS" not in got:  # the stream's first page (after the first chunk's size: chunked)
        got += other[0].recv(4096)
    assert other[1] == 200
    s = server.status()
    assert s["listeners"] == 3 and s["refused_per_client_total"] == before["refused_per_client_total"] + 1
    assert s["refused_total"] == before["refused_total"] + 1
    metrics = server.get("/metrics")[2].decode()
    assert "wavegen_serve_max_listeners_per_client 2.0" in metrics
    assert f"wavegen_serve_refused_per_client_total {float(s['refused_per_client_total'])}" in metrics
    mine[0][0].close()  # one of mine gone: its place is mine again
    server.wait_for(lambda s: s["listeners"] == 2, timeout=10)
    again = _connect(server.port, "127.0.0.1")
    assert again[1] == 200
    for sock in (mine[1][0], other[0], again[0]):
        sock.close()
    server.wait_for(lambda s: s["listeners"] == 0, timeout=10)
    assert "refused a listener from 127.0.0.1" in "".join(server.stderr)  # said once, with the option to change


def test_the_stream_full_is_still_503(server):
    socks = [_connect(server.port, f"127.0.0.{i}") for i in (3, 3, 4, 4)]
    assert [s[1] for s in socks] == [200] * 4
    _, code, _, body = _connect(server.port, "127.0.0.5")
    assert code == 503 and b"4 listeners, its limit" in body
    for s in socks:
        s[0].close()
    server.wait_for(lambda s: s["listeners"] == 0, timeout=10)


@pytest.mark.parametrize("remote, key", [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),  # one host picks any address in its /64
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
    ("::ffff:203.0.113.7", "203.0.113.7"),  # IPv4 on a dual-stack socket
    ("fe80::1%eth0", "fe80::/64"),
    (None, None),  # no address (a Unix socket): no limit
])
def test_client_key(remote, key):
    assert client_key(remote) == key


@pytest.mark.parametrize("host, limit", [("127.0.0.1", 0), ("::1", 0), ("localhost", 0), ("0.0.0.0", 4),
                                         ("::", 4), ("192.168.1.5", 4), ("radio.example.org", 4)])
def test_the_default_limit_is_off_on_loopback_where_a_proxy_is_every_listener(host, limit):
    from wavegen.serve.station import ServeSettings

    assert ServeSettings(host=host).max_listeners_per_client == limit
    assert ServeSettings(host=host, max_listeners_per_client=7).max_listeners_per_client == 7
