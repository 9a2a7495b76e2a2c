"""Sampling arithmetic (uniforms, inverse CDF, temperatures) and backends (make_engine, availability, fallback)."""

import numpy as np
import pytest
import torch

from conftest import tiny_samplernn
from wavegen import generate
from wavegen.errors import WavegenError
from wavegen.generate import (BackendUnavailableError, EngineError, TorchSampleRNNEngine, auto_order,
                              available_backends, cuda_batch_path, make_engine, sample_codes, temperatures, uniforms)


def test_uniforms_are_keyed_by_seed_stream_and_position():
    u = uniforms(7, [0, 1, 2], 100, 50)
    assert u.shape == (3, 50) and u.dtype == np.float32
    assert (u >= 0).all() and (u < 1).all()
    # the same positions drawn in other chunks give the same numbers
    assert np.array_equal(uniforms(7, [1], 120, 10)[0], u[1, 20:30])
    assert np.array_equal(uniforms(7, [2, 0], 100, 50), u[[2, 0]])
    assert not np.array_equal(uniforms(8, [0], 100, 50)[0], u[0])  # seed matters
    assert not np.array_equal(u[0], u[1])  # streams differ
    assert not np.array_equal(uniforms(7, [0], 100, 50, attempt=1)[0], u[0])  # a redraw differs


def test_uniforms_are_uniform():
    u = uniforms(0, [0], 0, 200_000)[0]
    hist = np.histogram(u, bins=10, range=(0, 1))[0] / len(u)
    assert np.abs(hist - 0.1).max() < 0.005
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01  # no lag-1 correlation


def test_inverse_cdf_sampling_matches_the_distribution():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    u = torch.from_numpy(uniforms(3, [0], 0, 40_000)[0])
    codes = sample_codes(logits.expand(len(u), 4), u, torch.ones(len(u)))
    freq = np.bincount(codes.numpy(), minlength=4) / len(u)
    assert np.allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.01)
    # inverse CDF is monotone in u, with the bin edges at the cumulative probabilities
    edges = sample_codes(logits.expand(4, 4), torch.tensor([0.0, 0.099, 0.31, 0.999]), torch.ones(4))
    assert edges.tolist() == [0, 0, 2, 3]


def test_temperature_sharpens_and_cycles():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]])).expand(20_000, 4)
    u = torch.from_numpy(uniforms(5, [0], 0, 20_000)[0])
    cold = sample_codes(logits, u, torch.full((20_000,), 0.1))
    assert (cold == 3).float().mean() > 0.9
    assert temperatures([0.5, 1.0], 5).tolist() == [0.5, 1.0, 0.5, 1.0, 0.5]
    with pytest.raises(ValueError, match="positive"):
        temperatures(0.0, 2)


# ----- backends: make_engine, availability, fallback ------------------------------------------------
# The engines themselves (every backend against the reference) are tested in test_engines.py.

@pytest.fixture
def registry(monkeypatch):
    """The backend registry as it is now, put back after the test (tests register backends of their own)."""
    generate.available_backends()  # the optional backends imported first, so the copies hold them
    for name in ("BACKEND_MODULES", "_ENGINES", "_CHECKS", "_LOADED", "_CHECKED", "_BROKEN"):
        value = getattr(generate, name)
        monkeypatch.setattr(generate, name, {k: dict(v) if isinstance(v, dict) else v for k, v in value.items()})
    return generate


def test_make_engine_refuses_what_it_cannot_build_with_a_clear_error():
    m = tiny_samplernn()
    cases = [(dict(backend="opencl"), EngineError, "unknown backend 'opencl'"),
             (dict(precision="fp8"), EngineError, "precision 'fp8': use one of fp32, fp16, bf16"),
             (dict(backend="torch", precision="fp16"), EngineError, "precision fp16 is not supported by torch"),
             (dict(backend="numba", precision="int8"), EngineError, "precision 'int8': use one of fp32, fp16, bf16"),
             (dict(backend="numba", thraeds=2), EngineError, r"numba takes no option 'thraeds' \(its options: threads\)"),
             (dict(backend="torch", threads=2), EngineError, "torch takes no option 'threads'"),
             (dict(backend="numba", device="cuda"), BackendUnavailableError, "runs on cpu, not cuda"),
             (dict(device="tpu"), EngineError, "device 'tpu'"),
             (dict(backend="torch", precision="bf16"), EngineError, r"precision bf16 is not supported by torch \(it has fp32\)")]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message) as caught:
            make_engine(m, 1, **kwargs)
        assert isinstance(caught.value, WavegenError), kwargs
    spec = m.inference_spec()
    spec["family"] = "transformer"
    for backend in ("numba", "auto"):  # a family no backend has: named, not a KeyError
        with pytest.raises(BackendUnavailableError, match="no numba engine for transformer"):
            make_engine(spec, 1, backend)
    del spec["family"]
    for thing in (spec, m.state_dict()):  # neither a model nor a spec
        with pytest.raises(EngineError, match="neither a model .* nor an inference spec"):
            make_engine(thing, 1)
    engine = make_engine(m, 2, precision="bf16", threads=1)  # auto: the backend that has both
    assert (engine.backend, engine.precision, engine.threads) == ("numba", "bf16", 1)


def test_a_backend_that_fails_to_import_is_unavailable_and_auto_falls_back(registry, tmp_path, monkeypatch):
    (tmp_path / "broken_backend.py").write_text("raise RuntimeError('no driver found\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.register_backend_module("broken", "broken_backend")
    avail = available_backends("wavenet")
    assert avail["broken"] == "broken_backend failed to import (RuntimeError: no driver found)"
    assert avail["torch"] is None and avail["numba"] is None  # the others keep working
    with pytest.raises(BackendUnavailableError, match="no driver found"):
        make_engine(tiny_samplernn(), 1, "broken")
    monkeypatch.setattr(registry, "auto_order", lambda family, streams, device: ["broken", "numba", "torch"])
    assert make_engine(tiny_samplernn(), 1).backend == "numba"


def test_a_failing_availability_check_makes_a_backend_unavailable(registry):
    def check():
        raise OSError("libnvrtc.so: cannot open shared object file")

    registry.register_availability("numba", check)
    assert "its availability check failed (OSError: libnvrtc.so" in available_backends("samplernn")["numba"]
    assert make_engine(tiny_samplernn(), 1).backend == "torch"  # auto on the CPU: numba first, then torch
    with pytest.raises(BackendUnavailableError, match="libnvrtc"):
        make_engine(tiny_samplernn(), 1, "numba")


def test_a_backend_whose_engine_fails_to_build_is_skipped_by_auto(registry, monkeypatch, caplog):
    class Flaky(TorchSampleRNNEngine):
        backend = "flaky"

        def __init__(self, spec, streams, device="cpu", precision="fp32"):
            if streams > 1:
                raise RuntimeError("kernel compilation failed: out of registers")
            super().__init__(spec, streams, device, precision)

    class Picky(TorchSampleRNNEngine):
        backend = "picky"

        def __init__(self, spec, streams, device="cpu", precision="fp32"):
            raise EngineError("a weight does not fit")  # the user's to fix: not a broken backend

    registry.register_engine("samplernn", "flaky", Flaky)
    registry.register_engine("samplernn", "picky", Picky)
    assert make_engine(tiny_samplernn(), 1, "flaky").backend == "flaky"
    monkeypatch.setattr(registry, "auto_order", lambda family, streams, device: ["flaky", "torch"])
    with caplog.at_level("WARNING", logger="wavegen.generate"):
        assert make_engine(tiny_samplernn(), 2).backend == "torch"
    assert "out of registers" in caplog.text
    assert "building its samplernn engine failed (RuntimeError: kernel compilation failed" in \
        available_backends("samplernn")["flaky"]
    with pytest.raises(BackendUnavailableError, match="out of registers"):
        make_engine(tiny_samplernn(), 1, "flaky")  # once broken, not retried
    with pytest.raises(EngineError, match="does not fit"):
        make_engine(tiny_samplernn(), 1, "picky")
    assert available_backends("samplernn")["picky"] is None


def test_backends_are_listed_with_their_reasons():
    avail = available_backends("samplernn")
    assert list(avail)[:3] == ["torch", "numba", "cuda"] and avail["torch"] is None
    assert all(reason is None or isinstance(reason, str) and reason for reason in avail.values())
    if not torch.cuda.is_available():
        assert avail["cuda"] is not None
        on_gpu = available_backends("samplernn", device="cuda")
        assert "runs on cpu, not cuda" in on_gpu["numba"] and "no CUDA device here" in on_gpu["torch"]
        with pytest.raises(BackendUnavailableError, match="no CUDA device here"):
            make_engine(tiny_samplernn(), 1, "torch", device="cuda")
        assert "precision fp16 is not supported by torch" in available_backends("wavenet", precision="fp16")["torch"]


def test_auto_prefers_the_fast_backend_of_each_device_and_cuda_switches_path_once():
    assert auto_order("wavenet", 1, "cpu") == ["numba", "torch"]
    assert auto_order("wavenet", 1, "cuda:0") == ["cuda", "torch"]
    for family in ("samplernn", "wavenet"):
        paths = [cuda_batch_path(family, b) for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096)]
        assert paths[0] == "small" and paths[-1] == "large"
        assert paths == sorted(paths, key=["small", "large"].index)  # one crossover
