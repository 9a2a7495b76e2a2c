"""wavegen serve's connections: ones that never finish a request are closed (each holds a file
descriptor; aiohttp's default keeps them an hour), while a listener streaming longer than that plays on.
A real server (the CLI) and raw sockets.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from test_serve import Server, make_model


def _closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


IDLE_SECONDS = 5.0  # --idle-seconds for the test: the default (15 s) checked the same way, a shorter wait


@pytest.mark.slow
def test_connections_without_a_request_are_closed_and_a_listener_plays_on(tmp_path):
    """Run with --idle-seconds 5: connections held 1 s later, closed after 5 s, while the listener
    streams on for longer than that."""
    server = Server(make_model(tmp_path / "tiny"), "--no-guard", "--idle-seconds", str(IDLE_SECONDS))
    try:
        fds = lambda: len(os.listdir(f"/proc/{server.proc.pid}/fd"))  # noqa: E731 - Linux
        listener = socket.create_connection(("127.0.0.1", server.port))
        listener.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        listener.settimeout(10)
        assert listener.recv(1)  # accepted and streaming: its descriptor is in the count below
        before = fds() if os.path.isdir("/proc/self/fd") else None
        silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
        half = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
        for sock in half:
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n")  # the blank line never comes
        between = socket.create_connection(("127.0.0.1", server.port))  # a request answered, then nothing
        between.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in between.recv(4096)
        time.sleep(1.0)
        if before is not None:
            assert fds() >= before + 11  # all of them held for now
        got, deadline = 0, time.monotonic() + IDLE_SECONDS + 10
        while time.monotonic() < deadline and not all(map(_closed_by_server, silent + half + [between])):
            got += len(listener.recv(65536))  # the listener reads on meanwhile
        assert all(map(_closed_by_server, silent + half + [between])), "idle connections held"
        start = got
        while got - start < 8000:  # and goes on getting the stream (~8 KB/s) after they were closed
            got += len(listener.recv(65536))
        assert not _closed_by_server(listener)
        if before is not None:
            assert fds() <= before
        assert server.status()["listeners"] == 1
        listener.close()  # not left to the server's stop, which would wait for it
    finally:
        assert server.stop() == 130, "".join(server.stderr)
