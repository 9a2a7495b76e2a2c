"""Shared test helpers: tests make their own audio in tmp_path; tiny models; the gpu marker.

Fixtures return plain functions (factory fixtures), so a test asks for `make_tone` and calls
it as often as it needs; plain helpers are imported (`from conftest import tiny_samplernn`).
Tests marked `gpu` skip themselves where torch sees no CUDA device.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest


def write_audio_file(path, x, sample_rate, format=None, subtype=None) -> Path:
    """Write float x [T] or [T, C] with soundfile (format/subtype as soundfile names them)."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(x, dtype=np.float32), sample_rate, format=format, subtype=subtype)
    return path


def tone(seconds, sample_rate, freq=440.0, channels=1, amplitude=0.5) -> np.ndarray:
    """A sine: float32 [round(seconds * sample_rate), channels], the same in every channel."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    x = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1)


def write_tone(path, seconds, sample_rate, freq=440.0, channels=1, subtype=None, format=None,
               amplitude=0.5) -> np.ndarray:
    """Write tone(...) to path; returns the float32 [T, channels] that was written."""
    x = tone(seconds, sample_rate, freq, channels, amplitude)
    write_audio_file(path, x, sample_rate, format=format, subtype=subtype)
    return x


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One torch thread for the whole suite: the tests run tiny models, whose many tiny ops on a
    busy 2-core machine run several times slower on two threads (up to ~70x for the torch engine,
    measured), never faster. Subprocesses get OMP_NUM_THREADS=1 where they start them."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def numba_threads_kept():
    """A command run in the test's process with --threads N (wavegen.cli.main, train's or render's settings) sets
    numba's thread count for the whole worker: put back after each test, so later tests run numba with their own.
    (Where numba was first imported by the test: its default, numba.config.NUMBA_NUM_THREADS.)"""
    numba = sys.modules.get("numba")
    before = numba.get_num_threads() if numba is not None else None
    yield
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.set_num_threads(before if before is not None else numba.config.NUMBA_NUM_THREADS)


@pytest.fixture
def make_tone():
    """make_tone(path, seconds, sample_rate, freq=440, channels=1, subtype=None, format=None)."""
    return write_tone


@pytest.fixture
def make_audio():
    """make_audio(path, x, sample_rate, format=None, subtype=None): write any float array."""
    return write_audio_file


@pytest.fixture
def pitched(monkeypatch):
    """--pitch-sync's tests: every block past the lag window whose autocorrelation dips below 0 uses its highest
    peak's lag (the tiny random models have no pitch over the real threshold: this checks the draws' bookkeeping)."""
    import wavegen.render.pitchsync as pitchsync

    monkeypatch.setattr(pitchsync, "THRESHOLD", -1.0)


def melody(seconds, sample_rate, seed=0, amplitude=0.4) -> np.ndarray:
    """A little learnable music: random notes of a pentatonic scale with decaying envelopes.

    float32 [round(seconds * sample_rate)]; deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    out = np.zeros(n, dtype=np.float64)
    note = int(0.25 * sample_rate)
    t = np.arange(note) / sample_rate
    env = np.exp(-t * 6.0)
    scale = 220.0 * 2 ** (np.array([0, 2, 4, 7, 9, 12]) / 12)
    for start in range(0, n, note):
        f = scale[rng.integers(len(scale))]
        seg = env * (np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t))
        out[start:start + note] += seg[: n - start]
    out += 0.003 * rng.standard_normal(n)
    return (amplitude * out / np.abs(out).max()).astype(np.float32)


def prepared_corpus(folder, files=4, seconds=6.0, sample_rate=16000, **prep_kwargs) -> Path:
    """Write ``files`` melody WAVs under folder/rec and prepare them into folder/corpus."""
    from wavegen.prep import prepare

    folder = Path(folder)
    for i in range(files):
        write_audio_file(folder / "rec" / f"song{i}.wav", melody(seconds, sample_rate, seed=i), sample_rate)
    prep_kwargs.setdefault("progress", False)
    prepare([folder / "rec"], folder / "corpus", sample_rate=sample_rate, **prep_kwargs)
    return folder / "corpus"


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    """A prepared corpus of four 6-second melodies at 16 kHz (train/val/test by file)."""
    return prepared_corpus(tmp_path, val_fraction=0.25, test_fraction=0.25)


# ----- tiny models ---------------------------------------------------------------------------------

# --set overrides small enough for a test to train in seconds (on the samplernn-tiny and
# wavenet-tiny presets, with wavegen.train.resolve_run_config or `wavegen train --set`).
# training samples off in the tiny runs (tests/test_samples.py covers them; each set costs seconds)
TINY_SAMPLERNN = ["model.dim=32", "model.emb_size=8", "train.batch_size=4", "train.seq_len=64",
                  "train.tbptt_windows=2", "train.val_seconds=2", "train.log_interval=1", "train.sample_interval=-1"]


def tiny_run_config(corpus, *extra: str) -> dict:
    """A resolved run config of samplernn-tiny with TINY_SAMPLERNN, then ``extra`` overrides, on ``corpus``."""
    from wavegen.models import resolve_preset
    from wavegen.train import resolve_run_config

    return resolve_run_config(resolve_preset("samplernn-tiny"), corpus, TINY_SAMPLERNN + list(extra))


TINY_WAVENET = ["model.layers=5", "model.max_dilation=8", "model.residual_channels=12",
                "model.skip_channels=16", "model.end_channels=16", "model.q_levels=64",
                "train.batch_size=4", "train.seq_len=64", "train.val_seconds=1", "train.log_interval=1",
                "train.lr=1e-2", "train.sample_interval=-1"]


def perturb(model, scale: float = 0.2):
    """Move every parameter off its initialisation, in place, with torch's global RNG: biases and
    h0 start at zero, where a bug that drops them would hide. Returns the model in eval mode."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model.eval()


def tiny_samplernn(frame_sizes=(8, 2), rnn_type="gru", quantization="linear", skip=False, labels=(),
                   n_rnn=2, dim=24, emb_size=6, q_levels=32, seed=0, perturbed=True):
    """A SampleRNN of a few thousand weights (eval mode), deterministic for a seed; perturbed
    off its initialisation unless perturbed=False. frame_sizes are absolute, top tier first."""
    import torch

    from wavegen.models.samplernn import SampleRNN, SampleRNNConfig

    torch.manual_seed(seed)
    model = SampleRNN(SampleRNNConfig(frame_sizes=list(frame_sizes), n_rnn=n_rnn, dim=dim, emb_size=emb_size,
                                      q_levels=q_levels, quantization=quantization, rnn_type=rnn_type,
                                      skip=skip, labels=list(labels)))
    return perturb(model) if perturbed else model.eval()


def tiny_wavenet(layers=4, max_dilation=8, quantization="mu-law", labels=(), q_levels=32, seed=0,
                 perturbed=True):
    """A WaveNet of a few thousand weights (eval mode; channels 8/12/10, label_dim 5),
    deterministic for a seed; perturbed off its initialisation unless perturbed=False."""
    import torch

    from wavegen.models.wavenet import WaveNet, WaveNetConfig

    torch.manual_seed(seed)
    model = WaveNet(WaveNetConfig(layers=layers, max_dilation=max_dilation, residual_channels=8,
                                  skip_channels=12, end_channels=10, q_levels=q_levels,
                                  quantization=quantization, labels=list(labels), label_dim=5))
    return perturb(model) if perturbed else model.eval()


def tiny_config(preset="samplernn-tiny", sample_rate=8000, **model_settings) -> dict:
    """A preset's config with model_settings overridden (dim=16, ...), at sample_rate Hz."""
    from wavegen.models import resolve_preset

    config = resolve_preset(preset)
    config["model"].update(model_settings)
    config["data"] = {"sample_rate": sample_rate}
    return config


def save_tiny_model(folder, preset="samplernn-tiny", sample_rate=8000, seed=0, output_bias=None,
                    **model_settings) -> Path:
    """A model folder (model.safetensors + config.json) of :func:`tiny_config`, random weights
    from seed (the model torch.manual_seed(seed); build_model(config) makes). Returns the folder.

    output_bias [Q] (SampleRNN): zero the output layer's weights (weight norm off) and set this
    bias, so every sample is drawn i.i.d. from softmax(output_bias) whatever came before.
    """
    import torch

    from wavegen.checkpoint import save_model
    from wavegen.models import build_model

    if output_bias is not None:
        model_settings["weight_norm"] = False
    config = tiny_config(preset, sample_rate, **model_settings)
    torch.manual_seed(seed)
    model = build_model(config)
    if output_bias is not None:
        with torch.no_grad():
            model.mlp.output.weight.zero_()
            model.mlp.output.bias.copy_(torch.as_tensor(output_bias, dtype=torch.float32))
    return Path(save_model(model, config, Path(folder)))


# ----- markers --------------------------------------------------------------------------------------


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu skip themselves where torch sees no CUDA device (CPU-only machines, CI)."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is false here")
    for item in gpu_tests:
        item.add_marker(skip)


# ----- tests that run alone beside pytest-xdist's other worker ---------------------------------------


def pytest_configure(config):
    """The controller of a pytest-xdist run makes the folder of the locks that its workers share."""
    if not hasattr(config, "workerinput") and (config.getoption("numprocesses", None) or 0):
        config.wavegen_test_locks = os.environ["WAVEGEN_TEST_LOCKS"] = tempfile.mkdtemp(prefix="wavegen-tests-")


def pytest_unconfigure(config):
    """The controller removes the folder it made (only it: a process started by a test inherits the variable)."""
    folder = getattr(config, "wavegen_test_locks", None)
    if folder is not None:
        os.environ.pop("WAVEGEN_TEST_LOCKS", None)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Under pytest-xdist (setup.cfg starts two workers), a test marked ``alone`` runs with no test
    beside it: it times the machine or loads it on purpose. Every other test holds a shared lock from
    its set-up to its teardown, an ``alone`` one the exclusive lock; a turnstile taken first keeps the
    other worker's next tests from passing a test waiting to run alone."""
    folder = os.environ.get("WAVEGEN_TEST_LOCKS") if hasattr(item.config, "workerinput") else None
    if folder is None or not os.path.isdir(folder):
        yield
        return
    import fcntl

    alone = item.get_closest_marker("alone") is not None
    with open(os.path.join(folder, "turnstile"), "a") as gate, open(os.path.join(folder, "tests"), "a") as held:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(held, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield  # the files' close lets the lock go


def _utf8(text: str) -> str:
    """text with any lone surrogate (a path not named in UTF-8, decoded with surrogateescape) written as \\udcXX."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A test's report made sendable from an xdist worker: tests of paths not named in UTF-8 capture them in
    their output, which execnet cannot encode (it stopped the worker, and the run, with an internal error)."""
    report = yield
    report.sections = [(title, _utf8(content)) for title, content in report.sections]
    if report.longrepr is not None and _utf8(str(report.longrepr)) != str(report.longrepr):
        report.longrepr = _utf8(str(report.longrepr))
    return report
