"""WeightWatcher's per-layer figures (``analyze(plot=True, savefig=...)``), drawn by
:mod:`tailscope.report.plots` and saved under WeightWatcher's file names and folder.

WeightWatcher saves ``{savedir}/ww.layer{plot_id}.{figure}.png``: ``savedir`` is ``savefig`` when
it is a string, ``'ww-img'`` when it is ``True``; nothing is saved when it is ``False`` or empty.
``plot_id`` is the layer id (``'{layer_id}:{slice_id}'`` per conv slice with ``pool=False``). The
figures: ``esd`` (the tail's PDF and fit), ``esd2`` (linear histogram), ``esd3`` (log histogram
with xmin and xmax), ``esd4`` (D vs xmin), ``esd5`` (alpha vs xmin); ``mpfit2`` (and ``mpfit1`` when N = M)
with ``mp_fit=True`` or ``randomize=True`` (then of the randomized ESD, as WeightWatcher's last
MP plot); ``randesd1`` and ``randesd2`` with ``randomize=True``; ``detX`` with
``detX=True``; ``deltaEs`` and ``level-stats`` with ``deltas=True``. A layer without a fit gets
its histograms only (no made-up fit curve).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..report import plots
from ..util.optional import require
from .numbers import DEFAULT_PARAMS

DEF_SAVE_DIR = DEFAULT_PARAMS["savedir"]  # where savefig=True saves


def valid_savefig(savefig) -> bool:
    """WeightWatcher's rule: ``savefig`` is a folder name (str) or a bool."""
    return isinstance(savefig, (str, bool))


def save_dir(savefig) -> Path | None:
    """The folder the figures go to, or None when they are not saved."""
    if not savefig:
        return None
    return Path(DEF_SAVE_DIR if savefig is True else savefig)


def plot_id(layer_id, slice_id=None) -> str:
    """WeightWatcher's figure id of a row."""
    return f"{layer_id}" if slice_id is None else f"{layer_id}:{slice_id}"


def figure_path(folder: Path, pid: str, figure: str) -> Path:
    return folder / f"ww.layer{pid}.{figure}.png"


def _hist(evals, *, log: bool, xmin=None, xmax=None, title: str, path: Path):
    fig, ax = plots.new_axes()
    ev = np.asarray(evals, dtype=np.float64)
    ev = ev[ev > 0] if log else ev
    ax.hist(np.log10(ev) if log else ev, bins=100, density=True, color=plots.BLUE)
    for x, color, label in ((xmin, plots.RED, "xmin"), (xmax, plots.ORANGE, "xmax")):
        if x is not None and np.isfinite(x) and x > 0:
            ax.axvline(np.log10(x) if log else x, color=color, label=label)
    ax.set_title(plots.literal(title))
    if xmin is not None:
        ax.legend(frameon=False)
    return plots.finish(fig, path)


def _deltas(evals, *, title: str, folder: Path, pid: str) -> list[Path]:
    ev = np.sort(np.asarray(evals, dtype=np.float64))
    d = np.diff(ev)
    out = []
    fig, ax = plots.new_axes()
    ax.plot(np.arange(d.size), d, ".", color=plots.BLUE)
    ax.set_title(plots.literal(f"{title}: eigenvalue spacings"))
    out.append(figure_path(folder, pid, "deltaEs"))
    plots.finish(fig, out[-1])
    fig2, ax2 = plots.new_axes()
    mean = d.mean() if d.size and d.mean() > 0 else 1.0
    ax2.hist(d / mean, bins=100, density=True, color=plots.BLUE)
    ax2.set_title(plots.literal(f"{title}: level statistics (spacings / mean)"))
    out.append(figure_path(folder, pid, "level-stats"))
    plots.finish(fig2, out[-1])
    return out


def layer_figures(analysis, key, title: str) -> list[tuple[str, object]]:
    """``(figure name, draw(path) -> Figure)`` of WeightWatcher's figures for one row."""
    result = analysis.result(key)
    evals, fit, row = result.evals, result.fit, analysis.row(key)
    if evals is None:
        return []
    figs = []
    xmin = fit.xmin if fit is not None else None
    xmax = float(np.max(evals)) if fit is not None else None
    if fit is not None:
        figs.append(("esd", lambda p: plots.pdf_cdf(fit, title=f"Log-Log ESD for {title}",
                                                   path=p)))
    figs.append(("esd2", lambda p: _hist(evals, log=False, xmin=xmin,
                                         title=f"Lin-Lin ESD for {title}", path=p)))
    figs.append(("esd3", lambda p: _hist(evals, log=True, xmin=xmin, xmax=xmax,
                                         title=f"Log-Lin ESD for {title}", path=p)))
    if fit is not None:
        figs.append(("esd4", lambda p: plots.ks_curve(fit, path=p)))
        figs.append(("esd5", lambda p: plots.alpha_curve(fit, path=p)))
    # the MP fit: of the randomized ESD when there is one (WeightWatcher fits it last, over the
    # same file names), else of the ESD; mpfit1 only for square layers (Q = 1)
    rand = result.randomized
    mp_evals, mp = ((rand.evals, rand.mp) if rand is not None and rand.mp is not None else
                    (evals, result.mp))
    if mp is not None:
        for name in ("mpfit1", "mpfit2") if row["N"] == row["M"] else ("mpfit2",):
            figs.append((name, lambda p: plots.mp_fit_figure(
                mp_evals, mp, title=f"MP fit for {title}", path=p)))
    if "detX_val" in row and np.isfinite(row["detX_val"]):
        figs.append(("detX", lambda p: _hist(evals, log=True, xmin=float(row["detX_val"]),
                                             title=f"detX constraint for {title}", path=p)))
    if rand is not None:
        figs.append(("randesd1", lambda p: plots.randomized_esd(
            evals, rand.evals, title=f"ESD and randomized ESD for {title}", path=p)))
        figs.append(("randesd2", lambda p: _hist(rand.evals, log=True,
                                                 title=f"Randomized ESD for {title}", path=p)))
    return figs


def save_layer_figures(analysis, rows, savefig, *, deltas: bool = False) -> list[Path]:
    """Draw and save WeightWatcher's figures for each ``(key, plot_id, title)`` in ``rows``
    (``key``: the row's key in ``analysis``); returns the files written."""
    folder = save_dir(savefig)
    if folder is None:
        return []
    pyplot = require("matplotlib.pyplot", "plot=True")
    if not folder.is_dir():
        folder.mkdir(parents=True)
    written: list[Path] = []
    for key, pid, title in rows:
        for name, draw in layer_figures(analysis, key, title):
            path = figure_path(folder, pid, name)
            pyplot.close(draw(path))
            written.append(path)
        evals = analysis.result(key).evals
        if deltas and evals is not None:
            written += _deltas(evals, title=title, folder=folder, pid=pid)
            pyplot.close("all")
    return written


VECTOR_METRICS = (("vec_entropy", "Vector Entropies"), ("loc_ratio", "Localization Ratios"),
                  ("part_ratio", "Participation Ratios"))


def save_vector_figures(mats, xmin, pid: str, title: str, folder: Path) -> list[Path]:
    """WeightWatcher's ``vector_metrics`` (each eigenvector's entropy, localization and
    participation ratios and its eigenvalue, in eigenvalue order, xmin marked) and
    ``vector_histograms`` (their bulk and tail histograms) for one row's matrices."""
    from ..spectrum import vectors as spectral

    pyplot = require("matplotlib.pyplot", "plot=True")
    evals, metrics = [], {name: [] for name, _ in VECTOR_METRICS}
    for m in mats:
        ev, vecs = spectral.eigenvectors(np.asarray(m, dtype=np.float64))
        evals.append(ev)
        for name, values in spectral.per_vector(vecs).items():
            if name in metrics:
                metrics[name].append(values)
    evals = np.concatenate(evals)
    order = np.argsort(evals)
    data = {name: np.concatenate(v)[order] for name, v in metrics.items()}
    evals = evals[order]
    cut = np.searchsorted(evals, xmin) if xmin is not None and np.isfinite(xmin) else None
    fig, axes = pyplot.subplots(4, figsize=(8, 12))
    fig.suptitle(plots.literal(f"Vector Localization Metrics for {title}"))
    for ax, (name, label) in zip(axes, VECTOR_METRICS + (("eigenvalue", "Eigenvalues"),)):
        y = evals if name == "eigenvalue" else data[name]
        ax.scatter(np.arange(y.size), y, marker=".", color=plots.BLUE)
        ax.set_ylabel(plots.literal(label))
        if cut is not None and 0 < cut:
            ax.axvline(cut - 1, color=plots.RED, label="xmin")
            ax.legend(frameon=False)
    out = [figure_path(folder, pid, "vector_metrics")]
    pyplot.close(plots.finish(fig, out[-1]))
    fig, axes = pyplot.subplots(1, 3, figsize=(15, 4))
    fig.suptitle(plots.literal(f"Vector metrics of the bulk and the tail for {title}"))
    for ax, (name, label) in zip(axes, VECTOR_METRICS):
        y = data[name]
        parts = ((y[:cut], "bulk", plots.BLUE), (y[cut:], "tail", plots.ORANGE)) \
            if cut is not None else ((y, "all", plots.BLUE),)
        for values, part, color in parts:
            if values.size:
                ax.hist(values, bins=50, density=True, alpha=0.6, color=color, label=part)
        ax.set_title(plots.literal(label))
        ax.legend(frameon=False)
    out.append(figure_path(folder, pid, "vector_histograms"))
    pyplot.close(plots.finish(fig, out[-1]))
    return out
