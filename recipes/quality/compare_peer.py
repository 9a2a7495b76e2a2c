"""Train wavegen's SampleRNN and the 2017 samplernn-pytorch side by side on the same batches.

The peer is not part of wavegen: fetch it yourself and point ``--peer`` at the clone (its
``model.py``, ``nn.py`` and ``utils.py`` are imported from there; nothing of it is copied here)::

    git clone https://github.com/deepsound-project/samplernn-pytorch peer
    git -C peer checkout 4167442          # "Add weight normalization", the commit measured
    wavegen prep MUSIC_FOLDER corpus      # any corpus wavegen prepared (16 kHz)
    python recipes/quality/compare_peer.py --peer peer --corpus corpus --model peer --name peer
    python recipes/quality/compare_peer.py --peer peer --corpus corpus --model wavegen --name wavegen
    python recipes/quality/compare_peer.py --table peer wavegen

Run the two at the same time or one after the other: each uses one thread and records CPU
seconds per step. On torch 2.x the peer runs unchanged (its old ``init.*`` names and
``log_softmax`` without ``dim`` only warn).

What is the same for both (docs/QUALITY.md, "Learning per step"): the model (2 tiers, frames
64 and 16, one GRU of 256, embedding 256, linear 8-bit, learned h0, weight norm; the peer's
``frame_sizes=[16, 4]`` are relative), the data (the train split cut into fixed chunks of
``windows x seq_len`` samples, shuffled per epoch with the seed, ``batch`` chunks per batch,
each chunk walked in ``windows`` windows of ``seq_len`` with the hidden state carried and 64
silence codes in front of its first window, as the peer's loader does), Adam at 1e-3, the
loss in nats. Different, as each project does it: the peer clips every gradient value to
[-1, 1] and initialises as it does; wavegen clips the global norm to 1 and uses its defaults.

Scoring, at step 0 and every ``--eval-every`` steps, is the same code for both: the peer's
weights (weight norm folded in) are copied into a wavegen SampleRNN, checked equal to the
peer's own output on a batch, and scored on the test split in pieces of ``--eval-piece``
predicted samples, each with the 64 real samples before it as context, ``--eval-seconds`` of
audio in all, pieces spread evenly over the split. ``--main-eval`` also scores the last step
with ``wavegen.evaluate.evaluate`` (what ``wavegen eval`` reports: whole segments from
silence, state carried), recorded as ``eval_bits``. Rows go to ``OUT/NAME.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wavegen.corpus import Corpus
from wavegen.data import code_table
from wavegen.evaluate import evaluate
from wavegen.models.samplernn import SampleRNN, SampleRNNConfig

LN2 = math.log(2)
CONFIG = {"frame_sizes": [64, 16], "n_rnn": 1, "emb_size": 256, "q_levels": 256, "quantization": "linear",
          "rnn_type": "gru", "learned_h0": True, "weight_norm": True}
CONTEXT, SILENCE = 64, 128  # the top frame; linear 8-bit's zero code (the peer's q_zero)


class Chunks:
    """Fixed chunks of ``windows * seq_len`` samples of each training segment, shuffled per epoch;
    ``batch(step)`` → ``codes [B, 64 + seq_len]``, ``reset [B]`` (the chunk's first window)."""

    def __init__(self, audio, segments, batch: int, seq_len: int, windows: int, seed: int):
        self.chunk = seq_len * windows
        self.starts = np.array([s + off for s, n, _ in np.asarray(segments).reshape(-1, 3)
                                for off in range(0, int(n) - self.chunk + 1, self.chunk)])
        self.audio, self.lut = audio, code_table(256, "linear")
        self.batch_size, self.seq_len, self.windows, self.seed = batch, seq_len, windows, seed
        self.per_epoch = len(self.starts) // batch
        self._cache = None

    def batch(self, step: int) -> dict:
        index, window = divmod(step, self.windows)
        if self._cache is None or self._cache[0] != index:
            epoch, b = divmod(index, self.per_epoch)
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.starts))
            starts = self.starts[order[b * self.batch_size:(b + 1) * self.batch_size]]
            x = np.stack([self.audio[s: s + self.chunk] for s in starts]).astype(np.int32)
            codes = np.concatenate([np.full((len(starts), CONTEXT), SILENCE), self.lut[x + 32768]], 1)
            self._cache = (index, torch.from_numpy(codes))
        off = window * self.seq_len
        return {"codes": self._cache[1][:, off: off + CONTEXT + self.seq_len],
                "reset": torch.full((self.batch_size,), window == 0)}


def peer_as_wavegen(peer, dim: int) -> SampleRNN:
    """The peer's weights (weight norm folded in) in a wavegen SampleRNN without weight norm."""
    def weight(mod):
        return torch._weight_norm(mod.weight_v, mod.weight_g, 0) if hasattr(mod, "weight_g") else mod.weight

    out = SampleRNN(SampleRNNConfig(dim=dim, **{**CONFIG, "weight_norm": False}))
    with torch.no_grad():
        for tier, rnn in zip(out.tiers, reversed(peer.frame_level_rnns)):
            tier.input.weight.copy_(weight(rnn.input_expand)[:, :, 0])
            tier.input.bias.copy_(rnn.input_expand.bias)
            for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
                getattr(tier.rnns[0], name).copy_(getattr(rnn.rnn, name))
            tier.h0.copy_(rnn.h0.unsqueeze(0))
            w = weight(rnn.upsampling.conv_t)  # [in, out, k]: output k of frame t is w[:, :, k]
            tier.upsample.weight.copy_(w.permute(2, 1, 0).reshape(-1, w.shape[0]))
            tier.upsample.bias.copy_(rnn.upsampling.bias.t().reshape(-1))
        mlp = peer.sample_level_mlp
        out.mlp.embedding.weight.copy_(mlp.embedding.weight)
        out.mlp.input.weight.copy_(weight(mlp.input))
        out.mlp.input.bias.zero_()  # the peer's first MLP layer has none
        for ours, theirs in ((out.mlp.hidden, mlp.hidden), (out.mlp.output, mlp.output)):
            ours.weight.copy_(weight(theirs)[:, :, 0])
            ours.bias.copy_(theirs.bias)
    return out.eval()


def pieces_nll(model, audio, segments, piece_len: int, max_samples: int, batch: int = 8) -> float:
    """NLL in bits/sample over pieces of ``piece_len`` predicted samples with 64 real samples of
    context each (consecutive pieces overlap by the context), at most ``max_samples`` predicted."""
    starts = np.array([s + off for s, n, _ in np.asarray(segments).reshape(-1, 3)
                       for off in range(0, int(n) - CONTEXT - piece_len + 1, piece_len)])
    if len(starts) * piece_len > max_samples:
        starts = starts[np.linspace(0, len(starts) - 1, max(1, max_samples // piece_len)).round().astype(int)]
    lut, total, count = code_table(256, "linear"), 0.0, 0
    with torch.no_grad():
        for i in range(0, len(starts), batch):
            raw = np.stack([np.asarray(audio[s: s + CONTEXT + piece_len]) for s in starts[i: i + batch]])
            nll, _ = model.sequence_nll(torch.from_numpy(lut[raw.astype(np.int32) + 32768]))
            total, count = total + float(nll.double().sum()), count + nll.numel()
    return total / count / LN2


def build(args, data):
    """→ (parameters, loss_fn(batch) -> loss in nats, scored() -> a wavegen model, clip name)."""
    torch.manual_seed(args.seed)
    if args.model == "wavegen":
        net = SampleRNN(SampleRNNConfig(dim=args.dim, **CONFIG)).train()
        carried = {"state": None}

        def loss_fn(batch):
            loss, carried["state"] = net(batch, carried["state"])
            return loss
        return list(net.parameters()), loss_fn, lambda: net, "norm"
    sys.path.insert(0, str(Path(args.peer).resolve()))
    from model import Predictor  # the peer's module, from --peer
    from model import SampleRNN as PeerSampleRNN

    peer = PeerSampleRNN(frame_sizes=[16, 4], n_rnn=1, dim=args.dim, learn_h0=True, q_levels=256, weight_norm=True)
    predictor = Predictor(peer)

    def loss_fn(batch):
        codes = batch["codes"]
        logp = predictor(codes[:, :-1], bool(batch["reset"][0]))
        return F.nll_loss(logp.reshape(-1, 256), codes[:, CONTEXT:].reshape(-1))
    check = data.batch(0)["codes"][:2]
    with torch.no_grad():
        diff = (predictor(check[:, :-1], True) - F.log_softmax(peer_as_wavegen(peer, args.dim).logits(check)[0], -1))
    if float(diff.abs().max()) > 1e-4:
        raise SystemExit(f"the peer's weights did not convert (max |log p difference| {float(diff.abs().max())})")
    predictor.reset_hidden_states()
    return list(predictor.parameters()), loss_fn, lambda: peer_as_wavegen(peer, args.dim), "value"


def train(args) -> None:
    torch.set_num_threads(1)
    corpus = Corpus(args.corpus)
    data = Chunks(np.asarray(corpus.split("train")), corpus.segments("train"), args.batch, args.seq_len,
                  args.windows, args.seed)
    params, loss_fn, scored, clip = build(args, data)
    optimizer = torch.optim.Adam(params, lr=args.lr)
    out = Path(args.out) / f"{args.name}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("")

    def record(row):
        print(json.dumps(row), flush=True)
        with open(out, "a") as fh:
            fh.write(json.dumps(row) + "\n")

    def score(step):
        t, model = time.time(), scored()
        was = model.training
        model.eval()
        row = {"step": step, "test_bits": pieces_nll(model, corpus.split("test"), corpus.segments("test"),
                                                     args.eval_piece, int(args.eval_seconds * corpus.sample_rate))}
        if args.main_eval and step == args.steps:
            row["eval_bits"] = evaluate(model, corpus, "test", max_seconds=args.eval_seconds)["nll_bits_per_sample"]
        model.train(was)
        record({**row, "score_seconds": time.time() - t})

    score(0)
    wall, cpu, losses = time.time(), time.process_time(), []
    for step in range(args.steps):
        loss = loss_fn(data.batch(step))
        loss.backward()
        if clip == "norm":
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        else:
            for p in params:  # the peer's hardtanh on every gradient (some parameters get none)
                if p.grad is not None:
                    p.grad.clamp_(-1.0, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()) / LN2)
        if (step + 1) % 10 == 0:
            record({"step": step + 1, "train_bits": float(np.mean(losses[-10:])),
                    "s_per_step": (time.time() - wall) / (step + 1),
                    "cpu_s_per_step": (time.process_time() - cpu) / (step + 1)})
        if (step + 1) % args.eval_every == 0:
            score(step + 1)


def table(names: list[str], folder: str) -> None:
    """Markdown: test NLL at every scored step, and the last CPU seconds per step, per run."""
    runs = {n: [json.loads(line) for line in (Path(folder) / f"{n}.jsonl").read_text().splitlines()] for n in names}
    steps = sorted({r["step"] for rows in runs.values() for r in rows if "test_bits" in r and r["step"] > 0})
    print("| run | " + " | ".join(f"step {s}" for s in steps) + " | CPU s/step |")
    print("|---|" + "---:|" * (len(steps) + 1))
    for n, rows in runs.items():
        bits = {r["step"]: r["test_bits"] for r in rows if "test_bits" in r}
        cpu = [r["cpu_s_per_step"] for r in rows if "cpu_s_per_step" in r]
        print(f"| {n} | " + " | ".join(f"{bits[s]:.3f}" if s in bits else "" for s in steps)
              + f" | {cpu[-1] if cpu else float('nan'):.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["peer", "wavegen"])
    ap.add_argument("--name")
    ap.add_argument("--peer", help="the samplernn-pytorch clone (for --model peer)")
    ap.add_argument("--corpus", help="a corpus folder from wavegen prep")
    ap.add_argument("--out", default="compare_peer", help="folder of the NAME.jsonl records")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-seconds", type=float, default=32.0)
    ap.add_argument("--eval-piece", type=int, default=32768)
    ap.add_argument("--main-eval", action="store_true", help="also score the last step with wavegen.evaluate")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--windows", type=int, default=125)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", nargs="+", metavar="NAME", help="print the table of these runs and stop")
    args = ap.parse_args()
    if args.table:
        return table(args.table, args.out)
    if not (args.model and args.name and args.corpus) or (args.model == "peer" and not args.peer):
        ap.error("give --model, --name and --corpus (and --peer for the peer), or --table")
    train(args)


if __name__ == "__main__":
    main()
