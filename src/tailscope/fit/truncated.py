"""The truncated power law x^-alpha e^(-Lambda x) with its own xmin scan (WeightWatcher's ``fit='TPL'``).

WeightWatcher 0.7.5.5 runs ``powerlaw.Fit(data, xmin_distribution='truncated_power_law')``: every
candidate xmin (each unique value but the largest) gets a truncated-power-law fit by maximum
likelihood, its Kolmogorov-Smirnov distance D is computed against that fit's CDF, and the first
argmin of D is the xmin. Reported: the fit's ``alpha`` and ``Lambda`` at that xmin, its D, and no
sigma. ``powerlaw`` only accepts alpha > 1 and Lambda > 0 (other parameters score a likelihood of
1e-308 per point), so this is a constrained maximum; on real ESD tails the unconstrained maximum
often has alpha < 1 and the answer sits on the boundary alpha = 1.

Differences, on purpose: ``powerlaw`` maximises with ``scipy.optimize.fmin`` (Nelder-Mead, tolerance
1e-4) and evaluates the incomplete gamma function with mpmath one point at a time (about a minute
for 400 eigenvalues); here the likelihood is concave in (alpha, Lambda) (an exponential family), so
a projected Newton method on sufficient statistics converges to the maximum in a few steps per
candidate, and our likelihood is never below ``powerlaw``'s. With ``xmax`` the model is normalised
on [xmin, xmax] (``powerlaw`` 1.5 keeps the untruncated normaliser in its likelihood but the
truncated one in its CDF).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .distributions import MODELS
from .fingers import xmin_peak_range
from .special import log_upper_gamma_scalar
from .tail import as_positive_1d, ks_distance, resolve_xmax, resolve_xmin

ALPHA_MIN = 1.0  # powerlaw's parameter range: alpha > 1
ALPHA_MAX = 1e3
_TPL = MODELS["truncated_power_law"]


@dataclass(frozen=True, repr=False, eq=False)
class TruncatedPowerLawFit:
    """A truncated power law p(x) ~ x^-alpha e^(-Lambda x) on [xmin, xmax], xmin chosen by KS.

    Attributes
    ----------
    alpha, Lambda, xmin, D, loglikelihood : float
        The fit at the chosen xmin (NaN when ``status == 'failed'``).
    xmax : float or None
    n_tail, n : int
        Values in the tail, and all values fitted over.
    xmins, alphas, Lambdas, Ds : ndarray
        Every candidate xmin with its fit and KS distance.
    """

    alpha: float
    Lambda: float  # noqa: N815 (WeightWatcher's column name)
    xmin: float
    xmax: float | None
    D: float
    loglikelihood: float
    n_tail: int
    n: int
    status: str
    reason: str
    xmins: np.ndarray
    alphas: np.ndarray
    Lambdas: np.ndarray  # noqa: N815
    data: np.ndarray = field(repr=False)
    fix_fingers: str | None = None
    _known: np.ndarray | None = field(default=None, repr=False)
    _cands_i: np.ndarray | None = field(default=None, repr=False)

    @cached_property
    def Ds(self) -> np.ndarray:  # noqa: N802
        """Every candidate's exact KS distance (the scan computes only those that could win)."""
        if self._known is None:
            return np.full(self.xmins.shape, math.nan)
        out = self._known.copy()
        for j in np.flatnonzero(np.isnan(out) & np.isfinite(self.alphas)):
            out[j] = _D_exact(self.data, int(self._cands_i[j]), float(self.xmins[j]),
                              self.alphas[j], self.Lambdas[j], self.xmax)
        return out

    @property
    def ok(self) -> bool:
        """Whether the fit succeeded (``status == 'success'``)."""
        return self.status == "success"

    @property
    def sigma(self) -> float:
        """NaN: no standard error of alpha for this model (as ``powerlaw``)."""
        return math.nan  # powerlaw has no standard error for this model

    @property
    def tail(self) -> np.ndarray:
        """The fitted values (those at or above xmin); empty for a failed fit."""
        return self.data[self.data >= self.xmin] if self.ok else self.data[:0]

    def cdf(self, x) -> np.ndarray:
        """Model CDF P(X < x | X >= xmin) of the tail."""
        x = np.clip(np.asarray(x, dtype=np.float64), self.xmin, self.xmax or np.inf)
        return _TPL.cdf((self.alpha, self.Lambda), x, self.xmin, self.xmax)

    def ccdf(self, x) -> np.ndarray:
        """Model complementary CDF, 1 - cdf(x), of the tail."""
        return 1.0 - self.cdf(x)

    def pdf(self, x) -> np.ndarray:
        """Model density of the tail (zero outside [xmin, xmax])."""
        x = np.asarray(x, dtype=np.float64)
        inside = (x >= self.xmin) & (x <= (self.xmax or np.inf))
        safe = np.where(inside, x, self.xmin)
        return np.where(inside, np.exp(self.loglikelihoods(safe)), 0.0)

    def loglikelihoods(self, x=None) -> np.ndarray:
        """Per-point log density of the fitted truncated power law over the tail (or ``x``)."""
        x = self.tail if x is None else np.asarray(x, dtype=np.float64)
        return _TPL.logpdf((self.alpha, self.Lambda), x, self.xmin, self.xmax)

    def __repr__(self) -> str:
        if not self.ok:
            return f"TruncatedPowerLawFit(status='failed', reason={self.reason!r}, n={self.n})"
        return (f"TruncatedPowerLawFit(alpha={self.alpha:.6g}, Lambda={self.Lambda:.6g}, "
                f"xmin={self.xmin:.6g}, D={self.D:.6g}, n_tail={self.n_tail}, n={self.n})")


def _log_z(alpha: float, lam: float, xmin: float, xmax: float | None) -> float:
    """log of int_xmin^xmax x^-alpha e^(-lam x) dx = lam^(alpha-1) Gamma(1-alpha, lam x) |."""
    lo = log_upper_gamma_scalar(1.0 - alpha, lam * xmin)
    out = (alpha - 1.0) * math.log(lam) + lo
    if xmax is not None:
        hi = log_upper_gamma_scalar(1.0 - alpha, lam * xmax)
        out += math.log(-math.expm1(hi - lo)) if hi < lo else -math.inf
    return out


def _mle(n: int, s_log: float, s_x: float, xmin: float, xmax: float | None, start,
         lam_bounds: tuple[float, float]) -> tuple[float, float, float]:
    """Maximise the TPL likelihood of a tail with sum(log x) = s_log and sum(x) = s_x over
    alpha in [ALPHA_MIN, ALPHA_MAX], Lambda in ``lam_bounds``: projected Newton with finite-difference
    derivatives and a backtracking line search. Returns (alpha, Lambda, loglikelihood)."""
    lo = np.array([ALPHA_MIN, lam_bounds[0]])
    hi = np.array([ALPHA_MAX, lam_bounds[1]])
    mean_log, mean_x = s_log / n, s_x / n

    def f(t) -> float:  # negative log-likelihood per point: convex in (alpha, Lambda)
        with np.errstate(all="ignore"):
            v = t[0] * mean_log + t[1] * mean_x + _log_z(t[0], t[1], xmin, xmax)
        return v if math.isfinite(v) else math.inf

    theta = np.clip(np.asarray(start, dtype=np.float64), lo, hi)
    fx = f(theta)
    for _ in range(100):
        # steps relative to the parameters, but not below 1e-8 / mean(x) for Lambda (near its
        # bound at ~0 a relative step would drown in rounding); one-sided there
        h = np.array([1e-4 * max(1.0, abs(theta[0])), 1e-4 * max(theta[1], 1e-4 / mean_x)])
        e = np.eye(2) * h
        fp = [f(theta + e[0]), f(theta + e[1])]
        fpp = f(theta + h)
        g, hess = np.empty(2), np.empty((2, 2))
        for i in range(2):
            if theta[i] - h[i] > (0.0 if i else -np.inf):
                fm = f(theta - e[i])
                g[i] = (fp[i] - fm) / (2 * h[i])
                hess[i, i] = (fp[i] - 2 * fx + fm) / h[i] ** 2
            else:
                f2 = f(theta + 2 * e[i])
                g[i] = (-3 * fx + 4 * fp[i] - f2) / (2 * h[i])
                hess[i, i] = (fx - 2 * fp[i] + f2) / h[i] ** 2
        hess[0, 1] = hess[1, 0] = (fpp - fp[0] - fp[1] + fx) / (h[0] * h[1])
        if not np.all(np.isfinite(g)) or not np.all(np.isfinite(hess)):
            break
        free = ~(((theta <= lo) & (g > 0)) | ((theta >= hi) & (g < 0)))
        step = np.zeros(2)
        if free.all() and np.linalg.det(hess) > 0 and hess[0, 0] > 0:
            step = -np.linalg.solve(hess, g)
            # the Newton step leaves the box through a bound we sit on: hold that coordinate
            free = ~(((theta + step < lo) & (theta <= lo)) | ((theta + step > hi) & (theta >= hi)))
        if free.sum() == 1:  # Newton along the one free coordinate
            i = int(np.flatnonzero(free)[0])
            step = np.zeros(2)
            step[i] = -g[i] / hess[i, i] if hess[i, i] > 0 else -g[i] * h[i]
        elif not free.any():
            break
        elif not step.any():  # not convex here (rounding): a gradient step
            step = -g * h / np.maximum(np.abs(g), 1e-300)
        t, new, fnew = 1.0, theta, fx
        while t > 1e-12:
            new = np.clip(theta + t * step, lo, hi)
            fnew = f(new)
            if fnew <= fx + 1e-4 * float(g @ (new - theta)):
                break
            t *= 0.5
        if not fnew <= fx:
            break
        decrement = -float(g @ (new - theta))  # predicted gain of the step: ~0 at the optimum
        theta, fx = new, fnew
        if decrement <= 1e-13 * max(1.0, abs(fx)):
            break
    return float(theta[0]), float(theta[1]), -n * fx


def _resolve(xmin, xmax, x):
    return resolve_xmin(xmin), resolve_xmax(xmax, x)


def fit_truncated_power_law(data, *, xmin=None, xmax=None, fix_fingers: str | None = None,
                            xmin_max: float | None = None) -> TruncatedPowerLawFit:
    """Fit a truncated power law to the tail x >= xmin, choosing xmin by the KS distance of the
    truncated power law itself (as ``powerlaw.Fit(..., xmin_distribution='truncated_power_law')``).

    Parameters
    ----------
    data : array-like of float, 1-D
        Positive, finite observations.
    xmin : None, float or (lo, hi)
        None: scan every unique value but the largest; a number fixes xmin; a range keeps the
        candidates in [lo, hi] (the largest value is never a candidate).
    xmax : None, float or 'max'
        Upper truncation; the model is then normalised on [xmin, xmax].
    fix_fingers : None or 'xmin_peak'
        'xmin_peak' searches xmin in [0.95 p, xmin_max] around the peak p of the log10 histogram
        (see :func:`tailscope.fit.fingers.xmin_peak_range`; WeightWatcher's ``fit='E_TPL'``).

    Returns
    -------
    TruncatedPowerLawFit
        alpha >= 1 and Lambda > 0 (``powerlaw``'s parameter range); ``status='failed'`` with a
        reason when there are fewer than two distinct values or no candidate.
    """
    x = np.sort(as_positive_1d(data))
    if fix_fingers not in (None, False, "xmin_peak"):
        raise ValueError(f"fix_fingers for the truncated power law must be None or 'xmin_peak'; "
                         f"got {fix_fingers!r}")
    if fix_fingers == "xmin_peak":
        if xmin is not None:
            raise ValueError("fix_fingers='xmin_peak' chooses the xmin range itself; drop xmin")
        xmin = xmin_peak_range(x, xmin_max)
    (fixed, rng), xmax_v = _resolve(xmin, xmax, x)
    if xmax_v is not None:
        x = x[x <= xmax_v]
    empty = np.empty(0)

    def failed(reason):
        return TruncatedPowerLawFit(
            alpha=math.nan, Lambda=math.nan, xmin=math.nan, xmax=xmax_v, D=math.nan,
            loglikelihood=math.nan, n_tail=0, n=int(x.size), status="failed", reason=reason,
            xmins=empty, alphas=empty, Lambdas=empty, data=x,
            fix_fingers=fix_fingers or None)

    if x.size < 2 or x[0] == x[-1]:
        return failed("fewer than two distinct values: nothing to fit")
    u, first = np.unique(x, return_index=True)
    if fixed is not None:
        if not (x >= fixed).sum() >= 2 or x[-1] == fixed:
            return failed(f"fewer than two distinct values >= xmin={fixed:g}")
        cands_x = np.array([fixed])
        cands_i = np.array([int(np.searchsorted(x, fixed, side="left"))])
    else:
        keep = np.arange(u.size - 1)
        if rng is not None:
            keep = keep[(u[keep] >= rng[0]) & (u[keep] <= rng[1])]
            if keep.size == 0:
                return failed(f"no candidate xmin in the range [{rng[0]:g}, {rng[1]:g}] (the "
                              "largest value is never a candidate)")
        cands_x, cands_i = u[keep], first[keep]
    # suffix sums: the tail x[i:] has n - i values, sum(log x) and sum(x) in O(1)
    s_log = np.cumsum(np.log(x)[::-1])[::-1]
    s_x = np.cumsum(x[::-1])[::-1]
    lam_bounds = (1e-12 / float(x[-1]), 1e12 / float(x[0]))
    k = cands_x.size
    alphas, lams, lls, bound = (np.full(k, math.nan) for _ in range(4))
    start = None
    for j in range(k):
        i, x0 = int(cands_i[j]), float(cands_x[j])
        m = x.size - i
        tail = x[i:]
        if start is None:  # powerlaw's start; then the neighbour's optimum (concave: same answer)
            start = (1.0 + m / float(np.sum(np.log(tail / x0))), m / float(s_x[i]))
        a, lam, ll = _mle(m, float(s_log[i]), float(s_x[i]), x0, xmax_v, start, lam_bounds)
        start = (a, lam) if math.isfinite(ll) else None
        alphas[j], lams[j], lls[j] = a, lam, ll
        if math.isfinite(ll):
            bound[j] = _D_bound(x, i, x0, a, lam, xmax_v)
    good = np.isfinite(bound)
    if not good.any():
        return failed("the truncated power law has no finite likelihood on any candidate tail")
    # branch and bound: exact D in order of the lower bounds, until a bound exceeds the best D;
    # every candidate that could be the (first) argmin gets its exact D, as in a full scan
    Ds = np.full(k, math.nan)
    best, best_D = -1, math.inf
    for j in np.argsort(np.where(good, bound, np.inf), kind="stable"):
        if not good[j] or bound[j] > best_D:
            break
        Ds[j] = _D_exact(x, int(cands_i[j]), float(cands_x[j]), alphas[j], lams[j], xmax_v)
        if Ds[j] < best_D or (Ds[j] == best_D and j < best):
            best, best_D = int(j), float(Ds[j])
    x0 = float(cands_x[best])
    return TruncatedPowerLawFit(
        alpha=float(alphas[best]), Lambda=float(lams[best]), xmin=x0, xmax=xmax_v,
        D=float(Ds[best]), loglikelihood=float(lls[best]), n_tail=int(np.count_nonzero(x >= x0)),
        n=int(x.size), status="success", reason="", xmins=cands_x, alphas=alphas, Lambdas=lams,
        data=x, fix_fingers=fix_fingers or None, _known=Ds, _cands_i=cands_i)


_N_PROBE = 64  # tail points of the cheap lower bound on each candidate's D


def _D_exact(x, i, x0, a, lam, xmax) -> float:  # noqa: N802
    return ks_distance(x[i:], lambda v: _TPL.cdf((a, lam), v, x0, xmax))


def _D_bound(x, i, x0, a, lam, xmax) -> float:  # noqa: N802
    """max |model CDF - left-limit ECDF| over a subset of the tail: a lower bound on D."""
    m = x.size - i
    idx = np.unique(i + np.round(np.linspace(0, m - 1, min(m, _N_PROBE))).astype(np.int64))
    v = x[idx]
    below = (np.searchsorted(x, v, side="left") - i) / m
    diff = _TPL.cdf((a, lam), v, x0, xmax) - below
    return float(np.max(np.abs(diff)))


__all__ = ["TruncatedPowerLawFit", "fit_truncated_power_law"]
