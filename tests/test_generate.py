"""The Engine contract: uniforms, inverse-CDF sampling, exact continuation, priming, backends."""

import numpy as np
import pytest
import torch

from wavegen.generate import (available_backends, make_engine, sample_codes, temperatures, uniforms)
from wavegen.models.samplernn import SampleRNN, SampleRNNConfig


def model(labels=()):
    torch.manual_seed(1)
    return SampleRNN(SampleRNNConfig(frame_sizes=[8, 2], dim=16, emb_size=4, q_levels=16,
                                     labels=list(labels))).eval()


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


def test_generate_is_deterministic_and_continues_exactly_from_state():
    m = model()
    u = uniforms(0, range(3), 0, 300)
    a = make_engine(m, 3, "torch")
    full = a.generate(u, [0.8, 1.0, 1.2])
    b = make_engine(m, 3, "torch")
    first = b.generate(u[:, :137], [0.8, 1.0, 1.2])
    state = b.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    c = make_engine(m, 3, "torch")
    c.load_state_dict(state)
    rest = c.generate(u[:, 137:], [0.8, 1.0, 1.2])
    assert np.array_equal(np.concatenate([first, rest], 1), full)
    assert len(np.unique(full)) > 3  # it really sampled


def test_prime_is_teacher_forcing():
    m = model()
    prime = np.random.default_rng(0).integers(0, 16, (2, 40))
    a = make_engine(m, 2, "torch")
    a.reset(prime_codes=prime)
    b = make_engine(m, 2, "torch")
    b.teacher_force(prime)
    probe = np.random.default_rng(1).integers(0, 16, (2, 10))
    primed = a.teacher_force(probe)
    assert np.array_equal(primed, b.teacher_force(probe))
    unprimed = make_engine(m, 2, "torch").teacher_force(probe)
    assert np.abs(primed - unprimed).max() > 1e-3  # the prime changed the state


def test_label_weights_are_checked():
    m = model(labels=["a", "b"])
    engine = make_engine(m, 2, "torch")
    with pytest.raises(ValueError, match="expected"):
        engine.reset(label_weights=np.ones((2, 3)))
    with pytest.raises(ValueError, match="conditioned"):
        engine.reset()
    engine.reset(label_weights=[1.0, 0.0])
    plain = make_engine(model(), 1, "torch")
    with pytest.raises(ValueError, match="not conditioned"):
        plain.reset(label_weights=[1.0])


def test_codes_and_uniforms_are_validated():
    engine = make_engine(model(), 2, "torch")
    with pytest.raises(ValueError, match="outside"):
        engine.teacher_force(np.full((2, 3), 99))
    with pytest.raises(ValueError, match="expected"):
        engine.generate(np.zeros((3, 4), np.float32))


def test_backend_selection_reports_reasons():
    avail = available_backends("samplernn")
    assert avail["torch"] is None
    assert set(avail) == {"torch", "numba", "cuda"}
    for name, reason in avail.items():
        assert reason is None or isinstance(reason, str) and reason
    with pytest.raises(ValueError, match="unknown backend"):
        make_engine(model(), 1, "opencl")
    if avail["cuda"] is not None:
        with pytest.raises(RuntimeError, match="not available"):
            make_engine(model(), 1, "cuda")
