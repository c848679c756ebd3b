"""The runner on Dask: one LLaMA-shaped checkpoint's layers on a LocalCluster of 1 and of 2 worker
processes (one BLAS thread each), against the local run in this process, with every column
checked equal to the local run's.

The checkpoint is bench/analyze_speed.py's (hidden 2048, intermediate 5632, vocab 32000, fp16,
heavy-tailed entries) with ``--blocks`` blocks (2 by default). Times are taken after the cluster
has started and its workers have imported tailscope (the start is printed apart).

Run: .venv/bin/python bench/dask_scaling.py [--blocks 2] [--dir /tmp/tailscope-bench]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _warm() -> None:
    import tailscope.analysis  # noqa: F401 - the import a worker pays once


def timed_on_cluster(folder: Path, workers: int):
    import distributed

    import tailscope

    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=40)
    with distributed.Client(cluster) as client:
        client.run(_warm)
        start = time.perf_counter() - t0
        t1 = time.perf_counter()
        analysis = tailscope.analyze(folder, scheduler=client)
        seconds = time.perf_counter() - t1
    cluster.close()
    return analysis, seconds, start


def agreement(a, b) -> str:
    """How the two tables agree: bit for bit, or the largest relative difference of a number."""
    import numpy as np

    num = a.select_dtypes("number").columns
    x, y = a[num].to_numpy(float), b[num].to_numpy(float)
    same = (x == y) | (np.isnan(x) & np.isnan(y))
    if same.all() and a.drop(columns=num).equals(b.drop(columns=num)):
        return "every column equal to the local run, bit for bit"
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(same, 0.0, np.abs(x - y) / np.maximum(np.abs(x), np.abs(y)))
    worst = np.nanmax(rel, axis=0)
    alpha = worst[list(num).index("alpha")] if "alpha" in num else float("nan")
    return (f"{int((~same).sum())} of {same.size} numbers differ from the local run: at most "
            f"{np.nanmax(worst):.1e} relative ({num[int(np.nanargmax(worst))]}), alpha "
            f"{alpha:.1e}; BLAS rounds by the thread count it starts with (a worker: 1)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "tailscope-bench"))
    args = ap.parse_args(argv)

    import pandas as pd
    from analyze_speed import write_checkpoint

    import tailscope

    folder = Path(args.dir) / f"llama-{args.blocks}"
    size = write_checkpoint(folder, args.blocks)
    print(f"checkpoint: {folder} ({size / 1e6:,.0f} MB, {args.blocks} blocks); "
          f"{os.cpu_count()} cores")
    t0 = time.perf_counter()
    local = tailscope.analyze(folder)
    t_local = time.perf_counter() - t0
    print(f"local, this process:   {t_local:7.1f} s  ({len(local.details)} layers)")
    times = {}
    for workers in (1, 2):
        remote, seconds, start = timed_on_cluster(folder, workers)
        pd.testing.assert_frame_equal(local.details, remote.details, rtol=1e-9)
        times[workers] = seconds
        print(f"Dask, {workers} worker(s):      {seconds:7.1f} s  (cluster start {start:.1f} s; "
              f"{agreement(local.details, remote.details)})")
    print(f"speed-up 2 workers / 1 worker: {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    main()
