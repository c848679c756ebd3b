"""Runners: the planned layers of one model, analysed in this thread, in threads, or on Dask
(``dask.py``); results always come back in model order."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

from threadpoolctl import threadpool_limits

from .layer import LayerResult, analyze_batch, analyze_layer, batches

Progress = Callable[[int, int, str], None]  # (done, total, name of the last layer)


def run_serial(todo: list, o, backend, progress: Progress | None = None) -> list[LayerResult]:
    """One layer after another (same-shape layers batched on a torch device)."""
    total = len(todo)
    out: list[LayerResult] = []
    for batch in batches(todo, backend) if not o.vectors else [[t] for t in todo]:
        out.extend(analyze_batch(batch, o, backend))
        if progress:
            progress(len(out), total, batch[-1][0].name)
    return out


def run_threads(todo: list, o, backend, progress: Progress | None = None) -> list[LayerResult]:
    """Layers in parallel threads (numpy and LAPACK release the GIL), BLAS threads shared out."""
    jobs = min(int(o.jobs), len(todo))
    results: list = [None] * len(todo)
    with blas_limit(max(1, (os.cpu_count() or 1) // jobs)), \
            ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(analyze_layer, ref, plan, o, backend): i
                   for i, (ref, plan) in enumerate(todo)}
        for done, fut in enumerate(as_completed(futures), 1):
            i = futures[fut]
            results[i] = fut.result()
            if progress:
                progress(done, len(todo), todo[i][0].name)
    return results


def run_layers(todo: list, o, backend, progress: Progress | None = None) -> list[LayerResult]:
    """``o.jobs`` threads when > 1 (and more than one layer), else in this thread."""
    if o.jobs <= 1 or len(todo) <= 1:
        return run_serial(todo, o, backend, progress)
    return run_threads(todo, o, backend, progress)


def blas_limit(n: int):
    """Limit BLAS threads to ``n`` (while layers run in parallel, or in a Dask task)."""
    return threadpool_limits(limits=n, user_api="blas")
