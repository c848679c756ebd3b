"""Figures are checked for what they show, not just that a file appears."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from oracles import pareto

from tailscope import fit_power_law
from tailscope.report.plots import ORANGE, alpha_curve, esd_histogram, ks_curve, pdf_cdf, per_eigenpair


def _orange(ax):
    return [ln for ln in ax.lines if matplotlib.colors.same_color(ln.get_color(), ORANGE)]


def test_figures_show_the_fit(tmp_path):
    fit = fit_power_law(pareto(3000, 2.7, seed=0) * 0.5)
    fig = esd_histogram(fit.data, fit.xmin, path=tmp_path / "esd.png")
    (line,) = _orange(fig.axes[0])
    assert line.get_xdata()[0] == pytest.approx(np.log10(fit.xmin))
    assert (tmp_path / "esd.png").stat().st_size > 1000

    fig = ks_curve(fit)
    marker = [ln for ln in _orange(fig.axes[0]) if ln.get_marker() == "o"][0]
    assert marker.get_xdata()[0] == fit.xmin and marker.get_ydata()[0] == fit.D
    curve = fig.axes[0].lines[0]
    assert min(curve.get_ydata()) == pytest.approx(fit.D, rel=1e-9)

    fig = alpha_curve(fit)
    marker = [ln for ln in _orange(fig.axes[0]) if ln.get_marker() == "o"][0]
    assert marker.get_ydata()[0] == fit.alpha

    fig = pdf_cdf(fit)
    fitted = [ln for ln in fig.axes[0].lines if ln.get_linestyle() == ":"][0]  # the PDF fit
    x, y = fitted.get_xdata(), fitted.get_ydata()
    slope = np.polyfit(np.log(x), np.log(y), 1)[0]
    assert slope == pytest.approx(-fit.alpha, rel=1e-9)
    assert f"alpha={fit.alpha:.3f}" in fitted.get_label()

    fig = per_eigenpair(np.linspace(1, 0, 50), 12, ylabel="y")
    (line,) = _orange(fig.axes[0])
    assert line.get_xdata()[0] == 12


def test_mp_and_randomized_figures_show_the_fit_and_the_shuffled_esd(tmp_path):
    from oracles import mtcnn_path

    from tailscope import analyze
    from tailscope.report.plots import layer_figure, layer_figures, mp_fit_figure, randomized_esd

    analysis = analyze(mtcnn_path("pnet"), mp_fit=True, randomize=True, seed=0)
    name = analysis.details["name"].iloc[2]
    evals, fit = analysis.esd(name), analysis.mp_fit(name)
    fig = mp_fit_figure(evals, fit, path=tmp_path / "mp.png")
    ax = fig.axes[0]
    w2 = fit.W_scale ** 2
    curve = [ln for ln in ax.lines if ln.get_linestyle() == "-" and len(ln.get_xdata()) > 2][0]
    x = curve.get_xdata()
    assert x[0] == pytest.approx(fit.bulk_min * w2) and x[-1] == pytest.approx(fit.bulk_max * w2)
    (edge,) = _orange(ax)
    assert edge.get_xdata()[0] == pytest.approx(fit.bulk_max * w2)
    spikes = [ln for ln in ax.lines if ln.get_marker() == "|"]
    assert len(spikes[0].get_xdata()) == fit.num_spikes > 0
    heights = [p.get_height() for p in ax.patches]
    expected, _ = np.histogram(evals * w2, bins=100, density=True)
    np.testing.assert_allclose(heights, expected)
    assert (tmp_path / "mp.png").stat().st_size > 1000

    rand = analysis.random_esd(name)
    fig = randomized_esd(evals, rand)
    ax = fig.axes[0]
    red = [p for p in ax.patches if matplotlib.colors.same_color(p.get_facecolor()[:3], "tab:red")]
    lq, lr = np.log10(rand[rand > 0]), np.log10(evals[evals > 0])
    edges = np.histogram_bin_edges(np.concatenate([lr, lq]), bins=100)
    expected, _ = np.histogram(lq, bins=edges, density=True)
    np.testing.assert_allclose([p.get_height() for p in red], expected)
    (line,) = _orange(ax)
    assert line.get_xdata()[0] == pytest.approx(np.log10(rand.max()))

    fig = layer_figure(analysis, name)
    assert len([a for a in fig.axes if a.axison]) == 6  # 4 power-law panels + MP + randomized
    assert len(layer_figures(analysis, tmp_path / "figs")) == len(analysis.details)
