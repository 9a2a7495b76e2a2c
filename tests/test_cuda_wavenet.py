"""cuda WaveNet engines against the torch reference, on numba-cuda's simulator and Triton's
interpreter here (tests/cudasim.py), on the device where a GPU is present.

Tolerances: fp32 logits within TOL = 1e-5 (summation order differs: observed ~2-5e-7 on logits
of size ~1; the interpreter's tl.dot is exact fp32). fp16 tensor-core inputs (activations
rounded to fp16 before each matmul, fp32 accumulation): FP16_TOL = 2e-2 against the reference
on the same rounded weights; bf16 (8 bits of mantissa, GPU only) BF16_TOL = 1e-1. On a GPU the large path's fp32 matmuls are 3xTF32 (not
bit-exact fp32): TOL holds with room, codes may in rare draws differ at a CDF boundary.
"""

import cudasim  # noqa: I001 - first: enables the simulators before numba.cuda / triton kernels load
import itertools
import logging

import numpy as np
import pytest

from conftest import tiny_wavenet
from wavegen.engine import EngineError
from wavegen.generate import available_backends, make_engine, uniforms
from wavegen.kernels.cuda import wavenet_large, wavenet_small
from wavegen.kernels.cuda.wavenet import CudaWaveNetEngine
from wavegen.kernels.packing import round_spec

pytestmark = pytest.mark.cudasim

TOL = 1e-5
FP16_TOL = 2e-2
BF16_TOL = 1e-1
Q = 32
TEMPS = [0.8, 1.0, 1.3]  # per stream
PATTERNS = [(1, 1), (4, 8), (9, 4), (6, 8)]  # (layers, max_dilation), as the numba tests
VARIANTS = list(itertools.product(PATTERNS, ["linear", "mu-law"]))
LABELS = ["a", "b", "c"]
BLEND = np.array([[1, 0, 0], [0.2, 0.5, 0.3], [0, 0, 1]], dtype=np.float32)
_SPECS = {}


def spec_of(layers=4, max_dilation=8, quantization="mu-law", labels=()):
    key = (layers, max_dilation, quantization, tuple(labels))
    if key not in _SPECS:
        _SPECS[key] = tiny_wavenet(layers, max_dilation, quantization, labels=labels, q_levels=Q).inference_spec()
    return _SPECS[key]


def pair(spec, path, streams=3, precision="fp32", label_weights=None, **options):
    ref = make_engine(spec, streams, "torch")
    fast = CudaWaveNetEngine(spec, streams, device=cudasim.DEVICE, precision=precision, path=path, **options)
    for engine in (ref, fast):
        engine.reset(label_weights=label_weights)
    return ref, fast


def codes(n, streams=3, seed=0):
    return np.random.default_rng(seed).integers(0, Q, (streams, n))


def check_against_reference(spec, path, tf_steps, gen_steps, label_weights=None):
    """Teacher-forced logits within TOL, then (from there) identical codes for gen_steps steps."""
    ref, fast = pair(spec, path, label_weights=label_weights)
    given = codes(tf_steps)
    np.testing.assert_allclose(fast.teacher_force(given), ref.teacher_force(given), atol=TOL, rtol=0)
    if gen_steps:
        u = uniforms(7, range(3), tf_steps, gen_steps)
        got = fast.generate(u, TEMPS)
        assert np.array_equal(got, ref.generate(u, TEMPS))
        assert len(np.unique(got)) > 4  # a real draw, not a constant
    return ref, fast


@pytest.mark.slow
@pytest.mark.parametrize("pattern,quantization", VARIANTS)
def test_small_path_matches_the_reference(pattern, quantization):
    # 64 sampled steps per pattern; the other quantization (it changes only the first input,
    # silence) 16, to keep the simulator's time near a minute
    gen_steps = 64 if quantization == "mu-law" else 16
    check_against_reference(spec_of(*pattern, quantization), "small", tf_steps=12, gen_steps=gen_steps)


@pytest.mark.slow
@pytest.mark.parametrize("pattern,quantization", VARIANTS)
def test_large_path_matches_the_reference(pattern, quantization):
    # 64 sampled steps on one variant, 8 on another (the interpreter costs ~0.2 s a step); logits on all
    gen_steps = {((4, 8), "mu-law"): 64, ((9, 4), "linear"): 8}.get((pattern, quantization), 0)
    check_against_reference(spec_of(*pattern, quantization), "large", tf_steps=6, gen_steps=gen_steps)


def test_large_path_fp16_tensor_core_inputs():
    spec = spec_of(4, 8)
    ref, fast = pair(round_spec(spec, "fp16"), "large")
    fast16 = CudaWaveNetEngine(spec, 3, device=cudasim.DEVICE, precision="fp16", path="large")
    given = codes(6)
    want = ref.teacher_force(given)
    got = fast16.teacher_force(given)
    assert np.abs(got - want).max() < FP16_TOL
    assert not np.array_equal(got, fast.teacher_force(given))  # the fp16 path really rounds


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_small_path_reduced_precision_is_the_reference_on_rounded_weights(precision):
    """The small path rounds the weights to the precision and computes in float32: the reference on the
    rounded weights within TOL, with labels (their folded biases rounded too), and sampling the same codes."""
    spec = spec_of(4, 8, labels=LABELS)
    ref = make_engine(round_spec(spec, precision), 3, "torch")
    fast = CudaWaveNetEngine(spec, 3, device=cudasim.DEVICE, precision=precision, path="small")
    full = CudaWaveNetEngine(spec, 3, device=cudasim.DEVICE, path="small")
    for engine in (ref, fast, full):
        engine.reset(label_weights=BLEND)
    given = codes(12)
    got = fast.teacher_force(given)
    np.testing.assert_allclose(got, ref.teacher_force(given), atol=TOL, rtol=0)
    assert np.abs(got - full.teacher_force(given)).max() > 10 * TOL  # the weights really were rounded
    u = uniforms(3, range(3), 12, 10)
    assert np.array_equal(fast.generate(u, TEMPS), ref.generate(u, TEMPS))


@pytest.mark.gpu
def test_large_path_bf16_tensor_core_inputs_on_the_gpu():
    # Triton's interpreter gets bf16 wrong (see wavegen.kernels.cuda.wavenet_large): GPU only
    spec = spec_of(4, 8)
    ref, _ = pair(round_spec(spec, "bf16"), "large")
    fast = CudaWaveNetEngine(spec, 3, device="cuda", precision="bf16", path="large")
    given = codes(16)
    assert np.abs(fast.teacher_force(given) - ref.teacher_force(given)).max() < BF16_TOL


@pytest.mark.skipif(not cudasim.SIMULATED, reason="a capture fails only where there is no GPU")
def test_large_path_keeps_sampling_when_a_cuda_graph_cannot_be_captured(monkeypatch, caplog):
    # graphs switched on by hand on the CPU: the capture really fails (no CUDA device), the engine
    # warns once and launches from the host, with the codes of the reference
    monkeypatch.setattr(wavenet_large, "GRAPH_STEPS", 4)
    ref, fast = pair(spec_of(4, 8), "large")
    fast.impl.graph = True
    u = uniforms(4, range(3), 0, 13)  # chunks of 4, 4, 4, 1: eager, capture (fails), eager, partial
    with caplog.at_level(logging.WARNING, logger="wavegen"):
        got = fast.generate(u, TEMPS)
    assert np.array_equal(got, ref.generate(u, TEMPS))
    assert [r.getMessage() for r in caplog.records if "CUDA graph capture failed" in r.getMessage()] != []
    assert len(caplog.records) == 1 and fast.impl.graph is False and fast.impl.graphs == {}


@pytest.mark.gpu
def test_large_path_replays_cuda_graphs_with_the_codes_of_host_launches(monkeypatch):
    # every position served by one captured chunk: 40 streams (a partial program), chunks of 8 from
    # t = 5 (three replays at different positions, then a partial chunk launched from the host)
    monkeypatch.setattr(wavenet_large, "GRAPH_STEPS", 8)
    for spec, weights in ((spec_of(4, 8), None), (spec_of(3, 2, labels=LABELS), np.tile(BLEND, (14, 1))[:40])):
        engines = [CudaWaveNetEngine(spec, 40, device="cuda", path="large", graph=graph) for graph in (True, False)]
        prime = np.random.default_rng(1).integers(0, Q, (40, 5))
        u = uniforms(9, range(40), 5, 8 * 4 + 3)
        temps = np.linspace(0.7, 1.3, 40)
        got = []
        for engine in engines:
            engine.reset(prime_codes=prime, label_weights=weights)
            got.append(engine.generate(u, temps))
        assert np.array_equal(got[0], got[1])
        assert list(engines[0].impl.graphs) == [int(weights is not None)] and engines[0].impl.graph
        assert engines[1].impl.graphs == {}
        a, b = engines[0].state_dict(), engines[1].state_dict()
        assert all(np.array_equal(a[name], b[name]) for name in a)


@pytest.mark.parametrize("path", ["small", "large"])
def test_prime_labels_snapshot_and_state_moving_between_backends(path):
    spec = spec_of(3, 2, labels=LABELS)
    ref, fast = pair(spec, path, label_weights=BLEND)
    prime = codes(6, seed=3)
    for engine in (ref, fast):
        engine.reset(prime_codes=prime, label_weights=BLEND)
    u = uniforms(5, range(3), 6, 16)
    snap = fast.snapshot()
    first = fast.generate(u[:, :8], TEMPS)
    assert np.array_equal(first, ref.generate(u[:, :8], TEMPS))
    state = fast.state_dict()
    want = ref.state_dict()
    assert state.keys() == want.keys() and int(state["t"]) == 14
    for name in want:
        np.testing.assert_allclose(state[name], want[name], atol=TOL, rtol=0, err_msg=name)
    second = fast.generate(u[:, 8:], TEMPS)
    # the state continues exactly: on a fresh cuda engine, on the numba engine, and after a restore
    other = CudaWaveNetEngine(spec, 3, device=cudasim.DEVICE, path=path)
    other.load_state_dict(state)
    assert np.array_equal(other.generate(u[:, 8:], TEMPS), second)
    numba = make_engine(spec, 3, "numba")
    numba.load_state_dict(state)
    assert np.array_equal(numba.generate(u[:, 8:], TEMPS), second)
    fast.restore(snap)
    assert fast.t == 6 and np.array_equal(fast.generate(u, TEMPS), np.concatenate([first, second], 1))


def test_negative_control_a_perturbed_weight_is_caught():
    spec = spec_of(4, 8)
    bad = {**spec, "layers": [dict(layer) for layer in spec["layers"]]}
    bad["layers"][2]["res_w"] = spec["layers"][2]["res_w"].clone()
    bad["layers"][2]["res_w"][3, 5] += 0.01
    ref = make_engine(spec, 3, "torch")
    given = codes(6)
    want = ref.teacher_force(given)
    for path in ("small", "large"):
        got = CudaWaveNetEngine(bad, 3, device=cudasim.DEVICE, path=path).teacher_force(given)
        assert np.abs(got - want).max() > 10 * TOL, path


@pytest.mark.skipif(not cudasim.SIMULATED, reason="rewrites kernel source: simulator only")
@pytest.mark.parametrize("function,marker", [("_layer_block", "INPUT-BARRIER"), ("_chain_layer", "GATE-BARRIER"),
                                             ("wait_flags", "WAIT-BARRIER"), ("post_flag", "POST-BARRIER")])
def test_negative_control_a_removed_barrier_is_caught(function, marker):
    spec = spec_of(4, 8)
    ref = make_engine(spec, 3, "torch")
    given = codes(6)
    want = ref.teacher_force(given)
    with cudasim.patched(wavenet_small, function, marker):
        got = CudaWaveNetEngine(spec, 3, device=cudasim.DEVICE, path="small").teacher_force(given)
    assert not np.allclose(got, want, atol=TOL, rtol=0)  # wrong or NaN
    np.testing.assert_allclose(  # and the intact kernel is right again
        CudaWaveNetEngine(spec, 3, device=cudasim.DEVICE, path="small").teacher_force(given), want, atol=TOL, rtol=0)


def test_several_head_blocks_and_warps_hand_off_correctly():
    # out1/out2 split over several blocks and two warps per block: the hand-off of every slice
    spec = spec_of(4, 8)
    ref, fast = pair(spec, "small", head_blocks=(3, 4), threads=64)
    assert fast.impl.grid == 4 + 3 + 4
    given = codes(4)
    np.testing.assert_allclose(fast.teacher_force(given), ref.teacher_force(given), atol=TOL, rtol=0)
    u = uniforms(2, range(3), 4, 6)
    assert np.array_equal(fast.generate(u, TEMPS), ref.generate(u, TEMPS))


@pytest.mark.skipif(not cudasim.SIMULATED, reason="on a GPU the backend is available")
def test_the_cuda_backend_is_registered_and_says_why_it_cannot_run_here():
    why = available_backends("wavenet", device="cpu")["cuda"]
    assert why and "GPU" in why


def test_an_option_of_the_other_path_is_refused():
    from wavegen.engine import EngineError

    for path, option in (("small", {"graph": False}), ("small", {"block_streams": 32}), ("large", {"threads": 64})):
        with pytest.raises(EngineError, match="are options of path="):
            CudaWaveNetEngine(spec_of(1, 1), 3, device=cudasim.DEVICE, path=path, **option)


@pytest.mark.parametrize("per_block", [2, 3])
def test_several_layers_per_block_match_the_reference(per_block):
    # 9 layers: blocks of 2 (the last of one) or of 3; the residual stream stays in shared memory
    # between a block's layers, the skip weights are read from global memory
    spec = spec_of(9, 4)
    ref, fast = pair(spec, "small", layers_per_block=per_block)
    assert fast.impl.grid == -(-9 // per_block) + fast.impl.H1 + fast.impl.H2
    given = codes(6)
    np.testing.assert_allclose(fast.teacher_force(given), ref.teacher_force(given), atol=TOL, rtol=0)
    u = uniforms(3, range(3), 6, 16)
    got = fast.generate(u, TEMPS)
    assert np.array_equal(got, ref.generate(u, TEMPS))
    assert len(np.unique(got)) > 4


@pytest.mark.skipif(not cudasim.SIMULATED, reason="rewrites kernel source: simulator only")
def test_negative_control_the_barrier_between_a_blocks_layers_is_needed():
    spec = spec_of(4, 8)
    want = make_engine(spec, 3, "torch").teacher_force(codes(6))
    with cudasim.patched(wavenet_small, "_chain_layer", "CHAIN-BARRIER", expect=2):  # the barrier and its if
        engine = CudaWaveNetEngine(spec, 3, device=cudasim.DEVICE, path="small", layers_per_block=2)
        got = engine.teacher_force(codes(6))
    assert not np.allclose(got, want, atol=TOL, rtol=0)


def test_layers_per_block_is_checked():
    with pytest.raises(EngineError, match="layers_per_block=5: from 1 to the model's 4 layers"):
        CudaWaveNetEngine(spec_of(4, 8), 1, device=cudasim.DEVICE, path="small", layers_per_block=5)
    with pytest.raises(EngineError, match="options of path='small'"):
        CudaWaveNetEngine(spec_of(4, 8), 1, device=cudasim.DEVICE, path="large", layers_per_block=2)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["small", "large"])
def test_codes_at_u_zero_and_extreme_temperatures_are_the_references(path):
    """u = 0 (drawn once in 2**24) at a low temperature: the reference takes the first code of
    probability > 0; the large path's fixed-point CDF skipped every code of p < 2^-FIX_BITS too."""
    spec = spec_of(4, 8, "mu-law")
    u = uniforms(2**32 - 1, range(3), 0, 12)
    u[:, ::2] = 0.0
    temps = [0.02, 0.03, 0.01]  # codes of p in (1e-45, 2^-FIX_BITS) lie ahead of the likely ones
    ref, fast = pair(spec, path)
    want = ref.generate(u, temps)
    assert np.array_equal(fast.generate(u, temps), want)
    assert np.any(want[[0, 2], ::2] > 0)  # at u = 0 the first possible code is not always code 0
