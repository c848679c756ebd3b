"""tailscope.compat.powerlaw against powerlaw 1.5 (the oracle) on Clauset, Shalizi & Newman's data.

Every attribute of ``Fit`` and of its power law equals powerlaw 1.5's to 1e-9. For the other
distributions powerlaw's ``fmin`` (xtol 1e-4) stops short of the maximum, so the comparison is
made where both compute the same function: powerlaw's own likelihood, CDF and
``distribution_compare`` evaluated at our parameters give our numbers to 1e-9, and where
powerlaw's optimiser is run on to convergence (its own Nelder-Mead from its own answer, tight
tolerances) its parameters equal ours to 1e-6 (the optimum is flat: 1e-9 in the likelihood is
~1e-5 in the parameters). Where powerlaw's lognormal optimum is an underflow artefact (quakes,
words, terrorism, surnames; see tests/fit/test_alternatives_csn.py) ours is the power-law limit
and only the likelihood order is checked.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import warnings

import matplotlib
import mpmath
import numpy as np
import pandas as pd
import pytest
from oracles import powerlaw_fit
from scipy.optimize import fmin

import tailscope.compat.powerlaw as facade
from tailscope.datasets import CLAUSET, clauset

matplotlib.use("Agg")

ALTERNATIVES = ["exponential", "lognormal", "lognormal_positive", "stretched_exponential",
                "truncated_power_law"]
DISCRETE = ["blackouts", "cities", "flares", "terrorism", "words"]
FAST = {"blackouts", "words"}
RTOL = 1e-9


def _quiet(fn, *a, **k):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


def _data(name, discrete):
    x = clauset(name, scaled=not discrete)
    return x[x > 0]


@functools.cache
def _pair(name, discrete):
    x = _data(name, discrete)
    return facade.Fit(x, discrete=discrete), powerlaw_fit(x, discrete=discrete)


def _close(a, b, rtol=RTOL, atol=1e-12):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float),
                               rtol=rtol, atol=atol)


def _case(name, discrete):
    marks = [] if name in FAST and not (discrete and name != "words") else [pytest.mark.slow]
    return pytest.param(name, discrete, marks=marks, id=f"{name}-{'d' if discrete else 'c'}")


CASES = [_case(n, False) for n in sorted(CLAUSET)] + [_case(n, True) for n in DISCRETE]


@pytest.mark.parametrize("name,discrete", CASES)
def test_fit_attributes_equal_powerlaw15(name, discrete):
    ours, ref = _pair(name, discrete)
    # powerlaw's discrete CDF and normaliser subtract 1 - zeta(alpha, xmin) from 1: where zeta is
    # tiny (xmin = 230000 on blackouts: 1e-7) it keeps only -log10(zeta) fewer digits
    from scipy.special import zeta

    rtol = RTOL if not discrete else max(RTOL, 1e-13 / zeta(ours.alpha, ours.xmin))
    for k in ("alpha", "xmin", "sigma", "n_tail", "n"):
        _close(getattr(ours, k), getattr(ref, k))
    _close(ours.D, ref.D, rtol=rtol)
    assert ours.noise_flag == ref.noise_flag and ours.discrete == ref.discrete
    assert ours.fixed_xmin == ref.fixed_xmin and ours.xmax == ref.xmax
    _close(ours.xmins, ref.xmins)
    _close(ours.alphas, ref.alphas)
    _close(ours.sigmas, ref.sigmas)
    assert (ours.in_ranges == ref.in_ranges).all()
    if name in FAST:  # the D-vs-xmin curve (computed lazily and exactly by tailscope)
        keep = np.ones(ours.xmins.size, dtype=bool)
        if discrete:  # powerlaw's discrete CDF is (1 - zeta(a, x)) - (1 - zeta(a, xmin)): it
            # loses digits where zeta(a, xmin) is tiny (the last candidates of words: 1e-3 in D)
            keep = zeta(ours.alphas, ours.xmins) > 1e-4
        _close(ours.Ds[keep], ref.Ds[keep])
    _close(ours.data, ref.data)
    pl, rpl = ours.power_law, ref.power_law
    for k in ("alpha", "sigma", "D", "D_plus", "D_minus", "V", "Kappa", "Asquare"):
        _close(getattr(pl, k), getattr(rpl, k), rtol=rtol, atol=1e-10)
    assert pl.parameter1 == pl.alpha and pl.parameter1_name == "alpha" and pl.name == "power_law"
    _close(pl.pdf(), _quiet(rpl.pdf), rtol=rtol)
    _close(pl.cdf(), _quiet(rpl.cdf), rtol=rtol, atol=rtol * 1e-3)
    _close(pl.ccdf(), _quiet(rpl.ccdf), rtol=rtol, atol=rtol * 1e-3)
    _close(pl.loglikelihoods(ours.data), _quiet(rpl.loglikelihoods, ref.data), rtol=rtol)
    for a, b in zip(ours.cdf(), ref.cdf()):
        _close(a, b)
    for a, b in zip(ours.ccdf(original_data=True), ref.ccdf(original_data=True)):
        _close(a, b)
    for a, b in zip(ours.pdf(), ref.pdf()):
        _close(a, b)


def _powerlaw_converged(ref_dist, data):
    """powerlaw's own Nelder-Mead (scipy fmin, as its Distribution.fit) restarted from its
    answer with tight tolerances: the optimum of powerlaw's own likelihood code."""
    start = [getattr(ref_dist, "Lambda" if p == "lambda" else p) for p in _names(ref_dist)]

    def nll(params):
        ref_dist.parameters(params)
        return -float(np.sum(_quiet(ref_dist.loglikelihoods, data)))

    best = fmin(nll, start, xtol=1e-13, ftol=1e-13, maxiter=20000, maxfun=40000, disp=False)
    best = fmin(nll, best, xtol=1e-13, ftol=1e-13, maxiter=20000, maxfun=40000, disp=False)
    return dict(zip(_names(ref_dist), best)), -nll(best)


def _names(dist):
    return [getattr(dist, f"parameter{i}_name") for i in (1, 2, 3)
            if getattr(dist, f"parameter{i}_name", None)]


ALT_CASES = [pytest.param(n, d, marks=[] if n == "blackouts" else [pytest.mark.slow])
             for n in sorted(CLAUSET) for d in ALTERNATIVES]


@pytest.mark.parametrize("name,dist", ALT_CASES)
def test_alternatives_against_powerlaw15(name, dist):
    ours, ref = _pair(name, False)
    mine = getattr(ours, dist)
    theirs = getattr(ref, dist)
    assert mine.name == dist and _names(mine) == _names(theirs)  # 1.5's names ('lambda')
    assert list(mine.parameters) == mine.parameter_names  # 2.0's ('Lambda')
    params = dict(mine.parameters)
    ll_theirs_own = float(np.sum(_quiet(theirs.loglikelihoods, ref.data)))
    ll_mine = float(np.sum(mine.loglikelihoods()))
    assert ll_mine == pytest.approx(mine.loglikelihood, rel=1e-12)
    if not all(math.isfinite(v) for v in params.values()):
        # the power-law limit of the family (lognormal sigma -> inf, stretched beta -> 0):
        # powerlaw's optimum lies below it (or is an underflow artefact, see the module doc)
        assert ours.distribution_compare("power_law", dist) == (0.0, 1.0)
        if dist != "lognormal":
            assert ll_mine >= ll_theirs_own - 1e-6
        return
    # powerlaw's code at our parameters gives our likelihoods, CDF and comparison
    theirs.parameters(list(params.values()))
    _close(mine.loglikelihoods(), _quiet(theirs.loglikelihoods, ref.data), rtol=1e-9, atol=1e-9)
    if dist == "stretched_exponential" and params["Lambda"] > 1e10:
        # (Lambda x)^beta with Lambda ~ 1e50: powerlaw's CDF 1 - e^-(...) cancels to nonsense;
        # the exact CDF, written in logarithms: 1 - exp((L xmin)^b - (L x)^b)
        lam, b = math.log(params["Lambda"]), params["beta"]
        exact = -np.expm1(np.exp(b * (lam + math.log(ours.xmin))) - np.exp(b * (lam + np.log(
            ours.data))))
        _close(mine.cdf(), exact, rtol=1e-9, atol=1e-12)
    else:
        _close(mine.cdf(), _quiet(theirs.cdf, ref.data), rtol=1e-9, atol=1e-12)
        mine.KS()
        _close([mine.D, mine.V], [_quiet(theirs.KS, ref.data), theirs.V], rtol=1e-8,
               atol=1e-12)
    for normalized in (False, True):
        R, p = ours.distribution_compare("power_law", dist, normalized_ratio=normalized)
        Rr, pr = _quiet(ref.distribution_compare, "power_law", dist,
                        normalized_ratio=normalized)
        _close([R, p], [Rr, pr], rtol=1e-8, atol=1e-9)
    # and powerlaw's optimiser, run on to convergence, reaches our parameters
    conv, ll_conv = _powerlaw_converged(theirs, ref.data)
    assert ll_mine >= ll_conv - 1e-9 * abs(ll_conv), (ll_mine, ll_conv)
    # the parameters agree to what the likelihood resolves: on the lognormal's flat ridge a
    # change of 1e-5 in mu moves the log-likelihood by ~1e-12 of itself
    rel = 1e-4 if dist.startswith("lognormal") else 1e-5
    for got, want in zip(conv.values(), params.values()):
        if want > 1e10:  # a rate of 1e52: determined in the log (its scale is (Lambda x)^beta)
            got, want = math.log(got), math.log(want)
        assert got == pytest.approx(want, rel=rel, abs=1e-9), (conv, params)


def test_exact_discrete_alpha_words():
    """estimate_discrete=False: the exact maximum of the zeta likelihood (50-digit check). CSN
    and powerlaw 1.5's fmin give 1.952718 (its xtol 1e-4); the maximum is 1.9527275."""
    x = _data("words", True)
    f = facade.Fit(x, discrete=True, estimate_discrete=False)
    assert f.xmin == 7
    t = f.data
    n, s = t.size, float(np.sum(np.log(t)))
    mpmath.mp.dps = 30
    exact = float(mpmath.findroot(lambda a: mpmath.diff(
        lambda b: b * s + n * mpmath.log(mpmath.zeta(b, 7)), a), 1.9527))
    assert f.alpha == pytest.approx(exact, rel=1e-9)
    ref = powerlaw_fit(x, discrete=True, xmin=7, estimate_discrete=False)
    assert abs(ref.alpha - 1.952718) < 1e-6  # powerlaw's stop, short of the maximum
    ll = lambda a: -a * s - n * math.log(float(mpmath.zeta(a, 7)))  # noqa: E731
    assert ll(f.alpha) > ll(ref.alpha)
    est = facade.Fit(x, discrete=True)  # the default: CSN's estimate, as powerlaw 1.5
    assert est.alpha == pytest.approx(ref.power_law.alpha if False else 1.950157, abs=1e-6)


@pytest.mark.parametrize("option", [{"xmin_distance": "V"}, {"sigma_threshold": 0.1},
                                    {"parameter_range": {"alpha": (2.2, None)}},
                                    {"xmin": (50.0, 1000.0)}, {"xmin": 230.0},
                                    {"initial_parameters": [1.2]},
                                    {"xmax": 10000.0, "xmin": 230.0}])
def test_fit_options_against_powerlaw15(option):
    x = _data("blackouts", False)
    ours = facade.Fit(x, **option)
    ref = powerlaw_fit(x, **option)
    _close(ours.xmin, ref.xmin)
    _close(ours.n_tail, ref.n_tail)
    if "xmax" in option:
        # powerlaw 1.5 normalises its truncated power law with xmax + 1 and stops fmin at
        # xtol 1e-4; ours is the exact truncated maximum: our likelihood is the higher one
        rpl = ref.power_law
        mine = ours.power_law
        ll_mine = float(np.sum(mine.loglikelihoods()))
        rpl.parameters([mine.alpha])
        rpl.xmax, saved = None, rpl.xmax  # the exact truncated density, written independently
        a, lo, hi = mine.alpha, ours.xmin, option["xmax"]
        exact = np.log((a - 1) / lo) - a * np.log(ours.data / lo) - math.log(1 - (hi / lo) ** (1 - a))
        rpl.xmax = saved
        _close(mine.loglikelihoods(), exact, rtol=1e-12)
        assert ll_mine >= float(np.sum(_quiet(ref.power_law.loglikelihoods, ref.data))) - 1e-9
        return
    _close(ours.alpha, ref.alpha)
    _close(ours.sigma, ref.sigma)
    if "xmin_distance" in option:
        _close(ours.V, ref.V)
        _close(ours.Vs, ref.Vs)
    if not isinstance(option.get("xmin"), float):
        same = ours.in_ranges == ref.in_ranges
        if "parameter_range" in option:
            # a candidate whose maximum is below the range: powerlaw refits it with fmin on its
            # flat 1e-308 floor, which wanders just inside the bound and calls it valid
            odd = ~same
            assert (ref.in_ranges[odd] & ~ours.in_ranges[odd]).all()
            assert np.all(np.abs(ref.alphas[odd] - 2.2) < 1e-3) and ours.alphas[odd].max() < 2.2
            same = same & ours.in_ranges
        else:
            assert same.all()
        _close(ours.alphas[same], ref.alphas[same])


def test_module_functions_against_powerlaw15():
    import powerlaw

    x = _data("cities", False)
    for fn in ("cdf", "ccdf"):
        for a, b in zip(getattr(facade, fn)(x), getattr(powerlaw, fn)(x)):
            _close(a, b, rtol=0, atol=0)
    for a, b in zip(facade.pdf(x), powerlaw.pdf(x)):
        _close(a, b, rtol=0, atol=0)
    b_data = _data("blackouts", False)  # linear bins: one per unit, so a short range
    for a, b in zip(facade.pdf(b_data, linear_bins=True), powerlaw.pdf(b_data, linear_bins=True)):
        _close(a, b, rtol=0, atol=0)
    small = x / 1000.0  # below 1: powerlaw rescales by xmin first
    for a, b in zip(facade.pdf(small), powerlaw.pdf(small)):
        _close(a, b, rtol=1e-15, atol=0)
    _close(facade.trim_to_range(x, xmin=10, xmax=100), powerlaw.trim_to_range(x, xmin=10, xmax=100))
    assert facade.is_discrete(np.array([1.0, 2.0])) and not facade.is_discrete(np.array([1.5]))
    rng = np.random.default_rng(0)
    l1, l2 = rng.normal(size=50), rng.normal(size=50)
    for nested in (False, True):
        for norm in (False, True):
            _close(facade.loglikelihood_ratio(l1, l2, nested=nested, normalized_ratio=norm),
                   powerlaw.loglikelihood_ratio(l1.copy(), l2.copy(), nested=nested,
                                                normalized_ratio=norm))
    _close(facade.nested_loglikelihood_ratio(l1, l2), powerlaw.nested_loglikelihood_ratio(l1, l2))


def test_plots_draw_powerlaws_data():
    import matplotlib.pyplot as plt
    import powerlaw

    x = _data("blackouts", False)
    ours, ref = _pair("blackouts", False)
    for make in (lambda m, f: m.plot_pdf(x, ax=plt.figure().gca()),
                 lambda m, f: f.plot_ccdf(ax=plt.figure().gca(), original_data=True),
                 lambda m, f: f.plot_cdf(ax=plt.figure().gca()),
                 lambda m, f: f.power_law.plot_ccdf(ax=plt.figure().gca()),
                 lambda m, f: f.power_law.plot_pdf(ax=plt.figure().gca())):
        a = make(facade, ours)
        b = _quiet(make, powerlaw, ref)
        assert a.get_xscale() == "log" and a.get_yscale() == "log"
        la, lb = a.lines[-1], b.lines[-1]
        _close(la.get_xdata(), lb.get_xdata())
        _close(la.get_ydata(), lb.get_ydata())
    ax = facade.plot_ccdf(x)  # no ax: the current axes
    assert ax.lines
    plt.close("all")


@pytest.mark.parametrize("cls,params", [("Power_Law", [2.5]), ("Exponential", [0.01]),
                                        ("Lognormal", [1.0, 1.5]),
                                        ("Stretched_Exponential", [0.01, 0.5]),
                                        ("Truncated_Power_Law", [1.5, 0.01])])
@pytest.mark.parametrize("discrete", [False, True])
@pytest.mark.parametrize("xmin", [1, 5])
def test_distributions_alone_against_powerlaw15(cls, params, discrete, xmin):
    import powerlaw

    xs = np.arange(float(xmin), 400.0) if discrete else np.geomspace(xmin, 400.0, 200)
    ours = getattr(facade, cls)(xmin=xmin, parameters=params, discrete=discrete)
    ref = getattr(powerlaw, cls)(xmin=xmin, parameters=params, discrete=discrete)
    assert list(ours.parameters.values()) == params and ours.parameter1 == params[0]
    # powerlaw 2.0's keywords by name (Power_Law(xmin=1, alpha=2.5)) give the same distribution
    by_name = getattr(facade, cls)(xmin=xmin, discrete=discrete, **dict(zip(ours.parameter_names,
                                                                         params)))
    assert by_name.parameters == ours.parameters
    if discrete and cls == "Truncated_Power_Law":
        # powerlaw 1.5's discrete cutoff law: its mpmath Lerch normaliser; ours is 'round'
        return
    _close(ours.pdf(xs), _quiet(ref.pdf, xs), rtol=1e-7, atol=1e-300)
    if discrete and cls in ("Lognormal", "Stretched_Exponential"):
        # powerlaw 1.5's CDF of a 'round' law is the continuous CDF at the integers, not the
        # sum of its own probabilities; ours is the sum: P(X < x) steps by pdf(x)
        cum = np.concatenate([[0.0], np.cumsum(ours.pdf(xs))[:-1]])
        _close(ours.cdf(xs), cum, rtol=1e-9, atol=1e-14)
    else:
        _close(ours.cdf(xs), _quiet(ref.cdf, xs), rtol=1e-7, atol=1e-12)
    r = ours.generate_random(4000, rng=1)
    assert r.min() >= xmin and (not discrete or facade.is_discrete(r))
    # the draws follow the CDF: a KS distance at sampling level
    u, first = np.unique(np.sort(r), return_index=True)
    cdf_at = ours.cdf(u)
    assert np.max(np.abs(cdf_at - first / r.size)) < 0.04


def test_initial_parameters_as_one_dict():
    # powerlaw 2.0 hands Fit's initial_parameters dict to every distribution, each taking its own
    # names; a start value never moves the (unique) power-law maximum
    x = _data("blackouts", False)
    plain = facade.Fit(x)
    f = facade.Fit(x, initial_parameters={"alpha": 1.2, "Lambda": 1e-2, "mu": None})
    assert (f.xmin, f.alpha) == (plain.xmin, plain.alpha)
    assert f.truncated_power_law.loglikelihood == pytest.approx(
        plain.truncated_power_law.loglikelihood, rel=1e-12)


@pytest.mark.parametrize("alpha", [2.5, 0.7])
def test_power_law_alone_with_xmax_is_a_density(alpha):
    from scipy.integrate import quad

    pl = facade.Power_Law(xmin=5, xmax=300, parameters=[alpha])
    total, _ = quad(lambda v: float(pl.pdf(np.array([v]))[0]), 5, 300, limit=200)
    assert total == pytest.approx(1.0, rel=1e-9)
    assert pl.cdf(np.array([300.0]))[0] == pytest.approx(1.0, rel=1e-12)


def test_distances_are_the_fits_whenever_read():
    # D and its siblings are computed on first use: the fit's, as powerlaw computes them in fit(),
    # even when the parameters are set afterwards or the distribution is refitted
    x = _data("blackouts", False)
    f, g = facade.Fit(x), facade.Fit(x)
    want = g.lognormal.KS()
    want_v = g.lognormal.V
    f.lognormal.parameters([1.0, 1.0])  # after the fit, before D is read
    assert f.lognormal.D == want and f.lognormal.V == want_v
    d = facade.Exponential(xmin=f.xmin, data=f.data)
    first = d.D
    d.fit(f.data[f.data < 1000.0])
    assert d.D != first and d.D == pytest.approx(d.KS(), rel=0, abs=0)


def test_constant_data_warn_then_refuse_the_alternatives():
    with pytest.warns(RuntimeWarning, match="fewer than 2 unique values"):
        f = facade.Fit([2.0] * 50)
    assert f.noise_flag and math.isnan(f.alpha)
    with pytest.raises(ValueError, match="found no xmin"):
        f.distribution_compare("power_law", "lognormal")


def test_parameters_by_name_are_all_or_none():
    with pytest.raises(ValueError, match="needs all of"):
        facade.Truncated_Power_Law(xmin=1, alpha=1.5)
    assert facade.Exponential(xmin=1, **{"lambda": 0.5}).Lambda == 0.5  # 1.5's name of Lambda
    assert facade.Power_Law(xmin=1).parameters == {"alpha": None}  # nothing set yet


def test_standard_errors_from_observed_information():
    ours, _ = _pair("blackouts", False)
    n = ours.n
    se = ours.power_law.standard_errors["alpha"]
    assert se == pytest.approx((ours.alpha - 1) / math.sqrt(n), rel=1e-4)  # CSN eq. 3.2
    assert ours.power_law.standard_err == pytest.approx((ours.alpha - 1) / math.sqrt(n))
    lam = ours.exponential.Lambda  # shifted exponential: information n / Lambda^2
    assert ours.exponential.standard_errors["Lambda"] == pytest.approx(lam / math.sqrt(n),
                                                                       rel=1e-4)
    # lognormal: the Hessian of its truncated log-likelihood, in 30-digit arithmetic
    ln = ours.lognormal
    t = ours.data
    mpmath.mp.dps = 30

    def ll(mu, s):
        z = mpmath.log(mpmath.erfc((mpmath.log(ours.xmin) - mu) / (s * mpmath.sqrt(2))) / 2)
        return sum(-mpmath.log(v) - mpmath.log(s * mpmath.sqrt(2 * mpmath.pi))
                   - (mpmath.log(v) - mu) ** 2 / (2 * s * s) - z for v in map(float, t))

    mu, s = mpmath.mpf(ln.mu), mpmath.mpf(ln.sigma)
    h = mpmath.matrix([[mpmath.diff(ll, (mu, s), (2, 0)), mpmath.diff(ll, (mu, s), (1, 1))],
                       [mpmath.diff(ll, (mu, s), (1, 1)), mpmath.diff(ll, (mu, s), (0, 2))]])
    cov = (-h) ** -1
    se = ln.standard_errors
    assert se["mu"] == pytest.approx(float(mpmath.sqrt(cov[0, 0])), rel=1e-3)
    assert se["sigma"] == pytest.approx(float(mpmath.sqrt(cov[1, 1])), rel=1e-3)
    tpl = ours.truncated_power_law.standard_errors
    assert all(v > 0 for v in tpl.values())


def test_goodness_of_fit_is_tailscopes_bootstrap():
    from tailscope import fit_power_law

    x = _data("blackouts", False)
    gof = facade.Fit(x).goodness_of_fit(n_boot=40, seed=3, n_jobs=1)
    ref = fit_power_law(x).goodness_of_fit(n_boot=40, seed=3, n_jobs=1)
    assert gof.p_value == ref.p_value and 0 <= gof.p_value <= 1


def test_inputs_generations_and_saving(tmp_path):
    x = _data("blackouts", False)
    base = facade.Fit(x)
    for data in (list(x), pd.Series(x), np.concatenate([x, [0.0, -1.0]])):
        f = facade.Fit(data)
        assert (f.alpha, f.xmin, f.n_tail) == (base.alpha, base.xmin, base.n_tail)
    with pytest.raises(ValueError, match="NaN"):
        facade.Fit(np.append(x, np.nan))
    # xmin range: 1.5 includes the upper end, 2.0 excludes it
    hi = float(np.unique(x)[-5])
    f15 = facade.Fit(x, xmin=(1.0, hi))
    f20 = facade.Fit(x, xmin=(1.0, hi), generation="2.0")
    assert f15.xmins.max() == float(np.unique(x[x <= hi])[-2])
    assert f20.xmins.max() < f15.xmins.max()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert base.sigma == base.standard_err  # 1.5: no warning
    with pytest.warns(DeprecationWarning, match="standard_err"):
        _ = facade.Fit(x, generation="2.0").sigma
    # save / load keeps every attribute and the lazily fitted distributions
    _ = base.lognormal
    base.save(tmp_path / "fit.pkl")
    back = facade.Fit.load(tmp_path / "fit.pkl")
    np.testing.assert_equal(back.__dict__, base.__dict__)
    assert back.distribution_compare("power_law", "lognormal") == \
        base.distribution_compare("power_law", "lognormal")
    # nested=False is honoured (powerlaw's precedence bug ignores it)
    R1, p1 = base.distribution_compare("power_law", "truncated_power_law")
    R2, p2 = base.distribution_compare("power_law", "truncated_power_law", nested=False)
    assert R1 == R2 and p1 != p2
    # 2.0's parameter dict and 1.5's callable setter are the same object
    d = facade.Power_Law(xmin=1, parameters=[2.0])
    d.parameters([3.0])
    assert d.parameters == {"alpha": 3.0} and d.alpha == 3.0
    # 2.0's default bound alpha <= 3 is not copied: a tail with alpha = 4 is fitted as 1.5 does
    steep = (1 - np.random.default_rng(5).random(2000)) ** (-1 / 3.0)
    ref = powerlaw_fit(steep)
    f20 = facade.Fit(steep, generation="2.0")
    assert ref.alpha > 3.5 and (f20.alpha, f20.xmin) == (ref.alpha, ref.xmin)
    with pytest.raises(ValueError, match="xmin_distance"):
        facade.Fit(x, xmin_distance="Q")
