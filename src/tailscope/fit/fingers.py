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


__all__ = ["xmin_peak_range"]
