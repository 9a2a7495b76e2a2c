"""The numba engines' own parts: fast exp, the affine kernel, sampling, stream groups, stores, caches."""

import numpy as np
import pytest
import torch

from conftest import tiny_samplernn, tiny_wavenet
from wavegen.generate import make_engine, sample_codes, uniforms
from wavegen.kernels.numba_common import affine, fexp, sample_code

Q = 32
LABELS = ["a", "b", "c"]
SAMPLRNN_FRAMES = {2: [8], 3: [8, 2], 4: [16, 4, 2]}


def samplernn(tiers=3, rnn_type="gru", quantization="linear", skip=False, labels=(), seed=0):
    return tiny_samplernn(SAMPLRNN_FRAMES[tiers], rnn_type, quantization, skip, labels, q_levels=Q, seed=seed)


def wavenet(layers=4, max_dilation=8, quantization="mu-law", labels=(), seed=0):
    return tiny_wavenet(layers, max_dilation, quantization, labels, q_levels=Q, seed=seed)


# ----- building blocks -----------------------------------------------------------------------------

def test_fexp_is_accurate_to_a_few_ulp():
    x = np.linspace(-80, 80, 100_001, dtype=np.float32)
    ref = np.exp(x.astype(np.float64))
    got = np.array([fexp(v) for v in x[::97]], dtype=np.float64)
    assert np.max(np.abs(got - ref[::97]) / ref[::97]) < 3e-7
    assert fexp(np.float32(0.0)) == 1.0
    assert fexp(np.float32(-200.0)) < 1e-37  # clamped, not NaN


@pytest.mark.parametrize("streams", [1, 2, 3, 4, 5, 7, 8, 11])
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
    # bf16 storage: int16 holding the top half of each float32 (torch's bfloat16 bits)
    bf16 = torch.from_numpy(M).to(torch.bfloat16)
    affine(bf16.view(torch.int16).numpy(), 5, V, 3, n_out, n_in, x, y, 0, streams)
    assert np.allclose(y, x @ bf16.float().numpy()[5:].reshape(n_out, n_in).T + V[3:], atol=1e-5)


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


@pytest.mark.parametrize("temperature", [1e-4, 0.05, 1.0, 5.0])
def test_sample_code_matches_the_torch_sampler_at_u_zero(temperature):
    """u = 0 is a uniform the generator draws (once in 2**24). The reference then takes the first
    code of non-zero probability; a sampler whose exp never reaches 0 (clamped at exp(-87)) took
    code 0 instead: at a low temperature a code of probability ~0, a click in the audio."""
    logits = (np.random.default_rng(0).standard_normal((300, Q)) * 3).astype(np.float32)
    u, temps = np.zeros(300, np.float32), np.full(300, temperature, np.float32)
    ref = sample_codes(torch.from_numpy(logits), torch.from_numpy(u), torch.from_numpy(temps)).numpy()
    scratch = np.zeros(Q, np.float32)
    got = np.array([sample_code(logits[i], u[i], temps[i], scratch) for i in range(300)])
    assert np.array_equal(got, ref)
    if temperature < 1e-3:
        assert np.mean(ref > 0) > 0.5  # the case that matters: code 0 is rarely the first possible one


def test_the_samplers_exp_underflows_as_torchs():
    """Subnormal below exp(-87), exactly 0 below about -103.97, as torch's exp (the sampler's CDF
    entries that count at u = 0 are the ones that are exactly 0)."""
    from wavegen.kernels.numba_common import _exp_shifted

    x = np.linspace(-120, -60, 600_001, dtype=np.float32)
    want = torch.exp(torch.from_numpy(x)).numpy()
    got = x.copy()
    _exp_shifted(got, np.float32(0.0))  # compiled as the sampler's loop is (fastmath, vectorised)
    assert np.array_equal(got == 0, want == 0)
    normal = want > 1.2e-38
    assert np.max(np.abs(got[normal] - want[normal]) / want[normal]) < 3e-7


# ----- engine plumbing -----------------------------------------------------------------------------
# The engines against the torch reference (logits, codes, state, prime, labels, precisions) are
# in test_engines.py, for every backend; here what only the numba engines have.

@pytest.mark.parametrize("family", ["samplernn", "wavenet"])
def test_stream_groups_give_the_same_codes(family):
    spec = (samplernn(3, "gru", skip=True) if family == "samplernn" else wavenet(6, 8)).inference_spec()
    u = uniforms(9, range(5), 0, 300)
    codes = [make_engine(spec, 5, "numba", threads=k).generate(u, 0.9) for k in (1, 2, 3)]
    assert np.array_equal(codes[0], codes[1]) and np.array_equal(codes[0], codes[2])
    assert len(np.unique(codes[0])) > Q // 2


@pytest.mark.parametrize("precision,dtype", [("fp16", np.uint16), ("bf16", np.int16)])
def test_reduced_precision_stores_matrices_in_half_the_bytes(precision, dtype):
    spec = samplernn(3, "lstm", skip=True, labels=LABELS).inference_spec()
    half, full = make_engine(spec, 2, "numba", precision=precision), make_engine(spec, 2, "numba")
    assert half.packed["M"].dtype == dtype and half.packed["M"].nbytes * 2 == full.packed["M"].nbytes
    assert half.packed["V"].dtype == np.float32 and half.packed["V"].shape == full.packed["V"].shape  # vectors stay


def test_threads_must_be_a_positive_whole_number():
    spec = wavenet(4, 8).inference_spec()
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            make_engine(spec, 1, "numba", threads=bad)


def test_a_compile_is_announced_as_it_starts_and_only_then(caplog):
    """The notice comes when numba compiles (once however many functions it compiles), not when it runs code it has
    compiled; a new signature of a compiled function compiles again and is announced again (the fp16 kernels once
    the fp32 ones are cached)."""
    from numba import njit

    from wavegen.kernels import numba_common

    @njit
    def inner(x):
        return x + 1

    @njit
    def outer(x):
        return inner(x) * 2

    with caplog.at_level("INFO", logger="wavegen.kernels.numba_common"):
        for x in (np.float32(1.0), np.float32(2.0), np.int64(3)):
            with numba_common.announce_compile():
                outer(x)
    assert [r.getMessage() for r in caplog.records] == ["compiling numba kernels (first use on this machine)..."] * 2


# one process: a wavenet-tiny numba engine at each precision given, generating 4 samples (its notices on stdout)
_ENGINE_AT = ("import logging, sys\n"
              "import numpy as np\n"
              "logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stdout)\n"
              "from conftest import tiny_wavenet\n"
              "from wavegen.generate import make_engine\n"
              "spec = tiny_wavenet(2, 2, q_levels=32).inference_spec()\n"
              "for precision in sys.argv[1:]:\n"
              "    print('engine', precision)\n"
              "    make_engine(spec, 1, 'numba', precision=precision, threads=1).generate(np.full((1, 4), 0.5))\n")


@pytest.mark.slow
def test_the_first_fp16_on_a_machine_that_cached_the_fp32_kernels_says_it_is_compiling(tmp_path):
    """Its check looked for the cache's index file, which the fp32 kernels had made, and once per process: the fp16
    or bf16 kernels' compile (a minute on a busy machine) went unsaid. Each precision's compile is said; from the
    cache, neither is."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    said = []
    # a fresh cache: fp32 (a render), then fp16 in another process (the next render); then both from the cache
    for precisions in (["fp32"], ["fp16"], ["fp32", "fp16"]):
        proc = subprocess.run([sys.executable, "-c", _ENGINE_AT, *precisions], capture_output=True, text=True,
                              env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        said.append([line for line in proc.stdout.splitlines() if line.startswith(("engine", "compiling"))])
    notice = "compiling numba kernels (first use on this machine)..."
    assert said == [["engine fp32", notice], ["engine fp16", notice], ["engine fp32", "engine fp16"]], said
