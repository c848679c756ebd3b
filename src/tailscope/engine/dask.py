"""Dask: a client (a LocalCluster by default, or an existing scheduler's address). The runner
(``engine.run``) spreads one model's layers over its workers (``scheduler=`` of every per-layer
feature); the zoo (many models) builds on the same client.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from contextlib import contextmanager

from ..util.errors import first_line
from ..util.optional import require


class SchedulerError(ValueError):
    """The Dask scheduler cannot be reached: a one-line message (CLI exit code 2)."""


def import_distributed():
    return require("distributed", "running on Dask", error=SchedulerError)


def _has_bokeh() -> bool:
    """The dashboard needs bokeh, which the zoo extra does not install: serve it when present."""
    return importlib.util.find_spec("bokeh") is not None


@contextmanager
def dask_client(scheduler=None, *, workers: int | None = None, threads_per_worker: int = 1,
                timeout: float = 10.0):
    """A ``distributed.Client``: the one given, one connected to ``scheduler`` (an address such as
    ``tcp://host:8786``), or one on a new LocalCluster of ``workers`` processes (default: one per
    core). Clients and clusters made here are closed on exit."""
    distributed = import_distributed()
    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    if scheduler is None:
        n = int(workers or os.cpu_count() or 1)
        if n < 1:
            raise SchedulerError(f"workers must be >= 1; got {n}")
        cluster = distributed.LocalCluster(
            n_workers=n, threads_per_worker=int(threads_per_worker), processes=True,
            dashboard_address=":0" if _has_bokeh() else None, silence_logs=logging.ERROR)
        try:
            with distributed.Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    address = str(scheduler)
    try:
        client = distributed.Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise SchedulerError(f"cannot reach the Dask scheduler at {address}: "
                             f"{first_line(exc)}") from None
    try:
        yield client
    finally:
        client.close()


def dashboard_link(client) -> str | None:
    """The dashboard's address, when the scheduler serves one."""
    try:
        info = client.scheduler_info()
        if "dashboard" not in info.get("services", {}):
            return None
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - only informational
        return None
