"""numba engines against the torch reference: logits, sampled codes, state, prime, labels, threads."""

import itertools

import numpy as np
import pytest
import torch

from wavegen.generate import make_engine, sample_codes, uniforms
from wavegen.kernels.numba_common import affine, fexp, sample_code
from wavegen.kernels.packing import round_spec
from wavegen.kernels.numba_samplernn import NumbaSampleRNNEngine
from wavegen.kernels.numba_wavenet import NumbaWaveNetEngine
from wavegen.models.samplernn import SampleRNN, SampleRNNConfig
from wavegen.models.wavenet import WaveNet, WaveNetConfig

TOL = 1e-5  # fp32, different summation order: observed differences are ~1e-7 on logits of size ~1
Q = 32
TEMPS = [0.8, 1.0, 1.3]  # per stream
SAMPLRNN_FRAMES = {2: [8], 3: [8, 2], 4: [16, 4, 2]}
SAMPLERNN_VARIANTS = list(itertools.product(SAMPLRNN_FRAMES, ["gru", "lstm"], ["linear", "mu-law"], [False, True]))
WAVENET_PATTERNS = [(1, 1), (4, 8), (9, 4), (6, 8)]  # (layers, max_dilation)
WAVENET_VARIANTS = list(itertools.product(WAVENET_PATTERNS, ["linear", "mu-law"]))
LABELS = ["a", "b", "c"]
BLEND = np.array([[1, 0, 0], [0.2, 0.5, 0.3], [0, 0, 1]], dtype=np.float32)


def perturbed(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():  # off the init, so every weight, bias and h0 matters
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def samplernn(tiers=3, rnn_type="gru", quantization="linear", skip=False, labels=(), seed=0):
    torch.manual_seed(seed)
    cfg = SampleRNNConfig(frame_sizes=SAMPLRNN_FRAMES[tiers], n_rnn=2, dim=24, emb_size=6, q_levels=Q,
                          quantization=quantization, rnn_type=rnn_type, skip=skip, labels=list(labels))
    return perturbed(SampleRNN(cfg), seed)


def wavenet(layers=4, max_dilation=8, quantization="mu-law", labels=(), seed=0):
    torch.manual_seed(seed)
    cfg = WaveNetConfig(layers=layers, max_dilation=max_dilation, residual_channels=8, skip_channels=12,
                        end_channels=10, q_levels=Q, quantization=quantization, labels=list(labels), label_dim=5)
    return perturbed(WaveNet(cfg), seed)


def engines(model, streams=3, label_weights=None):
    spec = model.inference_spec()
    ref, fast = make_engine(spec, streams, "torch"), make_engine(spec, streams, "numba")
    for engine in (ref, fast):
        engine.reset(label_weights=label_weights)
    return ref, fast


def random_codes(streams, n, seed=0):
    return np.random.default_rng(seed).integers(0, Q, (streams, n))


# ----- building blocks -----------------------------------------------------------------------------

def test_fexp_is_accurate_to_a_few_ulp():
    x = np.linspace(-80, 80, 100_001, dtype=np.float32)
    ref = np.exp(x.astype(np.float64))
    got = np.array([fexp(v) for v in x[::97]], dtype=np.float64)
    assert np.max(np.abs(got - ref[::97]) / ref[::97]) < 3e-7
    assert fexp(np.float32(0.0)) == 1.0
    assert fexp(np.float32(-200.0)) < 1e-37  # clamped, not NaN


@pytest.mark.parametrize("streams", [1, 3, 4, 8, 11])
def test_affine_matches_numpy_for_every_stream_block(streams):
    rng = np.random.default_rng(streams)
    n_out, n_in = 13, 37
    M = rng.standard_normal(5 + n_out * n_in).astype(np.float32)
    V = rng.standard_normal(3 + n_out).astype(np.float32)
    x = rng.standard_normal((streams, n_in)).astype(np.float32)
    y = np.full((streams, n_out), 7.0, np.float32)
    matrix = M[5:].reshape(n_out, n_in)
    affine(M, 5, V, 3, n_out, n_in, x, y, 0, streams)
    assert np.allclose(y, x @ matrix.T + V[3:], atol=1e-5)
    y[:] = 7.0  # a range of streams, no bias: the others are untouched
    affine(M, 5, V, -1, n_out, n_in, x, y, streams // 2, streams)
    assert np.all(y[:streams // 2] == 7.0)
    assert np.allclose(y[streams // 2:], (x @ matrix.T)[streams // 2:], atol=1e-5)
    # fp16 storage: uint16 bits of halves, read exactly, accumulated in float32
    half = M.astype(np.float16)
    affine(half.view(np.uint16), 5, V, 3, n_out, n_in, x, y, 0, streams)
    assert np.allclose(y, x @ half[5:].astype(np.float32).reshape(n_out, n_in).T + V[3:], atol=1e-5)
    assert not np.allclose(y, x @ matrix.T + V[3:], atol=1e-5)


def test_a_matrix_larger_than_the_caches_is_streamed_through_a_buffer_with_the_same_bits():
    rng = np.random.default_rng(7)
    n_out, n_in = 4200, 1024  # 17 MB: above the 16 MB threshold, so copied tile by tile
    M = rng.standard_normal(n_out * n_in).astype(np.float32)
    V = rng.standard_normal(n_out).astype(np.float32)
    x = rng.standard_normal((6, n_in)).astype(np.float32)
    whole = np.zeros((6, n_out), np.float32)
    affine(M, 0, V, 0, n_out, n_in, x, whole, 0, 6)
    half = n_out // 2  # 8.6 MB each: read in place
    first, second = np.zeros((6, half), np.float32), np.zeros((6, n_out - half), np.float32)
    affine(M, 0, V, 0, half, n_in, x, first, 0, 6)
    affine(M, half * n_in, V, half, n_out - half, n_in, x, second, 0, 6)
    assert np.array_equal(whole, np.concatenate([first, second], 1))
    assert np.allclose(whole, x @ M.reshape(n_out, n_in).T + V, rtol=1e-4, atol=1e-3)


def test_stale_kernel_caches_are_dropped_when_a_source_changes(tmp_path):
    from wavegen.kernels.numba_common import drop_stale_caches

    source, cache = tmp_path / "numba_x.py", tmp_path / "cache"
    source.write_text("a = 1")
    assert drop_stale_caches(cache, [source])  # no stamp yet
    (cache / "numba_x.run-10.py311.nbi").write_text("")
    assert not drop_stale_caches(cache, [source]) and (cache / "numba_x.run-10.py311.nbi").exists()
    source.write_text("a = 2")  # an edit: every cached kernel goes
    assert drop_stale_caches(cache, [source]) and not (cache / "numba_x.run-10.py311.nbi").exists()


def test_sample_code_matches_the_torch_sampler():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((4000, Q)) * 3).astype(np.float32)
    u = uniforms(1, [0], 0, 4000)[0]
    temps = np.resize(np.array([0.5, 1.0, 2.0], np.float32), 4000)
    ref = sample_codes(torch.from_numpy(logits), torch.from_numpy(u), torch.from_numpy(temps)).numpy()
    scratch = np.zeros(Q, np.float32)
    got = np.array([sample_code(logits[i], u[i], temps[i], scratch) for i in range(4000)])
    assert np.array_equal(got, ref)
    assert sample_code(np.zeros(Q, np.float32), np.float32(0.0), np.float32(1.0), scratch) == 0
    assert sample_code(np.zeros(Q, np.float32), np.float32(0.9999999), np.float32(1.0), scratch) == Q - 1


# ----- SampleRNN -----------------------------------------------------------------------------------

@pytest.mark.parametrize("tiers,rnn_type,quantization,skip", SAMPLERNN_VARIANTS)
def test_samplernn_teacher_forced_logits_match_torch(tiers, rnn_type, quantization, skip):
    ref, fast = engines(samplernn(tiers, rnn_type, quantization, skip))
    codes = random_codes(3, SAMPLRNN_FRAMES[tiers][0] * 5)
    expected, got = ref.teacher_force(codes), fast.teacher_force(codes)
    assert got.shape == expected.shape and got.dtype == np.float32
    err = np.abs(got - expected).max()
    assert err < TOL, f"numba logits differ from torch by {err}"
    assert np.abs(expected).max() > 0.1  # the comparison is not between near-zero logits


@pytest.mark.slow
@pytest.mark.parametrize("tiers,rnn_type,quantization,skip",
                         [(2, "lstm", "mu-law", True), (3, "gru", "linear", False), (4, "gru", "mu-law", True),
                          (4, "lstm", "linear", False)])
def test_samplernn_sampled_codes_match_torch(tiers, rnn_type, quantization, skip):
    ref, fast = engines(samplernn(tiers, rnn_type, quantization, skip, seed=tiers))
    u = uniforms(5, range(3), 0, 2000)
    expected, got = ref.generate(u, TEMPS), fast.generate(u, TEMPS)
    assert np.array_equal(got, expected)
    assert len(np.unique(got)) > Q // 2  # it really sampled


def test_samplernn_with_labels_matches_torch():
    ref, fast = engines(samplernn(3, labels=LABELS), label_weights=BLEND)
    codes = random_codes(3, 40)
    assert np.abs(fast.teacher_force(codes) - ref.teacher_force(codes)).max() < TOL
    u = uniforms(2, range(3), 40, 600)
    assert np.array_equal(fast.generate(u, TEMPS), ref.generate(u, TEMPS))
    # the label matters: another blend gives other logits
    other = make_engine(samplernn(3, labels=LABELS).inference_spec(), 3, "numba")
    other.reset(label_weights=BLEND[::-1].copy())
    mine = make_engine(samplernn(3, labels=LABELS).inference_spec(), 3, "numba")
    mine.reset(label_weights=BLEND)
    assert np.abs(other.teacher_force(codes) - mine.teacher_force(codes)).max() > 1e-3


def test_samplernn_state_dict_continues_exactly():
    model = samplernn(4, "lstm", skip=True)
    spec = model.inference_spec()
    u = uniforms(0, range(3), 0, 300)
    full = make_engine(spec, 3, "numba").generate(u, TEMPS)
    a = make_engine(spec, 3, "numba")
    first = a.generate(u[:, :117], TEMPS)  # 117: mid-frame of every tier
    state = a.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    a.generate(u[:, 117:150], TEMPS)  # later steps must not change the snapshot
    b = make_engine(spec, 3, "numba")
    b.load_state_dict(state)
    rest = b.generate(u[:, 117:], TEMPS)
    assert np.array_equal(np.concatenate([first, rest], 1), full)
    # the state has the reference engine's names and shapes: torch continues from it too
    ref = make_engine(spec, 3, "torch")
    assert sorted(ref.state_dict()) == sorted(state)
    ref.load_state_dict(state)
    probe = random_codes(3, 50, seed=3)
    b.load_state_dict(state)
    assert np.abs(ref.teacher_force(probe) - b.teacher_force(probe)).max() < TOL


def test_samplernn_prime_and_stream_state():
    model = samplernn(3)
    prime = random_codes(3, 37, seed=4)
    ref, fast = engines(model)
    ref.reset(prime_codes=prime)
    fast.reset(prime_codes=prime)
    probe = random_codes(3, 30, seed=5)
    assert np.abs(fast.teacher_force(probe) - ref.teacher_force(probe)).max() < TOL
    # one stream's state moved into another slot continues like that stream (to rounding: the
    # summation order may depend on the slot's block of streams)
    fast.reset(prime_codes=prime)
    fast.set_stream_state(0, fast.stream_state(2))
    logits = fast.teacher_force(np.repeat(probe[2:3], 3, axis=0))
    assert np.abs(logits[0] - logits[2]).max() < TOL
    assert np.abs(logits[0] - logits[1]).max() > 1e-2


def test_samplernn_stream_groups_give_the_same_codes():
    spec = samplernn(3, "gru", skip=True).inference_spec()
    u = uniforms(9, range(5), 0, 400)
    codes = [NumbaSampleRNNEngine(spec, 5, threads=k).generate(u, 0.9) for k in (1, 2, 3)]
    assert np.array_equal(codes[0], codes[1]) and np.array_equal(codes[0], codes[2])


# ----- WaveNet -------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern,quantization", WAVENET_VARIANTS)
def test_wavenet_teacher_forced_logits_match_torch(pattern, quantization):
    ref, fast = engines(wavenet(*pattern, quantization=quantization))
    codes = random_codes(3, 80)
    expected, got = ref.teacher_force(codes), fast.teacher_force(codes)
    err = np.abs(got - expected).max()
    assert err < TOL, f"numba logits differ from torch by {err}"
    assert np.abs(expected).max() > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("pattern,labels", [((9, 4), ()), ((6, 8), LABELS)])
def test_wavenet_sampled_codes_match_torch(pattern, labels):
    ref, fast = engines(wavenet(*pattern, labels=labels, seed=1), label_weights=BLEND if labels else None)
    u = uniforms(3, range(3), 0, 2000)
    expected, got = ref.generate(u, TEMPS), fast.generate(u, TEMPS)
    assert np.array_equal(got, expected)
    assert len(np.unique(got)) > Q // 2


def test_wavenet_with_labels_matches_torch():
    ref, fast = engines(wavenet(6, 8, labels=LABELS), label_weights=BLEND)
    codes = random_codes(3, 60)
    assert np.abs(fast.teacher_force(codes) - ref.teacher_force(codes)).max() < TOL


def test_wavenet_state_dict_continues_exactly_and_moves_to_torch():
    spec = wavenet(9, 4).inference_spec()
    u = uniforms(4, range(3), 0, 200)
    full = make_engine(spec, 3, "numba").generate(u, TEMPS)
    a = make_engine(spec, 3, "numba")
    first = a.generate(u[:, :71], TEMPS)
    state = a.state_dict()
    a.generate(u[:, 71:90], TEMPS)
    b = make_engine(spec, 3, "numba")
    b.load_state_dict(state)
    assert np.array_equal(np.concatenate([first, b.generate(u[:, 71:], TEMPS)], 1), full)
    ref = make_engine(spec, 3, "torch")
    assert sorted(ref.state_dict()) == sorted(state)
    ref.load_state_dict(state)
    b.load_state_dict(state)
    probe = random_codes(3, 40, seed=6)
    assert np.abs(ref.teacher_force(probe) - b.teacher_force(probe)).max() < TOL
    with pytest.raises(ValueError, match="buffer0"):
        b.load_state_dict({**state, "buffer0": np.zeros((3, 5, 8), np.float32)})


def test_wavenet_prime_matches_torch():
    ref, fast = engines(wavenet(6, 8))
    prime = random_codes(3, 45, seed=7)
    ref.reset(prime_codes=prime)
    fast.reset(prime_codes=prime)
    u = uniforms(8, range(3), 45, 300)
    assert np.array_equal(fast.generate(u, TEMPS), ref.generate(u, TEMPS))


def test_wavenet_stream_groups_give_the_same_codes():
    spec = wavenet(6, 8).inference_spec()
    u = uniforms(9, range(7), 0, 300)
    codes = [NumbaWaveNetEngine(spec, 7, threads=k).generate(u, 1.1) for k in (1, 2)]
    assert np.array_equal(codes[0], codes[1])


# ----- fp16 weight storage -------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["samplernn", "wavenet"])
def test_fp16_weights_are_the_fp32_engine_on_rounded_weights(family):
    if family == "samplernn":
        model, cls = samplernn(3, "lstm", skip=True, labels=LABELS), NumbaSampleRNNEngine
    else:
        model, cls = wavenet(6, 8, labels=LABELS), NumbaWaveNetEngine
    spec = model.inference_spec()
    ref = make_engine(round_spec(spec, "fp16"), 3, "torch")
    half = cls(spec, 3, precision="fp16")
    full = cls(spec, 3)
    for engine in (ref, half, full):
        engine.reset(label_weights=BLEND)
    codes = random_codes(3, 48)
    expected, got, exact = ref.teacher_force(codes), half.teacher_force(codes), full.teacher_force(codes)
    assert np.abs(got - expected).max() < TOL
    assert 1e-6 < np.abs(got - exact).max() < 0.05  # an approximation of the fp32 model, a close one
    u = uniforms(6, range(3), 48, 600)
    assert np.array_equal(half.generate(u, TEMPS), ref.generate(u, TEMPS))
    assert half.packed["M"].dtype == np.uint16 and half.packed["M"].nbytes * 2 == full.packed["M"].nbytes


def test_fp16_refuses_weights_it_cannot_hold():
    spec = wavenet(4, 8).inference_spec()
    spec["out2_w"] = spec["out2_w"].clone()
    spec["out2_w"][0, 0] = 1e5
    with pytest.raises(ValueError, match="fp16"):
        NumbaWaveNetEngine(spec, 1, precision="fp16")
    with pytest.raises(ValueError, match="precision 'int8'"):
        NumbaWaveNetEngine(spec, 1, precision="int8")


def test_numba_engines_check_their_inputs():
    fast = make_engine(wavenet(4, 8).inference_spec(), 2, "numba")
    with pytest.raises(ValueError, match="codes outside"):
        fast.teacher_force(np.full((2, 3), Q))
    with pytest.raises(ValueError, match="uniforms of shape"):
        fast.generate(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="cpu"):
        NumbaWaveNetEngine(wavenet(4, 8).inference_spec(), 2, device="cuda")


def test_first_use_on_a_machine_says_it_is_compiling(tmp_path, caplog):
    from types import SimpleNamespace

    from wavegen.kernels import numba_common

    def dispatcher(index_exists, compiled=()):
        index = tmp_path / f"kernel-{index_exists}.nbi"
        if index_exists:
            index.write_text("")
        return SimpleNamespace(signatures=list(compiled),
                               _cache=SimpleNamespace(_cache_file=SimpleNamespace(_index_path=str(index))))

    with caplog.at_level("INFO", logger="wavegen.kernels.numba_common"):
        numba_common.announce_compile("test-warm", dispatcher(True))
        numba_common.announce_compile("test-compiled", dispatcher(False, compiled=["sig"]))
        assert "compiling" not in caplog.text
        numba_common.announce_compile("test-cold", dispatcher(False))
        assert caplog.text.count("compiling numba kernels (first use on this machine)") == 1
        numba_common.announce_compile("test-cold", dispatcher(False))  # once per process
        assert caplog.text.count("compiling numba kernels") == 1
    # the real dispatchers expose what the check reads
    from wavegen.kernels.numba_wavenet import _run
    assert isinstance(_run._cache._cache_file._index_path, str)
