"""Alternative tail models fitted by maximum likelihood on the same tail [xmin, xmax].

Maxima without artificial bounds: the lognormal is fitted in its natural (exponential-family)
parameters, where its log-likelihood is concave and its power-law limit (sigma -> inf) is a point
of the closed domain; the stretched exponential in (kappa, beta) with the rate profiled out, where
beta = 0 is again the power-law limit; the exponential in closed form. The optimiser never stops
on a box: if the best fit is the power-law limit, that limit is the answer (its likelihood is the
power law's, R = 0).

Discrete tails (``discrete=True``) follow ``powerlaw`` 1.5: exact probabilities for the power law
(Hurwitz zeta), exponential (geometric) and truncated power law (Lerch sum); the lognormal and the
stretched exponential by the 'round' approximation P(x) = (S(x - 1/2) - S(x + 1/2)) / S(xmin - 1/2)
with S the continuous survival function. Their maxima are found by Newton steps whose
finite-difference stencils are evaluated in one numpy batch, on the unique values with counts;
each 'round' probability there is the integral of the density over its cell [x - 1/2, x + 1/2]
(a Taylor series or Gauss-Legendre rule), not the difference S(x - 1/2) - S(x + 1/2), which
cancels in float64 for large x (relative errors to 1e-11 in the likelihood, and ridges of spurious
optima that a simplex search climbs). The reported per-point log-likelihoods keep ``powerlaw``'s
formula. The power-law limits are decided on the limit line with analytic derivatives and the
limit's optimality (KKT) condition.

Every model is written as an unnormalised log density ``logf(x)`` and the log of its integral to
infinity ``logsf(x)``; the density on [xmin, xmax] is then exp(logf(x) - log Z) with
log Z = logsf(xmin) + log(1 - exp(logsf(xmax) - logsf(xmin))). Working in logs keeps every model
finite for every sign of its exponent (``powerlaw`` multiplies raw densities and constants and
replaces underflows by 1e-308).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from scipy import optimize
from scipy.special import erfcx, log_ndtr, zeta

from .special import log_upper_gamma, log_upper_gamma_scalar
from .tail import ks_distance

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class TailStats:
    """Sufficient statistics of a tail, so most likelihood evaluations cost O(1), not O(n)."""

    def __init__(self, x: np.ndarray):
        self.x = x
        self.n = x.size
        lx = np.log(x)
        self.sum_log = float(np.sum(lx))
        self.sum_x = float(np.sum(x))
        self.mean_log = self.sum_log / self.n
        self.var_log = float(np.mean((lx - self.mean_log) ** 2))


class TailModel:
    """One family: parameter names, constraints (as transforms), start values, logf and logsf."""

    name: str = ""
    params: tuple[str, ...] = ()
    positive: tuple[bool, ...] = ()

    def start(self, x: np.ndarray, xmin: float) -> tuple[float, ...]:
        raise NotImplementedError

    def logf(self, theta, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def logsf(self, theta, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def valid(self, theta) -> bool:
        return all(v > 0 for v, pos in zip(theta, self.positive) if pos)

    # unconstrained <-> natural parameters
    def to_free(self, theta) -> np.ndarray:
        return np.array([math.log(v) if pos else v for v, pos in zip(theta, self.positive)])

    def from_free(self, z) -> tuple[float, ...]:
        return tuple(math.exp(min(v, 700.0)) if pos else float(v) for v, pos in zip(z, self.positive))

    def log_norm(self, theta, xmin: float, xmax: float | None) -> float:
        lo = float(self.logsf(theta, np.array([xmin]))[0])
        if xmax is None:
            return lo
        hi = float(self.logsf(theta, np.array([xmax]))[0])
        return lo + math.log(-math.expm1(hi - lo)) if hi < lo else -math.inf

    def logpdf(self, theta, x, xmin: float, xmax: float | None) -> np.ndarray:
        return self.logf(theta, x) - self.log_norm(theta, xmin, xmax)

    def sum_logf(self, theta, st: TailStats) -> float:
        return float(np.sum(self.logf(theta, st.x)))

    def loglik(self, theta, st: TailStats, xmin: float, xmax: float | None) -> float:
        return self.sum_logf(theta, st) - st.n * self.log_norm(theta, xmin, xmax)

    def bounds(self, st: TailStats, xmin: float) -> list[tuple[float, float]]:
        """Box on the free parameters that keeps the optimiser off runaway, degenerate ridges."""
        return [(-50.0, 50.0)] * len(self.params)

    def cdf(self, theta, x, xmin: float, xmax: float | None) -> np.ndarray:
        lo = float(self.logsf(theta, np.array([xmin]))[0])
        num = -np.expm1(self.logsf(theta, np.asarray(x, dtype=np.float64)) - lo)
        if xmax is None:
            return num
        hi = float(self.logsf(theta, np.array([xmax]))[0])
        return num / -math.expm1(hi - lo)


class PowerLaw(TailModel):
    name, params, positive = "power_law", ("alpha",), (False,)

    def valid(self, theta) -> bool:
        return theta[0] > 1

    def start(self, x, xmin):
        return (1.0 + x.size / float(np.sum(np.log(x / xmin))),)

    def logf(self, theta, x):
        return -theta[0] * np.log(x)

    def logsf(self, theta, x):
        return (1.0 - theta[0]) * np.log(x) - math.log(theta[0] - 1.0)

    def sum_logf(self, theta, st):
        return -theta[0] * st.sum_log

    def bounds(self, st, xmin):
        return [(1.0 + 1e-9, 1e3)]


class Exponential(TailModel):
    name, params, positive = "exponential", ("Lambda",), (True,)

    def start(self, x, xmin):
        return (1.0 / float(np.mean(x)),)

    def logf(self, theta, x):
        return -theta[0] * x

    def logsf(self, theta, x):
        return -theta[0] * x - math.log(theta[0])

    def sum_logf(self, theta, st):
        return -theta[0] * st.sum_x

    def bounds(self, st, xmin):
        return [_log_scale_bounds(st, xmin)]


class TruncatedPowerLaw(TailModel):
    """x^-alpha e^(-Lambda x), Lambda > 0, any real alpha (``powerlaw`` also demands alpha > 1)."""

    name, params, positive = "truncated_power_law", ("alpha", "Lambda"), (False, True)

    def start(self, x, xmin):
        return (1.0 + x.size / float(np.sum(np.log(x / xmin))), 1.0 / float(np.mean(x)))

    def logf(self, theta, x):
        alpha, lam = theta
        return -alpha * np.log(x) - lam * x

    def logsf(self, theta, x):
        alpha, lam = theta  # int_x^inf t^-a e^-lt dt = l^(a-1) Gamma(1-a, l x)
        return (alpha - 1.0) * math.log(lam) + log_upper_gamma(1.0 - alpha, lam * x)

    def sum_logf(self, theta, st):
        return -theta[0] * st.sum_log - theta[1] * st.sum_x

    def log_norm(self, theta, xmin, xmax):
        # the same as the generic form, in plain floats: the fit's inner loop
        alpha, lam = theta
        lo = (alpha - 1.0) * math.log(lam) + log_upper_gamma_scalar(1.0 - alpha, lam * xmin)
        if xmax is None:
            return lo
        hi = (alpha - 1.0) * math.log(lam) + log_upper_gamma_scalar(1.0 - alpha, lam * xmax)
        return lo + math.log(-math.expm1(hi - lo)) if hi < lo else -math.inf

    def bounds(self, st, xmin):
        return [(-50.0, 50.0), _log_scale_bounds(st, xmin)]


class Lognormal(TailModel):
    name, params, positive = "lognormal", ("mu", "sigma"), (False, True)

    def start(self, x, xmin):
        lx = np.log(x)
        return (float(np.mean(lx)), float(np.std(lx)) or 1.0)

    def logf(self, theta, x):
        mu, s = theta
        lx = np.log(x)
        return -lx - (lx - mu) ** 2 / (2.0 * s * s)

    def logsf(self, theta, x):
        mu, s = theta  # int_x^inf (1/t) exp(-(ln t - mu)^2 / 2s^2) dt = s sqrt(2 pi) Q((ln x - mu)/s)
        return math.log(s) + _LOG_SQRT_2PI + log_ndtr(-(np.log(x) - mu) / s)

    def sum_logf(self, theta, st):
        mu, s = theta
        return -st.sum_log - st.n * (st.var_log + (st.mean_log - mu) ** 2) / (2.0 * s * s)

    def bounds(self, st, xmin):
        spread = 1e3 * (1.0 + abs(st.mean_log))
        return [(st.mean_log - spread, st.mean_log + spread), (math.log(1e-6), math.log(1e3))]


class LognormalPositive(Lognormal):
    name, params, positive = "lognormal_positive", ("mu", "sigma"), (True, True)

    def start(self, x, xmin):
        mu, s = super().start(x, xmin)
        return (mu if mu > 0 else 1e-3, s)

    def bounds(self, st, xmin):
        spread = 1e3 * (1.0 + abs(st.mean_log))
        return [(math.log(1e-9), math.log(spread)), (math.log(1e-6), math.log(1e3))]


class StretchedExponential(TailModel):
    """x^(beta-1) e^(-(Lambda x)^beta): Lambda, beta > 0."""

    name, params, positive = "stretched_exponential", ("Lambda", "beta"), (True, True)

    def start(self, x, xmin):
        return (1.0 / float(np.mean(x)), 1.0)

    def logf(self, theta, x):
        lam, beta = theta
        return (beta - 1.0) * np.log(x) - (lam * x) ** beta

    def logsf(self, theta, x):
        lam, beta = theta
        return -((lam * x) ** beta) - math.log(beta) - beta * math.log(lam)

    def bounds(self, st, xmin):
        return [_log_scale_bounds(st, xmin), (math.log(1e-6), math.log(1e3))]


def _log_scale_bounds(st: TailStats, xmin: float) -> tuple[float, float]:
    """log of a rate Lambda between 'cut-off far beyond the data' and 'far below xmin'."""
    return (math.log(1e-12 / float(st.x.max())), math.log(1e12 / xmin))


MODELS: dict[str, TailModel] = {m.name: m for m in (
    PowerLaw(), Exponential(), TruncatedPowerLaw(), Lognormal(), LognormalPositive(),
    StretchedExponential())}


# --- the fitting machinery: internal parameters in which the maxima are found -------------------
_LOG_SQRT_HALF_PI = 0.5 * math.log(math.pi / 2.0)
_SAME = 1e-11  # likelihoods this close (relative) are equal to rounding: prefer the simpler limit
_SQRT2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _log_erfcx(u: np.ndarray) -> np.ndarray:
    """log erfcx(u) for every real u (erfcx(u) = 2 e^(u^2) - erfcx(-u) overflows for u < -26)."""
    u = np.asarray(u, dtype=np.float64)
    out = np.empty_like(u)
    pos = u >= 0
    out[pos] = np.log(erfcx(u[pos]))
    un = u[~pos]
    out[~pos] = un * un + np.log(2.0 - erfcx(-un) * np.exp(-un * un))
    return out


def _log_erfcx_scalar(u: float) -> float:
    """:func:`_log_erfcx` for one float, without numpy's per-call overhead (the optimisers'
    inner loop)."""
    if u >= 0:
        return math.log(float(erfcx(u)))
    return u * u + math.log(2.0 - float(erfcx(-u)) * math.exp(-u * u))


def _log_partition(a, b: float) -> np.ndarray:
    """A(a, b) = log int_0^inf exp(a y + b y^2) dy on the closed domain b <= 0 (b = 0: a < 0)."""
    if isinstance(a, float) and b < 0:  # the scalar fast path of the fitters' objective
        s = 1.0 / math.sqrt(-2.0 * b)
        return math.log(s) + _LOG_SQRT_HALF_PI + _log_erfcx_scalar(-a * s / _SQRT2)
    a = np.asarray(a, dtype=np.float64)
    if b < 0:
        s = 1.0 / math.sqrt(-2.0 * b)
        return math.log(s) + _LOG_SQRT_HALF_PI + _log_erfcx(-a * s / _SQRT2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(a < 0, -np.log(-a), np.inf)


class _Family:
    """A family in internal parameters z, on [x0, inf): log S(x)/S(x0) and log f(x) (continuous)."""

    name = ""

    def feasible(self, z, x0) -> bool:
        return True

    def log_sf_rel(self, z, x, x0):
        raise NotImplementedError

    def log_f_rel(self, z, x, x0):
        raise NotImplementedError

    def display(self, z, x0) -> dict:
        raise NotImplementedError


class _LognormalNatural(_Family):
    """z = (a, b): density on y = ln(x / x0) >= 0 proportional to exp(a y + b y^2), b <= 0.
    sigma = 1 / sqrt(-2 b), mu = ln x0 + a sigma^2; b = 0 is the power law with alpha = 1 - a."""

    name = "lognormal"

    def feasible(self, z, x0):
        a, b = z
        return b < 0 or (b == 0 and a < 0)

    def log_sf_rel(self, z, x, x0):
        a, b = z
        y = np.log(np.asarray(x, dtype=np.float64) / x0)
        if b == 0:
            return a * y
        return a * y + b * y * y + _log_partition(a + 2.0 * b * y, b) - _log_partition(a, b)

    def log_f_rel(self, z, x, x0):
        a, b = z
        x = np.asarray(x, dtype=np.float64)
        y = np.log(x / x0)
        return -np.log(x) + a * y + b * y * y - _log_partition(a, b)

    def display(self, z, x0):
        a, b = z
        if b == 0:
            return {"mu": -math.inf, "sigma": math.inf}
        s2 = -0.5 / b
        return {"mu": math.log(x0) + a * s2, "sigma": math.sqrt(s2)}


class _LognormalPositiveNatural(_LognormalNatural):
    name = "lognormal_positive"

    def feasible(self, z, x0):
        a, b = z
        return b < 0 and math.log(x0) - a / (2.0 * b) > 0


class _StretchedNatural(_Family):
    """z = (log kappa, beta): S(x)/S(x0) = exp(-kappa (exp(beta r) - 1) / beta), r = ln(x / x0),
    beta >= 0; (Lambda x0)^beta = kappa / beta. beta = 0 is the power law with alpha = 1 + kappa."""

    name = "stretched_exponential"

    def feasible(self, z, x0):
        return z[1] >= 0 and math.isfinite(z[0])

    @staticmethod
    def _e(beta, r):
        return np.expm1(beta * r) / beta if beta > 0 else r

    def log_sf_rel(self, z, x, x0):
        r = np.log(np.asarray(x, dtype=np.float64) / x0)
        return -math.exp(z[0]) * self._e(z[1], r)

    def log_f_rel(self, z, x, x0):
        x = np.asarray(x, dtype=np.float64)
        r = np.log(x / x0)
        kappa, beta = math.exp(z[0]), z[1]
        return z[0] + beta * r - np.log(x) - kappa * self._e(beta, r)

    def display(self, z, x0):
        lk, beta = z
        if beta <= 0:
            return {"Lambda": math.inf, "beta": 0.0}
        log_lam = (lk - math.log(beta)) / beta - math.log(x0)
        return {"Lambda": math.exp(log_lam) if log_lam < 709.0 else math.inf, "beta": beta}


_FAMILIES = {f.name: f for f in (_LognormalNatural(), _LognormalPositiveNatural(),
                                  _StretchedNatural())}


def _family_logpdf(fam: _Family, z, x0: float, xmax: float | None, discrete: bool, x):
    """Per-point log density (log probability when discrete) of a family's fit."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        if discrete:  # powerlaw's 'round': (S(x - 1/2) - S(x + 1/2)) / S(xmin - 1/2), x0 = xmin - 1/2
            lo = fam.log_sf_rel(z, x - 0.5, x0)
            hi = fam.log_sf_rel(z, x + 0.5, x0)
            return lo + np.log(-np.expm1(hi - lo))
        out = fam.log_f_rel(z, x, x0)
        if xmax is not None:
            out = out - math.log(-math.expm1(float(fam.log_sf_rel(z, np.array([xmax]), x0)[0])))
        return out


def _family_cdf(fam: _Family, z, x0: float, xmax: float | None, discrete: bool, x):
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        if discrete:  # P(X < x) on the lattice: 1 - S(x - 1/2) / S(xmin - 1/2)
            return -np.expm1(fam.log_sf_rel(z, np.maximum(x - 0.5, x0), x0))
        num = -np.expm1(fam.log_sf_rel(z, np.maximum(x, x0), x0))
        if xmax is None:
            return num
        return num / -math.expm1(float(fam.log_sf_rel(z, np.array([xmax]), x0)[0]))


def _newton(objective, z: np.ndarray, iters: int = 60, rel_step: float = 1e-5
            ) -> tuple[np.ndarray, bool]:
    """Damped Newton steps with finite-difference derivatives (2-D), each step accepted only when
    it lowers the objective: a warm start for Nelder-Mead on a concave likelihood, whose long
    narrow ridges cost the simplex tens of thousands of evaluations. (z, converged)."""
    f = objective(z)
    if not math.isfinite(f):
        return z, False
    k = z.size
    eye = np.eye(k)
    for _ in range(iters):
        with np.errstate(all="ignore"):
            z, f, state = _newton_step(objective, z, f, eye, rel_step)
        if state is not None:
            return z, state
    return z, False


def _newton_step(objective, z, f, eye, rel_step=1e-5):
    """One damped Newton step: (z, f, None to go on | True converged | False failed)."""
    k = z.size
    h = rel_step * np.maximum(np.abs(z), 1e-2)
    fp = np.array([objective(z + h[i] * eye[i]) for i in range(k)])
    fm = np.array([objective(z - h[i] * eye[i]) for i in range(k)])
    g = (fp - fm) / (2.0 * h)
    hess = np.empty((k, k))
    for i in range(k):
        hess[i, i] = (fp[i] - 2.0 * f + fm[i]) / h[i] ** 2
        for j in range(i + 1, k):
            hess[i, j] = hess[j, i] = (
                objective(z + h[i] * eye[i] + h[j] * eye[j])
                - objective(z + h[i] * eye[i] - h[j] * eye[j])
                - objective(z - h[i] * eye[i] + h[j] * eye[j])
                + objective(z - h[i] * eye[i] - h[j] * eye[j])) / (4.0 * h[i] * h[j])
    if not (np.all(np.isfinite(hess)) and np.all(np.isfinite(g))):
        return z, f, False
    try:
        w = np.linalg.eigvalsh(hess)
        if np.any(w <= 0):  # not concave here: Levenberg-Marquardt's shift
            hess = hess + (abs(float(w.min())) + 1e-3 * float(np.abs(w).max()) + 1e-12) * eye
        step = np.linalg.solve(hess, g)
    except np.linalg.LinAlgError:
        return z, f, False
    t = 1.0
    while t > 1e-6:
        zn = z - t * step
        fn = objective(zn)
        if fn < f:
            break
        t *= 0.5
    else:
        return z, f, True  # no descent along Newton's direction: the optimum, to rounding
    done = f - fn <= 1e-14 * max(1.0, abs(f))
    return zn, fn, (True if done else None)


def _nelder_mead(objective, z0, scale, newton: bool = False,
                 rel_step: float = 1e-5, polish: bool = True) -> tuple[np.ndarray, float]:
    """Unbounded Nelder-Mead, restarted from its optimum (smaller simplex) until it stops improving.
    ``newton``: first Newton's steps (finite differences of relative step ``rel_step``: larger for
    the discrete sums, whose rounding noise is larger); where they converge, only the whitened
    polish below follows (unless ``polish=False``: an objective of sufficient statistics, smooth to
    rounding, where Newton's stop is the maximum), not the restarted simplex (thousands of
    evaluations on a narrow ridge)."""
    z = np.asarray(z0, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    if newton and z.size == 2:
        for step in dict.fromkeys((rel_step, 1e-5)):  # the larger step first, then the default
            zn, ok = _newton(objective, z, rel_step=step)
            fn = objective(zn)
            if ok and math.isfinite(fn) and fn <= objective(z):
                return _polish(objective, zn, fn) if polish else (zn, fn)
        if fn <= objective(z):  # not converged: the simplex goes on from Newton's last point
            z = zn
    best = objective(z)
    for _ in range(8):
        simplex = np.vstack([z] + [z + np.eye(z.size)[i] * scale[i] for i in range(z.size)])
        res = optimize.minimize(objective, z, method="Nelder-Mead",
                                options={"initial_simplex": simplex, "xatol": 1e-13,
                                         "fatol": 1e-13, "maxfev": 20000})
        improved = res.fun < best - 1e-12 * max(1.0, abs(best))
        if res.fun < best:
            z, best = np.asarray(res.x, dtype=np.float64), float(res.fun)
        if not improved:
            break
        scale = np.maximum(np.abs(scale) * 0.1, 1e-8 * np.maximum(1.0, np.abs(z)))
    if z.size == 2 and math.isfinite(best):
        z, best = _polish(objective, z, best)
    return z, best


def _polish(objective, z, best) -> tuple[np.ndarray, float]:
    """Nelder-Mead again in coordinates whitened by the finite-difference Hessian at z: a long,
    narrow ridge (the lognormal's on flat tails) becomes round, so the simplex does not stall."""
    h = 1e-4 * np.maximum(np.abs(z), 1e-3)
    e = np.diag(h)
    hess = np.empty((2, 2))
    with np.errstate(all="ignore"):  # a neighbour outside the domain (inf): no polish
        for i in range(2):
            hess[i, i] = (objective(z + e[i]) - 2.0 * best + objective(z - e[i])) / h[i] ** 2
        hess[0, 1] = hess[1, 0] = (objective(z + e[0] + e[1]) - objective(z + e[0] - e[1])
                                   - objective(z - e[0] + e[1]) + objective(z - e[0] - e[1])
                                   ) / (4.0 * h[0] * h[1])
    if not np.all(np.isfinite(hess)):
        return z, best
    w, v = np.linalg.eigh(hess)
    if not np.all(w > 0):
        return z, best
    t = v / np.sqrt(w)  # z + t u: the objective rises by |u|^2 / 2 near the optimum

    def g(u):
        return objective(z + t @ u)

    res = optimize.minimize(g, np.zeros(2), method="Nelder-Mead",
                            options={"initial_simplex": np.array([[0, 0], [0.1, 0], [0, 0.1]]),
                                     "xatol": 1e-8, "fatol": 1e-13, "maxfev": 4000})
    if res.fun < best:
        return z + t @ res.x, float(res.fun)
    return z, best


def _min_1d(objective, t0: float, step: float) -> tuple[float, float]:
    """Brent's minimisation of a 1-D function from t0 (bracket found by expanding from t0 + step)."""
    f = lambda t: min(objective(np.array([t])), 1e300)  # noqa: E731 (Brent needs finite values)
    try:
        with np.errstate(all="ignore"):
            res = optimize.minimize_scalar(f, bracket=(t0, t0 + step), method="brent",
                                           options={"xtol": 1e-12, "maxiter": 500})
        t, v = float(res.x), float(res.fun)
    except (ValueError, RuntimeError):  # no bracket (monotone to an end): fall back
        (t,), v = _nelder_mead(objective, np.array([t0]), np.array([step]))
        t = float(t)
    f0 = f(t0)
    return (t, v) if v <= f0 else (t0, f0)


def _half_gauss_moments(a: float, b: float) -> tuple[float, float, float, float]:
    """E[y^k], k = 1..4, under the density exp(a y + b y^2 - A(a, b)) on y >= 0 (b < 0): a normal
    N(mu, sigma^2), mu = a sigma^2, sigma^2 = -1 / (2b), truncated to y >= 0. With x = -mu / sigma
    (the truncation point in sigma units), E[y^k] = sigma^k T_1 ... T_k, T_k = k / (x + T_(k+1))
    (Laplace's continued fraction of the Mills ratio, free of the cancellation of mu + sigma
    lambda(x) for large x); for x <= 3 the recurrence m_k = mu m_(k-1) + (k-1) sigma^2 m_(k-2)
    from m_1 = mu + sigma lambda(x), lambda the inverse Mills ratio."""
    sigma = 1.0 / math.sqrt(-2.0 * b)
    x = -a * sigma
    if x > 3.0:
        t = t4 = t3 = t2 = 0.0
        for k in range(60 if x < 6.0 else 25, 0, -1):
            t = k / (x + t)
            if k == 4:
                t4 = t
            elif k == 3:
                t3 = t
            elif k == 2:
                t2 = t
        m1 = sigma * t
        m2 = m1 * sigma * t2
        m3 = m2 * sigma * t3
        return m1, m2, m3, m3 * sigma * t4
    mu, s2 = a * sigma * sigma, sigma * sigma
    m1 = mu + sigma * _SQRT_2_OVER_PI / float(erfcx(x / _SQRT2))
    m2 = mu * m1 + s2
    m3 = mu * m2 + 2.0 * s2 * m1
    return m1, m2, m3, mu * m3 + 3.0 * s2 * m2


def _lognormal_newton(n: int, sy: float, syy: float, slx: float, z, edge: float | None = None):
    """Newton's method with a backtracking line search on the lognormal's negative
    log-likelihood slx - a sy - b syy + n A(a, b) in its natural parameters (a, b), b < 0 (convex:
    an exponential family; gradient n E[y, y^2] - (sy, syy), Hessian n Cov(y, y^2), from
    :func:`_half_gauss_moments`). ``edge``: along the line a = edge * b only (the positive
    lognormal's boundary mu = 0). The converged (a, b), or None."""
    a, b = z

    def value(a, b):
        if not b < 0:
            return math.inf
        v = slx - a * sy - b * syy + n * _log_partition(a, b)
        return v if math.isfinite(v) else math.inf

    with np.errstate(all="ignore"):
        try:
            f = value(a, b)
            for _ in range(200):
                if not math.isfinite(f):
                    return None
                m1, m2, m3, m4 = _half_gauss_moments(a, b)
                ga, gb = n * m1 - sy, n * m2 - syy
                haa, hab, hbb = n * (m2 - m1 * m1), n * (m3 - m1 * m2), n * (m4 - m2 * m2)
                if edge is not None:  # along (a, b) = (edge, 1) b
                    g1 = edge * ga + gb
                    h1 = edge * edge * haa + 2.0 * edge * hab + hbb
                    if not h1 > 0:
                        return None
                    sb = -g1 / h1
                    sa = edge * sb
                    dec = g1 * g1 / h1
                else:
                    det = haa * hbb - hab * hab
                    if not (haa > 0 and det > 0):
                        return None
                    sa = -(hbb * ga - hab * gb) / det
                    sb = -(haa * gb - hab * ga) / det
                    dec = -(ga * sa + gb * sb)  # Newton's decrement: twice the predicted gain
                if not math.isfinite(dec):
                    return None
                t = 1.0
                while t > 1e-12:
                    f_new = value(a + t * sa, b + t * sb)
                    if f_new <= f:
                        break
                    t *= 0.5
                else:
                    return (a, b) if dec <= 1e-10 * max(1.0, abs(f)) else None
                a, b, f = a + t * sa, b + t * sb, f_new
                if dec <= 1e-15 * max(1.0, abs(f)):
                    return a, b
        except (OverflowError, ValueError, ZeroDivisionError):
            return None
    return None


def _fit_lognormal(fam: _Family, tail, x0, xmax, discrete, z_lognormal=None):
    lx = np.log(tail)
    y = lx - math.log(x0)
    n = tail.size
    sy, syy, slx = float(np.sum(y)), float(y @ y), float(np.sum(lx))
    fast = not discrete and xmax is None
    # the standard deviation of ln x (from the sums where Newton's method follows, which ends on
    # the same maximum from any start)
    s0 = (math.sqrt(max(syy / n - (sy / n) ** 2, 0.0)) if fast else float(np.std(lx))) or 1.0
    z0 = np.array([sy / n / s0**2 if fast else float(np.mean(y)) / s0**2, -0.5 / s0**2])
    if not fast:
        uniq, counts = np.unique(tail, return_counts=True)

    def nll(z):
        if not fam.feasible(z, x0):
            return math.inf
        if fast:  # sufficient statistics: O(1) per evaluation
            with np.errstate(all="ignore"):
                v = slx - z[0] * sy - z[1] * syy + n * float(_log_partition(float(z[0]),
                                                                          float(z[1])))
        else:
            v = -float(counts @ _family_logpdf(fam, z, x0, xmax, discrete, uniq))
        return v if math.isfinite(v) else math.inf

    if fam.name == "lognormal_positive":
        # a concave maximum over the convex set mu > 0: the lognormal's when that has mu > 0,
        # else on the edge mu = 0, the line a = 2 ln(x0) b: maximise along it (1-D in ln(-b))
        z = z_lognormal if z_lognormal is not None else \
            _fit_lognormal(_FAMILIES["lognormal"], tail, x0, xmax, discrete)
        if fam.feasible(z, x0):
            return z
        lx0 = math.log(x0)

        def edge(t):
            b = -math.exp(t[0])
            return np.array([2.0 * lx0 * b + 1e-12 * abs(b) + 1e-300, b])

        t0 = math.log(max(-z[1], 0.5 / max(s0, 1e-3) ** 2))
        slope = 2.0 * lx0 - 1e-12  # edge()'s line, a = slope b (+ 1e-300)
        b = _lognormal_newton(n, sy, syy, slx, (slope * -math.exp(t0), -math.exp(t0)),
                              edge=slope) if fast else None
        if b is not None:
            return edge([math.log(-b[1])])
        t, _ = _min_1d(lambda t: nll(edge(t)), t0, 0.5)
        return edge([t])
    if fast and fam.name == "lognormal" and syy >= 2.0 * sy * sy / n:
        # the power-law limit b = 0 (a = -n / sy) meets the optimality (KKT) condition of this
        # convex problem: the slope of -loglik into b < 0 there is n E[y^2] - sum(y^2) =
        # 2 sy^2 / n - syy <= 0 (an exponential law in y = ln(x / x0) has E[y^2] = 2 E[y]^2), so
        # it is the maximum; no search needed
        return np.array([-n / sy, 0.0])
    found = _lognormal_newton(n, sy, syy, slx, (float(z0[0]), float(z0[1]))) if fast else None
    if found is not None:
        z, best = np.array(found), nll(found)
    else:
        z, best = _nelder_mead(nll, z0, np.abs(z0) * 0.1 + 1e-3, newton=True,
                               rel_step=1e-5 if fast else 1e-4, polish=not fast)
    if fam.name == "lognormal":
        # the power-law limit b = 0 belongs to the closed domain; when it is as good (to rounding),
        # it is the answer: a = -(alpha - 1) of the power law on this tail (closed form when
        # continuous; the 'round' power law's maximum when discrete)
        if fast:
            zl = np.array([-n / sy])
            fl = nll(np.array([zl[0], 0.0]))
        else:
            al, fl = _min_1d(lambda t: nll(np.array([t[0], 0.0])), min(float(z[0]), -n / sy), 0.1)
            zl = np.array([al])
        if fl <= best + _SAME * max(1.0, abs(best)):
            z, best = np.array([zl[0], 0.0]), fl
    return z


def _fit_stretched(fam: _Family, tail, x0, xmax, discrete):
    r = np.log(tail / x0)
    n, sr = tail.size, float(np.sum(r))

    def profile(beta):  # continuous, no xmax: kappa in closed form
        if beta < 0:
            return math.inf
        with np.errstate(all="ignore"):
            e = float(np.sum(fam._e(beta, r)))
        return -(n * math.log(n / e) + beta * sr - n) if 0 < e < math.inf else math.inf

    # continuous without xmax: the profile's minimum is the answer, by Newton's method; else (and
    # where Newton's method does not converge) a grid and Brent's search start the search below
    beta = _stretched_beta(r, n, sr) if not discrete and xmax is None else None
    if beta is None:
        beta = _stretched_beta_search(profile)
    if beta > 0 and profile(0.0) <= (p_beta := profile(beta)) + _SAME * max(1.0, abs(p_beta)):
        beta = 0.0  # the power-law limit, as good to rounding: the answer
    e = float(np.sum(fam._e(beta, r)))
    z = np.array([math.log(n / e), beta])
    if discrete or xmax is not None:
        uniq, counts = np.unique(tail, return_counts=True)

        def nll(zz):
            if not fam.feasible(zz, x0):
                return math.inf
            v = -float(counts @ _family_logpdf(fam, zz, x0, xmax, discrete, uniq))
            return v if math.isfinite(v) else math.inf

        z, best = _nelder_mead(nll, z, np.array([0.1, 0.1 * beta + 1e-3]), newton=True,
                               rel_step=1e-4)
        kl, fl = _min_1d(lambda t: nll(np.array([t[0], 0.0])), float(z[0]), 0.1)
        zl = np.array([kl])
        if fl <= best + _SAME * max(1.0, abs(best)):  # the power-law limit beta = 0
            z = np.array([zl[0], 0.0])
    return z


def _stretched_beta_search(profile) -> float:
    """The minimum of the stretched exponential's profile over beta >= 0 by a grid and Brent."""
    grid = list(np.concatenate([[0.0], np.logspace(-6, 2, 33)]))
    vals = [profile(b) for b in grid]
    k = int(np.argmin(vals))
    while k == len(grid) - 1 and grid[-1] < 1e6:
        grid.append(grid[-1] * 4.0)
        vals.append(profile(grid[-1]))
        k = int(np.argmin(vals))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    beta, fbest = float(grid[k]), vals[k]
    if hi > lo:
        res = optimize.minimize_scalar(profile, bounds=(lo, hi), method="bounded",
                                       options={"xatol": 1e-15 + 1e-13 * hi})
        if res.fun < fbest:
            beta = float(res.x)
    return beta


_SERIES_TERMS = 16


def _stretched_beta(r: np.ndarray, n: int, sr: float) -> float | None:
    """The minimum over beta >= 0 of the stretched exponential's profile (the rate profiled out)
    p(beta) = n ln e(beta) - beta sum(r) + const, e(beta) = sum((e^(beta r) - 1) / beta), by a
    safeguarded Newton's method on p'. e(beta) = int e^(beta t) mu(dt) with mu = sum of Lebesgue
    measures on [0, r_i] is a Laplace transform, so p is convex: its minimum is beta = 0 (the
    power-law limit) exactly when p'(0) >= 0, i.e. n sum(r^2) >= 2 sum(r)^2, else the root of p'.
    None when it does not converge."""
    if not sr > 0:
        return None
    srr, rmax = float(r @ r), float(r.max())
    if n * srr >= 2.0 * sr * sr:
        return 0.0
    moments = []

    def derivs(beta):  # (p', p'') at beta
        if beta == 0.0:  # e(0) = sum(r), e'(0) = sum(r^2) / 2, e''(0) = sum(r^3) / 3
            q1 = srr / (2.0 * sr)
            return n * q1 - sr, n * (float(np.dot(r * r, r)) / (3.0 * sr) - q1 * q1)
        if beta * rmax < 0.1:  # e and its derivatives as power series in beta from moments of r
            if not moments:  # sum(r^k), k = 1 .. _SERIES_TERMS
                powers = np.cumprod(np.broadcast_to(r[:, None], (r.size, _SERIES_TERMS)), axis=1)
                moments.extend(powers.sum(axis=0).tolist())
            e = e1 = e2 = 0.0
            fact = 1.0  # (k + 1)!
            for k in range(_SERIES_TERMS):
                fact *= k + 1
                c = moments[k] / fact  # M_(k+1) / (k+1)!
                e += c * beta**k
                if k >= 1:
                    e1 += k * c * beta ** (k - 1)
                if k >= 2:
                    e2 += k * (k - 1) * c * beta ** (k - 2)
            q1 = e1 / e
            return n * q1 - sr, n * (e2 / e - q1 * q1)
        t = beta * r
        em1 = np.expm1(t)
        big = float(np.sum(em1))  # beta e(beta)
        w = em1 + 1.0
        s1 = float(t @ w)
        s2 = float((t * t) @ w)
        q1 = (s1 - big) / (beta * big)  # e'/e
        return n * q1 - sr, n * ((s2 - 2.0 * s1 + 2.0 * big) / (beta * beta * big) - q1 * q1)

    lo, hi = 0.0, math.inf  # p'(lo) < 0 < p'(hi)
    beta, (d1, d2) = 0.0, derivs(0.0)
    with np.errstate(all="ignore"):
        for _ in range(200):
            new = beta - d1 / d2 if d2 > 0 else math.nan
            if not lo < new < hi:  # outside the bracket: bisect it (or double, unbounded)
                new = 0.5 * (lo + hi) if math.isfinite(hi) else max(2.0 * lo, 1.0 / rmax)
            if not lo < new < hi:
                return new if hi - lo <= 1e-14 * hi else None
            nd1, nd2 = derivs(new)
            if not (math.isfinite(nd1) and math.isfinite(nd2)):
                hi = new  # overflow: the root is below
                continue
            step = new - beta
            beta, d1, d2 = new, nd1, nd2
            if d1 < 0:
                lo = beta
            elif d1 > 0:
                hi = beta
            else:
                return beta
            if abs(step) <= 1e-13 * beta:
                return beta
            if d2 > 0 and d1 * d1 <= 1e-15 * n * d2:
                # Newton's decrement (the predicted gain, doubled) is below rounding of p ~ n:
                # the last step, quadratically converged, needs no check
                last = beta - d1 / d2
                return last if lo <= last <= hi else beta
    return None


# --- discrete models with exact probabilities (powerlaw 1.5's _pdf_discrete_normalizer) -----------
def _log_lerch_sum(alpha: float, lam: float, x0: float) -> float:
    """log sum_{k >= 0} (x0 + k)^-alpha e^(-lam (x0 + k)): direct terms, then Euler-Maclaurin."""
    n_direct = int(max(32, 10 * math.ceil(abs(alpha)) + 10))
    k = x0 + np.arange(n_direct, dtype=np.float64)
    logt = -alpha * np.log(k / x0) - lam * (k - x0)  # log of the terms / f(x0)
    head = float(np.sum(np.exp(logt)))
    big = x0 + n_direct
    log_fx = -alpha * math.log(big / x0) - lam * (big - x0)
    if lam > 0:  # int_big^inf x^-alpha e^(-lam x) dx = lam^(alpha-1) Gamma(1-alpha, lam big), / f(x0)
        log_int = ((alpha - 1.0) * math.log(lam) + log_upper_gamma_scalar(1.0 - alpha, lam * big)
                   + alpha * math.log(x0) + lam * x0)
    elif alpha > 1:
        log_int = math.log(big / (alpha - 1.0)) - alpha * math.log(big / x0)
    else:
        return math.inf
    h = -alpha / big - lam  # f'/f; Euler-Maclaurin: f/2 - f'/12 + f3/720 (f3 the third derivative)
    h1, h2 = alpha / big**2, -2.0 * alpha / big**3
    corr = 0.5 - h / 12.0 + (h**3 + 3.0 * h * h1 + h2) / 720.0
    rest = math.exp(log_int) + corr * math.exp(log_fx)
    return math.log(head + rest) - alpha * math.log(x0) - lam * x0


def _discrete_exact_logpmf(name: str, theta, xmin: float, x):
    x = np.asarray(x, dtype=np.float64)
    if name == "power_law":
        return -theta[0] * np.log(x) - math.log(float(zeta(theta[0], xmin)))
    if name == "exponential":
        lam = theta[0]
        return math.log(-math.expm1(-lam)) - lam * (x - xmin)
    alpha, lam = theta  # truncated power law
    return -alpha * np.log(x) - lam * x - _log_lerch_sum(alpha, lam, xmin)


def _discrete_exact_cdf(name: str, theta, xmin: float, x):
    x = np.maximum(np.asarray(x, dtype=np.float64), xmin)
    if name == "power_law":
        return -np.expm1(np.log(zeta(theta[0], x)) - math.log(float(zeta(theta[0], xmin))))
    if name == "exponential":
        return -np.expm1(-theta[0] * (x - xmin))
    alpha, lam = theta
    z0 = _log_lerch_sum(alpha, lam, xmin)
    uniq, inv = np.unique(x, return_inverse=True)
    with np.errstate(all="ignore"):
        out = -np.expm1(_log_lerch_sums(alpha, lam, uniq) - z0)
    return out[inv].reshape(x.shape)


def _log_lerch_sums(alpha: float, lam: float, v: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """:func:`_log_lerch_sum` for every x0 in ``v`` at once (the same terms and tail)."""
    v = np.asarray(v, dtype=np.float64)
    n_direct = int(max(32, 10 * math.ceil(abs(alpha)) + 10))
    steps = np.arange(n_direct, dtype=np.float64)
    out = np.empty_like(v)
    for i in range(0, v.size, chunk):
        x0 = v[i:i + chunk]
        head = np.exp(-alpha * np.log1p(steps / x0[:, None]) - lam * steps).sum(axis=1)
        big = x0 + n_direct
        log_fx = -alpha * np.log(big / x0) - lam * n_direct
        if lam > 0:
            log_int = ((alpha - 1.0) * math.log(lam) + log_upper_gamma(1.0 - alpha, lam * big)
                       + alpha * np.log(x0) + lam * x0)
        elif alpha > 1:
            log_int = np.log(big / (alpha - 1.0)) - alpha * np.log(big / x0)
        else:
            out[i:i + chunk] = math.inf
            continue
        h = -alpha / big - lam
        h1, h2 = alpha / big**2, -2.0 * alpha / big**3
        corr = 0.5 - h / 12.0 + (h**3 + 3.0 * h * h1 + h2) / 720.0
        out[i:i + chunk] = (np.log(head + np.exp(log_int) + corr * np.exp(log_fx))
                            - alpha * np.log(x0) - lam * x0)
    return out


def _fit_discrete_tpl(tail, xmin, alpha0):
    n, sl, sx = tail.size, float(np.sum(np.log(tail))), float(np.sum(tail))

    def nll(z):
        alpha, lam = z[0], math.exp(z[1])
        with np.errstate(all="ignore"):
            try:
                v = alpha * sl + lam * sx + n * _log_lerch_sum(alpha, lam, xmin)
            except (OverflowError, ValueError):
                return math.inf
        return v if math.isfinite(v) else math.inf

    z0 = np.array([alpha0, math.log(1.0 / float(np.mean(tail)))])
    z, _ = _nelder_mead(nll, z0, np.array([0.1, 1.0]), newton=True, rel_step=1e-4)
    return (float(z[0]), math.exp(z[1]))


# --- discrete fits: each objective evaluated for a batch of parameter points in one numpy pass --
# (the finite-difference stencil of a Newton step, or its step halvings: one call, not 8 or 20)
_STENCIL = {2: np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0],
                         [1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]]),
            1: np.array([[1.0], [-1.0]])}
_HALVINGS = 0.5 ** np.arange(1, 20)  # t = 1/2, ..., 2^-19: _newton_step's search after t = 1
# a Hessian this ill-conditioned at Newton's stop: a flat ridge (a maximum at infinity along it);
# the original simplex search, which follows it further, decides (the data sets here: < 1e4)
_RIDGE = 1e7
# A cell's 'round' probability is the integral of the density e^g over it (y = ln(x / x0), h its
# half width, g1 = g'(m), g2 = g''(m) at its middle m): by a Taylor series where |g1| h <= 0.01 and
# |g2| h^2 <= 5e-5 (the first terms left out, (g1 h)^6 / 5040 and (g2 h^2)^3 / 336, are below
# 1e-15), else by Gauss-Legendre rules of 5 and 8 nodes within the bounds below (measured: below
# 1e-15 relative), else (wide cells, where nothing cancels) as S(x - 1/2) - S(x + 1/2)
_TAYLOR_CELL = (0.01, 5e-5)
_GL_TIERS = [(0.2, 0.02, *np.polynomial.legendre.leggauss(5)),
             (1.0, 0.2, *np.polynomial.legendre.leggauss(8))]


class _BatchObjective:
    """A negative log-likelihood: ``many(Z)`` for the rows of Z (inf where infeasible or not
    finite); ``obj(z)`` one point of ``many``.
    ``condition``: the condition number of the last Hessian :func:`_newton_batch` formed."""

    condition = math.inf

    def many(self, zs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, z) -> float:
        return float(self.many(np.asarray(z, dtype=np.float64)[None, :])[0])


class _RoundNll(_BatchObjective):
    """-loglik of a family's 'round' discrete model (module docstring) on a tail, from its unique
    values with counts: y = ln(x / x0) at the cell edges x -/+ 1/2, once."""

    def __init__(self, fam: _Family, tail: np.ndarray, x0: float):
        uniq, counts = np.unique(tail, return_counts=True)
        self.fam, self.x0, self.uniq = fam, x0, uniq
        self.counts = counts.astype(np.float64)
        self.ylo, self.yhi = np.log((uniq - 0.5) / x0), np.log((uniq + 0.5) / x0)
        self.ymid = np.log(uniq / x0) + 0.5 * np.log1p(-0.25 / (uniq * uniq))
        self.half = 0.5 * np.log1p(1.0 / (uniq - 0.5))  # not yhi - ylo: that cancels
        self.log_half = np.log(self.half)
        self.log_width = self.log_half + math.log(2.0)
        self.n, self.sy = tail.size, float(np.sum(np.log(tail / x0)))

    def _feasible(self, zs):
        raise NotImplementedError

    def _log_sf(self, zs, y):
        raise NotImplementedError

    def _log_dens(self, zs, t):
        """g(t) = log(-dS/dy) at t up to the constant ``_log_norm`` (rows of zs against t)."""
        raise NotImplementedError

    def _log_dens_derivs(self, zs, m):
        """g and its first four derivatives at m (arrays, or 0.0 where they vanish)."""
        raise NotImplementedError

    def _log_norm(self, zs):
        """log S(0) in the units of ``_log_dens``, one per row."""
        raise NotImplementedError

    def _log_cdf(self, zs, y):
        """log (S(-inf or 0) - S(y)) / S(0): differences without S's cancellation."""
        raise NotImplementedError

    def many(self, zs):
        zs = np.atleast_2d(np.asarray(zs, dtype=np.float64))
        out = np.full(zs.shape[0], math.inf)
        with np.errstate(all="ignore"):
            ok = self._feasible(zs)
            if not ok.any():
                return out
            zs = zs[ok]
            log_norm = self._log_norm(zs)[:, None]
            # every cell by the Taylor series of int e^g over it (the comment at _TAYLOR_CELL):
            # 2h e^g(m) (1 + h^2 (g2 + g1^2) / 6 + h^4 (g4 / 120 + g2^2 / 40 + g1 g3 / 30
            # + g1^2 g2 / 20 + g1^4 / 120)), gi the derivatives of g at m; the others again
            mid, g1, g2, g3, g4 = self._log_dens_derivs(zs, self.ymid)
            h2, g1s = self.half * self.half, g1 * g1
            series = h2 * ((g2 + g1s) / 6.0 + h2 * (g4 / 120.0 + g2 * g2 / 40.0 + g1 * g3 / 30.0
                                                    + g1s * g2 / 20.0 + g1s * g1s / 120.0))
            logp = mid + np.log1p(series) + self.log_width - log_norm
            lin, quad = np.abs(g1) * self.half, np.abs(g2) * h2
            done = (lin <= _TAYLOR_CELL[0]) & (quad <= _TAYLOR_CELL[1])
            for lmax, qmax, nodes, weights in _GL_TIERS:
                here = ~done & (lin <= lmax) & (quad <= qmax)
                done |= here
                rows, cols = np.nonzero(here)
                if rows.size:
                    half = self.half[cols, None]
                    lg = self._log_dens(zs[rows], self.ymid[cols, None] + half * nodes)
                    top = mid[rows, cols]
                    logp[rows, cols] = (top + np.log(np.exp(lg - top[:, None]) @ weights)
                                        + self.log_half[cols] - log_norm[rows, 0])
            rows, cols = np.nonzero(~done)  # wide cells (or nan): differences of S where the
            if rows.size:                   # density falls over the cell, else of the CDF
                zw, rising = zs[rows], g1[rows, cols] > 0
                ylo, yhi = self.ylo[cols, None], self.yhi[cols, None]
                lo = np.where(rising[:, None], self._log_cdf(zw, yhi), self._log_sf(zw, ylo))[:, 0]
                hi = np.where(rising[:, None], self._log_cdf(zw, ylo), self._log_sf(zw, yhi))[:, 0]
                logp[rows, cols] = lo + np.log(-np.expm1(hi - lo))
            v = -(logp @ self.counts)
            out[ok] = np.where(np.isfinite(v), v, math.inf)
        return out

    # the power-law limit of the family (lognormal b = 0, stretched beta = 0): S(y) = e^(a y),
    # a = 1 - alpha < 0, the 'round' power law; log P concave in a
    def limit_line(self) -> tuple[float, float]:
        """The maximum over a on the limit line by Newton's method (analytic derivatives)."""
        d = 2.0 * self.half
        a = -self.n / self.sy if self.sy > 0 else -1.0
        for _ in range(100):
            w = np.expm1(-a * d)
            g = -float(self.counts @ (self.ylo - d / w))  # d nll / da
            h = float(self.counts @ (d * d * (1.0 / w + 1.0 / (w * w))))
            if not (math.isfinite(g) and math.isfinite(h) and h > 0):
                break
            an = a - g / h
            an = an if an < 0 else 0.5 * a
            if abs(an - a) <= 4e-16 * abs(a):
                a = an
                break
            a = an
        return a, self.limit_slope(a)

    def _limit_dlogsf(self, a, y):
        raise NotImplementedError

    def limit_slope(self, a) -> float:
        """d nll / d(second parameter) at (a, 0) on the limit line, from the inside."""
        dl, dh = self._limit_dlogsf(a, self.ylo), self._limit_dlogsf(a, self.yhi)
        with np.errstate(all="ignore"):
            return -float(self.counts @ (dl + (dl - dh) / np.expm1(-2.0 * a * self.half)))


class _RoundLognormalNll(_RoundNll):
    def _feasible(self, zs):
        a, b = zs[:, 0], zs[:, 1]
        if self.fam.name == "lognormal_positive":
            return (b < 0) & (math.log(self.x0) - a / (2.0 * b) > 0)
        return (b < 0) | ((b == 0) & (a < 0))

    def _log_sf(self, zs, y):
        # log S(y)/S(0) = a y + b y^2 + A(a + 2 b y, b) - A(a, b), A = _log_partition
        a, b = zs[:, :1], zs[:, 1:]
        out = a * y
        neg = b[:, 0] < 0
        if neg.any():
            a, b = a[neg], b[neg]
            q = 0.5 / np.sqrt(-b)  # sigma / sqrt(2)
            out[neg] = (a * y + b * y * y + _log_erfcx(-(a + 2.0 * b * y) * q)
                        - _log_erfcx(-a * q))
        return out

    def _log_norm(self, zs):  # A(a, b) = log int_0^inf e^(a t + b t^2) dt
        a, b = zs[:, 0], zs[:, 1]
        q = np.where(b < 0, 0.5 / np.sqrt(np.where(b < 0, -b, 1.0)), 1.0)  # sigma / sqrt(2)
        return np.where(b < 0, np.log(_SQRT2 * q) + _LOG_SQRT_HALF_PI + _log_erfcx(-a * q),
                        -np.log(-a))

    def _log_dens(self, zs, t):
        a, b = zs[:, :1], zs[:, 1:]
        return a * t + b * t * t

    def _log_dens_derivs(self, zs, m):
        a, b = zs[:, :1], zs[:, 1:]
        return a * m + b * m * m, a + 2.0 * b * m, 2.0 * b, 0.0, 0.0

    def _spread(self, zs, m, h):
        a, b = zs[:, :1], zs[:, 1:]
        return np.abs(a + 2.0 * b * m) * h + np.abs(2.0 * b) * h * h

    def _log_cdf(self, zs, y):
        # log of int_-inf^y e^(a t + b t^2) dt / S(0) (b < 0): a differences of it is the cell's
        # probability, without S's cancellation where the density rises steeply over the cell
        a, b = zs[:, :1], zs[:, 1:]
        q = 0.5 / np.sqrt(np.where(b < 0, -b, np.nan))
        return (a * y + b * y * y + _log_erfcx((a + 2.0 * b * y) * q)
                - _log_erfcx(-a * q))

    def _limit_dlogsf(self, a, y):  # d/db log S(y)/S(0) at b = 0: y^2 - 2 y / a
        return y * y - 2.0 * y / a


class _RoundStretchedNll(_RoundNll):
    def _feasible(self, zs):
        return (zs[:, 1] >= 0) & np.isfinite(zs[:, 0])

    def _log_sf(self, zs, y):
        lk, beta = zs[:, :1], zs[:, 1:]
        pos = beta > 0
        e = np.where(pos, np.expm1(beta * y) / np.where(pos, beta, 1.0), y)
        return -np.exp(lk) * e

    def _log_dens(self, zs, t):
        lk, beta = zs[:, :1], zs[:, 1:]
        pos = beta > 0
        e = np.where(pos, np.expm1(beta * t) / np.where(pos, beta, 1.0), t)
        return lk + beta * t - np.exp(lk) * e

    def _log_norm(self, zs):
        return np.zeros(zs.shape[0])

    def _log_dens_derivs(self, zs, m):
        lk, beta = zs[:, :1], zs[:, 1:]
        em1 = np.expm1(beta * m)
        pos = beta > 0
        kappa = np.exp(lk)
        g = kappa * (em1 + 1.0)  # kappa e^(beta m)
        g0 = lk + beta * m - kappa * np.where(pos, em1 / np.where(pos, beta, 1.0), m)
        return g0, beta - g, -beta * g, -beta * beta * g, -beta * beta * beta * g

    def _spread(self, zs, m, h):
        lk, beta = zs[:, :1], zs[:, 1:]
        g = np.exp(lk + beta * m)  # kappa e^(beta m)
        return np.abs(beta - g) * h + beta * g * h * h

    def _log_cdf(self, zs, y):  # log(1 - S(y)/S(0))
        return np.log(-np.expm1(self._log_sf(zs, y)))

    def _limit_dlogsf(self, a, y):  # d/dbeta log S(y)/S(0) at beta = 0, kappa = -a: a y^2 / 2
        return 0.5 * a * y * y


def _newton_batch(obj: _BatchObjective, z: np.ndarray, rel_step: float, iters: int = 60,
                  boundary=None) -> tuple[np.ndarray, float, bool | None]:
    """:func:`_newton`'s damped steps (the same stencil, shift and step halvings), batched: a full
    step's point is evaluated together with its stencil (one call per step where it is accepted,
    as near the maximum), the step halvings in one call. ``boundary(z, zn, f)``: True where the
    step z -> zn heads for the family's limit and that is the answer; then (z, f, None). Else
    (z, f, converged)."""
    z = np.asarray(z, dtype=np.float64)
    k = z.size
    stencil, eye = _STENCIL[k], np.eye(k)

    def with_stencil(zc):
        h = rel_step * np.maximum(np.abs(zc), 1e-2)
        v = obj.many(np.vstack([zc, zc + stencil * h]))
        return float(v[0]), v[1:], h

    f, v, h = with_stencil(z)
    if not math.isfinite(f):
        return z, f, False
    for _ in range(iters):
        fp, fm = v[:k], v[k:2 * k]
        with np.errstate(all="ignore"):
            g = (fp - fm) / (2.0 * h)
            hess = np.diag((fp - 2.0 * f + fm) / (h * h))
            if k == 2:
                hess[0, 1] = hess[1, 0] = (v[4] - v[5] - v[6] + v[7]) / (4.0 * h[0] * h[1])
        if not (np.all(np.isfinite(hess)) and np.all(np.isfinite(g))):
            return z, f, False
        try:
            w = np.linalg.eigvalsh(hess)
            obj.condition = float(w.max() / w.min()) if w.min() > 0 else math.inf
            shifted = bool(np.any(w <= 0))
            if shifted:  # not concave here: Levenberg-Marquardt's shift
                hess = hess + (abs(float(w.min())) + 1e-3 * float(np.abs(w).max()) + 1e-12) * eye
            step = np.linalg.solve(hess, g)
        except np.linalg.LinAlgError:
            return z, f, False
        if not shifted and 0.5 * float(g @ step) <= 1e-15 * max(1.0, abs(f)):
            return z, f, True  # the step's predicted gain is below rounding: the optimum
        zn = z - step
        if boundary is not None and boundary(z, zn, f):
            return z, f, None
        fn, vn, hn = with_stencil(zn)
        if not fn < f:
            vs = obj.many(z - _HALVINGS[:, None] * step)
            below = np.flatnonzero(vs < f)
            if below.size == 0:
                return z, f, True  # no descent along Newton's direction: the optimum, to rounding
            zn, fn, vn = z - _HALVINGS[below[0]] * step, float(vs[below[0]]), None
        done = f - fn <= 1e-14 * max(1.0, abs(f))
        z, f = zn, fn
        if done:
            return z, f, True
        if vn is None:
            _, v, h = with_stencil(z)
        else:
            v, h = vn, hn
    return z, f, False


def _newton_twice(obj, z, rel_step=1e-4, boundary=None):
    """:func:`_nelder_mead`'s Newton stage: the larger step, then the default, from the same start.
    (z, f, converged: True, False, or None at the domain's limit)."""
    for step in (rel_step, 1e-5):
        zn, fn, ok = _newton_batch(obj, z, step, boundary=boundary)
        if ok is None or (ok and math.isfinite(fn)):
            return zn, fn, ok
    return zn, fn, False


def _continuous_lognormal_start(z0, n, sy, syy):
    """A few Newton steps on the continuous lognormal's likelihood (O(1) per evaluation, from
    sufficient statistics) from z0: close to the 'round' maximum, a start for it."""
    def nll(z):
        if not z[1] < 0:
            return math.inf
        with np.errstate(all="ignore"):
            v = -z[0] * sy - z[1] * syy + n * float(_log_partition(float(z[0]), float(z[1])))
        return v if math.isfinite(v) else math.inf

    if syy >= 2.0 * sy * sy / n:  # the continuous maximum is the power-law limit (see
        return z0                 # _fit_lognormal): no interior point to start from
    z, _ = _newton(nll, z0, iters=12)
    return z if nll(z) <= nll(z0) else z0


_BETA_GRID = np.logspace(-6, 3, 37)


def _continuous_stretched_start(obj: _RoundNll) -> np.ndarray:
    """The continuous stretched exponential's profile likelihood (the rate in closed form) on a
    grid of beta, in one batch: its best point, a start for the 'round' maximum."""
    r = np.log(obj.uniq / obj.x0)
    with np.errstate(all="ignore"):
        e = (np.expm1(_BETA_GRID[:, None] * r) / _BETA_GRID[:, None]) @ obj.counts
        prof = -(obj.n * np.log(obj.n / e) + _BETA_GRID * float(r @ obj.counts) - obj.n)
    prof = np.where(np.isfinite(prof) & (e > 0), prof, math.inf)
    i = int(np.argmin(prof))
    if not math.isfinite(prof[i]):
        return np.array([0.0, 1.0])
    return np.array([math.log(obj.n / e[i]), float(_BETA_GRID[i])])


def _fit_round_family(fam: _Family, tail, x0, z_lognormal=None):
    """The discrete ('round') lognormal, positive lognormal and stretched exponential: the same
    maxima and power-law-limit decisions as :func:`_fit_lognormal` / :func:`_fit_stretched` (which
    stay the fallback), found by batched Newton steps and, on the limit line, Newton's method with
    the analytic derivatives and the limit's optimality (KKT) condition."""
    if np.unique(tail).size < 3:  # a ridge of maxima (two values, two parameters): the original
        if fam.name == "stretched_exponential":
            return _fit_stretched(fam, tail, x0, None, True)
        return _fit_lognormal(fam, tail, x0, None, True, z_lognormal=z_lognormal)
    if fam.name == "lognormal_positive":
        return _fit_round_lognormal_positive(fam, tail, x0, z_lognormal)
    if fam.name == "stretched_exponential":
        obj = _RoundStretchedNll(fam, tail, x0)
        z0 = _continuous_stretched_start(obj)
        al, slope = obj.limit_line()
        limit = np.array([math.log(-al), 0.0])
        limit_optimal = slope >= 0  # moving into beta > 0 does not lower -loglik
        if z0[1] <= 0:
            z0 = np.array([z0[0], 1e-3])
    else:
        obj = _RoundLognormalNll(fam, tail, x0)
        lx = np.log(tail)
        s0 = float(np.std(lx)) or 1.0
        y = lx - math.log(x0)
        z0 = np.array([float(np.mean(y)) / s0**2, -0.5 / s0**2])
        z0 = _continuous_lognormal_start(z0, tail.size, float(np.sum(y)), float(np.sum(y * y)))
        al, slope = obj.limit_line()
        limit = np.array([al, 0.0])
        limit_optimal = slope <= 0  # moving into b < 0 does not lower -loglik
    fl = obj(limit)  # (the cell integrals: powerlaw's S differences would decide on rounding)

    def boundary(z, zn, f):
        # where the limit is a maximum (KKT) and as good as the current point, a step towards
        # it (or beyond): the limit (Newton's steps would only creep up to it)
        return limit_optimal and (abs(zn[1]) < abs(z[1]) or zn[1] * z[1] <= 0) \
            and fl <= f + _SAME * max(1.0, abs(f))

    z, best, ok = _newton_twice(obj, z0, boundary=boundary)
    if ok is None:
        if math.isfinite(fl) and fl <= best + _SAME * max(1.0, abs(best)):
            return limit
        ok = False
    if not ok or obj.condition > _RIDGE:  # the general search (the original code)
        fitter = _fit_stretched if fam.name == "stretched_exponential" else _fit_lognormal
        return fitter(fam, tail, x0, None, True)
    if fl <= best + _SAME * max(1.0, abs(best)):  # the power-law limit, as good to rounding
        return limit
    return z


class _EdgeNll(_BatchObjective):
    """The positive lognormal's -loglik on the edge mu = 0 (a = 2 ln(x0) b), in t = ln(-b)."""

    def __init__(self, obj: _RoundNll):
        self.obj, self.lx0 = obj, math.log(obj.x0)

    def edge(self, ts):
        b = -np.exp(np.asarray(ts, dtype=np.float64)[:, 0])
        return np.stack([2.0 * self.lx0 * b + 1e-12 * np.abs(b) + 1e-300, b], axis=1)

    def many(self, ts):
        return self.obj.many(self.edge(np.atleast_2d(ts)))


def _fit_round_lognormal_positive(fam, tail, x0, z_lognormal):
    z = z_lognormal if z_lognormal is not None else \
        _fit_round_family(_FAMILIES["lognormal"], tail, x0)
    if fam.feasible(z, x0):
        return z
    obj = _RoundLognormalNll(fam, tail, x0)
    lx = np.log(tail)
    s0 = float(np.std(lx)) or 1.0
    t0 = math.log(max(-z[1], 0.5 / max(s0, 1e-3) ** 2))
    edge = _EdgeNll(obj)
    # start: the continuous likelihood's maximum on the edge (sufficient statistics, O(1))
    y = lx - math.log(x0)
    n, sy, syy = tail.size, float(np.sum(y)), float(np.sum(y * y))

    def nll_c(t):
        a, b = edge.edge(np.asarray(t, dtype=np.float64)[None, :])[0]
        with np.errstate(all="ignore"):
            v = -a * sy - b * syy + n * float(_log_partition(float(a), float(b)))
        return v if math.isfinite(v) else math.inf

    tc, _ = _newton(nll_c, np.array([t0]), iters=20)
    fc, f0 = edge.many(np.array([tc, [t0]]))
    if fc <= f0:
        t0 = float(tc[0])
    t, ft, ok = _newton_twice(edge, np.array([t0]))
    if not ok:  # the original 1-D search
        return _fit_lognormal(fam, tail, x0, None, True, z_lognormal=np.asarray(z))
    return edge.edge(t[None, :])[0]


class _LerchNll(_BatchObjective):
    """-loglik of the discrete truncated power law in z = (alpha, ln Lambda), batched:
    :func:`_log_lerch_sum` for every row at once, with one number of direct terms for the whole
    batch (the largest the rows ask for: the stencil's values are then one smooth function)."""

    def __init__(self, tail, xmin):
        self.n, self.xmin = tail.size, xmin
        self.sl, self.sx = float(np.sum(np.log(tail))), float(np.sum(tail))

    def scalar(self, z) -> float:  # the original scalar objective
        alpha, lam = float(z[0]), math.exp(min(float(z[1]), 700.0))
        with np.errstate(all="ignore"):
            try:
                v = alpha * self.sl + lam * self.sx + self.n * _log_lerch_sum(alpha, lam, self.xmin)
            except (OverflowError, ValueError):
                return math.inf
        return v if math.isfinite(v) else math.inf

    def many(self, zs):
        zs = np.atleast_2d(np.asarray(zs, dtype=np.float64))
        alpha, x0 = zs[:, 0], self.xmin
        with np.errstate(all="ignore"):
            lam = np.exp(zs[:, 1])
            n_direct = int(max(32, 10 * math.ceil(float(np.max(np.abs(alpha)))) + 10)) \
                if np.all(np.isfinite(alpha)) else 32
            steps = np.arange(n_direct, dtype=np.float64)
            logt = -alpha[:, None] * np.log1p(steps / x0) - lam[:, None] * steps
            head = np.exp(logt).sum(axis=1)
            big = x0 + n_direct
            log_fx = -alpha * math.log(big / x0) - lam * (big - x0)
            log_int = np.empty_like(alpha)
            for i, (a, la) in enumerate(zip(alpha.tolist(), lam.tolist())):
                if la > 0 and math.isfinite(la):
                    try:
                        log_int[i] = ((a - 1.0) * math.log(la)
                                      + log_upper_gamma_scalar(1.0 - a, la * big)
                                      + a * math.log(x0) + la * x0)
                    except (OverflowError, ValueError, ZeroDivisionError):
                        log_int[i] = math.nan
                elif a > 1:
                    log_int[i] = math.log(big / (a - 1.0)) - a * math.log(big / x0)
                else:
                    log_int[i] = math.nan
            h = -alpha / big - lam
            h1, h2 = alpha / big**2, -2.0 * alpha / big**3
            corr = 0.5 - h / 12.0 + (h**3 + 3.0 * h * h1 + h2) / 720.0
            log_sum = (np.log(head + np.exp(log_int) + corr * np.exp(log_fx))
                       - alpha * math.log(x0) - lam * x0)
            v = alpha * self.sl + lam * self.sx + self.n * log_sum
        return np.where(np.isfinite(v), v, math.inf)


def _fit_discrete_tpl_batched(tail, xmin, alpha0):
    """:func:`_fit_discrete_tpl`'s maximum by batched Newton steps (the original is the fallback)."""
    if np.unique(tail).size < 3:  # a ridge of maxima (two values, two parameters): the original
        return _fit_discrete_tpl(tail, xmin, alpha0)
    obj = _LerchNll(tail, xmin)
    z0 = np.array([alpha0, math.log(1.0 / float(np.mean(tail)))])
    # the start: the best of a coarse grid about powerlaw's start values (one batch), where the
    # likelihood in (alpha, ln Lambda) is nearer its quadratic model than at 1 / mean(x)
    grid = z0 + _TPL_START_GRID
    v = obj.many(grid)
    if np.min(v) < v[_TPL_START_GRID.tolist().index([0.0, -0.0])]:  # (the grid holds z0)
        z0 = grid[int(np.argmin(v))]
    z, f, ok = _newton_twice(obj, z0)
    for _ in range(4):  # a maximum at Lambda -> 0 (the power law): Newton's steps in ln Lambda
        if not ok:      # stall on the flat approach; look further down, then step again
            break
        probes = z + _LAMBDA_PROBES
        v = obj.many(probes)
        i = int(np.argmin(v))
        if not v[i] < f - 1e-14 * max(1.0, abs(f)):
            break
        z, f, ok = _newton_twice(obj, probes[i])
    # a flat ridge decides the original search; not the flat approach to Lambda -> 0, where the
    # probes above went down until the likelihood stopped rising
    at_zero = math.exp(z[1]) * obj.sx <= 1e-10 * max(1.0, abs(f))
    if not ok or (obj.condition > _RIDGE and not at_zero) or not math.isfinite(obj.scalar(z)):
        return _fit_discrete_tpl(tail, xmin, alpha0)
    return (float(z[0]), math.exp(z[1]))


_TPL_START_GRID = np.array([[da, -dl] for da in (-0.5, 0.0, 0.5) for dl in (0.0, 2.0, 4.0, 6.0, 8.0)])
_LAMBDA_PROBES = np.stack([np.zeros(8), -(2.0 ** np.arange(8))], axis=1)


@dataclass(frozen=True, repr=False, eq=False)
class TailFit:
    """A tail model fitted by maximum likelihood on [xmin, xmax] (or on the lattice xmin, xmin + 1,
    ... when ``discrete``). ``parameters`` in ``powerlaw``'s names; a fit at the power-law limit of
    its family reports it as such (lognormal: mu = -inf, sigma = inf; stretched exponential:
    Lambda = inf, beta = 0)."""

    name: str
    parameters: dict
    loglikelihood: float
    xmin: float
    xmax: float | None
    n_tail: int
    status: str
    reason: str
    _model: TailModel = field(repr=False)
    _tail: np.ndarray = field(repr=False)
    discrete: bool = False
    _logpdf: Callable | None = field(default=None, repr=False)
    _cdf: Callable | None = field(default=None, repr=False)
    _z: tuple | None = field(default=None, repr=False)  # a family's fitted natural parameters

    def __getattr__(self, item):  # fit.alpha, fit.Lambda, fit.mu, ...
        params = self.__dict__.get("parameters", {})
        if item in params:
            return params[item]
        raise AttributeError(item)

    @property
    def theta(self) -> tuple[float, ...]:
        """The fitted parameters as a tuple, in the model's parameter order."""
        return tuple(self.parameters[p] for p in self._model.params)

    def loglikelihoods(self, x=None) -> np.ndarray:
        """Per-point log density (log probability for a discrete fit) over the tail or ``x``."""
        x = self._tail if x is None else np.asarray(x, dtype=np.float64)
        if self._logpdf is not None:
            return self._logpdf(x)
        return self._model.logpdf(self.theta, x, self.xmin, self.xmax)

    def pdf(self, x) -> np.ndarray:
        """Model density (probability, for a discrete fit) at ``x``."""
        return np.exp(self.loglikelihoods(x))

    def cdf(self, x) -> np.ndarray:
        """P(X < x | X >= xmin)."""
        if self._cdf is not None:
            return self._cdf(x)
        return self._model.cdf(self.theta, x, self.xmin, self.xmax)

    def ccdf(self, x) -> np.ndarray:
        """Model complementary CDF, 1 - cdf(x), of the tail."""
        return 1.0 - self.cdf(x)

    @property
    def D(self) -> float:  # noqa: N802
        """The Kolmogorov-Smirnov distance between the tail and the fitted model."""
        return ks_distance(self._tail, self.cdf)

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v:.6g}" for k, v in self.parameters.items())
        disc = ", discrete=True" if self.discrete else ""
        return (f"TailFit({self.name!r}, {ps}, loglikelihood={self.loglikelihood:.6g}, "
                f"n_tail={self.n_tail}, status={self.status!r}{disc})")


def _neg_loglik(model: TailModel, st: TailStats, xmin: float, xmax: float | None, z) -> float:
    theta = model.from_free(z)
    if not model.valid(theta):
        return math.inf
    with np.errstate(all="ignore"):
        total = model.loglik(theta, st, xmin, xmax)
    return -total if math.isfinite(total) else math.inf


def fit_tail_model(name: str, tail: np.ndarray, xmin: float, xmax: float | None = None,
                   power_law=None, discrete: bool = False, lognormal=None) -> TailFit:
    """Maximum-likelihood fit of model ``name`` to ``tail`` (values in [xmin, xmax]).

    The power law reuses the given :class:`PowerLawFit`; the exponential has a closed form (without
    xmax: 1 / (mean(x) - xmin), discrete: ln(1 + 1 / mean(x - xmin))); the lognormal and the
    stretched exponential are maximised in parameters where no bound is needed (see the module
    docstring); the truncated power law by Newton's method from the power law's alpha (a bounded
    search where its maximum lies on the power-law side, Lambda max(x) < 1e-6). The continuous
    fits use analytic derivatives of O(1) objectives built from sufficient statistics.
    ``discrete=True`` fits the discrete forms (``powerlaw`` 1.5's, see the module docstring).
    ``lognormal``: the lognormal already fitted to this same tail (a :class:`TailFit`), which the
    positive lognormal's fit starts from instead of fitting it again.
    """
    if name not in MODELS:
        raise ValueError(f"unknown distribution {name!r}; choose from {sorted(MODELS)}")
    if discrete and xmax is not None:
        raise ValueError("discrete tail models take no xmax")
    model = MODELS[name]
    tail = np.asarray(tail, dtype=np.float64)
    logpdf = cdf = z_kept = None
    if name in _FAMILIES:
        fam = _FAMILIES[name]
        x0 = xmin - 0.5 if discrete else xmin
        if discrete:
            z_ln = np.array(lognormal._z) if lognormal is not None and lognormal._z is not None \
                else None
            z = _fit_round_family(fam, tail, x0, z_lognormal=z_ln)
        elif name == "lognormal_positive" and lognormal is not None and lognormal._z is not None:
            z = _fit_lognormal(fam, tail, x0, xmax, discrete, z_lognormal=np.array(lognormal._z))
        else:
            fitter = _fit_stretched if name == "stretched_exponential" else _fit_lognormal
            z = fitter(fam, tail, x0, xmax, discrete)
        z_kept = tuple(float(v) for v in z)
        params = fam.display(z, x0)
        logpdf = partial(_family_logpdf, fam, tuple(float(v) for v in z), x0, xmax, discrete)
        cdf = partial(_family_cdf, fam, tuple(float(v) for v in z), x0, xmax, discrete)
    else:
        if name == "power_law" and power_law is not None:
            theta = (power_law.alpha,)
        elif name == "exponential" and discrete:
            d = float(np.mean(tail - xmin))
            theta = (math.log1p(1.0 / d) if d > 0 else math.inf,)
        elif name == "exponential" and xmax is None and (m := float(np.mean(tail))) > xmin:
            theta = (1.0 / (m - xmin),)
        elif name == "truncated_power_law" and discrete:
            alpha0 = power_law.alpha if power_law is not None else \
                1.0 + tail.size / float(np.sum(np.log(tail / xmin)))
            theta = _fit_discrete_tpl_batched(tail, xmin, alpha0)
        elif discrete:  # the power law without a fit to reuse
            res = optimize.minimize_scalar(
                lambda a: -float(np.sum(_discrete_exact_logpmf("power_law", (a,), xmin, tail))),
                bounds=(1.0 + 1e-9, 50.0), method="bounded", options={"xatol": 1e-12})
            theta = (float(res.x),)
        else:
            theta = _fit_tpl(tail, xmin, xmax, power_law) if name == "truncated_power_law" \
                else None
            if theta is None:
                theta = _maximise(model, tail, xmin, xmax)
        params = dict(zip(model.params, (float(v) for v in theta)))
        if discrete:
            logpdf = partial(_discrete_exact_logpmf, name, tuple(theta), xmin)
            cdf = partial(_discrete_exact_cdf, name, tuple(theta), xmin)
        elif not model.valid(theta):
            logpdf = partial(_minus_inf)
    with np.errstate(all="ignore"):
        if logpdf is not None:
            ll = float(np.sum(logpdf(tail)))
        else:
            ll = float(np.sum(model.logpdf(tuple(params[p] for p in model.params), tail, xmin,
                                           xmax)))
    ok = math.isfinite(ll)
    return TailFit(name=name, parameters=params, loglikelihood=ll, xmin=xmin, xmax=xmax,
                   n_tail=int(tail.size), status="success" if ok else "failed",
                   reason="" if ok else "the likelihood has no finite maximum for this tail",
                   _model=model, _tail=tail, discrete=discrete, _logpdf=logpdf, _cdf=cdf,
                   _z=z_kept)


def _minus_inf(x):
    return np.full(np.shape(x), -math.inf)


def _maximise(model: TailModel, tail, xmin, xmax) -> tuple[float, ...]:
    st = TailStats(tail)

    def objective(z):
        return _neg_loglik(model, st, xmin, xmax, z)

    bounds = model.bounds(st, xmin)
    lo, hi = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
    z0 = np.clip(model.to_free(model.start(tail, xmin)), lo, hi)
    if z0.size == 2:  # Newton's steps from the start (a few dozen evaluations, not thousands)
        zn, ok = _newton(objective, z0)
        if ok and np.all((zn > lo) & (zn < hi)) and objective(zn) <= objective(z0):
            return model.from_free(zn)
    opts = {"xatol": 1e-9, "fatol": 1e-11, "maxfev": 4000}
    best = optimize.minimize(objective, z0, method="Nelder-Mead", bounds=bounds, options=opts)
    # restart once from the optimum: Nelder-Mead can stall on long, flat ridges (lognormal)
    again = optimize.minimize(objective, best.x, method="Nelder-Mead", bounds=bounds, options=opts)
    if again.fun <= best.fun:
        best = again
    return model.from_free(best.x)


# --- the continuous truncated power law: Newton's method in (alpha, ln Lambda) --------------------
def _tpl_end(s: float, z: float, h: float):
    """log Gamma(s, z) and its derivatives (d/ds and d2/ds2 by central differences of step h,
    d/dz, d2/dz2, d2/dsdz in closed form from those): (G, Gs, Gz, Gss, Gsz, Gzz)."""
    g0 = log_upper_gamma_scalar(s, z)
    gp = log_upper_gamma_scalar(s + h, z)
    gm = log_upper_gamma_scalar(s - h, z)
    gs = (gp - gm) / (2.0 * h)
    gss = (gp - 2.0 * g0 + gm) / (h * h)
    q = math.exp((s - 1.0) * math.log(z) - z - g0)  # z^(s-1) e^-z / Gamma(s, z) = -dG/dz
    return g0, gs, -q, gss, -q * (math.log(z) - gs), -q * ((s - 1.0) / z - 1.0 + q)


def _tpl_value(alpha: float, u: float, ml: float, mx: float, xmin: float,
               xmax: float | None) -> float:
    """The truncated power law's negative log-likelihood per point at (alpha, Lambda = e^u):
    alpha mean(ln x) + Lambda mean(x) + log C, C = int_xmin^xmax x^-alpha e^(-Lambda x) dx (the
    log normaliser of :class:`TruncatedPowerLaw`, in O(1))."""
    lam, s = math.exp(u), 1.0 - alpha
    w = log_upper_gamma_scalar(s, lam * xmin)
    if xmax is not None:
        hi = log_upper_gamma_scalar(s, lam * xmax)
        w = w + math.log(-math.expm1(hi - w)) if hi < w else math.inf
    return alpha * ml + lam * mx + (alpha - 1.0) * u + w


def _tpl_derivatives(alpha: float, u: float, ml: float, mx: float, xmin: float,
                     xmax: float | None):
    """:func:`_tpl_value` with its gradient and Hessian in (alpha, Lambda), in plain floats:
    (f, fa, fl, faa, fal, fll)."""
    lam, s = math.exp(u), 1.0 - alpha
    h = 1e-4 * max(1.0, abs(s))
    # W = log Gamma(1 - alpha, lam xmin) and its derivatives in (alpha, lam)
    w, gs, gz, gss, gsz, gzz = _tpl_end(s, lam * xmin, h)
    wa, wl, waa, wal, wll = -gs, xmin * gz, gss, -xmin * gsz, xmin * xmin * gzz
    if xmax is not None:  # W = log(e^L - e^H): its derivatives from both ends'
        v, gs, gz, gss, gsz, gzz = _tpl_end(s, lam * xmax, h)
        ha, hl, haa, hal, hll = -gs, xmax * gz, gss, -xmax * gsz, xmax * xmax * gzz
        r = math.exp(v - w)
        if not r < 1.0:
            return (math.inf,) * 6
        q = 1.0 - r
        da, dl = (wa - r * ha) / q, (wl - r * hl) / q
        waa = (waa + wa * wa - r * (haa + ha * ha)) / q - da * da
        wal = (wal + wa * wl - r * (hal + ha * hl)) / q - da * dl
        wll = (wll + wl * wl - r * (hll + hl * hl)) / q - dl * dl
        w, wa, wl = w + math.log1p(-r), da, dl
    f = alpha * ml + lam * mx + (alpha - 1.0) * u + w
    return (f, ml + u + wa, mx + (alpha - 1.0) / lam + wl, waa, 1.0 / lam + wal,
            -(alpha - 1.0) / (lam * lam) + wll)


def _fit_tpl(tail, xmin: float, xmax: float | None, power_law=None):
    """The continuous truncated power law's maximum by Newton's method with a backtracking line
    search in (alpha, u = ln Lambda), O(1) per step from the sufficient statistics mean(ln x),
    mean(x) (the negative log-likelihood is convex in (alpha, Lambda), an exponential family).
    Start: the power law's alpha, and the best u on a unit grid walked from Lambda = 1 / max(x).
    None when it does not converge to an interior maximum (Lambda -> 0, a non-finite normaliser):
    the caller then runs :func:`_maximise`."""
    n = tail.size
    if n < 2:
        return None
    ml, mx = float(np.sum(np.log(tail))) / n, float(np.sum(tail)) / n
    top = float(tail.max())
    alpha = power_law.alpha if power_law is not None and math.isfinite(power_law.alpha) \
        else 1.0 + 1.0 / max(ml - math.log(xmin), 1e-300)
    u_lo = math.log(1e-12 / top)  # _maximise's box: below it, that bound's answer
    u_hi = math.log(1e12 / xmin)
    # Lambda max(x) < 1e-6: the power-law limit's side, where the Lambda-derivatives cancel
    # ((alpha - 1) / Lambda against the normaliser's) to noise; the bounded search decides there
    u_flat = math.log(1e-6 / top)
    if not -50.0 < alpha < 50.0:  # outside _maximise's box (the cost of log Gamma(1 - alpha, .)
        return None  # grows with alpha)
    with np.errstate(all="ignore"):
        try:
            u = -math.log(top)
            f = _tpl_value(alpha, u, ml, mx, xmin, xmax)
            for direction in (-1.0, 1.0):  # walk while the likelihood improves
                moved = False
                while u_lo < u + direction < u_hi:
                    fn = _tpl_value(alpha, u + direction, ml, mx, xmin, xmax)
                    if not fn < f:
                        break
                    u, f, moved = u + direction, fn, True
                if moved:
                    break
            for _ in range(100):
                if u < u_flat:
                    return None
                f, fa, fl, haa, hal, hll = _tpl_derivatives(alpha, u, ml, mx, xmin, xmax)
                if not all(math.isfinite(v) for v in (f, fa, fl, haa, hal, hll)):
                    return None
                # convergence: Newton's decrement (twice the predicted gain) in (alpha, Lambda),
                # where the objective is convex; it does not vanish as Lambda -> 0 unless the
                # gradient does (in u it would, on the power-law limit's flat side)
                det = haa * hll - hal * hal
                if haa > 0 and det > 0:
                    dec = (hll * fa * fa - 2.0 * hal * fa * fl + haa * fl * fl) / det
                    if dec <= 1e-15 * max(1.0, abs(f)):
                        return alpha, math.exp(u)
                lam = math.exp(u)  # the steps: Newton's in (alpha, u = ln Lambda)
                fu, hau, huu = lam * fl, lam * hal, lam * lam * hll + lam * fl
                det = haa * huu - hau * hau
                if not (haa > 0 and det > 1e-12 * (haa * huu + hau * hau)):
                    # not convex here: Levenberg-Marquardt's shift
                    m = 0.5 * (haa + huu) - math.sqrt(0.25 * (haa - huu) ** 2 + hau * hau)
                    shift = abs(m) + 1e-3 * (abs(haa) + abs(huu)) + 1e-300
                    haa, huu = haa + shift, huu + shift
                    det = haa * huu - hau * hau
                sa = -(huu * fa - hau * fu) / det
                su = -(haa * fu - hau * fa) / det
                t = 1.0
                while t > 1e-12:
                    a_new, u_new = alpha + t * sa, u + t * su
                    f_new = _tpl_value(a_new, u_new, ml, mx, xmin, xmax)
                    if f_new <= f:
                        break
                    t *= 0.5
                else:
                    return None  # no descent, and not converged: the bounded search decides
                alpha, u = a_new, u_new
                if not (u_lo < u < u_hi and -50.0 < alpha < 50.0):  # _maximise's box
                    return None
        except (OverflowError, ValueError, ZeroDivisionError):
            return None
    return None
