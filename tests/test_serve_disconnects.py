"""wavegen serve's listeners that go away in the middle of a page: reset (a closed tab, a dropped network) or
shut down; the server frees their places at once, logs no error, and the listener that stays plays on.
A real server (the CLI) and raw sockets."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from test_serve import Server, make_model


def _listener(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(10)
    return sock


@pytest.mark.slow
def test_listeners_gone_mid_page_free_their_places_and_the_one_that_stays_plays_on(tmp_path):
    server = Server(make_model(tmp_path / "tiny"), "--no-guard")
    try:
        staying = _listener(server.port)
        leaving = [_listener(server.port) for _ in range(4)]
        for sock in leaving:
            assert len(sock.recv(3000)) > 0  # mid-burst: the rest of its pages still to come
        assert server.wait_for(lambda s: s["listeners"] == 5)["listeners"] == 5
        for i, sock in enumerate(leaving):
            if i % 2:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset at close
            else:
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        got, deadline = 0, time.monotonic() + 20
        while server.status()["listeners"] > 1 and time.monotonic() < deadline:
            got += len(staying.recv(65536))  # reads on meanwhile
        assert server.status()["listeners"] == 1
        start = got
        while got - start < 8000:  # and goes on getting the stream (~8 KB/s)
            got += len(staying.recv(65536))
        staying.close()
    finally:
        assert server.stop() == 130, "".join(server.stderr)
    logged = "".join(server.stderr)
    assert "Traceback" not in logged and "error" not in logged.lower(), logged
