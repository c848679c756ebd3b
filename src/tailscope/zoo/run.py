"""``run_zoo``: analyse every model of a manifest as a Dask task and keep the results in a store.

The driver submits one task per model that is not finished yet under the run's options key,
writes each result to the store as it arrives (one transaction per model) and reports progress on
stderr. Workers return results; only the driver writes, so a killed worker costs its task a retry
on another worker and a killed driver loses at most the models in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .._version import __version__
from ..engine.dask import dashboard_link, dask_client
from ..engine.options import make_options, result_key
from ..util.console import Progress
from ..util.errors import one_line
from .manifest import quality_columns, read_manifest
from .store import Store, open_store


def options_key(options: dict) -> str:
    """The resume key: a hash of the tailscope version and the options that change what is
    computed (not ``jobs`` or ``device``, which change how)."""
    text = json.dumps({"version": __version__, "options": result_key(make_options(**options))},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def analyze_model(path: str, options: dict, blas_threads: int = 1,
                  trust_pickle: bool = False) -> dict:
    """One zoo task: ``analyze`` one model, with BLAS limited to ``blas_threads``.

    Returns a dict (status, reason, summary, details, read, seconds, worker); any failure to read
    the model is a failed result with its reason, never an exception.
    """
    from threadpoolctl import threadpool_limits

    from ..analysis import analyze

    t0 = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    if not path:
        return {"status": "failed", "reason": "no source given in the manifest",
                "seconds": 0.0, "worker": worker}
    try:
        with threadpool_limits(limits=int(blas_threads), user_api="blas"):
            a = analyze(path, trust_pickle=trust_pickle, **options)
    except Exception as exc:  # noqa: BLE001 - a model that cannot be read is a failed row
        return {"status": "failed", "reason": one_line(exc),
                "seconds": time.perf_counter() - t0, "worker": worker}
    return {"status": "success", "reason": "", "summary": a.summary(), "details": a.details,
            "skipped": [(n, r) for n, r in zip(a.skipped["name"], a.skipped["reason"])],
            "read": a.source, "seconds": time.perf_counter() - t0, "worker": worker}


@dataclass(frozen=True, repr=False)
class ZooRun:
    """The result of :func:`run_zoo`.

    ``models``: one row per manifest model (from the store), ``key``: the options key its rows
    are stored under, ``computed`` / ``resumed``: how many models this run analysed / found
    finished already.
    """

    models: pd.DataFrame
    store: Store
    key: str
    run_id: int
    computed: int
    resumed: int
    seconds: float
    quality_columns: list = field(default_factory=list)

    def details(self, name: str) -> pd.DataFrame:
        """The stored per-layer table of one model."""
        return self.store.details(name, self.key)

    def correlate(self, quality: str, **kwargs) -> pd.DataFrame:
        """:func:`tailscope.zoo.correlate` on this run's models (and their layers: it warns
        when members of a group were fitted on different layer sets, and takes
        ``common_layers=True``)."""
        from .correlate import correlate

        return correlate(self, quality, **kwargs)

    def __repr__(self) -> str:
        ok = int((self.models["status"] == "success").sum())
        return (f"ZooRun({len(self.models)} models: {ok} analysed, {len(self.models) - ok} "
                f"failed; {self.computed} computed, {self.resumed} resumed; store "
                f"{self.store.shown}, key {self.key})")

    def _repr_html_(self) -> str:
        """In a notebook: the run in one line, the models table, and each quality column's
        correlation table."""
        import html

        from .correlate import METRICS, correlate, html_table

        cols = [c for c in dict.fromkeys(("name", "group", "status", "reason", *METRICS,
                                          "layers", "failed", *self.quality_columns))
                if c in self.models.columns]
        parts = [f"<p>{html.escape(repr(self))}</p>", html_table(self.models[cols])]
        for q in self.quality_columns:
            ok = self.models[self.models["status"] == "success"] \
                if "status" in self.models.columns else self.models
            if q in ok.columns and ok[q].notna().sum() >= 3:
                parts.append(f"<p><b>Summary metrics against {html.escape(q)}</b></p>")
                parts.append(html_table(correlate(self.models, q)))
        return "".join(parts)


def run_zoo(manifest, *, store: Any = "results.db", scheduler=None, workers: int | None = None,
            threads_per_worker: int = 1, blas_threads: int = 1, force: bool = False,
            trust_pickle: bool = False, progress: bool | Progress = True,
            connect_timeout: float = 10.0, **options) -> ZooRun:
    """Analyse every model of a manifest on Dask and store the results.

    Parameters
    ----------
    manifest : str or Path
        A CSV or YAML manifest (see :func:`read_manifest`).
    store : str, Path or Store
        A SQLite file path (default ``results.db``) or a SQLAlchemy URL
        (``postgresql://user:password@host/db``).
    scheduler : str or distributed.Client, optional
        An existing Dask scheduler's address (``tcp://host:8786``) or client; by default a
        LocalCluster of ``workers`` processes (default one per core).
    threads_per_worker, blas_threads : int
        Tasks per worker process, and BLAS threads per task (1 and 1: no oversubscription).
    force : bool
        Recompute models already finished under the same options (default: skip them).
    trust_pickle : bool
        Allow PyTorch pickles that need code execution.
    progress : bool or tailscope.util.console.Progress
        Models done / failed / ETA on stderr (True: a :class:`~tailscope.util.console.Progress` of
        models; or your own, which may be any callable ``(done, total, name, failed=)`` with a
        ``note(text)`` method).
    connect_timeout : float
        Seconds to wait for ``scheduler``.
    **options
        Analysis options, as :func:`tailscope.analyze` takes them (``layers``, ``min_evals``...).

    Returns
    -------
    ZooRun

    Raises
    ------
    ManifestError, StoreError, SchedulerError
        Before any work starts: the manifest, the store or the scheduler cannot be used.
    """
    t0 = time.perf_counter()
    opts = make_options(**options).as_dict()
    table = read_manifest(manifest)
    qcols = quality_columns(table)
    db = open_store(store)
    key = options_key(opts)
    own = isinstance(progress, bool)
    report = Progress("models", quiet=not progress) if own else progress
    finished = set() if force else db.finished_names(key)
    todo = [r for r in table.to_dict("records") if r["name"] not in finished]
    resumed = len(table) - len(todo)
    if resumed:
        report.note(f"{resumed} of {len(table)} models already in {db.shown}: skipped "
                    "(--force recomputes them)")
    run_id = db.start_run(key, __version__, opts, str(Path(manifest).resolve()),
                          str(scheduler or "LocalCluster"), len(table))
    failed = 0
    try:
        if todo:
            task_opts = opts
            with dask_client(scheduler, workers=workers, threads_per_worker=threads_per_worker,
                             timeout=connect_timeout) as client:
                from distributed import as_completed

                link = dashboard_link(client)
                if link:
                    report.note(f"Dask dashboard: {link}")
                futures = {client.submit(analyze_model, row["path"], task_opts, blas_threads,
                                         trust_pickle, pure=False,
                                         key=f"tailscope-zoo-{i}-{time.time_ns()}"): row
                           for i, row in enumerate(todo)}
                for done, fut in enumerate(as_completed(futures), 1):
                    row = futures[fut]
                    try:
                        result = fut.result()
                    except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker after retries
                        result = {"status": "failed", "reason": f"task lost: {one_line(exc)}"}
                    entry = {"name": row["name"], "source": row["source"], "group": row["group"],
                             "quality": {c: row[c] for c in qcols}}
                    db.write_model(key, run_id, entry, result)
                    failed += result["status"] != "success"
                    report(done, len(todo), row["name"], failed=failed)
                    fut.release()
    finally:
        if own:  # the terminal bar stops even when the run fails
            report.close()
    db.finish_run(run_id, len(todo) - failed, failed, resumed)
    models = db.models_table(key)
    order = {n: i for i, n in enumerate(table["name"])}
    models = models[models["name"].isin(order)]
    models = models.sort_values("name", key=lambda s: s.map(order)).reset_index(drop=True)
    # group and quality as the manifest says now (they may have been edited since)
    by_name = table.set_index("name")
    models["group"] = models["name"].map(by_name["group"])
    for c in qcols:
        models[c] = models["name"].map(by_name[c]).astype(float)
    return ZooRun(models=models, store=db, key=key, run_id=run_id, computed=len(todo),
                  resumed=resumed, seconds=time.perf_counter() - t0, quality_columns=qcols)
