"""A zoo manifest: one model per row (``source``, optional ``name`` and ``group``, quality columns).

CSV or YAML (a list of mappings, or a mapping with a ``models`` list). Relative sources are read
relative to the manifest's folder. A manifest that cannot be used at all (unreadable, no
``source`` column, duplicate names) is a :class:`ManifestError`; a row whose source is empty is
kept and recorded as a failed model when the zoo runs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..util.errors import first_line
from ..util.optional import require

RESERVED = ("source", "name", "group")


class ManifestError(ValueError):
    """The manifest cannot be used: a one-line message (CLI exit code 2)."""


def _read_yaml(path: Path) -> list[dict]:
    yaml = require("yaml", "a YAML manifest", error=ManifestError)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: cannot read the YAML manifest ({first_line(exc)})"
                            ) from None
    if isinstance(doc, dict):
        doc = doc.get("models")
    if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
        raise ManifestError(f"{path}: a YAML manifest is a list of models (mappings), or a "
                            "mapping with a 'models' list")
    return doc


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype={"source": str, "name": str, "group": str},
                           skipinitialspace=True, comment="#")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ManifestError(f"{path}: cannot read the CSV manifest ({first_line(exc)})") from None


def _text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


_MISSING = ("nan", "na", "n/a", "none", "null", "-")


def read_manifest(path) -> pd.DataFrame:
    """Read a manifest into a table with columns ``source``, ``name``, ``group``, ``path`` (the
    source resolved against the manifest's folder) and the quality columns (numbers or NaN).

    Parameters
    ----------
    path : str or Path
        A ``.csv`` file, or a ``.yaml`` / ``.yml`` file.

    Returns
    -------
    pandas.DataFrame
        One row per model, in manifest order. ``name`` defaults to the source as written.

    Raises
    ------
    ManifestError
        The file cannot be read, has no ``source`` column or no rows, or repeats a name.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest file")
    if path.suffix.lower() in (".yaml", ".yml"):
        table = pd.DataFrame(_read_yaml(path))
    else:
        table = _read_csv(path)
    table.columns = [str(c).strip() for c in table.columns]
    if "source" not in table.columns:
        raise ManifestError(f"{path}: the manifest has no 'source' column (columns: "
                            f"{', '.join(table.columns) or 'none'})")
    if table.empty:
        raise ManifestError(f"{path}: the manifest lists no model")
    sources = [_text(s) for s in table["source"]]
    names = [_text(n) if "name" in table.columns else "" for n in
             (table["name"] if "name" in table.columns else [None] * len(table))]
    names = [n or s or f"row {i + 2}" for i, (n, s) in enumerate(zip(names, sources))]
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise ManifestError(f"{path}: the name {n!r} appears twice (rows {seen[n] + 2} and "
                                f"{i + 2}); give each model a unique name")
        seen[n] = i
    groups = [_text(g) for g in table["group"]] if "group" in table.columns else [""] * len(table)
    base = path.resolve().parent
    resolved = []
    for s in sources:
        if not s:
            resolved.append("")
            continue
        p = Path(s).expanduser()
        # a relative path is relative to the manifest; anything that is not a local path
        # (e.g. a hub id) is passed through as written
        local = p if p.is_absolute() else base / p
        resolved.append(str(local) if (p.is_absolute() or local.exists()) else s)
    out = pd.DataFrame({"name": names, "source": sources, "group": groups, "path": resolved})
    for col in table.columns:
        if col in RESERVED:
            continue
        values = pd.to_numeric(table[col], errors="coerce").astype(float)
        for i, (raw, v) in enumerate(zip(table[col], values)):
            text = _text(raw)
            if math.isnan(v) and text and text.lower() not in _MISSING:
                raise ManifestError(f"{path}: row {i + 2}, quality column {col!r}: {text[:40]!r} "
                                    "is not a number (leave it empty when unknown)")
            if math.isinf(v):
                raise ManifestError(f"{path}: row {i + 2}, quality column {col!r}: {text[:40]!r} "
                                    "is infinite; give a finite number (leave it empty when "
                                    "unknown)")
        out[col] = values
    return out


def quality_columns(manifest: pd.DataFrame) -> list[str]:
    """The manifest's quality columns (everything but source, name, group and path)."""
    return [c for c in manifest.columns if c not in (*RESERVED, "path")]
