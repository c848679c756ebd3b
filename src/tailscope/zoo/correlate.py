"""Does a summary metric track model quality? Rank correlations and R^2, overall and per group,
and scatter plots of metric against quality."""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..engine.columns import SUMMARY_METRICS

METRICS = ("alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm", "log_norm",
           "stable_rank", "D")
CORRELATION_COLUMNS = ["metric", "group", "n", "spearman_rho", "spearman_p", "kendall_tau",
                       "kendall_p", "r2"]


def _models(data, key=None) -> pd.DataFrame:
    from .store import Store, open_store

    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, (Store, str, Path)):
        return open_store(data).models_table(key)
    if isinstance(getattr(data, "models", None), pd.DataFrame):  # a ZooRun
        return data.models
    raise TypeError(f"correlate needs a models table, a ZooRun or a store; got "
                    f"{type(data).__name__}")


def _stats(x: np.ndarray, y: np.ndarray) -> dict:
    from scipy import stats

    n = x.size
    out = {"n": n, "spearman_rho": math.nan, "spearman_p": math.nan, "kendall_tau": math.nan,
           "kendall_p": math.nan, "r2": math.nan}
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out  # no correlation is defined: NaN, never a number
    rho, p = stats.spearmanr(x, y)
    tau, kp = stats.kendalltau(x, y)
    r = stats.pearsonr(x, y)[0]
    out.update(spearman_rho=float(rho), spearman_p=float(p), kendall_tau=float(tau),
               kendall_p=float(kp), r2=float(r * r))
    return out


def correlate(data, quality: str, *, metrics=METRICS, by_group: bool = True,
              key: str | None = None) -> pd.DataFrame:
    """Spearman rho, Kendall tau and R^2 (of the least-squares line) of each summary metric against
    a quality column, over all models and per group.

    Parameters
    ----------
    data : DataFrame, ZooRun, Store, or a store path / URL
        The models table (one row per model: the summary metrics, ``group``, ``status`` and the
        quality columns), e.g. ``run_zoo(...).models``.
    quality : str
        The quality column (e.g. 'accuracy').
    metrics : sequence of str
        Summary metrics to test (default: alpha, alpha_weighted, log_alpha_norm,
        log_spectral_norm, log_norm, stable_rank, D).
    by_group : bool
        Add one row per metric and group (groups with fewer than 3 models give NaN).
    key : str, optional
        The options key, when ``data`` is a store (default: its latest run's).

    Returns
    -------
    pandas.DataFrame
        Columns metric, group ('all' or a group name), n, spearman_rho, spearman_p, kendall_tau,
        kendall_p, r2. Only models analysed successfully with a finite metric and quality count.
    """
    models = _models(data, key)
    if quality not in models.columns:
        have = [c for c in models.columns if c not in (*SUMMARY_METRICS, "name", "source")]
        raise ValueError(f"no quality column {quality!r} in the models table "
                         f"(quality columns: {', '.join(models.attrs.get('quality_columns', have))})")
    bad = [m for m in metrics if m not in models.columns]
    if bad:
        raise ValueError(f"unknown summary metric(s) {', '.join(bad)}; choose from "
                         f"{', '.join(SUMMARY_METRICS)}")
    ok = models[models["status"] == "success"] if "status" in models.columns else models
    groups = [("all", ok)]
    if by_group and "group" in ok.columns:
        groups += [(str(g), part) for g, part in ok.groupby(ok["group"].fillna(""), sort=True)
                   if g != ""]
    rows = []
    for metric in metrics:
        for gname, part in groups:
            x = pd.to_numeric(part[metric], errors="coerce").to_numpy(dtype=float)
            y = pd.to_numeric(part[quality], errors="coerce").to_numpy(dtype=float)
            keep = np.isfinite(x) & np.isfinite(y)
            rows.append({"metric": metric, "group": gname, **_stats(x[keep], y[keep])})
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)


def scatter_figure(data, quality: str, metric: str = "alpha", *, ax=None, path=None, key=None):
    """Metric against quality, one colour per group, with the overall Spearman rho in the title."""
    from .. import plots

    models = _models(data, key)
    ok = models[models["status"] == "success"] if "status" in models.columns else models
    fig, ax = plots.new_axes(ax)
    for g, part in ok.groupby(ok["group"].fillna("") if "group" in ok.columns else
                              pd.Series("", index=ok.index)):
        ax.scatter(part[metric], part[quality], label=g or "(no group)", s=24)
    stats = correlate(ok, quality, metrics=[metric], by_group=False).iloc[0]
    rho = "n/a" if math.isnan(stats["spearman_rho"]) else f"{stats['spearman_rho']:.3f}"
    ax.set_xlabel(metric)
    ax.set_ylabel(quality)
    ax.set_title(f"{metric} vs {quality}: Spearman rho {rho} (n={int(stats['n'])})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return plots.finish(fig, path)


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return html.escape(str(v))


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_zoo_report(data, path, *, quality=(), metrics=METRICS, key=None,
                     title: str = "tailscope zoo") -> Path:
    """A self-contained HTML page: the models table, and for each quality column the correlation
    table and the scatter plots of each metric against it."""
    from ..plots import data_uri
    from ..util.io import atomic_write

    models = _models(data, key)
    cols = [c for c in ("name", "group", "status", "reason", *metrics, "layers", "failed",
                        *quality) if c in models.columns]
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p>{len(models)} models</p>",
             _html_table(models[cols])]
    for q in quality:
        parts.append(f"<h2>Summary metrics vs {html.escape(q)}</h2>")
        parts.append(_html_table(correlate(models, q, metrics=metrics)))
        for m in metrics:
            fig = scatter_figure(models, q, m)
            parts.append(f'<img alt="{html.escape(m)} vs {html.escape(q)}" src="{data_uri(fig)}">')
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) +
            "</title><style>body{font-family:sans-serif;margin:1em}table{border-collapse:"
            "collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}</style>"
            "</head><body>" + "".join(parts) + "</body></html>")
    return atomic_write(path, lambda p: Path(p).write_text(page))
