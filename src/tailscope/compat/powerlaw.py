"""The ``powerlaw`` package's API on tailscope's fitter: switching is one import.

    import tailscope.compat.powerlaw as powerlaw     # was: import powerlaw
    fit = powerlaw.Fit(data)
    fit.power_law.alpha, fit.xmin, fit.D
    R, p = fit.distribution_compare('power_law', 'lognormal')
    fit.plot_ccdf()

The numbers are ``powerlaw`` 1.5's (Alstott, Bullmore & Plenz 2014), computed by
:mod:`tailscope.fit`: the xmin scan is exact and pruned, the alternative distributions are exact
maxima of their likelihoods (``powerlaw``'s ``fmin`` stops near them, or on an underflow; see
``docs/switching/powerlaw.md`` for every deliberate difference). Nothing is printed.

Both generations of ``powerlaw``: 1.5's names (``Fit.sigma``, ``parameter_range``,
``discrete_approximation``, ``dist.parameters([...])``) and 2.0's (``standard_err``,
``parameter_ranges``, ``discrete_normalization``, ``dist.parameters`` as a dict,
``parameter_names``, ``xmin_distance`` 'V'/'A', ``test_all_xmin``, ``Fit.save``/``Fit.load``,
``load_test_dataset``). Where the two disagree, ``generation`` picks: ``GENERATION`` (module
default ``'1.5'``) or ``Fit(..., generation='2.0')``. What it changes: ``estimate_discrete``'s
default (1.5: True; 2.0: only for xmin >= 10 without xmax), the xmin range's upper end (1.5:
inclusive; 2.0: exclusive, and the last candidate dropped), and ``Fit.sigma`` (2.0 warns
``DeprecationWarning`` and points to ``standard_err``). 2.0's default bound alpha <= 3 is not
copied: it returns wrong fits for steeper tails (the facade fits alpha in (1, inf) unless
``parameter_ranges`` says otherwise).

Beyond ``powerlaw``: ``estimate_discrete=False`` is the exact discrete maximum-likelihood alpha;
``standard_errors`` gives the observed-Fisher standard error of every fitted parameter;
``Fit.goodness_of_fit()`` is CSN's bootstrap p-value.
"""

from __future__ import annotations

import math
import pickle
import sys
import warnings

import numpy as np
from scipy import optimize
from scipy.special import zeta

from ..fit import MODELS, fit_power_law, fit_tail_model
from ..fit import loglikelihood_ratio as _llr
from ..fit.powerlaw import discrete_alpha
from ..fit.tail import is_sorted, run_starts

GENERATION = "1.5"
GENERATIONS = ("1.5", "2.0")
_FLOOR = 10.0 ** sys.float_info.min_10_exp  # powerlaw's stand-in for a zero likelihood
_LOG_FLOOR = math.log(_FLOOR)
XMIN_DISTANCES = {"D": "D", "V": "V", "A": "Asquare", "Asquare": "Asquare", "Kappa": "Kappa"}

__all__ = [
    "GENERATION", "Distribution", "Exponential", "Fit", "Lognormal", "Lognormal_Positive",
    "Power_Law", "Stretched_Exponential", "Truncated_Power_Law", "ccdf", "cdf", "is_discrete",
    "load_test_dataset", "loglikelihood_ratio", "nested_loglikelihood_ratio", "pdf", "plot_ccdf",
    "plot_cdf", "plot_pdf", "trim_to_range",
]


def _generation(value) -> str:
    g = GENERATION if value is None else str(value)
    if g.startswith("2"):
        return "2.0"
    if g.startswith("1"):
        return "1.5"
    raise ValueError(f"generation must be '1.5' or '2.0'; got {value!r}")


# --- module functions (powerlaw's own, same conventions) ------------------------------------
def trim_to_range(data, xmin=None, xmax=None, **kwargs):
    """The values of ``data`` in [xmin, xmax] (a falsy bound is no bound, as in ``powerlaw``)."""
    data = np.asarray(data)
    if xmin:
        data = data[data >= xmin]
    if xmax:
        data = data[data <= xmax]
    return data


def is_discrete(data) -> bool:
    """Whether every value is a whole number."""
    data = np.asarray(data, dtype=float)
    return bool((np.floor(data) == data).all())


def cumulative_distribution_function(data, xmin=None, xmax=None, survival=False, **kwargs):
    """(sorted unique values, P(X < value)) of the data in [xmin, xmax]; 1 - that if ``survival``."""
    data = np.array(data, dtype=float)
    if not data.any():
        return np.array([np.nan]), np.array([np.nan])
    data = np.sort(trim_to_range(data, xmin=xmin, xmax=xmax))
    n = float(len(data))
    u, first = np.unique(data, return_index=True)
    probs = first / n
    if survival:
        probs = 1 - probs
    return u, probs


def cdf(data, survival=False, **kwargs):
    """The empirical CDF P(X < x) at the sorted unique values: (X, probabilities)."""
    return cumulative_distribution_function(data, survival=survival, **kwargs)


def ccdf(data, survival=True, **kwargs):
    """The empirical CCDF P(X >= x) at the sorted unique values: (X, probabilities)."""
    return cumulative_distribution_function(data, survival=survival, **kwargs)


def pdf(data, xmin=None, xmax=None, linear_bins=False, bins=None, **kwargs):
    """(bin edges, density) of a histogram with about 10 log-spaced bins per decade, as
    ``powerlaw``'s (edges floored, the last ceiled; data below 1 rescaled by xmin first)."""
    data = np.asarray(data, dtype=float)
    xmax = xmax or float(np.max(data))
    xmin = xmin or float(np.min(data))
    xmin2, xmax2 = (1.0, xmax / xmin) if xmin < 1 else (xmin, xmax)
    if bins is None:
        if linear_bins:
            bins = range(int(xmin2), math.ceil(xmax2) + 1)
        else:
            lo, hi = math.log10(xmin2), math.log10(xmax2)
            edges = np.logspace(lo, hi, num=math.ceil((hi - lo) * 10))
            edges[:-1] = np.floor(edges[:-1])
            edges[-1] = math.ceil(edges[-1])
            bins = np.unique(edges)
    if xmin < 1:
        hist, edges = np.histogram(data / xmin, bins, density=True)
        return edges * xmin, hist / xmin
    hist, edges = np.histogram(data, bins, density=True)
    return edges, hist


def _axes(ax):
    if ax:
        return ax
    import matplotlib.pyplot as plt

    return plt.gca()


def plot_cdf(data, ax=None, survival=False, **kwargs):
    """Plot the empirical CDF (CCDF if ``survival``) on log-log axes; returns the axes."""
    kw = {k: kwargs.pop(k) for k in ("xmin", "xmax") if k in kwargs}
    bins, probs = cdf(data, survival=survival, **kw)
    ax = _axes(ax)
    ax.plot(bins, probs, **kwargs)
    ax.set_xscale("log")
    ax.set_yscale("log")
    return ax


def plot_ccdf(data, ax=None, survival=True, **kwargs):
    """Plot the empirical CCDF P(X >= x) on log-log axes; returns the axes."""
    return plot_cdf(data, ax=ax, survival=True, **kwargs)


def plot_pdf(data, ax=None, linear_bins=False, **kwargs):
    """Plot the log-binned empirical density at the bins' centres; returns the axes."""
    kw = {k: kwargs.pop(k) for k in ("xmin", "xmax", "bins") if k in kwargs}
    edges, hist = pdf(data, linear_bins=linear_bins, **kw)
    centres = (edges[1:] + edges[:-1]) / 2.0
    hist = np.where(hist == 0, np.nan, hist)
    ax = _axes(ax)
    ax.plot(centres, hist, **kwargs)
    ax.set_xscale("log")
    ax.set_yscale("log")
    return ax


def loglikelihood_ratio(loglikelihoods1, loglikelihoods2, nested=False, normalized_ratio=False):
    """(R, p) from per-point log-likelihoods: Vuong's test, or Wilks' when ``nested``; R is
    R / (sqrt(n) sigma) when ``normalized_ratio``. (R, p) = (0, 1) for no points."""
    ll1 = np.asarray(loglikelihoods1, dtype=float)
    ll2 = np.asarray(loglikelihoods2, dtype=float)
    if ll1.size == 0:
        return 0, 1
    R, p, norm = _llr(ll1, ll2, nested=bool(nested))
    return (norm if normalized_ratio else R), p


def nested_loglikelihood_ratio(loglikelihoods1, loglikelihoods2, **kwargs):
    """:func:`loglikelihood_ratio` with ``nested=True``."""
    kwargs.pop("nested", None)
    return loglikelihood_ratio(loglikelihoods1, loglikelihoods2, nested=True, **kwargs)


def load_test_dataset(name: str) -> np.ndarray:
    """One of Clauset, Shalizi & Newman's datasets (powerlaw 2.0's ``load_test_dataset``), read
    from the powerlaw 2.0.0 wheel (fetched into tailscope's data cache)."""
    from ..datasets import clauset

    return clauset(name, scaled=False)


def _is_range(xmin) -> bool:
    """Whether an ``xmin`` option is a search range (a non-empty sequence)."""
    return xmin is not None and isinstance(xmin, (tuple, list, np.ndarray)) and len(xmin) > 0


def _unique(data) -> np.ndarray:
    """np.unique of the data, read off directly when they are sorted (the Fit's always are)."""
    data = np.asarray(data, dtype=float)
    if data.size < 2 or not is_sorted(data):
        return np.unique(data)
    return data[run_starts(data)]


# --- the distributions ----------------------------------------------------------------------
class _Parameters(dict):
    """A distribution's parameters: a dict (powerlaw 2.0: ``dist.parameters['alpha']``) that can
    also be called to set them (powerlaw 1.5: ``dist.parameters([2.5])``)."""

    def __init__(self, dist):
        super().__init__((p, getattr(dist, p, None)) for p in dist.parameter_names)
        self._dist = dist

    def __call__(self, params):
        self._dist.set_parameters(params)


def _as_dict(names, values) -> dict:
    if isinstance(values, dict):
        unknown = set(values) - set(names)
        if unknown:
            raise ValueError(f"unknown parameter(s) {sorted(unknown)}; this distribution has "
                             f"{list(names)}")
        return dict(values)
    values = list(np.atleast_1d(values))
    if len(values) < len(names):
        raise ValueError(f"expected {len(names)} parameter(s) {list(names)}; got {values}")
    return dict(zip(names, (float(v) for v in values[:len(names)])))


def _ranges(names, r) -> dict:
    if r is None or callable(r):
        return {}
    if isinstance(r, dict):
        return {k: tuple(v) for k, v in r.items() if k in names}
    return dict(zip(names, (tuple(v) for v in r)))


_KS_ATTRS = ("D", "D_plus", "D_minus", "Kappa", "V", "Asquare")


class Distribution:
    """A distribution on [xmin, xmax] (on the lattice xmin, xmin + 1, ... when ``discrete``),
    with given ``parameters`` or fitted to ``data`` by maximum likelihood."""

    name = ""
    parameter_names: list = []
    positive: tuple = ()
    _model = ""  # its tailscope.fit model

    def __init__(self, xmin=1, xmax=None, discrete=False, fit_method="likelihood", data=None,
                 parameters=None, parameter_range=None, parameter_ranges=None,
                 initial_parameters=None, discrete_approximation="round",
                 discrete_normalization=None, parent_Fit=None, estimate_discrete=None,
                 parameter_constraints=None, verbose=0, **kwargs):
        self.xmin = float(xmin)
        self.xmax = float(xmax) if xmax else None
        self.discrete = bool(discrete)
        self.fit_method = str(fit_method).lower()
        self.discrete_approximation = discrete_normalization or discrete_approximation
        self.estimate_discrete = estimate_discrete
        self.parameter1_name = self.parameter2_name = self.parameter3_name = None
        self.parameter1 = self.parameter2 = self.parameter3 = None
        gen = _generation(kwargs.get("generation") or getattr(parent_Fit, "generation", None))
        self._gen = gen
        for i, p in enumerate(self.parameter_names, 1):  # 1.5 names Lambda 'lambda' here
            setattr(self, f"parameter{i}_name", "lambda" if p == "Lambda" and gen == "1.5" else p)
        self._range = _ranges(self.parameter_names, parameter_ranges or parameter_range)
        self._in_given_range = parameter_range if callable(parameter_range) else None
        self.parameter_constraints = parameter_constraints
        if isinstance(initial_parameters, dict):  # powerlaw 2.0: one dict for every distribution
            initial_parameters = {k: v for k, v in initial_parameters.items()
                                  if k in self.parameter_names and v is not None} or None
        self._given_initial = initial_parameters
        self._delegate = None  # the tailscope fit whose pdf/cdf this distribution uses
        self.noise_flag = False
        if parent_Fit is not None:
            self.parent_Fit = parent_Fit
        # powerlaw 2.0: the parameters by name (Power_Law(xmin=1, alpha=1.5)); 'lambda' is 1.5's
        # name of Lambda
        named = {p: kwargs[k] for p in self.parameter_names
                 for k in (p, "lambda" if p == "Lambda" else p) if k in kwargs}
        if parameters is None and named:
            if len(named) != len(self.parameter_names):
                raise ValueError(f"{type(self).__name__} needs all of {self.parameter_names}; "
                                 f"got {sorted(named)}")
            parameters = named
        if parameters is not None:
            self.set_parameters(parameters)
        if data is not None:
            self.fit(data)

    # --- parameters ---------------------------------------------------------------------
    def _store(self, params: dict):
        if self.__dict__.get("_ks_pending") is not None:  # the fit's distances before they change
            self.KS(self._ks_pending)
        for i, p in enumerate(self.parameter_names, 1):
            setattr(self, p, float(params[p]))
            setattr(self, f"parameter{i}", float(params[p]))
        self._ll = None

    def set_parameters(self, params):
        """Set the parameters (a list in ``parameter_names`` order, or a dict by name)."""
        self._store(_as_dict(self.parameter_names, params))
        self._delegate = None

    @property
    def parameters(self) -> _Parameters:
        return _Parameters(self)

    @parameters.setter
    def parameters(self, params):
        self.set_parameters(params)

    def _theta(self):
        return tuple(getattr(self, p) for p in self.parameter_names)

    def in_range(self) -> bool:
        """Whether the parameters are inside the valid (or the given) ranges."""
        if self._in_given_range is not None:
            return bool(self._in_given_range(self))
        theta = self._theta()
        if any(v is None or not np.isfinite(v) for v in theta):
            return False
        for k, (lo, hi) in self._range.items():
            v = getattr(self, k)
            if (hi is not None and not v < hi) or (lo is not None and not v > lo):
                return False
        return self._standard_range()

    def _standard_range(self) -> bool:
        return all(v > 0 for v, pos in zip(self._theta(), self.positive) if pos)

    # --- the model: log density and survival, continuous and discrete -------------------------
    def _logsf(self, x):
        """log of the unnormalised survival function (integral of the density to infinity)."""
        return MODELS[self._model].logsf(self._theta(), np.asarray(x, dtype=float))

    def _logf(self, x):
        return MODELS[self._model].logf(self._theta(), np.asarray(x, dtype=float))

    def _log_mass(self, lo_sf, hi_sf):
        """log(S(lo) - S(hi)) from log S values."""
        with np.errstate(all="ignore"):
            return lo_sf + np.log(-np.expm1(hi_sf - lo_sf))

    def _own_logpdf(self, x):
        x = np.asarray(x, dtype=float)
        with np.errstate(all="ignore"):
            if not self.discrete:
                top = self._logsf(np.array([self.xmax]))[0] if self.xmax else -np.inf
                log_z = self._log_mass(self._logsf(np.array([self.xmin]))[0], top)
                return self._logf(x) - log_z
            lo = self.xmin - 0.5
            top = self._logsf(np.array([self.xmax + 0.5]))[0] if self.xmax else -np.inf
            log_z = self._log_mass(self._logsf(np.array([lo]))[0], top)
            return self._log_mass(self._logsf(x - 0.5), self._logsf(x + 0.5)) - log_z

    def _own_cdf(self, x):
        """P(X < x | xmin <= X <= xmax): (S(xmin) - S(x)) / (S(xmin) - S(xmax)), in logs."""
        x = np.asarray(x, dtype=float)
        shift = 0.5 if self.discrete else 0.0
        with np.errstate(all="ignore"):
            s0 = self._logsf(np.array([self.xmin - shift]))[0]
            top = self._logsf(np.array([self.xmax + shift]))[0] if self.xmax else -np.inf
            sx = self._logsf(np.maximum(x - shift, self.xmin - shift))
            sx = np.maximum(sx, top)
            out = np.exp(self._log_mass(s0, sx) - self._log_mass(s0, top))
            return np.where(sx >= s0, 0.0, out)

    def loglikelihoods(self, data=None):
        """Log density (log probability if discrete) of each value in [xmin, xmax]."""
        return self._loglikelihoods(data).copy()

    def _loglikelihoods(self, data=None):
        """loglikelihoods, remembered for the fitted tail (not to be modified: shared)."""
        data = self._data(data)
        theta, bounds = self._theta(), (self.xmin, self.xmax)
        ll = self.__dict__.get("_ll")
        if (ll is not None and ll[0] is data and ll[1] is self._delegate and ll[2] == theta
                and ll[3] == bounds):
            return ll[4]
        if self._delegate is not None:
            with np.errstate(all="ignore"):
                out = np.asarray(self._delegate.loglikelihoods(data), dtype=float)
        elif not self.in_range():
            out = np.full(data.shape, _LOG_FLOOR)
        else:
            out = self._own_logpdf(data)
        if self._is_tail(data):
            self._ll = (data, self._delegate, theta, bounds, out)
        return out

    def likelihoods(self, data=None):
        return self.pdf(data)

    def pdf(self, data=None):
        """Density (probability if discrete) of each value in [xmin, xmax]; 1e-308 for zero."""
        with np.errstate(all="ignore"):
            out = np.exp(self.loglikelihoods(data))
        out[out == 0] = _FLOOR
        return out

    def cdf(self, data=None, survival=False):
        """Model P(X < x) at each value in [xmin, xmax] (1 - that if ``survival``)."""
        data = self._data(data)
        if self._delegate is None and not self.in_range():
            return np.full(data.shape, _FLOOR)  # (also for survival, as powerlaw)
        out = self._model_cdf(data)
        return 1.0 - out if survival else out

    def _model_cdf(self, data):
        """cdf at values inside [xmin, xmax] (_FLOOR everywhere out of range)."""
        if self._delegate is not None:
            return np.asarray(self._delegate.cdf(data), dtype=float)
        if not self.in_range():
            return np.full(data.shape, _FLOOR)
        return self._own_cdf(data)

    def ccdf(self, data=None, survival=True):
        return self.cdf(data=data, survival=survival)

    def _data(self, data):
        if data is None:
            parent = self.__dict__.get("parent_Fit")
            data = parent.data if parent is not None else self.__dict__.get("_fit_data")
            if data is None:
                raise ValueError("no data: pass data, or fit the distribution first")
        if self._is_tail(data):
            return data
        return trim_to_range(np.asarray(data, dtype=float), xmin=self.xmin, xmax=self.xmax)

    def _is_tail(self, data) -> bool:
        """Whether ``data`` is a sorted array inside [xmin, xmax] already: its parent Fit's
        data or the tail it was fitted to (both sorted), with its ends inside the bounds."""
        parent = self.__dict__.get("parent_Fit")
        if not ((parent is not None and data is parent.__dict__.get("data"))
                or data is self.__dict__.get("_fit_data")):
            return False
        return data.size == 0 or (data[0] >= self.xmin
                                  and (self.xmax is None or data[-1] <= self.xmax))

    # --- fitting ------------------------------------------------------------------------------
    def fit(self, data=None, suppress_output=True):
        """Fit the parameters to the data in [xmin, xmax] by maximum likelihood (or by the KS
        distance when ``fit_method='KS'``)."""
        tail = self._data(data)
        if not self._is_tail(tail):
            tail = np.sort(tail)
        self._fit_data = tail
        self.n = int(tail.size)
        if tail.size == 0:
            raise ValueError(f"no data in [{self.xmin:g}, {self.xmax or np.inf:g}] to fit")
        # initial parameters are only the start of _fit_own: the exact maximum needs none
        plain = (self.fit_method == "likelihood" and not self._range
                 and self._in_given_range is None and not self.parameter_constraints)
        fitted = self._fit_tailscope(tail) if plain else None
        if fitted is None:
            self._fit_own(tail)
        self.noise_flag = not self.in_range()
        with np.errstate(all="ignore"):
            self.loglikelihood = float(np.sum(self._loglikelihoods(tail)))
        # the distances to the data (powerlaw computes them here) on first use: a script that
        # only compares likelihoods never pays for the model's CDF
        for k in _KS_ATTRS:
            self.__dict__.pop(k, None)
        self._ks_pending = tail

    def __getattr__(self, name):
        pending = self.__dict__.get("_ks_pending")
        if name in _KS_ATTRS and pending is not None:
            self.KS(pending)
            return self.__dict__[name]
        raise AttributeError(name)

    def _fit_tailscope(self, tail):
        """tailscope's exact maximum; None where it has no fitter for these options."""
        if self.discrete and self.xmax:
            return None
        if self.discrete and self._model in ("lognormal", "lognormal_positive",
                                             "stretched_exponential") \
                and self.discrete_approximation != "round":
            return None
        parent = self.__dict__.get("parent_Fit")
        if parent is not None and parent._internal.pl is not None:
            res = parent._internal.pl.distribution(self._model)
        else:
            res = fit_tail_model(self._model, tail, self.xmin, self.xmax, discrete=self.discrete)
        if res.status != "success":
            return None
        self._store(res.parameters)
        self._delegate = res
        return res

    def _initial(self, tail):
        if isinstance(self._given_initial, dict):  # the named ones; the others from the data
            start = dict(zip(self.parameter_names, MODELS[self._model].start(tail, self.xmin)))
            return {**start, **self._given_initial}
        if self._given_initial is not None:
            return _as_dict(self.parameter_names, self._given_initial)
        return dict(zip(self.parameter_names, MODELS[self._model].start(tail, self.xmin)))

    def _fit_own(self, tail):
        """Nelder-Mead on the facade's own likelihood: for ranges, constraints, KS fitting, and
        discrete fits with xmax."""
        start = self._initial(tail)
        names = self.parameter_names
        pos = self.positive

        def to_theta(z):
            return {p: (math.exp(min(v, 700.0)) if ps else float(v))
                    for p, v, ps in zip(names, z, pos)}

        def objective(z):
            self._store(to_theta(z))
            self._delegate = None
            if not self.in_range() or not self._constraints_ok():
                return math.inf
            if self.fit_method == "ks":
                return self.KS(tail)
            with np.errstate(all="ignore"):
                v = -float(np.sum(self._own_logpdf(tail)))
            return v if math.isfinite(v) else math.inf

        z0 = np.array([math.log(max(start[p], 1e-300)) if ps else start[p]
                       for p, ps in zip(names, pos)], dtype=float)
        best = optimize.minimize(objective, z0, method="Nelder-Mead",
                                 options={"xatol": 1e-10, "fatol": 1e-12, "maxfev": 20000})
        again = optimize.minimize(objective, best.x, method="Nelder-Mead",
                                  options={"xatol": 1e-12, "fatol": 1e-13, "maxfev": 20000})
        z = again.x if again.fun <= best.fun else best.x
        self._store(to_theta(z))
        self._delegate = None

    def _constraints_ok(self) -> bool:
        cons = self.parameter_constraints
        if not cons:
            return True
        cons = cons if isinstance(cons, (list, tuple)) else [cons]
        for c in cons:
            fun = c["fun"] if isinstance(c, dict) else c
            kind = c.get("type", "ineq") if isinstance(c, dict) else "ineq"
            v = float(fun(self))
            if (kind == "ineq" and v < 0) or (kind == "eq" and abs(v) > 1e-8):
                return False
        return True

    def KS(self, data=None):
        """The KS distance D (and D_plus, D_minus, the Kuiper V, Kappa, Asquare) to the data in
        [xmin, xmax], against the empirical P(X < x) at the unique values (powerlaw's)."""
        self.__dict__.pop("_ks_pending", None)
        data = self._data(data)
        if data.size < 2:
            self.D = self.D_plus = self.D_minus = self.Kappa = self.V = self.Asquare = np.nan
            return self.D
        bins, emp = self._ecdf(data)
        theo = self._model_cdf(bins)  # the unique values of data inside [xmin, xmax]
        diff = theo - emp
        self.D_plus = float(diff.max())
        self.D_minus = float(-diff.min())
        self.Kappa = 1 + float(diff.sum() / diff.size)  # np.mean's arithmetic
        self.V = self.D_plus + self.D_minus
        self.D = max(self.D_plus, self.D_minus)
        with np.errstate(all="ignore"):
            self.Asquare = float(np.sum((diff**2 / (theo * (1 - theo) + 1e-12))[1:]))
        return self.D

    def _ecdf(self, data):
        """``cdf(data)`` (unique values, P(X < value)), shared by the distributions of a Fit."""
        if not self._is_tail(data):
            return cdf(np.sort(data))
        parent = self.__dict__.get("parent_Fit")
        internal = None if parent is None else parent.__dict__.get("_internal")
        cached = getattr(internal, "ecdf", None)
        if cached is not None and cached[0] is data:
            return cached[1], cached[2]
        first = run_starts(data)  # sorted: np.unique's first indices directly
        bins, emp = data[first], first / float(data.size)
        if internal is not None and data is parent.data:
            internal.ecdf = (data, bins, emp)
        return bins, emp

    # --- standard errors ----------------------------------------------------------------------
    @property
    def standard_errors(self) -> dict:
        """Standard error of every parameter from the observed Fisher information (the inverse
        Hessian of the negative log-likelihood at the fit, by central differences). NaN where the
        fit sits at a limit of its family (an infinite parameter) or the Hessian is singular."""
        data = self.__dict__.get("_fit_data")
        if data is None:
            parent = self.__dict__.get("parent_Fit")
            data = None if parent is None else self._data(None)
        if data is None:
            return dict.fromkeys(self.parameter_names, math.nan)
        return self._observed_se(np.asarray(data, dtype=float))

    def _observed_se(self, data) -> dict:
        theta = np.array(self._theta(), dtype=float)
        k = theta.size
        if not np.all(np.isfinite(theta)):
            return dict.fromkeys(self.parameter_names, math.nan)
        saved = (self._delegate, dict(zip(self.parameter_names, theta)))
        u, counts = np.unique(data, return_counts=True)

        def nll(t):
            self._store(dict(zip(self.parameter_names, t)))
            self._delegate = None
            with np.errstate(all="ignore"):
                return -float(counts @ self._exact_logpdf(u))

        def hessian(h):
            hess = np.empty((k, k))
            f0 = nll(theta)
            for i in range(k):
                for j in range(i, k):
                    ei, ej = np.zeros(k), np.zeros(k)
                    ei[i], ej[j] = h[i], h[j]
                    if i == j:
                        hess[i, i] = (nll(theta + ei) - 2 * f0 + nll(theta - ei)) / h[i] ** 2
                    else:
                        hess[i, j] = hess[j, i] = (nll(theta + ei + ej) - nll(theta + ei - ej)
                                                   - nll(theta - ei + ej)
                                                   + nll(theta - ei - ej)) / (4 * h[i] * h[j])
            return hess

        try:
            # two passes: a first guess of the errors sets steps of 1/500 of them, so the
            # differences are neither rounding noise nor past the quadratic region
            h = 1e-3 * np.maximum(np.abs(theta), 1e-3)
            for _ in range(2):
                hess = hessian(h)
                with np.errstate(all="ignore"):
                    cov = np.linalg.inv(hess)
                d = np.diag(cov)
                if not np.all(np.isfinite(d) & (d > 0)):
                    break
                h = 0.002 * np.sqrt(d)
                if self.positive:
                    h = np.where(np.array(self.positive[:k]), np.minimum(h, 0.5 * np.abs(theta)),
                                 h)
        except np.linalg.LinAlgError:
            return dict.fromkeys(self.parameter_names, math.nan)
        finally:
            self._store(saved[1])
            self._delegate = saved[0]
        d = np.diag(cov)
        se = np.where(np.isfinite(d) & (d > 0), np.sqrt(np.abs(d)), np.nan)
        return dict(zip(self.parameter_names, (float(v) for v in se)))

    def _exact_logpdf(self, x):
        return self._own_logpdf(x)

    # --- random numbers -----------------------------------------------------------------------
    def generate_random(self, n=1, estimate_discrete=None, rng=None):
        """``n`` random values from the distribution on [xmin, xmax] (xmax honoured, as in
        powerlaw 2.0; 1.5 ignores it). ``rng``: a numpy Generator or seed (default: numpy's
        global generator, as ``powerlaw``)."""
        n = int(n)
        r = (np.random.rand(n) if rng is None  # noqa: NPY002 (powerlaw draws from the global one)
             else np.random.default_rng(rng).random(n))
        if self.discrete:
            return self._random_discrete(r)
        return self._random_continuous(r)

    def _log_ccdf_cont(self, x):
        """log P(X >= x | xmin <= X <= xmax), continuous."""
        s0 = self._logsf(np.array([self.xmin]))[0]
        top = self._logsf(np.array([self.xmax]))[0] if self.xmax else -np.inf
        with np.errstate(all="ignore"):
            return self._log_mass(self._logsf(x), top) - self._log_mass(s0, top)

    def _random_continuous(self, r):
        """Invert the CCDF by bisection in log x: log ccdf(x) = log(1 - r)."""
        target = np.log1p(-r)
        lo = np.full(r.shape, math.log(self.xmin))
        if self.xmax:
            hi = np.full(r.shape, math.log(self.xmax))
        else:
            hi = lo + 1.0
            for _ in range(2000):
                with np.errstate(all="ignore"):
                    above = self._log_ccdf_cont(np.exp(hi)) > target
                if not above.any():
                    break
                hi = np.where(above, lo + 2.0 * (hi - lo), hi)
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            with np.errstate(all="ignore"):
                go_up = self._log_ccdf_cont(np.exp(mid)) > target
            lo, hi = np.where(go_up, mid, lo), np.where(go_up, hi, mid)
            if np.all(hi - lo <= 1e-14 * np.maximum(1.0, np.abs(hi))):
                break
        return np.exp(0.5 * (lo + hi))

    def _log_ccdf_disc(self, k):
        """log P(X >= k | on the lattice), k an array of lattice values."""
        with np.errstate(all="ignore"):
            return np.log(np.maximum(1.0 - self.cdf_lattice(k), 0.0))

    def cdf_lattice(self, k):
        """P(X < k) for lattice values k >= xmin (no trimming at xmax)."""
        k = np.asarray(k, dtype=float)
        xmax = self.xmax
        self.xmax, saved = None, self.xmax
        try:
            base = self._own_cdf(np.maximum(k, self.xmin))
        finally:
            self.xmax = saved
        if xmax is None:
            return base
        self.xmax = None
        try:
            top = float(self._own_cdf(np.array([xmax + 1.0]))[0])
        finally:
            self.xmax = saved
        return np.minimum(base / top, 1.0)

    def _random_discrete(self, r):
        """The smallest lattice value k with P(X <= k) >= r, by bisection on the integers."""
        lo = np.full(r.shape, math.floor(self.xmin) - 1.0)  # cdf(lo + 1) = 0 < r
        if self.xmax:
            hi = np.full(r.shape, float(math.floor(self.xmax)))
        else:
            hi = lo + 2.0
            for _ in range(2000):
                short = self.cdf_lattice(hi + 1.0) < r
                if not short.any() or hi.max() > 1e300:
                    break
                hi = np.where(short, lo + 2.0 * (hi - lo), hi)
        for _ in range(4000):  # invariant: cdf(lo + 1) < r <= cdf(hi + 1)
            wide = hi > 2.0 * (lo + 2.0)
            with np.errstate(all="ignore"):
                mid = np.where(wide, np.floor(np.sqrt(lo + 2.0) * np.sqrt(hi)),
                               np.floor(0.5 * (lo + hi)))
            active = (hi - lo > 1) & (mid > lo) & (mid < hi)
            if not active.any():
                break
            ok = self.cdf_lattice(mid + 1.0) >= r
            hi = np.where(active & ok, mid, hi)
            lo = np.where(active & ~ok, mid, lo)
        return hi

    # --- plots ------------------------------------------------------------------------------
    def plot_cdf(self, data=None, ax=None, survival=False, **kwargs):
        """Plot the model CDF (CCDF if ``survival``) at the unique data values; returns the axes."""
        bins = np.unique(self._data(data))
        probs = self.cdf(bins, survival=survival)
        if not ax and self.__dict__.get("_gen", "1.5") == "1.5":
            import matplotlib.pyplot as plt

            _, ax = plt.subplots()  # 1.5 draws a model's CDF on a new figure (2.0: the current)
        ax = _axes(ax)
        ax.plot(bins, probs, **kwargs)
        ax.set_xscale("log")
        ax.set_yscale("log")
        return ax

    def plot_ccdf(self, data=None, ax=None, survival=True, **kwargs):
        return self.plot_cdf(data, ax=ax, survival=survival, **kwargs)

    def plot_pdf(self, data=None, ax=None, **kwargs):
        """Plot the model density at the unique data values; returns the axes."""
        bins = np.unique(self._data(data))
        dens = self.pdf(bins)
        dens[dens == 0] = np.nan
        ax = _axes(ax)
        ax.plot(bins, dens, **kwargs)
        ax.set_xscale("log")
        ax.set_yscale("log")
        return ax

    def __eq__(self, other):
        return type(self) is type(other) and (self.xmin, self.xmax, self.discrete) == (
            other.xmin, other.xmax, other.discrete) and self._theta_or_none() == \
            other._theta_or_none()

    __hash__ = object.__hash__

    def _theta_or_none(self):
        return tuple(self.__dict__.get(p) for p in self.parameter_names)

    def __repr__(self):
        ps = ", ".join(f"{p}={getattr(self, p, None)!r}" for p in self.parameter_names)
        return f"{type(self).__name__}(xmin={self.xmin!r}, xmax={self.xmax!r}, {ps})"


class Power_Law(Distribution):  # noqa: N801 (powerlaw's names)
    """p(x) ~ x^-alpha; discrete: x^-alpha / zeta(alpha, xmin) (CSN's estimate of alpha by
    default, as powerlaw 1.5; ``estimate_discrete=False``: the exact maximum)."""

    name = "power_law"
    parameter_names = ["alpha"]
    positive = (False,)
    _model = "power_law"

    def __init__(self, estimate_discrete=True, **kwargs):
        super().__init__(estimate_discrete=estimate_discrete, **kwargs)

    def _standard_range(self) -> bool:
        return self.alpha > 1 or (self.xmax is not None and self.alpha > 0)

    @property
    def sigma(self) -> float:
        """(alpha - 1) / sqrt(n): CSN's standard error of alpha (powerlaw 1.5's name)."""
        parent = self.__dict__.get("parent_Fit")
        if parent is not None and getattr(parent, "generation", "1.5") == "2.0":
            warnings.warn("Standard error for the MLE should be accessed using the "
                          "'standard_err' property.", DeprecationWarning, stacklevel=2)
        return self.standard_err

    @property
    def standard_err(self):
        """(alpha - 1) / sqrt(n) (powerlaw 2.0's name); None before a fit."""
        n = self.__dict__.get("n")
        if n is None:
            return None
        return (self.alpha - 1) / math.sqrt(n)

    def _logsf(self, x):
        a = self.alpha
        x = np.asarray(x, dtype=float)
        if a == 1:
            return np.log(np.log(x))  # only differences are used; see _own_cdf
        return (1.0 - a) * np.log(x) - math.log(abs(a - 1.0))

    def _own_logpdf(self, x):
        x = np.asarray(x, dtype=float)
        a = self.alpha
        with np.errstate(all="ignore"):
            if self.discrete:
                mass = self._zeta_mass(self.xmin, self.xmax)  # <= 0 or NaN: no such law
                log_z = math.log(mass) if mass > 0 else math.inf
                return -a * np.log(x) - log_z
            lx0 = math.log(self.xmin)
            if a > 1:
                log_z = math.log(a - 1.0) + (a - 1.0) * lx0
                if self.xmax:
                    log_z -= math.log(-math.expm1((1.0 - a) * (math.log(self.xmax) - lx0)))
            elif a == 1:
                log_z = -math.log(math.log(self.xmax / self.xmin))
            else:  # a < 1 needs xmax: int x^-a = (xmax^(1-a) - xmin^(1-a)) / (1 - a)
                log_z = math.log(1.0 - a) - (1.0 - a) * math.log(self.xmax) \
                    - math.log(-math.expm1((1.0 - a) * (lx0 - math.log(self.xmax))))
            return -a * np.log(x) + log_z

    def _zeta_mass(self, lo, hi):
        total = float(zeta(self.alpha, lo))
        if hi:
            total -= float(zeta(self.alpha, math.floor(hi) + 1.0))
        return total

    def _own_cdf(self, x):
        x = np.maximum(np.asarray(x, dtype=float), self.xmin)
        a = self.alpha
        with np.errstate(all="ignore"):
            if self.discrete:
                x = np.ceil(x)
                part = self._zeta_mass(self.xmin, None) - zeta(a, x)
                total = self._zeta_mass(self.xmin, self.xmax)
                return np.minimum(part / total, 1.0)
            if self.xmax:
                x = np.minimum(x, self.xmax)
            if a == 1:
                return np.log(x / self.xmin) / math.log(self.xmax / self.xmin)
            t = (1.0 - a) * np.log(x / self.xmin)
            num = np.expm1(t) if a < 1 else -np.expm1(t)
            if not self.xmax:
                return num
            tt = (1.0 - a) * math.log(self.xmax / self.xmin)
            den = math.expm1(tt) if a < 1 else -math.expm1(tt)
            return num / den

    def _random_continuous(self, r):
        a, x0 = self.alpha, self.xmin
        if a == 1:
            return x0 * np.exp(r * math.log(self.xmax / x0))
        if self.xmax:
            tt = (1.0 - a) * math.log(self.xmax / x0)
            return x0 * np.exp(np.log1p(r * math.expm1(tt)) / (1.0 - a))
        return x0 * (1.0 - r) ** (-1.0 / (a - 1.0))


class Exponential(Distribution):
    """p(x) ~ e^(-Lambda x); discrete: geometric."""

    name = "exponential"
    parameter_names = ["Lambda"]
    positive = (True,)
    _model = "exponential"

    def _own_logpdf(self, x):
        if not self.discrete:
            return super()._own_logpdf(x)
        lam = self.Lambda  # P(k) = (1 - e^-L) e^(-L (k - xmin)) / (1 - e^(-L (xmax + 1 - xmin)))
        x = np.asarray(x, dtype=float)
        out = math.log(-math.expm1(-lam)) - lam * (x - self.xmin)
        if self.xmax:
            out = out - math.log(-math.expm1(-lam * (math.floor(self.xmax) + 1 - self.xmin)))
        return out

    def _logsf(self, x):
        if not self.discrete:
            return super()._logsf(x)
        # the geometric law's P(X >= k) ~ e^(-L k): exact on the lattice with the 1/2 shifts
        return -self.Lambda * (np.asarray(x, dtype=float) + 0.5)


class Stretched_Exponential(Distribution):  # noqa: N801
    """p(x) ~ x^(beta - 1) e^(-(Lambda x)^beta)."""

    name = "stretched_exponential"
    parameter_names = ["Lambda", "beta"]
    positive = (True, True)
    _model = "stretched_exponential"


class Truncated_Power_Law(Distribution):  # noqa: N801
    """p(x) ~ x^-alpha e^(-Lambda x) (power law with exponential cutoff)."""

    name = "truncated_power_law"
    parameter_names = ["alpha", "Lambda"]
    positive = (False, True)
    _model = "truncated_power_law"


class Lognormal(Distribution):
    """p(x) ~ x^-1 exp(-(ln x - mu)^2 / (2 sigma^2)) (``powerlaw`` 1.5's mu and sigma)."""

    name = "lognormal"
    parameter_names = ["mu", "sigma"]
    positive = (False, True)
    _model = "lognormal"


class Lognormal_Positive(Lognormal):  # noqa: N801
    """The lognormal with mu > 0."""

    name = "lognormal_positive"
    _model = "lognormal_positive"

    def _standard_range(self) -> bool:
        return self.sigma > 0 and self.mu > 0


SUPPORTED = {c.name: c for c in (Power_Law, Lognormal, Exponential, Truncated_Power_Law,
                                 Stretched_Exponential, Lognormal_Positive)}


# --- the fit ----------------------------------------------------------------------------------
class _Internal:
    """tailscope's own fit objects behind a Fit. Two compare equal when their results print the
    same, so a pickled and reloaded Fit's ``__dict__`` equals the original's (powerlaw 2.0's
    pickling test compares them)."""

    def __init__(self):
        self.pl = None  # the power law at the chosen xmin (its tail models are cached on it)
        self.scan = None  # the xmin scan (its D-vs-xmin curve)
        self.ecdf = None  # (tail, unique values, empirical CDF) shared by the distributions

    def __eq__(self, other):
        return isinstance(other, _Internal) and (repr(self.pl), repr(self.scan)) == (
            repr(other.pl), repr(other.scan))

    __hash__ = object.__hash__


class Fit:
    """A power-law fit with xmin chosen by the KS distance (CSN), and the other distributions
    fitted lazily on the same tail: ``fit.lognormal``, ``fit.truncated_power_law``, ...

    Takes ``powerlaw`` 1.5's and 2.0's arguments (see the module docstring). Values <= 0 are
    dropped (as ``powerlaw``); NaN or infinite values are refused. Nothing is printed; a
    ``RuntimeWarning`` says when no candidate xmin gave a valid fit (``noise_flag``).
    """

    def __init__(self, data, discrete=False, xmin=None, xmax=None, verbose=False,
                 fit_method="likelihood", estimate_discrete=None, discrete_approximation="round",
                 discrete_normalization=None, sigma_threshold=None, parameter_range=None,
                 parameter_ranges=None, parameter_constraints=None, initial_parameters=None,
                 fit_optimizer=None, xmin_distance="D", xmin_distribution="power_law",
                 test_all_xmin=None, generation=None, **kwargs):
        self.generation = _generation(generation)
        self.data_original = data
        arr = np.asarray(getattr(data, "to_numpy", lambda: data)(), dtype=float)
        if arr.ndim != 1:
            raise ValueError("Input data must be one-dimensional")
        if arr.size and not (math.isfinite(arr.min()) and math.isfinite(arr.max())):
            raise ValueError(f"data contain {int((~np.isfinite(arr)).sum())} NaN or infinite "
                             "value(s); drop them first")
        self.discrete = bool(discrete)
        self.fit_method = str(fit_method).lower()
        if self.fit_method not in ("likelihood", "ks"):
            raise ValueError(f"fit_method must be 'likelihood' or 'KS'; got {fit_method!r}")
        if estimate_discrete is None:
            estimate_discrete = self.generation == "1.5" or (
                xmin is not None and np.isscalar(xmin) and float(xmin) >= 10 and not xmax)
        self.estimate_discrete = bool(estimate_discrete)
        self.discrete_approximation = discrete_normalization or discrete_approximation
        self.discrete_normalization = self.discrete_approximation
        self.sigma_threshold = sigma_threshold
        self.parameter_range = parameter_ranges or parameter_range
        self.parameter_ranges = self.parameter_range
        self.parameter_constraints = parameter_constraints
        self.initial_parameters = initial_parameters
        self.test_all_xmin = test_all_xmin
        self.verbose = verbose
        if xmin_distance not in XMIN_DISTANCES:
            raise ValueError(f"xmin_distance must be one of {sorted(XMIN_DISTANCES)}; got "
                             f"{xmin_distance!r}")
        self.xmin_distance = XMIN_DISTANCES[xmin_distance]
        if xmin_distribution not in SUPPORTED:
            raise ValueError(f"unknown xmin_distribution {xmin_distribution!r}; choose from "
                             f"{sorted(SUPPORTED)}")
        self.supported_distributions = dict(SUPPORTED)
        self.xmin_distribution = SUPPORTED[xmin_distribution]
        self.given_xmin, self.given_xmax = xmin, xmax
        self.xmax = float(xmax) if xmax else None
        self.fixed_xmax = self.xmax is not None
        if not (arr.size and arr.min() > 0):
            arr = arr[arr > 0]
        n_above = 0
        if self.xmax is not None:
            n_above = int(np.sum(arr > self.xmax))
            arr = arr[arr <= self.xmax]
        if arr.size == 0:
            raise ValueError("no positive data (in [0, xmax]) to fit")
        self._internal = _Internal()
        self.noise_flag = False
        fixed = xmin is not None and not isinstance(xmin, (tuple, list, np.ndarray))
        self.fixed_xmin = bool(fixed and xmin)
        if not (self.fixed_xmin or _is_range(xmin)) and self._default_scan():
            self.data = arr  # the scan sorts a copy of it, which becomes the data (_scan_fast)
        elif arr.size > 1 and is_sorted(arr):
            self.data = arr.copy()  # already sorted (a copy: never the caller's array)
        else:
            self.data = np.sort(arr)
        if self.fixed_xmin:
            self.xmin = float(xmin)
            self.noise_flag = None
            self._fixed_power_law()
        else:
            self.find_xmin()
        pl = self.__dict__.get("power_law")
        if not np.isfinite(self.xmin):
            tail = self.data[:0]
        elif pl is not None and pl.xmin == self.xmin and pl.__dict__.get("_fit_data") is not None:
            tail = pl._fit_data  # the same values: the power law's distributions share them
        else:
            tail = self.data[int(np.searchsorted(self.data, self.xmin, side="left")):]
        self.data = tail
        self.n = float(len(tail))
        self.n_tail = self.n + n_above

    # --- the power law and its xmin --------------------------------------------------------
    def _default_scan(self) -> bool:
        return (self.fit_method == "likelihood" and self.xmin_distance == "D"
                and self.xmin_distribution is Power_Law and self.sigma_threshold is None
                and not self.parameter_range and not self.parameter_constraints
                and (not self.discrete or (self.estimate_discrete and self.xmax is None)))

    def _fixed_power_law(self):
        pl = self._power_law_at(self.xmin)
        self.alpha, self.sigma_, self.D = pl.alpha, pl.standard_err, pl.D
        for k in ("V", "Asquare", "Kappa", "D_plus", "D_minus"):
            setattr(self, k, getattr(pl, k))
        self.power_law = pl

    def _power_law_at(self, xmin, fitted=None) -> Power_Law:
        """The power law fitted at one xmin (through tailscope's fitter where it can; ``fitted``:
        tailscope's fit at this xmin when the caller has it, e.g. the scan's)."""
        pl = Power_Law(xmin=xmin, xmax=self.xmax, discrete=self.discrete,
                       fit_method=self.fit_method, estimate_discrete=self.estimate_discrete,
                       parameter_ranges=self.parameter_range,
                       parameter_constraints=self.parameter_constraints,
                       initial_parameters=self.initial_parameters,
                       discrete_approximation=self.discrete_approximation)
        tail = self.data[int(np.searchsorted(self.data, xmin, side="left")):]  # sorted data
        pl.n = int(tail.size)
        pl._fit_data = tail
        # a parameter range only decides validity (as powerlaw: the candidate's maximum is
        # computed, and a candidate outside the range is not a valid xmin); initial parameters
        # are only a start, and the power law's likelihood has one maximum (powerlaw also
        # computes it in closed form)
        plain = self.fit_method == "likelihood" and not self.parameter_constraints
        done = False
        if plain and tail.size >= 2 and tail[0] != tail[-1]:
            if not self.discrete or (self.estimate_discrete and self.xmax is None):
                res = fitted if fitted is not None else fit_power_law(
                    self.data, xmin=float(xmin), xmax=self.xmax, discrete=self.discrete)
                if res.ok:
                    pl._store({"alpha": res.alpha})
                    pl._delegate = res
                    self._internal.pl = res
                    done = True
            else:
                a = discrete_alpha(tail, float(xmin), self.xmax)
                if math.isfinite(a):
                    pl._store({"alpha": a})
                    done = True
        if not done:
            if tail.size == 0:
                pl._store({"alpha": math.nan})
            else:
                pl._fit_own(tail)
        pl.noise_flag = not pl.in_range()
        with np.errstate(all="ignore"):
            pl.loglikelihood = float(np.sum(pl.loglikelihoods(tail))) if tail.size else math.nan
        pl.KS(tail)
        pl.parent_Fit = self
        return pl

    def find_xmin(self, xmin_distance=None):
        """Choose xmin among the unique values (but the largest) by the smallest distance
        (``xmin_distance``: 'D', the Kuiper 'V', Anderson-Darling 'A'/'Asquare'); sets
        ``xmin``, ``alpha``, ``sigma``, the distance, and the per-candidate arrays ``xmins``,
        ``alphas``, ``sigmas``, ``Ds`` (or ``Vs``, ...), ``in_ranges``."""
        dist = XMIN_DISTANCES.get(xmin_distance or self.xmin_distance, None)
        if dist is None:
            raise ValueError(f"xmin_distance must be one of {sorted(XMIN_DISTANCES)}")
        data = self.data
        given = self.given_xmin
        ranged = _is_range(given)
        fast = dist == "D" and self._default_scan()
        if fast and not ranged:  # the scan finds the candidates itself (data maybe unsorted)
            xmins = None
            empty = data.size == 0 or data.min() == data.max()
        else:
            u = _unique(data)
            if ranged:
                lo, hi = min(given), max(given)
                if self.generation == "2.0":
                    u = u[(u >= lo) & (u < hi)]
                else:
                    u = u[(u >= lo) & (u <= hi)]
            xmins = u[:-1]
            empty = xmins.size == 0
        if empty:
            self.xmin = self.alpha = self.sigma_ = self.D = math.nan
            setattr(self, dist, math.nan)
            self.xmins = self.alphas = self.sigmas = np.array([np.nan])
            setattr(self, dist + "s", np.array([np.nan]))
            self.in_ranges = np.array([False])
            self.noise_flag = True
            warnings.warn("fewer than 2 unique values left after the xmin and xmax options: "
                          "cannot fit (NaN)", RuntimeWarning, stacklevel=2)
            return self.xmin
        if fast:
            self._scan_fast(xmins, given)
        else:
            self._scan_slow(xmins, dist)
        return self.xmin

    def _scan_fast(self, xmins, given):
        rng = None
        if xmins is not None:  # an xmin range: its candidates
            rng = (float(xmins[0]), float(xmins[-1]))
        res = fit_power_law(self.data, xmin=rng, xmax=self.xmax, discrete=self.discrete)
        self.data = res.data  # the same values, sorted
        if not res.ok:
            self._scan_slow(_unique(self.data)[:-1] if xmins is None else xmins, "D")
            return
        self._internal.scan = res
        self.xmin, self.alpha, self.D = res.xmin, res.alpha, res.D
        self.xmins = res.xmins
        self.alphas = res.alphas
        tails = self.data.size - np.searchsorted(self.data, self.xmins, side="left")
        self.sigmas = (self.alphas - 1.0) / np.sqrt(tails)
        self.in_ranges = self.alphas > 1
        self.noise_flag = False
        self.sigma_ = res.sigma
        self._lazy_Ds = True
        # the scan's own fit at its xmin: the numbers of a fit with that xmin fixed
        pl = self._power_law_at(self.xmin, fitted=res)
        for k in ("V", "Asquare", "Kappa", "D_plus", "D_minus"):
            setattr(self, k, getattr(pl, k))
        self.power_law = pl

    def _scan_slow(self, xmins, dist):
        """Every candidate fitted as ``powerlaw`` does (ranges, thresholds, other distances,
        the exact discrete alpha, KS fitting): one fit per candidate."""
        values, alphas, sigmas, ok = [], [], [], []
        keep = None
        best = (math.inf, None)
        for x0 in xmins:
            d = self._candidate(x0)
            v = getattr(d, dist)
            a = getattr(d, "alpha", math.nan)
            s = d.standard_err if isinstance(d, Power_Law) else math.nan
            valid = d.in_range()
            good = valid and (self.sigma_threshold is None or s < self.sigma_threshold)
            values.append(v)
            alphas.append(a)
            sigmas.append(s)
            ok.append(valid)
            if good and v < best[0]:
                best = (v, x0)
                keep = d
        values = np.asarray(values, dtype=float)
        ok = np.asarray(ok, dtype=bool)
        self.xmins = np.asarray(xmins, dtype=float)
        self.alphas = np.asarray(alphas, dtype=float)
        self.sigmas = np.asarray(sigmas, dtype=float)
        self.in_ranges = ok
        setattr(self, dist + "s", values)
        if keep is None:
            i = int(np.nanargmin(values)) if np.isfinite(values).any() else 0
            self.noise_flag = True
            warnings.warn("no valid fits found: no candidate xmin gave parameters in range "
                          "(noise_flag)", RuntimeWarning, stacklevel=3)
            x0 = float(self.xmins[i])
        else:
            self.noise_flag = False
            x0 = float(best[1])
        self.xmin = x0
        pl = self._power_law_at(x0)
        self.alpha, self.sigma_ = pl.alpha, pl.standard_err
        for k in ("D", "V", "Asquare", "Kappa", "D_plus", "D_minus"):
            setattr(self, k, getattr(pl, k))
        self.power_law = pl

    def _candidate(self, x0):
        if self.xmin_distribution is Power_Law:
            return self._power_law_at(x0)
        tail = self.data[self.data >= x0]
        return self.xmin_distribution(xmin=x0, xmax=self.xmax, discrete=self.discrete,
                                      data=tail, discrete_approximation=self.discrete_approximation)

    def __getattr__(self, name):
        if name == "Ds" and self.__dict__.get("_lazy_Ds"):
            self.Ds = np.asarray(self._internal.scan.Ds, dtype=float)
            return self.Ds
        supported = self.__dict__.get("supported_distributions", {})
        if name in supported:
            if name == "power_law":
                dist = self._power_law_at(self.xmin)
            elif not math.isfinite(self.xmin):
                raise ValueError(f"cannot fit {name}: this Fit found no xmin (noise_flag; the "
                                 "data have fewer than 2 distinct values in range)")
            else:
                dist = supported[name](xmin=self.xmin, xmax=self.xmax, discrete=self.discrete,
                                       fit_method=self.fit_method,
                                       discrete_approximation=self.discrete_approximation,
                                       initial_parameters=self.initial_parameters,
                                       parent_Fit=self, data=self.data)
            setattr(self, name, dist)
            return dist
        raise AttributeError(name)

    @property
    def sigma(self):
        """CSN's standard error of alpha (powerlaw 1.5's ``Fit.sigma``; 2.0 warns and names it
        ``standard_err``)."""
        if self.generation == "2.0":
            warnings.warn("Standard error for the MLE should be accessed using the "
                          "'standard_err' property.", DeprecationWarning, stacklevel=2)
        return self.sigma_

    @property
    def standard_err(self):
        return self.sigma_

    # --- comparisons ---------------------------------------------------------------------------
    def distribution_compare(self, dist1, dist2, nested=None, normalized_ratio=False, **kwargs):
        """(R, p): the log-likelihood ratio of two fitted distributions on the tail (R > 0 favours
        ``dist1``) and its significance. ``nested=None`` assumes nesting when one name contains
        the other; an explicit ``nested=False`` is honoured (powerlaw's precedence bug ignores it:
        see docs/switching/powerlaw.md)."""
        if nested is None and ((dist1 in dist2) or (dist2 in dist1)):
            nested = True
        ll1 = getattr(self, dist1)._loglikelihoods(self.data)  # read only: no copies
        ll2 = getattr(self, dist2)._loglikelihoods(self.data)
        return loglikelihood_ratio(ll1, ll2, nested=bool(nested),
                                   normalized_ratio=normalized_ratio)

    def loglikelihood_ratio(self, dist1, dist2, nested=None, **kwargs):
        """Another name for :meth:`distribution_compare`."""
        return self.distribution_compare(dist1, dist2, nested=nested, **kwargs)

    def nested_distribution_compare(self, dist1, dist2, nested=True, **kwargs):
        return self.distribution_compare(dist1, dist2, nested=nested, **kwargs)

    def goodness_of_fit(self, n_boot: int = 1000, *, seed=None, n_jobs=None):
        """CSN's bootstrap p-value of the power law (``powerlaw`` has none): a
        :class:`tailscope.fit.GoodnessOfFit` (``.p_value``; p <= 0.1 rules the power law out).
        Continuous fits by likelihood only."""
        if self.discrete:
            raise ValueError("goodness_of_fit draws continuous replicates: not for discrete=True")
        full = np.sort(np.asarray(self.data_original, dtype=float))
        full = full[full > 0]
        xmin = self.xmin if self.fixed_xmin else self.given_xmin
        if isinstance(xmin, list):
            xmin = tuple(xmin)
        res = fit_power_law(full, xmin=xmin, xmax=self.xmax)
        return res.goodness_of_fit(n_boot=n_boot, seed=seed, n_jobs=n_jobs)

    # --- empirical functions and plots -----------------------------------------------------------
    def _which(self, original_data):
        if original_data:
            return np.asarray(self.data_original, dtype=float), None, None
        return self.data, self.xmin, self.xmax

    def cdf(self, original_data=False, survival=False, **kwargs):
        data, lo, hi = self._which(original_data)
        return cdf(data, xmin=lo, xmax=hi, survival=survival, **kwargs)

    def ccdf(self, original_data=False, survival=True, **kwargs):
        data, lo, hi = self._which(original_data)
        return cdf(data, xmin=lo, xmax=hi, survival=survival, **kwargs)

    def pdf(self, original_data=False, **kwargs):
        data, lo, hi = self._which(original_data)
        return pdf(data, xmin=lo, xmax=hi, **kwargs)

    def plot_cdf(self, ax=None, original_data=False, survival=False, **kwargs):
        return plot_cdf(self._which(original_data)[0], ax=ax, survival=survival, **kwargs)

    def plot_ccdf(self, ax=None, original_data=False, survival=True, **kwargs):
        return plot_cdf(self._which(original_data)[0], ax=ax, survival=survival, **kwargs)

    def plot_pdf(self, ax=None, original_data=False, linear_bins=False, **kwargs):
        return plot_pdf(self._which(original_data)[0], ax=ax, linear_bins=linear_bins, **kwargs)

    # --- saving (powerlaw 2.0) -------------------------------------------------------------------
    def save(self, path):
        """Write the fit (with the distributions fitted so far) to ``path`` as a pickle."""
        with open(path, "wb") as f:
            pickle.dump(self, f)

    @staticmethod
    def load(path) -> Fit:
        """Read a fit written by :meth:`save` (a pickle: load only files you trust)."""
        with open(path, "rb") as f:
            obj = pickle.load(f)
        if not isinstance(obj, Fit):
            raise ValueError(f"{path} does not hold a Fit")
        return obj

    def __getstate__(self):
        return dict(self.__dict__)

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self):
        return (f"Fit(alpha={self.alpha!r}, xmin={self.xmin!r}, xmax={self.xmax!r}, "
                f"D={self.__dict__.get('D')!r}, n_tail={self.n_tail!r}, discrete={self.discrete})")
