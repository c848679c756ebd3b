"""Coverage of bootstrap intervals of the reported alpha (KS-chosen xmin) on Pareto samples.

Pareto samples (density ~ x^-alpha on x >= 1) for alpha 2, 3, 4 and n 20, 50, 200; the power law
is fitted as tailscope reports it (xmin by the KS scan) and each variant's 90% interval is checked
against the true alpha. Variants:

  rescan      tailscope's ``alpha_interval`` (the default, the analysis' alpha_ci): CSN
              semi-parametric replicates, xmin re-scanned in each, the ratio pivot
  pivot       ``alpha_interval(rescan=False)``: parametric bootstrap at the fitted xmin, k = tail
              values above xmin (the ratio pivot; exact for a fixed xmin)
  pivot_n     the same with k = n_tail (forgetting that a scanned xmin is a data point)
  np_fixed    non-parametric percentile bootstrap of the tail at the fitted xmin
  np_rescan   non-parametric percentile bootstrap of all the data, xmin re-scanned per replicate

Run: .venv/bin/python bench/alpha_ci_coverage.py [--trials 1000] [--slow-trials 200] [--slow-boot 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tailscope import fit_power_law
from tailscope.fit import alpha_interval

LEVEL = 0.9
Q = ((1 - LEVEL) / 2, (1 + LEVEL) / 2)


def pivot_n(fit, n_boot, rng):
    beta = fit.alpha - 1
    b = fit.n_tail * beta / rng.standard_gamma(fit.n_tail, size=n_boot)
    lo, hi = np.quantile(b, Q)
    return 1 + beta * beta / hi, 1 + beta * beta / lo


def np_fixed(fit, n_boot, rng):
    logs = np.log(fit.tail / fit.xmin)
    idx = rng.integers(0, logs.size, (n_boot, logs.size))
    with np.errstate(divide="ignore"):
        a = 1 + logs.size / logs[idx].sum(axis=1)
    return tuple(np.quantile(a[np.isfinite(a)], Q))


def np_rescan(fit, n_boot, rng):
    x = fit.data
    a = []
    for _ in range(n_boot):
        f = fit_power_law(x[rng.integers(0, x.size, x.size)])
        if f.ok:
            a.append(f.alpha)
    return tuple(np.quantile(a, Q))


def rescan(fit, n_boot, rng):
    return alpha_interval(fit, n_boot, LEVEL, seed=rng)


def pivot(fit, n_boot, rng):
    return alpha_interval(fit, n_boot, LEVEL, seed=rng, rescan=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--slow-trials", type=int, default=200)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--slow-boot", type=int, default=100)
    args = ap.parse_args()
    variants = {"rescan": rescan, "pivot": pivot, "pivot_n": pivot_n, "np_fixed": np_fixed,
                "np_rescan": np_rescan}
    slow = {"rescan", "np_rescan"}
    print(f"coverage of {LEVEL:.0%} intervals (trials: {args.trials}; re-scan variants "
          f"{args.slow_trials} trials of {args.slow_boot} replicates)")
    print("alpha  n    " + "  ".join(f"{v:>10}" for v in variants) + "  n_tail(mean)")
    for alpha in (2.0, 3.0, 4.0):
        for n in (20, 50, 200):
            rng = np.random.default_rng([int(alpha), n])
            hits = {v: [] for v in variants}
            tails = []
            for trial in range(args.trials):
                x = (1 - rng.random(n)) ** (-1 / (alpha - 1))
                fit = fit_power_law(x)
                tails.append(fit.n_tail)
                for v, f in variants.items():
                    if v in slow and trial >= args.slow_trials:
                        continue
                    lo, hi = f(fit, args.slow_boot if v in slow else args.boot,
                               np.random.default_rng(trial))
                    hits[v].append(lo <= alpha <= hi)
            cells = "  ".join(f"{np.mean(h):>10.3f}" for h in hits.values())
            print(f"{alpha:<5g}  {n:<4d} {cells}  {np.mean(tails):.1f}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"{time.perf_counter() - t0:.0f} s")
