"""The ``tailscope`` command line.

Exit codes: 0 success, 2 bad input (a one-line message on stderr), 1 internal error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from . import __version__


class InputError(Exception):
    """Bad input from the user: reported in one line, exit code 2."""


def read_values(path: str) -> np.ndarray:
    """Numbers from a .npy file, or a text file with one number per line ('-': stdin).

    Blank lines and lines starting with '#' are skipped.
    """
    if path != "-" and Path(path).suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
        return arr
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    values = []
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            values.append(float(s.split(",")[0]) if "," in s else float(s))
        except ValueError:
            raise InputError(f"{path}, line {lineno}: {s[:40]!r} is not a number") from None
    if not values:
        raise InputError(f"{path} holds no numbers")
    return np.asarray(values)


def _number_or_max(text: str):
    if text == "max":
        return "max"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'max', got {text!r}") from None


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def _json_safe(v):
    """NaN/inf are not JSON: write them as null."""
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def cmd_fit(args) -> int:
    from .fit import DISTRIBUTIONS, fit_power_law

    data = read_values(args.file)
    xmin = tuple(args.xmin_range) if args.xmin_range else args.xmin
    try:
        fit = fit_power_law(data, xmin=xmin, xmax=args.xmax, fix_fingers=args.fix_fingers)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    out = {"file": args.file, **fit.to_dict()}
    comparisons, gof = [], None
    if fit.ok and args.compare is not None:
        names = args.compare or [d for d in DISTRIBUTIONS if d != "power_law"]
        for name in names:
            if name not in DISTRIBUTIONS:
                raise InputError(f"unknown distribution {name!r}; choose from "
                                 f"{', '.join(DISTRIBUTIONS)}")
            c = fit.compare(name)
            comparisons.append({"distribution": name, "R": c.R, "p": c.p, "nested": c.nested,
                                "parameters": fit.distribution(name).parameters})
        out["compare"] = comparisons
    if args.bootstrap is not None and args.bootstrap < 1:
        raise InputError(f"--bootstrap needs N >= 1; got {args.bootstrap}")
    if fit.ok and args.bootstrap:
        gof = fit.goodness_of_fit(args.bootstrap, seed=args.seed, n_jobs=args.jobs)
        out["bootstrap"] = {"n_boot": gof.n_boot, "p_value": gof.p_value,
                            "alpha_ci": list(gof.alpha_ci), "ci": gof.ci,
                            "n_failed": gof.n_failed, "seed": gof.seed}
    if args.json:
        print(json.dumps(_json_safe(out), indent=2))
        return 0 if fit.ok else 2
    if not fit.ok:
        raise InputError(f"{args.file}: no power-law fit: {fit.reason}")
    print(f"{args.file}: {fit.n} values, power-law tail of {fit.n_tail}")
    print(f"  alpha  {fit.alpha:.6g} +- {fit.sigma:.3g}")
    print(f"  xmin   {fit.xmin:.6g}" + ("" if fit.xmax is None else f"   xmax {fit.xmax:.6g}"))
    print(f"  D      {fit.D:.6g}")
    if fit.fix_fingers:
        print(f"  fingers {fit.fix_fingers}: {fit.num_fingers} removed "
              f"(raw alpha {_fmt(fit.raw_alpha)})")
    if comparisons:
        print("  power law vs        R          p        (R > 0: power law preferred)")
        for c in comparisons:
            test = "nested" if c["nested"] else "vuong"
            print(f"    {c['distribution']:22s} {c['R']:>9.4g}  {c['p']:>9.3g}  {test}")
    if gof is not None:
        lo, hi = gof.alpha_ci
        print(f"  bootstrap p = {gof.p_value:.3g} ({gof.n_boot} replicates; power law "
              f"{'plausible' if gof.plausible else 'ruled out'} at p > 0.1), "
              f"alpha {int(gof.ci * 100)}% interval [{lo:.4g}, {hi:.4g}]")
    return 0


def cmd_demo(args) -> int:
    from .demo import run

    try:
        run()
    except RuntimeError as exc:  # the data could not be fetched
        raise InputError(str(exc)) from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tailscope",
        description="Heavy-tailed spectral analysis: power-law fits of eigenvalue spectra.")
    parser.add_argument("--version", action="version", version=f"tailscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="fit a power law to numbers in a file",
                       description="Fit a continuous power law (CSN method, exact xmin scan) to "
                                   "positive numbers: a text file with one number per line "
                                   "('-' for stdin) or a .npy array.")
    p.add_argument("file")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--xmin", type=float, help="fix xmin instead of scanning for it")
    group.add_argument("--xmin-range", type=float, nargs=2, metavar=("LO", "HI"),
                       help="scan xmin only over values in [LO, HI]")
    p.add_argument("--xmax", type=_number_or_max,
                   help="truncate at XMAX (a number or 'max'); the model is normalised on "
                        "[xmin, xmax]")
    p.add_argument("--fix-fingers", choices=["clip_xmax", "xmin_peak"],
                   help="WeightWatcher's finger fixes")
    p.add_argument("--compare", nargs="*", metavar="DIST",
                   help="likelihood-ratio tests against other tail models (default: all of "
                        "truncated_power_law, exponential, lognormal, lognormal_positive, "
                        "stretched_exponential)")
    p.add_argument("--bootstrap", type=int, metavar="N",
                   help="CSN goodness-of-fit p-value from N bootstrap replicates")
    p.add_argument("--seed", type=int, help="seed for --bootstrap (reproducible results)")
    p.add_argument("--jobs", type=int, help="processes for --bootstrap (default: all cores)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_fit)

    d = sub.add_parser("demo", help="fit the Clauset-Shalizi-Newman datasets (fetched once)")
    d.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"tailscope: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tailscope: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # an internal error: say so in one line, exit 1
        print(f"tailscope: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
