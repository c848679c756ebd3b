"""Figures (matplotlib, imported only here): each function returns a Figure and saves it when given
a path. Colours follow the seed idea: the xmin line and the chosen point in orange, data solid and
fits dotted, PDF blue and CDF red.

In a script or the CLI figures draw on Agg (no window). In Jupyter (matplotlib's inline backend)
the kernel's backend is kept and each figure made here is let go by pyplot as it is made, so a
cell shows the returned figure once, as its value, and nothing when the figure is assigned.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np

from ..engine.columns import OVER_TRAINED, UNDER_TRAINED
from ..util.optional import require

ORANGE, BLUE, RED = "tab:orange", "tab:blue", "tab:red"


def _pyplot():
    matplotlib = require("matplotlib", "drawing figures")
    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg", force=False)  # no backend chosen (Jupyter sets MPLBACKEND): no GUI
    import matplotlib.pyplot as plt

    return plt


def in_notebook() -> bool:
    """Whether figures go to Jupyter's inline backend (matplotlib_inline)."""
    return "inline" in _pyplot().get_backend()


def subplots(*args, **kwargs):
    """``pyplot.subplots``; in a notebook the figure is let go by pyplot at once, so that it is
    shown only where it is returned (no second copy at the end of the cell)."""
    plt = _pyplot()
    fig, axes = plt.subplots(*args, **kwargs)
    if in_notebook():
        plt.close(fig)
    return fig, axes


def literal(text) -> str:
    """``text`` drawn as it is: every ``$`` not already escaped becomes ``\\$``, so a layer,
    model or column name holding ``$...$`` is never parsed as matplotlib mathtext (which draws
    it wrongly or raises). Escaping twice changes nothing. Every name reaches a figure through
    it: titles, axis labels, legend entries, figure text."""
    return re.sub(r"(?<!\\)\$", r"\\$", str(text))


def finish(fig, path):
    """Save ``fig`` to ``path`` (its folder created) when a path is given; return the figure."""
    if path is not None:
        path = Path(path)
        if not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig


def new_axes(ax=None, figsize=(5.5, 4.0)):
    """(figure, axes): a new figure, or ``ax`` and its figure."""
    if ax is not None:
        return ax.figure, ax
    return subplots(figsize=figsize)


def esd_histogram(evals, xmin=None, xmax=None, *, title="", bins=100, ax=None, path=None):
    """Histogram of log10(eigenvalues), with the start of the power-law tail as an orange line."""
    fig, ax = new_axes(ax)
    ev = np.asarray(evals, dtype=np.float64)
    ev = ev[ev > 0]
    ax.hist(np.log10(ev), bins=bins, color=BLUE, alpha=0.7, label="ESD")
    if xmin is not None and np.isfinite(xmin):
        ax.axvline(np.log10(xmin), color=ORANGE, linewidth=2, label=f"xmin = {xmin:.4g}")
    if xmax is not None and np.isfinite(xmax):
        ax.axvline(np.log10(xmax), color=RED, linestyle="--", label=f"xmax = {xmax:.4g}")
    ax.set_xlabel("log10 eigenvalue")
    ax.set_ylabel("count")
    ax.set_title(literal(title or "ESD"))
    ax.legend(frameon=False)
    return finish(fig, path)


def log_bins(x: np.ndarray, per_decade: int = 10) -> np.ndarray:
    lo, hi = np.log10(x.min()), np.log10(x.max())
    n = max(2, int(np.ceil((hi - lo) * per_decade)) + 1)
    return np.logspace(lo, hi, n)


def pdf_cdf(fit, *, ccdf=False, title="", ax=None, path=None):
    """The tail's empirical PDF (log-binned) and CDF (or CCDF with ``ccdf=True``), solid, with the
    fitted ones dotted; PDF blue, CDF red; alpha, xmin and D in the legend."""
    fig, ax = new_axes(ax)
    tail = np.sort(fit.tail)
    edges = log_bins(tail)
    dens, _ = np.histogram(tail, bins=edges, density=True)
    centers = np.sqrt(edges[:-1] * edges[1:])
    keep = dens > 0
    label = f"alpha={fit.alpha:.3f}, xmin={fit.xmin:.4g}, D={fit.D:.4f}"
    ax.plot(centers[keep], dens[keep], "o-", color=BLUE, label="PDF (data)")
    grid = np.logspace(np.log10(tail[0]), np.log10(tail[-1]), 200)
    ax.plot(grid, fit.pdf(grid), ":", color=BLUE, linewidth=2, label=f"PDF fit ({label})")
    if ccdf:
        emp = 1.0 - np.arange(tail.size) / tail.size  # P(X >= x)
        ax.plot(tail, emp, "-", color=RED, label="CCDF (data)")
        ax.plot(grid, fit.ccdf(grid), ":", color=RED, linewidth=2, label="CCDF fit")
    else:
        ax.plot(tail, np.arange(1, tail.size + 1) / tail.size, "-", color=RED, label="CDF (data)")
        ax.plot(grid, fit.cdf(grid), ":", color=RED, linewidth=2, label="CDF fit")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue")
    ax.set_title(literal(title or "power-law tail"))
    ax.legend(frameon=False, fontsize=7)
    return finish(fig, path)


def _candidate_curve(fit, ys, chosen, *, ylabel, label, title, ax, path):
    """A quantity for every candidate xmin, with the chosen xmin marked in orange."""
    fig, ax = new_axes(ax)
    ys = np.asarray(ys, dtype=np.float64)
    ok = np.isfinite(ys)
    ax.plot(fit.xmins[ok], ys[ok], "-", color=BLUE, label=f"{ylabel}(xmin)")
    ax.plot([fit.xmin], [chosen], "o", color=ORANGE, markersize=8, label=label)
    ax.axvline(fit.xmin, color=ORANGE, linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("candidate xmin")
    ax.set_ylabel(literal(ylabel))
    ax.set_title(literal(title))
    ax.legend(frameon=False, fontsize=8)
    return finish(fig, path)


def ks_curve(fit, *, title="", ax=None, path=None):
    """The KS distance D for every candidate xmin, the chosen minimum in orange."""
    return _candidate_curve(fit, fit.Ds, fit.D, ylabel="D",
                            label=f"min D = {fit.D:.4f} at xmin = {fit.xmin:.4g}",
                            title=title or "KS distance vs xmin", ax=ax, path=path)


def alpha_curve(fit, *, title="", ax=None, path=None):
    """alpha for every candidate xmin, the chosen one in orange."""
    return _candidate_curve(fit, fit.alphas, fit.alpha, ylabel="alpha",
                            label=f"alpha = {fit.alpha:.3f}", title=title or "alpha vs xmin",
                            ax=ax, path=path)


def per_eigenpair(values, k, *, ylabel, title="", log=False, ax=None, path=None):
    """A curve over eigenpairs 1, 2, ... with an orange line at K."""
    fig, ax = new_axes(ax)
    y = np.asarray(values, dtype=np.float64)
    ax.plot(np.arange(1, y.size + 1), y, "-", color=BLUE)
    ax.axvline(k, color=ORANGE, linewidth=2, label=f"K = {k}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("eigenpair")
    ax.set_ylabel(literal(ylabel))
    ax.set_title(literal(title))
    ax.legend(frameon=False)
    return finish(fig, path)


def rank_figures(selection, folder) -> list[Path]:
    """The seed's five figures for a rank selection, written to ``folder``; returns the paths."""
    plt = _pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fit, k = selection.fit, selection.k
    out = []
    jobs = [("esd.png", lambda p: esd_histogram(selection.eigenvalues, fit.xmin, path=p,
                                                  title="ESD of X^T X"))]
    if fit.ok:
        jobs += [("pdf_cdf.png", lambda p: pdf_cdf(fit, path=p)),
                 ("ks_vs_xmin.png", lambda p: ks_curve(fit, path=p))]
    jobs.append(("explained_variance.png", lambda p: per_eigenpair(
        selection.explained_variance_ratio, k, ylabel="explained variance ratio", log=True,
        title="explained variance per eigenpair", path=p)))
    if selection.localization is not None:
        jobs.append(("localization.png", lambda p: per_eigenpair(
            selection.localization, k, ylabel="||v||_1 / ||v||_inf",
            title="localization ratio per eigenpair", path=p)))
    for name, draw in jobs:
        fig = draw(folder / name)
        plt.close(fig)
        out.append(folder / name)
    return out


# --- random-matrix diagnostics ---------------------------------------------------------------
def mp_curve(fit, points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """The fitted MP density on its support [bulk_min, bulk_max], in rescaled units (the ESD
    times ``fit.W_scale**2``, mean eigenvalue 1)."""
    from ..spectrum.mp import mp_density

    w2 = fit.W_scale ** 2
    lo, hi = fit.bulk_min * w2, fit.bulk_max * w2
    x = np.linspace(lo, hi, points)
    inner = x[1:-1]  # the density is 0 at the edges, infinite at 0 when Q == 1
    y = np.concatenate([[0.0], mp_density(inner, fit.sigma_mp, fit.Q), [0.0]])
    if lo == 0:
        y[0] = y[1]
    return x, y


def mp_fit_figure(evals, fit, *, title="", bins=100, ax=None, path=None):
    """The Marchenko-Pastur bulk: a linear histogram (density) of the rescaled ESD with the fitted
    MP density over [bulk_min, bulk_max], the bulk edge (orange) and the spikes past the
    Tracy-Widom threshold (red ticks)."""
    fig, ax = new_axes(ax)
    w2 = fit.W_scale ** 2
    scaled = np.asarray(evals, dtype=np.float64) * w2
    ax.hist(scaled, bins=bins, density=True, color=BLUE, alpha=0.6, label="ESD (rescaled)")
    x, y = mp_curve(fit)
    ax.plot(x, y, "-", color=RED, linewidth=2,
            label=f"MP fit: sigma={fit.sigma_mp:.3f}, Q={fit.Q:.3g}")
    ax.axvline(fit.bulk_max * w2, color=ORANGE, linewidth=2,
               label=f"bulk edge {fit.bulk_max * w2:.3g} (bulk_max = {fit.bulk_max:.4g})")
    threshold = fit.spike_threshold * w2
    spikes = scaled[scaled > threshold]
    if spikes.size:
        ax.plot(spikes, np.zeros(spikes.size), "|", color=RED, markersize=14,
                label=f"{fit.num_spikes} spikes")
    ax.set_xlabel("eigenvalue x W_scale^2 (mean 1)")
    ax.set_ylabel("density")
    ax.set_title(literal(title or f"MP bulk: {fit.num_spikes} spikes, mp_softrank {fit.mp_softrank:.3f}"))
    ax.legend(frameon=False, fontsize=7)
    return finish(fig, path)


def randomized_esd(evals, rand_evals, *, title="", bins=100, ax=None, path=None):
    """log10 histograms (density) of the real ESD (blue) and of the element-shuffled matrices'
    ESD (red, over it) on shared bins, with the largest shuffled eigenvalue (orange)."""
    fig, ax = new_axes(ax)
    real = np.asarray(evals, dtype=np.float64)
    rand = np.asarray(rand_evals, dtype=np.float64)
    lr, lq = np.log10(real[real > 0]), np.log10(rand[rand > 0])
    edges = np.histogram_bin_edges(np.concatenate([lr, lq]), bins=bins)
    ax.hist(lr, bins=edges, density=True, color=BLUE, alpha=0.7, label="ESD")
    ax.hist(lq, bins=edges, density=True, color=RED, alpha=0.5, label="randomized ESD")
    ax.axvline(np.log10(rand.max()), color=ORANGE, linewidth=2,
               label=f"max rand eval = {rand.max():.4g}")
    ax.set_xlabel("log10 eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(literal(title or "ESD and randomized ESD"))
    ax.legend(frameon=False, fontsize=7)
    return finish(fig, path)


# --- one layer, and a whole model --------------------------------------------------------------
def layer_figure(analysis, layer, *, path=None, dpi=None):
    """ESD with xmin, tail PDF/CCDF vs fit, D vs xmin, alpha vs xmin for one layer; a layer
    without a fit shows its ESD (if any) and the reason, never a fit it does not have. When the
    analysis ran them, the MP bulk and the randomized ESD follow on a second row."""
    key = analysis.key(layer)
    row = analysis.row(key)
    name = f"{row['layer_id']} {row['module']}"
    result = analysis.result(key)
    evals, fit, mp, rand = result.evals, result.fit, result.mp, result.randomized
    extras = [p for p in (
        (lambda ax: mp_fit_figure(evals, mp, ax=ax)) if mp is not None else None,
        (lambda ax: randomized_esd(evals, rand.evals, ax=ax)) if rand is not None else None)
        if p is not None]
    if fit is None:
        fig, axes = subplots(1, 1 + len(extras), figsize=(5.5 * (1 + len(extras)), 3.6),
                                 squeeze=False)
        ax = axes[0, 0]
        if evals is not None and np.any(evals > 0):
            esd_histogram(evals, ax=ax, title=f"{name}: no fit")
        else:
            ax.axis("off")
        for draw, ax in zip(extras, axes[0, 1:]):
            draw(ax)
        fig.text(0.02, 0.01, literal(f"{row['status']}: {row['reason']}"), fontsize=8,
                 color=RED)
        return finish(fig, path) if dpi is None else _save_dpi(fig, path, dpi)
    rows = 2 if extras else 1
    fig, axes = subplots(rows, 4, figsize=(18, 3.6 * rows), squeeze=False)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.16 / rows, top=1 - 0.1 / rows,
                        wspace=0.25, hspace=0.35)
    esd_histogram(evals, fit.xmin, ax=axes[0, 0], title=f"{name}: ESD")
    pdf_cdf(fit, ccdf=True, ax=axes[0, 1], title="tail: PDF and CCDF")
    ks_curve(fit, ax=axes[0, 2])
    alpha_curve(fit, ax=axes[0, 3])
    if extras:
        for draw, ax in zip(extras, axes[1]):
            draw(ax)
        for ax in axes[1, len(extras):]:
            ax.axis("off")
    return finish(fig, path) if dpi is None else _save_dpi(fig, path, dpi)


def data_uri(fig, dpi: int = 72) -> str:
    """The figure as an inline PNG (``data:image/png;base64,...``) for a self-contained page;
    the figure is closed."""
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _save_dpi(fig, path, dpi):
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def _ok(analysis):
    d = analysis.details
    return d, d["status"] == "success"


def alpha_per_layer(analysis, *, title="", ax=None, path=None):
    """alpha per layer in model order; the 2-6 band shaded; over/under-trained layers coloured;
    failed layers marked on the axis with an x (they have no alpha)."""
    fig, ax = new_axes(ax, figsize=(9, 3.8))
    d, ok = _ok(analysis)
    x = np.arange(len(d))
    ax.axhspan(OVER_TRAINED, UNDER_TRAINED, color="tab:green", alpha=0.12,
               label=f"{OVER_TRAINED:g} <= alpha <= {UNDER_TRAINED:g}")
    a = d["alpha"].to_numpy(dtype=float)
    colors = np.where(a < OVER_TRAINED, RED, np.where(a > UNDER_TRAINED, ORANGE, BLUE))
    ax.scatter(x[ok], a[ok], c=colors[ok], s=18, zorder=3)
    if (~ok).any():
        ax.scatter(x[~ok], np.full((~ok).sum(), OVER_TRAINED), marker="x", color="gray", zorder=3,
                   label="failed (no alpha)")
    ax.set_xlabel("layer (model order)")
    ax.set_ylabel("alpha")
    ax.set_title(literal(title or "alpha per layer"))
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    return finish(fig, path)


def metric_per_layer(analysis, column, *, title="", ax=None, path=None):
    """Any per-layer column in model order (successful layers)."""
    fig, ax = new_axes(ax, figsize=(9, 3.2))
    d, ok = _ok(analysis)
    x = np.arange(len(d))
    ax.plot(x[ok], d.loc[ok, column].to_numpy(dtype=float), "o-", color=BLUE, markersize=3)
    ax.set_xlabel("layer (model order)")
    ax.set_ylabel(literal(column))
    ax.set_title(literal(title or f"{column} per layer"))
    return finish(fig, path)


def alpha_histogram(analysis, *, title="", ax=None, path=None):
    fig, ax = new_axes(ax)
    d, ok = _ok(analysis)
    ax.hist(d.loc[ok, "alpha"].to_numpy(dtype=float), bins=30, color=BLUE, alpha=0.8)
    for edge in (OVER_TRAINED, UNDER_TRAINED):
        ax.axvline(edge, color=ORANGE, linestyle="--")
    ax.set_xlabel("alpha")
    ax.set_ylabel("layers")
    ax.set_title(literal(title or "alphas of the model"))
    return finish(fig, path)


def compare_models(first, second, *, labels=("model A", "model B"), title="", ax=None,
                   path=None):
    """alpha per layer of two models side by side (e.g. base vs fine-tuned), matched by name."""
    fig, ax = new_axes(ax, figsize=(9, 3.8))
    a = first.details[first.details["status"] == "success"].set_index("name")["alpha"]
    b = second.details[second.details["status"] == "success"].set_index("name")["alpha"]
    names = [n for n in a.index if n in b.index]
    x = np.arange(len(names))
    ax.plot(x, a.loc[names].to_numpy(), "o-", color=BLUE, markersize=3, label=literal(labels[0]))
    ax.plot(x, b.loc[names].to_numpy(), "s-", color=ORANGE, markersize=3, label=literal(labels[1]))
    ax.axhspan(OVER_TRAINED, UNDER_TRAINED, color="tab:green", alpha=0.12)
    ax.set_xlabel("layer (model order, shared names)")
    ax.set_ylabel("alpha")
    ax.set_title(literal(title or "alpha per layer"))
    ax.legend(frameon=False)
    return finish(fig, path)


def _alpha_before_after(ax, table, before: str, after: str, was: str, now: str, title: str):
    """alpha before against alpha after, one point per layer with both, the diagonal (unchanged)
    and the 2-6 band."""
    ok = table[[before, after]].notna().all(axis=1)
    a = table.loc[ok, before].to_numpy(dtype=float)
    b = table.loc[ok, after].to_numpy(dtype=float)
    ax.scatter(a, b, s=12, color=BLUE)
    if ok.any():
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        ax.plot([lo, hi], [lo, hi], "--", color="gray", linewidth=1)
    ax.axhspan(OVER_TRAINED, UNDER_TRAINED, color="tab:green", alpha=0.12)
    ax.set_xlabel(f"alpha ({was})")
    ax.set_ylabel(f"alpha ({now})")
    ax.set_title(literal(title))


def base_comparison(table, *, title="", path=None):
    """A fine-tune against its base (``compare_to_base``'s table): alpha of the base against
    alpha of the tuned model per layer (on the diagonal: unchanged), and delta alpha with the
    intruder count per layer."""
    fig, (ax1, ax2) = subplots(1, 2, figsize=(11, 4.0))
    _alpha_before_after(ax1, table, "alpha_base", "alpha", "base", "fine-tuned",
                        title or "alpha, base vs fine-tuned")
    x = np.arange(len(table))
    ax2.bar(x, table["delta_alpha"].fillna(0).to_numpy(), color=BLUE, label="delta alpha")
    ax2.set_xlabel("layer (model order)")
    ax2.set_ylabel("delta alpha")
    twin = ax2.twinx()
    twin.plot(x, table["num_intruders"].to_numpy(dtype=float), "o", color=ORANGE, markersize=3,
              label="intruders")
    twin.set_ylabel("intruder dimensions")
    ax2.set_title("change per layer (orange: intruders)")
    return finish(fig, path)


def quantization_damage(table, *, title="", path=None):
    """A quantized model against its original (``tailscope.quantization_damage``'s table): alpha
    of the original against alpha of the quantized model per layer (on the diagonal:
    unchanged), and the relative Frobenius error ||W_q - W||_F / ||W||_F per layer."""
    fig, (ax1, ax2) = subplots(1, 2, figsize=(11, 4.0))
    _alpha_before_after(ax1, table, "alpha_original", "alpha_quantized", "original", "quantized",
                        title or "alpha, original vs quantized")
    x = np.arange(len(table))
    ax2.bar(x, table["rel_frobenius"].fillna(0).to_numpy(dtype=float), color=ORANGE)
    ax2.set_xlabel("layer (model order)")
    ax2.set_ylabel("||W_q - W||_F / ||W||_F")
    ax2.set_title("relative error per layer")
    return finish(fig, path)


def layer_figures(analysis, folder) -> list[Path]:
    """One PNG per analysed layer (``analyze --plot DIR``)."""
    plt = _pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for key in analysis.keys():
        sid = "" if key[1] is None else f".slice{key[1]}"
        path = folder / f"layer{key[0]:04d}{sid}.png"
        plt.close(layer_figure(analysis, key, path=path, dpi=80))
        out.append(path)
    return out

