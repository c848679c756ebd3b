"""Alternative tail models on the 8 CSN datasets, continuous and discrete, against powerlaw 1.5.

For every (dataset, alternative): powerlaw's own likelihood code, evaluated at our parameters,
gives our per-point log-likelihoods (so both maximise the same function); our maximum is never
below powerlaw's (its fmin stops early, or on a rounding artefact, never higher); and powerlaw's
distribution_compare run with our parameters gives our R and p. Where the best fit is the
power-law limit of the family (lognormal sigma -> inf, stretched exponential beta -> 0), R = 0 and
p = 1, and the limit is checked against an independent 50-digit evaluation.
"""

import contextlib
import functools
import io
import math

import mpmath
import numpy as np
import pytest
from oracles import powerlaw_compare, powerlaw_fit
from scipy.optimize import minimize_scalar

from tailscope import fit_power_law
from tailscope.datasets import CLAUSET, clauset

ALTERNATIVES = ["exponential", "lognormal", "lognormal_positive", "stretched_exponential",
                "truncated_power_law"]
# discrete fits need whole numbers >= 1: fires has values < 1, surnames and quakes (10^magnitude)
# are not whole numbers
DISCRETE = ["blackouts", "cities", "flares", "terrorism", "words"]
# the discrete fits (powerlaw's discrete likelihoods, ~1.5 min in all): make test only
CASES = [(n, False) for n in sorted(CLAUSET)] + [pytest.param(n, True, marks=pytest.mark.slow)
                                                 for n in DISCRETE]
PL_PARAMS = {"exponential": ["Lambda"], "lognormal": ["mu", "sigma"],
             "lognormal_positive": ["mu", "sigma"], "stretched_exponential": ["Lambda", "beta"],
             "truncated_power_law": ["alpha", "Lambda"]}


def _data(name, discrete):
    x = clauset(name, scaled=not discrete)
    return x[x > 0]


@functools.cache
def _ours(name, discrete):
    return fit_power_law(_data(name, discrete), discrete=discrete)


@functools.cache
def _ref(name, discrete):
    return powerlaw_fit(_data(name, discrete), discrete=discrete)


def _quiet(fn, *a, **k):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*a, **k)


@pytest.mark.parametrize("name,discrete", CASES)
@pytest.mark.parametrize("dist", ALTERNATIVES)
def test_alternative_against_powerlaw(name, discrete, dist):
    ours_fit, ref_fit = _ours(name, discrete), _ref(name, discrete)
    assert ours_fit.xmin == ref_fit.xmin
    ours = ours_fit.distribution(dist)
    ref = getattr(ref_fit, dist)
    tail = ref_fit.data
    ref_ll = float(np.sum(_quiet(ref.loglikelihoods, tail)))
    assert ours.status == "success" and math.isfinite(ours.loglikelihood)
    params = [ours.parameters[p] for p in PL_PARAMS[dist]]
    comp = ours_fit.compare(dist)
    if dist == "stretched_exponential" and discrete and all(math.isfinite(v) for v in params):
        # powerlaw's 'round' stretched exponential computes (1 - e^-(Lx)^b) differences, which
        # cancel (Lambda ~ 1e50 here): the oracle is the same formula in 50-digit arithmetic
        at_ours = _round_se_mp(tail, ref_fit.xmin, *params)
        np.testing.assert_allclose(ours.loglikelihoods(), at_ours, rtol=1e-9)
        diff = _quiet(ref_fit.power_law.loglikelihoods, tail) - at_ours
        R = diff.sum()
        p = math.erfc(abs(R) / math.sqrt(2 * diff.size * diff.var()))
        assert comp.R == pytest.approx(R, rel=1e-6, abs=1e-6)
        assert comp.p == pytest.approx(p, rel=1e-5, abs=1e-9)
        assert ours.loglikelihood >= ref_ll - 1e-6
    elif all(math.isfinite(v) for v in params):
        # powerlaw's likelihood code at our parameters: our per-point values (the same function)
        ref.parameters(params)
        at_ours = _quiet(ref.loglikelihoods, tail)
        np.testing.assert_allclose(ours.loglikelihoods(), at_ours, rtol=1e-7, atol=1e-9)
        # and its comparison with our parameters: our R and p
        R, p = powerlaw_compare(ref_fit, "power_law", dist)
        assert comp.R == pytest.approx(R, rel=1e-6, abs=1e-6)
        assert comp.p == pytest.approx(p, rel=1e-5, abs=1e-9)
        if dist != "lognormal" or discrete:
            assert ours.loglikelihood >= ref_ll - 1e-6  # never below powerlaw's maximum
    else:  # the power-law limit of the family
        limit_pl = not discrete  # (the discrete limit is the 'round' power law, not the zeta one)
        if limit_pl:
            assert comp.R == 0.0 and comp.p == 1.0
            assert ours.loglikelihood == pytest.approx(float(np.sum(ours_fit.loglikelihoods())),
                                                       rel=1e-12)
        if dist != "lognormal" or discrete:
            assert ours.loglikelihood >= ref_ll - 1e-6


def _round_se_mp(tail, xmin, lam, beta):
    """powerlaw's discrete 'round' stretched exponential, per point, in 50-digit arithmetic."""
    mpmath.mp.dps = 50
    lam, beta = mpmath.mpf(lam), mpmath.mpf(beta)

    def log_sf(v):
        return -((lam * mpmath.mpf(v)) ** beta)

    z = log_sf(xmin - 0.5)
    u, inv = np.unique(tail, return_inverse=True)
    vals = np.array([float(log_sf(v - 0.5) + mpmath.log(-mpmath.expm1(log_sf(v + 0.5)
                                                                      - log_sf(v - 0.5))) - z)
                     for v in u])
    return vals[inv]


def _lognormal_ll_mp(tail, xmin, mu, sigma):
    """Exact (50-digit) log-likelihood of the lognormal truncated below at xmin."""
    mpmath.mp.dps = 50
    u, c = np.unique(tail, return_counts=True)
    mu, s = mpmath.mpf(mu), mpmath.mpf(sigma)
    log_z = mpmath.log(s * mpmath.sqrt(2 * mpmath.pi)
                       * mpmath.erfc((mpmath.log(xmin) - mu) / (s * mpmath.sqrt(2))) / 2)
    total = mpmath.mpf(0)
    for v, k in zip(u, c):
        lv = mpmath.log(mpmath.mpf(float(v)))
        total += int(k) * (-lv - (lv - mu) ** 2 / (2 * s * s) - log_z)
    return float(total)


@pytest.mark.parametrize("name", ["quakes", "words", "terrorism", "surnames"])
def test_continuous_lognormal_powerlaws_optimum_is_an_underflow_artefact(name):
    """powerlaw 1.5 reports lognormal fits better than the power law on these tails (quakes:
    R = -0.4737, p = 0.4263) at mu ~ -1500, sigma ~ 40, where its density exp(-(ln x - mu)^2 /
    2 sigma^2) ~ e^-730 is a denormal float. Evaluated exactly (mpmath, 50 digits), its fit is
    below the power law; the likelihood rises towards the power-law limit as sigma grows, and
    that limit is our answer (R = 0, p = 1)."""
    fit, ref_fit = _ours(name, False), _ref(name, False)
    ref = ref_fit.lognormal
    ours = fit.distribution("lognormal")
    pl_ll = float(np.sum(fit.loglikelihoods()))
    exact_at_ref = _lognormal_ll_mp(ref_fit.data, ref_fit.xmin, ref.mu, ref.sigma)
    reported = float(np.sum(_quiet(ref.loglikelihoods, ref_fit.data)))
    assert exact_at_ref < pl_ll <= ours.loglikelihood + 1e-9
    if name == "quakes":
        R, p = powerlaw_compare(ref_fit, "power_law", "lognormal")
        assert (R, p) == (pytest.approx(-0.4737, abs=1e-4), pytest.approx(0.4263, abs=1e-4))
        assert reported - exact_at_ref > 0.5  # powerlaw's own number is off by its underflow
    # the profile: for growing sigma the best lognormal approaches the power law from below
    lx0 = math.log(ref_fit.xmin)
    slope = (ref.mu - lx0) / ref.sigma**2  # mu = ln xmin + a sigma^2: the natural parameter a
    lls = []
    for s in (ref.sigma, 4 * ref.sigma, 64 * ref.sigma):  # the exact profile over mu, per sigma
        res = minimize_scalar(
            lambda a, s=s: -_lognormal_ll_mp(ref_fit.data, ref_fit.xmin, lx0 + a * s * s, s),
            bracket=(slope * 1.01, slope * 0.99), tol=1e-10)
        lls.append(-res.fun)
    assert lls[0] < lls[1] < lls[2] <= pl_ll + 1e-9
    assert ours.parameters == {"mu": -math.inf, "sigma": math.inf}
    assert tuple(fit.compare("lognormal")) == (0.0, 1.0)


def test_exponential_is_the_closed_form_maximum():
    """powerlaw's fmin (xtol 1e-4) stops short of the closed-form MLE (R off by 1e-3 on
    blackouts); ours is the maximum: the score n / Lambda - sum(x - xmin) vanishes."""
    fit = _ours("blackouts", False)
    exp = fit.distribution("exponential")
    tail = fit.tail
    assert tail.size / exp.Lambda - np.sum(tail - fit.xmin) == pytest.approx(0.0, abs=1e-9)
    disc = _ours("words", True).distribution("exponential")
    t = _ours("words", True).tail
    lam = disc.Lambda  # geometric score: n e^-L / (1 - e^-L) = sum(x - xmin)
    assert t.size / math.expm1(lam) == pytest.approx(np.sum(t - t.min()), rel=1e-12)


def test_stretched_exponential_limit_is_the_power_law():
    """On words the stretched exponential's likelihood rises as beta -> 0 (the power law)."""
    fit = _ours("words", False)
    se = fit.distribution("stretched_exponential")
    assert se.parameters == {"Lambda": math.inf, "beta": 0.0}
    tail, xmin = fit.tail, fit.xmin

    def profile(beta):  # independent: the rate's closed-form MLE for fixed beta, float64
        c = tail.size / np.sum(tail**beta - xmin**beta)
        return np.sum(np.log(beta * c) + (beta - 1) * np.log(tail) - c * (tail**beta - xmin**beta))

    vals = [profile(b) for b in (0.1, 0.01, 0.001)]
    assert vals[0] < vals[1] < vals[2] <= se.loglikelihood + 1e-6


@pytest.mark.parametrize("dist", ALTERNATIVES + ["power_law"])
def test_discrete_models_are_distributions_on_the_lattice(dist):
    """Probabilities on xmin, xmin + 1, ... sum to 1 and the CDF steps by them."""
    fit = _ours("terrorism", True)
    m = fit.distribution(dist)
    x = np.arange(fit.xmin, fit.xmin + 4000.0)
    pmf = m.pdf(x)
    cdf = m.cdf(x)
    assert cdf[0] == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(np.diff(cdf), pmf[:-1], rtol=1e-7, atol=1e-15)
    assert pmf.sum() + (1.0 - m.cdf(np.array([x[-1] + 1]))[0]) == pytest.approx(1.0, rel=1e-9)
