"""Dask: a client (a LocalCluster by default, or an existing scheduler's address), and the layers
of one large model spread over its workers (``analyze(..., scheduler=...)``).

Each layer task opens the source itself (headers only: safetensors are memory-mapped) and reads
only its own tensor, so no tensor travels through the scheduler; results come back. The zoo
(many models) builds on the same client.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from contextlib import contextmanager
from pathlib import Path

from ..util.errors import first_line
from ..util.optional import require
from .layer import LayerResult, analyze_layer
from .run import Progress, blas_limit


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


@functools.lru_cache(maxsize=4)
def _open(path: str, mtime: float, trust_pickle: bool):
    from ..sources import open_source

    return open_source(path, trust_pickle=trust_pickle)


def _layer_task(path: str, index: int, name: str, options, trust_pickle: bool,
                blas_threads: int) -> LayerResult:
    from ..sources import plan_layer
    from ..spectrum import get_backend

    src = _open(path, os.path.getmtime(path), trust_pickle)
    ref = src[index]
    if ref.name != name:
        raise RuntimeError(f"{path} changed under the run: tensor {index} is {ref.name!r}, "
                           f"not {name!r}")
    with blas_limit(blas_threads):
        return analyze_layer(ref, plan_layer(ref), options, get_backend(options.device))


def run_layers_dask(source, todo: list, o, scheduler, progress: Progress | None = None,
                    trust_pickle: bool = False, blas_threads: int = 1) -> list[LayerResult]:
    """Analyse the planned layers ``todo`` on Dask; results in ``todo``'s order."""
    from dataclasses import replace

    if not isinstance(source, (str, Path)):
        raise ValueError("analyze(..., scheduler=...) needs a path to the model that every "
                         "worker can read")
    path = str(Path(source).expanduser().resolve())
    options = replace(o, jobs=1)
    with dask_client(scheduler) as client:
        from distributed import as_completed

        futures = {client.submit(_layer_task, path, ref.index, ref.name, options, trust_pickle,
                                 blas_threads, pure=False): i for i, (ref, _) in enumerate(todo)}
        results: list = [None] * len(todo)
        for done, fut in enumerate(as_completed(futures), 1):
            i = futures[fut]
            try:
                results[i] = fut.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker: this layer fails
                results[i] = LayerResult.failed(*todo[i], exc)
            if progress:
                progress(done, len(todo), todo[i][0].name)
        return results
