"""wavegen serve's start-up: a stop asked for before the server listens. A real server (the CLI)
stopped by a real SIGTERM.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

from test_serve import ENV, START_TIMEOUT, make_model


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
    assert proc.returncode == 0, log
    assert "listening:" not in stdout and "playing" not in log, (stdout, log)
    assert "stopped before the stream started" in log
