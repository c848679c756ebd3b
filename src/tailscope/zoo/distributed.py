"""The layers of one large model spread over Dask workers (``analyze(..., scheduler=...)``).

Each task opens the source itself (headers only: safetensors are memory-mapped) and reads only
its own tensor, so no tensor travels through the scheduler; rows and eigenvalues come back.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from ._dask import dask_client


@functools.lru_cache(maxsize=4)
def _open(path: str, mtime: float, trust_pickle: bool):
    from ..sources import open_source

    return open_source(path, trust_pickle=trust_pickle)


def _layer_task(path: str, index: int, name: str, options: dict, trust_pickle: bool,
                blas_threads: int):
    from threadpoolctl import threadpool_limits

    from ..analysis import Options, _analyze_layer
    from ..sources import plan_layer
    from ..spectrum import get_backend

    src = _open(path, os.path.getmtime(path), trust_pickle)
    ref = src[index]
    if ref.name != name:
        raise RuntimeError(f"{path} changed under the run: tensor {index} is {ref.name!r}, "
                           f"not {name!r}")
    o = Options(**options)
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        return _analyze_layer(ref, plan_layer(ref), o, get_backend(o.device))


def run_layers(source, todo, o, scheduler, progress=None, trust_pickle: bool = False,
               blas_threads: int = 1) -> list:
    """Analyse the planned layers ``todo`` on Dask; results in ``todo``'s order, as
    ``analysis._run`` returns them."""
    if not isinstance(source, (str, Path)):
        raise ValueError("analyze(..., scheduler=...) needs a path to the model that every "
                         "worker can read")
    path = str(Path(source).expanduser().resolve())
    options = dict(o.__dict__, jobs=1)
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
                from ..analysis import _failed_layer

                results[i] = _failed_layer(*todo[i], exc)
            if progress:
                progress(done, len(todo), todo[i][0].name)
        return results
