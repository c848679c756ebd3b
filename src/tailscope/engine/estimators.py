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
from ..spectrum import conv_window_eigenvalues, window_eigenvalues


def numerical_zeros(evals) -> np.ndarray:
    """The eigenvalues with those at round-off level (<= lambda_max * L * machine epsilon, where
    a Gram eigensolver's absolute error lies; negative ones included) set to 0: the zero
    eigenvalues of a rank-deficient matrix, which the research code's float32 SVD gives as tiny
    numbers whose logarithm means nothing."""
    ev = np.asarray(evals, dtype=np.float64)
    top = float(ev.max()) if ev.size else 0.0
    return np.where(ev > max(top, 0.0) * ev.size * np.finfo(np.float64).eps, ev, 0.0)


def farms_alpha(mats: list[np.ndarray], layer_type: str, keras: bool = False) -> float:
    """FARMS's alpha of a row's matrices (one, or a conv layer's pooled slices).

    conv2d: the reference's per-division windows of the tall slices
    (:func:`~tailscope.spectrum.conv_window_eigenvalues`), one Hill alpha per division, their
    mean. Other layers: each matrix as PyTorch stores it (``out x in``; Keras kernels are
    transposed to it) sampled by :func:`~tailscope.spectrum.window_eigenvalues`, the windows of
    all its matrices pooled (a conv1d layer's slices, which the reference does not handle).
    """
    if not mats:
        raise ValueError("no matrices")
    if layer_type == "conv2d":
        divisions = conv_window_eigenvalues(mats)
        return float(np.mean([hill_alpha(numerical_zeros(ev)) for ev in divisions]))
    pooled = np.concatenate([window_eigenvalues(m.T if keras else m) for m in mats])
    return hill_alpha(numerical_zeros(pooled))
