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


def ecs_self_consistent(evals: np.ndarray, reference_rank: int | None = None,
                        min_rank: int = 2) -> int:
    """The self-consistent effective-correlation-space (ECS) rank m_SC of an ESD.

    The definition of the SETOL authors' optimizers (CalculatedContent/rg_optimizers,
    docs/ECS_GLOSSARY.md section 4, ``self_consistent_trace_log_tracker``; participation-ratio
    bulk, gamma = 0): on the positive eigenvalues lambda_1 <= ... <= lambda_M, for each candidate
    rank m = ``min_rank`` .. M with discarded bulk B_m (the M - m smallest),

        r_bulk(m) = (sum_B lambda)^2 / sum_B lambda^2   (0 for an empty bulk),
        D(m) = clip(m + r_bulk(m), m, M),
        F(m) = (1/m) sum_{top m} ln(D(m) lambda_i / sum_j lambda_j),

    and m_SC is, among the ranks where F is zero (|F| <= 1e-12) or either side of a sign change,
    the one with the smallest |F| (ties: nearest ``reference_rank`` — the optimizers pass
    WeightWatcher's ``detX_num`` — then the larger rank); without a sign change, the smallest
    |F|. Scale-invariant. ValueError for fewer than two positive eigenvalues.

    >>> import numpy as np
    >>> x = np.exp(np.linspace(-4.0, 3.0, 128))  # the spectrum of their tests
    >>> ecs_self_consistent(x) == ecs_self_consistent(17.5 * x)
    True
    """
    ev = np.asarray(evals, dtype=np.float64).ravel()
    ev = np.sort(ev[np.isfinite(ev) & (ev > 0)])
    n = ev.size
    if n < 2:
        raise ValueError(f"{n} positive eigenvalue(s): the ECS needs at least two")
    ranks = np.arange(max(1, min(int(min_rank), n)), n + 1)
    bulk = n - ranks
    psum = np.concatenate(([0.0], np.cumsum(ev)))[bulk]
    psq = np.concatenate(([0.0], np.cumsum(ev * ev)))[bulk]
    r_bulk = np.zeros(ranks.size)
    ok = psq > 0
    r_bulk[ok] = psum[ok] ** 2 / psq[ok]
    dim = np.clip(ranks + r_bulk, ranks.astype(np.float64), float(n))
    top_logs = np.cumsum(np.log(ev[::-1]))[ranks - 1]
    F = (top_logs + ranks * np.log(dim / float(ev.sum()))) / ranks
    exact = np.flatnonzero(np.abs(F) <= 1e-12)
    brackets = np.flatnonzero(F[:-1] * F[1:] < 0.0)
    cands = np.unique(np.concatenate([exact, brackets, brackets + 1]))
    if cands.size == 0:
        return int(ranks[int(np.nanargmin(np.abs(F)))])
    dist = (np.abs(ranks[cands] - float(reference_rank)) if reference_rank is not None
            else np.zeros(cands.size))
    best = np.lexsort((-ranks[cands], dist, np.abs(F[cands])))[0]
    return int(ranks[cands[best]])


def spectrum_snr(sv: np.ndarray, n: int, m: int) -> float:
    """Spectrum's signal-to-noise ratio of a matrix (Hartford et al., arXiv 2406.06623;
    cognitivecomputations/spectrum ``spectrum.py``) from its singular values ``sv`` (any order)
    and its shape n x m: sigma = IQR(sv) / 1.349 (linear-interpolated quartiles, as
    ``torch.quantile``), tau = sigma (1 + sqrt(beta)) with beta = min(n, m) / max(n, m),
    SNR = (sum of sv > tau) / (sum of sv <= tau) / max(sv). As the reference: no value above tau
    gives signal 0, none below gives noise 1; noise 0 gives inf."""
    s = np.asarray(sv, dtype=np.float64)
    if s.size == 0 or not np.all(np.isfinite(s)):
        return math.nan
    q75, q25 = np.quantile(s, [0.75, 0.25])
    sigma = (q75 - q25) / 1.349
    beta = n / m if n < m else m / n
    tau = sigma * math.sqrt((1 + math.sqrt(beta)) ** 2)
    signal_mask = s > tau
    signal = float(s[signal_mask].sum()) if signal_mask.any() else 0.0
    noise = float(s[~signal_mask].sum()) if (~signal_mask).any() else 1.0
    smax = float(s.max())
    if noise == 0:
        return math.inf
    return signal / noise / smax if smax != 0 else math.nan
