"""``tailscope fit``: a power law fitted to numbers in a file."""

from __future__ import annotations

import json

import numpy as np

from ..engine.options import compare_names, parse_compare
from ..util.errors import printable
from .common import (
    Command,
    InputError,
    add_option,
    fmt,
    jobs_help,
    json_safe,
    read_values,
    real,
    seed_help,
    whole,
)


def arguments(p) -> None:
    p.add_argument("file", help="positive numbers, one per line ('-': stdin), or a .npy array")
    p.add_argument("--column", metavar="NAME|INDEX",
                   help="read this column of a CSV or whitespace table (a header name, or a "
                        "0-based index)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--xmin", type=real(0, above=True), help="fix xmin instead of scanning for it")
    group.add_argument("--xmin-range", type=real(0, above=True), nargs=2, metavar=("LO", "HI"),
                       help="scan xmin only over values in [LO, HI]")
    add_option(p, "xmax", suppress=False,
               help="'force' or 'max' (the largest value), a number (the model is normalised on "
                    "[xmin, xmax]), or -k to drop the k largest values before fitting")
    add_option(p, "fix_fingers", suppress=False)
    p.add_argument("--discrete", action="store_true",
                   help="fit the discrete power law x^-alpha / zeta(alpha, xmin) to whole numbers "
                        ">= 1 (counts), as powerlaw.Fit(data, discrete=True); the comparisons use "
                        "the discrete forms of the other models")
    add_option(p, "compare", suppress=False,
               help="likelihood-ratio tests of the power law against other tail models DIST "
                    "(default: truncated_power_law lognormal exponential; 'all' for every one)")
    p.add_argument("--bootstrap", type=whole(1), metavar="N",
                   help="CSN goodness-of-fit p-value from N bootstrap replicates")
    p.add_argument("--seed", type=whole(0), metavar="N", help=seed_help("--bootstrap"))
    p.add_argument("--jobs", type=whole(1), metavar="N",
                   help=jobs_help("bootstrap processes", "all cores"))
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _xmax(value, data):
    """(data, fit_power_law's xmax, how many of the largest values were dropped)."""
    from ..fit.tail import split_xmax  # the fit package loads scipy: only when fitting

    if isinstance(value, int):  # -k: drop the k largest values first
        arr = np.asarray(data)
        if arr.ndim != 1 or not np.isfinite(arr).all():
            return data, None, 0  # the fit says what is wrong with the data
        try:
            return split_xmax(np.sort(arr), value)
        except ValueError as exc:
            raise InputError(f"--xmax: {exc}") from None
    if isinstance(value, float) and value < 0:
        raise InputError(f"--xmax {value:g}: a negative value is -k, a whole number of values "
                         "to drop")
    return split_xmax(data, value)


def run(args) -> int:
    from ..fit import fit_power_law

    if args.bootstrap is not None and args.bootstrap < 1:
        raise InputError(f"--bootstrap needs N >= 1; got {args.bootstrap}")
    if args.discrete and args.bootstrap:
        raise InputError("--bootstrap draws continuous replicates: not with --discrete")
    names = ()
    if args.compare is not None:
        try:
            names = compare_names(parse_compare(args.compare))
        except ValueError as exc:
            raise InputError(f"--compare: {exc}") from None
    data, xmax, dropped = _xmax(args.xmax, read_values(args.file, args.column))
    xmin = tuple(args.xmin_range) if args.xmin_range else args.xmin
    try:
        fit = fit_power_law(data, xmin=xmin, xmax=xmax, fix_fingers=args.fix_fingers,
                            discrete=args.discrete)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    out = {"file": args.file, **fit.to_dict()}
    if dropped:
        out["dropped_largest"] = dropped
    comparisons, gof = [], None
    if fit.ok and args.compare is not None:
        for name in names:
            c = fit.compare(name)
            comparisons.append({"distribution": name, "R": c.R, "p": c.p, "nested": c.nested,
                                "parameters": fit.distribution(name).parameters})
        out["compare"] = comparisons
    if fit.ok and args.bootstrap:
        gof = fit.goodness_of_fit(args.bootstrap, seed=args.seed, n_jobs=args.jobs)
        out["bootstrap"] = {"n_boot": gof.n_boot, "p_value": gof.p_value,
                            "alpha_ci": list(gof.alpha_ci), "ci": gof.ci,
                            "n_failed": gof.n_failed, "seed": gof.seed}
    if args.json:
        print(json.dumps(json_safe(out), indent=2))
        return 0 if fit.ok else 2
    if not fit.ok:
        raise InputError(f"{args.file}: no power-law fit: {fit.reason}")
    what = f" (the {dropped} largest dropped)" if dropped else ""
    kind = "discrete power-law" if fit.discrete else "power-law"
    print(f"{printable(args.file)}: {fit.n} values{what}, {kind} tail of {fit.n_tail}")
    print(f"  alpha  {fit.alpha:.6g} +- {fit.sigma:.3g}")
    print(f"  xmin   {fit.xmin:.6g}" + ("" if fit.xmax is None else f"   xmax {fit.xmax:.6g}"))
    print(f"  D      {fit.D:.6g}")
    if fit.fix_fingers:
        print(f"  fingers {fit.fix_fingers}: {fit.num_fingers} removed "
              f"(raw alpha {fmt(fit.raw_alpha)})")
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


COMMAND = Command(
    name="fit", help="fit a power law to numbers in a file",
    description="Fit a continuous (or, with --discrete, discrete) power law (CSN method, exact "
                "xmin scan) to positive numbers: a text file with one number per line ('-' for "
                "stdin) or a .npy array.",
    arguments=arguments, run=run)
