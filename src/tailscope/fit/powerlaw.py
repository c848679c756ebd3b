"""The power-law fit (Clauset, Shalizi & Newman 2009) with the conventions of ``powerlaw`` 1.5.

``fit_power_law`` returns a :class:`PowerLawFit`. Without ``xmax`` its alpha, xmin, D and tail size
equal those of ``powerlaw.Fit(data)`` (version 1.5), and with ``discrete=True`` those of
``powerlaw.Fit(data, discrete=True)``; the xmin scan is exact but pruned (see ``_scan``).

The discrete power law p(x) = x^-alpha / zeta(alpha, xmin) on x = xmin, xmin + 1, ... (zeta: the
Hurwitz zeta function) follows ``powerlaw`` 1.5's defaults: alpha by CSN's estimate (eq. 3.7)
1 + n / sum(ln(x / (xmin - 1/2))), and the KS distance, likelihood and CDF of the exact zeta model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
from scipy import optimize
from scipy.special import zeta

from ._scan import Spectrum, exact_D, scan, truncated_beta
from .bootstrap import goodness_of_fit
from .compare import compare
from .distributions import fit_tail_model
from .fingers import ww_xmin_peak_range, xmin_peak_range
from .tail import as_positive_1d, is_sorted, ks_distance, resolve_xmax, resolve_xmin

SUCCESS, FAILED = "success", "failed"
# the small-sample estimator (``small_n=True``): WeightWatcher 0.7.7's constants
SMALL_N = 20  # fewer values than this are fitted by it
SMALL_N_MIN_TAIL = 8  # the smallest tail it considers
SMALL_N_PENALTY = 0.868  # J = D - SMALL_N_PENALTY / sqrt(n_tail)


@dataclass(frozen=True, repr=False, eq=False)
class PowerLawFit:
    """A fitted continuous power law p(x) ~ x^-alpha on [xmin, xmax].

    Attributes
    ----------
    alpha, xmin, D, sigma : float
        Exponent, start of the tail, Kolmogorov-Smirnov distance (left-limit convention) and the
        standard error of alpha. NaN when ``status == 'failed'``.
    xmax : float or None
        Upper truncation (None: untruncated).
    n_tail, n : int
        Values in the tail [xmin, xmax], and values fitted over (all data <= xmax).
    status, reason : str
        ``'success'`` or ``'failed'``; ``reason`` says why a fit failed ('' otherwise).
    xmins, alphas : ndarray
        Every candidate xmin and its alpha (the alpha-vs-xmin curve).
    Ds : ndarray
        The exact KS distance of every candidate (the D-vs-xmin curve), computed on first access.
    fix_fingers, num_fingers, raw_alpha :
        Finger fixing applied (None, 'clip_xmax', 'xmin_peak'), eigenvalues clipped, and the alpha
        before clipping.
    discrete : bool
        A discrete power law x^-alpha / zeta(alpha, xmin) on the lattice xmin, xmin + 1, ...
    small_n : bool
        Fitted by the small-sample estimator (see ``fit_power_law(small_n=True)``).
    """

    alpha: float
    xmin: float
    xmax: float | None
    D: float
    sigma: float
    n_tail: int
    n: int
    status: str
    reason: str
    xmins: np.ndarray
    alphas: np.ndarray
    data: np.ndarray = field(repr=False)
    fix_fingers: str | None = None
    num_fingers: int = 0
    raw_alpha: float = math.nan
    discrete: bool = False
    small_n: bool = False
    _state: Any = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the fit succeeded (``status == 'success'``)."""
        return self.status == SUCCESS

    @cached_property
    def Ds(self) -> np.ndarray:  # noqa: N802 (the name users know from powerlaw)
        if self._state is None:  # fixed xmin: one candidate, D already known
            return np.full(self.xmins.shape, self.D)
        sp, beta, inv, cands, known = self._state
        valid = np.isfinite(beta[cands]) & (beta[cands] > 0)
        out = known[cands].copy()
        todo = valid & np.isnan(out)
        out[todo] = exact_D(sp, cands[todo], beta, inv)
        return out

    @property
    def xmin_search(self) -> float | tuple[float, float] | None:
        """The ``xmin`` option that repeats this fit's xmin search on other data (the bootstrap's).

        None for a scan of every candidate, the (lo, hi) span of the candidates when the scan was
        restricted to a range, or the xmin itself when it was fixed. None for a failed fit.
        """
        if not self.ok:
            return None
        if self._state is None:  # fixed xmin: one candidate, no scan
            return self.xmin
        sp = self._state[0]
        lo, hi = float(self.xmins.min()), float(self.xmins.max())
        full = lo == sp.u[0] and hi == sp.u[sp.K - 2]
        return None if full else (lo, hi)

    @staticmethod
    def refit(data, *, xmin=None, xmax=None) -> PowerLawFit:  # the bootstrap is continuous only
        """``fit_power_law(data, xmin=xmin, xmax=xmax)``: how the bootstrap refits a replicate.

        A staticmethod, so worker processes receive it by its qualified name.
        """
        return fit_power_law(data, xmin=xmin, xmax=xmax)

    @property
    def tail(self) -> np.ndarray:
        """The fitted values: xmin <= x (<= xmax)."""
        if not self.ok:
            return self.data[:0]
        # the data are sorted (fit_power_law sorts them): the tail is their end
        return self.data[int(np.searchsorted(self.data, self.xmin, side="left")):].copy()

    # --- the fitted model -------------------------------------------------------------------
    def _beta_norm(self) -> tuple[float, float]:
        beta = self.alpha - 1.0
        if self.xmax is None:
            return beta, 1.0
        return beta, -math.expm1(-beta * math.log(self.xmax / self.xmin))

    def _log_zeta_xmin(self) -> float:
        return math.log(float(zeta(self.alpha, self.xmin)))

    def cdf(self, x) -> np.ndarray:
        """Model CDF P(X < x | X >= xmin) of the tail (NaN for a failed fit: there is no model)."""
        if not self.ok:
            return np.full(np.shape(x), math.nan)
        if self.discrete:  # 1 - zeta(alpha, x) / zeta(alpha, xmin), as powerlaw's discrete CDF
            x = np.maximum(np.asarray(x, dtype=np.float64), self.xmin)
            return -np.expm1(np.log(zeta(self.alpha, x)) - self._log_zeta_xmin())
        beta, norm = self._beta_norm()
        x = np.clip(np.asarray(x, dtype=np.float64), self.xmin, self.xmax or np.inf)
        return -np.expm1(-beta * np.log(x / self.xmin)) / norm

    def ccdf(self, x) -> np.ndarray:
        """Model complementary CDF, 1 - cdf(x), of the tail."""
        return 1.0 - self.cdf(x)

    def pdf(self, x) -> np.ndarray:
        """Model density of the tail (zero outside [xmin, xmax]); the probability of each value
        x^-alpha / zeta(alpha, xmin) for a discrete fit. NaN for a failed fit."""
        x = np.asarray(x, dtype=np.float64)
        if not self.ok:
            return np.full(x.shape, math.nan)
        if self.discrete:
            with np.errstate(divide="ignore"):
                return np.where(x >= self.xmin, np.exp(self.loglikelihoods(x)), 0.0)
        beta, norm = self._beta_norm()
        inside = (x >= self.xmin) & (x <= (self.xmax or np.inf))
        dens = beta / self.xmin * (x / self.xmin) ** (-self.alpha) / norm
        return np.where(inside, dens, 0.0)

    def loglikelihoods(self, x=None) -> np.ndarray:
        """Per-point log density of the fitted power law over the tail (or over ``x``)."""
        x = self.tail if x is None else np.asarray(x, dtype=np.float64)
        if self.discrete:
            return -self.alpha * np.log(x) - self._log_zeta_xmin()
        beta, norm = self._beta_norm()
        return np.log(beta / self.xmin) - self.alpha * np.log(x / self.xmin) - np.log(norm)

    # --- other tail models, tests ----------------------------------------------------------
    def distribution(self, name: str):
        """Fit another tail model (``'truncated_power_law'``, ``'exponential'``, ``'lognormal'``,
        ``'lognormal_positive'``, ``'stretched_exponential'``, or ``'power_law'``) to this tail."""
        if not self.ok:
            raise ValueError(f"no tail to fit: the power-law fit failed ({self.reason})")
        if name not in self._cache:
            self._cache[name] = fit_tail_model(name, self.tail, self.xmin, self.xmax, power_law=self,
                                               discrete=self.discrete,
                                               lognormal=self._cache.get("lognormal"))
        return self._cache[name]

    def compare(self, dist1: str, dist2: str | None = None, *, nested: bool | None = None,
                normalized_ratio: bool = False):
        """Log-likelihood ratio test on the tail; see :func:`tailscope.fit.compare.compare`."""
        return compare(self, dist1, dist2, nested=nested, normalized_ratio=normalized_ratio)

    def goodness_of_fit(self, n_boot: int = 1000, *, seed=None, n_jobs: int | None = None,
                        ci: float = 0.95):
        """CSN semi-parametric bootstrap p-value; see :func:`tailscope.fit.bootstrap.goodness_of_fit`."""
        if self.discrete:
            raise ValueError("goodness_of_fit draws continuous replicates: not for a discrete fit")
        return goodness_of_fit(self, n_boot=n_boot, seed=seed, n_jobs=n_jobs, ci=ci)

    def to_dict(self) -> dict:
        """The fit's numbers, status and reason as a plain dict (JSON-ready)."""
        return {
            "alpha": self.alpha, "xmin": self.xmin, "xmax": self.xmax, "D": self.D,
            "sigma": self.sigma, "n_tail": self.n_tail, "n": self.n, "status": self.status,
            "reason": self.reason, "fix_fingers": self.fix_fingers,
            "num_fingers": self.num_fingers, "raw_alpha": self.raw_alpha,
            "discrete": self.discrete, "small_n": self.small_n,
        }

    def __repr__(self) -> str:
        if not self.ok:
            return f"PowerLawFit(status='failed', reason={self.reason!r}, n={self.n})"
        xmax = "" if self.xmax is None else f", xmax={self.xmax:.6g}"
        fingers = ""
        if self.fix_fingers:
            fingers = f", fix_fingers={self.fix_fingers!r}, num_fingers={self.num_fingers}"
        disc = ", discrete=True" if self.discrete else ""
        disc += ", small_n=True" if self.small_n else ""
        return (f"PowerLawFit(alpha={self.alpha:.6g}, xmin={self.xmin:.6g}{xmax}, D={self.D:.6g}, "
                f"sigma={self.sigma:.3g}, n_tail={self.n_tail}, n={self.n}{fingers}{disc})")

    def _repr_html_(self) -> str:
        """In a notebook: the fit's numbers as a small table (a failed fit: its reason)."""
        import html

        if not self.ok:
            return (f"<p><b>PowerLawFit</b>: failed &mdash; {html.escape(self.reason)} "
                    f"(n={self.n})</p>")
        rows = [("alpha", f"{self.alpha:.6g}"), ("sigma (std. error of alpha)", f"{self.sigma:.3g}"),
                ("xmin", f"{self.xmin:.6g}"), ("xmax", "none" if self.xmax is None else
                                               f"{self.xmax:.6g}"),
                ("D (KS distance)", f"{self.D:.6g}"), ("n_tail / n", f"{self.n_tail} / {self.n}"),
                ("candidate xmins", str(self.xmins.size))]
        if self.fix_fingers:
            rows.append(("fix_fingers", f"{self.fix_fingers} ({self.num_fingers} clipped, "
                                        f"alpha before {self.raw_alpha:.4g})"))
        if self.discrete:
            rows.append(("discrete", "yes"))
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:right'>"
                       f"{html.escape(v)}</td></tr>" for k, v in rows)
        return f"<table><caption><b>PowerLawFit</b></caption>{body}</table>"


def _failed(reason: str, x: np.ndarray, xmax: float | None, discrete: bool = False,
            **extra) -> PowerLawFit:
    empty = np.empty(0)
    return PowerLawFit(alpha=math.nan, xmin=math.nan, xmax=xmax, D=math.nan, sigma=math.nan,
                       n_tail=0, n=int(x.size), status=FAILED, reason=reason, xmins=empty,
                       alphas=empty, data=x, discrete=discrete, **extra)


def _tail_fit(x: np.ndarray, xmin: float, xmax: float | None,
              discrete: bool = False) -> tuple[float, float, float, int]:
    """alpha, D, sigma and tail size at a fixed xmin (x sorted, already cut at xmax)."""
    tail = x[int(np.searchsorted(x, xmin, side="left")):]
    m = tail.size
    if discrete:  # powerlaw 1.5's estimate_discrete expression, for equal rounding
        alpha = 1.0 + m / float(np.sum(np.log(tail / (xmin - 0.5))))
        z0 = float(zeta(alpha, xmin))
        with np.errstate(invalid="ignore", divide="ignore"):  # z0 = 0: D is NaN, a failed fit
            D = ks_distance(tail, lambda u: 1.0 - zeta(alpha, u) / z0)
        return alpha, D, (alpha - 1.0) / math.sqrt(m), m
    with np.errstate(over="ignore"):
        wide = not (np.isfinite(tail[-1] / xmin) and (xmax is None or math.isfinite(xmax / xmin)))
    if wide:  # x / xmin overflows (data over hundreds of decades): logarithms of each side
        logs = np.log(tail) - math.log(xmin)
    else:
        logs = np.log(tail / xmin)
    if xmax is None:
        alpha = 1.0 + m / float(np.sum(logs))  # powerlaw 1.5's expression, for equal rounding
        if wide:
            D = ks_distance(tail, lambda u: -np.expm1((1.0 - alpha) * (np.log(u) - math.log(xmin))))
        else:
            D = ks_distance(tail, lambda u: 1.0 - (u / xmin) ** (1.0 - alpha))
        return alpha, D, (alpha - 1.0) / math.sqrt(m), m
    t = math.log(xmax) - math.log(xmin) if wide else math.log(xmax / xmin)
    beta = float(truncated_beta(np.array([np.mean(logs)]), np.array([t]))[0])
    alpha = 1.0 + beta
    if not beta > 0:
        return alpha, math.nan, math.nan, m
    norm = -math.expm1(-beta * t)
    D = ks_distance(tail, lambda u: -np.expm1(-beta * (np.log(u) - math.log(xmin))) / norm)
    info = 1.0 / beta**2 - t**2 / (4.0 * math.sinh(beta * t / 2.0) ** 2)
    sigma = 1.0 / math.sqrt(m * info) if info > 0 else math.nan
    return alpha, D, sigma, m


def fit_power_law(data, *, xmin=None, xmax=None, fix_fingers: str | None = None,
                  xmin_max: float | None = None, max_fingers: int = 10,
                  finger_thresh: float = 1.0, min_alpha: float = 2.0,
                  discrete: bool = False, small_n: bool = False,
                  ww_fingers: bool = False) -> PowerLawFit:
    """Fit a power law p(x) ~ x^-alpha to the tail x >= xmin of positive data.

    Parameters
    ----------
    data : array-like of float, 1-D
        Positive, finite observations (e.g. the eigenvalues of W^T W). Any float dtype or a list.
    xmin : None, float or (lo, hi)
        None (default): choose xmin among all unique values but the largest by minimising the KS
        distance D (first argmin), exactly as ``powerlaw.Fit``. A number fixes it. A range
        restricts the candidates to unique values in [lo, hi] (still excluding the largest value;
        ``powerlaw`` 1.5 instead drops the largest candidate inside the range).
    xmax : None, float or 'max'
        Upper truncation: values above it are dropped and the model is normalised on [xmin, xmax],
        with alpha the exact maximum-likelihood estimate of that truncated model (``powerlaw`` 1.5
        keeps the untruncated normalisation in its likelihood, which biases alpha). 'max' uses
        the largest value (WeightWatcher's ``xmax='force'``).
    fix_fingers : None, 'clip_xmax' or 'xmin_peak'
        WeightWatcher's finger fixes. 'clip_xmax': refit with the top 1, 2, ... values removed
        (up to ``max_fingers - 1``) and accept the first fit whose alpha is below the raw alpha by
        more than ``finger_thresh``; stop once alpha <= ``min_alpha``. ``num_fingers`` is the number
        of values actually removed (WeightWatcher removes k+1 values and reports k).
        'xmin_peak': search xmin in [0.95 p, xmin_max] with p the left edge of the peak bin of a
        100-bin histogram of log10(data) and xmin_max defaulting to 1.5 p. (WeightWatcher passes
        log10(0.95 p) as the lower bound, mixing log and linear units; here both are linear.)
    discrete : bool
        Fit the discrete power law x^-alpha / zeta(alpha, xmin) (counts, word frequencies), as
        ``powerlaw.Fit(data, discrete=True)`` with its defaults: alpha by CSN's estimate
        1 + n / sum(ln(x / (xmin - 1/2))), D, likelihood, pdf and CDF of the zeta model. The values
        must be >= 1 (they are taken as points of the lattice xmin, xmin + 1, ...; like ``powerlaw``,
        non-integers are not rejected). Not combined with ``xmax`` or ``fix_fingers``.
    small_n : bool
        The small-sample estimator for fewer than ``SMALL_N`` (20) values, when xmin is searched
        without a range and without ``xmax`` (also in each refit of 'clip_xmax'): each candidate
        xmin with a tail of at least 8 values gets the bias-corrected alpha
        1 + (n - 1) / sum(ln(x / xmin)) and its D, and xmin minimises
        J = D - 0.868 / sqrt(n) (first argmin); sigma = (alpha - 1) / sqrt(n). With fewer than 8
        values the whole sample is the tail. This is WeightWatcher 0.7.7's small-N fit as it is
        written to work: 0.7.7 itself then re-chooses xmin by D alone (see the README).
    ww_fingers : bool
        The finger fixes exactly as WeightWatcher 0.7.7 runs them (its facade's): 'clip_xmax'
        refits with the top 2, 3, ..., max_fingers - 1 values removed and reports one fewer
        (``max_fingers`` is taken as given: WeightWatcher's replacement of it by 10 is the
        caller's, see ``tailscope.engine``); 'xmin_peak' searches WeightWatcher's range
        (see :func:`tailscope.fit.fingers.ww_xmin_peak_range`).

    Returns
    -------
    PowerLawFit
        ``status='failed'`` with a ``reason`` (and NaN numbers) when the data are valid but no fit
        exists: fewer than two distinct values, no candidate in the xmin range, or no alpha > 1.

    Raises
    ------
    ValueError
        If the data are not a non-empty 1-D array of finite positive numbers, or an option is bad.

    Examples
    --------
    >>> import numpy as np
    >>> from tailscope import fit_power_law
    >>> x = (1 - np.random.default_rng(0).random(4000)) ** (-1 / 1.5)  # Pareto, alpha = 2.5
    >>> fit_power_law(x)
    PowerLawFit(alpha=2.51618, xmin=1.00015, D=0.00728457, sigma=0.024, n_tail=3999, n=4000)
    >>> fit_power_law(x, xmin=1.5).n_tail
    2138
    """
    x = as_positive_1d(data)  # a copy of the data, ours to sort
    if not is_sorted(x):
        x.sort()
    if discrete:
        if xmax is not None or fix_fingers:
            raise ValueError("discrete=True takes no xmax and no fix_fingers (a discrete fit is "
                             "untruncated)")
        if x[0] < 1:
            raise ValueError(f"discrete=True needs values >= 1 (a lattice xmin, xmin + 1, ...); "
                             f"smallest is {x[0]:g}")
        frac = x[x != np.floor(x)]
        if frac.size:
            raise ValueError(f"discrete=True takes whole numbers (counts); got {frac[0]:g} "
                             f"({frac.size} of {x.size} values are not whole)")
        fixed, _ = resolve_xmin(xmin)
        if fixed is not None and fixed != math.floor(fixed):
            raise ValueError(f"discrete=True takes a whole-number xmin; got xmin={fixed:g}")
        return _finite(_fit_sorted(x, xmin, None, discrete=True))
    if fix_fingers not in (None, False, "clip_xmax", "xmin_peak"):
        raise ValueError(f"fix_fingers must be None, 'clip_xmax' or 'xmin_peak'; got {fix_fingers!r}")
    if fix_fingers == "clip_xmax":
        return _finite(_clip_xmax(x, xmin=xmin, xmax=xmax, max_fingers=max_fingers,
                                  finger_thresh=finger_thresh, min_alpha=min_alpha,
                                  small_n=small_n, ww=ww_fingers))
    if fix_fingers == "xmin_peak":
        if xmin is not None:
            raise ValueError("fix_fingers='xmin_peak' chooses the xmin range itself; drop xmin")
        peak_range = ww_xmin_peak_range if ww_fingers else xmin_peak_range
        fit = _fit_sorted(x, peak_range(x, xmin_max), xmax)
        return _finite(_with_fingers(fit, "xmin_peak", 0, math.nan))
    return _finite(_fit_sorted(x, xmin, xmax, small_n=small_n))


def _finite(fit: PowerLawFit) -> PowerLawFit:
    """A fit whose alpha, D or (discrete) log-likelihood is not a finite number is a failure
    saying so, never a success with a NaN in it."""
    if not fit.ok:
        return fit
    what = None
    if not math.isfinite(fit.alpha):
        what = f"alpha is {fit.alpha:g}"
    elif not math.isfinite(fit.D):
        what = f"the KS distance D is {fit.D:g} at alpha {fit.alpha:.6g}"
    elif fit.discrete:
        z0 = float(zeta(fit.alpha, fit.xmin))
        if not (math.isfinite(z0) and z0 > 0):
            what = (f"the normalisation zeta(alpha, xmin) = {z0:g} at alpha {fit.alpha:.6g}, "
                    f"xmin {fit.xmin:g}: the log-likelihood is not finite")
    if what is None:
        return fit
    hint = " (counts far from 1 for their spread)" if fit.discrete else ""
    return _failed(f"no usable power-law fit: {what}{hint}", fit.data, fit.xmax, fit.discrete)


def _with_fingers(fit: PowerLawFit, how: str, num: int, raw_alpha: float) -> PowerLawFit:
    return replace(fit, fix_fingers=how, num_fingers=num, raw_alpha=raw_alpha, _cache={})


def _clip_xmax(x: np.ndarray, *, xmin=None, xmax=None, max_fingers: int = 10,
               finger_thresh: float = 1.0, min_alpha: float = 2.0,
               small_n: bool = False, ww: bool = False) -> PowerLawFit:
    """Refit with the k largest values removed, k = 1 .. max_fingers - 1; keep the first fit whose
    alpha is below the raw alpha by more than ``finger_thresh``; stop once alpha <= ``min_alpha``.

    Differences from WeightWatcher's ``fit_clipped_powerlaw``: it starts by removing two values and
    reports one finger (an off-by-one); and it replaces ``max_fingers`` by 10 whenever it is below
    half the number of eigenvalues (an inverted test), so the user's value is ignored. Here k values
    removed means ``num_fingers = k``, and ``max_fingers`` is honoured (capped at half the data).
    ``ww=True`` repeats WeightWatcher's loop: k = 2 .. max_fingers - 1, ``num_fingers = k - 1``.
    """
    if int(max_fingers) < 1:
        raise ValueError(f"max_fingers must be >= 1; got {max_fingers!r}")
    raw = _fit_sorted(x, xmin, xmax, small_n=small_n)
    if not raw.ok:
        return _with_fingers(raw, "clip_xmax", 0, raw.alpha)
    ks = range(2, int(max_fingers)) if ww else range(1, min(int(max_fingers), x.size // 2))
    numeric_xmax = xmax is not None
    for k in ks:
        kept = x[:-k]
        if kept.size < 2:
            break
        fit = _fit_sorted(kept, xmin, float(kept[-1]) if numeric_xmax else None,
                          small_n=small_n)
        if not fit.ok:
            break
        if fit.alpha + finger_thresh < raw.alpha:
            return _with_fingers(fit, "clip_xmax", k - 1 if ww else k, raw.alpha)
        if min_alpha is not None and fit.alpha <= min_alpha:
            break
    return _with_fingers(raw, "clip_xmax", 0, raw.alpha)


def _fit_sorted(x: np.ndarray, xmin, xmax, discrete: bool = False,
                small_n: bool = False) -> PowerLawFit:
    """fit_power_law on validated, sorted data."""
    xmax_v = resolve_xmax(xmax, x)
    fixed, rng = resolve_xmin(xmin)
    if xmax_v is not None:
        x = x[x <= xmax_v]
        if x.size == 0:
            return _failed(f"no value is <= xmax={xmax_v:g}", x, xmax_v)
    if x.size < 2:
        return _failed("fewer than two values: nothing to fit", x, xmax_v, discrete)
    if x[0] == x[-1]:
        return _failed("all values are equal: a power law needs a spread of values", x, xmax_v,
                       discrete)

    if fixed is not None:
        if discrete and fixed <= 0.5:
            raise ValueError(f"a discrete xmin must be > 1/2; got {fixed:g}")
        return _fit_fixed_xmin(x, fixed, xmax_v, discrete)

    if small_n and not discrete and rng is None and xmax_v is None and x.size < SMALL_N:
        return _fit_small_n(x)
    sp = Spectrum(x, discrete=discrete)
    cands = np.arange(sp.K - 1)
    if rng is not None:
        lo, hi = rng
        cands = cands[(sp.u[cands] >= lo) & (sp.u[cands] <= hi)]
        if cands.size == 0:
            return _failed(f"no candidate xmin in the range [{lo:g}, {hi:g}] "
                           "(the largest value is never a candidate)", x, xmax_v, discrete)
    if discrete:  # CSN's estimate: mean ln(x / (xmin - 1/2)) = mean ln(x / xmin) + ln(xmin / (xmin - 1/2))
        beta = 1.0 / (sp.mean_log_excess - np.log1p(-0.5 / sp.u))
        inv = np.ones(sp.K)
    elif xmax_v is None:
        with np.errstate(divide="ignore"):
            beta = 1.0 / sp.mean_log_excess
        inv = np.ones(sp.K)
    else:
        t = np.log(xmax_v) - sp.L
        beta = np.full(sp.K, np.nan)
        beta[cands] = truncated_beta(sp.mean_log_excess[cands], t[cands])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            inv = 1.0 / -np.expm1(-beta * t)
    valid = cands[np.isfinite(beta[cands]) & (beta[cands] > 0)]
    xmins, alphas = sp.u[cands], 1.0 + beta[cands]
    if valid.size == 0:
        return _failed("no candidate xmin gives alpha > 1", x, xmax_v, discrete)
    k, known = scan(sp, valid, beta, inv)
    xmin_v = float(sp.u[k])
    alpha, D, sigma, m = _tail_fit(x, xmin_v, xmax_v, discrete)
    return PowerLawFit(alpha=alpha, xmin=xmin_v, xmax=xmax_v, D=D, sigma=sigma, n_tail=m,
                       n=int(x.size), status=SUCCESS, reason="", xmins=xmins, alphas=alphas,
                       data=x, discrete=discrete, _state=(sp, beta, inv, cands, known))


def _fit_small_n(x: np.ndarray) -> PowerLawFit:
    """The small-sample estimator on sorted data with at least two distinct values (see
    ``fit_power_law(small_n=True)``): xmin by J = D - 0.868 / sqrt(n), alpha bias-corrected."""
    u = np.unique(x)[:-1]  # every unique value but the largest
    alphas = np.full(u.size, np.nan)
    Ds = np.full(u.size, np.nan)
    Js = np.full(u.size, np.inf)
    logs = np.log(x)
    for i, xmin in enumerate(u):
        start = int(np.searchsorted(x, xmin, side="left"))
        m = x.size - start
        if m < SMALL_N_MIN_TAIL:
            break  # tails only shrink from here
        s = float(np.sum(logs[start:]) - m * math.log(xmin))
        if not s > 1e-12:
            continue
        a = 1.0 + (m - 1.0) / s
        alphas[i] = a
        Ds[i] = ks_distance(x[start:], lambda v, a=a, x0=xmin: 1.0 - (v / x0) ** (1.0 - a))
        Js[i] = Ds[i] - SMALL_N_PENALTY / math.sqrt(m)
    if np.isfinite(Js).any():
        xmin_v = float(u[int(np.argmin(Js))])
    else:  # no tail of SMALL_N_MIN_TAIL values: the whole sample is the tail
        xmin_v = float(x[0])
    tail = x[x >= xmin_v]
    m = tail.size
    s = float(np.sum(np.log(tail / xmin_v)))
    if not s > 1e-12:
        return _failed("the values are too close to equal for a power law", x, None)
    alpha = 1.0 + (m - 1.0) / s
    D = ks_distance(tail, lambda v: 1.0 - (v / xmin_v) ** (1.0 - alpha))
    fit = PowerLawFit(alpha=alpha, xmin=xmin_v, xmax=None, D=D, sigma=(alpha - 1.0) / math.sqrt(m),
                      n_tail=int(m), n=int(x.size), status=SUCCESS, reason="", xmins=u,
                      alphas=alphas, data=x, small_n=True)
    fit.__dict__["Ds"] = Ds  # the cached D-vs-xmin curve (NaN for tails under 8 values)
    return fit


def _fit_fixed_xmin(x: np.ndarray, xmin: float, xmax: float | None,
                    discrete: bool = False) -> PowerLawFit:
    tail = x[x >= xmin]
    if tail.size < 2 or tail[0] == tail[-1]:
        return _failed(f"fewer than two distinct values >= xmin={xmin:g}", x, xmax, discrete)
    alpha, D, sigma, m = _tail_fit(x, xmin, xmax, discrete)
    if not alpha > 1:
        return _failed(f"alpha <= 1 at xmin={xmin:g}: the tail is not a normalisable power law",
                       x, xmax, discrete)
    one = np.array([xmin])
    return PowerLawFit(alpha=alpha, xmin=xmin, xmax=xmax, D=D, sigma=sigma, n_tail=m,
                       n=int(x.size), status=SUCCESS, reason="", xmins=one,
                       alphas=np.array([alpha]), data=x, discrete=discrete)


def discrete_alpha(tail, xmin: float, xmax: float | None = None) -> float:
    """The exact maximum-likelihood alpha of the discrete power law x^-alpha / Z on the lattice
    xmin, xmin + 1, ... (up to ``xmax``): Z = zeta(alpha, xmin) - zeta(alpha, floor(xmax) + 1).

    CSN's estimate 1 + n / sum(ln(x / (xmin - 1/2))) (``powerlaw``'s default,
    ``estimate_discrete=True``) approximates it; on CSN's words data at xmin = 7 this gives
    1.952718 where the estimate gives 1.950157. NaN when no maximum with alpha > 1 exists.
    """
    tail = np.asarray(tail, dtype=np.float64)
    tail = tail[tail >= xmin]
    n = tail.size
    if n == 0 or tail.min() == tail.max() and xmax is None and tail[0] == xmin:
        return math.nan
    s = float(np.sum(np.log(tail)))
    top = None if xmax is None else math.floor(xmax) + 1.0

    def nll(a):
        z = float(zeta(a, xmin))
        if top is not None:
            z -= float(zeta(a, top))
        return a * s + n * math.log(z) if z > 0 and math.isfinite(z) else math.inf

    lo = 1.0 + 1e-9 if xmax is None else 1e-6
    est = 1.0 + n / float(np.sum(np.log(tail / (xmin - 0.5)))) if xmin > 0.5 else 2.0
    hi = max(10.0, 4.0 * est)
    res = optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-12, "maxiter": 500})
    a = float(res.x)
    # polish: Brent's bounded search stops at xatol; one Newton-free golden step set is enough
    if not math.isfinite(res.fun) or a >= hi * (1 - 1e-9):
        return math.nan
    return a
