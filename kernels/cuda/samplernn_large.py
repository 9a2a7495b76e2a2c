"""SampleRNN on the GPU for many streams: tensor-core matmuls, a few fused Triton kernels per
sample, replayed from a CUDA graph.

Per sample (position t), for B streams at once:

- for each tier due at t, top first: one :func:`srnn_layer` launch per RNN layer (the
  recurrent and input matmuls of all gates of a tile of dims, then the GRU/LSTM update of those
  dims: the gating never leaves registers), then the upsampling and, for a tier below, the
  hoisted input projection of the next tier, both :func:`srnn_linear`;
- :func:`srnn_mlp_input`: the MLP's first layer as a gather from the per-position tables plus
  the conditioning, ReLU;
- :func:`srnn_linear` for the hidden layer (ReLU);
- :func:`srnn_out_sample`: the logits of a block of streams in registers, then the draw of
  each stream's code (inverse CDF, the arithmetic of :func:`wavegen.engine.sample_codes`, with
  an exact fixed-point cumulative sum standing in for torch's float64 running sum) into the
  ring of past codes.

The kernels live in :mod:`.samplernn_large_kernels` (with their tiling and precision); this
module launches them (:class:`FusedSampleRNN`) and registers the configurations the compile
check builds.

The kernels a step launches depend on the position only through ``t mod 2*F0`` (which tiers
are due, the hidden-state slot, the conditioning row), so on a GPU sampling captures
``2*F0*reps`` consecutive samples from an aligned position into one CUDA graph and replays it;
the unaligned head and the tail of a call run the same kernels one by one.
"""

from __future__ import annotations

import numpy as np
import torch
import triton

from wavegen.engine import EngineError
from wavegen.kernels.cuda import register_triton_kernel
from wavegen.kernels.cuda.samplernn_large_kernels import srnn_layer, srnn_linear, srnn_mlp_input, srnn_out_sample
from wavegen.kernels.packing import as_numpy

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TEACHER_FORCE, SAMPLE = 0, 1

BK = 32  # reduction chunk of every matmul
LAYER_BD = 32  # dims per srnn_layer program (four [BB, BD] accumulators live at once)
LINEAR_BN = 64  # output columns per srnn_linear program (small tiles)
BIG_TILE = (128, 128, 32, 8)  # (BM, BN, BK, warps) of srnn_linear for 16-bit weights and >= BIG_ROWS rows
BIG_ROWS = 1024
MLP_BD = 64  # dims per srnn_mlp_input program
OUT_BB = 32  # streams per srnn_out_sample program at most (the [BB, QP] logits live in registers)
LAYER_WARPS = 8  # four accumulators and four weight tiles per step: 4 warps spill (compile check)


def linear_warps(precision: str) -> int:
    """Warps per small-tile srnn_linear program: IEEE fp32 dots (FMA) need twice the registers of
    16-bit ones."""
    return 8 if precision == "fp32" else 4


def linear_tile(rows: int, precision: str, block_streams: int) -> tuple[int, int, int, int]:
    """(BM, BN, BK, warps) of srnn_linear: big tiles for many rows of 16-bit weights (a [64, 64]
    tile reads ~3x the bytes per multiply-add of a [128, 128] one from L2), else block_streams
    rows by LINEAR_BN columns (a guess until measured: issue 12)."""
    if precision != "fp32" and rows >= BIG_ROWS:
        return BIG_TILE
    return block_streams, LINEAR_BN, BK, linear_warps(precision)


GRAPH_MIN_SAMPLES = 64  # a CUDA graph holds at least this many samples (a whole number of 2*F0)


def fix_bits(q: int) -> int:
    """Fractional bits of the sampler's fixed-point probabilities: q values of at most 1 must sum
    below 2^63 (54 for q = 256). The same rule as wavenet_large's sampler."""
    return min(60, 62 - max(1, (int(q) - 1).bit_length()))


def default_block_streams(streams: int) -> int:
    """Streams per program: enough programs to fill ~132 multiprocessors at dim 1024 (a guess until
    measured: issue 12)."""
    return 16 if streams <= 128 else 32 if streams <= 1024 else 64


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


class FusedSampleRNN:
    """Runs the large-batch kernels for a :class:`~wavegen.kernels.cuda.samplernn.CudaSampleRNNEngine`
    (its state, on its device). ``block_streams``: streams per program (a power of two >= 16);
    ``graph``: replay CUDA graphs when sampling (default: on a GPU)."""

    def __init__(self, engine, block_streams: int | None = None, graph: bool | None = None):
        self.engine = e = engine
        dev, B, spec, p = e.device, e.streams, e.rounded, e.packed
        self.bb = int(block_streams or default_block_streams(B))
        if self.bb < 16 or self.bb & (self.bb - 1):
            raise EngineError(f"block_streams={block_streams}: a power of two, at least 16")
        self.graph = bool(dev.type == "cuda" if graph is None else graph)
        if self.graph and dev.type != "cuda":
            raise EngineError("graph=True needs a CUDA device")
        dtype = DTYPES[e.precision]
        self.prec = "ieee" if e.precision == "fp32" else "tf32"  # 16-bit inputs ignore it
        wt = lambda x: torch.from_numpy(np.ascontiguousarray(as_numpy(x).T)).to(dev, dtype)  # noqa: E731 - [in, out]
        f32 = lambda x: torch.from_numpy(np.ascontiguousarray(as_numpy(x), np.float32)).to(dev)  # noqa: E731
        V = p["V"]
        self.dim, self.L, self.G, self.q = p["dim"], p["n_layers"], p["gates"], int(p["tier_int"][0, 2])
        gd = self.G * self.dim
        self.tiers = []
        for k, tier in enumerate(spec["tiers"]):
            F = e.frame_sizes[k]
            a, c = p["tier_off"][k, 0], p["tier_off"][k, 1]
            rnn = tier["rnn"]
            self.tiers.append({
                "w_hh": [wt(layer["w_hh"]) for layer in rnn], "b_hh": [f32(layer["b_hh"]) for layer in rnn],
                "w_ih": [None] + [wt(layer["w_ih"]) for layer in tier["rnn"][1:]],
                "b_ih": [None] + [f32(layer["b_ih"]) for layer in tier["rnn"][1:]],
                "A": f32(V[a:a + gd * F]), "C": f32(V[c:c + gd]), "up_w": wt(tier["up_w"]), "up_b": f32(tier["up_b"]),
                "w_ih0": wt(tier["rnn"][0]["w_ih"]) if k > 0 else None})
        mlp = spec["mlp"]
        self.mlp = {"tables": f32(mlp["tables"]), "in_b": f32(mlp["in_b"]), "hidden_w": wt(mlp["hidden_w"]),
                    "hidden_b": f32(mlp["hidden_b"]), "out_w": wt(mlp["out_w"]), "out_b": f32(mlp["out_b"])}
        K, F0 = len(e.frame_sizes), e.frame_sizes[0]
        self.ring = torch.zeros((B, F0), dtype=torch.int64, device=dev)
        # the MLP's activations feed only matmuls, which round them to the weights' dtype: stored so
        self.x1 = torch.zeros((B, self.dim), dtype=dtype, device=dev)
        self.x2 = torch.zeros_like(self.x1)
        self.ybuf = torch.zeros((K, B, self.dim), dtype=torch.float32, device=dev)
        self.dummy = torch.zeros(1, dtype=torch.float32, device=dev)
        self.no_codes = torch.zeros(1, dtype=torch.int64, device=dev)
        self.period = 2 * F0 * -(-GRAPH_MIN_SAMPLES // (2 * F0))  # samples per graph: the kernels' pattern repeats
        self._graph = None

    # ----- one sample -----

    def _linear(self, x, w, bias, y, rows, relu=False) -> None:
        k_in, n_out = w.shape
        bm, bn, bk, warps = linear_tile(rows, self.engine.precision, self.bb)
        grid = (triton.cdiv(rows, bm), triton.cdiv(n_out, bn))
        srnn_linear[grid](x, w, self.dummy if bias is None else bias, y, rows, n_out, k_in, HAS_BIAS=bias is not None,
                          RELU=relu, BM=bm, BN=bn, BK=bk, PREC=self.prec, num_warps=warps)

    def _tier(self, k: int, t: int) -> None:
        e, T = self.engine, self.tiers[k]
        B, dim, L, F, F0 = e.streams, self.dim, self.L, e.frame_sizes[k], e.frame_sizes[0]
        old = (t // F) % 2
        new = 1 - old
        add, add_stride = self.dummy, 0
        if k > 0:
            proj = e._proj(k)  # [B, ratio above, G*dim]
            add, add_stride = proj[:, (t % e.frame_sizes[k - 1]) // F], proj.shape[1] * proj.shape[2]
        elif e.label_blend is not None:
            add, add_stride = e.label_proj, e.label_proj.shape[1]
        grid = (triton.cdiv(B, self.bb), triton.cdiv(dim, LAYER_BD))
        for layer in range(L):
            srnn_layer[grid](
                e.hbuf[new, k, layer - 1] if layer else self.dummy, T["w_ih"][layer] if layer else self.dummy,
                T["b_ih"][layer] if layer else self.dummy, e.hbuf[old, k, layer], T["w_hh"][layer], T["b_hh"][layer],
                e.cbuf[k, layer] if e.lstm else self.dummy, e.hbuf[new, k, layer], self.ybuf[k], T["A"], T["C"],
                self.ring, t % F0, add, add_stride, B, dim, F, F0, float(self.q / 2), FP=max(16, _pow2(F)),
                LAYER0=layer == 0, HAS_ADD=add_stride > 0, LSTM=e.lstm, SKIP=bool(e.packed["skip"]),
                FIRST=layer == 0, BB=self.bb, BD=LAYER_BD, BK=BK, PREC=self.prec, num_warps=LAYER_WARPS)
        y = self.ybuf[k] if e.packed["skip"] else e.hbuf[new, k, L - 1]
        cond = e._cond(k)
        self._linear(y, T["up_w"], T["up_b"], cond, B)
        if k + 1 < len(self.tiers):
            self._project(k)

    def _project(self, k: int) -> None:
        """Tier k+1's input projections of tier k's conditioning vectors (pbuf)."""
        e = self.engine
        self._linear(e._cond(k), self.tiers[k + 1]["w_ih0"], None, e._proj(k + 1), e.streams * e.ratios[k])

    def _step(self, i, t, mode, n, codes_in, uniforms, temps, codes_out, logits_out) -> None:
        e = self.engine
        B, dim, F0 = e.streams, self.dim, e.frame_sizes[0]
        for k in range(len(self.tiers)):
            if t % e.frame_sizes[k] == 0:
                self._tier(k, t)
        w = e.frame_sizes[-1]
        cond = e._cond(len(self.tiers) - 1)  # [B, w, dim]
        grid = (triton.cdiv(B, self.bb), triton.cdiv(dim, MLP_BD))
        srnn_mlp_input[grid](self.ring, t % F0, cond[:, t % w], w * dim, self.mlp["tables"], self.mlp["in_b"], self.x1,
                             B, dim, self.q, F0, w, BB=self.bb, BD=MLP_BD, num_warps=4)
        self._linear(self.x1, self.mlp["hidden_w"], self.mlp["hidden_b"], self.x2, B, relu=True)
        bb = min(self.bb, OUT_BB)
        srnn_out_sample[(triton.cdiv(B, bb),)](
            self.x2, self.mlp["out_w"], self.mlp["out_b"], self.ring, t % F0, codes_in, uniforms, temps, codes_out,
            logits_out, B, dim, F0, i, n, mode, Q=self.q, QP=max(16, _pow2(self.q)), BB=bb, BK=BK, PREC=self.prec,
            FIX_BITS=fix_bits(self.q),
            num_warps=8)

    # ----- calls -----

    def _run(self, mode, t0, n, codes_in, uniforms, temps, codes_out, logits_out) -> None:
        e = self.engine
        F0 = e.frame_sizes[0]
        self.ring.copy_(torch.roll(e.history, t0 % F0, dims=1))  # position s in slot s % F0
        i = 0
        use_graph = mode == SAMPLE and self.graph
        while i < n:
            t = t0 + i
            if use_graph and t % self.period == 0 and n - i >= self.period:
                self._replay(uniforms[:, i:i + self.period], temps, codes_out[:, i:i + self.period])
                i += self.period
                continue
            self._step(i, t, mode, n, codes_in, uniforms, temps, codes_out, logits_out)
            i += 1
        e.history.copy_(torch.roll(self.ring, -((t0 + n) % F0), dims=1))

    def _replay(self, uniforms, temps, codes_out) -> None:
        """``period`` samples from an aligned position through the CUDA graph (captured on first use)."""
        if self._graph is None:
            self._capture(temps)
        g, u_in, temps_in, codes = self._graph
        u_in.copy_(uniforms)
        temps_in.copy_(temps)
        g.replay()
        codes_out.copy_(codes)

    def _capture(self, temps) -> None:
        e, P = self.engine, self.period
        u_in = torch.zeros((e.streams, P), dtype=torch.float32, device=e.device)
        temps_in = temps.clone()
        codes = torch.zeros((e.streams, P), dtype=torch.int64, device=e.device)
        t_aligned = e.t - e.t % P + P  # any aligned position: the launches only see t mod 2*F0
        saved, ring = e.snapshot(), self.ring.clone()
        side = torch.cuda.Stream(e.device)
        side.wait_stream(torch.cuda.current_stream(e.device))
        with torch.cuda.stream(side):  # compile every kernel variant before capture
            for i in range(P):
                self._step(i, t_aligned + i, SAMPLE, P, self.no_codes, u_in, temps_in, codes, self.dummy)
        torch.cuda.current_stream(e.device).wait_stream(side)
        e.restore(saved)
        self.ring.copy_(ring)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(P):
                self._step(i, t_aligned + i, SAMPLE, P, self.no_codes, u_in, temps_in, codes, self.dummy)
        self._graph = (g, u_in, temps_in, codes)

    def run_sample(self, t0: int, uniforms: torch.Tensor, temps: torch.Tensor, codes_out: torch.Tensor) -> None:
        """codes_out [B, n] drawn with uniforms [B, n] and temperatures [B], from position t0."""
        self._run(SAMPLE, t0, uniforms.shape[1], self.no_codes, uniforms, temps, codes_out, self.dummy)

    def run_teacher_force(self, t0: int, codes_in: torch.Tensor, logits_out: torch.Tensor) -> None:
        """logits_out [B, n, Q] for the given codes [B, n], from position t0."""
        self._run(TEACHER_FORCE, t0, codes_in.shape[1], codes_in, self.dummy, self.dummy, self.no_codes, logits_out)

    def hoist(self, t0: int) -> None:
        """Every tier's input projections from the conditioning (after a state is loaded)."""
        for k in range(len(self.tiers) - 1):
            self._project(k)


def _register() -> None:
    """The configurations the compile check builds: samplernn-3tier (dim 1024, 1-layer GRU, Q 256,
    frames 8/2) at 32 streams per program, fp32 (IEEE) and bf16; plus a 2-layer LSTM layer."""
    f, i32 = "*fp32", "i32"
    for prec, wdt in (("fp32", "*fp32"), ("bf16", "*bf16")):
        p = {"PREC": "ieee" if prec == "fp32" else "tf32"}
        layer = {"X": f, "WI": wdt, "BI": f, "H": f, "WH": wdt, "BH": f, "CST": f, "HN": f, "Y": f, "A": f, "CV": f,
                 "ring": "*i64", "t_mod": i32, "ADD": f, "add_stride": i32, "B": i32, "dim": i32, "F": i32, "F0": i32,
                 "half_q": "fp32"}
        shape = {"FP": 16, "BB": 32, "BD": LAYER_BD, "BK": BK, **p}
        register_triton_kernel(f"srnn_layer[gru-first-{prec}]", srnn_layer, layer,
                               {**shape, "LAYER0": True, "HAS_ADD": True, "LSTM": False, "SKIP": False, "FIRST": True},
                               num_warps=LAYER_WARPS)
        register_triton_kernel(f"srnn_layer[lstm-upper-skip-{prec}]", srnn_layer, layer,
                               {**shape, "LAYER0": False, "HAS_ADD": False, "LSTM": True, "SKIP": True,
                                "FIRST": False}, num_warps=LAYER_WARPS)
        linear = {"X": f, "W": wdt, "BIAS": f, "Y": f, "M": i32, "N": i32, "K": i32}
        register_triton_kernel(f"srnn_linear[relu-{prec}]", srnn_linear, {**linear, "X": wdt, "Y": wdt},
                               {"HAS_BIAS": True, "RELU": True, "BM": 32, "BN": LINEAR_BN, "BK": BK, **p},
                               num_warps=linear_warps(prec))
        register_triton_kernel(f"srnn_linear[nobias-{prec}]", srnn_linear, linear,
                               {"HAS_BIAS": False, "RELU": False, "BM": 32, "BN": LINEAR_BN, "BK": BK, **p},
                               num_warps=linear_warps(prec))
        if prec != "fp32":  # 4096 streams (64 per program): the MLP's hidden layer, the projections, the gates
            register_triton_kernel(f"srnn_layer[gru-first-64-{prec}]", srnn_layer, layer,
                                   {**shape, "BB": 64, "LAYER0": True, "HAS_ADD": True, "LSTM": False, "SKIP": False,
                                    "FIRST": True}, num_warps=LAYER_WARPS)
            bm, bn, bk, warps = BIG_TILE
            big = {"BM": bm, "BN": bn, "BK": bk, **p}
            register_triton_kernel(f"srnn_linear[relu-big-{prec}]", srnn_linear, {**linear, "X": wdt, "Y": wdt},
                                   {"HAS_BIAS": True, "RELU": True, **big}, num_warps=warps)
            register_triton_kernel(f"srnn_linear[nobias-big-{prec}]", srnn_linear, linear,
                                   {"HAS_BIAS": False, "RELU": False, **big}, num_warps=warps)
        register_triton_kernel(f"srnn_out_sample[{prec}]", srnn_out_sample,
                               {"X2": wdt, "WO": wdt, "BO": f, "ring": "*i64", "t_mod": i32, "codes_in": "*i64",
                                "uniforms": f, "temps": f, "codes_out": "*i64", "logits_out": f, "B": i32, "dim": i32,
                                "F0": i32, "i": i32, "n": i32, "mode": i32},
                               {"Q": 256, "QP": 256, "BB": OUT_BB, "BK": BK, "FIX_BITS": fix_bits(256), **p},
                               num_warps=8)
        register_triton_kernel(f"srnn_mlp_input[{prec}]", srnn_mlp_input,
                               {"ring": "*i64", "t_mod": i32, "COND": f, "cond_stride": i32, "TAB": f, "INB": f,
                                "X1": wdt, "B": i32, "dim": i32, "q": i32, "F0": i32, "w": i32},
                               {"BB": 32, "BD": MLP_BD})


_register()
