"""WeightWatcher's "finger" fixes for spurious large alphas, with its two bugs mended.

A finger is a handful of outlying largest eigenvalues that drags the KS choice of xmin to a tiny
tail with a huge alpha (WeightWatcher issue #102). Here: the xmin range of the 'xmin_peak' fix;
the 'clip_xmax' fix refits power laws and lives in :mod:`tailscope.fit.powerlaw`.
"""

from __future__ import annotations

import numpy as np


def xmin_peak_range(x: np.ndarray, xmin_max: float | None = None) -> tuple[float, float]:
    """(lo, hi) for the xmin search: around the peak of the log10 histogram of the data.

    p = 10^(left edge of the fullest of 100 bins of log10 x); lo = 0.95 p, hi = xmin_max or 1.5 p.
    WeightWatcher computes lo as log10(0.95 p), a value in log units, so its search starts far
    below the peak; both bounds are linear here.
    """
    counts, edges = np.histogram(np.log10(x), bins=100)
    peak = 10.0 ** edges[int(np.argmax(counts))]
    hi = 1.5 * peak if xmin_max is None else float(xmin_max)
    lo = 0.95 * peak
    if hi < lo:
        raise ValueError(f"xmin_max={xmin_max!r} is below the ESD peak's lower bound {lo:g}")
    return lo, hi


def ww_xmin_peak_range(x: np.ndarray, xmin_max: float | None = None) -> tuple[float, float]:
    """WeightWatcher 0.7.7's xmin range for 'xmin_peak', exactly as it runs (``x`` sorted).

    It hands ``powerlaw.Fit`` the range (log10(0.95 p), xmin_max or 1.5 p): the lower bound in
    log units, and ``powerlaw`` 1.5 takes the bounds as min and max of the pair and drops the
    largest unique value inside. Returned as the equivalent (lo, hi) range for our scan;
    ValueError when fewer than two values are inside.
    """
    counts, edges = np.histogram(np.log10(x), bins=100)
    peak = 10.0 ** edges[int(np.argmax(counts))]
    a = float(np.log10(0.95 * peak))
    b = 1.5 * peak if xmin_max is None else float(xmin_max)
    lo, hi = min(a, b), max(a, b)
    u = np.unique(x[(x >= lo) & (x <= hi)])
    if u.size < 2:
        raise ValueError(f"WeightWatcher's xmin_peak range [{lo:g}, {hi:g}] holds fewer than two "
                         "eigenvalues")
    return lo, float(u[-2])


__all__ = ["ww_xmin_peak_range", "xmin_peak_range"]
