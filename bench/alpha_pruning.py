"""Alpha-guided pruning (AlphaPruning's allocation) against uniform magnitude pruning on the
trained networks of the validate zoo (tailscope.quality).

The networks: every network of ``tailscope.quality.design()`` trained with lr 0.1 for 30 epochs
without weight decay or label noise (batch size 16): per task and architecture (digits d2-w128,
d4-w256; news d2-w64, d3-w256) its 3 seeds, 12 networks, trained exactly as ``tailscope validate``
trains them (benchmark seed 0, the same split). Each is analysed with ``hill=True`` and pruned by
magnitude at 70% and 80% sparsity (a) uniformly, every analysed layer at the target, and (b) with
``allocate_sparsity(target, eps=0.3, metric='alpha_hill', block_wise=True)`` (these MLPs have no
transformer blocks, so block-wise is per layer). Both prune the same layers (those ``analyze``
analyses; a layer with fewer than ``min_evals`` eigenvalues, e.g. news' 64 x 9 output layer, is
kept dense by both), so the parameter-weighted sparsity is the same. Test accuracy of each on the
test split; the paired difference (alpha - uniform) per network; its mean and a 95% Student-t
interval over the networks (mean +- t_{0.975, n-1} sd / sqrt(n)).

Run: .venv/bin/python bench/alpha_pruning.py [--eps 0.3] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import stats
from threadpoolctl import threadpool_limits

from tailscope import allocate_sparsity, analyze, prune
from tailscope.quality import design, load_task, train

TARGETS = (0.7, 0.8)


def accuracy(model, state: dict, task) -> float:
    model.load_state_dict(state)
    with torch.no_grad():
        pred = model(torch.from_numpy(task.x_test)).argmax(1).numpy()
    return float((pred == task.y_test).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    nets = [n for n in design() if n.lr == 0.1 and n.epochs == 30 and n.weight_decay == 0
            and n.label_noise == 0]
    rows = []
    t0 = time.perf_counter()
    for net in nets:
        task = load_task(net.task, args.seed)
        model, _, dense = train(net, task, args.seed)
        original = {k: v.clone() for k, v in model.state_dict().items()}
        with threadpool_limits(limits=1, user_api="blas"):
            analysis = analyze(model, hill=True)
        for target in TARGETS:
            alloc = allocate_sparsity(analysis, target=target, eps=args.eps)
            uni = accuracy(model, prune(original, target).to_state_dict(), task)
            alp = accuracy(model, prune(original, alloc).to_state_dict(), task)
            rows.append((net.name, target, dense, uni, alp, alloc.attrs["capped"],
                         " ".join(f"{s:.2f}" for s in alloc)))
    print(f"{len(nets)} networks, {time.perf_counter() - t0:.0f} s; eps {args.eps}\n")
    print(f"{'network':<62} {'target':>6} {'dense':>6} {'uniform':>7} {'alpha':>6} "
          f"{'diff':>7}  alpha allocation (capped)")
    for name, target, dense, uni, alp, capped, alloc in rows:
        print(f"{name:<62} {target:>6.1f} {dense:>6.3f} {uni:>7.3f} {alp:>6.3f} {alp - uni:>+7.3f}"
              f"  {alloc} ({capped})")
    print("\npaired difference alpha - uniform in test accuracy (mean, 95% Student-t interval):")
    for target in TARGETS:
        d = np.array([r[4] - r[3] for r in rows if r[1] == target])
        half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
        wins = int((d > 0).sum())
        print(f"  sparsity {target:.1f}: {d.mean():+.4f} [{d.mean() - half:+.4f}, "
              f"{d.mean() + half:+.4f}]  (n = {d.size}; alpha better in {wins}, worse in "
              f"{int((d < 0).sum())})")


if __name__ == "__main__":
    main()
