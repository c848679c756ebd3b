"""WeightWatcher's "finger" fixes for spurious large alphas, with its two bugs mended.

A finger is a handful of outlying largest eigenvalues that drags the KS choice of xmin to a tiny
tail with a huge alpha (WeightWatcher issue #102).
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


def clip_xmax(x: np.ndarray, *, xmin=None, xmax=None, max_fingers: int = 10,
              finger_thresh: float = 1.0, min_alpha: float = 2.0):
    """Refit with the k largest values removed, k = 1 .. max_fingers - 1; keep the first fit whose
    alpha is below the raw alpha by more than ``finger_thresh``; stop once alpha <= ``min_alpha``.

    Differences from WeightWatcher's ``fit_clipped_powerlaw``: it starts by removing two values and
    reports one finger (an off-by-one); and it replaces ``max_fingers`` by 10 whenever it is below
    half the number of eigenvalues (an inverted test), so the user's value is ignored. Here k values
    removed means ``num_fingers = k``, and ``max_fingers`` is honoured (capped at half the data).
    """
    from .powerlaw import _fit_sorted, _with_fingers

    if int(max_fingers) < 1:
        raise ValueError(f"max_fingers must be >= 1; got {max_fingers!r}")
    raw = _fit_sorted(x, xmin, xmax)
    if not raw.ok:
        return _with_fingers(raw, "clip_xmax", 0, raw.alpha)
    limit = min(int(max_fingers), x.size // 2)
    numeric_xmax = xmax is not None
    for k in range(1, limit):
        kept = x[:-k]
        fit = _fit_sorted(kept, xmin, float(kept[-1]) if numeric_xmax else None)
        if not fit.ok:
            break
        if fit.alpha + finger_thresh < raw.alpha:
            return _with_fingers(fit, "clip_xmax", k, raw.alpha)
        if min_alpha is not None and fit.alpha <= min_alpha:
            break
    return _with_fingers(raw, "clip_xmax", 0, raw.alpha)


__all__ = ["clip_xmax", "xmin_peak_range"]
