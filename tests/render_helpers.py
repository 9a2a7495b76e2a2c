"""What the render tests share: tiny models at 4 kHz, the expected audio computed without the
render, and how to start `wavegen render` as a real process.

Models are tiny SampleRNNs (conftest.save_tiny_model: random weights, or output layers set by
hand so that every sample is drawn i.i.d. from a chosen distribution), saved as model folders
at 4 kHz so seconds of audio cost little.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import save_tiny_model
from wavegen.audio import dequantize, float_to_int16, quantize, silence_code
from wavegen.checkpoint import load_model
from wavegen.generate import make_engine, sample_codes, uniforms
from wavegen.render import PCMWriter, RenderSettings, RenderStateError, encode_flac, load_snapshot, render
from wavegen.render import shard as render_shard

SR = 4000
Q = 256
SILENCE = silence_code(Q, "mu-law")
LOUD = int(quantize(np.array([0.05]), Q, "mu-law")[0])
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: threads only fight over 2 cores


def make_model(folder: Path, output_bias=None, labels=(), rnn_type="gru", seed=0) -> Path:
    """A tiny SampleRNN model folder at 4 kHz. ``output_bias [Q]``: zero the output weights and
    set this bias, so every sample is drawn i.i.d. from softmax(bias) whatever the state."""
    return save_tiny_model(folder, sample_rate=SR, seed=seed, output_bias=output_bias, dim=16, emb_size=8,
                           labels=list(labels), rnn_type=rnn_type)


def one_hot_bias(probabilities: dict[int, float]) -> np.ndarray:
    bias = np.full(Q, -1e4, dtype=np.float32)  # exp underflows: probability exactly 0
    for code, p in probabilities.items():
        bias[code] = np.log(p)
    return bias


MOSTLY_SILENT = {SILENCE: 0.9, LOUD: 0.1}  # 8-sample windows are all silent 43% of the time


QUICK_FLAGS = ["--seconds", "0.125", "--backend", "torch", "--no-guard", "--no-spectrogram"]


def run_with_step_5(model: Path, run: Path) -> Path:
    """A run whose best/ is ``model`` and whose checkpoint step_5 holds the same weights."""
    import json
    import shutil

    shutil.copytree(model, run / "best")
    shutil.copy(model / "config.json", run / "config.json")
    kept = run / "checkpoints" / "step_5"
    kept.mkdir(parents=True)
    shutil.copy(model / "model.safetensors", kept)
    (kept / "trainer_state.json").write_text(json.dumps({"step": 5}))
    return run


def render_cli(model, out, *extra) -> int:
    """``wavegen -q render MODEL --out OUT`` of a short unguarded torch render (QUICK_FLAGS) + ``extra``."""
    from wavegen.cli import main

    return main(["-q", "render", str(model), "--out", str(out), *QUICK_FLAGS, *map(str, extra)])


def settings(seconds, **kw) -> RenderSettings:
    kw.setdefault("backend", "torch")
    kw.setdefault("spectrogram", False)
    kw.setdefault("guard", False)
    return RenderSettings(seconds=seconds, **kw)


def direct_pcm(model_dir, streams, n, seed=0, temps=1.0, prime=None, label=None, backend="torch",
               precision="fp32") -> np.ndarray:
    """What a render must contain: the engine run directly, int16 [streams, n]."""
    model, _ = load_model(model_dir)
    engine = make_engine(model, streams, backend, precision=precision)
    engine.reset(prime_codes=prime, label_weights=label)
    codes = engine.generate(uniforms(seed, range(streams), 0, n), temps)
    return float_to_int16(dequantize(codes, Q, "mu-law"))


def read_pcm(path) -> np.ndarray:
    return sf.read(str(path), dtype="int16")[0]


def file_bytes(folder, streams, fmt="wav") -> list[bytes]:
    return [(Path(folder) / f"stream_{i:03d}.{fmt}").read_bytes() for i in range(streams)]


def expected_guarded(bias, streams, windows, width, attempts_max, seed=0):
    """The i.i.d. model's render, guard on (silence only can fail), computed from the uniforms alone:
    (int16 [S, T], events in the report's order)."""
    logits = torch.as_tensor(bias).expand(width, Q)
    temp = torch.ones(width)
    out, events = np.empty((streams, windows * width), dtype=np.int16), []
    for s in range(streams):
        for w in range(windows):
            for attempt in range(attempts_max + 1):
                u = torch.from_numpy(uniforms(seed, [s], w * width, width, attempt)[0])
                codes = sample_codes(logits, u, temp).numpy()
                if np.any(codes != SILENCE):
                    break
                events.append({"stream": s, "seconds": round(w * width / SR, 6), "kind": "silence",
                               "attempt": attempt})
            else:
                events.append({"stream": s, "seconds": round(w * width / SR, 6), "kind": "gave up",
                               "attempt": attempts_max, "detected": "silence"})
            out[s, w * width:(w + 1) * width] = float_to_int16(dequantize(codes, Q, "mu-law"))
    events.sort(key=lambda e: (e["seconds"], e["stream"], e["attempt"]))  # stable: "gave up" after its verdict
    return out, events


def stopped_render(model, out, s, windows: int) -> None:
    """A render of ``s`` stopped as by Ctrl-C in its window ``windows + 1``: OUT holds an unfinished
    render (its last snapshot at the start of that window) that a rerun resumes."""
    real = render_shard.Generator.generate
    calls = []

    def generate(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > windows:
            self.stop.request()
        return real(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(render_shard.Generator, "generate", generate)
        with pytest.raises(KeyboardInterrupt):
            render(model, out, s, progress=False)
    assert not (out / "render_report.json").exists()


def write_streams(folder: Path, pcm: np.ndarray, fmt: str) -> Path:
    """pcm [S, T] int16 → folder/stream_000.{fmt} ... through the render's own writers (the bytes a
    render of that audio must produce)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(pcm):
        path = folder / f"stream_{i:03d}.{fmt}"
        raw = path if fmt == "wav" else folder / f"stream_{i:03d}.pcm"
        w = PCMWriter(raw, SR, wav=fmt == "wav")
        w.write(row)
        w.close()
        if fmt == "flac":
            encode_flac(raw, path, SR)
    return folder


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "wavegen", "-q", "render", *map(str, args)]


def wait_for_snapshot(proc, snapshot: Path, min_written: int = 1, timeout=120.0) -> int:
    """Wait until the render has saved a snapshot of at least ``min_written`` samples; → its samples."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if snapshot.is_file():
            try:
                written = load_snapshot(snapshot)[1]
            except RenderStateError:  # replaced while being read
                written = 0
            if written >= min_written:
                return written
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no snapshot appeared")


# `wavegen render` as a real process that pauses at a chosen point (and writes SENTINEL when it gets
# there), so that a real signal can be sent exactly then: "guard" (the guard about to judge the last
# window), "write" (the last window written, before the final snapshot) or "encode" (a FLAC file's
# first bytes written to its temporary file).
PAUSE_RUNNER = r"""
import pathlib, sys, time
from wavegen.render import guard, writers
hook, sentinel, total, pause = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
paused = []

def pause_here():
    if not paused:
        paused.append(1)
        sentinel.write_text(hook)
        time.sleep(pause)

def wrap(cls, name, when):
    real = getattr(cls, name)
    def hooked(self, *args, **kwargs):
        if when(self, *args, before=True):
            pause_here()
        out = real(self, *args, **kwargs)
        if when(self, *args, before=False):
            pause_here()
        return out
    setattr(cls, name, hooked)

if hook == "guard":
    wrap(guard.Guard, "check", lambda self, engine, pos, codes, *rest, before: before and pos + codes.shape[1] >= total)
elif hook == "write":
    wrap(writers.StreamWriters, "write", lambda self, pcm, before: not before and self.writers[0].frames >= total)
elif hook == "encode":
    wrap(writers._KeptErrorFile, "write", lambda self, data, before: not before)
from wavegen.cli import main
sys.exit(main(["-q", "render", *sys.argv[5:]]))
"""


def paused_cli(hook: str, sentinel: Path, total: int, pause: float, *args) -> list[str]:
    """The command of `wavegen -q render ARGS` pausing ``pause`` seconds at ``hook`` (PAUSE_RUNNER) of a
    render of ``total`` samples per stream."""
    return [sys.executable, "-c", PAUSE_RUNNER, hook, str(sentinel), str(total), str(pause), *map(str, args)]


def wait_for_file(proc, path: Path, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)
