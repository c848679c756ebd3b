"""The Hill estimator with xmin at the median: ``PL_Alpha_Hill`` of the HT-SR research code.

AlphaPruning, TempBalance, FARMS, AlphaLoRA and AlphaDecay all compute a layer's alpha with the
same few lines of their ``net_esd_estimator(fix_fingers='xmin_mid')``: no KS search, xmin fixed at
the middle of the sorted ESD, the continuous power-law MLE (Hill) on the values from there up.
:func:`hill_alpha` is those lines in float64 (their code runs float32 torch).
"""

from __future__ import annotations

import math

import numpy as np


def hill_alpha(x, xmin_pos: int = 2) -> float:
    """The Hill (continuous power-law MLE) exponent with a fixed xmin: ``PL_Alpha_Hill``.

    Conventions, as the research repositories' ``net_esd_estimator(fix_fingers='xmin_mid')``
    with its default ``filter_zeros=False`` (AlphaPruning ``lib/esd_utils.py``, TempBalance
    ``tempbalance.py``, FARMS ``analysis_esd``):

    - every value counts, zeros included (they drop none: ``EVALS_THRESH`` applies only with
      ``filter_zeros=True``), sorted ascending ``x[0] <= ... <= x[L-1]``;
    - xmin is ``x[i]`` with ``i = int(L / xmin_pos)`` (``xmin_pos=2``: the median position,
      the upper median when ``L`` is even), so the tail is ``x[i:]``, ``n = L - i`` values,
      xmin itself included;
    - ``alpha = 1 + n / (sum(ln x[i:]) - n ln x[i])``;
    - computed in float64 (the reference code: float32 torch, so agreement is to ~1e-6
      relative).

    The values must be finite and >= 0. A ValueError (one line) when there are fewer than 3, when
    xmin is 0 (more than half the values are zeros; the reference's log(0) gives alpha = 1 or
    NaN there), or when the tail is constant (every value from xmin up equal, to a relative
    1e-12 on average, as the eigenvalues of an orthogonal matrix: alpha would be infinite, or a
    number made of round-off).

    >>> round(hill_alpha([1.0, 2.0, 4.0, 8.0]), 6)  # xmin = 4: 1 + 2 / ln 2
    3.88539
    >>> round(hill_alpha([0.0, 0.0, 1.0, 2.0, 4.0]), 6)  # zeros count in L = 5; xmin = x[2] = 1
    2.442695
    """
    try:
        data = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"data must be a 1-D array of numbers; got {type(x).__name__}") from None
    if data.ndim != 1:
        raise ValueError(f"data must be 1-D; got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError(f"data contain {int((~np.isfinite(data)).sum())} NaN or infinite value(s)")
    if (data < 0).any():
        raise ValueError(f"data contain {int((data < 0).sum())} negative value(s) (smallest "
                         f"{data.min():g}); Hill's alpha is for values >= 0")
    if not (isinstance(xmin_pos, (int, np.integer)) and not isinstance(xmin_pos, bool)
            and xmin_pos >= 1):
        raise ValueError(f"xmin_pos must be an int >= 1; got {xmin_pos!r}")
    size = data.size
    if size < 3:
        raise ValueError(f"{size} value(s): Hill's alpha needs at least 3")
    i = int(size / xmin_pos)
    if i >= size:  # xmin_pos == 1 puts xmin past the top (the reference indexes out of range)
        raise ValueError(f"xmin_pos={xmin_pos} leaves no tail")
    data = np.sort(data)
    if not data[i] > 0:
        raise ValueError(f"xmin is 0: {int(np.count_nonzero(data == 0))} of {size} values are "
                         "zeros, more than the part below xmin")
    tail = np.log(data[i:])
    n = tail.size
    denom = float(np.sum(tail) - n * tail[0])
    if not denom > n * 1e-12:  # mean ln(x / xmin) at round-off: alpha would be ~1e12 or inf
        raise ValueError(f"the {n} values from xmin = {data[i]:g} up are all equal (to "
                         "round-off): Hill's alpha is infinite")
    alpha = 1.0 + n / denom
    if not math.isfinite(alpha):
        raise ValueError("Hill's alpha is not finite")
    return alpha
