"""FARMS's window sampling against the reference's loops (HUST-AI-HYZ/FARMS ``fixed_sampling`` and
the conv branch of ``net_esd_estimator_farms``), written here window by window with float64 SVDs;
the shapes the reference cannot take."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

from tailscope.spectrum import conv_window_eigenvalues, window_eigenvalues
from tailscope.spectrum.windows import window_shape, window_starts


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """The reference loops' hundred small SVDs crawl when BLAS threads fight on busy cores."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def reference_fixed_sampling(matrix, num_row_samples=100, q_ratio=2.0, ops=10):
    """The reference's loop: window offsets, one SVD per window, eigenvalues pooled and sorted."""
    rows, cols = matrix.shape
    num_col_samples = int(num_row_samples * q_ratio)
    row_step = max(1, math.floor((rows - num_row_samples) / (ops - 1)))
    col_step = max(1, math.floor((cols - num_col_samples) / (ops - 1)))
    n_rows = min(ops, max(1, (rows - num_row_samples) // row_step + 1))
    n_cols = min(ops, max(1, (cols - num_col_samples) // col_step + 1))
    out = []
    for i in range(n_rows):
        for j in range(n_cols):
            r0 = min(i * row_step, rows - num_row_samples)
            c0 = min(j * col_step, cols - num_col_samples)
            sub = matrix[r0:r0 + num_row_samples, c0:c0 + num_col_samples]
            out.append(np.linalg.svd(sub, compute_uv=False) ** 2)
    return np.sort(np.concatenate(out))


def reference_conv(slices, q_ratio=2.0):
    """The conv branch: tall slices, window cols // Q rows x all columns, one ESD per division."""
    tall = [w if w.shape[0] >= w.shape[1] else w.T for w in slices]
    rows, cols = tall[0].shape
    h = max(1, int(cols // q_ratio))
    out = []
    for d in range(rows // cols):
        eigs = [np.linalg.svd(w[d * h:(d + 1) * h, :cols], compute_uv=False) ** 2 for w in tall]
        out.append(np.sort(np.concatenate(eigs)))
    return out


@pytest.mark.parametrize("shape", [(100, 200), (384, 1536), (1536, 384), (250, 211), (101, 209)])
def test_equals_the_reference_where_its_window_fits(rng, shape):
    w = rng.standard_t(3, shape)
    ref = reference_fixed_sampling(w)
    ours = window_eigenvalues(w)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-10 * ref.max())


def test_other_window_sizes_and_positions(rng):
    w = rng.standard_normal((300, 500))
    for size, q, ops in [(50, 2.0, 5), (64, 3.0, 7), (120, 1.0, 4)]:
        np.testing.assert_allclose(window_eigenvalues(w, size, q, ops),
                                   reference_fixed_sampling(w, size, q, ops), rtol=1e-9,
                                   atol=1e-9)


def test_a_tall_matrix_takes_the_window_transposed(rng):
    # 2048 x 128 as stored: the reference's 100 x 200 window does not fit (its offsets go
    # negative); the 200 x 100 window does, and it is the reference's window of the transpose
    w = rng.standard_normal((2048, 128))
    assert window_shape(*w.shape) == (100, 200, True)
    np.testing.assert_allclose(window_eigenvalues(w), reference_fixed_sampling(w.T),
                               rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 260), st.integers(1, 260), st.sampled_from([1.0, 1.5, 2.0, 4.0]))
def test_any_shape_gets_windows_of_the_aspect_ratio_inside_it(rows, cols, q):
    if max(rows, cols) < int(q):  # no window of that aspect ratio fits
        with pytest.raises(ValueError, match="no window"):
            window_shape(rows, cols, q=q)
        return
    r, c, flipped = window_shape(rows, cols, q=q)
    assert 1 <= r <= 100 and c == int(r * q)
    big_r, big_c = (cols, rows) if flipped else (rows, cols)
    assert r <= big_r and c <= big_c
    # the largest such window in either orientation
    assert int((r + 1) * q) > big_c or r + 1 > big_r or r == 100
    starts = window_starts(big_r, r, 10)
    assert starts.min() >= 0 and starts.max() + r <= big_r and len(set(starts)) == len(starts)


def test_window_eigenvalues_keep_the_squared_frobenius_norm_of_each_window(rng):
    w = rng.standard_normal((300, 400))
    ev = window_eigenvalues(w, 100, 2.0, 3)
    rs, cs = window_starts(300, 100, 3), window_starts(400, 200, 3)
    total = sum(np.sum(w[r:r + 100, c:c + 200] ** 2) for r in rs for c in cs)
    assert ev.sum() == pytest.approx(total, rel=1e-12)


@pytest.mark.parametrize("shape", [(64, 32, 3, 3), (32, 64, 3, 3), (96, 32, 1, 1), (20, 7, 5, 5)])
def test_conv_windows_equal_the_reference(rng, shape):
    t = rng.standard_normal(shape)
    slices = [t[:, :, i, j] for i in range(shape[2]) for j in range(shape[3])]
    ours, ref = conv_window_eigenvalues(slices), reference_conv(slices)
    assert len(ours) == len(ref) == max(shape[:2]) // min(shape[:2])
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_bad_matrices_are_one_line(rng):
    for bad, message in [(np.ones(5), "2-D"), (np.array([["a", "b"]]), "not numbers"),
                         (np.full((120, 220), np.nan), "NaN")]:
        with pytest.raises(ValueError, match=message) as err:
            window_eigenvalues(bad)
        assert "\n" not in str(err.value)
    for kwargs, message in [({"size": 0}, "size"), ({"positions": 0}, "positions"),
                            ({"q": 0.5}, "q must be")]:
        with pytest.raises(ValueError, match=message):
            window_eigenvalues(np.ones((300, 300)), **kwargs)
