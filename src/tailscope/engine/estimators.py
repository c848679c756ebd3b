"""The research code's alpha estimators as diagnostics: ``alpha_hill`` (``hill=True``) and
``alpha_farms`` (``farms=True``).

Both are the Hill estimator with xmin at the median (:func:`tailscope.fit.hill_alpha`, the
``PL_Alpha_Hill`` of AlphaPruning, TempBalance, FARMS, AlphaLoRA, AlphaDecay); ``alpha_hill`` on the
row's ESD, ``alpha_farms`` on FARMS's pooled window eigenvalues
(:mod:`tailscope.spectrum.windows`). A failure is NaN in the column and the reason appended to the
row's ``reason``; the row's other columns stand.
"""

from __future__ import annotations

import math

import numpy as np

from ..fit import hill_alpha
from ..spectrum import conv_window_eigenvalues, window_eigenvalues
from ..util.errors import one_line

EVALS_THRESH = 1e-5  # eigenvalues at or below are dropped before every fit (WeightWatcher's and
# the research code's EVALS_THRESH)


def hill_of(evals: np.ndarray) -> float:
    """Hill's alpha at the median of the eigenvalues above ``EVALS_THRESH`` (ValueError when
    fewer than 3 remain or the tail is constant)."""
    evals = np.asarray(evals, dtype=np.float64)
    kept = evals[evals > EVALS_THRESH]
    if kept.size < 3:
        raise ValueError(f"{kept.size} eigenvalue(s) above {EVALS_THRESH:g}: Hill's alpha needs 3")
    return hill_alpha(kept)


def farms_alpha(mats: list[np.ndarray], layer_type: str, scale: float = 1.0,
                keras: bool = False) -> float:
    """FARMS's alpha of a row's matrices (one, or a conv layer's pooled slices).

    conv2d: the reference's per-division windows of the tall slices
    (:func:`~tailscope.spectrum.conv_window_eigenvalues`), one Hill alpha per division, their
    mean. Other layers: each matrix as PyTorch stores it (``out x in``; Keras kernels are
    transposed to it) sampled by :func:`~tailscope.spectrum.window_eigenvalues`, the windows of
    all its matrices pooled (a conv1d layer's slices, which the reference does not handle).
    ``scale`` (conv2d_norm, normalize) multiplies the eigenvalues before the 1e-5 threshold, as
    for the ESD.
    """
    if not mats:
        raise ValueError("no matrices")
    if layer_type == "conv2d":
        divisions = conv_window_eigenvalues(mats)
        return float(np.mean([hill_of(ev * scale) for ev in divisions]))
    pooled = np.concatenate([window_eigenvalues(m.T if keras else m) for m in mats])
    return hill_of(pooled * scale)


def add_estimators(values: dict, evals, mats, slice_id, scale: float, ref, plan, o) -> None:
    """Add ``alpha_hill`` / ``alpha_farms`` (as ``o`` asks) to a row's ``values`` in place: NaN
    and a reason appended to ``values['reason']`` when one cannot be computed."""
    if not (o.hill or o.farms):
        return
    problems = []
    if o.hill:
        try:
            if evals is None:
                raise ValueError("no spectrum")
            values["alpha_hill"] = hill_of(evals)
        except Exception as exc:  # noqa: BLE001 - NaN and the reason, never a stopped layer
            values["alpha_hill"] = math.nan
            problems.append(f"alpha_hill: {one_line(exc)}")
    if o.farms:
        try:
            if mats is None:
                raise ValueError("the layer's matrices were not kept")
            group = mats if slice_id is None else [mats[int(slice_id)]]
            values["alpha_farms"] = farms_alpha(group, plan.layer_type, scale,
                                                keras=getattr(ref, "layout", "") == "keras")
        except Exception as exc:  # noqa: BLE001
            values["alpha_farms"] = math.nan
            problems.append(f"alpha_farms: {one_line(exc)}")
    if problems:
        old = values.get("reason") or ""
        values["reason"] = "; ".join(([old] if old else []) + problems)
