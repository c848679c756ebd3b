"""Speed of the power-law fit against powerlaw 1.5 (and WeightWatcher's WWFit when installed).

Run: .venv/bin/python bench/fit_speed.py [--oracle-max-n 64000] [--boot 1000]
Prints, per sample size, seconds for each tool, the speed ratio, and whether the answers
(alpha, xmin, D, n_tail) are the same. powerlaw 1.5 takes minutes at n = 64k, so by default it
is timed up to 16k; pass --oracle-max-n 64000 for the full table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np

from tailscope import fit_power_law


def pareto(n, alpha=2.5, seed=0):
    rng = np.random.default_rng(seed)
    return (1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0))


def timed(fn, repeat=1):
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def powerlaw_fit(x):
    import powerlaw

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return powerlaw.Fit(x)


def wwfit(x):
    from weightwatcher.WW_powerlaw import WWFit  # only when weightwatcher is installed

    return WWFit(x)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 4000, 16000, 64000])
    ap.add_argument("--oracle-max-n", type=int, default=16000)
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap replicates at n = 4000")
    args = ap.parse_args(argv)
    try:
        import weightwatcher  # noqa: F401

        have_ww = True
    except Exception:
        have_ww = False
    print(f"{'n':>6s} {'tailscope s':>12s} {'powerlaw1.5 s':>14s} {'ratio':>8s} {'same':>5s}"
          + (f" {'WWFit s':>9s} {'ratio':>7s}" if have_ww else "") + "   tailscope fit")
    for n in args.sizes:
        x = pareto(n)
        t_ours, ours = timed(lambda x=x: fit_power_law(x), repeat=3)
        cols = f"{n:6d} {t_ours:12.4f}"
        if n <= args.oracle_max_n:
            t_ref, ref = timed(lambda x=x: powerlaw_fit(x))
            same = (ours.xmin == ref.xmin and ours.n_tail == len(ref.data)
                    and abs(ours.alpha / ref.alpha - 1) < 1e-9 and abs(ours.D / ref.D - 1) < 1e-9)
            cols += f" {t_ref:14.3f} {t_ref / t_ours:7.0f}x {'yes' if same else 'NO':>5s}"
        else:
            cols += f" {'(skipped)':>14s} {'':>8s} {'':>5s}"
        if have_ww:
            t_ww, _ = timed(lambda x=x: wwfit(x))
            cols += f" {t_ww:9.3f} {t_ww / t_ours:6.0f}x"
        print(cols + f"   alpha={ours.alpha:.4f} xmin={ours.xmin:.4f} D={ours.D:.5f} "
              f"n_tail={ours.n_tail}")
    if args.boot:
        fit = fit_power_law(pareto(4000))
        t_boot, gof = timed(lambda: fit.goodness_of_fit(args.boot, seed=0))
        print(f"\nbootstrap goodness of fit, n = 4000, {args.boot} replicates (all cores): "
              f"{t_boot:.1f} s, p = {gof.p_value:.3f}")


if __name__ == "__main__":
    main()
