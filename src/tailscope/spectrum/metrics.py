"""Matrix-level metrics from eigenvalues, with WeightWatcher's definitions (research §2)."""

from __future__ import annotations

import math

import numpy as np

EPSILON = 1e-10  # WeightWatcher's entropy offset (float64)


def matrix_rank(sv: np.ndarray, N: int) -> int:
    """Singular values above max(sv) * N * eps (numpy's matrix_rank rule)."""
    if sv.size == 0:
        return 0
    return int(np.count_nonzero(sv > sv.max() * N * np.finfo(np.float64).eps))


def norm_metrics(evals: np.ndarray, slices: list[np.ndarray], N: int,
                 tolerance: float = 1e-6) -> dict:
    """Metrics that do not need the power-law fit. ``evals``: the (pooled) ESD, ascending;
    ``slices``: the eigenvalues of each matrix of the layer (for rank loss and sv_min)."""
    lam_max = float(evals[-1])
    total = float(evals.sum())
    sv = np.sqrt(evals)
    rank = matrix_rank(sv, N)
    out = {
        "num_evals": int(evals.size),
        "lambda_max": lam_max,
        "spectral_norm": lam_max,
        "norm": total,
        "sv_max": float(max(math.sqrt(s[-1]) for s in slices)),
        "sv_min": float(max(math.sqrt(s[0]) for s in slices)),
        "matrix_rank": rank,
        "rank_loss": int(sum(s.size - matrix_rank(np.sqrt(s), N) for s in slices)),
        "weak_rank_loss": int(np.count_nonzero(evals < tolerance)),
    }
    if lam_max > 0:
        p = evals / total + EPSILON
        out.update({
            "log_norm": math.log10(total),
            "log_spectral_norm": math.log10(lam_max),
            "stable_rank": total / lam_max,
            "entropy": float(-np.sum(p * np.log(p)) / math.log(rank + EPSILON)),
        })
    else:
        out.update({"log_norm": math.nan, "log_spectral_norm": math.nan,
                    "stable_rank": math.nan, "entropy": math.nan})
    return out


def alpha_metrics(evals: np.ndarray, alpha: float) -> dict:
    """alpha_weighted = alpha log10(lambda_max); log_alpha_norm = log10 sum(lambda^alpha)."""
    lam_max = float(evals[-1])
    if not (math.isfinite(alpha) and lam_max > 0):
        return {"alpha_weighted": math.nan, "log_alpha_norm": math.nan}
    # sum of lambda^alpha without overflow: factor out lambda_max
    rel = np.sum((evals / lam_max) ** alpha)
    return {"alpha_weighted": alpha * math.log10(lam_max),
            "log_alpha_norm": alpha * math.log10(lam_max) + math.log10(rel)}


def detx(evals: np.ndarray) -> dict:
    """WeightWatcher's detX columns: the smallest tail of the ESD, rescaled to mean 1, whose
    eigenvalues' product (det X restricted to the tail) is still >= 1.

    Scanning idx from the top, the first idx where prod(evals[idx:]) < 1 gives
    ``detX_num`` = n - idx. ``detX_val`` is evals[idx] on the original scale and
    ``detX_val_unrescaled`` the same eigenvalue on the *rescaled* scale (WeightWatcher's names are
    inverted; kept for equality). The product is a sum of logs here, so it cannot overflow.
    When no idx qualifies WeightWatcher's loop ends at idx = 1 with detX_num = n; kept.
    """
    ev = np.asarray(evals, dtype=np.float64)
    n = ev.size
    if n == 0 or not ev.sum() > 0:
        return {"detX_num": math.nan, "detX_val": math.nan, "detX_val_unrescaled": math.nan}
    w2 = n / float(ev.sum())
    if n < 2 or not ev[0] < ev[-1]:  # WeightWatcher's (0, 0): a flat spectrum has no tail
        return {"detX_num": 0, "detX_val": float(ev[0]), "detX_val_unrescaled": float(w2 * ev[0])}
    scaled = w2 * ev
    with np.errstate(divide="ignore"):
        logs = np.log(np.maximum(scaled, 0.0))  # a rounding-negative eigenvalue is a zero
    tail_logs = np.cumsum(logs[::-1])[::-1]  # tail_logs[i] = log prod(scaled[i:])
    hits = np.nonzero(tail_logs[1:] < 0.0)[0]
    if hits.size:
        idx = int(hits[-1]) + 1
        num = n - idx
    else:
        idx, num = 1, n
    return {"detX_num": int(num), "detX_val": float(scaled[idx] / w2),
            "detX_val_unrescaled": float(scaled[idx])}
