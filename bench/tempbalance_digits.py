"""TempBalance on the digits networks of `tailscope validate`: the spread of layer alpha_hill at
the end of training, and test accuracy, with the TempBalance learning-rate schedule and without.

The networks are the zoo's digits design points (tailscope.zoo.quality.design: batch size, lr, epochs,
weight decay and label noise of the 2^(5-2) design) of the 4-layer architecture (64-256-256-256-10)
over 5 seeds (replicates 0-4), trained exactly as `tailscope validate` trains them (SGD, momentum
0.9, same seeds, same label noise, same batches). With TempBalance the optimizer's groups come from
``tailscope.train.layer_learning_rates(model, lr)`` and are re-mapped from the layers' alpha_hill
at the end of every epoch (TempBalance's ``ww_interval=1``), with its defaults (0.5x to 1.5x the
base lr, first and last layer at the base lr); the zoo's lr stays constant (no cosine decay). The
2-layer digits architecture is left out: TempBalance schedules no layer of it (first = last - 1).

Spread: the standard deviation (ddof=0) and the range (max - min) of alpha_hill over the 4
layers at the end, and over the 2 scheduled (middle) layers. Paired differences TB - baseline
with a 95% t interval over the networks.

Run: .venv/bin/python bench/tempbalance_digits.py [--seeds 5] [--jobs 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd


def train_one(args):
    from threadpoolctl import threadpool_limits

    from tailscope import analyze
    from tailscope.train import layer_learning_rates
    from tailscope.train.schedule import apply_values, layer_metrics, learning_rate_values
    from tailscope.zoo.quality import load_task, train

    net, seed, tb = args
    with threadpool_limits(limits=1, user_api="blas"):
        task = load_task(net.task, seed)

        def reschedule(model, opt):  # TempBalance: the rates re-read from alpha every epoch
            a = analyze(model, hill=True)
            values = learning_rate_values(layer_metrics(a, model), net.lr, 0.5, 1.0)
            apply_values(opt, model, values, "lr", net.lr)

        model, _, acc = train(net, task, seed,
                              params=(lambda m: layer_learning_rates(m, net.lr)) if tb else None,
                              on_epoch=reschedule if tb else None)
        a = analyze(model, hill=True).details
        h = a["alpha_hill"].to_numpy(dtype=float)
        mid = h[1:-1]
    return {"network": net.name, "replicate": net.replicate, "tempbalance": tb,
            "test_accuracy": acc, "std_all": float(np.std(h)), "range_all": float(np.ptp(h)),
            "std_mid": float(np.std(mid)), "range_mid": float(np.ptp(mid)),
            "alpha_hill": " ".join(f"{v:.3f}" for v in h)}


def interval(d: np.ndarray) -> str:
    from scipy import stats

    m = float(np.mean(d))
    half = float(stats.t.ppf(0.975, len(d) - 1) * np.std(d, ddof=1) / np.sqrt(len(d)))
    return f"{m:+.4f} [{m - half:+.4f}, {m + half:+.4f}]"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="the benchmark's seed (data split)")
    ap.add_argument("--csv", default=None, help="write the per-network table here")
    ap.add_argument("--from-csv", default=None, help="summarize a table written before")
    args = ap.parse_args()
    if args.from_csv:
        df = pd.read_csv(args.from_csv).drop_duplicates(["network", "tempbalance"])
        print(f"{df.network.nunique()} digits networks (from {args.from_csv})")
        summarize(df)
        return
    from tailscope.zoo.quality import design

    base = [n for n in design() if n.task == "digits" and n.depth == 4 and n.replicate == 0]
    nets = [dataclasses.replace(n, replicate=r) for n in base for r in range(args.seeds)]
    todo = [(n, args.seed, tb) for n in nets for tb in (False, True)]
    t0 = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as ex:
            rows = list(ex.map(train_one, todo))
    else:
        rows = [train_one(t) for t in todo]
    df = pd.DataFrame(rows)
    if args.csv:
        df.to_csv(args.csv, index=False)
    print(f"{len(nets)} digits networks (8 design points x {args.seeds} seeds), "
          f"{time.perf_counter() - t0:.0f} s")
    summarize(df)


def summarize(df: pd.DataFrame) -> None:
    cols = ["test_accuracy", "std_all", "range_all", "std_mid", "range_mid"]
    print(df.groupby("tempbalance")[cols].mean().rename(index={False: "baseline",
                                                               True: "tempbalance"}).to_string(
        float_format=lambda v: f"{v:.4f}"))
    b = df[~df.tempbalance].set_index("network")
    t = df[df.tempbalance].set_index("network").loc[b.index]
    print("paired TB - baseline, mean [95% t interval]:")
    for c in cols:
        d = (t[c] - b[c]).to_numpy()
        print(f"  {c:14s} {interval(d)}   TB lower in {int((d < 0).sum())}/{len(d)}")


if __name__ == "__main__":
    main()
