"""FARMS: the eigenvalues of fixed-aspect sub-matrix windows of a weight matrix, pooled.

FARMS (Hu, Goel, Killiakov, Yang, ICML 2025, arXiv 2506.06280; github.com/HUST-AI-HYZ/FARMS)
removes the aspect-ratio bias of a layer's alpha: instead of the ESD of the whole N x M matrix,
whose Marchenko-Pastur bulk (and so any xmin-at-the-median fit) changes with Q = N / M, it pools
the ESDs of many windows of one fixed aspect ratio slid over the matrix, then fits.

:func:`window_eigenvalues` is the reference's dense-layer sampling (``fixed_sampling`` /
``fixed_number_of_sampling_ops`` with its defaults ``num_row_samples=100, Q_ratio=2.0,
sampling_ops_per_dim=10``); :func:`conv_window_eigenvalues` its conv2d branch
(``net_esd_estimator_farms``). Each window's eigenvalues are the squared singular values; all
windows' Gram matrices are formed and diagonalised in one batched float64 call (the reference:
one float32 SVD per window).
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits


def window_starts(size: int, window: int, positions: int) -> np.ndarray:
    """The reference's window offsets along one side: ``positions`` evenly spaced starts,
    step ``max(1, (size - window) // (positions - 1))``, clipped to ``size - window`` (fewer
    when the side is too short to give distinct ones)."""
    room = size - window
    if room < 0:
        raise ValueError(f"a window of {window} does not fit in {size}")
    if positions <= 1:
        return np.zeros(1, dtype=np.int64)
    step = max(1, room // (positions - 1))
    count = min(positions, room // step + 1)
    return np.minimum(np.arange(count) * step, room)


def window_shape(rows: int, cols: int, size: int = 100, q: float = 2.0) -> tuple[int, int, bool]:
    """The windows of a ``rows x cols`` matrix: (window rows, window cols, transposed).

    The reference's window is ``size x int(size * q)`` (100 x 200) of the matrix as stored
    (PyTorch's ``out x in``). When it does not fit, the reference's offsets go negative and
    its windows lose their shape (a bug); here instead the window is taken transposed
    (``int(size * q) x size``) when that fits, and otherwise shrunk, keeping the aspect ratio,
    to the largest that fits in either orientation. ``transposed`` says the windows are
    ``int(r * q) x r`` sub-matrices of the stored matrix.
    """
    if q < 1:
        raise ValueError(f"q must be >= 1; got {q!r}")

    def fitting(r_side: int, c_side: int) -> int:  # the largest r <= size with r x int(r q) inside
        r = min(size, r_side)
        while r >= 1 and int(r * q) > c_side:
            r -= 1
        return r

    upright, flipped = fitting(rows, cols), fitting(cols, rows)
    if upright == 0 and flipped == 0:
        raise ValueError(f"a {rows} x {cols} matrix holds no window of aspect ratio {q:g}")
    if upright >= flipped:
        return upright, int(upright * q), False
    return flipped, int(flipped * q), True


def window_eigenvalues(w: np.ndarray, size: int = 100, q: float = 2.0,
                       positions: int = 10) -> np.ndarray:
    """The pooled, sorted (ascending) eigenvalues of FARMS's windows of one matrix, in float64.

    ``w`` as stored (PyTorch's ``out x in``); windows of :func:`window_shape` at the offsets of
    :func:`window_starts` along each side (``positions`` per side, so at most
    ``positions ** 2`` windows), each giving its ``min(window shape)`` eigenvalues. Equal to the
    reference's ``fixed_sampling(W, num_row_samples=size, Q_ratio=q,
    sampling_ops_per_dim=positions)`` whenever its window fits (``rows >= size``,
    ``cols >= int(size * q)``).

    >>> w = np.random.default_rng(0).standard_normal((400, 300))
    >>> window_eigenvalues(w).shape  # 10 x 10 windows of 100 x 200, 100 eigenvalues each
    (10000,)
    """
    for name, value in (("size", size), ("positions", positions)):
        if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                and value >= 1):
            raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"a matrix must be 2-D; got shape {w.shape}")
    if w.dtype.kind not in "fiu":
        raise ValueError(f"a {w.dtype} matrix is not numbers")
    r, c, flip = window_shape(*w.shape, size=size, q=q)
    if flip:
        w = w.T
    rs = window_starts(w.shape[0], r, positions)
    cs = window_starts(w.shape[1], c, positions)
    # (windows, r, c) by fancy indexing: row block i, column block j
    rows = (rs[:, None] + np.arange(r))[:, None, :, None]
    cols = (cs[:, None] + np.arange(c))[None, :, None, :]
    blocks = w[rows, cols].astype(np.float64, copy=False).reshape(-1, r, c)
    return pooled_eigenvalues(blocks)


def pooled_eigenvalues(blocks: np.ndarray) -> np.ndarray:
    """The sorted squared singular values of a stack of equal-shape matrices (k, r, c): the
    eigenvalues of each one's Gram matrix of its smaller side, one batched float64 call."""
    blocks = np.asarray(blocks, dtype=np.float64)
    if not np.isfinite(blocks).all():
        raise ValueError("the matrix contains NaN or infinite values")
    # many small products and eigensolves: one BLAS thread each is several times faster than
    # BLAS's threads fighting over them (measured 0.14 s against 1.0 s on 2 busy cores)
    with threadpool_limits(limits=1, user_api="blas"):
        if blocks.shape[1] <= blocks.shape[2]:
            gram = blocks @ blocks.transpose(0, 2, 1)
        else:
            gram = blocks.transpose(0, 2, 1) @ blocks
        return np.sort(np.linalg.eigvalsh(gram).ravel())


def conv_window_eigenvalues(slices: list[np.ndarray], q: float = 2.0) -> list[np.ndarray]:
    """FARMS's conv2d sampling: one pooled ESD per row division of the (tall) slices.

    As the reference's ``net_esd_estimator_farms``: each slice ``W[:, :, i, j]`` is made tall
    (``rows >= cols``); the window is ``int(cols / q) x cols`` (half the columns' count of rows,
    all columns); division ``d`` in ``range(rows // cols)`` pools the eigenvalues of
    ``W_s[d * h:(d + 1) * h, :]`` over every slice ``s``. The reference fits each division's ESD
    and averages the alphas. (The reference uses the first slice's shape for all, as here: the
    slices of one conv layer share it.)

    >>> slices = list(np.random.default_rng(0).standard_normal((9, 64, 32)))
    >>> [e.shape for e in conv_window_eigenvalues(slices)]  # 2 divisions of 9 windows 16 x 32
    [(144,), (144,)]
    """
    if not slices:
        raise ValueError("no conv slices")
    tall = [np.asarray(s) if s.shape[0] >= s.shape[1] else np.asarray(s).T for s in slices]
    rows, cols = tall[0].shape
    if any(t.shape != (rows, cols) for t in tall):
        raise ValueError("the conv slices differ in shape")
    if q < 1:
        raise ValueError(f"q must be >= 1; got {q!r}")
    h = max(1, int(cols // q))
    out = []
    for d in range(rows // cols):
        stack = np.stack([t[d * h:(d + 1) * h, :] for t in tall])
        out.append(pooled_eigenvalues(stack))
    return out
