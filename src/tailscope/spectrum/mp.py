"""Marchenko-Pastur (MP) fit of an ESD's random bulk, exactly as WeightWatcher 0.7.5.5 does it.

The ESD (eigenvalues of X = W^T W, N >= M, Q = N/M) is rescaled so its mean eigenvalue is 1
(W_scale = sqrt(n / sum(evals))). A triangular ('linear') kernel density estimate with bandwidth
0.1 on 1000 points of [0, max + 0.5] is compared with the MP density for each sigma of a grid
(0.05 sigma0 to 2 sigma0 in steps of 0.01 sigma0, sigma0 = sqrt(max) / (1 + Q^-1/2)), then
polished by Nelder-Mead from the best grid point (``scipy.optimize.brute`` with its default
``finish=fmin``). Points where the KDE is below 0.01 are left out; a sigma whose bulk edge
lambda+ lies below the KDE's peak or beyond its last point, or whose lambda- lies beyond the peak,
scores a residual of 1000 per point. When Q == 1 the quarter-circle law is fitted to the singular
values instead. Spikes are the rescaled eigenvalues above lambda+ + sqrt(TW), with the
Tracy-Widom width TW = Q^-1/2 lambda+^(2/3) M^(-2/3).

Unlike WeightWatcher (which reports -1 for every column when anything goes wrong), a spectrum with
no MP fit raises :class:`MPFitError` with the reason, and a fit in which every sigma was
penalised (the bulk edge cannot sit around the ESD's peak) is refused rather than reported.

sigma_mp is in units where the *whole* ESD has mean 1: a trained layer whose spikes carry part of
the trace has a bulk with mean below 1, so sigma_mp < 1 (WeightWatcher issue #210's "sigma ~ 0.7")
is what the convention gives, not a failed fit; a pure random matrix gives sigma_mp ~ 1.

The law itself is here too: its bulk edges (``mp_edges`` per sample, ``mp_gram_edges`` for the
unnormalised X^T X) and its median (``mp_median``), which rank selection's Marchenko-Pastur edge
rule uses to estimate the noise level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BANDWIDTH = 0.1  # WeightWatcher's KDE bandwidth
KDE_POINTS = 1000
KDE_THRESH = 0.01  # KDE values below are dropped from the residual
PENALTY = 1000.0  # the residual of a sigma whose bulk cannot be the ESD's


class MPFitError(ValueError):
    """The Marchenko-Pastur fit does not exist for this spectrum (the message says why)."""


@dataclass(frozen=True)
class MPFit:
    """A Marchenko-Pastur fit of one ESD (WeightWatcher's ``mp_fit`` columns).

    Attributes
    ----------
    num_spikes : int
        Eigenvalues above the bulk edge plus the Tracy-Widom width.
    sigma_mp : float
        The fitted sigma (rescaled units: the ESD's mean eigenvalue is 1).
    mp_softrank : float
        bulk_max / lambda_max (both rescaled).
    W_scale : float
        sqrt(n / sum(evals)); rescaled eigenvalues are evals * W_scale**2.
    bulk_min, bulk_max : float
        The MP bulk edges lambda-, lambda+ on the original scale.
    Q : float
        N / M.
    tw : float
        The Tracy-Widom width (rescaled units); spikes are above bulk_max * W_scale**2 + sqrt(tw).
    residual : float
        The sum of squared residuals at sigma_mp.
    """

    num_spikes: int
    sigma_mp: float
    mp_softrank: float
    W_scale: float
    bulk_min: float
    bulk_max: float
    Q: float
    tw: float
    residual: float

    @property
    def spike_threshold(self) -> float:
        """The eigenvalue (original scale) above which an eigenvalue is a spike."""
        return (self.bulk_max * self.W_scale ** 2 + math.sqrt(self.tw)) / self.W_scale ** 2

    def as_row(self, prefix: str = "") -> dict:
        """WeightWatcher's columns (``prefix='rand_'`` for the randomized ESD's)."""
        return {f"{prefix}num_spikes": self.num_spikes, f"{prefix}sigma_mp": self.sigma_mp,
                f"{prefix}mp_softrank": self.mp_softrank, f"{prefix}W_scale": self.W_scale,
                f"{prefix}bulk_max": self.bulk_max, f"{prefix}bulk_min": self.bulk_min}


def mp_edges(beta: float, sigma: float = 1.0) -> tuple[float, float]:
    """The bulk edges (lambda-, lambda+) = sigma^2 (1 -+ sqrt(beta))^2 of the Marchenko-Pastur law
    of entry variance sigma^2 and aspect ratio beta = M/N in (0, 1], for the eigenvalues of
    W^T W / N (W of N x M). Computed as (sigma (1 -+ sqrt(beta)))^2."""
    root = math.sqrt(beta)
    return (sigma * (1 - root)) ** 2, (sigma * (1 + root)) ** 2


def mp_gram_edges(n: int, p: int, sigma2: float = 1.0) -> tuple[float, float]:
    """The bulk edges sigma^2 (sqrt(n) -+ sqrt(p))^2 of the eigenvalues of X^T X itself (not
    divided by n) for X of n x p, n >= p, with i.i.d. entries of variance sigma^2."""
    return sigma2 * (math.sqrt(n) - math.sqrt(p)) ** 2, sigma2 * (math.sqrt(n) + math.sqrt(p)) ** 2


def mp_median(beta: float) -> float:
    """The median of the Marchenko-Pastur law with aspect ratio beta = M/N in (0, 1] and variance 1
    (the law of the eigenvalues of W^T W / N): its CDF (``scipy.integrate.quad`` of the density)
    equal to 1/2, by ``brentq`` to 1e-12."""
    from scipy.integrate import quad
    from scipy.optimize import brentq

    lo, hi = mp_edges(beta)

    def density(t):
        return math.sqrt(max((hi - t) * (t - lo), 0.0)) / (2 * math.pi * beta * t)

    def cdf(x):
        return quad(density, lo, x, limit=200)[0]

    return brentq(lambda x: cdf(x) - 0.5, lo, hi, xtol=1e-12)


def mp_density(x, sigma: float, Q: float) -> np.ndarray:
    """The Marchenko-Pastur density of the eigenvalues of W^T W for aspect ratio Q = N/M >= 1.

    rho(x) = Q sqrt((lambda+ - x)(x - lambda-)) / (2 pi sigma^2 x), lambda+- = sigma^2 (1 +- Q^-1/2)^2
    (``mp_edges(1 / Q, sigma)``), and 0 outside [lambda-, lambda+]. With Q = 1 it is the
    quarter-circle law of the singular values written for their squares.
    """
    x = np.asarray(x, dtype=np.float64)
    a, b = mp_edges(1 / Q, sigma)
    inside = (x > a) & (x < b) & (x > 0)
    out = np.zeros_like(x)
    xi = x[inside]
    out[inside] = Q * np.sqrt((b - xi) * (xi - a)) / (2 * np.pi * sigma * sigma * xi)
    return out


def linear_kde(data: np.ndarray, points: np.ndarray, bandwidth: float = BANDWIDTH,
               chunk: int = 4_000_000) -> np.ndarray:
    """Triangular-kernel density (scikit-learn's ``KernelDensity(kernel='linear')``):
    (1 / (n h)) sum_i max(0, 1 - |x - d_i| / h)."""
    data = np.asarray(data, dtype=np.float64).ravel()
    points = np.asarray(points, dtype=np.float64).ravel()
    out = np.empty(points.size)
    step = max(1, chunk // max(data.size, 1))
    for start in range(0, points.size, step):
        p = points[start:start + step, None]
        out[start:start + step] = np.maximum(0.0, 1.0 - np.abs(p - data) / bandwidth).sum(axis=1)
    return out / (data.size * bandwidth)


def _residuals(sigmas: np.ndarray, xde: np.ndarray, yde: np.ndarray, n_bad: int, Q: float
               ) -> np.ndarray:
    """Sum of squared residuals for each sigma (WeightWatcher's resid_mp, vectorised)."""
    s = np.asarray(sigmas, dtype=np.float64).reshape(-1, 1)
    x = xde[None, :]
    with np.errstate(all="ignore"):
        if Q == 1:
            ymp = np.nan_to_num((1 / (np.pi * s * s)) * np.sqrt(4 - x ** 2))
            resid = ymp - yde
        else:
            y = 1 / Q
            b = np.power(s * (1 + np.sqrt(1 / Q)), 2)
            a = np.power(s * (1 - np.sqrt(1 / Q)), 2)
            ymp = np.nan_to_num((1 / (2 * np.pi * s * s * x * y)) * np.sqrt((b - x) * (x - a)))
            peak = xde[np.argmax(yde)]
            bad = (b < peak) | (b > xde.max()) | (a > peak)
            resid = np.where(bad, PENALTY, ymp - yde)
    resid = np.concatenate([resid, np.zeros((resid.shape[0], n_bad))], axis=1)
    return np.sum(resid ** 2, axis=1)


def _penalised(residual: float, n_good: int) -> bool:
    return residual >= PENALTY ** 2 * n_good * (1 - 1e-9)


def mp_fit(evals, N: int, M: int) -> MPFit:
    """Fit the Marchenko-Pastur law to an ESD, as WeightWatcher 0.7.5.5's ``mp_fit=True``.

    Parameters
    ----------
    evals : array_like
        The eigenvalues of W^T W (all of them, pooled over conv slices if need be).
    N, M : int
        The matrix sizes, N >= M >= 1; Q = N / M (the quarter-circle law when Q == 1).

    Returns
    -------
    MPFit

    Raises
    ------
    MPFitError
        When no fit exists: no positive eigenvalue, non-finite values, a KDE that is nowhere above
        0.01, or no sigma that puts the bulk edge around the ESD's peak.
    """
    from scipy.optimize import fmin

    if not (int(M) >= 1 and int(N) >= int(M)):
        raise MPFitError(f"mp_fit needs N >= M >= 1; got N={N}, M={M}")
    ev = np.asarray(evals, dtype=np.float64).ravel()
    if ev.size == 0:
        raise MPFitError("no eigenvalues")
    if not np.isfinite(ev).all():
        raise MPFitError("the eigenvalues hold NaN or Inf")
    total = float(ev.sum())
    if not total > 0:
        raise MPFitError("all eigenvalues are zero: no bulk to fit")
    Q = N / M
    w_scale = math.sqrt(ev.size) / math.sqrt(total)
    scaled = (w_scale * w_scale) * ev
    lam_max = float(scaled.max())

    sigma0 = math.sqrt(lam_max / (1.0 + 1.0 / math.sqrt(Q)) ** 2)
    to_fit = np.sqrt(np.maximum(scaled, 0.0)) if Q == 1 else scaled
    xde = np.linspace(0, to_fit.max() + 0.5, KDE_POINTS)
    yde = linear_kde(to_fit, xde)
    good = yde > KDE_THRESH
    n_bad = int(np.count_nonzero(yde < KDE_THRESH))
    if not good.any():
        raise MPFitError("the ESD's density is below 0.01 everywhere: no bulk to fit")
    xg, yg = xde[good], yde[good]

    grid = np.mgrid[slice(0.05 * sigma0, 2.0 * sigma0, 0.01 * sigma0)]
    scores = _residuals(grid, xg, yg, n_bad, Q)
    start = float(grid[np.argmin(scores)])
    xopt, fopt = fmin(lambda p: float(_residuals(p, xg, yg, n_bad, Q)[0]), start,
                      full_output=True, disp=False)[:2]
    sigma = float(np.asarray(xopt).ravel()[0])
    if Q != 1 and _penalised(float(fopt), xg.size):
        raise MPFitError("no sigma puts the MP bulk edge around the ESD's peak "
                         "(the spectrum has no random bulk)")
    # mp_fit's own arithmetic 1 / sqrt(Q), not mp_edges(1 / Q, sigma): sqrt(1 / Q) differs from it
    # in the last bit for some Q (2, 3, ...), and mp_fit's numbers must not move
    bulk_max = (sigma * (1 + 1 / math.sqrt(Q))) ** 2
    bulk_min = (sigma * (1 - 1 / math.sqrt(Q))) ** 2
    tw = 1 / math.sqrt(Q) * bulk_max ** (2 / 3) * M ** (-2 / 3)
    num_spikes = int(np.count_nonzero(scaled > bulk_max + math.sqrt(tw)))
    return MPFit(num_spikes=num_spikes, sigma_mp=sigma, mp_softrank=bulk_max / lam_max,
                 W_scale=w_scale, bulk_min=bulk_min / (w_scale * w_scale),
                 bulk_max=bulk_max / (w_scale * w_scale), Q=Q, tw=tw, residual=float(fopt))
