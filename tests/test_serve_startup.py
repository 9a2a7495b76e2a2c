"""wavegen serve's start-up: a stop asked for before the server listens (exit 130, as train and render),
and an archive of another broadcast refused before the model is timed. Real servers (the CLI), real
signals, each sent at a known point of the start-up.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_serve import ENV, START_TIMEOUT, Server, make_model, refused_here, serve_here


def test_sigterm_during_start_up_stops_without_ever_listening(tmp_path):
    """A supervisor that stops the server while it loads or times the model must not be told it listens:
    it was (a "listening:" line, a port opened, "playing ... Ctrl-C stops"), and stopped only then; or,
    the signal a moment earlier, it was killed by it (exit -15) instead of stopping as asked."""
    model = make_model(tmp_path / "tiny")
    proc = subprocess.Popen([sys.executable, "-m", "wavegen", "-v", "serve", str(model), "--port", "0",
                             "--allow-slow", "--no-guard"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)
    stderr: list[str] = []
    loaded = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            stderr.append(line)
            if "DEBUG: engine " in line:  # the model is loading; the timing comes next
                loaded.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert loaded.wait(START_TIMEOUT), "".join(stderr)
        proc.send_signal(signal.SIGTERM)  # the start-up check takes over a second: before it ends
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)  # the rest of its stderr
    stdout = proc.stdout.read()
    log = "".join(stderr)
    assert proc.returncode == 130, log  # stopped on request, as train and render say it
    assert "Traceback" not in log
    assert "listening:" not in stdout and "playing" not in log, (stdout, log)
    assert "stopped before the stream started" in log


# The CLI, waiting (a line on stdin) where it starts to import wavegen.serve (torch, seconds): the test signals it there
CHILD = """import sys
class Pause:
    def find_spec(self, name, path=None, target=None):
        if name == "wavegen.serve":
            sys.meta_path.remove(self)
            print("importing", name, flush=True)
            sys.stdin.readline()
        return None
sys.meta_path.insert(0, Pause())
from wavegen.cli import run
raise SystemExit(run())
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_serve_imports_stops_cleanly_in_one_line(tmp_path, signum):
    """A SIGTERM in the first second or two (torch importing, before serve's handlers were installed) killed
    the server by the signal (exit -15, 143 in a shell) with nothing said; a SIGINT there was a traceback of
    whatever imported. Now: exit 130, what it does said in one line, no model loaded, nothing written."""
    script, archive = tmp_path / "child.py", tmp_path / "archive"
    script.write_text(CHILD)
    child = subprocess.Popen([sys.executable, str(script), "serve", str(tmp_path / "no-model"), "--port", "0",
                              "--archive", str(archive)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert child.stdout.readline().strip() == "importing wavegen.serve"
        child.send_signal(signum)
        out, err = child.communicate("go\n", timeout=120)
    finally:
        child.kill()
    name = signal.Signals(signum).name
    assert child.returncode == 130, err
    assert "Traceback" not in err and "listening:" not in out
    assert f"{name}: stopped before the stream started" in err
    assert "no-model" not in err  # stopped before the model (which does not exist) was looked for
    assert not archive.exists()


@pytest.mark.slow
def test_an_archive_of_another_broadcast_is_refused_before_the_model_is_timed(tmp_path, caplog):
    """Another server's archive, or one of another seed or model, was refused only after the start-up
    timing (seconds of generation); now at once after the model loads, with the archive untouched. (The
    refused commands are played in this process, test_serve.serve_here: what is checked is their refusal.)"""
    import logging

    caplog.set_level(logging.INFO)  # the timing's line ("... real time on the numba backend") would be caught

    def refused(**settings) -> str:
        """``wavegen serve MODEL --no-guard --archive ARCHIVE`` with ``settings``, refused before it listens: → its
        error, a user's to fix (the CLI says it in one line, exit 2)."""
        caplog.clear()
        error = refused_here(model, guard=False, archive=str(archive), **settings)
        assert "\n" not in error, error
        assert "real time on the" not in caplog.text  # the timing's line
        return error

    model, archive = make_model(tmp_path / "tiny"), tmp_path / "archive"
    first = Server(model, "--no-guard", "--archive", str(archive))
    try:
        busy = refused()
    finally:
        assert first.stop() == 130, "".join(first.stderr)
    assert f"another wavegen serve archive is writing here (process {first.proc.pid} " in busy, busy
    before = {p.name: p.read_bytes() for p in archive.rglob("*") if p.is_file() and p.name != ".lock"}
    other = refused(seed=1)
    assert "seed=0" in other and "seed=1" in other, other
    assert {p.name: p.read_bytes() for p in archive.rglob("*") if p.is_file() and p.name != ".lock"} == before


# The CLI, paused (a line on stdin) as its start-up check begins to time the model: the test signals it there
PAUSED_AT_TIMING = """import sys
from wavegen.serve.station import Station
measure = Station.measure
def paused(self):
    print("timing", flush=True)
    sys.stdin.readline()
    return measure(self)
Station.measure = paused
from wavegen.cli import run
raise SystemExit(run())
"""


def _stopped_while_timing(tmp_path, model: Path, archive: Path, *args: str) -> str:
    """``wavegen serve MODEL --archive ARCHIVE ARGS``, SIGTERM'd while it times the model; → its stderr (exit
    130)."""
    script = tmp_path / "paused.py"
    script.write_text(PAUSED_AT_TIMING)
    child = subprocess.Popen([sys.executable, str(script), "serve", str(model), "--port", "0", "--allow-slow",
                              "--no-guard", "--archive", str(archive), *args], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert child.stdout.readline().strip() == "timing"
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate("go\n", timeout=120)
    finally:
        child.kill()
    assert child.returncode == 130, err
    assert "Traceback" not in err and "listening:" not in out
    assert err.count("SIGTERM: stopped before the stream started") == 1, err
    return err


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}


@pytest.mark.slow
def test_a_stop_during_the_timing_leaves_the_archive_as_it_was(tmp_path):
    """A stop while the model was timed went on to open the archive: a new one got its params.json and an
    empty part 0, bound to that seed and model though nothing was broadcast (another --seed was refused
    there after); an existing one was cut back and tidied. Now neither is opened: nothing written."""
    model, archive = make_model(tmp_path / "tiny"), tmp_path / "archive"
    _stopped_while_timing(tmp_path, model, archive)
    assert _files(archive) == {}  # no params.json, no part: the folder (and its lock file) alone
    # not bound to the command stopped: another seed begins it (played in this process) and archives a second of
    # audio and more, in snapshots: the existing archive the next stop must leave as it was
    first, _ = serve_here(model, lambda s: s["archive"]["snapshot_seconds"] >= 1.0, guard=False, archive=str(archive),
                          snapshot_seconds=1.0, seed=1)
    assert first["seed"] == 1
    (archive / ".state" / ".snapshot.npz.tmp999").write_bytes(b"partial")  # a killed server's: open() removes it
    before = _files(archive)
    assert "broadcast_00000.wav" in before and ".state/params.json" in before and ".state/snapshot.npz" in before
    _stopped_while_timing(tmp_path, model, archive, "--seed", "1")
    assert _files(archive) == before


@pytest.mark.slow
def test_a_failure_after_the_archive_opened_lets_it_go_in_process(tmp_path):
    """serve() opened the station (and its archive: lock, part writer) outside the try that stops it: a
    snapshot found damaged once the archive was open (its label) left the archive locked for the rest of the
    process, so a caller that fixed it or tried again in-process was told another server writes there."""
    import json

    import numpy as np

    from conftest import save_tiny_model
    from wavegen.folders import FolderLock
    from wavegen.serve import ServeError, ServeSettings, serve
    from wavegen.signals import StopSignals

    model = save_tiny_model(tmp_path / "cond", sample_rate=16000, dim=32, emb_size=8, labels=["rain", "bells"])
    archive = tmp_path / "archive"

    def play(stop=None) -> dict:
        settings = ServeSettings(port=0, archive=str(archive), label="rain", allow_slow=True, guard=False)
        return serve(str(model), settings, on_ready=None if stop is None else lambda url: stop.request(), stop=stop)

    play(StopSignals())  # stopped as soon as it plays: the archive's snapshot records label "rain"
    snapshot = archive / ".state" / "snapshot.npz"
    with np.load(snapshot) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes())
    assert meta["label"] == "rain"
    arrays["meta"] = np.frombuffer(json.dumps({**meta, "label": "thunder"}).encode(), dtype=np.uint8)
    np.savez(snapshot, **arrays)
    for _ in range(2):  # the second finds the archive free again, and the same damage
        with pytest.raises(ServeError, match=f"{snapshot} is damaged \\(its label: label 'thunder' is not one"):
            play()
    FolderLock(archive).acquire().release()  # not held by this process any more


@pytest.mark.parametrize("host, port, why", [("192.0.2.1", "0", "Cannot assign requested address"),
                                             ("no-such-host.invalid", "0", ""),
                                             ("127.0.0.1", None, "Address already in use")])
def test_an_address_that_cannot_be_listened_on_is_refused_with_the_way_on_that_fits(tmp_path, capsys, host, port,
                                                                                     why):
    """A --host that is not this machine's (an address of another, a name that does not resolve) was refused
    with "choose another --port (0 picks a free one) or --host", though --port was 0 and no port could help. Now
    it says what --host must be; a port in use says to choose another --port, and nothing of --host."""
    import socket

    from test_serve import _one_error_line

    from wavegen.cli import main

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = port or str(taken.getsockname()[1])
        assert main(["serve", str(tmp_path / "no-model"), "--host", host, "--port", port]) == 2
    said = _one_error_line(capsys)
    assert said.startswith(f"wavegen serve: error: cannot listen on {host}:{port}: {why}"), said
    if port == "0":
        assert "--port" not in said and "--host must be a name or address of this machine" in said, said
    else:
        assert said.endswith("; choose another --port (0 picks a free one)"), said


@pytest.mark.parametrize("host, said", [("::1", "cannot listen on ::1:0: "),
                                        ("localhost", "cannot listen on localhost:0 (its address ::1): ")])
def test_this_machines_ipv6_loopback_with_ipv6_off_is_not_said_another_machines(tmp_path, capsys, monkeypatch, host,
                                                                                said):
    """On a machine with IPv6 turned off (a container's usual lot) binding ::1 is refused with EADDRNOTAVAIL, as an
    address of another machine is: --host ::1, or localhost where /etc/hosts names ::1 for it too, was said "--host
    must be a name or address of this machine", which they are. Now the address refused is named and the way on
    is 127.0.0.1. (The kernel's refusal is stood in for: turning IPv6 off needs root.)"""
    import errno
    import os
    import socket

    from test_serve import _one_error_line

    from wavegen.cli import main

    bind, resolve = socket.socket.bind, socket.getaddrinfo

    def bind_without_ipv6(sock, address):
        if sock.family == socket.AF_INET6 and address[0] == "::1":
            raise OSError(errno.EADDRNOTAVAIL, os.strerror(errno.EADDRNOTAVAIL))
        return bind(sock, address)

    def resolve_localhost(name, *args, **kwargs):  # as glibc does with "::1 localhost" in /etc/hosts
        if name != "localhost":
            return resolve(name, *args, **kwargs)
        return [*resolve("127.0.0.1", *args, **kwargs), *resolve("::1", *args, **kwargs)]

    monkeypatch.setattr(socket.socket, "bind", bind_without_ipv6)
    monkeypatch.setattr(socket, "getaddrinfo", resolve_localhost)
    assert main(["serve", str(tmp_path / "no-model"), "--host", host, "--port", "0"]) == 2
    line = _one_error_line(capsys)
    assert line == f"wavegen serve: error: {said}{os.strerror(errno.EADDRNOTAVAIL)}; this machine has IPv6 turned " \
                   "off, so ::1 cannot be listened on: give --host 127.0.0.1", line
