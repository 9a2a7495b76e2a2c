"""The Engine contract every backend implements, and the sampling arithmetic they share.

An engine runs one model incrementally for B streams at once, built from the model's
inference spec alone (``model.inference_spec()``); :func:`wavegen.generate.make_engine`
builds one for a backend. Arrays in and out are numpy (codes int64, logits and uniforms
float32) so every backend speaks the same language.

Sampling is inverse-CDF on softmax(logits / T) with uniforms the caller supplies, drawn from
:func:`uniforms`, a counter-based generator keyed by (seed, stream, position): a render is
reproducible, backends can be compared sample for sample, and a resumed render continues
byte for byte.

Errors a user can cause (a bad option, precision, label blend, code or temperature) raise
:class:`EngineError`; a backend that cannot run here raises :class:`BackendUnavailableError`.
Both derive from :class:`wavegen.errors.WavegenError` (and from ValueError / RuntimeError).
"""

from __future__ import annotations

import numpy as np
import torch

from wavegen.audio import silence_code
from wavegen.errors import WavegenError

# Every precision name wavegen knows; each backend supports a subset (Engine.precisions).
PRECISIONS = ("fp32", "fp16", "bf16")


class EngineError(WavegenError, ValueError):
    """A request an engine cannot take: an unknown option or precision, bad codes, labels, temperature."""


class BackendUnavailableError(WavegenError, RuntimeError):
    """A backend that cannot run here (not installed, failed to import or build, no device); says why."""


# ----- counter-based uniforms ---------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)

# Bytes one stream-sample of a generate call holds at its peak: the float32 uniform, the uint64
# working arrays that make it (two or three alive at once) and the int64 code returned.
GENERATE_BYTES_PER_SAMPLE = 40


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijective avalanche on uint64 (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniforms(seed: int, streams, start: int, n: int, attempt: int = 0) -> np.ndarray:
    """Uniforms in [0, 1) keyed by (seed, stream, position, attempt): float32 [len(streams), n].

    ``streams`` is a sequence of stream ids; positions run ``start .. start + n - 1``.
    ``attempt`` gives a fresh, still deterministic, draw for the same positions.
    """
    with np.errstate(over="ignore"):
        ids = np.asarray(streams, dtype=np.uint64).reshape(-1, 1)
        key = _mix64(np.uint64(seed) * _GOLDEN + _mix64(ids + np.uint64(0x632BE59BD9B4E019)))
        key = _mix64(key ^ (np.uint64(attempt) * np.uint64(0xD1B54A32D192ED03)))
        pos = np.arange(start, start + n, dtype=np.uint64).reshape(1, -1)
        bits = _mix64(key + pos * _GOLDEN)
    return ((bits >> np.uint64(40)).astype(np.float32)) * np.float32(2.0 ** -24)


def sample_codes(logits: torch.Tensor, u: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling. logits [B, Q] float32, u [B], temperature [B] → codes [B] int64.

    The code is the number of CDF entries ``<= u * total`` (the smallest j whose cumulative
    probability exceeds u), clamped to Q-1: the same arithmetic in every backend.
    """
    z = logits / temperature.view(-1, 1)
    z = z - z.max(dim=1, keepdim=True).values
    p = torch.exp(z)
    cdf = torch.cumsum(p, dim=1)
    threshold = u.view(-1, 1) * cdf[:, -1:]
    return (cdf <= threshold).sum(dim=1).clamp(max=logits.shape[1] - 1)


def temperatures(temperature, streams: int) -> np.ndarray:
    """A float or a list (cycled over streams) → float32 [streams], all positive."""
    values = np.atleast_1d(np.asarray(temperature, dtype=np.float32))
    if values.size == 0 or np.any(~(values > 0)):
        raise EngineError(f"temperature {temperature}: must be positive")
    return np.resize(values, streams).astype(np.float32)


# ----- device-side snapshots ------------------------------------------------------------------------

class EngineSnapshot:
    """An engine's whole state, kept where the engine keeps it: ``t`` (int) and ``arrays``, name →
    a copy (torch tensor on the engine's device, or numpy array) of one live piece of state.

    Opaque to callers: take one with :meth:`Engine.snapshot`, give it back to :meth:`Engine.restore`
    of the same engine (or one of the same class and stream count). Copies, so later steps of
    the engine do not change it and it can be restored any number of times.
    """

    __slots__ = ("t", "arrays", "engine_type")

    def __init__(self, t: int, arrays: dict, engine_type: type):
        self.t, self.arrays, self.engine_type = t, arrays, engine_type


def _clone(x):
    return x.clone() if torch.is_tensor(x) else np.array(x, copy=True)


def _copy_into(live, saved, axis: int, streams) -> None:
    """live[...] = saved (streams None), or only the entries ``streams`` along ``axis``; in place."""
    if torch.is_tensor(live):
        if streams is None:
            live.copy_(saved)
        else:
            index = torch.as_tensor(streams, dtype=torch.long, device=live.device)
            live.index_copy_(axis, index, saved.index_select(axis, index))
    elif streams is None:
        live[...] = saved
    else:
        where = (slice(None),) * axis + (np.asarray(streams, dtype=np.int64),)
        live[where] = saved[where]


# ----- the contract --------------------------------------------------------------------------------

class Engine:
    """Base of every backend's engine. The contract::

        engine.reset(prime_codes=None, label_weights=None)  # prime [B, T0] codes run through first
        codes = engine.generate(uniforms, temperature)      # uniforms [B, n] in [0, 1) → codes [B, n]
        logits = engine.teacher_force(codes)                # logits [B, n, Q] predicting each given code
        snap = engine.snapshot(); engine.restore(snap, streams=None)  # state kept on the device
        engine.state_dict() / engine.load_state_dict(state)  # numpy, for files; portable between backends
        engine.stream_state(b) / engine.set_stream_state(b, s)  # one stream's part of a state_dict

    ``t`` is the position: samples run since reset, the same for every stream. ``label_blend``
    is the per-stream blend of labels the engine is conditioned on (float32 [B, n_labels]), or
    None for an unconditioned model.

    **Snapshots.** :meth:`snapshot` copies the whole state where it lives (a GPU engine's
    tensors stay on the GPU); :meth:`restore` copies it back in place. ``restore(snap,
    streams=[...])`` restores only those streams and leaves the others as they are; the
    snapshot's position must equal the engine's then (a stream cannot be at another position
    than the rest). The render guard's rewind is::

        start = engine.snapshot()            # at the window start
        codes = engine.generate(u)           # the window; some streams fail the guard
        end = engine.snapshot()
        engine.restore(start)                # the whole batch back to the window start
        redrawn = engine.generate(u_redraw)  # every stream runs the window again
        engine.restore(end, streams=keep)    # the streams not redrawn: as they were at the end

    Numpy only enters in :meth:`state_dict`, when state is saved to disk.

    **What a backend implements.** A subclass sets ``backend``, ``precisions`` (of PRECISIONS),
    ``options`` (keyword options its constructor takes beyond spec, streams, device,
    precision), ``device_types`` and ``_stream_axes`` (state_dict name → stream axis, None for
    entries all streams share; a name ``hidden0`` is looked up by its stem ``hidden``), and
    implements ``reset``, ``generate``, ``teacher_force``, ``state_dict``, ``load_state_dict``
    and ``_live_state`` (what snapshots copy), or overrides snapshot/restore for state that is
    neither numpy nor torch.
    """

    backend = "?"
    precisions: tuple[str, ...] = ("fp32",)
    options: tuple[str, ...] = ()
    device_types: tuple[str, ...] = ("cpu",)
    _stream_axes: dict[str, int | None] = {}

    def __init__(self, spec: dict, streams: int, device="cpu", precision: str = "fp32"):
        if int(streams) < 1:
            raise EngineError(f"streams={streams}: need at least one")
        self.device = torch.device(device)
        if self.device.type not in self.device_types:
            raise EngineError(f"the {self.backend} engine runs on {' or '.join(self.device_types)}, not {device!r}")
        if self.device.type == "cuda" and self.device.index is None and torch.cuda.is_available():
            # "cuda" as the tensors made on it report it ("cuda:0"), so that the two compare equal
            self.device = torch.device("cuda", torch.cuda.current_device())
        if precision not in self.precisions:
            raise EngineError(f"precision {precision!r}: the {self.backend} engine has {', '.join(self.precisions)}")
        self.spec = spec
        self.streams = int(streams)
        self.precision = precision
        self.q_levels = int(spec["q_levels"])
        self.labels = list(spec.get("labels") or [])
        self.silence = silence_code(self.q_levels, spec["quantization"])
        self.t = 0
        self.label_blend = None

    # ----- input checks -----

    def check_label_weights(self, label_weights) -> np.ndarray | None:
        """None | [n_labels] | [B, n_labels] → float32 [B, n_labels] (None for an unconditioned model)."""
        if not self.labels:
            if label_weights is not None:
                raise EngineError("this model is not conditioned on labels")
            return None
        if label_weights is None:
            raise EngineError(f"this model is conditioned on labels {self.labels}: choose one")
        w = np.asarray(label_weights, dtype=np.float32)
        if w.ndim == 1:
            w = np.broadcast_to(w, (self.streams, w.shape[0]))
        if w.shape != (self.streams, len(self.labels)):
            raise EngineError(f"label weights of shape {w.shape}: expected ({self.streams}, {len(self.labels)})")
        return np.array(w, order="C")  # a private, writable copy

    def default_label_weights(self) -> np.ndarray | None:
        """An even blend of every label (None for unconditioned models): the state after construction."""
        return np.full(len(self.labels), 1.0 / len(self.labels), dtype=np.float32) if self.labels else None

    def _check_codes(self, codes) -> np.ndarray:
        codes = np.array(codes, dtype=np.int64)  # a private, writable copy
        if codes.ndim != 2 or codes.shape[0] != self.streams:
            raise EngineError(f"codes of shape {codes.shape}: expected [{self.streams}, n]")
        if codes.size and (codes.min() < 0 or codes.max() >= self.q_levels):
            raise EngineError(f"codes outside [0, {self.q_levels - 1}]")
        return codes

    def _check_uniforms(self, u) -> np.ndarray:
        u = np.asarray(u, dtype=np.float32)
        if u.ndim != 2 or u.shape[0] != self.streams:
            raise EngineError(f"uniforms of shape {u.shape}: expected [{self.streams}, n]")
        return u

    # ----- what every backend implements -----

    def reset(self, prime_codes=None, label_weights=None) -> None:
        raise NotImplementedError

    def generate(self, uniforms, temperature=1.0) -> np.ndarray:
        raise NotImplementedError

    def teacher_force(self, codes) -> np.ndarray:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """A snapshot for files: numpy arrays that later steps do not change (copies, not views),
        under the family's canonical names and shapes (wavegen.kernels.packing), so a state moves
        between backends."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _live_state(self) -> dict[str, tuple[object, int]]:
        """name → (live torch tensor or numpy array, its stream axis) for every piece of state
        (derived ones included) except ``t``; writing into them in place changes the engine."""
        raise NotImplementedError

    def state_nbytes(self) -> int:
        """Bytes of the engine's live state (every entry of ``_live_state``, numpy or on the device).
        An engine of one stream tells about what each further stream adds (bench's --batch check)."""
        return sum(int(getattr(x, "nbytes", 0)) for x, _ in self._live_state().values())

    # ----- snapshots on the device -----

    def snapshot(self) -> EngineSnapshot:
        """A copy of the whole state, kept on the engine's device (see the class docstring)."""
        return EngineSnapshot(self.t, {name: _clone(x) for name, (x, _) in self._live_state().items()}, type(self))

    def restore(self, snap: EngineSnapshot, streams=None) -> None:
        """Copy ``snap`` back into the engine: every stream (``streams=None``, position too), or only
        the stream indices ``streams`` (the snapshot's position must be the engine's)."""
        live = self._live_state()
        if not isinstance(snap, EngineSnapshot) or snap.engine_type is not type(self) or set(snap.arrays) != set(live):
            raise EngineError(f"a snapshot of another kind of engine cannot be restored into a {type(self).__name__}")
        for name, (x, _) in live.items():
            if tuple(snap.arrays[name].shape) != tuple(x.shape):
                raise EngineError(f"snapshot entry {name!r} of shape {tuple(snap.arrays[name].shape)}: "
                                  f"this engine's is {tuple(x.shape)}")
        if streams is not None:
            streams = sorted({int(b) for b in np.atleast_1d(streams)})
            if any(not 0 <= b < self.streams for b in streams):
                raise IndexError(f"streams {streams} of {self.streams}")
            if snap.t != self.t:
                raise EngineError(f"a snapshot at position {snap.t} cannot restore some streams of an engine at "
                                  f"{self.t}: every stream shares one position")
            if not streams:
                return
        for name, (x, axis) in live.items():
            _copy_into(x, snap.arrays[name], axis, streams)
        if streams is None:
            self.t = snap.t

    # ----- per-stream state, built on state_dict and _stream_axes -----

    def _stream_axis(self, name: str) -> int | None:
        for key in (name, name.rstrip("0123456789")):
            if key in self._stream_axes:
                return self._stream_axes[key]
        raise NotImplementedError(f"{type(self).__name__}: state entry {name!r} has no stream axis in "
                                  "_stream_axes (name -> axis, or None when shared by all streams)")

    def stream_state(self, b: int, state: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Stream ``b``'s part of ``state`` (default: the engine's own ``state_dict()``).

        Arrays with a stream axis lose that axis (index b taken); shared entries are copied whole.
        """
        if not 0 <= b < self.streams:
            raise IndexError(f"stream {b} of {self.streams}")
        state = self.state_dict() if state is None else state
        out = {}
        for name, value in state.items():
            axis = self._stream_axis(name)
            value = np.asarray(value)
            out[name] = value.copy() if axis is None else np.take(value, b, axis=axis)
        return out

    def set_stream_state(self, b: int, stream_state: dict[str, np.ndarray]) -> None:
        """Replace stream ``b``'s part of the engine state with ``stream_state`` (from :meth:`stream_state`).

        The other streams are untouched. Shared entries must equal the engine's (a stream can
        only be moved within the same position ``t``): EngineError otherwise.
        """
        if not 0 <= b < self.streams:
            raise IndexError(f"stream {b} of {self.streams}")
        state = {name: np.array(value) for name, value in self.state_dict().items()}
        if set(state) != set(stream_state):
            raise EngineError(f"stream state entries {sorted(stream_state)}: expected {sorted(state)}")
        for name, value in state.items():
            axis = self._stream_axis(name)
            if axis is None:
                if not np.array_equal(value, stream_state[name]):
                    raise EngineError(f"shared state {name!r} differs ({stream_state[name]} vs the engine's "
                                      f"{value}): streams can only be swapped at the same position")
                continue
            index = [slice(None)] * value.ndim
            index[axis] = b
            value[tuple(index)] = stream_state[name]
        self.load_state_dict(state)
