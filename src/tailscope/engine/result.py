"""Tables from layer results: ``details`` (declared columns only), ``skipped``, ``describe``'s
table, and the summary of a details table."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..sources.moe import expert_group
from .columns import (
    BY_NAME,
    DESCRIBE_COLUMNS,
    SKIPPED_COLUMNS,
    SUMMARY_COUNTS,
    columns_for,
    summary_columns,
    verdict,
)
from .layer import LayerResult
from .plan import UNSELECTED

EXPERT_WEIGHTING = ("each", "layer")  # Analysis.summary(experts=...)


def details_frame(results: list[LayerResult], o) -> pd.DataFrame:
    """The rows of every layer as a DataFrame with the declared columns for these options.

    A row key that is not declared in ``engine/columns.py`` is an error here, not a column that
    silently vanishes."""
    rows = [r.values for layer in results for r in layer.rows]
    undeclared = {k for row in rows for k in row} - set(BY_NAME)
    if undeclared:
        raise RuntimeError(f"undeclared column(s) {sorted(undeclared)}: declare them in "
                           "tailscope/engine/columns.py")
    return pd.DataFrame(rows, columns=columns_for(o))


def skipped_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(SKIPPED_COLUMNS))


def describe_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(DESCRIBE_COLUMNS))


def summarize(details: pd.DataFrame, skipped: int, experts: str = "each") -> dict:
    """Means of the summary metrics over successful layers, and how many layers were analysed,
    failed, skipped, over- and under-trained; with expert rows, ``experts``: how many of them
    (see ``Analysis.summary`` for ``experts='layer'``)."""
    if experts not in EXPERT_WEIGHTING:
        raise ValueError(f"experts must be one of {EXPERT_WEIGHTING}; got {experts!r}")
    n_experts = int(details["expert"].notna().sum()) if "expert" in details.columns else 0
    d = experts_as_layers(details) if experts == "layer" else details
    ok = d[d["status"] == "success"] if len(d) else d
    out: dict[str, Any] = {}
    for col in summary_columns(d.columns):
        out[col] = float(ok[col].mean()) if len(ok) else math.nan
    counts = (len(d), len(ok), int((d["status"] == "failed").sum()) if len(d) else 0, skipped,
              int((ok["warning"] == "over-trained").sum()) if len(ok) else 0,
              int((ok["warning"] == "under-trained").sum()) if len(ok) else 0)
    out.update((k, int(v)) for k, v in zip(SUMMARY_COUNTS, counts))
    if n_experts:
        out["experts"] = n_experts
    return out


def expert_groups(details: pd.DataFrame) -> pd.Series:
    """Per row of ``details``, the name shared by the experts of its MoE projection
    (``...gate_up_proj[*.gate]``), '' for a row that is not an expert matrix."""
    if "expert" not in details.columns or not len(details):
        return pd.Series([""] * len(details), index=details.index, dtype=object)
    is_expert = details["expert"].notna()
    return pd.Series([expert_group(n) if e else "" for n, e in zip(details["name"], is_expert)],
                     index=details.index, dtype=object)


EXPERT_SUMMARY_COLUMNS = ("group", "first_layer_id", "experts", "fitted", "mean", "min", "max",
                          "std", "spread", "expert_min", "expert_max")


def experts_frame(details: pd.DataFrame, metric: str = "alpha") -> pd.DataFrame:
    """One row per Mixture-of-Experts projection (the experts of one stack, or of one
    per-expert projection name): how many experts, how many fitted, and the mean, min, max,
    standard deviation (ddof 0) and spread (max - min) of ``metric`` over the fitted ones, with
    the experts holding the min and max. Empty when the model has no expert rows."""
    if metric not in details.columns:
        raise ValueError(f"no column {metric!r} in details")
    groups = expert_groups(details)
    rows = []
    for group in dict.fromkeys(g for g in groups if g):
        d = details[groups == group]
        ok = d[(d["status"] == "success") & d[metric].notna()]
        v = ok[metric].astype(float)
        nan = math.nan
        rows.append({"group": group, "first_layer_id": int(d["layer_id"].iloc[0]),
                     "experts": int(d["expert"].nunique()), "fitted": len(ok),
                     "mean": float(v.mean()) if len(v) else nan,
                     "min": float(v.min()) if len(v) else nan,
                     "max": float(v.max()) if len(v) else nan,
                     "std": float(v.std(ddof=0)) if len(v) else nan,
                     "spread": float(v.max() - v.min()) if len(v) else nan,
                     "expert_min": int(ok["expert"].loc[v.idxmin()]) if len(v) else None,
                     "expert_max": int(ok["expert"].loc[v.idxmax()]) if len(v) else None})
    return pd.DataFrame(rows, columns=list(EXPERT_SUMMARY_COLUMNS))


def experts_as_layers(details: pd.DataFrame) -> pd.DataFrame:
    """``details`` with the successful rows of each MoE projection's experts replaced by one
    row holding their means (numeric columns), so that a projection of 128 experts weighs as
    one layer in the summary, like the dense projection it replaces; failed expert rows stay."""
    groups = expert_groups(details)
    if not (groups != "").any():
        return details
    keep = details[(groups == "") | (details["status"] != "success")]
    merged = []
    for group in dict.fromkeys(g for g in groups if g):
        d = details[(groups == group) & (details["status"] == "success")]
        if not len(d):
            continue
        row = d.iloc[0].copy()
        for col in d.columns:
            if pd.api.types.is_numeric_dtype(d[col]) and col not in ("layer_id", "expert"):
                row[col] = d[col].mean()
        row["name"], row["expert"] = group, math.nan
        row["warning"] = verdict(row["alpha"]) if "alpha" in row.index else ""
        merged.append(row)
    out = pd.concat([keep, pd.DataFrame(merged)], ignore_index=True) if merged else keep
    return out.sort_values("layer_id", kind="stable").reset_index(drop=True)


def mean_layers(details: pd.DataFrame) -> dict[str, int]:
    """Over how many rows each summary mean was taken: the fitted rows where the metric is a
    number (a diagnostic that could not be computed for a row, NaN with its reason, is left out
    of its mean)."""
    d = details
    ok = d[d["status"] == "success"] if len(d) else d
    return {col: int(pd.to_numeric(ok[col], errors="coerce").notna().sum())
            for col in summary_columns(d.columns)}


def means_text(summary: dict, layers: dict[str, int], fitted: int) -> str:
    """The summary means as one line, each saying over how many layers it was taken when that
    is fewer than the fitted ones: 'alpha 3.1  alpha_farms 2.9 (over 12 of 14 layers)'."""
    parts = []
    for k, n in layers.items():
        if k in summary:
            note = f" (over {n} of {fitted} layers)" if n != fitted else ""
            parts.append(f"{k} {summary[k]:.4g}{note}")
    fewer = any(n != fitted for n in layers.values())
    return "  ".join(parts) + (f"  (means over the {fitted} fitted layers"
                               f"{', except where said' if fewer else ''})")


# what skip_kind calls each skip reason, in the order summaries list them
SKIP_KINDS = ("not a weight matrix", "split into parts", "layers=", "min_evals", "max_evals",
              "max_N", "empty")


def skip_kind(reason: str) -> str:
    """The kind of a skipped tensor's reason, for counting: which option skipped it
    (``layers=``, ``min_evals``, ``max_evals``, ``max_N``), or that it is not a weight matrix
    (a bias, a norm, a token), a tensor split into parts analysed instead, or empty."""
    if reason.startswith(UNSELECTED):
        return "layers="
    for option in ("min_evals", "max_evals", "max_N"):
        if f"{option}=" in reason:
            return option
    if reason.startswith("split into"):
        return "split into parts"
    if reason.startswith("an empty matrix"):
        return "empty"
    return "not a weight matrix"


def skip_counts(reasons) -> dict[str, int]:
    """How many skipped tensors of each :func:`skip_kind`, in ``SKIP_KINDS`` order (kinds with
    none left out)."""
    kinds = [skip_kind(str(r)) for r in reasons]
    return {k: kinds.count(k) for k in SKIP_KINDS if k in kinds}
