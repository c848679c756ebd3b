"""Marchenko-Pastur fit, triangular KDE and detX against WeightWatcher 0.7.7's own functions."""

import contextlib
import functools
import io
import logging
import math

import numpy as np
import pytest
from oracles import minilm_path
from scipy.integrate import quad

from tailscope.spectrum import detx
from tailscope.spectrum.mp import MPFit, MPFitError, linear_kde, mp_density, mp_fit
from tailscope.spectrum.randomize import jensen_shannon_distance, shuffle_elements


@functools.cache
def minilm_esds():
    """ESDs (squared singular values, as WeightWatcher computes them) of a few MiniLM matrices."""
    from safetensors.numpy import load_file

    sd = load_file(str(minilm_path()))
    out = {}
    for name in ("encoder.layer.1.attention.self.key.weight",  # 384 x 384: Q = 1
                 "encoder.layer.2.intermediate.dense.weight"):  # 1536 x 384: Q = 4
        w = sd[name].astype(np.float64)
        out[name] = (np.sort(np.linalg.svd(w, compute_uv=False) ** 2), max(w.shape), min(w.shape))
    return out


def ww_mp_fit(evals, N, M):
    """WeightWatcher's own mp_fit method: (num_spikes, sigma_mp, mp_softrank, bulk_min,
    bulk_max, Wscale)."""
    import weightwatcher

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        watcher = weightwatcher.WeightWatcher()
        # 0.7.7's signature: ..., color, hist_alpha, rescale, orig_evals
        return watcher.mp_fit(evals, N, M, 1, "", 0, 0, False, False, "", "blue", 0.25, True,
                              evals)


def test_triangular_kde_equals_scikit_learn():
    from sklearn.neighbors import KernelDensity

    rng = np.random.default_rng(0)
    data = rng.gamma(2.0, 1.0, 700)
    x = np.linspace(0, data.max() + 0.5, 1000)
    ref = np.exp(KernelDensity(kernel="linear", bandwidth=0.1).fit(data[:, None])
                 .score_samples(x[:, None]))
    np.testing.assert_allclose(linear_kde(data, x), ref, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", ["encoder.layer.1.attention.self.key.weight",
                                  "encoder.layer.2.intermediate.dense.weight"])
def test_mp_fit_equals_weightwatcher_on_trained_weights(name):
    evals, N, M = minilm_esds()[name]
    ours = mp_fit(evals, N, M)
    num_spikes, sigma, softrank, bulk_min, bulk_max, w_scale = ww_mp_fit(evals, N, M)
    assert ours.num_spikes == num_spikes
    assert ours.sigma_mp == pytest.approx(sigma, abs=1e-3)
    assert ours.sigma_mp == pytest.approx(sigma, rel=1e-9)  # in fact to rounding
    for got, want in ((ours.mp_softrank, softrank), (ours.bulk_min, bulk_min),
                      (ours.bulk_max, bulk_max), (ours.W_scale, w_scale)):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-15)


def test_a_random_matrix_has_sigma_one_and_no_spikes_and_a_planted_one_has_spikes():
    """sigma_mp is in units where the ESD's mean is 1: a Gaussian matrix gives sigma ~ 1
    (WeightWatcher issue #210's 'sigma ~ 0.7' is a trained layer's spikes taking trace)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((1000, 250))
    fit = mp_fit(np.linalg.eigvalsh(w.T @ w), 1000, 250)
    assert fit.sigma_mp == pytest.approx(1.0, abs=0.03) and fit.num_spikes == 0
    u, v = rng.standard_normal((1000, 3)), rng.standard_normal((3, 250))
    planted = w + 0.2 * u @ v
    fit2 = mp_fit(np.linalg.eigvalsh(planted.T @ planted), 1000, 250)
    assert fit2.num_spikes == 3 and fit2.sigma_mp < fit.sigma_mp
    assert isinstance(fit2, MPFit) and fit2.as_row("rand_")["rand_num_spikes"] == 3


@pytest.mark.parametrize("Q", [1.0, 2.0, 4.0])
def test_mp_density_is_a_density_on_its_support(Q):
    sigma = 0.8
    lo, hi = (sigma * (1 - Q ** -0.5)) ** 2, (sigma * (1 + Q ** -0.5)) ** 2
    total = quad(lambda x: float(mp_density(np.array([x]), sigma, Q)[0]), lo, hi, limit=200)[0]
    assert total == pytest.approx(1.0, abs=1e-6)
    assert (mp_density(np.array([hi * 1.01, lo * 0.99 if lo else -1.0]), sigma, Q) == 0).all()
    # the mean eigenvalue is sigma^2
    mean = quad(lambda x: x * float(mp_density(np.array([x]), sigma, Q)[0]), lo, hi)[0]
    assert mean == pytest.approx(sigma ** 2, rel=1e-6)


def test_no_fit_raises_with_the_reason():
    with pytest.raises(MPFitError, match="zero"):
        mp_fit(np.zeros(50), 100, 50)
    with pytest.raises(MPFitError, match="NaN"):
        mp_fit(np.array([1.0, np.nan, 2.0]), 10, 3)
    with pytest.raises(MPFitError, match="N >= M"):
        mp_fit(np.ones(10), 5, 10)
    rng = np.random.default_rng(0)
    low_rank = rng.standard_normal((300, 2)) @ rng.standard_normal((2, 150))
    with pytest.raises(MPFitError, match="bulk edge"):
        mp_fit(np.linalg.eigvalsh(low_rank.T @ low_rank), 300, 150)


def test_detx_equals_weightwatcher():
    from weightwatcher.RMT_Util import detX_constraint, rescale_eigenvalues

    for evals, _, _ in minilm_esds().values():
        scaled, w_scale = rescale_eigenvalues(evals)
        num, idx = detX_constraint(scaled, rescale=False)
        ours = detx(evals)
        assert ours["detX_num"] == num
        assert ours["detX_val"] == pytest.approx(evals[idx], rel=1e-12)
        assert ours["detX_val_unrescaled"] == pytest.approx(scaled[idx], rel=1e-12)


def test_detx_does_not_overflow_where_weightwatchers_product_does():
    """1840 eigenvalues of 2.7 and 3160 of 0.01 (rescaled): the top product is 2.7^1840 ~ 1e794,
    beyond float64, so WeightWatcher's np.prod (inf, or its SIMD lanes' partial products) gives
    a wrong count; a sum of logs gives the exact one."""
    from weightwatcher.RMT_Util import detX_constraint, rescale_eigenvalues

    k, n = 1840, 5000
    assert 1840 * math.log10(2.7) > 308
    evals = np.concatenate([np.full(n - k, 0.01), np.full(k, 2.7)])
    scaled, _ = rescale_eigenvalues(evals)
    big, small = math.log(scaled[-1]), math.log(scaled[0])
    expected = k + math.floor(-k * big / small) + 1  # smallest j with k ln b + j ln s < 0
    with np.errstate(over="ignore", invalid="ignore"):
        assert detX_constraint(scaled, rescale=False)[0] != expected  # WeightWatcher: overflowed
    assert detx(evals)["detX_num"] == expected


def test_shuffle_is_a_permutation_and_legacy_state_equals_np_random_shuffle():
    w = np.arange(60.0).reshape(6, 10)
    out = shuffle_elements(w, np.random.default_rng(1))
    assert out.shape == w.shape and not np.array_equal(out, w)
    np.testing.assert_array_equal(np.sort(out.ravel()), w.ravel())
    np.random.seed(5)  # noqa: NPY002 - the legacy global state WeightWatcher uses
    flat = w.flatten()
    np.random.shuffle(flat)  # noqa: NPY002 - what WeightWatcher does, unseeded
    np.testing.assert_array_equal(shuffle_elements(w, np.random.RandomState(5)).ravel(), flat)


def test_jensen_shannon_distance_is_weightwatchers():
    from weightwatcher.RMT_Util import jensen_shannon_distance as ww_jsd

    rng = np.random.default_rng(2)
    p, q = np.sort(rng.gamma(1.0, size=300)), np.sort(rng.gamma(2.0, size=300))
    assert jensen_shannon_distance(p, q) == pytest.approx(ww_jsd(p, q), rel=1e-12)
    assert jensen_shannon_distance(p, p) == 0.0
