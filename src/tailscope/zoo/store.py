"""The durable results store: SQLite by default, any SQLAlchemy URL (e.g. PostgreSQL).

Three tables: ``runs`` (one row per zoo run: tailscope version, options, counts), ``models`` (one
row per model and options key: status, reason, the summary means and counts, the quality columns
as JSON, the summary means that have no column of their own, e.g. ``mp_softrank``, in an
``extras`` JSON column) and ``layers`` (one row per analysed layer: the columns of
``Analysis.details``; the core columns are typed columns, the columns that only some options
produce go into an ``extras`` JSON column). The typed columns come from
:mod:`tailscope.engine.columns`. A model is written in one transaction (its old rows deleted, the
new ones inserted), so a killed run leaves either all of a model's rows or none, and (key, name)
is unique: a model appears once per options key.

The store evolves with tailscope: opening one adds the declared columns its tables lack
(``ALTER TABLE ... ADD COLUMN``, nullable), and never drops, renames or rewrites a column or a
row; columns that tailscope no longer declares are kept and read back.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..engine.columns import BY_NAME, COLUMNS, STORED_COLUMNS, SUMMARY_COUNTS, SUMMARY_METRICS
from ..util.errors import one_line
from ..util.optional import require

LAYER_COLUMNS = list(STORED_COLUMNS)
_ORDER = "__columns__"  # in the first layer's extras: the stored table's column order
# PostgreSQL reserves xmin and xmax as system column names: stored under other names
_DB_NAMES = {"xmin": "fit_xmin", "xmax": "fit_xmax"}
_TABLES = ("runs", "models", "layers")
_LAYER_KEYS = ("row_id", "model_id", "position", "extras")  # the layers table's own columns


class StoreError(ValueError):
    """The store cannot be opened or written: a one-line message (CLI exit code 2)."""


def _sqlalchemy():
    return require("sqlalchemy", "the results store", error=StoreError)


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
    if v is pd.NA or v is pd.NaT:  # pandas' missing values: NULL
        return None
    return v


def _value(v, dtype: str | None):
    """A value as its declared ``dtype`` stores it: 'int' as int (an integral float too), NaN and
    None as NULL; undeclared columns as plain Python values."""
    v = _plain(v)
    if v is None or isinstance(v, bool):
        return v
    if dtype == "int" and isinstance(v, float) and v.is_integer():
        return int(v)
    if dtype == "float" and isinstance(v, int):
        return float(v)
    if dtype == "text" and not isinstance(v, str):
        return str(v)
    return v


def _dtype(name: str) -> str | None:
    col = BY_NAME.get(name)
    return col.dtype if col is not None else None


def _error(exc: BaseException) -> str:
    return one_line(exc, getattr(exc, "orig", None))


class Store:
    """A results store at a SQLAlchemy URL or a SQLite file path.

    Opening it connects, creates the tables when missing and adds the declared columns an older
    store lacks; a store that cannot be reached or written (bad path, bad credentials, no server)
    raises :class:`StoreError` at once. ``runs``, ``models`` and ``layers`` are the tables as the
    database has them (reflected), which writing and reading use.
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
            raise StoreError(f"store {store}: {_error(exc)}") from None
        self.shown = shown
        self.declared = self._define()
        try:
            self.declared.create_all(self.engine)
            self.added = self._migrate()
            self.meta = sa.MetaData()
            self.meta.reflect(self.engine, only=list(_TABLES))
        except Exception as exc:  # noqa: BLE001 - bad credentials, no server, read-only file
            raise StoreError(f"cannot open the store {shown}: {_error(exc)}") from None
        self.runs, self.models, self.layers = (self.meta.tables[t] for t in _TABLES)

    def _define(self):
        """The tables as this tailscope declares them."""
        sa = self.sa
        meta = sa.MetaData()
        sa.Table(
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
        sa.Table(
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
            sa.Column("extras", sa.Text),  # summary means without a column (JSON)
            sa.Column("skipped_layers", sa.Text),  # the skipped tensors: [[name, reason], ...]
            sa.UniqueConstraint("key", "name", name="uq_models_key_name"))
        kinds = {"text": sa.Text, "int": sa.Integer, "float": sa.Float}
        sa.Table(
            "layers", meta,
            sa.Column("row_id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("model_id", sa.Integer, sa.ForeignKey("models.model_id"), nullable=False,
                      index=True),
            sa.Column("position", sa.Integer, nullable=False),
            *[sa.Column(_DB_NAMES.get(c.name, c.name), kinds[c.dtype])
              for c in COLUMNS if c.stored],
            sa.Column("extras", sa.Text))
        return meta

    def _migrate(self) -> list[str]:
        """Add every declared column an existing table lacks (nullable, no default): what an
        older tailscope's store needs. Returns the 'table.column' names added."""
        sa = self.sa
        dialect = self.engine.dialect
        quote = dialect.identifier_preparer
        added = []
        for name in _TABLES:
            table = self.declared.tables[name]
            have = {c["name"] for c in sa.inspect(self.engine).get_columns(name)}
            for col in table.columns:
                if col.name in have:
                    continue
                ddl = (f"ALTER TABLE {quote.format_table(table)} ADD COLUMN "
                       f"{quote.quote(col.name)} {col.type.compile(dialect=dialect)}")
                try:
                    with self.engine.begin() as conn:
                        conn.execute(sa.text(ddl))
                except Exception:
                    # another process opening the same store may have added it just now
                    now = {c["name"] for c in sa.inspect(self.engine).get_columns(name)}
                    if col.name not in now:
                        raise
                added.append(f"{name}.{col.name}")
        return added

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
        # summary means without a typed column (e.g. mp_softrank with mp_fit) -> extras
        more = {k: _number(v) for k, v in summary.items()
                if k not in SUMMARY_METRICS and k not in SUMMARY_COUNTS}
        row["extras"] = json.dumps(more) if more else None
        if result.get("skipped") is not None:
            row["skipped_layers"] = json.dumps([[str(n), str(r)] for n, r in result["skipped"]])
        details = result.get("details")
        layer_rows = []
        if details is not None and len(details):
            # columns that only some options produce (diagnostics, slices, fingers) -> extras;
            # the first row also keeps the table's column order
            extras = [c for c in details.columns if c not in LAYER_COLUMNS]
            for pos, rec in enumerate(details.to_dict("records")):
                out = {_DB_NAMES.get(c, c): _value(rec.get(c), _dtype(c)) for c in LAYER_COLUMNS}
                out["position"] = pos
                more = {c: _value(rec[c], _dtype(c)) for c in extras}
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
        group, status, reason, the summary means (those in ``extras`` too, e.g. mp_softrank) and
        counts, any column an older tailscope stored, and one column per quality value."""
        key = key or self.latest_key()
        m = self.models
        with self.engine.connect() as conn:
            table = pd.read_sql(self.sa.select(m).where(m.c.key == key).order_by(m.c.model_id),
                                conn)
        quality = [json.loads(q) if isinstance(q, str) and q else {} for q in table.pop("quality")]
        extras = [json.loads(e) if isinstance(e, str) and e else {} for e in table.pop("extras")]
        table.pop("skipped_layers")  # read by layer_table
        means = _ordered({k for e in extras for k in e})
        for c in means:
            values = [e.get(c) for e in extras]
            if c in table.columns:  # a column an older store typed: extras fill its gaps
                values = [v if c in e else old for v, e, old in zip(values, extras, table[c])]
            table[c] = pd.to_numeric(pd.Series(values, index=table.index, dtype=object),
                                     errors="coerce").astype(float)
        for c in SUMMARY_METRICS:
            table[c] = pd.to_numeric(table[c], errors="coerce").astype(float)
        # the extras' means follow the typed ones
        cols = [c for c in table.columns if c not in means]
        last = max(cols.index(c) for c in SUMMARY_METRICS) + 1
        table = table[[*cols[:last], *means, *cols[last:]]]
        qcols = sorted({k for q in quality for k in q})
        for c in qcols:
            table[c] = [np.nan if q.get(c) is None else float(q[c]) for q in quality]
        table["group"] = table["group"].fillna("")
        table.attrs["quality_columns"] = qcols
        return table

    def details(self, name: str, key: str | None = None) -> pd.DataFrame:
        """The stored per-layer table of one model, with ``Analysis.details``'s columns (and any
        column an older tailscope stored that holds values for it)."""
        key = key or self.latest_key()
        m, lay, sa = self.models, self.layers, self.sa
        q = (sa.select(lay).join(m, lay.c.model_id == m.c.model_id)
             .where((m.c.key == key) & (m.c.name == name)).order_by(lay.c.position))
        with self.engine.connect() as conn:
            table = pd.read_sql(q, conn)
        table = table.rename(columns={v: k for k, v in _DB_NAMES.items()})
        extras = [json.loads(e) if isinstance(e, str) and e else {} for e in table.pop("extras")]
        order = extras[0].pop(_ORDER, None) if extras else None
        names = list(dict.fromkeys(c for e in extras for c in e))
        text = {c for c in table.columns if _dtype(c) == "text"}
        text |= {c.name for c in lay.columns if c.name not in _LAYER_KEYS
                 and isinstance(c.type, sa.String) and _dtype(c.name) is None}
        for c in names:
            values = [e.get(c) for e in extras]
            if c in table.columns:  # a column an older store typed: extras fill its gaps
                values = [v if c in e else old for v, e, old in zip(values, extras, table[c])]
            table[c] = values
            if _dtype(c) == "text" or any(isinstance(v, str) for v in values):  # e.g. mp_reason
                text.add(c)
        for c in table.columns:
            if c not in text and c not in _LAYER_KEYS:
                table[c] = pd.to_numeric(table[c], errors="coerce")
        # the typed core columns, and any other column where this model has values (e.g. one
        # an older tailscope stored)
        shown = [c for c in table.columns if c not in _LAYER_KEYS
                 and (c in LAYER_COLUMNS or table[c].notna().any())]
        for c in text:
            if c in table.columns:
                table[c] = table[c].fillna("")
        cols = _merged([c for c in order if c in table.columns], shown) if order else \
            _ordered(shown)
        return table[cols]

    def layer_table(self, key: str | None = None) -> pd.DataFrame:
        """Every layer of every successfully analysed model of an options key: columns model,
        name, status ('success', 'failed' or 'skipped') and reason. Which layers each model's
        summary means were taken over (its 'success' rows), and why the others were not; a
        model stored by an older tailscope has no 'skipped' rows."""
        key = key or self.latest_key()
        m, lay, sa = self.models, self.layers, self.sa
        q = (sa.select(m.c.name.label("model"), lay.c.name, lay.c.status, lay.c.reason)
             .join(m, lay.c.model_id == m.c.model_id)
             .where((m.c.key == key) & (m.c.status == "success"))
             .order_by(m.c.model_id, lay.c.position))
        with self.engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(q)]
            skipped = list(conn.execute(sa.select(m.c.name, m.c.skipped_layers).where(
                (m.c.key == key) & (m.c.status == "success")).order_by(m.c.model_id)))
        for model, text in skipped:
            for name, reason in (json.loads(text) if isinstance(text, str) and text else []):
                rows.append((model, name, "skipped", reason))
        table = pd.DataFrame(rows, columns=["model", "name", "status", "reason"])
        table["reason"] = table["reason"].fillna("")
        return table

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


def _ordered(names) -> list[str]:
    """Column names in ``COLUMNS`` order, unknown ones after them, sorted."""
    names = set(names)
    known = [c.name for c in COLUMNS if c.name in names]
    return known + sorted(names - set(known))


def _merged(order: list[str], more) -> list[str]:
    """``order`` with the names of ``more`` it lacks: each after the nearest column that precedes
    it in ``COLUMNS``, unknown names at the end."""
    out = list(order)
    position = {c.name: i for i, c in enumerate(COLUMNS)}
    for name in _ordered(set(more) - set(out)):
        if name not in position:
            out.append(name)
            continue
        before = [i for i, c in enumerate(out) if position.get(c, math.inf) < position[name]]
        out.insert(before[-1] + 1 if before else 0, name)
    return out


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


def open_store(store: Any = "results.db") -> Store:
    """Open (and create when missing) a results store; a :class:`Store` passes through."""
    return store if isinstance(store, Store) else Store(store)
