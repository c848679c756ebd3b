"""Differential tests: fit_power_law equals powerlaw==1.5 Fit (xmin and n_tail exactly,
alpha and D to 1e-9 relative) on synthetic, random-matrix, tied and real data."""

import numpy as np
import pytest
from oracles import g2p_esds, pareto, powerlaw_fit, student_t_esd

from tailscope import fit_power_law
from tailscope.datasets import CLAUSET, clauset


def assert_same_as_powerlaw(x, **kwargs):
    ours = fit_power_law(x, **kwargs)
    ref = powerlaw_fit(x, **kwargs)
    assert ours.ok
    assert ours.xmin == ref.xmin
    assert ours.n_tail == int(ref.n_tail)
    assert ours.alpha == pytest.approx(ref.alpha, rel=1e-9)
    assert ours.D == pytest.approx(ref.D, rel=1e-9)
    assert ours.sigma == pytest.approx(ref.sigma, rel=1e-9)
    return ours, ref


@pytest.mark.parametrize("n", [50, 300, 1000, 3000])
@pytest.mark.parametrize("alpha", [1.5, 2.5, 4.0, 6.5])
def test_pareto_samples(n, alpha):
    assert_same_as_powerlaw(pareto(n, alpha, seed=n + int(10 * alpha)))


@pytest.mark.parametrize("seed", range(4))
def test_pareto_with_a_lognormal_body(seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.lognormal(0.0, 0.5, 1500), pareto(500, 3.0, seed, xmin=3.0)])
    assert_same_as_powerlaw(x)


@pytest.mark.parametrize("df,seed", [(2.5, 0), (3.0, 1), (4.0, 2), (1.5, 3)])
def test_student_t_random_matrix_esd(df, seed):
    assert_same_as_powerlaw(student_t_esd(600, 300, df=df, seed=seed))


def test_gaussian_random_matrix_esd():
    """A Marchenko-Pastur bulk with no heavy tail: the fit still equals powerlaw's."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((1000, 500))
    assert_same_as_powerlaw(np.linalg.eigvalsh(w.T @ w / 1000))


@pytest.mark.parametrize("decimals", [0, 1, 2])
def test_data_with_ties(decimals):
    x = np.round(pareto(2000, 2.2, seed=decimals, xmin=2.0), decimals)
    assert_same_as_powerlaw(x)


def test_real_trained_esds():
    esds = g2p_esds()
    assert len(esds) >= 5
    for ev in esds.values():
        assert_same_as_powerlaw(ev)


@pytest.mark.parametrize("name", sorted(CLAUSET))
def test_clauset_datasets(name):
    x = clauset(name)
    ours, _ = assert_same_as_powerlaw(x[x > 0])
    if CLAUSET[name]["alpha"] is not None:  # and the published table, to its rounding
        assert ours.alpha == pytest.approx(CLAUSET[name]["alpha"], abs=0.05)
        assert ours.xmin == pytest.approx(CLAUSET[name]["xmin"], rel=1e-3)


def test_fixed_xmin():
    x = pareto(2000, 2.7, seed=3)
    for xmin in (1.0, 1.37, np.sort(x)[1500]):
        assert_same_as_powerlaw(x, xmin=xmin)


def test_xmin_range_reaching_the_largest_value():
    x = pareto(2000, 2.7, seed=4)
    assert_same_as_powerlaw(x, xmin=(1.2, float(x.max())))


def test_candidate_curves_equal_powerlaw():
    x = student_t_esd(400, 200, df=3.0, seed=5)
    ours, ref = assert_same_as_powerlaw(x)
    np.testing.assert_array_equal(ours.xmins, ref.xmins)
    np.testing.assert_allclose(ours.alphas, ref.alphas, rtol=1e-9)
    np.testing.assert_allclose(ours.Ds, ref.Ds, rtol=1e-9, atol=1e-15)
    assert ours.Ds[np.argmin(ours.Ds)] == pytest.approx(ours.D, rel=1e-9)


def test_weightwatcher_default_fitter_agrees_on_real_esds():
    """WeightWatcher's own fitter (WWFit, its default pl_package='ww') on trained ESDs."""
    from weightwatcher.WW_powerlaw import WWFit

    for ev in list(g2p_esds().values()) + [student_t_esd(500, 250, df=2.5, seed=1)]:
        assert np.unique(ev).size == ev.size  # WWFit's ECDF equals ours only without ties
        ours, ref = fit_power_law(ev), WWFit(ev)
        assert ours.xmin == ref.xmin
        assert ours.alpha == pytest.approx(ref.alpha, rel=1e-9)
        assert ours.D == pytest.approx(ref.D, rel=1e-9)
        assert ours.n_tail == len(ref.data)
