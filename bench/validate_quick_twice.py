"""Acceptance: `tailscope validate --quick` run twice gives byte-identical tables.

The quick zoo (32 sweep networks) and the quick architecture series (24 networks) are trained,
analysed and correlated twice, each run in its own folder; every table must be equal byte for
byte. About 3 minutes of CPU on 2 cores (the suite keeps a 16-network version of this check,
tests/test_validate_series.py::test_tiny_series_end_to_end_twice_the_same_bytes).

Run: .venv/bin/python bench/validate_quick_twice.py [--out DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TABLES = ("models.csv", "correlations.csv", "series_models.csv", "series_correlations.csv")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="folder for the two runs (default: a "
                   "temporary one)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        for run in ("a", "b"):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "tailscope", "validate", "--quick", "--out",
                            str(root / run), "--quiet"], check=True)
            print(f"run {run}: {time.perf_counter() - t:.0f} s")
        same = {name: (root / "a" / name).read_bytes() == (root / "b" / name).read_bytes()
                for name in TABLES}
    for name, ok in same.items():
        print(f"{name:26s} {'byte-identical' if ok else 'DIFFERENT'}")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
