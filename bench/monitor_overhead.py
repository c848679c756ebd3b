"""The training monitor's cost at its default frequency on the digits network of `tailscope
validate` (64-256-256-256-10, the zoo's larger digits architecture), on one torch thread.

Measures the time of one epoch of plain SGD training (no monitor), the time of one monitor check
(analyse in memory with alpha, alpha_hill and traps: hill=True, randomize=True), and the monitor's
share of an epoch at ``every`` = DEFAULT_EVERY, both as the amortized ratio
check / (every * step time) and as the wall-clock difference of whole runs with and without it.
The claim: at most 5% of an epoch's time.

Run: .venv/bin/python bench/monitor_overhead.py [--epochs 30] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tailscope.train import DEFAULT_EVERY, Monitor
from tailscope.zoo.quality import load_task


def model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                               torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 10))


def run(epochs, bs, every=None):
    task = load_task("digits")
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.from_numpy(task.x_train), torch.from_numpy(task.y_train)
    g = torch.Generator().manual_seed(0)
    mon = Monitor(m, every=every, warn=False) if every else None
    t0 = time.perf_counter()
    steps = 0
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), bs):
            b = perm[i:i + bs]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x[b]), y[b]).backward()
            opt.step()
            steps += 1
            if mon is not None:
                mon.step()
    return time.perf_counter() - t0, steps, mon


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=120)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        run(1, args.batch_size)  # warm up
        base = [run(args.epochs, args.batch_size) for _ in range(args.repeats)]
        t_base = statistics.median(t for t, _, _ in base)
        steps = base[0][1]
        per_epoch_steps = steps / args.epochs
        t_step = t_base / steps
        m = model()
        mon = Monitor(m, every=1, warn=False)
        for _ in range(3):
            mon.step()
        check = mon.seconds / mon.checks
        monitored = [run(args.epochs, args.batch_size, DEFAULT_EVERY)
                     for _ in range(args.repeats)]
        t_mon = statistics.median(t for t, _, _ in monitored)
        checks = monitored[0][2].checks
    epoch = t_base / args.epochs
    print(f"digits network 64-256-256-256-10, batch {args.batch_size}: {per_epoch_steps:.0f} "
          f"steps per epoch, {epoch * 1e3:.1f} ms per epoch, {t_step * 1e3:.3f} ms per step")
    print(f"one monitor check (alpha, alpha_hill, traps): {check * 1e3:.1f} ms = "
          f"{check / epoch:.2f} epochs")
    print(f"default every = {DEFAULT_EVERY} steps: amortized overhead "
          f"{check / (DEFAULT_EVERY * t_step):.1%} of training time")
    print(f"measured over {args.epochs} epochs ({steps} steps, {checks} checks): "
          f"{t_base:.2f} s without, {t_mon:.2f} s with the monitor: "
          f"{(t_mon - t_base) / t_base:+.1%}")


if __name__ == "__main__":
    main()
