"""Rank selection: the latent dimension K of a data matrix from where its power-law tail begins.

Take the eigenvalues of X^T X (the squared singular values of X, e.g. a TF-IDF term-document
matrix), fit a power law with the Kolmogorov-Smirnov choice of xmin, and keep the K eigenpairs at
or above xmin: the strongly correlated part. ``select_rank`` also reports the usual alternatives
(explained-variance elbows, the localization-ratio elbow, the Marchenko-Pastur edge, Gavish-Donoho)
and ``PowerLawSVD`` is a scikit-learn transformer whose ``n_components_`` is this K.

This module holds the rules; the decompositions they run on live in ``spectrum.esd``, the
Marchenko-Pastur law in ``spectrum.mp`` and the localization ratio in ``spectrum.vectors``.
scikit-learn (the ``rank`` extra) is needed only by ``PowerLawSVD``, ``tfidf`` and the
20newsgroups corpus.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..fit import PowerLawFit, fit_power_law
from ..spectrum.esd import REL_THRESH, all_eigenpairs, all_eigenvalues, top_right_vectors, top_singular_values
from ..spectrum.metrics import detx
from ..spectrum.mp import mp_gram_edges, mp_median
from ..spectrum.vectors import localization_ratios  # public here too: tailscope.rank.localization_ratios
from ..util.optional import require

_START_K = 64


def _as_matrix(X):
    """Validate X (dense or scipy sparse, 2-D, finite, at least 2 x 2) -> float64 array/CSR."""
    import scipy.sparse as sp

    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64)
        values = X.data
    else:
        try:
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"X must be a numeric matrix: {exc}") from None
        values = X
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (samples x features); got shape {X.shape}")
    if min(X.shape) < 2:
        raise ValueError(f"X must have at least 2 samples and 2 features; got shape {X.shape}")
    if not np.isfinite(values).all():
        raise ValueError("X contains NaN or infinite values")
    return X


def _positive(ev_desc: np.ndarray) -> np.ndarray:
    top = ev_desc[0] if ev_desc.size else 0.0
    return ev_desc[ev_desc > REL_THRESH * top] if top > 0 else ev_desc[:0]


def knee(y: np.ndarray) -> int:
    """Index (1-based count) of the elbow of a curve: the point farthest from the chord between its
    ends, after normalising both axes to [0, 1] (the Kneedle rule). Works for either direction."""
    y = np.asarray(y, dtype=np.float64)
    n = y.size
    if n < 3:
        return n
    x = np.linspace(0.0, 1.0, n)
    span = y.max() - y.min()
    if span == 0:
        return 1
    yn = (y - y.min()) / span
    chord = yn[0] + (yn[-1] - yn[0]) * x
    return int(np.argmax(np.abs(yn - chord))) + 1


def gavish_donoho_rank(sv_desc: np.ndarray, shape: tuple[int, int]) -> int:
    """Gavish & Donoho (2014) optimal hard threshold with unknown noise:
    tau = omega(beta) * median(sigma), omega(beta) ~ 0.56 b^3 - 0.95 b^2 + 1.82 b + 1.43."""
    beta = min(shape) / max(shape)
    omega = 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
    tau = omega * float(np.median(sv_desc))
    return int(np.count_nonzero(sv_desc > tau))


def mp_edge_rank(ev_desc: np.ndarray, shape: tuple[int, int]) -> tuple[int, float]:
    """Eigenvalues above the Marchenko-Pastur bulk edge sigma^2 (sqrt(n) + sqrt(p))^2, with the
    noise level sigma^2 estimated from the median eigenvalue (robust to the signal spikes)."""
    n, p = max(shape), min(shape)
    beta = p / n
    sigma2 = float(np.median(ev_desc)) / (n * mp_median(beta))
    edge = mp_gram_edges(n, p, sigma2)[1]
    return int(np.count_nonzero(ev_desc > edge)), edge


@dataclass(frozen=True, repr=False, eq=False)
class RankSelection:
    """K from the power-law tail, and the alternatives side by side.

    ``eigenvalues``: the eigenvalues of X^T X that were computed (all of them when ``exact``,
    else the top ones), descending, numerical zeros dropped. ``fit``: the power law fitted to them.
    ``k``: eigenvalues >= fit.xmin. ``alternatives``: K of each other rule (None when it needs the
    full spectrum and only the top was computed).
    """

    k: int
    fit: PowerLawFit
    eigenvalues: np.ndarray
    exact: bool
    shape: tuple[int, int]
    total_variance: float
    alternatives: dict
    notes: dict = field(default_factory=dict)
    localization: np.ndarray | None = None

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        """Each eigenvalue's share of the total variance."""
        return self.eigenvalues / self.total_variance

    def table(self) -> pd.DataFrame:
        """K by every rule (the power-law tail, the elbows, Marchenko-Pastur, Gavish-Donoho),
        one row each with a note."""
        rows = [{"method": "power-law tail (KS xmin)", "k": self.k,
                 "note": f"alpha={self.fit.alpha:.3f}, xmin={self.fit.xmin:.4g}, "
                         f"D={self.fit.D:.4f}" if self.fit.ok else self.fit.reason}]
        for name, value in self.alternatives.items():
            rows.append({"method": name, "k": value, "note": self.notes.get(name, "")})
        return pd.DataFrame(rows, columns=["method", "k", "note"])

    def __repr__(self) -> str:
        alt = ", ".join(f"{k}={v}" for k, v in self.alternatives.items())
        return (f"RankSelection(k={self.k}, alpha={self.fit.alpha:.4g}, xmin={self.fit.xmin:.4g}, "
                f"D={self.fit.D:.4g}, exact={self.exact}, shape={self.shape}; {alt})")

    def _repr_html_(self) -> str:
        """In a notebook: K and how it was found, and every rule's K side by side."""
        how = ("all eigenvalues" if self.exact else f"the top {self.eigenvalues.size} "
               "eigenvalues")
        head = (f"<p><b>RankSelection</b>: <b>K = {self.k}</b> of a {self.shape[0]} x "
                f"{self.shape[1]} matrix, from the power-law tail of {how} of X<sup>T</sup>X.</p>")
        return head + self.table().to_html(index=False, escape=True, na_rep="", border=0)


def select_rank(X, *, exact: bool | None = None, max_components: int | None = None,
                vectors: bool = True, random_state=0) -> RankSelection:
    """Choose the rank K of X (samples x features, dense or scipy sparse) from the power-law tail
    of its eigenvalues, and compare it with elbow rules.

    Parameters
    ----------
    X : array-like or scipy sparse matrix, shape (n_samples, n_features)
    exact : bool or None
        True: every eigenvalue, from the Gram matrix of the smaller side (O(min(n,p)^3)).
        False: the adaptive mode (below). None (default): exact when min(n, p) <= 12000
        (a dense Gram of at most 1.1 GB), adaptive above.
    max_components : int, optional
        Cap on K (and on the eigenvalues the adaptive mode computes).
    vectors : bool
        Also compute the localization ratio of the leading right singular vectors (needs them).
    random_state : int
        Start vector of the sparse eigensolver (reproducible results).

    Returns
    -------
    RankSelection

    Notes
    -----
    The adaptive mode computes the largest k singular values (ARPACK), k = 64, 128, 256, ... For a
    candidate xmin, alpha and the KS distance depend only on the eigenvalues >= xmin, so the fit
    over the candidates inside the computed top k is *exactly* the full fit restricted to those
    candidates (the smallest computed value is not a candidate: a tie could continue below it). It
    stops when the chosen tail holds at most half of the computed eigenvalues and doubling k left K
    unchanged. Guarantee: K, xmin, alpha and D equal the exact mode's whenever the exact KS minimum
    lies in the computed top k; a deeper global minimum, below half the spectrum computed last,
    would be missed. Once k would pass min(n, p) / 32 the dense exact route is cheaper (measured:
    ARPACK for 256 of 3,824 values takes longer than all 3,824 by eigvalsh) and is taken
    (``RankSelection.exact`` then says True). The rules that need the whole spectrum
    (Marchenko-Pastur, Gavish-Donoho) give None in the adaptive mode.
    """
    if random_state is not None and (isinstance(random_state, bool) or not isinstance(
            random_state, (int, np.integer)) or random_state < 0):
        raise ValueError(f"random_state must be None or a whole number >= 0; got {random_state!r}")
    X = _as_matrix(X)
    n, p = X.shape
    r = min(n, p)
    if exact is None:
        exact = r <= 12000
    total = _total_variance(X)
    if not total > 0:  # every eigenvalue is 0 (or the entries are not finite): nothing to fit
        what = "all zeros" if total == 0 else "not finite"
        raise ValueError(f"the {n} x {p} matrix is {what}: no spectrum, no rank to choose")
    notes: dict = {}
    vecs = None
    if exact or r <= _START_K + 1:
        if vectors:
            ev_all, vecs = all_eigenpairs(X)  # vecs(m): the top m right singular vectors
        else:
            ev_all = all_eigenvalues(X)
        ev = _positive(ev_all)
        fit = _fit_desc(ev)
        exact = True
    else:
        ev, fit, exact = _adaptive(X, r, max_components, random_state)
    k = fit.n_tail if fit.ok else 0
    if max_components is not None:
        k = min(k, int(max_components))
    alternatives: dict = {}
    evr = ev / total
    alternatives["explained variance elbow"] = knee(evr)
    alternatives["cumulative variance elbow"] = knee(np.cumsum(evr))
    notes["explained variance elbow"] = f"knee of the per-component curve over {ev.size} values"
    notes["cumulative variance elbow"] = f"knee of the cumulative curve over {ev.size} values"
    loc = None
    if vectors:
        m = int(min(r - 1, max(2 * max(k, 1), 50), ev.size))
        if m >= 3:
            top = vecs(m) if vecs is not None else top_right_vectors(X, m, random_state)
            loc = localization_ratios(top)
            alternatives["localization ratio elbow"] = knee(_smooth(loc))
            notes["localization ratio elbow"] = f"||v||_1/||v||_inf of the top {m} vectors"
    if exact:
        mp_k, edge = mp_edge_rank(ev, (n, p))
        alternatives["Marchenko-Pastur edge"] = mp_k
        notes["Marchenko-Pastur edge"] = f"lambda+ = {edge:.4g} (noise from the median)"
        alternatives["Gavish-Donoho threshold"] = gavish_donoho_rank(np.sqrt(ev), (n, p))
        notes["Gavish-Donoho threshold"] = "omega(beta) * median singular value"
        alternatives.update(setol_ranks(ev, fit.n_tail if fit.ok else None))
        notes["detX-K"] = "the det X = 1 tail (WeightWatcher's detX_num, SETOL's TraceLog)"
        notes["ECS-K"] = "floor((power-law K + detX-K) / 2), the SETOL optimizers' midpoint"
    else:
        for name in ("Marchenko-Pastur edge", "Gavish-Donoho threshold", "detX-K", "ECS-K"):
            alternatives[name] = None
            notes[name] = "needs the full spectrum (exact=True)"
    return RankSelection(k=k, fit=fit, eigenvalues=ev, exact=bool(exact), shape=(n, p),
                         total_variance=total, alternatives=alternatives, notes=notes,
                         localization=loc)


def setol_ranks(ev_desc: np.ndarray, k_pl: int | None) -> dict:
    """SETOL's ranks of a full spectrum (descending, positive): ``detX-K``, the size of the
    det X = 1 tail (:func:`tailscope.spectrum.metrics.detx`, WeightWatcher's ``detX_num``), and
    ``ECS-K`` = floor((k_pl + detX-K) / 2), the effective-correlation-space midpoint of the SETOL
    authors' optimizers (None without a power-law K)."""
    num = detx(np.asarray(ev_desc, dtype=np.float64)[::-1])["detX_num"]
    d = int(num) if num == num else None
    ecs = (int(k_pl) + d) // 2 if d is not None and k_pl is not None else None
    return {"detX-K": d, "ECS-K": ecs}


def _total_variance(X) -> float:
    """trace(X^T X) = ||X||_F^2, the sum of all eigenvalues (known without computing them)."""
    import scipy.sparse as sp

    data = X.data if sp.issparse(X) else X
    return float(np.sum(np.square(data)))


def _fit_desc(ev_desc: np.ndarray, xmin=None) -> PowerLawFit:
    if ev_desc.size == 0:
        return fit_power_law([1.0], xmin=xmin)  # a failed fit with its reason, no made-up alpha
    return fit_power_law(ev_desc[::-1], xmin=xmin)


def _adaptive(X, r: int, max_components, random_state):
    k = min(_START_K, r - 1)
    cap = r - 1 if max_components is None else min(r - 1, max(int(max_components) * 4, k))
    previous = None
    while True:
        if k > r // 32:  # past this, one dense eigvalsh costs less than more Lanczos blocks
            ev = _positive(all_eigenvalues(X))
            return ev, _fit_desc(ev), True
        ev = _positive(top_singular_values(X, k, random_state) ** 2)
        uniq = np.unique(ev)
        # the smallest computed value is no candidate: its tail may continue below it
        fit = _fit_desc(ev, xmin=(float(uniq[1]), float(uniq[-1]))) if uniq.size > 2 \
            else _fit_desc(ev)
        K = fit.n_tail if fit.ok else None
        settled = K is not None and K <= ev.size // 2 and K == previous
        if settled or k >= cap:
            return ev, fit, False
        previous = K
        k = min(2 * k, cap)


def _smooth(y: np.ndarray, width: int = 5) -> np.ndarray:
    if y.size < 2 * width:
        return y
    kernel = np.ones(width) / width
    return np.convolve(y, kernel, mode="valid")


def _power_law_svd_class():
    """PowerLawSVD is built on scikit-learn's base classes, imported only when it is used."""
    base = require("sklearn.base", "PowerLawSVD")
    BaseEstimator, TransformerMixin = base.BaseEstimator, base.TransformerMixin
    ClassNamePrefixFeaturesOutMixin = base.ClassNamePrefixFeaturesOutMixin
    extmath = require("sklearn.utils.extmath", "PowerLawSVD")
    randomized_svd, svd_flip = extmath.randomized_svd, extmath.svd_flip
    validation = require("sklearn.utils.validation", "PowerLawSVD")
    check_is_fitted, validate_data = validation.check_is_fitted, validation.validate_data
    check_random_state = require("sklearn.utils", "PowerLawSVD").check_random_state

    class PowerLawSVD(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
        """Truncated SVD (LSA) whose number of components is chosen by the power-law rule.

        Like :class:`sklearn.decomposition.TruncatedSVD`, but ``n_components_`` is K from
        :func:`select_rank`: the number of eigenvalues of X^T X in the power-law tail.

        Parameters
        ----------
        max_components : int or None, default=None
            Upper bound on the number of components.
        algorithm : {'randomized', 'arpack', 'exact'}, default='randomized'
            How the K components are computed once K is known ('exact': a dense SVD).
        n_iter : int, default=5
            Power iterations of the randomized algorithm.
        exact : bool or None, default=None
            Passed to :func:`select_rank` (None: exact eigenvalues when min(n, p) <= 12000).
        random_state : int, RandomState instance or None, default=None

        Attributes
        ----------
        components_ : ndarray of shape (K, n_features)
        singular_values_ : ndarray of shape (K,)
        explained_variance_ : ndarray of shape (K,)
        explained_variance_ratio_ : ndarray of shape (K,)
        n_components_ : int
            K, or 1 when no power law can be fitted (fewer than two distinct non-zero eigenvalues,
            e.g. a rank-1 or constant matrix): a degenerate input keeps its leading direction.
        fit_ : PowerLawFit
            The fit of the eigenvalues (``fit_.status == 'failed'`` in the fallback case).
        selection_ : RankSelection
        n_features_in_ : int
        feature_names_in_ : ndarray of shape (n_features,)
            Defined only when X has feature names that are all strings.

        Examples
        --------
        >>> import numpy as np
        >>> from tailscope import PowerLawSVD
        >>> rng = np.random.default_rng(0)
        >>> X = rng.standard_t(2.5, size=(300, 80))
        >>> svd = PowerLawSVD(random_state=0).fit(X)
        >>> svd.n_components_ == svd.selection_.k
        True
        """

        def __init__(self, max_components=None, algorithm="randomized", n_iter=5, exact=None,
                     random_state=None):
            self.max_components = max_components
            self.algorithm = algorithm
            self.n_iter = n_iter
            self.exact = exact
            self.random_state = random_state

        def fit(self, X, y=None):
            """Choose K and compute the K components of X; returns self."""
            self.fit_transform(X)
            return self

        def fit_transform(self, X, y=None):
            """Fit, then return X projected on its K components (n_samples x K)."""
            X = validate_data(self, X, accept_sparse=["csr", "csc"], dtype=[np.float64],
                              ensure_min_samples=2, ensure_min_features=2)
            if self.algorithm not in ("randomized", "arpack", "exact"):
                raise ValueError(f"algorithm must be 'randomized', 'arpack' or 'exact'; "
                                 f"got {self.algorithm!r}")
            if self.max_components is not None and int(self.max_components) < 1:
                raise ValueError(f"max_components must be >= 1; got {self.max_components!r}")
            seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
            sel = select_rank(X, exact=self.exact, max_components=self.max_components,
                              vectors=False, random_state=seed)
            k = sel.k if sel.fit.ok and sel.k >= 1 else 1
            r = min(X.shape)
            k = min(k, r)
            import scipy.sparse as sp

            if self.algorithm == "exact" or k >= r - 1 or r <= 500:
                dense = X.toarray() if sp.issparse(X) else X
                u, s, vt = np.linalg.svd(dense, full_matrices=False)
                u, s, vt = u[:, :k], s[:k], vt[:k]
            elif self.algorithm == "arpack":
                from scipy.sparse.linalg import svds

                v0 = np.random.default_rng(seed).uniform(-1, 1, r)
                u, s, vt = svds(X, k=k, v0=v0, solver="arpack")
                order = np.argsort(s)[::-1]
                u, s, vt = u[:, order], s[order], vt[order]
            else:
                u, s, vt = randomized_svd(X, k, n_iter=self.n_iter, random_state=seed)
            u, vt = svd_flip(u, vt, u_based_decision=False)
            Xt = u * s
            self.components_ = vt
            self.singular_values_ = s
            self.explained_variance_ = np.var(Xt, axis=0)
            if sp.issparse(X):
                _, full_var = _sparse_mean_var(X)
            else:
                full_var = np.var(X, axis=0).sum()
            self.explained_variance_ratio_ = (self.explained_variance_ / full_var
                                              if full_var > 0 else
                                              np.zeros_like(self.explained_variance_))
            self.n_components_ = int(k)
            self._n_features_out = int(k)
            self.fit_ = sel.fit
            self.selection_ = sel
            return Xt

        def transform(self, X):
            """X projected on the fitted components (n_samples x K)."""
            check_is_fitted(self)
            X = validate_data(self, X, accept_sparse=["csr", "csc"], dtype=[np.float64],
                              reset=False)
            return np.asarray(X @ self.components_.T)

        def inverse_transform(self, X):
            """Map projected data back to the original space (``X @ components_``)."""
            check_is_fitted(self)
            return np.asarray(X) @ self.components_

        def __sklearn_tags__(self):
            tags = super().__sklearn_tags__()
            tags.input_tags.sparse = True
            return tags

    return PowerLawSVD


def _sparse_mean_var(X):
    sparsefuncs = require("sklearn.utils.sparsefuncs", "PowerLawSVD on a sparse matrix")
    mean, var = sparsefuncs.mean_variance_axis(X, axis=0)
    return mean, float(var.sum())


def __getattr__(name):
    if name == "PowerLawSVD":
        cls = _power_law_svd_class()
        cls.__module__, cls.__qualname__ = __name__, "PowerLawSVD"  # picklable by name
        globals()["PowerLawSVD"] = cls
        return cls
    raise AttributeError(name)
