"""Figures (matplotlib, imported only here): each function returns a Figure and saves it when given
a path. Colours follow the seed idea: the xmin line and the chosen point in orange, data solid and
fits dotted, PDF blue and CDF red.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ORANGE, BLUE, RED = "tab:orange", "tab:blue", "tab:red"


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("figures need matplotlib: pip install 'tailscope[plots]'") from None
    return plt


def _finish(fig, path):
    if path is not None:
        path = Path(path)
        if not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
    return fig


def _new(ax=None, figsize=(5.5, 4.0)):
    plt = _pyplot()
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def esd_histogram(evals, xmin=None, xmax=None, *, title="", bins=100, ax=None, path=None):
    """Histogram of log10(eigenvalues), with the start of the power-law tail as an orange line."""
    fig, ax = _new(ax)
    ev = np.asarray(evals, dtype=np.float64)
    ev = ev[ev > 0]
    ax.hist(np.log10(ev), bins=bins, color=BLUE, alpha=0.7, label="ESD")
    if xmin is not None and np.isfinite(xmin):
        ax.axvline(np.log10(xmin), color=ORANGE, linewidth=2, label=f"xmin = {xmin:.4g}")
    if xmax is not None and np.isfinite(xmax):
        ax.axvline(np.log10(xmax), color=RED, linestyle="--", label=f"xmax = {xmax:.4g}")
    ax.set_xlabel("log10 eigenvalue")
    ax.set_ylabel("count")
    ax.set_title(title or "ESD")
    ax.legend(frameon=False)
    return _finish(fig, path)


def log_bins(x: np.ndarray, per_decade: int = 10) -> np.ndarray:
    lo, hi = np.log10(x.min()), np.log10(x.max())
    n = max(2, int(np.ceil((hi - lo) * per_decade)) + 1)
    return np.logspace(lo, hi, n)


def pdf_cdf(fit, *, title="", ax=None, path=None):
    """The tail's empirical PDF (log-binned) and CDF, solid, with the fitted ones, dotted."""
    fig, ax = _new(ax)
    tail = np.sort(fit.tail)
    edges = log_bins(tail)
    dens, _ = np.histogram(tail, bins=edges, density=True)
    centers = np.sqrt(edges[:-1] * edges[1:])
    keep = dens > 0
    label = f"alpha={fit.alpha:.3f}, xmin={fit.xmin:.4g}, D={fit.D:.4f}"
    ax.plot(centers[keep], dens[keep], "o-", color=BLUE, label="PDF (data)")
    grid = np.logspace(np.log10(tail[0]), np.log10(tail[-1]), 200)
    ax.plot(grid, fit.pdf(grid), ":", color=BLUE, linewidth=2, label=f"PDF fit ({label})")
    ecdf = np.arange(1, tail.size + 1) / tail.size
    ax.plot(tail, ecdf, "-", color=RED, label="CDF (data)")
    ax.plot(grid, fit.cdf(grid), ":", color=RED, linewidth=2, label="CDF fit")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue")
    ax.set_title(title or "power-law tail")
    ax.legend(frameon=False, fontsize=8)
    return _finish(fig, path)


def _candidate_curve(fit, ys, chosen, *, ylabel, label, title, ax, path):
    """A quantity for every candidate xmin, with the chosen xmin marked in orange."""
    fig, ax = _new(ax)
    ys = np.asarray(ys, dtype=np.float64)
    ok = np.isfinite(ys)
    ax.plot(fit.xmins[ok], ys[ok], "-", color=BLUE, label=f"{ylabel}(xmin)")
    ax.plot([fit.xmin], [chosen], "o", color=ORANGE, markersize=8, label=label)
    ax.axvline(fit.xmin, color=ORANGE, linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("candidate xmin")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    return _finish(fig, path)


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
    fig, ax = _new(ax)
    y = np.asarray(values, dtype=np.float64)
    ax.plot(np.arange(1, y.size + 1), y, "-", color=BLUE)
    ax.axvline(k, color=ORANGE, linewidth=2, label=f"K = {k}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("eigenpair")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(frameon=False)
    return _finish(fig, path)


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
