"""The discrete power law (fit_power_law(x, discrete=True)) against powerlaw 1.5, an independent
brute-force scan written here from CSN's formulas, the published words fit, and properties."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracles import powerlaw_fit
from scipy.special import zeta

from tailscope import fit_power_law
from tailscope.datasets import clauset

DISCRETE_SETS = ["words", "terrorism"]  # quakes (10^magnitude) are not whole numbers: refused


def test_non_whole_data_are_refused_not_fitted_on_a_lattice():
    x = clauset("quakes", scaled=False)
    with pytest.raises(ValueError, match="whole numbers"):
        fit_power_law(x, discrete=True)


def discrete_pareto(n, alpha, seed, xmin=1):
    """CSN's approximate discrete sampler (eq. D.6): round a continuous Pareto from xmin - 1/2."""
    rng = np.random.default_rng(seed)
    return np.floor((xmin - 0.5) * (1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0)) + 0.5)


def brute_force_discrete(x):
    """The O(n^2) scan written plainly from CSN: for every unique value but the largest, alpha by
    eq. 3.7, D against the left-limit ECDF with the zeta CDF; the first argmin."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    best = (np.inf, None, None)
    for xmin in np.unique(x)[:-1]:
        tail = x[x >= xmin]
        m = tail.size
        alpha = 1.0 + m / np.sum(np.log(tail / (xmin - 0.5)))
        u = np.unique(tail)
        below = np.searchsorted(tail, u, side="left") / m
        model = 1.0 - zeta(alpha, u) / zeta(alpha, xmin)
        D = np.max(np.abs(model - below))
        if D < best[0]:
            best = (D, xmin, alpha)
    return best[1], best[2], best[0]


@pytest.mark.parametrize("name", DISCRETE_SETS)
def test_csn_datasets_equal_powerlaw(name):
    x = clauset(name, scaled=False)
    ours = fit_power_law(x, discrete=True)
    ref = powerlaw_fit(x, discrete=True)
    assert ours.discrete and ours.ok
    assert ours.xmin == ref.xmin and ours.n_tail == int(ref.n_tail)
    for ours_v, ref_v in [(ours.alpha, ref.alpha), (ours.D, ref.D), (ours.sigma, ref.sigma)]:
        assert ours_v == pytest.approx(ref_v, rel=1e-6, abs=1e-12)
    ll_ref = float(np.sum(ref.power_law.loglikelihoods(ref.data)))
    assert float(np.sum(ours.loglikelihoods())) == pytest.approx(ll_ref, rel=1e-9)
    np.testing.assert_array_equal(ours.xmins, ref.xmins)
    np.testing.assert_allclose(ours.alphas, ref.alphas, rtol=1e-12)
    # the D curve: powerlaw computes 1 - zeta(alpha, x) in float64, which cancels when
    # zeta(alpha, xmin) is tiny (far-right candidates, D = 1 there); compare where it is not
    z0 = zeta(ref.alphas, ref.xmins)
    ok = z0 > 1e-6
    assert ok.sum() > 0.75 * ok.size
    np.testing.assert_allclose(ours.Ds[ok], ref.Ds[ok], rtol=1e-6, atol=1e-9)


def test_words_matches_the_published_fit():
    """CSN Table 6.1: word frequencies, alpha 1.95(2), xmin 7."""
    fit = fit_power_law(clauset("words"), discrete=True)
    assert fit.xmin == 7 and fit.alpha == pytest.approx(1.95, abs=0.005)


integer_samples = st.lists(st.integers(1, 400), min_size=3, max_size=150).filter(
    lambda v: len(set(v)) >= 3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(integer_samples)
def test_scan_equals_brute_force(values):
    ours = fit_power_law(values, discrete=True)
    xmin, alpha, D = brute_force_discrete(values)
    assert ours.xmin == xmin
    assert ours.alpha == pytest.approx(alpha, rel=1e-12)
    assert ours.D == pytest.approx(D, rel=1e-9, abs=1e-14)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10**6), st.floats(1.6, 3.5), st.integers(1, 5), st.integers(30, 600))
def test_random_discrete_samples_equal_powerlaw(seed, alpha, xmin, n):
    x = discrete_pareto(n, alpha, seed, xmin)
    if np.unique(x).size < 2:
        return
    ours, ref = fit_power_law(x, discrete=True), powerlaw_fit(x, discrete=True)
    assert ours.xmin == ref.xmin
    assert ours.alpha == pytest.approx(ref.alpha, rel=1e-9)
    assert ours.D == pytest.approx(ref.D, rel=1e-6, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.floats(1.3, 5.0), st.integers(1, 50))
def test_model_functions_are_a_probability_distribution(alpha, xmin):
    """pmf = x^-alpha / zeta(alpha, xmin) on the lattice; CDF steps by the pmf; CCDF = 1 - CDF."""
    x = np.arange(xmin, xmin + 200, dtype=np.float64)
    fit = fit_power_law(np.concatenate([x, x[:5]]), xmin=float(xmin), discrete=True)
    fit = type(fit)(**{**fit.__dict__, "alpha": alpha, "_cache": {}})
    pmf = fit.pdf(x)
    tail_mass = zeta(alpha, xmin + 200) / zeta(alpha, xmin)
    assert pmf.sum() + tail_mass == pytest.approx(1.0, rel=1e-12)
    cdf = fit.cdf(x)
    np.testing.assert_allclose(np.diff(cdf), pmf[:-1], rtol=1e-9, atol=1e-15)
    assert cdf[0] == 0.0
    np.testing.assert_allclose(fit.ccdf(x), 1.0 - cdf)
    assert fit.pdf(np.array([xmin - 1.0]))[0] == 0.0
    np.testing.assert_allclose(np.log(pmf), fit.loglikelihoods(x), rtol=1e-12)


def test_fixed_xmin_and_range_equal_powerlaw():
    x = clauset("words")
    for xmin in (3.0, 7.0, 20.0, (5.0, 40.0)):
        ours, ref = fit_power_law(x, xmin=xmin, discrete=True), powerlaw_fit(x, xmin=xmin,
                                                                             discrete=True)
        assert ours.xmin == ref.xmin and ours.n_tail == int(ref.n_tail)
        assert ours.alpha == pytest.approx(ref.alpha, rel=1e-12)
        assert ours.D == pytest.approx(ref.D, rel=1e-9)


def test_bad_input():
    with pytest.raises(ValueError, match=">= 1"):
        fit_power_law([0.5, 2.0, 3.0], discrete=True)
    with pytest.raises(ValueError, match="xmax"):
        fit_power_law([1.0, 2.0, 3.0], discrete=True, xmax=2.5)
    with pytest.raises(ValueError, match="fix_fingers"):
        fit_power_law([1.0, 2.0, 3.0], discrete=True, fix_fingers="clip_xmax")
    failed = fit_power_law([4.0, 4.0, 4.0], discrete=True)
    assert not failed.ok and failed.discrete and math.isnan(failed.alpha)
    fit = fit_power_law(clauset("terrorism"), discrete=True)
    with pytest.raises(ValueError, match="discrete"):
        fit.goodness_of_fit(n_boot=10)
    assert "discrete=True" in repr(fit) and fit.to_dict()["discrete"] is True


def _cli(*args):
    import contextlib
    import io

    from tailscope.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def test_cli_discrete(tmp_path):
    import json

    x = clauset("words")
    path = tmp_path / "words.txt"
    path.write_text("\n".join(str(int(v)) for v in x))
    code, out, _ = _cli("fit", path, "--discrete", "--json", "--compare", "lognormal",
                        "exponential")
    assert code == 0
    got = json.loads(out)
    ref = powerlaw_fit(x, discrete=True)
    assert got["discrete"] is True and got["xmin"] == ref.xmin
    assert got["alpha"] == pytest.approx(ref.alpha, rel=1e-12)
    fit = fit_power_law(x, discrete=True)
    for c in got["compare"]:
        assert c["R"] == pytest.approx(fit.compare(c["distribution"]).R, rel=1e-12)
    code, out, _ = _cli("fit", path, "--discrete")
    assert code == 0 and "discrete power-law tail of 2958" in out
    for bad in (("--bootstrap", "10"), ("--xmax", "max")):
        code, _, err = _cli("fit", path, "--discrete", *bad)
        assert code == 2 and len(err.strip().splitlines()) == 1
    half = tmp_path / "half.txt"
    half.write_text("0.5\n2\n3\n")
    code, _, err = _cli("fit", half, "--discrete")
    assert code == 2 and ">= 1" in err


# --- the discrete alternatives' fitters (fit_tail_model(..., discrete=True)) -----------------------
def _mp_round_ll(tail, xmin, log_sf):
    """The 'round' log-likelihood sum_x log((S(x - 1/2) - S(x + 1/2)) / S(xmin - 1/2)), 40 digits."""
    import mpmath

    mpmath.mp.dps = 40
    u, c = np.unique(tail, return_counts=True)
    half = mpmath.mpf(1) / 2
    z = log_sf(mpmath.mpf(xmin) - half)
    total = mpmath.mpf(0)
    for v, k in zip(u, c):
        lo, hi = log_sf(mpmath.mpf(float(v)) - half), log_sf(mpmath.mpf(float(v)) + half)
        total += int(k) * (lo + mpmath.log(-mpmath.expm1(hi - lo)) - z)
    return float(total)


def _mp_lognormal(tail, xmin, mu, sigma):
    import mpmath

    mu, s = mpmath.mpf(mu), mpmath.mpf(sigma)
    return _mp_round_ll(tail, xmin, lambda v: mpmath.log(mpmath.erfc((mpmath.log(v) - mu)
                                                                     / (s * mpmath.sqrt(2)))))


def _mp_stretched(tail, xmin, lam, beta):
    import mpmath

    lam, beta = mpmath.mpf(lam), mpmath.mpf(beta)
    return _mp_round_ll(tail, xmin, lambda v: -((lam * v) ** beta))


def _mp_tpl(tail, xmin, alpha, lam):
    import mpmath

    mpmath.mp.dps = 40
    a, la = mpmath.mpf(alpha), mpmath.mpf(lam)
    log_z = -la * xmin + mpmath.log(mpmath.lerchphi(mpmath.exp(-la), a, xmin))
    return float(sum(-a * mpmath.log(float(v)) - la * float(v) - log_z for v in tail))


_MP_LL = {"lognormal": (_mp_lognormal, ("mu", "sigma"), (False, True)),
          "stretched_exponential": (_mp_stretched, ("Lambda", "beta"), (True, True)),
          "truncated_power_law": (_mp_tpl, ("alpha", "Lambda"), (False, True))}


def _discrete_sample(seed, kind, n):
    rng = np.random.default_rng(seed)
    xmin = int(rng.integers(1, 40))
    if kind == "pareto":
        x = discrete_pareto(n, rng.uniform(1.6, 3.5), seed, xmin)
    elif kind == "lognormal":
        x = np.round(np.exp(rng.normal(rng.uniform(1, 5), rng.uniform(0.5, 2.5), n))) + xmin
    else:
        x = np.round(rng.weibull(rng.uniform(0.3, 1.5), n) * rng.uniform(5, 500)) + xmin
    return x[x >= xmin]


def _exact_maximum_check(name, tail, xmin):
    """The fit of ``name`` against the exact likelihood: a Nelder-Mead polish from the fitted
    parameters finds nothing higher (beyond 1e-11 relative); at a power-law limit the reported
    likelihood is the exact 'round' power law's maximum."""
    import mpmath
    from scipy.optimize import minimize, minimize_scalar

    from tailscope.fit import fit_tail_model

    mp_ll, names, positive = _MP_LL[name]
    fit = fit_tail_model(name, tail, xmin, discrete=True)
    theta = [fit.parameters[p] for p in names]
    if not all(math.isfinite(v) for v in theta):  # lognormal sigma = inf, stretched beta = 0
        assert name != "truncated_power_law"

        def round_pl(a):  # -loglik of the 'round' power law, S(x) = x^(1 - alpha)
            return -_mp_round_ll(tail, xmin, lambda v: (1 - a) * mpmath.log(v)) if a > 1 \
                else math.inf

        best = minimize_scalar(round_pl, bracket=(1.5, 2.5), tol=1e-10)
        if theta[1] == 0.0 or math.isinf(theta[1]):  # the limit itself: its maximum
            assert fit.loglikelihood == pytest.approx(-best.fun, rel=1e-10)
        else:  # a stretched exponential just off the limit (beta ~ 1e-5: Lambda overflows)
            assert fit.loglikelihood >= -best.fun - 1e-10 * abs(best.fun)
        return
    lam_zero = name == "truncated_power_law" and theta[1] == 0.0  # Lambda underflowed: use it

    def neg_ll(z):
        t = [math.exp(v) if pos and not lam_zero else v for v, pos in zip(z, positive)]
        return -mp_ll(tail, xmin, *t) if t[1] >= 0 else math.inf

    z0 = np.array([math.log(v) if pos and not lam_zero else v for v, pos in zip(theta, positive)])
    f0 = neg_ll(z0)
    assert -f0 == pytest.approx(fit.loglikelihood, rel=1e-9)  # float64 'round' vs exact
    simplex = z0 + np.vstack([np.zeros(2), np.diag(1e-3 * np.maximum(np.abs(z0), 1e-2))])
    res = minimize(neg_ll, z0, method="Nelder-Mead",
                   options={"initial_simplex": simplex, "maxfev": 40, "xatol": 1e-12,
                            "fatol": 1e-14})
    assert f0 <= res.fun + 1e-11 * abs(f0), (name, theta, f0 - res.fun)


@pytest.mark.slow
@settings(max_examples=4, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from(["pareto", "lognormal", "weibull"]),
       st.integers(40, 100))
def test_discrete_alternatives_are_maxima_in_exact_arithmetic(seed, kind, n):
    """At the fitted parameters the exact (40-digit) likelihood is at its maximum."""
    tail = _discrete_sample(seed, kind, n)
    if np.unique(tail).size < 3:
        return
    for name in _MP_LL:
        _exact_maximum_check(name, tail, float(tail.min()))


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from(["pareto", "lognormal", "weibull"]),
       st.integers(30, 200))
def test_round_objectives_and_limit_derivatives(seed, kind, n):
    """The batched 'round' likelihoods (cell integrals, no S(x - 1/2) - S(x + 1/2) cancellation)
    equal the 40-digit ones at random parameters; on the power-law limit line the analytic
    derivatives (maximiser in a, slope into the domain) equal finite differences."""
    from tailscope.fit import distributions as dist

    tail = _discrete_sample(seed, kind, n)
    if np.unique(tail).size < 3:
        return
    xmin = float(tail.min())
    x0 = xmin - 0.5
    rng = np.random.default_rng(seed)
    ln = dist._RoundLognormalNll(dist._FAMILIES["lognormal"], tail, x0)
    se = dist._RoundStretchedNll(dist._FAMILIES["stretched_exponential"], tail, x0)
    mu, sigma = rng.uniform(-3.0, 5.0), 10 ** rng.uniform(-0.5, 1.0)
    z = np.array([(mu - math.log(x0)) / sigma**2, -0.5 / sigma**2])  # (a, b) of (mu, sigma)
    assert ln(z) == pytest.approx(-_mp_lognormal(tail, xmin, mu, sigma), rel=1e-12)
    lam, beta = 10 ** rng.uniform(-3.0, 0.0) / xmin, rng.uniform(0.05, 1.5)
    z = np.array([math.log(beta) + beta * math.log(lam * x0), beta])  # kappa = beta (lam x0)^beta
    assert se(z) == pytest.approx(-_mp_stretched(tail, xmin, lam, beta), rel=1e-12)
    for obj, inward, coord in ((ln, -1.0, lambda a: a), (se, 1.0, lambda a: math.log(-a))):
        a, slope = obj.limit_line()  # (the stretched exponential's line: ln kappa = ln(-a))
        c = coord(a)
        h = 1e-4 * max(abs(c), 0.1)
        fa = obj.many(np.array([[c - h, 0.0], [c, 0.0], [c + h, 0.0]]))
        curvature = (fa[0] - 2 * fa[1] + fa[2]) / h**2
        rounding = 1e-13 * abs(fa[1]) / h
        assert curvature > 0 and abs(fa[2] - fa[0]) / (2 * h) <= 1e-3 * curvature * h + rounding
        e = 1e-7  # one-sided, second order, into the domain
        fd = (4 * obj(np.array([c, inward * e])) - obj(np.array([c, inward * 2 * e]))
              - 3 * fa[1]) / (2 * e)
        assert inward * slope == pytest.approx(fd, rel=1e-4, abs=1e-4 * obj.n)
