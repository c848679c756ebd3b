"""Figures are checked for what they show, not just that a file appears."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from oracles import pareto

from tailscope import fit_power_law
from tailscope.plots import ORANGE, alpha_curve, esd_histogram, ks_curve, pdf_cdf, per_eigenpair


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
