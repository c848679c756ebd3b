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
