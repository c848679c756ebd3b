"""Does a summary metric track model quality? Rank correlations and R^2, overall and per group,
with seeded bootstrap confidence intervals, and scatter plots of metric against quality."""

from __future__ import annotations

import html
import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..engine.columns import SUMMARY_METRICS

METRICS = ("alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm", "log_norm",
           "stable_rank", "D")
CORRELATION_COLUMNS = ["metric", "group", "n", "spearman_rho", "spearman_p", "kendall_tau",
                       "kendall_p", "r2"]
# with bootstrap=N: each estimate followed by its interval
INTERVAL_COLUMNS = ["metric", "group", "n", "spearman_rho", "spearman_low", "spearman_high",
                    "spearman_p", "kendall_tau", "kendall_low", "kendall_high", "kendall_p", "r2"]
_CHUNK = 256  # bootstrap replicates per block of the Kendall sign matrices (memory ~ chunk n^2)


def rank_correlations(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Spearman's rho and Kendall's tau-b of each row of ``x`` against the same row of ``y``
    (arrays of shape (n,) or (B, n)), vectorised: what ``scipy.stats.spearmanr`` and
    ``kendalltau`` give one pair at a time (average ranks for ties; tau-b's tie correction).
    A row where x or y is constant gives NaN.
    """
    from scipy.stats import rankdata

    x = np.atleast_2d(np.asarray(x, dtype=float))
    y = np.atleast_2d(np.asarray(y, dtype=float))
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in shape: {x.shape} and {y.shape}")
    rx = rankdata(x, axis=1)
    ry = rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry).sum(1) / np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
    tau = np.empty(x.shape[0])
    for s in range(0, x.shape[0], _CHUNK):
        xs, ys = x[s:s + _CHUNK], y[s:s + _CHUNK]
        sx = np.sign(xs[:, :, None] - xs[:, None, :]).astype(np.int8)
        sy = np.sign(ys[:, :, None] - ys[:, None, :]).astype(np.int8)
        both = (sx * sy).sum(axis=(1, 2), dtype=np.int64)  # concordant - discordant, twice
        px = np.abs(sx).sum(axis=(1, 2), dtype=np.int64)  # pairs untied in x, twice
        py = np.abs(sy).sum(axis=(1, 2), dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            tau[s:s + _CHUNK] = both / np.sqrt(px.astype(float) * py)
    return np.clip(rho, -1.0, 1.0), np.clip(tau, -1.0, 1.0)


def bootstrap_intervals(x, y, *, replicates: int = 2000, level: float = 0.9,
                        seed=0) -> dict[str, float]:
    """Percentile bootstrap intervals of Spearman's rho and Kendall's tau: ``replicates``
    resamples of the (x, y) pairs with replacement, drawn by ``numpy.random.default_rng(seed)``
    (an int or a sequence of ints), so the same seed gives the same interval bit for bit.
    Resamples where x or y is constant have no correlation and are left out.

    Returns
    -------
    dict
        spearman_low, spearman_high, kendall_low, kendall_high (NaN with fewer than 3 pairs).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level!r}")
    if int(replicates) < 1:
        raise ValueError(f"replicates must be an int >= 1; got {replicates!r}")
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    out = dict.fromkeys(("spearman_low", "spearman_high", "kendall_low", "kendall_high"),
                        math.nan)
    n = x.size
    if n < 3:
        return out
    idx = np.random.default_rng(seed).integers(0, n, size=(int(replicates), n))
    rho, tau = rank_correlations(x[idx], y[idx])
    q = [50 * (1 - level), 50 * (1 + level)]
    for name, values in (("spearman", rho), ("kendall", tau)):
        values = values[np.isfinite(values)]
        if values.size:
            out[f"{name}_low"], out[f"{name}_high"] = (float(v) for v in np.percentile(values, q))
    return out


def group_seed(seed: int, group: str) -> list[int]:
    """The bootstrap seed of one group: ``[seed, crc32(group)]``, so a group's resamples do not
    depend on which other groups or metrics are computed (and every metric of a group is
    resampled alike: paired intervals)."""
    return [int(seed), zlib.crc32(str(group).encode())]


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
              key: str | None = None, groups: Sequence[str] = ("group",), bootstrap: int = 0,
              level: float = 0.9, seed: int = 0) -> pd.DataFrame:
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
    groups : sequence of str
        The columns whose values make the groups (default: ``group``), each value one group.
    bootstrap : int
        With N > 0, percentile bootstrap intervals at ``level`` from N resamples of the models
        (columns spearman_low/high, kendall_low/high; see :func:`bootstrap_intervals`), seeded by
        ``seed`` and the group's name (:func:`group_seed`).

    Returns
    -------
    pandas.DataFrame
        Columns metric, group ('all' or a group name), n, spearman_rho, spearman_p, kendall_tau,
        kendall_p, r2 (with the intervals: ``INTERVAL_COLUMNS``). Only models analysed
        successfully with a finite metric and quality count.
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
    parts = [("all", ok)]
    for column in groups if by_group else ():
        if column in ok.columns:
            parts += [(str(g), part) for g, part in
                      ok.groupby(ok[column].fillna("").astype(str), sort=True) if g != ""]
    rows = []
    for metric in metrics:
        for gname, part in parts:
            x = pd.to_numeric(part[metric], errors="coerce").to_numpy(dtype=float)
            y = pd.to_numeric(part[quality], errors="coerce").to_numpy(dtype=float)
            keep = np.isfinite(x) & np.isfinite(y)
            row = {"metric": metric, "group": gname, **_stats(x[keep], y[keep])}
            if bootstrap:
                row.update(bootstrap_intervals(x[keep], y[keep], replicates=bootstrap,
                                               level=level, seed=group_seed(seed, gname)))
            rows.append(row)
    return pd.DataFrame(rows, columns=INTERVAL_COLUMNS if bootstrap else CORRELATION_COLUMNS)


def scatter_figure(data, quality: str, metric: str = "alpha", *, ax=None, path=None, key=None):
    """Metric against quality, one colour per group, with the overall Spearman rho in the title."""
    from ..report import plots

    models = _models(data, key)
    ok = models[models["status"] == "success"] if "status" in models.columns else models
    fig, ax = plots.new_axes(ax)
    for g, part in ok.groupby(ok["group"].fillna("") if "group" in ok.columns else
                              pd.Series("", index=ok.index)):
        ax.scatter(part[metric], part[quality], label=plots.literal(g or "(no group)"),
                   s=24)
    stats = correlate(ok, quality, metrics=[metric], by_group=False).iloc[0]
    rho = "n/a" if math.isnan(stats["spearman_rho"]) else f"{stats['spearman_rho']:.3f}"
    ax.set_xlabel(plots.literal(metric))
    ax.set_ylabel(plots.literal(quality))
    ax.set_title(plots.literal(f"{metric} vs {quality}: Spearman rho {rho} (n={int(stats['n'])})"))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return plots.finish(fig, path)


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return html.escape(str(v))


def html_table(df: pd.DataFrame) -> str:
    """A plain HTML table of ``df`` (numbers to 4 significant digits, NaN blank)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_zoo_report(data, path, *, quality=(), metrics=METRICS, key=None,
                     title: str = "tailscope zoo", tables: dict | None = None,
                     notes: Sequence[str] = (), columns: Sequence[str] = ()) -> Path:
    """A self-contained HTML page: the models table, and for each quality column the correlation
    table and the scatter plots of each metric against it.

    ``tables``: correlation tables already computed, by quality column (e.g. with bootstrap
    intervals); the others are computed by :func:`correlate`. ``notes``: paragraphs of text shown
    under the title. ``columns``: more columns of the models table to show (e.g. a zoo's
    training settings).
    """
    from ..report.plots import data_uri
    from ..util.io import atomic_write

    models = _models(data, key)
    tables = tables or {}
    cols = [c for c in dict.fromkeys(("name", "group", *columns, "status", "reason", *metrics,
                                      "layers", "failed", *quality)) if c in models.columns]
    parts = [f"<h1>{html.escape(title)}</h1>",
             *(f"<p>{html.escape(str(n))}</p>" for n in notes),
             f"<p>{len(models)} models</p>", html_table(models[cols])]
    for q in quality:
        parts.append(f"<h2>Summary metrics vs {html.escape(q)}</h2>")
        table = tables[q] if q in tables else correlate(models, q, metrics=metrics)
        parts.append(html_table(table))
        for m in metrics:
            fig = scatter_figure(models, q, m)
            parts.append(f'<img alt="{html.escape(m)} vs {html.escape(q)}" src="{data_uri(fig)}">')
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) +
            "</title><style>body{font-family:sans-serif;margin:1em}table{border-collapse:"
            "collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}</style>"
            "</head><body>" + "".join(parts) + "</body></html>")
    return atomic_write(path, lambda p: Path(p).write_text(page))
