"""The exact xmin scan: every candidate's alpha in O(n), the KS distance by branch and bound.

Notation (all on the sorted unique values u_0 < ... < u_{K-1} of the data):
  before[k] = #{x < u_k},  m[k] = n - before[k] (tail size for xmin = u_k),  L = ln u.
  For candidate k and tail value j >= k the model CDF is P = (1 - exp(-beta_k (L_j - L_k))) * inv_k
  (inv_k = 1 without xmax; the truncated normalisation with xmax) and the left-limit empirical
  CDF is S = (before[j] - before[k]) / m[k]. D_k = max_j |P - S|.

A maximum over a subset of j is a lower bound on D_k. The scan computes cheap lower bounds for
every candidate, the exact D of the most promising ones, drops every candidate whose bound exceeds
the best exact D, and refines the bounds of the rest with 4x more points until each survivor is
exact. Every candidate that could be the (first) argmin ends with its exact D, so the answer equals
the brute-force scan; only the work differs.
"""

from __future__ import annotations

import numpy as np
from scipy.special import zeta

_BLOCK = 1 << 15  # matrix elements per vectorised block: 256 KiB of float64 stays in cache
_PRUNE_TOL = 1e-12  # guards the bound against last-ulp differences between code paths
_N_PROBE = 4  # candidates evaluated exactly per refinement round to tighten the threshold


class Spectrum:
    """Sorted unique values of the data with the prefix sums the scan needs."""

    __slots__ = ("u", "L", "before", "before_f", "inv_m", "m", "n", "K", "mean_log_excess",
                 "discrete")

    def __init__(self, x_sorted: np.ndarray, discrete: bool = False):
        self.discrete = discrete
        u, first, counts = np.unique(x_sorted, return_index=True, return_counts=True)
        self.u = u
        self.L = np.log(u)
        self.before = first.astype(np.int64)
        self.n = int(x_sorted.size)
        self.K = int(u.size)
        self.m = self.n - self.before
        self.before_f = self.before.astype(np.float64)
        self.inv_m = 1.0 / self.m
        # sum_{x >= u_k} ln(x / u_k) via a reverse cumulative sum, in extended precision so the
        # subtraction below does not lose digits when the tail is narrow.
        cl = counts.astype(np.longdouble) * self.L.astype(np.longdouble)
        tail_sum = np.cumsum(cl[::-1])[::-1]
        excess = tail_sum - self.m.astype(np.longdouble) * self.L.astype(np.longdouble)
        self.mean_log_excess = (excess / self.m).astype(np.float64)


def _h(y: np.ndarray) -> np.ndarray:
    """h(y) = 1/y - 1/(e^y - 1), with its series near 0; decreasing from 1 (y -> -inf) to 0."""
    out = np.empty_like(y)
    small = np.abs(y) < 1e-4
    ys = y[small]
    out[small] = 0.5 - ys / 12.0
    yl = y[~small]
    with np.errstate(over="ignore"):
        out[~small] = 1.0 / yl - 1.0 / np.expm1(yl)
    return out


def truncated_beta(mean_log_excess: np.ndarray, log_ratio: np.ndarray) -> np.ndarray:
    """MLE of beta = alpha - 1 for a power law normalised on [xmin, xmax], per candidate.

    With t = ln(xmax/xmin) and r = mean(ln(x/xmin)) / t the score equation is h(beta t) = r,
    which has exactly one root for 0 < r < 1 (solved here by bisection on every candidate at once).
    r >= 1/2 gives beta <= 0, i.e. alpha <= 1, which the caller treats as invalid.
    """
    t = np.asarray(log_ratio, dtype=np.float64)
    r = np.asarray(mean_log_excess, dtype=np.float64) / t
    beta = np.full(r.shape, np.nan)
    ok = (r > 0) & (r < 1) & np.isfinite(r)
    rr = r[ok]
    lo = -1.0 / (1.0 - rr) - 2.0
    hi = 1.0 / rr + 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        above = _h(mid) > rr  # h decreasing: root lies to the right
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
        if np.all(hi - lo <= 1e-15 * np.maximum(1.0, np.abs(hi))):
            break
    beta[ok] = 0.5 * (lo + hi) / t[ok]
    return beta


def _ks_block(sp: Spectrum, ks: np.ndarray, pos: np.ndarray, beta: np.ndarray,
              inv: np.ndarray) -> np.ndarray:
    """max |P - S| over the given positions (rows: candidates ks), in place on one buffer."""
    if sp.discrete:
        return _ks_block_discrete(sp, ks, pos, beta)
    a = sp.L[pos]
    a -= sp.L[ks, None]
    a *= -beta[ks, None]
    np.exp(a, out=a)  # the SIMD exp: 1 - exp(.) is exact to ~1e-16 in absolute terms, all D needs
    np.subtract(1.0, a, out=a)
    a *= inv[ks, None]
    e = sp.before_f[pos]
    e -= sp.before_f[ks, None]
    e *= sp.inv_m[ks, None]
    a -= e
    np.abs(a, out=a)
    return a.max(axis=1)


def _ks_block_discrete(sp: Spectrum, ks: np.ndarray, pos: np.ndarray,
                       beta: np.ndarray) -> np.ndarray:
    """The discrete power law's KS block: P = 1 - zeta(alpha, u_j) / zeta(alpha, u_k)."""
    alpha = 1.0 + beta[ks, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        a = zeta(alpha, sp.u[pos])
        a /= zeta(alpha, sp.u[ks, None])
    np.subtract(1.0, a, out=a)
    e = sp.before_f[pos]
    e -= sp.before_f[ks, None]
    e *= sp.inv_m[ks, None]
    a -= e
    np.abs(a, out=a)
    out = a.max(axis=1)
    # zeta(alpha, xmin) underflows (alpha in the hundreds): powerlaw's CDF is then all ones, D = 1
    out[np.isnan(out)] = 1.0
    return out


def exact_D(sp: Spectrum, ks: np.ndarray, beta: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """Exact KS distance for each candidate in ks (any order); blocks group similar tail lengths."""
    ks = np.asarray(ks, dtype=np.int64)
    out = np.empty(ks.size)
    if ks.size == 0:
        return out
    order = np.argsort(-ks)  # shortest tails first
    i = 0
    while i < ks.size:
        # sorted by decreasing k, tails grow along `order`: a block's widest row is its last
        rows = max(1, _BLOCK // int(sp.K - ks[order[i]]))
        while rows > 1 and rows * int(sp.K - ks[order[min(ks.size, i + rows) - 1]]) > _BLOCK:
            rows //= 2
        j = min(ks.size, i + rows)
        sel = order[i:j]
        width = sp.K - ks[sel].min()
        pos = np.minimum(ks[sel, None] + np.arange(width), sp.K - 1)
        out[sel] = _ks_block(sp, ks[sel], pos, beta, inv)
        i = j
    return out


def _lower_bounds(sp: Spectrum, ks: np.ndarray, n_points: int, beta: np.ndarray,
                  inv: np.ndarray) -> np.ndarray:
    """max |P - S| over n_points tail positions evenly spaced from xmin to the largest value."""
    out = np.empty(ks.size)
    grid = np.linspace(0.0, 1.0, n_points)
    rows = max(1, _BLOCK // n_points)
    for i in range(0, ks.size, rows):
        kk = ks[i:i + rows]
        span = (sp.K - 1 - kk).astype(np.float64)
        pos = kk[:, None] + np.rint(span[:, None] * grid).astype(np.int64)
        out[i:i + rows] = _ks_block(sp, kk, pos, beta, inv)
    return out


def scan(sp: Spectrum, candidates: np.ndarray, beta: np.ndarray, inv: np.ndarray
         ) -> tuple[int, np.ndarray]:
    """Return (k*, Ds): the first argmin of the exact KS distance over valid candidates, and an array
    (length K) holding every exact D that was computed (NaN where a candidate was pruned).

    candidates: indices k of valid candidates (finite beta > 0), increasing.
    """
    known = np.full(sp.K, np.nan)
    alive = np.asarray(candidates, dtype=np.int64)
    best = np.inf
    n_points = 32
    while alive.size:
        width = sp.K - alive
        small = width <= n_points
        if small.any():
            d = exact_D(sp, alive[small], beta, inv)
            known[alive[small]] = d
            best = min(best, float(d.min()))
            alive = alive[~small]
            if not alive.size:
                break
        lb = _lower_bounds(sp, alive, n_points, beta, inv)
        probe = np.argsort(lb, kind="stable")[:_N_PROBE]
        d = exact_D(sp, alive[probe], beta, inv)
        known[alive[probe]] = d
        best = min(best, float(d.min()))
        keep = lb <= best + _PRUNE_TOL
        keep[probe] = False
        alive = alive[keep]
        n_points *= 4
    if np.all(np.isnan(known)):
        return -1, known
    return int(np.nanargmin(known)), known
