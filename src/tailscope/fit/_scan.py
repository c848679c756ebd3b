"""The exact xmin scan: every candidate's alpha in O(n), the KS distance by branch and bound.

Notation (all on the sorted unique values u_0 < ... < u_{K-1} of the data):
  before[k] = #{x < u_k},  m[k] = n - before[k] (tail size for xmin = u_k),  L = ln u.
  For candidate k and tail value j >= k the model CDF is P = (1 - exp(-beta_k (L_j - L_k))) * inv_k
  (inv_k = 1 without xmax; the truncated normalisation with xmax) and the left-limit empirical
  CDF is S = (before[j] - before[k]) / m[k]. D_k = max_j |P - S|.

A maximum over a subset of j is a lower bound on D_k. The scan computes cheap lower bounds for
every candidate (a coarse grid of positions, then zooming into the bracket around each maximum,
then finer grids), the exact D of the most promising ones, and drops every candidate whose bound
exceeds the best exact D. Every candidate that could be the (first) argmin ends with its exact D,
so the answer equals the brute-force scan; only the work differs.

Discrete candidates (P = 1 - zeta(alpha_k, u_j) / zeta(alpha_k, u_k), the Hurwitz zeta) take
their bounds from an Euler-Maclaurin zeta with a proven error, widened by _APPROX_MARGIN; the D
values kept and compared at the end are scipy's, as before.
"""

from __future__ import annotations

import numpy as np
from scipy.special import zeta

from .tail import run_starts

_BLOCK = 1 << 15  # matrix elements per vectorised block: 256 KiB of float64 stays in cache
_PRUNE_TOL = 1e-12  # guards the bound against last-ulp differences between code paths
_N_PROBE = 4  # candidates evaluated exactly per refinement round to tighten the threshold
_N_ZOOM = 17  # points per zoom window
# the first grid: (evenly, geometrically) spaced points, continuous and discrete (where each
# point costs more: fewer, more pruning left to the zoom)
_FIRST_GRID = {False: (8, 4), True: (6, 2)}
_SMALL_K = 400  # up to this many unique values the first grid is 32 evenly spaced points: the
_SMALL_GRID = (32, 0)  # work is then per-round overhead, and one fine round prunes the most


class Spectrum:
    """Sorted unique values of the data with the prefix sums the scan needs."""

    __slots__ = ("u", "L", "inv_u", "before", "before_f", "inv_m", "m", "n", "K",
                 "mean_log_excess", "discrete")

    def __init__(self, x_sorted: np.ndarray, discrete: bool = False):
        self.discrete = discrete
        first = run_starts(x_sorted)  # np.unique's first indices, without sorting again
        u = x_sorted[first]
        counts = np.empty_like(first)
        np.subtract(first[1:], first[:-1], out=counts[:-1])
        counts[-1] = x_sorted.size - first[-1]
        self.u = u
        self.L = np.log(u)
        self.inv_u = 1.0 / u if discrete else None  # (the discrete bounds'; u >= 1 there)
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


def _deviations(sp: Spectrum, ks: np.ndarray, pos: np.ndarray, beta: np.ndarray,
                inv: np.ndarray, approx: bool = False) -> np.ndarray:
    """|P - S| at the given positions (rows: candidates ks), in one buffer.

    ``approx`` (discrete only): the zeta values of the tail by Euler-Maclaurin where that is
    exact to ~1e-14 (the caller subtracts a margin: these are only lower bounds).
    """
    if sp.discrete and approx and pos.size >= _EM_MIN_SIZE:
        return _em_deviations(sp, ks, pos, beta)
    if sp.discrete:
        a = _discrete_P(sp, ks, pos, beta)
    else:
        a = sp.L[pos]
        a -= sp.L[ks, None]
        a *= -beta[ks, None]
        np.exp(a, out=a)  # the SIMD exp: 1 - exp(.) is exact to ~1e-16 in absolute terms
        np.subtract(1.0, a, out=a)
        a *= inv[ks, None]
    e = sp.before_f[pos]
    e -= sp.before_f[ks, None]
    e *= sp.inv_m[ks, None]
    a -= e
    np.abs(a, out=a)
    return a


def _ks_block(sp: Spectrum, ks: np.ndarray, pos: np.ndarray, beta: np.ndarray,
              inv: np.ndarray, approx: bool = False) -> np.ndarray:
    """max |P - S| over the given positions (rows: candidates ks)."""
    out = _deviations(sp, ks, pos, beta, inv, approx).max(axis=1)
    if sp.discrete:
        # zeta(alpha, xmin) underflows (alpha in the hundreds): powerlaw's CDF is then all ones
        out[np.isnan(out)] = 1.0
    return out


# Euler-Maclaurin for the Hurwitz zeta function, q >= 1, s > 1, with M correction terms:
#   zeta(s, q) = q^-s [q / (s - 1) + 1/2 + s / (12 q) - (s)_3 / (720 q^3) + (s)_5 / (30240 q^5) ...]
# ((s)_k: the rising factorial). The remainder is below the first omitted term,
# |B_2M+2| / (2M+2)! (s)_2M+1 q^(-s-2M-1) (the derivatives of x^-s alternate in sign), i.e. a
# relative error below (s - 1) (s)_2M+1 |B_2M+2| / (2M+2)! / q^(2M+2), plus the rounding of
# exp(-s ln q), about s ln(q) ulp (rows with s ln(q) > 1000 take scipy's zeta). A row takes the fewest
# terms that bring this under _EM_REL at its xmin (the smallest q of the row); rows that no M
# serves take scipy's zeta.
_EM_COEF = (1.0 / 12.0, -1.0 / 720.0, 1.0 / 30240.0)  # B_2i / (2i)!
_EM_REM = (1.0 / 720.0, 1.0 / 30240.0, 1.0 / 1209600.0)  # |B_2M+2| / (2M+2)!
_EM_REL = 1e-12
_APPROX_MARGIN = 1e-11  # subtracted from approximate deviations: covers both zetas and rounding
_EM_MIN_SIZE = 2000  # smaller blocks take scipy's zeta (cheaper than the Python overhead)


def _em_series(coefs: list, iq: np.ndarray) -> np.ndarray:
    """sum_i coefs[i] iq^(2i+1), by Horner in iq^2 (a new array)."""
    if len(coefs) == 1:
        return coefs[0] * iq
    iq2 = iq * iq
    br = coefs[-1] * iq2
    for c in coefs[-2:0:-1]:
        br += c
        br *= iq2
    br += coefs[0]
    br *= iq
    return br


def _em_zeta(s: np.ndarray, q: np.ndarray, iq: np.ndarray, lq: np.ndarray, n_terms: int):
    """zeta(s, q) by Euler-Maclaurin with n_terms corrections (s broadcasts against q)."""
    coefs = []
    rise = s
    for i in range(n_terms):  # coefficient of q^-(2i+1): B_2i+2 / (2i+2)! (s)_2i+1
        coefs.append(_EM_COEF[i] * rise)
        rise = rise * (s + (2 * i + 1)) * (s + (2 * i + 2))
    br = _em_series(coefs, iq)
    br += 0.5
    br += q / (s - 1.0)
    e = lq * -s
    np.exp(e, out=e)
    br *= e
    return br


def _discrete_P(sp: Spectrum, ks: np.ndarray, pos: np.ndarray, beta: np.ndarray
                ) -> np.ndarray:
    """P = 1 - zeta(alpha, u_j) / zeta(alpha, u_k) at the positions (NaN where zeta(alpha, u_k)
    underflows), by scipy's zeta."""
    s = 1.0 + beta[ks]
    with np.errstate(invalid="ignore", divide="ignore"):
        z = zeta(s[:, None], sp.u[pos])
        z /= zeta(s, sp.u[ks])[:, None]
    np.subtract(1.0, z, out=z)
    return z


def _em_deviations(sp: Spectrum, ks: np.ndarray, pos: np.ndarray, beta: np.ndarray
                   ) -> np.ndarray:
    """|P - S| of the discrete power law to within _APPROX_MARGIN: the zetas by
    Euler-Maclaurin where that is exact to _EM_REL (scipy's zeta in the other rows).

    All such rows take the same number of terms: the most any of them needs."""
    s = 1.0 + beta[ks]
    uk = sp.u[ks]
    need = np.full(ks.size, len(_EM_COEF) + 1)  # terms each row needs (4: none will do)
    rise = s.copy()
    for m in range(1, len(_EM_COEF) + 1):
        rise = rise * (s + (2 * m - 1)) * (s + 2 * m)  # (s)_2m+1
        with np.errstate(over="ignore", invalid="ignore"):
            bound = (s - 1.0) * rise * _EM_REM[m - 1] / uk ** (2 * m + 2)
        need[(bound <= _EM_REL) & (need > m)] = m
    # exp(-s ln q) carries a relative rounding error of about s ln(q) ulp
    need[~(s * sp.L[-1] <= 1e3)] = len(_EM_COEF) + 1
    em = need <= len(_EM_COEF)
    m = int(need[em].max()) if em.any() else 0
    if m:
        with np.errstate(over="ignore", under="ignore"):
            zk = _em_zeta(s, uk, sp.inv_u[ks], sp.L[ks], m)
        em &= (zk > 1e-250) & np.isfinite(zk)
    if not em.any():
        return _deviations(sp, ks, pos, beta, None)
    whole = bool(em.all())
    rows = None if whole else np.flatnonzero(em)
    p = pos if whole else pos[rows]
    kr = ks if whole else ks[rows]
    w = 1.0 / (zk if whole else zk[rows])
    sr = s if whole else s[rows]
    sc = sr[:, None]
    # zeta(s, q) / zk = exp(-s ln q) [q w / (s - 1) + w / 2 + sum_i c_i w q^-(2i+1)]
    coefs = []
    r = sc
    for i in range(m):
        coefs.append((_EM_COEF[i] * w)[:, None] * r)
        r = r * (sc + (2 * i + 1)) * (sc + (2 * i + 2))
    br = _em_series(coefs, sp.inv_u[p])
    br += (0.5 * w)[:, None]
    q = sp.u[p]
    q *= (w / (sr - 1.0))[:, None]
    br += q
    t = sp.L[p]
    t *= -sc
    with np.errstate(under="ignore"):
        np.exp(t, out=t)
    br *= t  # zeta(s, u_j) / zeta(s, u_k)
    g = sp.before_f[p]
    g *= sp.inv_m[kr, None]
    br += g
    # P - S = 1 - ratio - (before_j - before_k) / m_k
    np.subtract((1.0 + sp.before_f[kr] * sp.inv_m[kr])[:, None], br, out=br)
    np.abs(br, out=br)
    if whole:
        return br
    out = np.empty(pos.shape)
    out[rows] = br
    other = np.flatnonzero(~em)
    out[other] = _deviations(sp, ks[other], pos[other], beta, None)
    return out


def exact_D(sp: Spectrum, ks: np.ndarray, beta: np.ndarray, inv: np.ndarray,
            approx: bool = False) -> np.ndarray:
    """Exact KS distance for each candidate in ks (any order); blocks group similar tail lengths.

    ``approx`` (discrete): to within _APPROX_MARGIN, by Euler-Maclaurin (see _em_deviations)."""
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
        out[sel] = _ks_block(sp, ks[sel], pos, beta, inv, approx)
        i = j
    return out


def _bounds_at(sp: Spectrum, ks: np.ndarray, offsets: np.ndarray, beta: np.ndarray,
               inv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """max |P - S| over the positions ks + offsets (rows of offsets increasing, clipped to the
    tail): a lower bound on each candidate's D, and the positions of the sampled neighbours of
    its maximum (the bracket a finer search looks in). NaN rows (an underflowing discrete
    normalisation, D = 1) give the bound -inf: they are settled by their exact D."""
    lb = np.empty(ks.size)
    lo = np.empty(ks.size, dtype=np.int64)
    hi = np.empty(ks.size, dtype=np.int64)
    ncol = offsets.shape[1]
    rows = max(1, _BLOCK // ncol)
    approx = sp.discrete
    for i in range(0, ks.size, rows):
        kk = ks[i:i + rows]
        pos = kk[:, None] + offsets[i:i + rows]
        np.clip(pos, kk[:, None], sp.K - 1, out=pos)
        dev = _deviations(sp, kk, pos, beta, inv, approx)
        j = np.argmax(dev, axis=1)  # NaN rows: argmax is the first NaN
        r = np.arange(kk.size)
        v = dev[r, j]
        if approx:
            v -= _APPROX_MARGIN
        v[np.isnan(v)] = -np.inf
        lb[i:i + rows] = v
        lo[i:i + rows] = pos[r, np.maximum(j - 1, 0)]
        hi[i:i + rows] = pos[r, np.minimum(j + 1, ncol - 1)]
    return lb, lo, hi


def _grid(span: np.ndarray, n_points: int, geometric: bool = False) -> np.ndarray:
    """Increasing offsets 0 .. span per row: n_points evenly spaced, or geometrically spaced
    (which catch a maximum near xmin on a long tail)."""
    span = span.astype(np.float64)
    if geometric:
        return np.rint(np.expm1(np.log1p(span)[:, None] * np.linspace(0.0, 1.0, n_points))
                       ).astype(np.int64)
    return np.rint(span[:, None] * np.linspace(0.0, 1.0, n_points)).astype(np.int64)


def scan(sp: Spectrum, candidates: np.ndarray, beta: np.ndarray, inv: np.ndarray
         ) -> tuple[int, np.ndarray]:
    """Return (k*, Ds): the first argmin of the exact KS distance over valid candidates, and an array
    (length K) holding every exact D that was computed (NaN where a candidate was pruned).

    candidates: indices k of valid candidates (finite beta > 0), increasing.

    Each candidate's bound is a maximum of |P - S| over some of its tail positions: a grid
    (first some evenly and geometrically spaced positions, _FIRST_GRID, then evenly spaced grids
    4x finer each time), then zoom rounds that sample the bracket between the sampled neighbours
    of the maximum with _N_ZOOM points until every bracket is fully sampled (the bound is then
    the local maximum around the grid's best point, usually D itself). After each round the
    lowest bounds are settled (D over the whole tail: raising the bar `best`), every candidate
    whose bound exceeds `best` is dropped, and one whose tail fits in the next grid is settled.

    Discrete data settle with the Euler-Maclaurin zeta (D to within _APPROX_MARGIN: a bound
    either side, `best` the least upper one); the candidates that could still be the argmin
    then get their exact D with scipy's zeta.
    """
    known = np.full(sp.K, np.nan)
    approx = sp.discrete
    pool_k, pool_lb = [], []  # discrete: settled candidates and their (tight) lower bounds
    best = np.inf

    def settle(ks):
        nonlocal best
        d = exact_D(sp, ks, beta, inv, approx)
        if approx:
            pool_k.append(ks)
            pool_lb.append(d - _APPROX_MARGIN)
            best = min(best, float(d.min()) + _APPROX_MARGIN)
        else:
            known[ks] = d
            best = min(best, float(d.min()))

    alive = np.asarray(candidates, dtype=np.int64)
    n_points, n_geom = _SMALL_GRID if sp.K <= _SMALL_K else _FIRST_GRID[bool(sp.discrete)]
    lb = np.full(alive.size, -np.inf)
    lo = alive.copy()
    hi = alive.copy()
    zoom = np.linspace(0.0, 1.0, _N_ZOOM)
    while alive.size:
        width = sp.K - alive
        small = width <= n_points
        if small.any():
            settle(alive[small])
            keep = ~small
            alive, lb, lo, hi = alive[keep], lb[keep], lo[keep], hi[keep]
            if not alive.size:
                break
        z = np.flatnonzero(hi - lo > 2)  # brackets not yet fully sampled
        if z.size:  # zoom into them
            zk = alive[z]
            offsets = (lo[z] - zk)[:, None] + np.rint((hi[z] - lo[z])[:, None] * zoom
                                                      ).astype(np.int64)
            new_lb, new_lo, new_hi = _bounds_at(sp, zk, offsets, beta, inv)
            lb[z] = np.maximum(lb[z], new_lb)  # the bracket always narrows
            lo[z], hi[z] = new_lo, new_hi
        else:  # a finer grid
            new_lb, new_lo, new_hi = _bounds_at(sp, alive, _grid(sp.K - 1 - alive, n_points),
                                                beta, inv)
            if n_geom:  # the first grid: its geometric half (the bracket: the better half's)
                g_lb, g_lo, g_hi = _bounds_at(sp, alive, _grid(sp.K - 1 - alive, n_geom, True),
                                              beta, inv)
                better = g_lb > new_lb
                new_lb = np.where(better, g_lb, new_lb)
                new_lo = np.where(better, g_lo, new_lo)
                new_hi = np.where(better, g_hi, new_hi)
                n_geom = 0
            up = new_lb > lb
            lb = np.where(up, new_lb, lb)
            lo = np.where(up, new_lo, lo)
            hi = np.where(up, new_hi, hi)
            n_points *= 4
        probe = np.argsort(lb, kind="stable")[:_N_PROBE]
        settle(alive[probe])
        keep = lb <= best + _PRUNE_TOL
        keep[probe] = False
        alive, lb, lo, hi = alive[keep], lb[keep], lo[keep], hi[keep]
    if pool_k:  # the exact D of every settled candidate that may be the argmin
        ks = np.concatenate(pool_k)
        ks = ks[np.concatenate(pool_lb) <= best + _PRUNE_TOL]
        known[ks] = exact_D(sp, ks, beta, inv)
    if np.all(np.isnan(known)):
        return -1, known
    return int(np.nanargmin(known)), known
