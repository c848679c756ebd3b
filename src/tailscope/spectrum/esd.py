"""One matrix -> its eigenvalues (the ESD of X = W^T W). Knows matrices, not files.

The default path forms the Gram matrix of the smaller side in float64, accumulated from row (or
column) chunks so a large float16/float32 W is never copied whole to float64, and hands it to a
symmetric eigensolver: several times faster than a full SVD and equal to it to ~1e-13 relative
for the eigenvalues the fit uses. A matrix whose smallest eigenvalue is below 1e-10 of its largest
(rank-deficient, where the Gram's rounding would blur the small singular values) is redone by
SVD, so ranks and small eigenvalues stay exact. ``method='svd'`` always uses the SVD.

Backends: numpy (CPU, batched eigvalsh over same-shape matrices) and torch (any device, imported
only when asked for).

The home of every matrix decomposition: besides the ESD of weight matrices, the eigenpairs of a
Gram matrix (``gram_eigh``) and the decompositions rank selection runs on data matrices, dense or
scipy sparse (``gram_smaller_side``, ``sparse_gram``, ``all_eigenvalues``, ``all_eigenpairs``,
``top_singular_values``, ``top_right_vectors``).
"""

from __future__ import annotations

import importlib.util
import math
import os

import numpy as np

from ..util.optional import require

CHUNK_BYTES = 64 * 1024 * 1024
REL_THRESH = 1e-10  # eigenvalues below this fraction of the largest are numerical zeros
_REDO_BELOW = 1e-10
_DENSE_BYTES = 2 * 1024**3  # a sparse matrix whose dense copy would be larger keeps sparse products


def gram(w: np.ndarray, chunk_bytes: int = CHUNK_BYTES) -> np.ndarray:
    """W^T W (or W W^T for a wide W): the smaller side, in float64, from chunks of W.

    BLAS syrk fills one triangle (half the flops of a general product); it is mirrored at the end.
    """
    from scipy.linalg.blas import dsyrk

    rows, cols = w.shape
    wide = rows < cols
    m = rows if wide else cols
    step = max(1, chunk_bytes // (8 * max(m, 1)))
    g = np.zeros((m, m), dtype=np.float64, order="F")
    length = cols if wide else rows
    for start in range(0, length, step):
        block = np.asarray(w[:, start:start + step] if wide else w[start:start + step],
                           dtype=np.float64)
        # block.T is Fortran-ordered, so BLAS reads it without a copy:
        # tall: (B^T)(B^T)^T = B^T B; wide: (B^T)^T (B^T) = B B^T
        g = dsyrk(1.0, block.T, beta=1.0, c=g, trans=1 if wide else 0, lower=0,
                  overwrite_c=True)
    return _mirror_upper(g)


def _mirror_upper(g: np.ndarray, block: int = 512) -> np.ndarray:
    """Copy the upper triangle onto the lower one in place, a column block at a time: no M x M
    temporaries, so a Gram matrix costs its own size and no more (the lower triangle is exactly
    zero after syrk with lower=0, so this equals upper + triu(upper, 1).T bit for bit)."""
    m = g.shape[0]
    for j in range(0, m, block):
        k = min(j + block, m)
        g[k:, j:k] = g[j:k, k:].T
        tile = g[j:k, j:k]
        tile[np.tril_indices(k - j, -1)] = tile.T[np.tril_indices(k - j, -1)]
    return g


def svd_eigenvalues(w: np.ndarray) -> np.ndarray:
    from scipy.linalg import svd

    w = np.asarray(w, dtype=np.float64)
    if not np.isfinite(w).all():
        raise ValueError("the weights hold NaN or Inf entries")
    sv = svd(w, compute_uv=False, check_finite=False)
    return np.sort(sv * sv)


class NumpyBackend:
    name = "numpy"

    def eigvalsh(self, grams: np.ndarray) -> np.ndarray:
        """Ascending eigenvalues of a stack of symmetric matrices (B, M, M)."""
        return np.linalg.eigvalsh(grams)

    def gram(self, w: np.ndarray) -> np.ndarray:
        return gram(w)


class TorchBackend:
    """The same computation through torch, on ``device`` ('cuda', 'cuda:1', 'cpu'), in float64."""

    def __init__(self, device: str):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.name = f"torch:{self.device}"

    def gram(self, w: np.ndarray) -> np.ndarray:
        torch = self.torch
        rows, cols = w.shape
        wide = rows < cols
        m = rows if wide else cols
        step = max(1, CHUNK_BYTES // (8 * max(m, 1)))
        g = torch.zeros((m, m), dtype=torch.float64, device=self.device)
        length = cols if wide else rows
        for start in range(0, length, step):
            part = np.require(w[:, start:start + step] if wide else w[start:start + step],
                              requirements=["C", "W"])  # torch wants writable memory
            block = torch.from_numpy(part).to(self.device).to(torch.float64)
            g += block @ block.T if wide else block.T @ block
        return g

    def eigvalsh(self, grams) -> np.ndarray:
        torch = self.torch
        if isinstance(grams, np.ndarray):
            grams = torch.from_numpy(grams).to(self.device)
        return torch.linalg.eigvalsh(grams).cpu().numpy()


def get_backend(device: str | None = "auto"):
    """'auto' (CUDA through torch when available, else numpy), 'cpu'/'numpy', or a torch device
    ('cuda', 'cuda:1', 'torch:cpu' for the torch code path on the CPU)."""
    device = device or "auto"
    if device in ("cpu", "numpy"):
        return NumpyBackend()
    if device == "auto":
        # importing torch costs ~0.5 GB of RSS: only look when an NVIDIA device is present
        if not (os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia/version")):
            return NumpyBackend()
        if importlib.util.find_spec("torch") is None:
            return NumpyBackend()
        import torch

        return TorchBackend("cuda") if torch.cuda.is_available() else NumpyBackend()
    if device.startswith("torch:"):
        device = device.split(":", 1)[1]
    torch = require("torch", f"device={device!r}", error=ValueError)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available here")
    try:
        return TorchBackend(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from None


def _check_magnitude(w, overflowed: bool = False) -> None:
    """ValueError with the true reason when W's Gram matrix leaves float64 although W is finite
    and not all zero (a W of 1e200 is not 'NaN or Inf', one of 1e-170 is not 'all-zero').
    ``overflowed``: W's Gram matrix is known to hold NaN or Inf."""
    big = float(abs(w).max()) if np.prod(w.shape) else 0.0
    if not math.isfinite(big):
        raise ValueError("the weights hold NaN or Inf entries")
    if overflowed:
        raise ValueError(f"the weights are too large for float64 eigenvalues (largest |w| = "
                         f"{big:.3g}: W^T W overflows)")
    if big > 0 and big * big == 0.0:
        raise ValueError(f"the weights are too small for float64 eigenvalues (largest |w| = "
                         f"{big:.3g}: its square underflows to 0)")


def eigenvalues_many(mats: list[np.ndarray], backend=None, method: str = "gram") -> list[np.ndarray]:
    """Ascending eigenvalues of W^T W (min(N, M) of them) for each matrix; same shapes batched.

    Raises ValueError when a matrix holds NaN or Inf.
    """
    backend = backend or NumpyBackend()
    if method == "svd":
        return [svd_eigenvalues(w) for w in mats]
    if method != "gram":
        raise ValueError(f"method must be 'gram' or 'svd'; got {method!r}")
    out: list[np.ndarray | None] = [None] * len(mats)
    groups: dict[tuple, list[int]] = {}
    for i, w in enumerate(mats):
        groups.setdefault(tuple(sorted(w.shape)), []).append(i)
    for idx in groups.values():
        grams = [backend.gram(mats[i]) for i in idx]
        if isinstance(grams[0], np.ndarray):
            # one matrix: a view, not a copy of an M x M Gram matrix
            stacked = grams[0][None] if len(grams) == 1 else np.stack(grams)
            finite = bool(np.isfinite(stacked).all())
        else:
            stacked = backend.torch.stack(grams)
            finite = bool(backend.torch.isfinite(stacked).all())
        if not finite:  # a NaN or Inf anywhere in W reaches its Gram matrix; or W is huge
            for i in idx:  # NaN or Inf in a W: say so; else its Gram matrix overflowed
                _check_magnitude(mats[i])
            _check_magnitude(mats[idx[0]], overflowed=True)
        vals = np.asarray(backend.eigvalsh(stacked), dtype=np.float64)
        for j, i in enumerate(idx):
            ev = np.maximum(vals[j], 0.0)  # rounding can leave tiny negative values
            top = ev[-1] if ev.size else 0.0
            if ev.size and not top > 0:  # all zero, or so small that the squares underflow
                _check_magnitude(mats[i])
            if ev.size and top > 0 and ev[0] < _REDO_BELOW * top:
                ev = svd_eigenvalues(mats[i])
            out[i] = ev
    return out  # type: ignore[return-value]


def eigenvalues(w: np.ndarray, method: str = "gram") -> np.ndarray:
    """Ascending eigenvalues of X = W^T W for one matrix."""
    return eigenvalues_many([w], method=method)[0]


def lowrank_eigenvalues(b: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of (BA)^T (BA) that can be nonzero (r of them) for B (n, r), A (r, m),
    without forming BA: with B = Q_B R_B and A^T = Q_A R_A, BA = Q_B (R_B R_A^T) Q_A^T, so its
    singular values are those of the r x r core R_B R_A^T.
    """
    b = np.asarray(b, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    if b.ndim != 2 or a.ndim != 2 or b.shape[1] != a.shape[0]:
        raise ValueError(f"factors of shapes {b.shape} and {a.shape} do not multiply")
    if not (np.isfinite(b).all() and np.isfinite(a).all()):
        raise ValueError("the weights hold NaN or Inf entries")
    r_b = np.linalg.qr(b, mode="r")
    r_a = np.linalg.qr(a.T, mode="r")
    sv = svd_eigenvalues(r_b @ r_a.T)
    k = min(b.shape[0], a.shape[1], b.shape[1])
    return sv[sv.size - k:]


def gram_eigh(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues ascending, eigenvectors as columns) of the float64 Gram matrix of the smaller
    side of ``w`` (W^T W for a tall W, W W^T for a wide one): ``np.linalg.eigh(gram(w))``.

    Raises ValueError when ``w`` holds NaN or Inf.
    """
    w = np.asarray(w)
    if not np.all(np.isfinite(w)):
        raise ValueError("the weights hold NaN or Inf entries")
    return np.linalg.eigh(gram(w))


# --- data matrices (dense or scipy sparse, float64): the decompositions of rank selection -------
def gram_smaller_side(X) -> tuple[np.ndarray, bool]:
    """(the Gram matrix of the smaller side of X as a dense float64 array, whether it is X X^T).

    X is a float64 array or scipy sparse matrix. A sparse X stays sparse (``sparse_gram``) when
    under 10% of it is filled or its dense copy would pass 2 GiB; otherwise it is densified and
    BLAS (``gram``) does the product.
    """
    import scipy.sparse as sp

    samples_side = X.shape[0] <= X.shape[1]
    n, p = X.shape
    if sp.issparse(X) and (X.nnz < 0.1 * n * p or n * p * 8 > _DENSE_BYTES):
        return sparse_gram(X if samples_side else X.T.tocsr()), samples_side
    dense = X.toarray() if sp.issparse(X) else X  # dense-ish: BLAS beats a sparse product
    return gram(dense), samples_side


def sparse_gram(A, rows: int = 1024) -> np.ndarray:
    """A A^T (A sparse CSR, n x p) as a dense array, one block of rows at a time on all cores:
    each block's sparse product stays small (2.4x faster than one whole product on NewsArticles,
    measured) and the sparse kernels release the GIL. Each entry is the same sum in the same order
    as in the whole product, so the result is identical."""
    from concurrent.futures import ThreadPoolExecutor

    n = A.shape[0]
    at = A.T.tocsr()
    g = np.empty((n, n))

    def fill(start: int) -> None:
        g[start:start + rows] = (A[start:start + rows] @ at).toarray()

    starts = range(0, n, rows)
    with ThreadPoolExecutor(max(1, min(len(starts), os.cpu_count() or 1))) as pool:
        list(pool.map(fill, starts))
    return g


def all_eigenvalues(X) -> np.ndarray:
    """Every eigenvalue of X^T X (min(n, p) of them), descending and clipped at 0, from the Gram
    matrix of the smaller side (X dense or scipy sparse)."""
    g, _ = gram_smaller_side(X)
    from scipy.linalg import eigh

    # LAPACK's syevr (MRRR): ~15% faster than numpy's syevd here, the same values to rounding
    ev = eigh(g, eigvals_only=True, driver="evr", overwrite_a=True, check_finite=False)
    return np.maximum(ev, 0.0)[::-1]


def all_eigenpairs(X):
    """Every eigenvalue of X^T X (descending, clipped at 0) and a function ``right_vectors(m)``
    giving the top m right singular vectors of X (columns, same order): only those m are formed,
    never all min(n, p) of them. A vector whose singular value is below sqrt(REL_THRESH) of the
    largest is left zero (X dense or scipy sparse)."""
    g, samples_side = gram_smaller_side(X)
    ev, vec = np.linalg.eigh(g)
    ev, vec = np.maximum(ev[::-1], 0.0), vec[:, ::-1]

    def right_vectors(m: int) -> np.ndarray:
        if not samples_side:
            return vec[:, :m]
        # eigenvectors of X X^T are left singular vectors: V = X^T U / sigma
        sigma = np.sqrt(ev[:m])
        keep = sigma > math.sqrt(REL_THRESH) * (sigma[0] if sigma.size else 0.0)
        out = np.zeros((X.shape[1], m))
        out[:, keep] = np.asarray(X.T @ vec[:, :m][:, keep]) / sigma[keep]
        return out

    return ev, right_vectors


def top_singular_values(X, k: int, random_state) -> np.ndarray:
    """The k largest singular values of X (ARPACK through scipy's ``svds``, start vector from
    ``random_state``), descending."""
    from scipy.sparse.linalg import svds

    rng = np.random.default_rng(random_state)
    v0 = rng.uniform(-1, 1, min(X.shape))
    sv = svds(X, k=k, which="LM", return_singular_vectors=False, v0=v0,
              solver="arpack", maxiter=20 * min(X.shape))
    return np.sort(sv)[::-1]


def top_right_vectors(X, m: int, random_state) -> np.ndarray:
    """The top m right singular vectors of X (feature side), as columns: a dense SVD for a small
    X (min side <= 500) or m near the full rank, else ARPACK (start vector from ``random_state``)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import svds

    if min(X.shape) <= 500 or m >= min(X.shape) - 1:
        dense = X.toarray() if sp.issparse(X) else X
        _, _, vt = np.linalg.svd(dense, full_matrices=False)
        return vt[:m].T
    rng = np.random.default_rng(random_state)
    _, s, vt = svds(X, k=m, v0=rng.uniform(-1, 1, min(X.shape)), solver="arpack")
    return vt[np.argsort(s)[::-1]].T
