"""The durable results store: SQLite by default, any SQLAlchemy URL (e.g. PostgreSQL).

Three tables: ``runs`` (one row per zoo run: tailscope version, options, counts), ``models`` (one
row per model and options key: status, reason, the summary, the quality columns as JSON) and
``layers`` (one row per analysed layer: the columns of ``Analysis.details``; the columns that only
some options produce go into an ``extras`` JSON column). A model is written in one transaction
(its old rows deleted, the new ones inserted), so a killed run leaves either all of a model's rows
or none, and (key, name) is unique: a model appears once per options key.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..analysis import COLUMNS, SUMMARY_METRICS

SUMMARY_COUNTS = ("layers", "success", "failed", "skipped", "over_trained", "under_trained")
_TEXT_COLUMNS = ("name", "module", "layer_type", "status", "warning", "reason", "dtype")
_INT_COLUMNS = ("layer_id",)
_EXTRA_COLUMNS = ("slice_id", "num_fingers", "raw_alpha")
LAYER_COLUMNS = [c for c in COLUMNS if c not in _EXTRA_COLUMNS]
_ORDER = "__columns__"  # in the first layer's extras: the stored table's column order
# PostgreSQL reserves xmin and xmax as system column names: stored under other names
_DB_NAMES = {"xmin": "fit_xmin", "xmax": "fit_xmax"}


class StoreError(ValueError):
    """The store cannot be opened or written: a one-line message (CLI exit code 2)."""


def _sqlalchemy():
    try:
        import sqlalchemy
    except ImportError:
        raise StoreError("the results store needs SQLAlchemy: pip install 'tailscope[zoo]'"
                         ) from None
    return sqlalchemy


def store_url(store) -> str:
    """A SQLAlchemy URL from a URL or a file path (a path means a SQLite file)."""
    text = str(store)
    if "://" in text:
        if text.startswith("postgresql://"):  # psycopg 3 is the driver the zoo extra installs
            text = "postgresql+psycopg://" + text[len("postgresql://"):]
        return text
    path = Path(text).expanduser()
    if not path.resolve().parent.exists():
        raise StoreError(f"{store}: the folder {path.resolve().parent} does not exist")
    return f"sqlite:///{path.resolve()}"


def _number(v) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None  # NULL for NaN: SQLite has no NaN


def _plain(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return _number(v)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class Store:
    """A results store at a SQLAlchemy URL or a SQLite file path.

    Opening it connects and creates the tables when missing; a store that cannot be reached or
    written (bad path, bad credentials, no server) raises :class:`StoreError` at once.
    """

    def __init__(self, store="results.db"):
        sa = _sqlalchemy()
        self.sa = sa
        self.url = store_url(store)
        shown = self.url
        try:
            shown = sa.engine.make_url(self.url).render_as_string(hide_password=True)
            self.engine = sa.create_engine(self.url, future=True, pool_pre_ping=True)
        except Exception as exc:  # noqa: BLE001 - an unparsable URL or a missing driver
            raise StoreError(f"store {store}: {_one_line(exc)}") from None
        self.shown = shown
        self._define()
        try:
            self.meta.create_all(self.engine)
        except Exception as exc:  # noqa: BLE001 - bad credentials, no server, read-only file
            raise StoreError(f"cannot open the store {shown}: {_one_line(exc)}") from None

    def _define(self) -> None:
        sa = self.sa
        self.meta = meta = sa.MetaData()
        self.runs = sa.Table(
            "runs", meta,
            sa.Column("run_id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("key", sa.String(64), nullable=False, index=True),
            sa.Column("tailscope_version", sa.String(32), nullable=False),
            sa.Column("options", sa.Text, nullable=False),
            sa.Column("manifest", sa.Text),
            sa.Column("scheduler", sa.Text),
            sa.Column("started", sa.DateTime),
            sa.Column("finished", sa.DateTime),
            sa.Column("models", sa.Integer),
            sa.Column("done", sa.Integer),
            sa.Column("failed", sa.Integer),
            sa.Column("resumed", sa.Integer))
        self.models = sa.Table(
            "models", meta,
            sa.Column("model_id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("key", sa.String(64), nullable=False),
            sa.Column("run_id", sa.Integer),
            sa.Column("name", sa.Text, nullable=False),
            sa.Column("source", sa.Text),
            sa.Column("group", sa.Text),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("reason", sa.Text),
            sa.Column("read", sa.Text),
            *[sa.Column(m, sa.Float) for m in SUMMARY_METRICS],
            *[sa.Column(c, sa.Integer) for c in SUMMARY_COUNTS],
            sa.Column("quality", sa.Text),
            sa.Column("seconds", sa.Float),
            sa.Column("worker", sa.Text),
            sa.Column("finished", sa.DateTime),
            sa.UniqueConstraint("key", "name", name="uq_models_key_name"))
        cols = []
        for c in LAYER_COLUMNS:
            kind = sa.Text if c in _TEXT_COLUMNS else sa.Integer if c in _INT_COLUMNS else sa.Float
            cols.append(sa.Column(_DB_NAMES.get(c, c), kind, key=c))
        self.layers = sa.Table(
            "layers", meta,
            sa.Column("row_id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("model_id", sa.Integer, sa.ForeignKey("models.model_id"), nullable=False,
                      index=True),
            sa.Column("position", sa.Integer, nullable=False),
            *cols,
            sa.Column("extras", sa.Text))

    # --- runs --------------------------------------------------------------------------------
    def start_run(self, key: str, version: str, options: dict, manifest: str, scheduler: str,
                  models: int) -> int:
        with self.engine.begin() as conn:
            res = conn.execute(self.runs.insert().values(
                key=key, tailscope_version=version, options=json.dumps(options, sort_keys=True),
                manifest=manifest, scheduler=scheduler, started=_now(), models=models))
            return int(res.inserted_primary_key[0])

    def finish_run(self, run_id: int, done: int, failed: int, resumed: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.runs.update().where(self.runs.c.run_id == run_id).values(
                finished=_now(), done=done, failed=failed, resumed=resumed))

    def finished_names(self, key: str) -> set[str]:
        """Names of the models finished successfully under this options key."""
        m = self.models
        with self.engine.connect() as conn:
            rows = conn.execute(self.sa.select(m.c.name).where(
                (m.c.key == key) & (m.c.status == "success")))
            return {r[0] for r in rows}

    # --- one model, in one transaction -------------------------------------------------------
    def write_model(self, key: str, run_id: int, entry: dict, result: dict) -> None:
        """Replace the rows of one model (``entry``: name, source, group, quality) with
        ``result`` (status, reason, summary, details DataFrame, ...) atomically."""
        m, lay, sa = self.models, self.layers, self.sa
        summary = result.get("summary") or {}
        row = {"key": key, "run_id": run_id, "name": entry["name"], "source": entry["source"],
               "group": entry.get("group") or None, "status": result["status"],
               "reason": result.get("reason") or "", "read": result.get("read"),
               "quality": json.dumps({k: _number(v) for k, v in entry.get("quality", {}).items()}),
               "seconds": _number(result.get("seconds")), "worker": result.get("worker"),
               "finished": _now()}
        for k in SUMMARY_METRICS:
            row[k] = _number(summary.get(k))
        for k in SUMMARY_COUNTS:
            row[k] = int(summary[k]) if k in summary else None
        details = result.get("details")
        layer_rows = []
        if details is not None and len(details):
            # columns that only some options produce (diagnostics, slices, fingers) -> extras;
            # the first row also keeps the table's column order
            extras = [c for c in details.columns if c not in LAYER_COLUMNS]
            for pos, rec in enumerate(details.to_dict("records")):
                out = {c: _plain(rec.get(c)) for c in LAYER_COLUMNS}
                out["position"] = pos
                more = {c: _plain(rec[c]) for c in extras}
                if pos == 0 and extras:
                    more[_ORDER] = list(details.columns)
                out["extras"] = json.dumps(more) if extras else None
                layer_rows.append(out)
        with self.engine.begin() as conn:
            old = sa.select(m.c.model_id).where((m.c.key == key) & (m.c.name == entry["name"]))
            conn.execute(lay.delete().where(lay.c.model_id.in_(old)))
            conn.execute(m.delete().where((m.c.key == key) & (m.c.name == entry["name"])))
            model_id = conn.execute(m.insert().values(**row)).inserted_primary_key[0]
            if layer_rows:
                for r in layer_rows:
                    r["model_id"] = model_id
                conn.execute(lay.insert(), layer_rows)

    # --- reading -----------------------------------------------------------------------------
    def keys(self) -> pd.DataFrame:
        """The runs table, newest last."""
        with self.engine.connect() as conn:
            return pd.read_sql(self.sa.select(self.runs).order_by(self.runs.c.run_id), conn)

    def latest_key(self) -> str:
        runs = self.keys()
        if runs.empty:
            raise StoreError(f"the store {self.shown} holds no run")
        return str(runs["key"].iloc[-1])

    def models_table(self, key: str | None = None) -> pd.DataFrame:
        """One row per model of an options key (the latest run's key by default): name, source,
        group, status, reason, the summary means and counts, and one column per quality value."""
        key = key or self.latest_key()
        m = self.models
        with self.engine.connect() as conn:
            table = pd.read_sql(self.sa.select(m).where(m.c.key == key).order_by(m.c.model_id),
                                conn)
        quality = [json.loads(q) if q else {} for q in table.pop("quality")]
        qcols = sorted({k for q in quality for k in q})
        for c in qcols:
            table[c] = [np.nan if q.get(c) is None else float(q[c]) for q in quality]
        for c in SUMMARY_METRICS:
            table[c] = pd.to_numeric(table[c], errors="coerce").astype(float)
        table["group"] = table["group"].fillna("")
        table.attrs["quality_columns"] = qcols
        return table

    def details(self, name: str, key: str | None = None) -> pd.DataFrame:
        """The stored per-layer table of one model, with ``Analysis.details``'s columns."""
        key = key or self.latest_key()
        m, lay, sa = self.models, self.layers, self.sa
        q = (sa.select(lay).join(m, lay.c.model_id == m.c.model_id)
             .where((m.c.key == key) & (m.c.name == name)).order_by(lay.c.position))
        with self.engine.connect() as conn:
            table = pd.read_sql(q, conn)
        table = table.rename(columns={v: k for k, v in _DB_NAMES.items()})
        extras = [json.loads(e) if e else {} for e in table.pop("extras")]
        order = extras[0].pop(_ORDER, None) if extras else None
        names = list(dict.fromkeys(c for e in extras for c in e))
        text = set(_TEXT_COLUMNS)
        for c in names:
            values = [e.get(c) for e in extras]
            table[c] = values
            if any(isinstance(v, str) for v in values):  # e.g. mp_reason
                text.add(c)
        for c in table.columns:
            if c not in text and c not in ("row_id", "model_id", "position"):
                table[c] = pd.to_numeric(table[c], errors="coerce")
        for c in text:
            if c in table.columns:
                table[c] = table[c].fillna("")
        cols = order or [c for c in COLUMNS if c in table.columns]
        return table[[c for c in cols if c in table.columns]]

    def counts(self, key: str) -> dict[str, int]:
        """How many model rows and layer rows exist per model name under ``key``."""
        m, lay, sa = self.models, self.layers, self.sa
        q = (sa.select(m.c.name, m.c.layers, sa.func.count(lay.c.row_id))
             .select_from(m.outerjoin(lay, lay.c.model_id == m.c.model_id))
             .where(m.c.key == key).group_by(m.c.model_id, m.c.name, m.c.layers))
        with self.engine.connect() as conn:
            return {r[0]: (r[1], r[2]) for r in conn.execute(q)}

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Store({self.shown})"


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


def open_store(store: Any = "results.db") -> Store:
    """Open (and create when missing) a results store; a :class:`Store` passes through."""
    return store if isinstance(store, Store) else Store(store)
