"""The planted-trap benchmark of ``tailscope.traps`` and ``tailscope.remove_traps``.

Each trial: G, a 1000 x 500 matrix of i.i.d. N(0, 1) entries, and W = G + B with B a planted
sparse block (a b x b block of entries c at a random place, b = 4, c = 100 by default: 16 large
entries among 500 000). Measured over the seeds:

  found       W has a trap whose entry (row, col), mapped back through the shuffle, is in the block
  spurious    W has a trap whose entry is outside the block
  noise_fp    the pure-noise matrix G has a trap
  left_same   after remove_traps(W), traps with the same seed (the same shuffle)
  left_fresh  after remove_traps(W), traps with another seed (a fresh shuffle)
  ratio       ||W_new - W||_F / ||B||_F

Acceptance (issue 14): found >= 95%, noise_fp <= 5%, no trap left, ratio <= 1.1.

Run: PYTHONPATH=src .venv/bin/python bench/traps_planted.py [--seeds 100] [--c 100] [--b 4]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tailscope import remove_traps, traps


def planted(seed: int, c: float, b: int, n: int = 1000, m: int = 500):
    """(W = G + B, G, B, block rows, block cols) for one seed."""
    r = np.random.default_rng(seed)
    g = r.standard_normal((n, m))
    i, j = int(r.integers(0, n - b)), int(r.integers(0, m - b))
    block = np.zeros_like(g)
    block[i:i + b, j:j + b] = c
    return g + block, g, block, range(i, i + b), range(j, j + b)


def trial(seed: int, c: float, b: int) -> dict:
    w, g, block, rows, cols = planted(seed, c, b)
    t = traps(w, seed=seed)
    inside = [r in rows and k in cols for r, k in zip(t["row"], t["col"])]
    edited = remove_traps(w, seed=seed)
    new = edited.weights["weight"]
    return {"found": any(inside), "spurious": not all(inside), "num_traps": len(t),
            "noise_fp": len(traps(g, seed=seed)) > 0,
            "left_same": len(traps(new, seed=seed)), "left_fresh": len(traps(new, seed=seed + 1)),
            "ratio": float(np.linalg.norm(new - w) / np.linalg.norm(block))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--c", type=float, default=100.0)
    p.add_argument("--b", type=int, default=4)
    a = p.parse_args()
    t0 = time.perf_counter()
    res = []
    for s in range(a.seeds):
        res.append(trial(s, a.c, a.b))
        if (s + 1) % 10 == 0:
            print(f"  {s + 1} seeds, {time.perf_counter() - t0:.0f} s: found "
                  f"{sum(r['found'] for r in res)}, noise traps {sum(r['noise_fp'] for r in res)}, "
                  f"max ratio {max(r['ratio'] for r in res):.4f}", flush=True)
    secs = time.perf_counter() - t0
    mean = {k: float(np.mean([r[k] for r in res])) for k in res[0]}
    ratio = np.array([r["ratio"] for r in res])
    print(f"planted traps: {a.seeds} seeds, 1000 x 500, {a.b}x{a.b} block of c={a.c:g} "
          f"({secs:.1f} s, {secs / a.seeds:.2f} s per seed)")
    print(f"  found the planted trap      {100 * mean['found']:.1f}%   (>= 95%)")
    print(f"  a trap outside the block    {100 * mean['spurious']:.1f}%")
    print(f"  mean traps per matrix       {mean['num_traps']:.2f}")
    print(f"  trap in pure noise          {100 * mean['noise_fp']:.1f}%   (<= 5%)")
    print(f"  traps left (same shuffle)   {sum(r['left_same'] for r in res)}   (0)")
    print(f"  traps left (fresh shuffle)  {sum(r['left_fresh'] for r in res)}   (0)")
    print(f"  ||dW|| / ||B||              max {ratio.max():.4f}, mean {ratio.mean():.4f}   (<= 1.1)")


if __name__ == "__main__":
    main()
