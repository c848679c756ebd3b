"""Correlation traps: the ESD of the element-shuffled weight matrix (WeightWatcher's ``randomize``).

Shuffling the entries of W destroys the correlations that training put in, leaving a random matrix
with W's entry distribution; its ESD should be a Marchenko-Pastur bulk. Spikes of the *shuffled*
ESD (``rand_num_spikes``) are correlation traps: single large entries that the shuffle cannot
spread out. As WeightWatcher 0.7.5.5: each matrix of the layer (each conv slice) is shuffled on
its own; the layer's randomized ESD pools 5 replicas when it has fewer than 100 eigenvalues, else
1; ``rand_distance``, ``ww_softrank`` and ``ww_maxdist`` compare the real ESD with one further,
fresh shuffle. Unlike WeightWatcher (``np.random.shuffle`` on the global, unseeded state), the
shuffles come from the generator passed in, so a seed makes them reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .mp import MPFitError, mp_fit

REPLICA_LIMIT = 100  # fewer eigenvalues than this: 5 replicas (WeightWatcher's)


def shuffle_elements(w: np.ndarray, rng) -> np.ndarray:
    """A copy of ``w`` with its entries randomly permuted (row-major order, as WeightWatcher).

    ``rng`` is a ``numpy.random.Generator`` (or a legacy ``RandomState``: with
    ``RandomState(s)`` the permutation equals ``np.random.seed(s); np.random.shuffle(flat)``).
    """
    w = np.asarray(w)
    return rng.permutation(w.ravel()).reshape(w.shape)


def jensen_shannon_distance(p: np.ndarray, q: np.ndarray) -> float:
    """WeightWatcher's ``rand_distance``: the Jensen-Shannon distance between two equal-length
    non-negative vectors, each normalised to sum 1 (``scipy.stats.entropy`` convention).

    WeightWatcher passes the two *sorted eigenvalue vectors*, so this compares them entry by
    entry (quantile against quantile), not as histograms.

    Exactly 0 where the two vectors coincide to round-off (each normalised entry within
    ``L * 8 eps`` of the other, relative to the largest): the divergence of two vectors that
    differ only by rounding is a difference of nearly equal logarithms, and its square root is
    rounding noise of order 1e-9, or NaN when the difference comes out negative (WeightWatcher
    reports that NaN). A divergence below zero from rounding is 0, never NaN.

    >>> jensen_shannon_distance([1.0, 2.0, 3.0], [1.0, 2.0, 3.0 + 1e-15])
    0.0
    """
    from scipy.stats import entropy

    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape == q.shape and p.size:
        pn, qn = p / p.sum(), q / q.sum()
        if np.max(np.abs(pn - qn)) <= p.size * 8 * np.finfo(np.float64).eps * max(
                float(np.max(np.abs(pn))), float(np.max(np.abs(qn)))):
            return 0.0
    m = (p + q) / 2
    return float(np.sqrt(max((entropy(p, m) + entropy(q, m)) / 2, 0.0)))


@dataclass(frozen=True)
class RandomizedESD:
    """The randomized-ESD metrics of one layer (WeightWatcher's ``randomize=True`` columns).

    ``evals`` is the pooled randomized ESD (all replicas) on which the MP fit was run;
    ``fresh`` the single further shuffle's ESD that the distances compare with the real one.
    ``mp`` is the MP fit of ``evals`` (None with ``mp_reason`` when it does not exist).
    """

    evals: np.ndarray
    fresh: np.ndarray
    replicas: int
    max_rand_eval: float
    rand_distance: float
    ww_softrank: float
    ww_maxdist: float
    mp: object | None
    mp_reason: str = ""

    def as_row(self) -> dict:
        row = {"max_rand_eval": self.max_rand_eval, "rand_distance": self.rand_distance,
               "ww_softrank": self.ww_softrank, "ww_maxdist": self.ww_maxdist}
        if self.mp is not None:
            row.update(self.mp.as_row("rand_"))
        else:
            row.update({f"rand_{k}": math.nan for k in ("num_spikes", "sigma_mp", "mp_softrank",
                                                         "W_scale", "bulk_max", "bulk_min")})
        return row


def randomized_esd(mats: Sequence[np.ndarray], evals: np.ndarray, N: int, M: int, rng, *,
                   eigvals: Callable[[np.ndarray], np.ndarray], scale: float = 1.0
                   ) -> RandomizedESD:
    """Shuffle each matrix of a layer and measure how far the real ESD is from the random one.

    Parameters
    ----------
    mats : sequence of 2-D arrays
        The layer's matrices (conv slices), unscaled.
    evals : array
        The layer's real (pooled, scaled) ESD, ascending.
    N, M : int
        One matrix's sizes (N >= M), for the MP fit.
    rng : numpy.random.Generator
        The source of the permutations (drawn in order: replicas x matrices, then one more
        shuffle of every matrix for the distances).
    eigvals : callable
        A matrix -> its ascending eigenvalues of W^T W.
    scale : float
        The factor applied to the real ESD (conv2d_norm, normalize), applied here too.

    Returns
    -------
    RandomizedESD
    """
    evals = np.asarray(evals, dtype=np.float64)
    replicas = 5 if evals.size < REPLICA_LIMIT else 1

    def one_shuffle() -> np.ndarray:
        return np.concatenate([eigvals(shuffle_elements(w, rng)) * scale for w in mats])

    rand = np.sort(np.concatenate([one_shuffle() for _ in range(replicas)]))
    fresh = np.sort(one_shuffle())
    if M == 1 and fresh.size == evals.size:
        # N x 1 matrices (depthwise conv slices): a matrix's one eigenvalue is its squared norm,
        # which a shuffle keeps; the shuffled ESD is the real one (not its rounding)
        fresh = evals.copy()
    lam_max = float(evals.max())
    try:
        fit, reason = mp_fit(rand, N, M), ""
    except MPFitError as exc:
        fit, reason = None, str(exc)
    return RandomizedESD(
        evals=rand, fresh=fresh, replicas=replicas, max_rand_eval=float(rand.max()),
        rand_distance=jensen_shannon_distance(evals, fresh) if fresh.size == evals.size
        else math.nan,
        ww_softrank=float(fresh.max()) / lam_max, ww_maxdist=lam_max - float(fresh.max()),
        mp=fit, mp_reason=reason)
