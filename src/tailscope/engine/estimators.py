"""The research code's alpha estimators as diagnostics: ``alpha_hill`` (``hill=True``) and
``alpha_farms`` (``farms=True``).

Both are the Hill estimator with xmin at the median (:func:`tailscope.fit.hill_alpha`, the
``PL_Alpha_Hill`` of AlphaPruning, TempBalance, FARMS, AlphaLoRA, AlphaDecay); ``alpha_hill`` on the
row's ESD, ``alpha_farms`` on FARMS's pooled window eigenvalues
(:mod:`tailscope.spectrum.windows`). As in the research code, every eigenvalue counts (no 1e-5
threshold: the median is the median of all of them), and a Hill alpha does not depend on the
eigenvalues' scale (conv2d_norm, normalize). Their columns are computed as
:mod:`tailscope.engine.diagnostics` declares them (``hill_column``, ``farms_column``): a failure is
NaN in the column and the reason appended to the row's ``reason``; the row's other columns stand.
"""

from __future__ import annotations

import numpy as np

from ..fit import hill_alpha
from ..sources.layers import CONV_TYPES
from ..spectrum import conv_window_eigenvalues, window_eigenvalues


def numerical_zeros(evals) -> np.ndarray:
    """The eigenvalues with those at round-off level (<= lambda_max * L * machine epsilon, where
    a Gram eigensolver's absolute error lies; negative ones included) set to 0: the zero
    eigenvalues of a rank-deficient matrix, which the research code's float32 SVD gives as tiny
    numbers whose logarithm means nothing."""
    ev = np.asarray(evals, dtype=np.float64)
    top = float(ev.max()) if ev.size else 0.0
    return np.where(ev > max(top, 0.0) * ev.size * np.finfo(np.float64).eps, ev, 0.0)


def _degenerate(message: str) -> str:
    """A short class of why Hill's alpha of one division does not exist."""
    if message.startswith("xmin is 0"):
        return "with xmin 0 (most window values zero)"
    if "needs at least 3" in message:
        return "with fewer than 3 values"
    if "all equal" in message:
        return "with a constant tail"
    return f"({message})"


def farms_estimate(mats: list[np.ndarray], layer_type: str,
                   keras: bool = False) -> tuple[float, str]:
    """FARMS's alpha of a row's matrices (one, or a conv layer's pooled slices), and a note
    saying what was left out (empty when nothing was).

    Convolution kernels of every rank (``CONV_TYPES``: conv1d, conv2d, conv3d; the reference
    defines conv2d): the reference's per-division windows of the tall slices
    (:func:`~tailscope.spectrum.conv_window_eigenvalues`), one Hill alpha per division, their
    mean. Where a division is degenerate (its windows all zero, as a dead channel's, fewer than
    3 values, or a constant spectrum) the reference's alpha is NaN or infinite (log 0) and so is
    its mean; here the mean is over the divisions where Hill's alpha exists, and the note says
    how many were left out and why. Every division degenerate: ValueError with the reason.

    Other layers: each matrix as PyTorch stores it (``out x in``; Keras kernels are transposed
    to it) sampled by :func:`~tailscope.spectrum.window_eigenvalues`, the windows of all its
    matrices pooled.
    """
    if not mats:
        raise ValueError("no matrices")
    if layer_type in CONV_TYPES:
        divisions = conv_window_eigenvalues(mats)
        if not divisions:
            raise ValueError("no row division: the slices are wider than tall")
        alphas, why = [], {}
        for ev in divisions:
            try:
                alphas.append(hill_alpha(numerical_zeros(ev)))
            except ValueError as exc:
                text = _degenerate(str(exc))
                why[text] = why.get(text, 0) + 1
        reasons = ", ".join(f"{n} {text}" for text, n in why.items())
        if not alphas:
            raise ValueError(f"all {len(divisions)} row divisions are degenerate ({reasons})")
        note = (f"mean over {len(alphas)} of {len(divisions)} row divisions, "
                f"{len(divisions) - len(alphas)} degenerate ({reasons})") if why else ""
        return float(np.mean(alphas)), note
    pooled = np.concatenate([window_eigenvalues(m.T if keras else m) for m in mats])
    return hill_alpha(numerical_zeros(pooled)), ""


def farms_alpha(mats: list[np.ndarray], layer_type: str, keras: bool = False) -> float:
    """FARMS's alpha of a row's matrices: :func:`farms_estimate` without its note."""
    return farms_estimate(mats, layer_type, keras)[0]
