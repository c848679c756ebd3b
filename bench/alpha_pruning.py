"""Alpha-guided pruning (AlphaPruning's allocation) against uniform magnitude pruning on the
trained networks of the validate zoo (tailscope.zoo.quality).

The networks: the zoo's well-trained setting, lr 0.1 for 30 epochs without weight decay or label
noise (batch size 16), per task and architecture (digits d2-w128, d4-w256; news d2-w64, d3-w256),
trained exactly as ``tailscope validate`` trains them (benchmark seed 0, the same split), with
``--seeds`` replicates each (validate's 3, and more). Each is analysed with ``hill=True`` and
pruned by magnitude at 70% and 80% sparsity (a) uniformly and (b) with
``allocate_sparsity(target, eps=0.3, metric='alpha_hill', block_wise=True)``; these MLPs have no
transformer blocks, so block-wise is per layer. Two sets of pruned layers, the same for (a) and
(b), so the parameter-weighted sparsity is the same:

  all     every layer ``analyze`` analyses (a layer with fewer than min_evals=10 eigenvalues, news'
          64 x 9 output layer, is kept dense by both)
  hidden  the classifier (the last Linear) kept dense by both, as AlphaPruning keeps lm_head
          dense; networks with a single hidden weight matrix (d2) then have one pruned layer and
          the allocation is the target: they are left out of this comparison

Test accuracy of each on the test split; the paired difference (alpha - uniform) per network; its
mean and a 95% Student-t interval over the networks (mean +- t_{0.975, n-1} sd / sqrt(n)).

An allocation that would give a layer a sparsity above 1 holds it at 1 (that layer loses every
weight; the reference does not clip and its magnitude pruning fails there): the small layer next
to a large one with the higher alpha, at eps 0.3; hence the smaller eps 0.1 as well.

Run: .venv/bin/python bench/alpha_pruning.py [--eps 0.3 0.1] [--seeds 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch
from scipy import stats
from threadpoolctl import threadpool_limits

from tailscope import allocate_sparsity, analyze, prune
from tailscope.zoo.quality import design, load_task, train

TARGETS = (0.7, 0.8)


def accuracy(model, state: dict, task) -> float:
    model.load_state_dict(state)
    with torch.no_grad():
        pred = model(torch.from_numpy(task.x_test)).argmax(1).numpy()
    return float((pred == task.y_test).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps", type=float, nargs="+", default=[0.3, 0.1],
                    help="the allocation's eps values (default: 0.3, the reference's README "
                         "example, and 0.1)")
    ap.add_argument("--seeds", type=int, default=5, help="replicates per architecture")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    base = [n for n in design() if n.lr == 0.1 and n.epochs == 30 and n.weight_decay == 0
            and n.label_noise == 0 and n.replicate == 0]
    nets = [replace(n, replicate=r) for n in base for r in range(args.seeds)]
    rows = []
    t0 = time.perf_counter()
    for net in nets:
        task = load_task(net.task, args.seed)
        model, _, dense = train(net, task, args.seed)
        original = {k: v.clone() for k, v in model.state_dict().items()}
        with threadpool_limits(limits=1, user_api="blas"):
            analysis = analyze(model, hill=True)
        head = f"{len(model) - 1}.weight"
        d = analysis.details
        for variant, details in (("all", d), ("hidden", d[d["name"] != head])):
            if variant == "hidden" and len(details) < 2:
                continue
            for target in TARGETS:
                uniform = {name: target for name in details["name"]}
                uni = accuracy(model, prune(original, uniform).to_state_dict(), task)
                for eps in args.eps:
                    alloc = allocate_sparsity(details, target=target, eps=eps)
                    alp = accuracy(model, prune(original, alloc).to_state_dict(), task)
                    rows.append((variant, eps, net.name, target, dense, uni, alp,
                                 alloc.attrs["capped"], " ".join(f"{s:.2f}" for s in alloc)))
    print(f"{len(nets)} networks, {time.perf_counter() - t0:.0f} s\n")
    print(f"{'layers':<7}{'eps':>4} {'network':<52} {'target':>6} {'dense':>6} {'uniform':>7} "
          f"{'alpha':>6} {'diff':>7}  alpha allocation (layers held at 1)")
    for variant, eps, name, target, dense, uni, alp, capped, alloc in rows:
        print(f"{variant:<7}{eps:>4.2g} {name:<52} {target:>6.1f} {dense:>6.3f} {uni:>7.3f} "
              f"{alp:>6.3f} {alp - uni:>+7.3f}  {alloc} ({capped})")
    print("\npaired difference alpha - uniform in test accuracy (mean, 95% Student-t interval):")
    for variant in ("all", "hidden"):
        for eps in args.eps:
            for target in TARGETS:
                sel = [r for r in rows if r[:2] == (variant, eps) and r[3] == target]
                d = np.array([r[6] - r[5] for r in sel])
                half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
                held = sum(r[7] > 0 for r in sel)
                print(f"  {variant:<7} eps {eps:<4g} sparsity {target:.1f}: {d.mean():+.4f} "
                      f"[{d.mean() - half:+.4f}, {d.mean() + half:+.4f}]  (n = {d.size}; alpha "
                      f"better in {int((d > 0).sum())}, worse in {int((d < 0).sum())}, equal in "
                      f"{int((d == 0).sum())}; a layer held at 1 in {held})")


if __name__ == "__main__":
    main()
