"""Does a summary metric track model quality? Rank correlations and R^2, overall and per group,
with seeded bootstrap confidence intervals, and scatter plots of metric against quality."""

from __future__ import annotations

import functools
import html
import math
import warnings
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


class LayerSetWarning(UserWarning):
    """Models of one group were analysed on different layer sets, so their summary means are
    not over the same layers (see :func:`layer_set_notes`)."""


def _layers(data, key=None):
    """(layer table, details of one model) when ``data`` is a ZooRun or a store; else None."""
    from .store import Store, open_store

    if isinstance(getattr(data, "models", None), pd.DataFrame) and hasattr(data, "store"):
        store, key = data.store, data.key  # a ZooRun
    elif isinstance(data, (Store, str, Path)):
        store = open_store(data)
        key = key or store.latest_key()
    else:
        return None
    return store.layer_table(key), (lambda name: store.details(name, key))


def _family(models: pd.DataFrame, column: str = "group") -> list[tuple[str, pd.DataFrame]]:
    """The successfully analysed models by group (all together when none has a group)."""
    ok = models[models["status"] == "success"] if "status" in models.columns else models
    if column not in ok.columns or not ok[column].fillna("").astype(str).ne("").any():
        return [("", ok)]
    return [(str(g), part) for g, part in ok.groupby(ok[column].fillna("").astype(str),
                                                      sort=True)]


def layer_set_notes(models: pd.DataFrame, layers: pd.DataFrame, column: str = "group",
                    common: bool = False) -> list[str]:
    """One line per group whose models were analysed on different layer sets: how many layers
    all of them have, and why the others are missing from some (counted by kind: which option
    skipped them, a failed fit, or not in the model).

    ``models``: the models table; ``layers``: :meth:`Store.layer_table` (model, name, status,
    reason). ``common``: the means were restricted to the common layers (the line says so).
    """
    from ..engine.result import skip_kind

    notes = []
    for g, part in _family(models, column):
        names = list(part["name"])
        if len(names) < 2:
            continue
        rows = layers[layers["model"].isin(names)]
        fitted = {m: set(rows.loc[(rows["model"] == m) & (rows["status"] == "success"), "name"])
                  for m in names}
        sets = list(fitted.values())
        if all(x == sets[0] for x in sets):
            continue
        shared = set.intersection(*sets)
        union = set.union(*sets)
        why: dict[str, int] = {}
        for m in names:
            own = rows[rows["model"] == m].set_index("name")
            for layer in union - fitted[m]:
                if layer not in own.index:
                    kind = "not in the model"
                else:
                    r = own.loc[layer]
                    r = r.iloc[0] if isinstance(r, pd.DataFrame) else r
                    kind = "failed fit" if r["status"] == "failed" else skip_kind(str(r["reason"]))
                why[kind] = why.get(kind, 0) + 1
        sizes = sorted(len(x) for x in sets)
        who = f"group {g!r}" if g else "the models"
        counted = ", ".join(f"{n} {k}" for k, n in sorted(why.items(), key=lambda t: -t[1]))
        tail = (f"the means are restricted to those {len(shared)} layers (common_layers)"
                if common else "restrict the means to them with --common-layers "
                "(correlate(common_layers=True)) to compare like with like")
        notes.append(f"{who}: its {len(names)} models were fitted on different layer sets "
                     f"({sizes[0]} to {sizes[-1]} layers; {len(shared)} common to all); a layer "
                     f"missing from a model was left out by: {counted}; {tail}")
    return notes


def common_layer_models(models: pd.DataFrame, layers: pd.DataFrame, details,
                        column: str = "group") -> pd.DataFrame:
    """The models table with each successfully analysed model's summary means (and its
    ``layers``, ``success``, ``failed``, ``over_trained``, ``under_trained`` counts) recomputed
    over the layers fitted in every model of its group: ``details(name)`` gives a model's stored
    per-layer table."""
    from ..engine.result import summarize

    out = models.copy()
    for _, part in _family(models, column):
        names = list(part["name"])
        rows = layers[layers["model"].isin(names) & (layers["status"] == "success")]
        shared = set.intersection(*(set(rows.loc[rows["model"] == m, "name"]) for m in names)) \
            if names else set()
        for m in names:
            d = details(m)
            sub = d[d["name"].isin(shared) & (d["status"] == "success")]
            idx = out.index[out["name"] == m]
            for k, v in summarize(sub, 0).items():
                if k in out.columns and k != "skipped":
                    out.loc[idx, k] = v
    out.attrs = dict(models.attrs)
    return out


def check_quality(models: pd.DataFrame, quality: str) -> None:
    """A quality column is usable: some analysed model has a number in it, and none has an
    infinite one (ValueError, one line, otherwise: never an n = 0 table, never inf read as
    missing)."""
    ok = models[models["status"] == "success"] if "status" in models.columns else models
    values = pd.to_numeric(ok[quality], errors="coerce").astype(float)
    inf = ok.loc[np.isinf(values.to_numpy()), "name"] if "name" in ok.columns else values[
        np.isinf(values.to_numpy())]
    if len(inf):
        raise ValueError(f"quality column {quality!r}: infinite value(s) for "
                         f"{', '.join(map(str, list(inf)[:3]))}{' ...' if len(inf) > 3 else ''}"
                         "; give finite numbers, or leave a value empty when unknown")
    if not np.isfinite(values.to_numpy()).any():
        raise ValueError(f"quality column {quality!r} has no number for any of the "
                         f"{len(ok)} analysed model(s): nothing to correlate")


# up to this many pairs, spearman_p is the exact permutation p-value (8! = 40,320 pairings)
EXACT_SPEARMAN_N = 8


@functools.lru_cache(maxsize=EXACT_SPEARMAN_N + 1)
def _pairings(n: int) -> np.ndarray:
    """Every permutation of range(n), one per row (n! x n, int8)."""
    from itertools import permutations

    return np.array(list(permutations(range(n))), dtype=np.int8).reshape(-1, n)


def spearman_exact_p(x, y) -> float:
    """The exact two-sided permutation p-value of Spearman's rho for small n: the share of the
    n! pairings of the y ranks with the x ranks whose |rho| reaches the observed |rho| (to
    round-off). Ties get average ranks, as ``scipy.stats.spearmanr``. What
    ``scipy.stats.permutation_test(..., permutation_type='pairings')`` computes exactly when
    its resamples cover every pairing.

    >>> round(spearman_exact_p([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]), 6)  # 2 of 120 pairings
    0.016667
    """
    from scipy.stats import rankdata

    rx = rankdata(np.asarray(x, dtype=float))
    ry = rankdata(np.asarray(y, dtype=float))
    n = rx.size
    if n > EXACT_SPEARMAN_N:
        raise ValueError(f"{n} pairs: the exact distribution is for n <= {EXACT_SPEARMAN_N}")
    rx -= rx.mean()
    ry -= ry.mean()
    denom = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    observed = abs(float((rx * ry).sum())) / denom
    rhos = np.abs(ry[_pairings(n)] @ rx) / denom
    return float(np.count_nonzero(rhos >= observed - 1e-12) / rhos.size)


def _stats(x: np.ndarray, y: np.ndarray) -> dict:
    from scipy import stats

    n = x.size
    out = {"n": n, "spearman_rho": math.nan, "spearman_p": math.nan, "kendall_tau": math.nan,
           "kendall_p": math.nan, "r2": math.nan}
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out  # no correlation is defined: NaN, never a number
    rho, p = stats.spearmanr(x, y)
    if n <= EXACT_SPEARMAN_N:  # the t approximation is far off here (1e-24 for rho = 1, n = 5)
        p = spearman_exact_p(x, y)
    tau, kp = stats.kendalltau(x, y)
    r = stats.pearsonr(x, y)[0]
    out.update(spearman_rho=float(rho), spearman_p=float(p), kendall_tau=float(tau),
               kendall_p=float(kp), r2=float(r * r))
    return out


def correlate(data, quality: str, *, metrics=METRICS, by_group: bool = True,
              key: str | None = None, groups: Sequence[str] = ("group",), bootstrap: int = 0,
              level: float = 0.9, seed: int = 0, common_layers: bool = False) -> pd.DataFrame:
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
    common_layers : bool
        Recompute each model's summary means over the layers fitted in every model of its
        group (``groups[0]``; all models together when none has a group), so that members are
        compared on one layer set (:func:`common_layer_models`). Needs the layers: ``data`` a
        ZooRun or a store.

    Returns
    -------
    pandas.DataFrame
        Columns metric, group ('all' or a group name), n, spearman_rho, spearman_p, kendall_tau,
        kendall_p, r2 (with the intervals: ``INTERVAL_COLUMNS``). Only models analysed
        successfully with a finite metric and quality count. ``attrs['notes']``: the groups
        whose members were fitted on different layer sets (:func:`layer_set_notes`); without
        ``common_layers`` each is also a :class:`LayerSetWarning`.

    Notes
    -----
    With n <= 8 models, spearman_p is the exact permutation p-value (two-sided: the share of
    the n! pairings whose |rho| is at least the observed one; rho = 1 with n = 5 gives
    2 / 120 = 0.0167), not the t approximation, which is far too small there.
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
    check_quality(models, quality)
    info = _layers(data, key)
    if common_layers and info is None:
        raise ValueError("common_layers needs the models' layers: pass a ZooRun or a store, "
                         "not a models table")
    column = groups[0] if groups else "group"
    notes = layer_set_notes(models, info[0], column, common=common_layers) if info else []
    if common_layers:
        models = common_layer_models(models, info[0], info[1], column)
    for note in notes if not common_layers else ():
        warnings.warn(note, LayerSetWarning, stacklevel=2)
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
    table = pd.DataFrame(rows, columns=INTERVAL_COLUMNS if bootstrap else CORRELATION_COLUMNS)
    table.attrs["notes"] = notes
    return table


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
