"""Eigenvector localization (WeightWatcher's ``vectors=True`` and ``vector_metrics``).

Per eigenvector v of X = W^T W: the localization ratio ||v||_1 / ||v||_inf, the participation ratio
||v||_2 / ||v||_4 and the discrete entropy of a 100-bin histogram of |v| - mean|v|, with
WeightWatcher 0.7.5.5's formulas (``RMT_Util``), so the numbers are equal on the same vectors.
Per layer, the means and variances of these over the bulk (eigenvalue < xmin) and the tail
(eigenvalue >= xmin).

Differences from WeightWatcher: X is symmetric, so the eigenvectors come from a symmetric
eigensolver (``eigh``: real, orthonormal, several times faster) instead of the general ``eig``,
which can return complex pairs for near-degenerate eigenvalues of the rounded X. All three metrics
are invariant under the sign of v, so only vectors of repeated eigenvalues (whose basis is
arbitrary) can differ. ``vector_metrics`` fills its ``discrete_entropy`` column (WeightWatcher
writes it to a misspelt ``discete_entropy`` column and leaves ``discrete_entropy`` empty).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .esd import gram_eigh

EPSILON = 1e-10  # WeightWatcher's histogram floor (CPU precision)
NAMES = ("vec_entropy", "loc_ratio", "part_ratio")
SUMMARY_COLUMNS = tuple(f"{part}_{stat}_{name}" for name in NAMES for part in ("bulk", "tail")
                        for stat in ("mean", "var"))


def localization_ratios(vectors: np.ndarray, dtype=np.float64) -> np.ndarray:
    """||v||_1 / ||v||_inf of each column: 1 for a vector on one coordinate, n for a flat one.

    Computed in ``dtype`` (float64; None keeps the array's own dtype, as ``per_vector`` does).
    """
    v = np.abs(np.asarray(vectors, dtype=dtype))
    return v.sum(axis=0) / v.max(axis=0)


def localization_ratio(v: np.ndarray) -> float:
    """||v||_1 / ||v||_inf of one vector: near 1 on one coordinate, up to len(v) when spread.

    Through ``np.linalg.norm`` (WeightWatcher's formula): a pairwise sum, which can differ from
    ``localization_ratios``' column sums in the last bit.
    """
    return float(np.linalg.norm(v, ord=1) / np.linalg.norm(v, ord=np.inf))


def participation_ratio(v: np.ndarray) -> float:
    """||v||_2 / ||v||_4 (WeightWatcher's definition)."""
    return float(np.linalg.norm(v, ord=2) / np.linalg.norm(v, ord=4))


def vector_entropy(v: np.ndarray) -> float:
    """WeightWatcher's 'Porter-Thomas' entropy: exp(-||v||_2 / 2) / sqrt(2 pi)."""
    return float(math.exp(-np.linalg.norm(v) / 2.0) / math.sqrt(2.0 * math.pi))


def discrete_entropy(v: np.ndarray, num_bins: int = 100) -> float:
    """Entropy of the 100-bin density histogram of |v| - mean|v| (WeightWatcher's formula)."""
    a = np.absolute(v)
    a = a - np.mean(a)
    p = np.histogram(a, density=True, bins=num_bins)[0] + EPSILON
    p = p / np.sqrt(2 * np.pi)
    p = p / np.sum(p)
    return float(-np.sum(p * np.log(p)))


def _as_vectors(vectors) -> list[np.ndarray]:
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2:
        return [vectors[i] for i in range(vectors.shape[0])]
    if isinstance(vectors, np.ndarray) and vectors.ndim == 1:
        return [vectors]
    if isinstance(vectors, (list, tuple)) and all(isinstance(v, np.ndarray) and v.ndim == 1
                                                   for v in vectors):
        return list(vectors)
    raise ValueError("vectors must be a 1-D array, a list of 1-D arrays or a 2-D array whose "
                     "rows are the vectors")


def vector_metrics(vectors) -> pd.DataFrame:
    """Metrics of arbitrary vectors, one row each (WeightWatcher's ``vector_metrics``).

    Parameters
    ----------
    vectors : ndarray or list of ndarray
        One vector, a list of vectors, or a 2-D array whose rows are the vectors.

    Returns
    -------
    DataFrame
        Columns ``length, entropy, discrete_entropy, localization_ratio, participation_ratio``.
    """
    rows = []
    for v in _as_vectors(vectors):
        if v.size == 0 or not np.all(np.isfinite(v)) or not np.any(v):
            raise ValueError("every vector must be non-empty, finite and not all zero")
        rows.append({"length": v.size, "entropy": vector_entropy(v),
                     "discrete_entropy": discrete_entropy(v),
                     "localization_ratio": localization_ratio(v),
                     "participation_ratio": participation_ratio(v)})
    return pd.DataFrame(rows, columns=["length", "entropy", "discrete_entropy",
                                       "localization_ratio", "participation_ratio"])


def eigenvectors(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues ascending, eigenvectors as columns) of the Gram matrix of the smaller side
    of ``w`` (W^T W for a tall W, W W^T for a wide one), in float64 with ``eigh``: ``gram_eigh``."""
    return gram_eigh(w)


def per_vector(vecs: np.ndarray) -> dict[str, np.ndarray]:
    """vec_entropy, loc_ratio and part_ratio of every column of ``vecs``."""
    a = np.abs(vecs)
    loc = localization_ratios(vecs, dtype=None)
    part = np.sqrt((a ** 2).sum(axis=0)) / ((a ** 4).sum(axis=0)) ** 0.25
    ent = np.array([discrete_entropy(vecs[:, j]) for j in range(vecs.shape[1])])
    return {"vec_entropy": ent, "loc_ratio": loc, "part_ratio": part}


def vector_summary(evals: np.ndarray, vecs: list[np.ndarray] | np.ndarray,
                   xmin: float | None = None, n_tail: int | None = None) -> dict[str, float]:
    """WeightWatcher's per-layer columns: bulk_/tail_ mean/var of vec_entropy, loc_ratio and
    part_ratio, with the tail the eigenvectors whose eigenvalue is >= ``xmin``.

    ``evals`` are the eigenvalues of every vector (pooled over conv slices, in the order of the
    columns of the concatenated ``vecs``). Give ``n_tail`` (the fit's tail size) instead of xmin
    to split by rank: the n_tail largest eigenvalues form the tail. ``analyze`` does, because
    the eigensolver's value of the eigenvalue equal to xmin can be an ulp below the fit's xmin
    (WeightWatcher then counts that vector in the bulk). An empty side gives NaN.
    """
    vecs = np.concatenate(vecs, axis=1) if isinstance(vecs, list) else vecs
    metrics = per_vector(vecs)
    evals = np.asarray(evals, dtype=np.float64)
    if n_tail is not None:
        bulk = np.ones(evals.size, dtype=bool)
        bulk[np.argsort(evals, kind="stable")[evals.size - int(n_tail):]] = False
    elif xmin is not None:
        bulk = evals < xmin
    else:
        raise ValueError("give xmin or n_tail")
    out = {}
    for name in NAMES:
        for part, sel in (("bulk", bulk), ("tail", ~bulk)):
            vals = metrics[name][sel]
            out[f"{part}_mean_{name}"] = float(np.mean(vals)) if vals.size else math.nan
            out[f"{part}_var_{name}"] = float(np.var(vals)) if vals.size else math.nan
    return out


__all__ = ["SUMMARY_COLUMNS", "discrete_entropy", "eigenvectors", "localization_ratio",
           "localization_ratios", "participation_ratio", "per_vector", "vector_entropy", "vector_metrics",
           "vector_summary"]
