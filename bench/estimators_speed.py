"""What hill=True and farms=True cost next to the plain ESD, per layer.

For each shape: the plain ESD (``spectrum.eigenvalues``, the float64 Gram and its eigenvalues),
FARMS's windows (``spectrum.window_eigenvalues``: 100 windows of 100 x 200, one batched float64
eigensolve), and the Hill estimate on the ESD. Best of ``--repeat`` runs each.

Run: .venv/bin/python bench/estimators_speed.py [--shapes 1024x1024 4096x4096] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    from tailscope.fit import hill_alpha
    from tailscope.spectrum import eigenvalues, window_eigenvalues

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=["1024x1024", "4096x1024", "4096x4096"])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'shape':>12} {'ESD s':>9} {'FARMS s':>9} {'Hill s':>9} {'FARMS/ESD':>10}")
    for text in args.shapes:
        rows, cols = (int(v) for v in text.split("x"))
        w = rng.standard_normal((rows, cols)).astype(np.float32)
        esd = best(lambda: eigenvalues(w), max(1, args.repeat - 2))  # noqa: B023
        ev = eigenvalues(w)
        farms = best(lambda: window_eigenvalues(w), args.repeat)  # noqa: B023
        hill = best(lambda: hill_alpha(ev), args.repeat)  # noqa: B023
        print(f"{text:>12} {esd:9.3f} {farms:9.3f} {hill:9.5f} {farms / esd:10.3f}")


if __name__ == "__main__":
    main()
