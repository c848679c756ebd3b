"""tailscope.compat.powerlaw against powerlaw 1.5 on the 8 CSN datasets, side by side.

Run: .venv/bin/python bench/powerlaw_compat.py [--datasets words quakes ...] [--discrete]
                                                  [--repeat 3]
For each dataset it times ``Fit(data)`` plus every ``distribution_compare('power_law', other)``
(the five alternatives, each fitted lazily) with both packages in the same process, prints the
seconds, the speed ratio, and whether alpha, xmin and D agree (to 1e-9). The goal is >= 100x.
Both packages first run the workload once on a small sample (untimed: imports and first-call
set-up, as in any script that fits more than once), then each dataset is timed ``--repeat`` times
per package, in turns, and the fastest run of each is compared.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np
from scipy.special import zeta

import tailscope.compat.powerlaw as facade
from tailscope.datasets import CLAUSET, clauset

ALTERNATIVES = ("lognormal", "exponential", "truncated_power_law", "stretched_exponential",
                "lognormal_positive")
DISCRETE = ("blackouts", "cities", "flares", "terrorism", "words")


def workload(module, x, discrete):
    fit = module.Fit(x, discrete=discrete)
    out = [fit.distribution_compare("power_law", d) for d in ALTERNATIVES]
    return fit, out


def timed(module, x, discrete):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        t0 = time.perf_counter()
        res = workload(module, x, discrete)
        return time.perf_counter() - t0, res


def warm_up(module) -> None:
    rng = np.random.default_rng(0)
    x = rng.pareto(1.5, 300) + 1.0
    for discrete in (False, True):
        timed(module, np.ceil(x) if discrete else x, discrete)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="*", default=sorted(CLAUSET))
    ap.add_argument("--discrete", action="store_true",
                    help="also the discrete fits of the integer datasets")
    ap.add_argument("--repeat", type=int, default=3,
                    help="timed runs per dataset and package (the fastest counts)")
    args = ap.parse_args(argv)
    import powerlaw
    import scipy.stats  # noqa: F401 (both import it on first use: not part of a fit's time)

    if powerlaw.__version__ != "1.5":
        raise SystemExit(f"the reference is powerlaw 1.5; installed: {powerlaw.__version__}")
    cases = [(n, False) for n in args.datasets]
    if args.discrete:
        cases += [(n, True) for n in args.datasets if n in DISCRETE]
    warm_up(facade)
    warm_up(powerlaw)
    print(f"{'dataset':>18s} {'n':>7s} {'tailscope s':>12s} {'powerlaw1.5 s':>14s} "
          f"{'ratio':>8s} {'same alpha/xmin/D':>18s}")
    tot_ours = tot_ref = 0.0
    worst = np.inf
    subtotals: dict = {}
    for name, discrete in cases:
        x = clauset(name, scaled=not discrete)
        x = x[x > 0]
        t_ours = t_ref = np.inf
        for _ in range(max(args.repeat, 1)):
            t, (ours, _) = timed(facade, x, discrete)
            t_ours = min(t_ours, t)
            t, (ref, _) = timed(powerlaw, x, discrete)
            t_ref = min(t_ref, t)
        tot_ours += t_ours
        tot_ref += t_ref
        sub = subtotals.setdefault("discrete" if discrete else "continuous", [0.0, 0.0])
        sub[0] += t_ours
        sub[1] += t_ref
        # powerlaw 1.5's discrete D subtracts 1 - zeta(alpha, xmin) from 1 and keeps only
        # -log10(zeta) fewer digits (docs/switching/powerlaw.md): D to that precision
        rtol_d = max(1e-9, 1e-13 / float(zeta(ours.alpha, ours.xmin))) if discrete else 1e-9
        same = all(np.isclose(getattr(ours, k), getattr(ref, k), rtol=r, atol=0)
                   for k, r in (("alpha", 1e-9), ("xmin", 1e-9), ("D", rtol_d)))
        label = name + (" (discrete)" if discrete else "")
        print(f"{label:>18s} {x.size:7d} {t_ours:12.3f} {t_ref:14.2f} {t_ref / t_ours:7.0f}x "
              f"{str(same):>18s}", flush=True)
        worst = min(worst, t_ref / t_ours)
    for label, (o, r) in subtotals.items():
        print(f"{'all ' + label:>18s} {'':7s} {o:12.3f} {r:14.2f} {r / o:7.0f}x")
    print(f"{'all':>18s} {'':7s} {tot_ours:12.3f} {tot_ref:14.2f} {tot_ref / tot_ours:7.0f}x")
    print(f"{'slowest ratio':>18s} {'':7s} {'':12s} {'':14s} {worst:7.0f}x")


if __name__ == "__main__":
    main()
