"""The decisions of issue #23 on a small causal language model trained on the CPU: do
``allocate_bits`` and ``select_trainable`` beat their uniform / random counterparts?

The model: a character-level transformer (``--layers`` blocks of width ``--width``, 4 heads,
context 64) trained from scratch with AdamW on 70% of the NewsArticles corpus
(``tailscope.datasets.news_articles``; lower-cased text, the 95 most frequent characters, the others
one symbol), ``--steps`` steps of batch 32. Per seed (``--seeds``, each its own initialisation,
batches and random choices):

bits     the Linear layers of the blocks quantized round-to-nearest (symmetric, groups of 32
         inputs): (a) every layer at ``--budget`` bits, (b) ``allocate_bits(analysis,
         budget=--budget, bits=(2, 3, 4), gamma=10, metric='alpha_hill', weighted=True)``, the same
         mean bits per parameter; perplexity on 200 held-out windows of the pre-training domain.
trainable  the model fine-tuned for ``--ft-steps`` steps on the other 30% of the articles with
         (a) the half of each block layer type that ``select_trainable(analysis, 50, 'snr')``
         picks, (b) a random half of each type (the same count); embeddings, norms and the head
         trainable in both, as Spectrum's YAML does; perplexity on held-out windows of that 30%.

Reported: per arm the mean perplexity, and the paired difference (b - a for bits: allocation
minus uniform; selected minus random for trainable) with its mean and a 95% Student-t interval
over the seeds. Negative is better for the allocation / selection.

Run: .venv/bin/python bench/decisions_llm.py [--seeds 5] [--steps 400] [--ft-steps 150]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy import stats
from torch import nn

import tailscope as ts
from tailscope.datasets import news_articles

CTX, BATCH, HEADS, GROUP = 64, 32, 4, 32


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        h = self.ln1(x)
        q, k, v = (m(h).view(b, t, HEADS, d // HEADS).transpose(1, 2)
                   for m in (self.q, self.k, self.v))
        a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
        return x + self.down(nn.functional.gelu(self.up(self.ln2(x))))


class LM(nn.Module):
    def __init__(self, vocab: int, d: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(CTX, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx):
        x = self.embed(idx) + self.pos(torch.arange(idx.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def corpus():
    texts = news_articles()["text"].fillna("").astype(str).str.lower().tolist()
    chars, counts = np.unique(np.frombuffer("".join(texts).encode("utf-32-le"), np.uint32),
                              return_counts=True)
    keep = chars[np.argsort(-counts)[:95]]
    table = np.full(int(chars.max()) + 1, 95, dtype=np.int64)
    table[keep] = np.arange(95)
    enc = [table[np.frombuffer(t.encode("utf-32-le"), np.uint32)] for t in texts]
    cut = int(0.7 * len(enc))
    return np.concatenate(enc[:cut]), np.concatenate(enc[cut:]), 96


def windows(data, n, rng):
    starts = rng.integers(0, data.size - CTX - 1, n)
    x = np.stack([data[s:s + CTX] for s in starts])
    y = np.stack([data[s + 1:s + CTX + 1] for s in starts])
    return torch.from_numpy(x), torch.from_numpy(y)


def train(model, data, steps, rng, params=None, lr=3e-3):
    opt = torch.optim.AdamW(params if params is not None else model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        x, y = windows(data, BATCH, rng)
        loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@torch.no_grad()
def perplexity(model, held):
    x, y = held
    losses = [nn.functional.cross_entropy(model(x[i:i + 50]).flatten(0, 1), y[i:i + 50].flatten())
              for i in range(0, len(x), 50)]
    return math.exp(float(torch.stack(losses).mean()))


def rtn(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric round-to-nearest per group of GROUP inputs."""
    out_f, in_f = w.shape
    g = w.reshape(out_f, in_f // GROUP, GROUP)
    levels = 2 ** (bits - 1) - 1
    scale = g.abs().amax(dim=2, keepdim=True).clamp_min(1e-12) / levels
    return (torch.round(g / scale).clamp(-levels, levels) * scale).reshape(out_f, in_f)


@torch.no_grad()
def quantized(model, bits_of: dict):
    q = LM(model.head.out_features, model.head.in_features, len(model.blocks))
    q.load_state_dict(model.state_dict())
    for name, p in q.named_parameters():
        if name in bits_of:
            p.copy_(rtn(p, int(bits_of[name])))
    return q


def interval(diffs):
    d = np.asarray(diffs)
    half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size) if d.size > 1 else 0
    return d.mean(), d.mean() - half, d.mean() + half


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--ft-steps", type=int, default=150)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--budget", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)  # the shared 2-core machine: no spinning threads
    pre, ft, vocab = corpus()
    res = {k: [] for k in ("uniform", "alpha", "selected", "random")}
    t0 = time.time()
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        model = LM(vocab, args.width, args.layers)
        train(model, pre, args.steps, rng)
        held_pre = windows(pre, 200, np.random.default_rng(10_000 + seed))
        held_ft = windows(ft, 200, np.random.default_rng(20_000 + seed))
        sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        analysis = ts.analyze({k: v for k, v in sd.items() if k.startswith("blocks.")},
                              hill=True)
        block_linear = [n for n in analysis.details["name"]]
        plan = ts.allocate_bits(analysis, budget=args.budget, bits=(2, 3, 4),
                                metric="alpha_hill", weighted=True)
        res["uniform"].append(perplexity(quantized(model, dict.fromkeys(block_linear,
                                                                        args.budget)), held_pre))
        res["alpha"].append(perplexity(quantized(model, plan.dropna().to_dict()), held_pre))
        chosen = ts.select_trainable(analysis, top_percent=50, metric="snr")
        d = chosen.details
        rand = []
        for _, part in d.groupby("type"):
            k = int(part["chosen"].sum())
            rand += list(rng.choice(part["name"].to_numpy(), size=k, replace=False))
        for arm, names in (("selected", set(chosen.names)), ("random", set(rand))):
            m = LM(vocab, args.width, args.layers)
            m.load_state_dict(model.state_dict())
            params = [p for n, p in m.named_parameters()
                      if not n.startswith("blocks.") or n in names
                      or (n.endswith(".bias") and n[:-5] + ".weight" in names)
                      or ".ln" in n]
            for p in m.parameters():
                p.requires_grad_(False)
            for p in params:
                p.requires_grad_(True)
            train(m, ft, args.ft_steps, np.random.default_rng(30_000 + seed), params, lr=1e-3)
            res[arm].append(perplexity(m, held_ft))
        print(f"seed {seed}: ppl uniform {res['uniform'][-1]:.3f} alpha {res['alpha'][-1]:.3f} "
              f"(plan mean {plan.attrs['mean_bits']:.3f} bits); fine-tune selected "
              f"{res['selected'][-1]:.3f} random {res['random'][-1]:.3f} "
              f"[{time.time() - t0:.0f} s]", flush=True)
    print()
    print("| comparison | mean ppl (a) | mean ppl (b) | b - a, mean | 95% interval |")
    print("|---|---|---|---|---|")
    for label, a, b in (("bits: allocate_bits (b) vs uniform (a)", "uniform", "alpha"),
                        ("fine-tune: select_trainable (b) vs random half (a)", "random",
                         "selected")):
        m, lo, hi = interval(np.array(res[b]) - np.array(res[a]))
        print(f"| {label} | {np.mean(res[a]):.3f} | {np.mean(res[b]):.3f} | {m:+.4f} | "
              f"[{lo:+.4f}, {hi:+.4f}] |")


if __name__ == "__main__":
    main()
