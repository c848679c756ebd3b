"""The basics every tail fit shares: input validation, the KS distance, the xmin/xmax options.

The bottom of ``tailscope.fit``: imports no other module of the package.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def as_positive_1d(data: Any, what: str = "data") -> np.ndarray:
    """Validate ``data`` as a 1-D array of finite positive numbers; return it as a new float64
    array (a copy: the caller may sort it in place)."""
    try:
        arr = np.asarray(data)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{what} must be a 1-D array of numbers: {exc}") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be numbers; got dtype {arr.dtype}")
    if arr.dtype.kind == "b":
        raise ValueError(f"{what} must be numbers; got booleans")
    if arr.ndim != 1:
        shape = "a scalar" if arr.ndim == 0 else f"an array of shape {arr.shape}"
        raise ValueError(f"{what} must be 1-D (one value per observation); got {shape}")
    if arr.size == 0:
        raise ValueError(f"{what} is empty")
    arr = arr.astype(np.float64)
    lo, hi = arr.min(), arr.max()  # NaN propagates through both
    if lo > 0 and math.isfinite(hi):
        return arr
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{what} contain {int(bad.sum())} NaN or infinite value(s)")
    nonpos = arr <= 0
    if nonpos.any():
        raise ValueError(
            f"{what} contain {int(nonpos.sum())} value(s) <= 0 (smallest {arr.min():g}); a power "
            "law lives on x > 0: drop them first, e.g. x[x > 0]")
    return arr


def is_sorted(x: np.ndarray) -> bool:
    """Whether x is in ascending order (an empty or one-value array is)."""
    return x.size < 2 or bool((x[1:] >= x[:-1]).all())


def run_starts(x_sorted: np.ndarray) -> np.ndarray:
    """Indices where each distinct value of sorted data first appears: np.unique's
    ``return_index`` read off directly (np.unique would sort again). Needs at least one value."""
    new = np.empty(x_sorted.size, dtype=bool)
    new[0] = True
    np.not_equal(x_sorted[1:], x_sorted[:-1], out=new[1:])
    return np.flatnonzero(new)


def ks_distance(tail: np.ndarray, model_cdf) -> float:
    """KS distance at the unique tail values against the left-limit empirical CDF (powerlaw 1.5)."""
    u, first = np.unique(tail, return_index=True)
    diff = model_cdf(u) - first / tail.size
    return float(max(diff.max(), -diff.min()))


def resolve_xmax(xmax, x: np.ndarray) -> float | None:
    """The ``xmax`` option (None, a positive number or 'max') as None or a float; ``x``: the data."""
    if xmax is None:
        return None
    if isinstance(xmax, str):
        if xmax != "max":
            raise ValueError(f"xmax must be a positive number, 'max' or None; got {xmax!r}")
        return float(x.max())
    try:
        value = float(xmax)
    except (TypeError, ValueError):
        raise ValueError(f"xmax must be a positive number, 'max' or None; got {xmax!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"xmax must be a positive finite number; got {xmax!r}")
    return value


def resolve_xmin(xmin) -> tuple[float | None, tuple[float, float] | None]:
    """The ``xmin`` option (None, a positive number or (lo, hi)) as (fixed xmin, search range)."""
    if xmin is None:
        return None, None
    if isinstance(xmin, (tuple, list)):
        if len(xmin) != 2:
            raise ValueError(f"an xmin range must be (lo, hi); got {xmin!r}")
        lo, hi = (float(v) for v in xmin)
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise ValueError(f"xmin range must be finite with lo <= hi; got {xmin!r}")
        return None, (lo, hi)
    try:
        value = float(xmin)
    except (TypeError, ValueError):
        raise ValueError(f"xmin must be a positive number, a (lo, hi) range or None; got {xmin!r}"
                         ) from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"xmin must be a positive finite number; got {xmin!r}")
    return value, None


def split_xmax(x_sorted: np.ndarray, xmax, what: str = "values"):
    """WeightWatcher's ``xmax`` vocabulary on sorted data -> (data, xmax for the fit, dropped).

    ``'force'`` means ``'max'`` (the largest value); a negative int -k drops the k largest values
    first (ValueError when that is more than half of them); anything else passes through.
    """
    if isinstance(xmax, (int, np.integer)) and not isinstance(xmax, (bool, np.bool_)):
        k = -int(xmax)
        if k < 0:
            raise ValueError(f"xmax={xmax}: a whole-number xmax is -k, the largest {what} to drop")
        if k > x_sorted.size / 2:
            raise ValueError(f"xmax={xmax} drops more than half of the {x_sorted.size} {what}")
        return x_sorted[: x_sorted.size - k], None, k
    return x_sorted, "max" if xmax == "force" else xmax, 0


__all__ = ["as_positive_1d", "ks_distance", "resolve_xmax", "resolve_xmin", "split_xmax"]
