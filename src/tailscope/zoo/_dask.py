"""Getting a Dask client: a LocalCluster by default, or an existing scheduler's address."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager


class SchedulerError(ValueError):
    """The Dask scheduler cannot be reached: a one-line message (CLI exit code 2)."""


def import_distributed():
    try:
        import distributed
    except ImportError:
        raise SchedulerError("running on Dask needs dask[distributed]: pip install "
                             "'tailscope[zoo]'") from None
    return distributed


def _has_bokeh() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


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
        text = str(exc).strip().splitlines()
        raise SchedulerError(f"cannot reach the Dask scheduler at {address}: "
                             f"{text[0] if text else type(exc).__name__}") from None
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
