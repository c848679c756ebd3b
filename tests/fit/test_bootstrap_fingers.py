"""Bootstrap goodness of fit, and the finger fixes."""

import math

import numpy as np
import pytest
from oracles import pareto

from tailscope import fit_power_law
from tailscope.fit.fingers import xmin_peak_range


def test_bootstrap_is_reproducible_whatever_the_number_of_processes():
    fit = fit_power_law(pareto(800, 2.5, seed=0))
    serial = fit.goodness_of_fit(24, seed=7, n_jobs=1)
    parallel = fit.goodness_of_fit(24, seed=7, n_jobs=2)
    np.testing.assert_array_equal(serial.Ds, parallel.Ds)
    np.testing.assert_array_equal(serial.alphas, parallel.alphas)
    assert serial.p_value == parallel.p_value
    other = fit.goodness_of_fit(24, seed=8, n_jobs=1)
    assert not np.array_equal(serial.Ds, other.Ds)


def test_bootstrap_p_value_matches_its_definition():
    fit = fit_power_law(pareto(600, 2.5, seed=1))
    gof = fit.goodness_of_fit(40, seed=0, n_jobs=1)
    assert gof.p_value == pytest.approx(np.mean(gof.Ds > fit.D))
    assert gof.n_failed == 0 and gof.D == fit.D
    lo, hi = gof.alpha_ci
    assert lo < fit.alpha < hi
    assert "p_value=" in repr(gof)


def test_bootstrap_accepts_a_power_law_and_rejects_an_exponential():
    good = fit_power_law(pareto(1500, 2.5, seed=3)).goodness_of_fit(60, seed=0, n_jobs=1)
    assert good.p_value > 0.1 and good.plausible
    rng = np.random.default_rng(0)
    bad = fit_power_law(rng.exponential(1.0, 3000) + 1.0, xmin=1.0)
    gof = bad.goodness_of_fit(60, seed=0, n_jobs=1)
    assert gof.p_value < 0.1 and not gof.plausible


def test_bootstrap_replicates_follow_the_fitted_model():
    fit = fit_power_law(pareto(3000, 3.0, seed=5), xmin=1.0)
    gof = fit.goodness_of_fit(30, seed=1, n_jobs=1)
    # replicates re-use the fixed xmin, so their alphas scatter around the fitted one
    assert abs(np.mean(gof.alphas) - fit.alpha) < 3 * fit.sigma


def test_bootstrap_bad_arguments():
    fit = fit_power_law(pareto(100, 2.5, seed=0))
    with pytest.raises(ValueError, match="n_boot"):
        fit.goodness_of_fit(0)
    with pytest.raises(ValueError, match="ci"):
        fit.goodness_of_fit(5, ci=1.5)
    with pytest.raises(ValueError, match="failed"):
        fit_power_law([1.0, 1.0]).goodness_of_fit(5)


def _with_finger(seed=4):
    """A uniform bulk, a Pareto tail and a tight cluster of six large values: a finger."""
    rng = np.random.default_rng(seed)
    bulk = rng.uniform(1.0, 2.0, 200)
    cluster = 5.0 * (1.0 - np.arange(6) / 7.0) ** (-1.0 / 7.0)
    return np.sort(np.concatenate([bulk, cluster, pareto(100, 3.0, seed, xmin=1.5)]))


def test_clip_xmax_removes_a_finger():
    x = _with_finger()
    raw = fit_power_law(x)
    fixed = fit_power_law(x, fix_fingers="clip_xmax")
    assert fixed.fix_fingers == "clip_xmax" and fixed.raw_alpha == raw.alpha
    assert fixed.num_fingers >= 1
    # the rule, spelled out: the first k whose refit drops alpha by more than finger_thresh
    expected = next(k for k in range(1, 10) if fit_power_law(x[:-k]).alpha + 1.0 < raw.alpha)
    assert fixed.num_fingers == expected
    assert fixed.data.size == x.size - expected
    again = fit_power_law(x[:-expected])  # the accepted fit is the plain fit of the clipped data
    assert (again.alpha, again.xmin) == (fixed.alpha, fixed.xmin)


def test_clip_xmax_keeps_a_clean_power_law():
    x = pareto(2000, 2.5, seed=0)
    fixed = fit_power_law(x, fix_fingers="clip_xmax")
    assert fixed.num_fingers == 0 and fixed.alpha == fixed.raw_alpha
    with pytest.raises(ValueError, match="max_fingers"):
        fit_power_law(x, fix_fingers="clip_xmax", max_fingers=0)


def test_xmin_peak_searches_around_the_histogram_peak():
    x = _with_finger(24)
    lo, hi = xmin_peak_range(x)
    counts, edges = np.histogram(np.log10(x), bins=100)
    peak = 10 ** edges[np.argmax(counts)]
    assert (lo, hi) == pytest.approx((0.95 * peak, 1.5 * peak))
    fit = fit_power_law(x, fix_fingers="xmin_peak")
    assert fit.ok and lo <= fit.xmin <= hi and fit.fix_fingers == "xmin_peak"
    assert math.isnan(fit.raw_alpha)
    explicit = fit_power_law(x, xmin=(lo, hi))
    assert (explicit.alpha, explicit.xmin) == (fit.alpha, fit.xmin)
    with pytest.raises(ValueError, match="xmin_max"):
        fit_power_law(x, fix_fingers="xmin_peak", xmin_max=1e-9)
    with pytest.raises(ValueError, match="drop xmin"):
        fit_power_law(x, fix_fingers="xmin_peak", xmin=1.0)
