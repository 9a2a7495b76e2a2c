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

from conftest import tiny_samplernn, tiny_wavenet
from wavegen.audio import silence_code
from wavegen.engine import EngineError, EngineSnapshot
from wavegen.generate import available_backends, backend_engines, backend_names, make_engine, uniforms
from wavegen.kernels.packing import initial_state, round_spec, state_layout
from wavegen.models.samplernn import SampleRNN

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


# ----- tiny models ---------------------------------------------------------------------------------

def samplernn(tiers=3, rnn_type="gru", quantization="linear", skip=False, labels=(), seed=0):
    return tiny_samplernn(SAMPLERNN_FRAMES[tiers], rnn_type, quantization, skip, labels, q_levels=Q, seed=seed)


def wavenet(layers=4, max_dilation=8, quantization="mu-law", labels=(), seed=0):
    return tiny_wavenet(layers, max_dilation, quantization, labels, q_levels=Q, seed=seed)


def tiny(family, labelled=False, seed=0):
    """A tiny model of each family that exercises most of the engine: LSTM, skip, 3 tiers / 6 layers."""
    labels = LABELS if labelled else ()
    if family == "samplernn":
        return samplernn(3, "lstm", "mu-law", True, labels, seed)
    return wavenet(6, 8, "mu-law", labels, seed)


def parallel_logits(model, codes, labels=None) -> np.ndarray:
    """The model's training-time forward, predicting each of ``codes [B, n]`` after silence: [B, n, Q]."""
    cfg = model.config
    codes = torch.as_tensor(codes)
    silence = silence_code(cfg.q_levels, cfg.quantization)
    labels = None if labels is None else torch.as_tensor(labels)
    with torch.no_grad():
        if isinstance(model, SampleRNN):  # whole top frames: pad the end (causal: it changes nothing before)
            n, ctx = codes.shape[1], model.context_samples
            first = torch.full((codes.shape[0], ctx), silence)
            pad = torch.zeros((codes.shape[0], -n % ctx), dtype=codes.dtype)
            return model.logits(torch.cat([first, codes, pad], 1), None, labels)[0][:, :n].numpy()
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


# ----- the reference: logits, codes ------------------------------------------------------------------

def _close(got, want, backend, precision, what):
    tol = TOLERANCE.get((backend, precision), DEFAULT)[0]
    assert got.shape == want.shape and got.dtype == np.float32
    err = np.abs(got - want).max()
    assert err < tol, f"{backend} {precision} {what} differ from the reference by {err} (tolerance {tol})"
    assert np.abs(want).max() > 0.1  # the comparison is not between near-zero logits


@pytest.mark.parametrize("tiers,rnn_type,quantization,skip", SAMPLERNN_VARIANTS)
@pytest.mark.parametrize("backend,device,precision", backend_cases())
def test_samplernn_teacher_forced_logits_equal_the_parallel_forward(backend, device, precision, tiers, rnn_type,
                                                                    quantization, skip):
    model = samplernn(tiers, rnn_type, quantization, skip)
    codes = random_codes(3, SAMPLERNN_FRAMES[tiers][0] * 5 + 3)  # ends mid-frame
    got = engine(model, 3, backend, device, precision).teacher_force(codes)
    _close(got, parallel_logits(model, codes), backend, precision, "logits")


@pytest.mark.parametrize("pattern,quantization,labelled", WAVENET_VARIANTS)
@pytest.mark.parametrize("backend,device,precision", backend_cases())
def test_wavenet_teacher_forced_logits_equal_the_parallel_forward(backend, device, precision, pattern, quantization,
                                                                  labelled):
    model = wavenet(*pattern, quantization, LABELS if labelled else ())
    codes = random_codes(3, 2 * model.receptive_field + 7)  # every ring buffer wraps at least once
    got = engine(model, 3, backend, device, precision, BLEND if labelled else None).teacher_force(codes)
    _close(got, parallel_logits(model, codes, BLEND if labelled else None), backend, precision, "logits")


@pytest.mark.parametrize("family", ["samplernn", "wavenet"])
@pytest.mark.parametrize("backend,device,precision", backend_cases())
def test_a_label_blend_conditions_each_stream_as_the_parallel_forward(backend, device, precision, family):
    model = tiny(family, labelled=True)
    codes = random_codes(3, 40)
    e = engine(model, 3, backend, device, precision, BLEND)
    _close(e.teacher_force(codes), parallel_logits(model, codes, BLEND), backend, precision, "labelled logits")
    e.reset(label_weights=BLEND[::-1].copy())  # another blend per stream: other logits
    assert np.abs(e.teacher_force(codes) - parallel_logits(model, codes, BLEND)).max() > 1e-2


@pytest.mark.parametrize("family", ["samplernn", "wavenet"])
@pytest.mark.parametrize("backend,device,precision", backend_cases(reference=False))
def test_sampled_codes_are_the_references(backend, device, precision, family):
    model = tiny(family, labelled=True, seed=2)
    u = uniforms(5, range(3), 0, 400)
    want = engine(model, 3, "torch", "cpu", "fp32", BLEND).generate(u, TEMPS)
    got = engine(model, 3, backend, device, precision, BLEND).generate(u, TEMPS)
    assert got.dtype == np.int64 and got.shape == (3, 400)
    assert np.array_equal(got, want)
    assert len(np.unique(got)) > Q // 2  # it really sampled


@pytest.mark.parametrize("family", ["samplernn", "wavenet"])
@pytest.mark.parametrize("backend,device,precision", backend_cases(reference=False))
def test_sampled_codes_are_the_references_at_extreme_temperatures_and_u_zero(backend, device, precision, family):
    """Temperatures near 0 (argmax but for ties), large (near uniform), and uniforms of exactly 0
    (drawn once in 2**24): the reference takes the first code of non-zero probability there."""
    model = tiny(family, labelled=True, seed=2)
    u = uniforms(7, range(3), 0, 120)
    u[:, ::3] = 0.0
    temps = [1e-4, 5.0, 1e-4]
    want = engine(model, 3, "torch", "cpu", "fp32", BLEND).generate(u, temps)
    got = engine(model, 3, backend, device, precision, BLEND).generate(u, temps)
    assert np.array_equal(got, want)
    assert np.mean(want[[0, 2], ::3] > 0) > 0.5  # at u = 0 the first possible code is rarely code 0


@pytest.mark.parametrize("family", ["samplernn", "wavenet"])
@pytest.mark.parametrize("backend,device,precision", backend_cases(("fp16", "bf16"), reference=False))
def test_reduced_precision_is_the_engine_on_rounded_weights(backend, device, precision, family):
    """fp16/bf16 weight storage: the reference on the weights that precision holds, not the fp32 model."""
    model = tiny(family, labelled=True)
    spec = model.inference_spec()
    reference = engine(round_spec(spec, precision), 3, "torch", "cpu", "fp32", BLEND)
    e = engine(spec, 3, backend, device, precision, BLEND)
    assert e.precision == precision
    codes = random_codes(3, 48)
    got = e.teacher_force(codes)
    _close(got, reference.teacher_force(codes), backend, precision, "logits on rounded weights")
    exact = engine(spec, 3, "torch", "cpu", "fp32", BLEND).teacher_force(codes)
    assert 1e-6 < np.abs(got - exact).max() < 0.05  # an approximation of the fp32 model, a close one
    if TOLERANCE.get((backend, precision), DEFAULT)[1]:
        u = uniforms(6, range(3), 48, 300)
        assert np.array_equal(e.generate(u, TEMPS), reference.generate(u, TEMPS))


def test_rounding_is_to_nearest_and_refuses_what_a_precision_cannot_hold():
    spec = tiny("wavenet").inference_spec()
    w = spec["out2_w"].numpy()
    for precision, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):  # torch's casts: nearest, even
        rounded = round_spec(spec, precision)["out2_w"]
        assert torch.equal(rounded, torch.from_numpy(w).to(dtype).float())
        assert not torch.equal(rounded, spec["out2_w"])
    spec["out2_w"] = spec["out2_w"].clone()
    spec["out2_w"][0, 0] = 1e5  # beyond fp16's 65504, well within bf16's range
    with pytest.raises(EngineError, match="fp16"):
        round_spec(spec, "fp16")
    round_spec(spec, "bf16")


def _as_float64(x):
    if torch.is_tensor(x):
        return x.double()
    if isinstance(x, dict):
        return {k: _as_float64(v) for k, v in x.items()}
    return [_as_float64(v) for v in x] if isinstance(x, list) else x


@pytest.mark.parametrize("family", ["samplernn", "wavenet"])
@pytest.mark.parametrize("backend,device,precision", backend_cases())
def test_a_spec_of_float64_tensors_runs_as_its_float32_values(backend, device, precision, family):
    """make_engine takes a model or its spec; a spec a user built in float64 is read as float32
    (the torch SampleRNN engine multiplied float32 inputs by float64 weights: a dtype error)."""
    spec = tiny(family, labelled=True).inference_spec()
    u = uniforms(4, range(3), 0, 60)
    want = engine(spec, 3, backend, device, precision, BLEND).generate(u, TEMPS)
    got = engine(_as_float64(spec), 3, backend, device, precision, BLEND).generate(u, TEMPS)
    assert np.array_equal(got, want)


# ----- state: round trip, layout, prime, one stream ---------------------------------------------------

@pytest.mark.parametrize("family", ["samplernn", "wavenet"])
@pytest.mark.parametrize("backend,device,precision", backend_cases())
def test_state_dict_continues_exactly_and_moves_between_backends(backend, device, precision, family):
    spec = tiny(family, labelled=True).inference_spec()
    layout = state_layout(spec, 3)
    fresh = engine(spec, 3, backend, device, precision, BLEND)
    initial = initial_state(spec, 3, BLEND)
    state0 = fresh.state_dict()  # after reset: the layout's initial state
    assert sorted(state0) == sorted(layout) and all(np.array_equal(state0[k], initial[k]) for k in layout)
    u = uniforms(0, range(3), 0, 200)
    full = fresh.generate(u, TEMPS)
    a = engine(spec, 3, backend, device, precision, BLEND)
    first = a.generate(u[:, :117], TEMPS)  # 117: mid-frame of every tier, mid-ring of every layer
    state = a.state_dict()
    assert all(isinstance(v, np.ndarray) and v.shape == layout[k][0] and v.dtype == layout[k][1]
               for k, v in state.items())
    a.generate(u[:, 117:150], TEMPS)  # later steps must not change the state handed out
    b = engine(spec, 3, backend, device, precision)  # the label blend comes with the state
    b.load_state_dict(state)
    assert np.array_equal(np.concatenate([first, b.generate(u[:, 117:], TEMPS)], 1), full)
    ref = engine(spec, 3, "torch", "cpu", "fp32")  # the state means the same to the reference
    ref.load_state_dict(state)
    b.load_state_dict(state)
    probe = random_codes(3, 50, seed=3)
    tol = TOLERANCE.get((backend, precision), DEFAULT)[0]
    assert np.abs(ref.teacher_force(probe) - b.teacher_force(probe)).max() < tol
    name = "buffer0" if family == "wavenet" else "hidden0"
    with pytest.raises(EngineError, match=name):
        b.load_state_dict({**state, name: np.zeros((3, 5, 8), np.float32)})


@pytest.mark.parametrize("family", ["samplernn", "wavenet"])
@pytest.mark.parametrize("backend,device,precision", backend_cases())
def test_prime_is_teacher_forcing(backend, device, precision, family):
    model = tiny(family)
    prime, probe = random_codes(3, 37, seed=4), random_codes(3, 30, seed=5)
    primed = engine(model, 3, backend, device, precision)
    primed.reset(prime_codes=prime)
    assert primed.t == 37
    got = primed.teacher_force(probe)
    _close(got, parallel_logits(model, np.concatenate([prime, probe], 1))[:, 37:], backend, precision,
           "logits after a prime")
    unprimed = engine(model, 3, backend, device, precision).teacher_force(probe)
    assert np.abs(got - unprimed).max() > 1e-2  # the prime changed the state


@pytest.mark.parametrize("family", ["samplernn", "wavenet"])
@pytest.mark.parametrize("backend,device,precision", backend_cases())
def test_one_streams_state_moves_into_another_slot(backend, device, precision, family):
    e = engine(tiny(family, labelled=True), 3, backend, device, precision, BLEND)
    e.generate(uniforms(1, range(3), 0, 29), TEMPS)
    before = e.state_dict()
    e.set_stream_state(0, e.stream_state(2))
    after = e.state_dict()
    assert all(np.array_equal(after[k][1], before[k][1]) for k in after if k != "t" and k[:6] != "hidden")
    probe = np.repeat(random_codes(1, 30, seed=6), 3, axis=0)
    logits = e.teacher_force(probe)
    tol = TOLERANCE.get((backend, precision), DEFAULT)[0]
    # stream 0 now continues as stream 2 (to rounding: a slot's block of streams may set the summation order)
    assert np.abs(logits[0] - logits[2]).max() < tol
    assert np.abs(logits[0] - logits[1]).max() > 1e-2


# ----- negative controls: the comparisons above can fail ----------------------------------------------

def _perturb(spec, where):
    """Move one weight (or one table row: a single entry may only ever meet a ReLU's zero side) by 0.5, in place."""
    if spec["family"] == "samplernn":
        tier, mlp = spec["tiers"], spec["mlp"]
        target = {"recurrent bias": (tier[1]["rnn"][0]["b_hh"], (5,)), "h0": (tier[0]["h0"], (0, 1, 3)),
                  "upsampling": (tier[0]["up_w"], (7, 2)), "mlp table": (mlp["tables"], (1, 3)),
                  "output": (mlp["out_w"], (7, 3))}[where]
    else:
        layer = spec["layers"]
        target = {"past tap": (layer[-1]["conv_w"], (0, 3, 2)), "current tap": (layer[0]["conv_w"], (1, 10, 1)),
                  "gate bias": (layer[-1]["conv_b"], (8 + 2,)), "label bias": (layer[1]["label_bias"], (1, 4)),
                  "residual": (layer[0]["res_w"], (2, 3)), "skip": (layer[2]["skip_b"], (5,)),
                  "embedding": (spec["embed"], (silence_code(Q, "mu-law"), 0)), "output": (spec["out2_w"], (7, 3))}[where]
    tensor, index = target
    tensor[index] += 0.5


NEGATIVE = [("samplernn", w) for w in ("recurrent bias", "h0", "upsampling", "mlp table", "output")] + \
           [("wavenet", w) for w in ("past tap", "current tap", "gate bias", "label bias", "residual", "skip",
                                     "embedding", "output")]


@pytest.mark.parametrize("family,where", NEGATIVE)
@pytest.mark.parametrize("backend,device,precision", backend_cases())
def test_a_perturbed_weight_is_detected(backend, device, precision, family, where):
    model = tiny(family, labelled=True)
    codes = random_codes(3, 40)
    want = parallel_logits(model, codes, BLEND)
    spec = model.inference_spec()
    _perturb(spec, where)
    err = np.abs(engine(spec, 3, backend, device, precision, BLEND).teacher_force(codes) - want).max()
    tol = TOLERANCE.get((backend, precision), DEFAULT)[0]
    assert err > 10 * tol, f"perturbing the {where} went unnoticed by {backend} (max difference {err})"


# ----- input checks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend,device,precision", backend_cases())
def test_bad_input_is_refused_with_a_clear_error(backend, device, precision):
    e = engine(tiny("wavenet", labelled=True), 2, backend, device, precision, BLEND[:2])
    with pytest.raises(EngineError, match="codes outside"):
        e.teacher_force(np.full((2, 3), Q))
    with pytest.raises(EngineError, match=r"codes of shape \(3, 4\)"):
        e.teacher_force(np.zeros((3, 4), np.int64))
    with pytest.raises(EngineError, match="uniforms of shape"):
        e.generate(np.zeros((3, 4), np.float32))
    with pytest.raises(EngineError, match="positive"):
        e.generate(np.zeros((2, 4), np.float32), temperature=[1.0, 0.0])
    with pytest.raises(EngineError, match="expected"):
        e.reset(label_weights=np.ones((2, 2)))
    with pytest.raises(EngineError, match="conditioned on labels"):
        e.reset()
    with pytest.raises(EngineError, match="not conditioned"):
        engine(tiny("wavenet"), 2, backend, device, precision).reset(label_weights=[1.0, 0.0, 0.0])
    assert e.t == 0 and np.array_equal(e.label_blend if not torch.is_tensor(e.label_blend)
                                       else e.label_blend.cpu().numpy(), BLEND[:2])  # a refused reset changes nothing
