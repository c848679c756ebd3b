"""The truncated power law with its own xmin scan, against powerlaw 1.5 (WeightWatcher's fit='TPL')."""

import contextlib
import functools
import io
import math

import numpy as np
import pytest
from oracles import minilm_path, pareto, powerlaw_fit

from tailscope.fit import fit_truncated_power_law
from tailscope.fit.fingers import xmin_peak_range


@functools.cache
def _minilm_esds():
    from safetensors.numpy import load_file

    weights = load_file(minilm_path())
    out = {}
    for name in ("encoder.layer.0.attention.self.query.weight", "encoder.layer.0.output.dense.weight",
                 "encoder.layer.1.attention.self.key.weight"):
        w = weights[name].astype(np.float64)
        w = w if w.shape[0] >= w.shape[1] else w.T
        ev = np.linalg.eigvalsh(w.T @ w)
        out[name] = np.sort(ev[ev > 1e-5])
    return out


def _cutoff(n=400, seed=2):
    """A Pareto sample thinned by exp(-Lambda x): an interior TPL optimum (alpha > 1, Lambda > 0)."""
    rng = np.random.default_rng(seed + 100)  # not pareto's stream: independent acceptance
    raw = pareto(20 * n, 2.2, seed=seed)
    return np.sort(raw[rng.random(raw.size) < np.exp(-0.05 * raw)][:n])


def _powerlaw_tpl(x, xmin):
    """powerlaw 1.5's truncated power law at a fixed xmin: (alpha, Lambda, loglikelihood, D)."""
    fit = powerlaw_fit(x, xmin=xmin, xmin_distribution="truncated_power_law")
    with contextlib.redirect_stderr(io.StringIO()):
        t = fit.truncated_power_law
        return t.alpha, t.Lambda, float(np.sum(t.loglikelihoods(fit.data))), t.D


def _powerlaw_range(x, lo, hi):
    """Our candidate range equal to powerlaw's (lo, hi): powerlaw drops the largest candidate
    inside the range, we drop only the largest value."""
    u = np.unique(x[(x >= lo) & (x <= hi)])
    return lo, u[-2]


# measured on the 36 MiniLM encoder layers where fmin converged (our likelihood within 1e-4 of
# its, Lambda > 1e-6): |alpha - alpha_powerlaw| <= 1.2e-4, |Lambda / Lambda_powerlaw - 1| <= 1.4e-3,
# |D - D_powerlaw| <= 1.4e-4; fmin's own tolerance is 1e-4.
ALPHA_TOL, LAMBDA_RTOL, LL_CONVERGED = 2e-4, 2e-3, 1e-4


@functools.cache
def _full_fit(name):
    return fit_truncated_power_law(_minilm_esds()[name])


@pytest.mark.parametrize("name", ["encoder.layer.0.attention.self.query.weight",
                                  "encoder.layer.0.output.dense.weight"])
def test_each_candidate_fit_is_at_least_powerlaws_maximum_on_real_weights(name):
    """At fixed xmins around the chosen one (one on the alpha = 1 boundary, one near Lambda = 0)."""
    x = _minilm_esds()[name]
    ours = _full_fit(name)
    u = np.unique(x)
    k = int(np.searchsorted(u, ours.xmin))
    for xmin in u[max(0, k - 2):k + 3:2]:
        mine = fit_truncated_power_law(x, xmin=float(xmin))
        a, lam, ll, D = _powerlaw_tpl(x, float(xmin))
        assert mine.alpha >= 1.0 and mine.Lambda > 0  # powerlaw's parameter range
        assert mine.loglikelihood >= ll - 1e-9
        if mine.loglikelihood - ll < LL_CONVERGED and lam > 1e-6:  # fmin converged, Lambda > 0
            assert mine.alpha == pytest.approx(a, abs=ALPHA_TOL)
            assert mine.Lambda == pytest.approx(lam, rel=LAMBDA_RTOL)
            assert mine.D == pytest.approx(D, abs=5e-4)


def test_xmin_scan_equals_powerlaws_on_real_weights():
    """The KS scan over candidates around the optimum picks powerlaw's xmin (Fit with
    xmin_distribution='truncated_power_law', as WeightWatcher calls it); an interior optimum."""
    name = "encoder.layer.1.attention.self.key.weight"
    x = _minilm_esds()[name]
    full = _full_fit(name)
    u = np.unique(x)
    k = int(np.searchsorted(u, full.xmin))
    lo, hi = u[max(0, k - 3)], u[k + 4]
    ref = powerlaw_fit(x, xmin=(lo, hi), xmin_distribution="truncated_power_law")
    ours = fit_truncated_power_law(x, xmin=_powerlaw_range(x, lo, hi))
    assert ours.xmin == ref.xmin == full.xmin
    assert ours.D == pytest.approx(ref.D, abs=2e-4)
    with contextlib.redirect_stderr(io.StringIO()):
        tpl = ref.truncated_power_law
    assert ours.alpha == pytest.approx(tpl.alpha, abs=ALPHA_TOL)
    assert ours.Lambda == pytest.approx(tpl.Lambda, rel=LAMBDA_RTOL)


def test_interior_optimum_on_synthetic_data_equals_powerlaw():
    x = _cutoff(300)
    lo, hi = np.quantile(x, [0.02, 0.06])
    ref = powerlaw_fit(x, xmin=(lo, hi), xmin_distribution="truncated_power_law")
    ours = fit_truncated_power_law(x, xmin=_powerlaw_range(x, lo, hi))
    with contextlib.redirect_stderr(io.StringIO()):
        tpl = ref.truncated_power_law
        ll_ref = float(np.sum(tpl.loglikelihoods(ref.data)))
    assert ours.xmin == ref.xmin
    assert ours.alpha > 1.05 and ours.Lambda > 1e-3  # interior: not on powerlaw's boundary
    assert ours.alpha == pytest.approx(tpl.alpha, rel=1e-3)
    assert ours.Lambda == pytest.approx(tpl.Lambda, rel=1e-2)
    assert ours.loglikelihood >= ll_ref - 1e-9
    assert ours.D == pytest.approx(ref.D, abs=1e-3)
    assert math.isnan(ours.sigma) and ours.n_tail == np.count_nonzero(x >= ours.xmin)
    assert ours.xmins.size == ours.Ds.size == ours.alphas.size == ours.Lambdas.size


@pytest.mark.parametrize("real", [False, True])
def test_xmin_is_the_first_argmin_of_the_candidates_D(real):
    """The scan skips candidates whose lower bound exceeds the best D; with every D computed
    (``fit.Ds``) the argmin is the same."""
    x = _minilm_esds()["encoder.layer.0.output.dense.weight"] if real else _cutoff(200, seed=5)
    fit = _full_fit("encoder.layer.0.output.dense.weight") if real else fit_truncated_power_law(x)
    assert np.isfinite(fit.Ds).all()
    assert fit.xmin == fit.xmins[int(np.argmin(fit.Ds))] and fit.D == fit.Ds.min()
    again = fit_truncated_power_law(x, xmin=fit.xmin)
    assert (again.alpha, again.Lambda) == pytest.approx((fit.alpha, fit.Lambda), rel=1e-6)
    assert fit.cdf(np.array([fit.xmin]))[0] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.isfinite(fit.loglikelihoods()))
    assert "TruncatedPowerLawFit(alpha=" in repr(fit)


def test_xmax_normalises_on_the_interval():
    x = _cutoff(300, seed=3)
    fit = fit_truncated_power_law(x, xmax="max", xmin=float(np.quantile(x, 0.2)))
    assert fit.xmax == x.max()
    assert fit.cdf(np.array([fit.xmax]))[0] == pytest.approx(1.0, rel=1e-12)
    plain = fit_truncated_power_law(x, xmin=fit.xmin)
    assert fit.loglikelihood >= plain.loglikelihood - 1e-9  # a narrower support never hurts


def test_xmin_peak_uses_the_linear_range():
    x = _minilm_esds()["encoder.layer.0.output.dense.weight"]
    lo, hi = xmin_peak_range(x)
    fit = fit_truncated_power_law(x, fix_fingers="xmin_peak")
    assert lo <= fit.xmin <= hi and fit.fix_fingers == "xmin_peak"
    same = fit_truncated_power_law(x, xmin=(lo, hi))
    assert (same.xmin, same.alpha, same.Lambda) == (fit.xmin, fit.alpha, fit.Lambda)


def test_failures_and_bad_options():
    assert fit_truncated_power_law([2.0, 2.0, 2.0]).status == "failed"
    failed = fit_truncated_power_law([1.0, 2.0, 3.0], xmin=(10.0, 20.0))
    assert not failed.ok and "no candidate" in failed.reason and "failed" in repr(failed)
    with pytest.raises(ValueError, match="fix_fingers"):
        fit_truncated_power_law([1.0, 2.0, 3.0], fix_fingers="clip_xmax")
    with pytest.raises(ValueError, match="drop xmin"):
        fit_truncated_power_law([1.0, 2.0, 3.0], fix_fingers="xmin_peak", xmin=1.0)
    with pytest.raises(ValueError, match="<= 0"):
        fit_truncated_power_law([0.0, 1.0, 2.0])
