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
        pd.testing.assert_frame_equal(local.details, remote.details, check_exact=True)
        times[workers] = seconds
        print(f"Dask, {workers} worker(s):      {seconds:7.1f} s  (cluster start {start:.1f} s; "
              "every column equal to the local run)")
    print(f"speed-up 2 workers / 1 worker: {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    main()
