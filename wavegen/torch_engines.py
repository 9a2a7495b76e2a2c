"""The torch reference engines: clear code, one Python step per sample, CPU or GPU, fp32.

They define what every other backend must compute (teacher-forced logits within a stated
tolerance, identical sampled codes in fp32). Registered as backend ``torch`` by
:mod:`wavegen.generate`. Only fp32: they are the reference, so a reduced precision is a
faster backend's business (numba, cuda); a request for another precision is refused.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from wavegen.engine import Engine, sample_codes, temperatures
from wavegen.kernels.packing import (SAMPLERNN_STREAM_AXES, WAVENET_STREAM_AXES, check_state,
                                     samplernn_state_layout, wavenet_state_layout)


def _gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    gi = x @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    i_r, i_z, i_n = gi.chunk(3, 1)
    h_r, h_z, h_n = gh.chunk(3, 1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def _lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _tensor(state: dict, name: str, device, dtype=None) -> torch.Tensor:
    return torch.from_numpy(np.array(state[name], dtype=dtype)).to(device)


class TorchStepEngine(Engine):
    """The torch engines' shared loop: one Python step per sample, ``_logits`` then ``_push``.

    Subclasses implement ``_logits() -> [B, Q]`` (the next sample's logits from the current
    state) and ``_push(codes [B])`` (advance the state by one sample).
    """

    backend = "torch"
    precisions = ("fp32",)
    device_types = ("cpu", "cuda")

    def _logits(self) -> torch.Tensor:
        raise NotImplementedError

    def _push(self, codes: torch.Tensor) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, uniforms, temperature=1.0) -> np.ndarray:
        u = torch.from_numpy(self._check_uniforms(uniforms)).to(self.device)
        temp = torch.from_numpy(temperatures(temperature, self.streams)).to(self.device)
        out = torch.empty(u.shape, dtype=torch.long, device=self.device)
        for i in range(u.shape[1]):
            codes = sample_codes(self._logits(), u[:, i], temp)
            self._push(codes)
            out[:, i] = codes
        return out.cpu().numpy()

    @torch.no_grad()
    def teacher_force(self, codes) -> np.ndarray:
        codes = torch.from_numpy(self._check_codes(codes)).to(self.device)
        out = torch.empty(codes.shape + (self.q_levels,), dtype=torch.float32, device=self.device)
        for i in range(codes.shape[1]):
            out[:, i] = self._logits()
            self._push(codes[:, i].clone())
        return out.cpu().numpy()


class TorchSampleRNNEngine(TorchStepEngine):
    """Reference SampleRNN engine.

    State: the last ``frame_sizes[0]`` codes, each tier's hidden state, the conditioning
    vectors each tier left for the tier (or MLP) below, and the position ``t``.
    """

    _stream_axes = SAMPLERNN_STREAM_AXES

    def __init__(self, spec: dict, streams: int, device="cpu", precision: str = "fp32"):
        super().__init__(spec, streams, device, precision)
        to = lambda x: x.to(self.device, torch.float32)  # noqa: E731  (a spec of float64 tensors too)
        self.frame_sizes = list(spec["frame_sizes"])
        self.lstm = spec["rnn_type"] == "lstm"
        self.skip = bool(spec["skip"])
        self.dim = int(spec["dim"])
        self.tiers = [{k: ([{n: to(w) for n, w in layer.items()} for layer in v] if k == "rnn"
                           else to(v) if torch.is_tensor(v) else v) for k, v in tier.items()}
                      for tier in spec["tiers"]]
        self.mlp = {k: to(v) for k, v in spec["mlp"].items()}
        emb = spec.get("label_embedding")
        self.label_embedding = to(emb) if emb is not None else None
        self.reset(label_weights=self.default_label_weights())

    def reset(self, prime_codes=None, label_weights=None) -> None:
        B, dev = self.streams, self.device
        blend = self.check_label_weights(label_weights)
        self.t = 0
        self.history = torch.full((B, self.frame_sizes[0]), self.silence, dtype=torch.long, device=dev)
        self.hidden = [tier["h0"][:, :, None, :].expand(-1, -1, B, -1).clone() for tier in self.tiers]
        self.cond = [None] + [torch.zeros(B, tier["ratio"], self.dim, device=dev) for tier in self.tiers]
        self._set_label_blend(None if blend is None else torch.from_numpy(blend).to(dev))
        if prime_codes is not None:
            self.teacher_force(prime_codes)

    def _set_label_blend(self, blend: torch.Tensor | None) -> None:
        self.label_blend = blend
        self.top_cond = None if blend is None else blend @ self.label_embedding

    @torch.no_grad()
    def _logits(self) -> torch.Tensor:
        """Logits [B, Q] for the sample at position t, advancing every tier due at t."""
        t, q = self.t, self.q_levels
        for k, (tier, f) in enumerate(zip(self.tiers, self.frame_sizes)):
            if t % f:
                continue
            frame = (self.history[:, -f:].float() / (q / 2) - 1.0) * 2.0
            x = frame @ tier["input_w"].T + tier["input_b"]
            if k == 0:
                if self.top_cond is not None:
                    x = x + self.top_cond
            else:
                x = x + self.cond[k][:, (t % self.frame_sizes[k - 1]) // f]
            outs = []
            for j, layer in enumerate(tier["rnn"]):
                if self.lstm:
                    h, c = _lstm_cell(x, self.hidden[k][0, j], self.hidden[k][1, j], **layer)
                    self.hidden[k][1, j] = c
                else:
                    h = _gru_cell(x, self.hidden[k][0, j], **layer)
                self.hidden[k][0, j] = h
                outs.append(h)
                x = h
            y = torch.stack(outs).sum(0) if self.skip else x
            self.cond[k + 1] = (y @ tier["up_w"].T + tier["up_b"]).view(self.streams, tier["ratio"], self.dim)
        mlp, w = self.mlp, self.frame_sizes[-1]
        window = self.history[:, -w:]
        x = mlp["in_b"] + self.cond[-1][:, t % w]
        for p in range(w):
            x = x + mlp["tables"][p][window[:, p]]
        x = F.relu(x)
        x = F.relu(x @ mlp["hidden_w"].T + mlp["hidden_b"])
        return x @ mlp["out_w"].T + mlp["out_b"]

    def _push(self, codes: torch.Tensor) -> None:
        self.history = torch.cat([self.history[:, 1:], codes.view(-1, 1)], dim=1)
        self.t += 1

    def _live_state(self) -> dict:
        live = {"history": (self.history, 0)}
        for k, h in enumerate(self.hidden):
            live[f"hidden{k}"] = (h, 2)
        for k, c in enumerate(self.cond[1:], start=1):
            live[f"cond{k}"] = (c, 0)
        if self.label_blend is not None:
            live["label_weights"] = (self.label_blend, 0)
            live["top_cond"] = (self.top_cond, 0)
        return live

    def state_dict(self) -> dict[str, np.ndarray]:
        # copies: on CPU .numpy() is a view, and the hidden states are updated in place
        state = {"t": np.array(self.t, dtype=np.int64), "history": self.history.cpu().numpy().copy()}
        for k, h in enumerate(self.hidden):
            state[f"hidden{k}"] = h.cpu().numpy().copy()
        for k, c in enumerate(self.cond[1:], start=1):
            state[f"cond{k}"] = c.cpu().numpy().copy()
        if self.label_blend is not None:
            state["label_weights"] = self.label_blend.cpu().numpy().copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        check_state(state, samplernn_state_layout(self.spec, self.streams))
        dev = self.device
        self.t = int(state["t"])
        self.history = _tensor(state, "history", dev, np.int64)
        self.hidden = [_tensor(state, f"hidden{k}", dev, np.float32) for k in range(len(self.tiers))]
        self.cond = [None] + [_tensor(state, f"cond{k}", dev, np.float32) for k in range(1, len(self.tiers) + 1)]
        if "label_weights" in state:
            self._set_label_blend(_tensor(state, "label_weights", dev, np.float32))


class TorchWaveNetEngine(TorchStepEngine):
    """Reference WaveNet engine.

    fast-wavenet: each layer keeps a ring buffer of its last ``dilation`` inputs, so a step costs
    O(layers), not O(receptive field). State: the previous code ``prev [B]``, the position ``t``
    and per layer ``buffer{k} [B, d, R]`` (slot ``t % d`` holds the layer input of step t - d).
    After ``reset`` the previous code is silence and every buffer is zeros, as the parallel
    forward's causal zero padding.
    """

    _stream_axes = WAVENET_STREAM_AXES

    def __init__(self, spec: dict, streams: int, device="cpu", precision: str = "fp32"):
        super().__init__(spec, streams, device, precision)
        to = lambda x: x.to(self.device, torch.float32)  # noqa: E731
        self.R = int(spec["residual_channels"])
        self.embed = to(spec["embed"])
        self.dilations = [int(layer["dilation"]) for layer in spec["layers"]]
        self.layers = []
        for layer in spec["layers"]:
            w = layer["conv_w"]
            self.layers.append({
                "conv_w": to(torch.cat([w[0], w[1]], dim=1)),  # [2R, 2R]: [past | current] inputs
                "conv_b": to(layer["conv_b"]),
                "label_bias": to(layer["label_bias"]) if layer["label_bias"] is not None else None,
                "res_w": to(layer["res_w"]), "res_b": to(layer["res_b"]),
                "skip_w": to(layer["skip_w"]), "skip_b": to(layer["skip_b"]),
            })
        self.out = {k: to(spec[k]) for k in ("out1_w", "out1_b", "out2_w", "out2_b")}
        self.reset(label_weights=self.default_label_weights())

    def reset(self, prime_codes=None, label_weights=None) -> None:
        B, dev = self.streams, self.device
        blend = self.check_label_weights(label_weights)
        self.t = 0
        self.prev = torch.full((B,), self.silence, dtype=torch.long, device=dev)
        self.buffers = [torch.zeros(B, d, self.R, device=dev) for d in self.dilations]
        self._set_label_blend(None if blend is None else torch.from_numpy(blend).to(dev))
        if prime_codes is not None:
            self.teacher_force(prime_codes)

    def _set_label_blend(self, blend: torch.Tensor | None) -> None:
        self.label_blend = blend
        # per layer [B, 2R]: a blend of labels is a blend of their folded biases (all linear)
        self.label_biases = [None if blend is None else blend @ layer["label_bias"] for layer in self.layers]

    @torch.no_grad()
    def _logits(self) -> torch.Tensor:
        """Logits [B, Q] for the sample at position t, given the previous code."""
        R, last = self.R, len(self.layers) - 1
        x = self.embed[self.prev]
        skip = 0
        for k, (layer, buf, d) in enumerate(zip(self.layers, self.buffers, self.dilations)):
            slot = self.t % d
            h = torch.cat([buf[:, slot], x], dim=1) @ layer["conv_w"].T + layer["conv_b"]
            buf[:, slot] = x  # read before write: the slot held the input of step t - d
            if self.label_biases[k] is not None:
                h = h + self.label_biases[k]
            z = torch.tanh(h[:, :R]) * torch.sigmoid(h[:, R:])
            skip = skip + z @ layer["skip_w"].T + layer["skip_b"]
            if k < last:  # the last layer's residual output is never read
                x = x + z @ layer["res_w"].T + layer["res_b"]
        out = self.out
        y = F.relu(F.relu(skip) @ out["out1_w"].T + out["out1_b"])
        return y @ out["out2_w"].T + out["out2_b"]

    def _push(self, codes: torch.Tensor) -> None:
        self.prev = codes
        self.t += 1

    def _live_state(self) -> dict:
        live = {"prev": (self.prev, 0)}
        for k, buf in enumerate(self.buffers):
            live[f"buffer{k}"] = (buf, 0)
        if self.label_blend is not None:
            live["label_weights"] = (self.label_blend, 0)
            for k, bias in enumerate(self.label_biases):
                live[f"label_bias{k}"] = (bias, 0)
        return live

    def state_dict(self) -> dict[str, np.ndarray]:
        # copies: on CPU .numpy() is a view, and the ring buffers are updated in place
        state = {"t": np.array(self.t, dtype=np.int64), "prev": self.prev.cpu().numpy().copy()}
        for k, buf in enumerate(self.buffers):
            state[f"buffer{k}"] = buf.cpu().numpy().copy()
        if self.label_blend is not None:
            state["label_weights"] = self.label_blend.cpu().numpy().copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        check_state(state, wavenet_state_layout(self.spec, self.streams))
        dev = self.device
        self.t = int(state["t"])
        self.prev = _tensor(state, "prev", dev, np.int64)
        self.buffers = [_tensor(state, f"buffer{k}", dev, np.float32) for k in range(len(self.dilations))]
        if "label_weights" in state:
            self._set_label_blend(_tensor(state, "label_weights", dev, np.float32))
