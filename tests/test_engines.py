"""The Engine contract, for every backend registered and available here, against the reference.

A backend joins these tests by registering (wavegen.generate.register_engine from the module
named in BACKEND_MODULES): :func:`backend_cases` lists every (backend, device, precision) its
engine classes declare. Device variants on CUDA carry the ``gpu`` marker; a backend that cannot
run here is listed as skipped with its reason.

References: in fp32 the model's parallel (training-time) forward; at a reduced precision the
torch engine on ``packing.round_spec(spec, precision)`` (the weights that precision stores).
TOLERANCE states, per backend and precision, the largest difference of teacher-forced logits
allowed and whether sampled codes must be identical; a backend without a row gets DEFAULT.
"""

import itertools

import numpy as np
import pytest
import torch

from wavegen.audio import silence_code
from wavegen.engine import EngineError, EngineSnapshot
from wavegen.generate import available_backends, backend_engines, backend_names, make_engine, uniforms
from wavegen.kernels.packing import initial_state, round_spec, state_layout
from wavegen.models.samplernn import SampleRNN, SampleRNNConfig
from wavegen.models.wavenet import WaveNet, WaveNetConfig

Q = 32
TEMPS = [0.8, 1.0, 1.3]  # per stream
LABELS = ["a", "b", "c"]
BLEND = np.array([[1, 0, 0], [0.2, 0.5, 0.3], [0, 0, 1]], dtype=np.float32)  # per stream

# (backend, precision) → (max |logits - reference|, sampled codes identical to the reference's).
# fp32 engines differ from the reference in summation order only: observed ~1e-7 on logits of
# size ~1; a real bug moves them by far more (see the negative controls). fp16/bf16 storage is
# exactly the fp32 engine on rounded weights, so it is held to the same bound against that.
TOLERANCE = {
    ("torch", "fp32"): (1e-4, True),
    ("numba", "fp32"): (1e-4, True),
    ("numba", "fp16"): (1e-4, True),
    ("numba", "bf16"): (1e-4, True),
}
DEFAULT = (1e-4, True)

SAMPLERNN_FRAMES = {2: [8], 3: [8, 2], 4: [16, 4, 2]}
SAMPLERNN_VARIANTS = list(itertools.product(SAMPLERNN_FRAMES, ["gru", "lstm"], ["linear", "mu-law"], [False, True]))
WAVENET_PATTERNS = [(1, 1), (4, 8), (9, 4), (6, 8)]  # (layers, max_dilation): one layer; a stack; stacks; cut short
WAVENET_VARIANTS = list(itertools.product(WAVENET_PATTERNS, ["linear", "mu-law"], [False, True]))


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The torch engine runs many tiny ops: on a busy 2-core machine a second thread makes it
    up to ~70x slower (measured), not faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----- tiny models ---------------------------------------------------------------------------------

def _perturbed(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():  # off the init, so every weight, bias and h0 matters
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def tiny_samplernn(tiers=3, rnn_type="gru", quantization="linear", skip=False, labels=(), seed=0):
    torch.manual_seed(seed)
    cfg = SampleRNNConfig(frame_sizes=SAMPLERNN_FRAMES[tiers], n_rnn=2, dim=24, emb_size=6, q_levels=Q,
                          quantization=quantization, rnn_type=rnn_type, skip=skip, labels=list(labels))
    return _perturbed(SampleRNN(cfg), seed)


def tiny_wavenet(layers=4, max_dilation=8, quantization="mu-law", labels=(), seed=0):
    torch.manual_seed(seed)
    cfg = WaveNetConfig(layers=layers, max_dilation=max_dilation, residual_channels=8, skip_channels=12,
                        end_channels=10, q_levels=Q, quantization=quantization, labels=list(labels), label_dim=5)
    return _perturbed(WaveNet(cfg), seed)


def tiny(family, labelled=False, seed=0):
    """A tiny model of each family that exercises most of the engine: LSTM, skip, 3 tiers / 6 layers."""
    labels = LABELS if labelled else ()
    if family == "samplernn":
        return tiny_samplernn(3, "lstm", "mu-law", True, labels, seed)
    return tiny_wavenet(6, 8, "mu-law", labels, seed)


def parallel_logits(model, codes, labels=None) -> np.ndarray:
    """The model's training-time forward, predicting each of ``codes [B, n]`` after silence: [B, n, Q]."""
    cfg = model.config
    codes = torch.as_tensor(codes)
    silence = silence_code(cfg.q_levels, cfg.quantization)
    labels = None if labels is None else torch.as_tensor(labels)
    with torch.no_grad():
        if isinstance(model, SampleRNN):
            ctx = torch.full((codes.shape[0], model.context_samples), silence)
            return model.logits(torch.cat([ctx, codes], 1), None, labels)[0].numpy()
        first = torch.full((codes.shape[0], 1), silence)
        return model.parallel_logits(torch.cat([first, codes[:, :-1]], 1), labels).numpy()


def random_codes(streams, n, seed=0):
    return np.random.default_rng(seed).integers(0, Q, (streams, n))


# ----- the backends under test ---------------------------------------------------------------------

def backend_cases(precisions=("fp32",), devices=("cpu", "cuda"), reference=True):
    """pytest params (backend, device, precision) for every registered backend's engines."""
    cases = []
    reasons = available_backends()
    for backend in backend_names():
        if backend == "torch" and not reference:
            continue
        classes = backend_engines(backend).values()
        for device, precision in itertools.product(devices, precisions):
            if not any(device in c.device_types and precision in c.precisions for c in classes):
                continue
            marks = [pytest.mark.gpu] if device == "cuda" else []
            if reasons[backend] is not None:
                marks.append(pytest.mark.skip(reason=f"{backend}: {reasons[backend]}"))
            cases.append(pytest.param(backend, device, precision, id=f"{backend}-{device}-{precision}", marks=marks))
    return cases


def engine(model_or_spec, streams, backend, device, precision="fp32", label_weights=None):
    e = make_engine(model_or_spec, streams, backend, device, precision=precision)
    if label_weights is not None:
        e.reset(label_weights=label_weights)
    return e


# ----- snapshots on the device -----------------------------------------------------------------------

@pytest.mark.parametrize("family", ["samplernn", "wavenet"])
@pytest.mark.parametrize("backend,device,precision", backend_cases())
def test_snapshot_restore_rewinds_exactly_and_stays_on_the_device(family, backend, device, precision):
    model = tiny(family, labelled=True)
    e = engine(model, 3, backend, device, precision, BLEND)
    e.generate(uniforms(0, range(3), 0, 37), TEMPS)  # 37: mid-frame of every tier, mid-ring of every layer
    saved = e.state_dict()
    snap = e.snapshot()
    for value in snap.arrays.values():
        if e.device.type != "cpu" or torch.is_tensor(value):  # a GPU engine's snapshot never leaves the GPU
            assert torch.is_tensor(value) and value.device == e.device
    u = uniforms(1, range(3), 37, 50)
    first = e.generate(u, TEMPS)
    e.reset(label_weights=BLEND[::-1].copy())  # another blend and position: the snapshot holds both
    e.generate(uniforms(2, range(3), 0, 20), TEMPS)
    for _ in range(2):  # a snapshot can be restored again: later steps do not change it
        e.restore(snap)
        assert e.t == 37
        assert np.array_equal(e.generate(u, TEMPS), first)
    e.restore(snap)
    now = e.state_dict()
    assert sorted(now) == sorted(saved) and all(np.array_equal(now[k], saved[k]) for k in saved)


@pytest.mark.parametrize("family", ["samplernn", "wavenet"])
@pytest.mark.parametrize("backend,device,precision", backend_cases())
def test_restoring_some_streams_is_the_render_guards_rewind(family, backend, device, precision):
    """Rewind all to the window start, redraw every stream, move the kept ones forward again."""
    spec = tiny(family, labelled=True).inference_spec()
    window, probe = uniforms(3, range(3), 0, 45), random_codes(3, 20, seed=5)
    redraw = uniforms(3, range(3), 0, 45, attempt=1)
    e = engine(spec, 3, backend, device, precision, BLEND)
    start = e.snapshot()
    e.generate(window, TEMPS)
    end = e.snapshot()
    e.restore(start)
    e.generate(redraw, TEMPS)
    e.restore(end, streams=[0, 2])  # stream 1 keeps its redraw
    got = e.teacher_force(probe)
    kept, redrawn = (engine(spec, 3, backend, device, precision, BLEND) for _ in range(2))
    kept.generate(window, TEMPS)
    redrawn.generate(redraw, TEMPS)
    expect_kept, expect_redrawn = kept.teacher_force(probe), redrawn.teacher_force(probe)
    assert np.array_equal(got[[0, 2]], expect_kept[[0, 2]])
    assert np.array_equal(got[1], expect_redrawn[1])
    assert np.abs(expect_kept[1] - expect_redrawn[1]).max() > 1e-3  # the two histories differ: the test can fail


@pytest.mark.parametrize("backend,device,precision", backend_cases())
def test_restore_refuses_a_snapshot_it_cannot_take(backend, device, precision):
    spec = tiny("wavenet").inference_spec()
    e = engine(spec, 3, backend, device, precision)
    snap = e.snapshot()
    e.generate(uniforms(0, range(3), 0, 5), 1.0)
    with pytest.raises(EngineError, match="position"):
        e.restore(snap, streams=[1])  # one stream cannot be at another position than the rest
    with pytest.raises(EngineError, match="shape"):
        e.restore(engine(spec, 2, backend, device, precision).snapshot())
    other = "torch" if backend != "torch" else next((b for b in backend_names() if b != "torch"
                                                     and available_backends("wavenet")[b] is None), None)
    if other is not None:
        with pytest.raises(EngineError, match="another kind of engine"):
            e.restore(make_engine(spec, 3, other).snapshot())
    with pytest.raises(EngineError, match="another kind of engine"):
        e.restore(EngineSnapshot(0, {}, type(e)))
    e.restore(snap)  # whole-batch restore takes the snapshot's position
    assert e.t == 0
