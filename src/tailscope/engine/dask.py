"""Dask: a client (a LocalCluster by default, or an existing scheduler's address). The runner
(``engine.run``) spreads one model's layers over its workers (``scheduler=`` of every per-layer
feature); the zoo (many models) builds on the same client.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
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
        with _workers_without_stderr():
            cluster = distributed.LocalCluster(
                n_workers=n, threads_per_worker=int(threads_per_worker), processes=True,
                dashboard_address=":0" if _has_bokeh() else None, silence_logs=logging.ERROR)
        try:
            with distributed.Client(cluster) as client:
                yield client
        except KeyboardInterrupt:
            _quiet_close(cluster)
            raise
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


@contextmanager
def _workers_without_stderr():
    """File descriptor 2 points at the null device while the worker processes start, so that
    they inherit it: a Ctrl-C at the terminal reaches the whole process group, and the workers'
    tracebacks and shutdown logs never reach the user's terminal (a task's failure reaches the
    client as its result or its exception, and the caller reports it). This process gets its
    own stderr back as soon as the cluster is up."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2 (an embedded interpreter)
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _quiet_close(cluster) -> None:
    """Close a LocalCluster after a Ctrl-C without the tracebacks that Dask logs while its
    connections drop (the user asked to stop; 'interrupted' is the one line)."""
    quiet = [logging.getLogger(n) for n in ("distributed", "tornado", "asyncio")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        with contextlib.suppress(BaseException):
            cluster.close(timeout=5)
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)


def dashboard_link(client) -> str | None:
    """The dashboard's address, when the scheduler serves one."""
    try:
        info = client.scheduler_info()
        if "dashboard" not in info.get("services", {}):
            return None
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - only informational
        return None
