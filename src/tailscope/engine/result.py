"""Tables from layer results: ``details`` (declared columns only), ``skipped``, ``describe``'s
table, and the summary of a details table."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .columns import (
    BY_NAME,
    DESCRIBE_COLUMNS,
    SKIPPED_COLUMNS,
    SUMMARY_COUNTS,
    columns_for,
    summary_columns,
)
from .layer import LayerResult
from .plan import UNSELECTED


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


def summarize(details: pd.DataFrame, skipped: int) -> dict:
    """Means of the summary metrics over successful layers, and how many layers were analysed,
    failed, skipped, over- and under-trained."""
    d = details
    ok = d[d["status"] == "success"] if len(d) else d
    out: dict[str, Any] = {}
    for col in summary_columns(d.columns):
        out[col] = float(ok[col].mean()) if len(ok) else math.nan
    counts = (len(d), len(ok), int((d["status"] == "failed").sum()) if len(d) else 0, skipped,
              int((ok["warning"] == "over-trained").sum()) if len(ok) else 0,
              int((ok["warning"] == "under-trained").sum()) if len(ok) else 0)
    out.update((k, int(v)) for k, v in zip(SUMMARY_COUNTS, counts))
    return out


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
