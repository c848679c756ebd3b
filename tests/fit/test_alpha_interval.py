"""alpha_interval: the bootstrap interval of the reported alpha.

The acceptance test (issue 13): on Pareto samples (density ~ x^-alpha; alpha 2, 3, 4; n 20, 50,
200) the 90% interval of the reported alpha (xmin chosen by the KS scan) covers the true alpha in
90% +- 3% of 1,000 trials. The fixed-xmin pivot is checked against the exact Gamma-pivot interval
written here from the formula with scipy's Gamma quantiles.
"""

import math

import numpy as np
import pytest
from scipy import stats

from tailscope import fit_power_law
from tailscope.fit import alpha_interval


def pareto(rng, alpha, n, xmin=1.0):
    return xmin * (1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0))


@pytest.mark.slow  # ~65 s; alpha 2 and 4 too: bench/alpha_ci_coverage.py
@pytest.mark.parametrize("alpha", [3.0])
def test_interval_of_the_reported_alpha_covers_at_the_nominal_level(alpha):
    for n in (20, 50, 200):
        rng = np.random.default_rng([int(alpha), n])
        hits = 0
        for trial in range(1000):
            fit = fit_power_law(pareto(rng, alpha, n))  # xmin by the KS scan, as reported
            lo, hi = alpha_interval(fit, 100, 0.9, seed=[trial, n])
            hits += lo <= alpha <= hi
        assert 0.87 <= hits / 1000 <= 0.93, (alpha, n, hits / 1000)


def exact_fixed_xmin_interval(tail, xmin, level):
    """(alpha - 1) * sum ln(x / xmin) ~ Gamma(k, 1), k the tail values above xmin."""
    s = float(np.sum(np.log(tail / xmin)))
    k = int(np.count_nonzero(tail > xmin))
    g_lo, g_hi = stats.gamma.ppf([(1 - level) / 2, (1 + level) / 2], k)
    return 1 + g_lo / s, 1 + g_hi / s


@pytest.mark.parametrize("alpha, n, xmin", [(2.5, 30, None), (3.0, 500, None), (2.0, 40, 1.0),
                                            (4.0, 200, 1.3)])
def test_fixed_xmin_interval_equals_the_exact_gamma_pivot(alpha, n, xmin):
    x = pareto(np.random.default_rng(n), alpha, n)
    fit = fit_power_law(x, xmin=xmin)
    lo, hi = alpha_interval(fit, 400_000, 0.9, seed=1, rescan=False)
    ref = exact_fixed_xmin_interval(fit.tail, fit.xmin, 0.9)
    assert lo == pytest.approx(ref[0], rel=3e-3)
    assert hi == pytest.approx(ref[1], rel=3e-3)


def test_fixed_xmin_pivot_covers_at_the_true_xmin():
    """Conditional on xmin (here the true one) the pivot is exact, at every tail size."""
    for alpha, n in [(2.0, 20), (4.0, 200)]:
        rng = np.random.default_rng([7, n])
        hits = 0
        for trial in range(1000):
            fit = fit_power_law(pareto(rng, alpha, n), xmin=1.0)
            lo, hi = alpha_interval(fit, 300, 0.9, seed=trial, rescan=False)
            hits += lo <= alpha <= hi
        assert 0.87 <= hits / 1000 <= 0.93


def test_truncated_fixed_xmin_interval_covers():
    """With xmax the tail is a truncated power law; the replicates refit its exact MLE."""
    rng = np.random.default_rng(3)
    alpha, xmax, hits = 2.5, 20.0, 0
    u = 1 - math.exp(-(alpha - 1) * math.log(xmax))
    for trial in range(400):
        x = (1 - rng.random(60) * u) ** (-1 / (alpha - 1))  # truncated Pareto on [1, 20]
        fit = fit_power_law(x, xmin=1.0, xmax=xmax)
        lo, hi = alpha_interval(fit, 300, 0.9, seed=trial, rescan=False)
        hits += lo <= alpha <= hi
    assert 0.86 <= hits / 400 <= 0.94


def test_seeded_deterministic_and_contains_the_estimate():
    fit = fit_power_law(pareto(np.random.default_rng(0), 2.5, 300))
    a = alpha_interval(fit, 200, 0.9, seed=5)
    assert a == alpha_interval(fit, 200, 0.9, seed=5)
    assert a != alpha_interval(fit, 200, 0.9, seed=6)
    assert a[0] < fit.alpha < a[1]
    wide = alpha_interval(fit, 200, 0.99, seed=5)
    assert wide[0] < a[0] and a[1] < wide[1]


def test_bad_input_is_one_clear_error():
    fit = fit_power_law(pareto(np.random.default_rng(0), 2.5, 100))
    with pytest.raises(ValueError, match="n_boot"):
        alpha_interval(fit, 0)
    with pytest.raises(ValueError, match="level"):
        alpha_interval(fit, 10, 1.5)
    with pytest.raises(ValueError, match="failed fit"):
        alpha_interval(fit_power_law([1.0, 1.0]), 10)


def test_docstring_example_runs():
    import doctest

    from tailscope.fit import bootstrap
    from tailscope.spectrum import metrics

    for fn in (bootstrap.alpha_interval, metrics.ecs_self_consistent):
        tests = doctest.DocTestFinder().find(fn, fn.__name__, globs={"np": np, **vars(metrics)})
        runner = doctest.DocTestRunner()
        for t in tests:
            runner.run(t)
        assert runner.tries >= 2 and runner.failures == 0, fn.__name__
