"""The cuda backend's SampleRNN engine, both paths, against the torch reference engine.

Where no GPU is present the kernels run on the CPU: the persistent kernel (``path="small"``)
in numba-cuda's simulator with tests/cudasim.py (every block at once, real grid barriers,
NaN-filled shared memory), the Triton kernels (``path="large"``) in Triton's interpreter. On
a GPU the same tests run on the device (the negative controls that edit a kernel need the
simulator and skip there).

Tolerances (max |logits - reference| on logits of size ~1): fp32 engines differ from the
reference in summation order and in exp/tanh to an ulp or two: observed <= 3e-7 here; TOL is
2e-5 so a GPU's own exp/tanh pass, while a perturbed weight (>= 1e-2, the negative controls)
cannot. fp16/bf16 weight storage is the fp32 arithmetic on rounded weights on the small path
(TOL against the reference on those weights); on the large path the activations are rounded
too before each matmul: fp16 observed 3.3e-4 here (TOL_FP16_LARGE 5e-3); bf16, three fewer
mantissa bits (~8x the error), runs on a GPU only (the interpreter's bf16 is wrong):
TOL_BF16_LARGE 3e-2.
"""

import itertools

import cudasim  # noqa: F401  (first: enables the simulators where no GPU is present)
import numpy as np
import pytest

from conftest import tiny_samplernn
from wavegen.engine import EngineError
from wavegen.generate import uniforms
from wavegen.kernels.cuda import samplernn_small
from wavegen.kernels.cuda.samplernn import CudaSampleRNNEngine
from wavegen.kernels.packing import round_spec
from wavegen.torch_engines import TorchSampleRNNEngine

pytestmark = pytest.mark.cudasim

DEVICE = cudasim.DEVICE
Q = 32
TEMPS = [0.8, 1.0, 1.3]
LABELS = ["a", "b", "c"]
BLEND = np.array([[1, 0, 0], [0.2, 0.5, 0.3], [0, 0, 1]], dtype=np.float32)
FRAMES = {2: [8], 3: [8, 2], 4: [16, 4, 2]}
VARIANTS = list(itertools.product(FRAMES, ["gru", "lstm"], ["linear", "mu-law"], [False, True]))
TOL = 2e-5
TOL_FP16_LARGE = 5e-3
TOL_BF16_LARGE = 3e-2
# small-path launch shapes under test: every matrix in shared memory on 2 blocks, or on 3 blocks
# only what fits in 6000 bytes (the rest read from global memory)
SMALL = [{"blocks": 2}, {"blocks": 3, "smem_bytes": 6000}]


def model(tiers=3, rnn_type="lstm", quantization="mu-law", skip=True, labels=(), seed=0, n_rnn=2):
    return tiny_samplernn(FRAMES[tiers], rnn_type, quantization, skip, labels, n_rnn=n_rnn, q_levels=Q, seed=seed)


def cuda_engine(spec, streams, path, precision="fp32", label_weights=None, **options):
    if path == "small" and DEVICE == "cpu":
        options = {"blocks": 2, **options}
    e = CudaSampleRNNEngine(spec, streams, device=DEVICE, precision=precision, path=path, **options)
    if label_weights is not None:
        e.reset(label_weights=label_weights)
    return e


def reference(spec, streams, label_weights=None):
    e = TorchSampleRNNEngine(spec, streams)
    if label_weights is not None:
        e.reset(label_weights=label_weights)
    return e


def codes(streams, n, seed=0):
    return np.random.default_rng(seed).integers(0, Q, (streams, n))


def max_diff(got, want):
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(want).max() > 0.1  # not a comparison of near-zero logits
    return float(np.abs(got - want).max())


# ----- logits: every variant, both paths ---------------------------------------------------------------

@pytest.mark.parametrize("tiers,rnn_type,quantization,skip", VARIANTS)
def test_small_path_teacher_forced_logits_equal_the_reference(tiers, rnn_type, quantization, skip):
    spec = model(tiers, rnn_type, quantization, skip).inference_spec()
    probe = codes(2, FRAMES[tiers][0] + 3)  # every tier steps at least twice: both hidden-state slots
    options = SMALL[VARIANTS.index((tiers, rnn_type, quantization, skip)) % 2]
    e = cuda_engine(spec, 2, "small", **options)
    if "smem_bytes" in options:
        assert 0 < len(e.impl.cached) < len(e.impl.matrices)  # both kinds of reads
    err = max_diff(e.teacher_force(probe), reference(spec, 2).teacher_force(probe))
    assert err < TOL, f"small path logits differ from the reference by {err}"


@pytest.mark.parametrize("tiers,rnn_type,quantization,skip,n_rnn", [
    (2, "gru", "linear", False, 2), (3, "lstm", "mu-law", True, 2), (4, "gru", "mu-law", True, 2),
    (3, "gru", "linear", False, 1)])  # the last as samplernn-3tier: one GRU layer per tier
def test_large_path_teacher_forced_logits_equal_the_reference(tiers, rnn_type, quantization, skip, n_rnn):
    spec = model(tiers, rnn_type, quantization, skip, n_rnn=n_rnn).inference_spec()
    probe = codes(3, FRAMES[tiers][0] + 3)
    err = max_diff(cuda_engine(spec, 3, "large").teacher_force(probe), reference(spec, 3).teacher_force(probe))
    assert err < TOL, f"large path logits differ from the reference by {err}"


# ----- sampling, state, prime, labels ------------------------------------------------------------------

# on a GPU the large path's first call runs 64 samples through its CUDA graph (the interpreter: eagerly)
LARGE_RUN = (64, 53) if DEVICE == "cpu" else (140, 75)


@pytest.mark.parametrize("path,n,cut", [("small", 64, 37), ("large", *LARGE_RUN)])
def test_sampled_codes_are_the_references_and_a_state_continues_exactly(path, n, cut):
    """64 codes on 3 streams identical to the reference's; a state taken mid-frame (cut) and loaded
    into a new engine, or a snapshot restored, continues with the same codes; the state means the
    same to the reference."""
    spec = model(3, "lstm", "mu-law", True, LABELS, seed=2).inference_spec()
    u = uniforms(5, range(3), 0, n)
    want = reference(spec, 3, BLEND).generate(u, TEMPS)
    e = cuda_engine(spec, 3, path, label_weights=BLEND)
    first = e.generate(u[:, :cut], TEMPS)
    state, snap = e.state_dict(), e.snapshot()
    rest = e.generate(u[:, cut:], TEMPS)
    got = np.concatenate([first, rest], 1)
    assert got.dtype == np.int64 and np.array_equal(got, want)
    assert len(np.unique(got)) > Q // 2  # it really sampled
    loaded = cuda_engine(spec, 3, path)
    loaded.load_state_dict(state)  # the label blend comes with the state
    assert np.array_equal(loaded.generate(u[:, cut:], TEMPS), rest)
    e.restore(snap)
    assert e.t == cut and all(np.array_equal(v, state[k]) for k, v in e.state_dict().items())
    probe = codes(3, 11, seed=3)
    ref = reference(spec, 3)
    ref.load_state_dict(state)
    assert max_diff(e.teacher_force(probe), ref.teacher_force(probe)) < TOL


@pytest.mark.parametrize("path", ["small", "large"])
def test_prime_and_a_label_blend_per_stream_condition_as_the_reference(path):
    spec = model(3, "gru", "linear", True, LABELS, n_rnn=1).inference_spec()  # as samplernn-3tier, labelled
    prime, probe = codes(3, 13, seed=4), codes(3, 8, seed=5)  # the probe starts mid-frame
    e, ref = cuda_engine(spec, 3, path), reference(spec, 3)
    for engine in (e, ref):
        engine.reset(prime_codes=prime, label_weights=BLEND)
    assert e.t == 13
    got = e.teacher_force(probe)
    assert max_diff(got, ref.teacher_force(probe)) < TOL
    e.reset(label_weights=BLEND)  # no prime: other logits
    unprimed = e.teacher_force(probe)
    assert np.abs(unprimed - got).max() > 1e-2
    e.reset(label_weights=BLEND[::-1].copy())  # another blend per stream: other logits
    assert np.abs(e.teacher_force(probe) - unprimed).max() > 1e-2


@pytest.mark.parametrize("path,precision,tol", [("small", "fp16", TOL), ("small", "bf16", TOL),
                                                ("large", "fp16", TOL_FP16_LARGE),
                                                pytest.param("large", "bf16", TOL_BF16_LARGE, marks=pytest.mark.gpu)])
def test_reduced_precision_is_the_reference_on_rounded_weights(path, precision, tol):
    spec = model(3, "lstm", "linear", True, LABELS).inference_spec()  # labelled: the label projection rounded too
    probe = codes(3, 11, seed=6)
    got = cuda_engine(spec, 3, path, precision, label_weights=BLEND).teacher_force(probe)
    err = max_diff(got, reference(round_spec(spec, precision), 3, label_weights=BLEND).teacher_force(probe))
    assert err < tol, f"{path} {precision} logits differ from the reference on rounded weights by {err}"
    assert np.abs(got - reference(spec, 3, label_weights=BLEND).teacher_force(probe)).max() > 1e-6  # rounded


def test_the_path_is_chosen_by_stream_count_and_what_fits():
    spec = model(2, "gru", "linear", False).inference_spec()
    assert cuda_engine(spec, 3, None).path == "small"
    assert CudaSampleRNNEngine(spec, 64, device=DEVICE).path == "large"  # wavegen.generate.cuda_batch_path
    assert cuda_engine(spec, 3, None, smem_bytes=512).path == "large"  # the activations do not fit: large
    with pytest.raises(EngineError, match="shared memory"):
        cuda_engine(spec, 3, "small", smem_bytes=512)
    with pytest.raises(EngineError, match="options of path='large'"):
        cuda_engine(spec, 3, "small", block_streams=32)


# ----- negative controls: the comparisons above can fail ----------------------------------------------

def _perturbed(spec, where):
    tier, mlp = spec["tiers"], spec["mlp"]
    tensor, index = {"recurrent weight": (tier[-1]["rnn"][1]["w_hh"], (30, 5)), "h0": (tier[0]["h0"], (0, 1, 3)),
                     "upsampling": (tier[0]["up_w"], (7, 2)), "mlp table": (mlp["tables"], (1, 3, 4)),
                     "output": (mlp["out_w"], (7, 3))}[where]
    tensor[index] += 0.5
    return spec


@pytest.mark.parametrize("path,where", [("small", "recurrent weight"), ("small", "h0"), ("small", "upsampling"),
                                        ("small", "mlp table"), ("large", "recurrent weight")])
def test_a_perturbed_weight_is_detected(path, where):
    m = model(3, "lstm", "mu-law", True)
    probe = codes(2, 11, seed=7)
    want = reference(m.inference_spec(), 2).teacher_force(probe)
    got = cuda_engine(_perturbed(m.inference_spec(), where), 2, path, smem_bytes=6000, blocks=3) if path == "small" \
        else cuda_engine(_perturbed(m.inference_spec(), where), 2, path)
    assert max_diff(got.teacher_force(probe), want) > 10 * TOL, f"perturbing the {where} went unnoticed"


@pytest.mark.skipif(not cudasim.SIMULATED, reason="editing a kernel needs the simulator")
@pytest.mark.parametrize("function,marker", [("samplernn_persistent", "HIDDEN-BARRIER"),
                                             ("samplernn_persistent", "LAYER-BARRIER"),
                                             ("layer_phase", "GATES-BARRIER")])
def test_a_removed_barrier_is_detected(function, marker):
    spec = model(3, "gru", "linear", False).inference_spec()
    probe = codes(2, 11, seed=8)
    want = reference(spec, 2).teacher_force(probe)
    with cudasim.patched(samplernn_small, function, marker):
        got = cuda_engine(spec, 2, "small").teacher_force(probe)
    assert not np.abs(got - want).max() < TOL, f"removing {marker} went unnoticed"  # NaN counts as different


@pytest.mark.slow
@pytest.mark.parametrize("path", ["small", "large"])
def test_codes_at_u_zero_and_extreme_temperatures_are_the_references(path):
    """u = 0 (drawn once in 2**24) at a low temperature: the reference takes the first code of
    probability > 0; the large path's fixed-point CDF skipped every code of p < 2^-FIX_BITS too."""
    spec = model(3, "gru", "linear", True).inference_spec()
    u = uniforms(2**32 - 1, range(3), 0, 12)
    u[:, ::2] = 0.0
    temps = [0.05, 5.0, 1e-4]
    want = reference(spec, 3).generate(u, temps)
    assert np.array_equal(cuda_engine(spec, 3, path).generate(u, temps), want)
    assert np.any(want[[0, 2], ::2] > 0)  # at u = 0 the first possible code is not always code 0
