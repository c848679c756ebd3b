"""Goodness of fit by the semi-parametric bootstrap of Clauset, Shalizi & Newman (2009, section 4.1).

Each replicate draws n values: with probability n_tail/n from the fitted power law above xmin,
otherwise uniformly from the observed values below xmin; then the *whole* fit is re-run, xmin scan
included, and its KS distance recorded. p = fraction of replicates with D_sim > D_obs. The power
law is ruled out when p <= 0.1; 2,500 replicates give p to about +-0.01.

``powerlaw`` has no bootstrap; this one is exact per replicate and runs in parallel processes.
Replicate i always uses the i-th child of ``SeedSequence(seed)``, so results do not depend on the
number of processes.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, repr=False, eq=False)
class GoodnessOfFit:
    """Bootstrap results: ``p_value`` (CSN), the replicates' D and alpha, a percentile interval."""

    p_value: float
    D: float
    n_boot: int
    n_failed: int
    alpha_ci: tuple[float, float]
    ci: float
    Ds: np.ndarray
    alphas: np.ndarray
    seed: int | None

    @property
    def plausible(self) -> bool:
        """CSN's rule: the power law is plausible when p > 0.1."""
        return self.p_value > 0.1

    def __repr__(self) -> str:
        lo, hi = self.alpha_ci
        return (f"GoodnessOfFit(p_value={self.p_value:.4g}, D={self.D:.6g}, n_boot={self.n_boot}, "
                f"alpha_ci{int(round(self.ci * 100))}=({lo:.4g}, {hi:.4g}), "
                f"n_failed={self.n_failed})")


def _replicate(args) -> list[tuple[float, float]]:
    seeds, body, n, n_tail, xmin, alpha, xmax, xmin_opt, refit = args
    out = []
    beta = alpha - 1.0
    tail_mass = 1.0 if xmax is None else -math.expm1(-beta * math.log(xmax / xmin))
    for seq in seeds:
        rng = np.random.default_rng(seq)
        k = rng.binomial(n, n_tail / n)
        u = rng.random(k)
        # inverse CDF of the (possibly truncated) power law on [xmin, xmax]
        tail = xmin * np.exp(-np.log1p(-u * tail_mass) / beta)
        lower = body[rng.integers(0, body.size, n - k)] if body.size else np.empty(0)
        sample = np.concatenate([lower, tail])
        try:
            fit = refit(sample, xmin=xmin_opt, xmax=xmax)
        except ValueError:
            out.append((math.nan, math.nan))
            continue
        out.append((fit.D, fit.alpha) if fit.ok else (math.nan, math.nan))
    return out


def goodness_of_fit(fit, n_boot: int = 1000, *, seed=None, n_jobs: int | None = None,
                    ci: float = 0.95) -> GoodnessOfFit:
    """CSN bootstrap p-value of a :class:`PowerLawFit`, and a percentile interval for alpha.

    Parameters
    ----------
    fit : PowerLawFit
        A successful fit. Every replicate is refitted by ``fit.refit`` with ``fit.xmin_search``
        (the fit's xmin search range, or its fixed xmin) and ``fit.xmax``.
    n_boot : int
        Replicates. 1/(4 eps^2) gives p to within eps: 2,500 for eps = 0.01.
    seed : int or None
        Makes the result reproducible, whatever ``n_jobs`` is.
    n_jobs : int or None
        Worker processes (None: all cores; 1: in this process).
    ci : float
        Level of the percentile interval of the replicates' alphas (a parametric-bootstrap
        interval: the replicates are drawn from the fitted model).
    """
    if not fit.ok:
        raise ValueError(f"cannot bootstrap a failed fit ({fit.reason})")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1; got {n_boot!r}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1); got {ci!r}")
    n_boot = int(n_boot)
    ss = np.random.SeedSequence(seed)
    children = ss.spawn(n_boot)
    body = fit.data[fit.data < fit.xmin]
    xmin_opt = fit.xmin_search
    jobs = (os.cpu_count() or 1) if n_jobs is None else max(1, int(n_jobs))
    jobs = min(jobs, n_boot)
    n_chunks = min(n_boot, jobs * 4) if jobs > 1 else 1
    index_chunks = [np.arange(i, n_boot, n_chunks) for i in range(n_chunks)]
    # the fit's class refits the replicates (a staticmethod: it pickles by name for the workers)
    common = (body, fit.n, fit.n_tail, fit.xmin, fit.alpha, fit.xmax, xmin_opt, type(fit).refit)
    tasks = [([children[j] for j in idx], *common) for idx in index_chunks]
    if jobs == 1:
        results = [_replicate(t) for t in tasks]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(_replicate, tasks))
    Ds = np.empty(n_boot)
    alphas = np.empty(n_boot)
    for idx, res in zip(index_chunks, results):
        Ds[idx] = [r[0] for r in res]
        alphas[idx] = [r[1] for r in res]
    good = np.isfinite(Ds)
    n_good = int(good.sum())
    p = float(np.sum(Ds[good] > fit.D) / n_good) if n_good else math.nan
    tail = (1.0 - ci) / 2.0
    interval = (tuple(float(v) for v in np.quantile(alphas[good], [tail, 1.0 - tail]))
                if n_good else (math.nan, math.nan))
    return GoodnessOfFit(p_value=p, D=fit.D, n_boot=n_boot, n_failed=n_boot - n_good,
                         alpha_ci=interval, ci=ci, Ds=Ds, alphas=alphas,
                         seed=seed if isinstance(seed, int) else None)
