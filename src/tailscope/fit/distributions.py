"""Alternative tail models fitted by maximum likelihood on the same tail [xmin, xmax].

Every model is written as an unnormalised log density ``logf(x)`` and the log of its integral to
infinity ``logsf(x)``; the density on [xmin, xmax] is then exp(logf(x) - log Z) with
log Z = logsf(xmin) + log(1 - exp(logsf(xmax) - logsf(xmin))). Working in logs keeps every model
finite for every sign of its exponent (``powerlaw`` multiplies raw densities and constants and
replaces underflows by 1e-308).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize
from scipy.special import log_ndtr

from .special import log_upper_gamma
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


@dataclass(frozen=True, repr=False, eq=False)
class TailFit:
    """A tail model fitted by maximum likelihood on [xmin, xmax]."""

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

    def __getattr__(self, item):  # fit.alpha, fit.Lambda, fit.mu, ...
        params = self.__dict__.get("parameters", {})
        if item in params:
            return params[item]
        raise AttributeError(item)

    @property
    def theta(self) -> tuple[float, ...]:
        return tuple(self.parameters[p] for p in self._model.params)

    def loglikelihoods(self, x=None) -> np.ndarray:
        x = self._tail if x is None else np.asarray(x, dtype=np.float64)
        return self._model.logpdf(self.theta, x, self.xmin, self.xmax)

    def pdf(self, x) -> np.ndarray:
        return np.exp(self.loglikelihoods(x))

    def cdf(self, x) -> np.ndarray:
        return self._model.cdf(self.theta, x, self.xmin, self.xmax)

    @property
    def D(self) -> float:  # noqa: N802
        return ks_distance(self._tail, self.cdf)

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v:.6g}" for k, v in self.parameters.items())
        return (f"TailFit({self.name!r}, {ps}, loglikelihood={self.loglikelihood:.6g}, "
                f"n_tail={self.n_tail}, status={self.status!r})")


def _neg_loglik(model: TailModel, st: TailStats, xmin: float, xmax: float | None, z) -> float:
    theta = model.from_free(z)
    if not model.valid(theta):
        return math.inf
    with np.errstate(all="ignore"):
        total = model.loglik(theta, st, xmin, xmax)
    return -total if math.isfinite(total) else math.inf


def fit_tail_model(name: str, tail: np.ndarray, xmin: float, xmax: float | None = None,
                   power_law=None) -> TailFit:
    """Maximum-likelihood fit of model ``name`` to ``tail`` (values in [xmin, xmax]).

    The power law reuses the given :class:`PowerLawFit`; the exponential without xmax has the
    closed form 1 / (mean(x) - xmin); the others are maximised numerically (Nelder-Mead on
    log-transformed positive parameters, then polished), from ``powerlaw``'s start values.
    """
    if name not in MODELS:
        raise ValueError(f"unknown distribution {name!r}; choose from {sorted(MODELS)}")
    model = MODELS[name]
    tail = np.asarray(tail, dtype=np.float64)
    if name == "power_law" and power_law is not None:
        theta = (power_law.alpha,)
    elif name == "exponential" and xmax is None and np.mean(tail) > xmin:
        theta = (1.0 / (float(np.mean(tail)) - xmin),)
    else:
        theta = _maximise(model, tail, xmin, xmax)
    params = dict(zip(model.params, (float(v) for v in theta)))
    with np.errstate(all="ignore"):
        ll = float(np.sum(model.logpdf(theta, tail, xmin, xmax))) if model.valid(theta) \
            else -math.inf
    ok = math.isfinite(ll)
    return TailFit(name=name, parameters=params, loglikelihood=ll, xmin=xmin, xmax=xmax,
                   n_tail=int(tail.size), status="success" if ok else "failed",
                   reason="" if ok else "the likelihood has no finite maximum for this tail",
                   _model=model, _tail=tail)


def _maximise(model: TailModel, tail, xmin, xmax) -> tuple[float, ...]:
    st = TailStats(tail)

    def objective(z):
        return _neg_loglik(model, st, xmin, xmax, z)

    bounds = model.bounds(st, xmin)
    z0 = np.clip(model.to_free(model.start(tail, xmin)), [b[0] for b in bounds],
                 [b[1] for b in bounds])
    opts = {"xatol": 1e-9, "fatol": 1e-11, "maxfev": 4000}
    best = optimize.minimize(objective, z0, method="Nelder-Mead", bounds=bounds, options=opts)
    # restart once from the optimum: Nelder-Mead can stall on long, flat ridges (lognormal)
    again = optimize.minimize(objective, best.x, method="Nelder-Mead", bounds=bounds, options=opts)
    if again.fun <= best.fun:
        best = again
    return model.from_free(best.x)
