"""Eigenvalues through the float64 Gram equal the squared singular values; metrics equal
WeightWatcher's own functions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailscope.spectrum import eigenvalues, eigenvalues_many, get_backend, gram, norm_metrics
from tailscope.spectrum import esd as esd_module


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(1, 60), st.sampled_from([np.float16, np.float32, np.float64]),
       st.integers(0, 2**31 - 1))
def test_gram_eigenvalues_equal_squared_singular_values(rows, cols, dtype, seed):
    w = np.random.default_rng(seed).standard_normal((rows, cols)).astype(dtype)
    ev = eigenvalues(w)
    sv = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    ref = np.sort(sv**2)
    assert ev.shape == (min(rows, cols),)
    np.testing.assert_allclose(ev, ref, rtol=1e-10, atol=1e-12 * ref[-1])
    np.testing.assert_allclose(eigenvalues(w.T), ev, rtol=1e-10, atol=1e-12 * ref[-1])


def test_chunked_gram_equals_one_block(monkeypatch):
    w = np.random.default_rng(0).standard_normal((500, 40)).astype(np.float32)
    whole = gram(w)
    small = gram(w, chunk_bytes=8 * 40 * 7)  # 7 rows at a time
    np.testing.assert_allclose(small, whole, rtol=1e-12)
    np.testing.assert_allclose(gram(w.T, chunk_bytes=8 * 40 * 3), w.astype(float).T @ w, rtol=1e-12)
    assert whole.dtype == np.float64


def test_rank_deficient_matrices_are_redone_exactly():
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((200, 3)) @ rng.standard_normal((3, 50))).astype(np.float32)
    ev = eigenvalues(w)
    sv = np.sqrt(ev)
    assert np.count_nonzero(sv > sv.max() * 200 * np.finfo(float).eps) == \
        np.linalg.matrix_rank(w.astype(np.float64))
    np.testing.assert_allclose(ev, np.sort(np.linalg.svd(w.astype(float), compute_uv=False) ** 2),
                               rtol=1e-9, atol=1e-20)


def test_batches_and_methods_agree():
    rng = np.random.default_rng(2)
    mats = [rng.standard_normal((30, 20)) for _ in range(3)] + [rng.standard_normal((10, 40))]
    batched = eigenvalues_many(mats)
    for w, ev in zip(mats, batched):
        np.testing.assert_allclose(ev, eigenvalues(w, method="svd"), rtol=1e-10)
    torch_cpu = eigenvalues_many(mats, backend=get_backend("torch:cpu"))
    for a, b in zip(batched, torch_cpu):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    with pytest.raises(ValueError, match="method"):
        eigenvalues(mats[0], method="qr")


def test_backends():
    assert get_backend("cpu").name == "numpy"
    assert get_backend("auto").name in ("numpy", "torch:cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        get_backend("cuda")
    assert esd_module.TorchBackend("cpu").name == "torch:cpu"


def test_metrics_equal_weightwatchers_functions():
    from weightwatcher.RMT_Util import matrix_entropy, matrix_rank

    rng = np.random.default_rng(3)
    w = rng.standard_t(3, size=(300, 120))
    ev = eigenvalues(w)
    m = norm_metrics(ev, [ev], N=300)
    sv = np.sqrt(ev)
    assert m["matrix_rank"] == matrix_rank(sv, 300)
    assert m["entropy"] == pytest.approx(matrix_entropy(sv, 300), rel=1e-12)
    assert m["norm"] == pytest.approx(np.sum(ev)) and m["lambda_max"] == ev[-1]
    assert m["stable_rank"] == pytest.approx(np.sum(ev) / ev[-1])
    assert m["log_norm"] == pytest.approx(np.log10(np.sum(ev)))


@pytest.mark.parametrize("m,block", [(1, 512), (7, 3), (1100, 512), (513, 128)])
def test_gram_mirrors_in_place_exactly_symmetric(m, block):
    """The in-place mirror (no M x M temporaries) gives an exactly symmetric matrix equal to the
    plain product, across block edges."""
    from tailscope.spectrum.esd import _mirror_upper

    rng = np.random.default_rng(m)
    w = rng.standard_normal((m + 5, m))
    full = w.T @ w
    upper = np.asfortranarray(np.triu(full))
    out = _mirror_upper(upper, block=block)
    assert out is upper and np.array_equal(out, out.T)
    np.testing.assert_array_equal(out, np.triu(full) + np.triu(full, 1).T)
