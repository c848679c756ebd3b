"""The pruned xmin scan on spectra wide enough for its refinements (zoomed brackets, the
geometric first grid, Euler-Maclaurin bounds for discrete candidates) against brute force, and
the Euler-Maclaurin zeta against mpmath."""

import math

import mpmath
import numpy as np
import pytest
from oracles import brute_force
from scipy.special import zeta

from tailscope import fit_power_law
from tailscope.fit import _scan


def brute_force_discrete(x):
    """Every candidate's (xmin, alpha by CSN eq. 3.7, D with scipy's zeta): the first argmin."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    best = (np.inf, None, None)
    for xmin in np.unique(x)[:-1]:
        tail = x[np.searchsorted(x, xmin):]
        m = tail.size
        alpha = 1.0 + m / np.sum(np.log(tail / (xmin - 0.5)))
        u, first = np.unique(tail, return_index=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            D = np.max(np.abs(1.0 - zeta(alpha, u) / zeta(alpha, xmin) - first / m))
        if D < best[0]:
            best = (D, xmin, alpha)
    return best[1], best[2], best[0]


def wide_lattice(seed, n):
    """Counts with hundreds of distinct large values (a power-law tail above a lognormal body):
    wide enough that the scan's bounds use the Euler-Maclaurin zeta."""
    rng = np.random.default_rng(seed)
    body = rng.lognormal(rng.uniform(3, 6), rng.uniform(0.5, 1.5), n // 2)
    tail = rng.uniform(20, 400) * (1 - rng.random(n - n // 2)) ** (-1 / rng.uniform(0.7, 2.0))
    return np.floor(np.concatenate([body, tail])) + 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_discrete_scan_equals_brute_force(seed):
    x = wide_lattice(seed, 2500)
    assert np.unique(x).size > _scan._SMALL_K  # the first grid of wide spectra
    ours = fit_power_law(x, discrete=True)
    xmin, alpha, D = brute_force_discrete(x)
    assert ours.xmin == xmin
    assert ours.alpha == pytest.approx(alpha, rel=1e-12)
    assert ours.D == pytest.approx(D, rel=1e-9, abs=1e-14)


@pytest.mark.parametrize("seed", [0, 1])
def test_wide_tied_continuous_scan_equals_brute_force(seed):
    """Heavy ties at the start of the tail (rounded values, like CSN's fires): the case the
    geometric first grid is for."""
    rng = np.random.default_rng(seed)
    x = np.round((1 - rng.random(6000)) ** (-1 / rng.uniform(0.8, 1.6)) * 10, 1)
    x = np.concatenate([x, rng.lognormal(2, 1, 3000).round(1)])
    x = x[x > 0]
    assert np.unique(x).size > _scan._SMALL_K
    ours = fit_power_law(x)
    xmin, alpha, D = brute_force(x)
    assert ours.xmin == xmin
    assert ours.alpha == pytest.approx(alpha, rel=1e-12)
    assert ours.D == pytest.approx(D, rel=1e-9, abs=1e-14)


def test_scan_ds_are_the_exact_ds():
    """Every D the scan computed (and the lazily completed curve) is the exact D of its candidate,
    for discrete candidates too (their bounds are approximate; the D it keeps are scipy's)."""
    x = wide_lattice(3, 2000)
    fit = fit_power_law(x, discrete=True)
    sp, beta, inv, cands, known = fit._state
    exact = _scan.exact_D(sp, cands, beta, inv)
    kept = np.isfinite(known[cands])
    assert kept.any() and not kept.all()  # it did prune
    np.testing.assert_array_equal(known[cands][kept], exact[kept])
    np.testing.assert_array_equal(fit.Ds, exact)


def test_approximate_deviations_within_the_margin():
    x = wide_lattice(4, 3000)
    fit = fit_power_law(x, discrete=True)
    sp, beta, inv, cands, _ = fit._state
    rng = np.random.default_rng(0)
    ks = np.sort(rng.choice(cands, 400, replace=False))
    pos = np.minimum(ks[:, None] + rng.integers(0, sp.K, (ks.size, 12)), sp.K - 1)
    assert pos.size >= _scan._EM_MIN_SIZE
    approx = _scan._em_deviations(sp, ks, pos, beta)
    exact = _scan._deviations(sp, ks, pos, beta, inv)
    ok = np.isfinite(exact)
    assert ok.mean() > 0.9
    assert np.max(np.abs(approx[ok] - exact[ok])) <= _scan._APPROX_MARGIN


def test_euler_maclaurin_zeta_within_its_bound():
    mpmath.mp.dps = 60
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(400):
        s = rng.uniform(1.01, 12.0)
        q = float(np.floor(np.exp(rng.uniform(0.0, 14.0)))) + 1.0
        for m in (1, 2, 3):
            rise = s
            for i in range(1, m + 1):
                rise *= (s + 2 * i - 1) * (s + 2 * i)
            bound = (s - 1) * rise * _scan._EM_REM[m - 1] / q ** (2 * m + 2)
            if bound > _scan._EM_REL or s * math.log(q) > 1e3:
                continue
            got = _scan._em_zeta(np.array([s]), np.array([q]), np.array([1 / q]),
                                 np.array([math.log(q)]), m)[0]
            ref = float(mpmath.zeta(s, q))
            assert abs(got - ref) <= (bound + s * math.log(q) * 2e-15) * ref
            checked += 1
    assert checked > 300
