"""``tailscope zoo``: every model of a manifest on Dask, into a results store."""

from __future__ import annotations

from pathlib import Path

from ..engine.columns import SUMMARY_METRICS, TABLE_COLUMNS
from .common import (
    Command,
    InputError,
    add_columns,
    add_quiet,
    check_not_input,
    check_output,
    given_options,
    int_columns,
    option_names,
    pick_columns,
    real,
    whole,
)

# the zoo reads each model itself: of the source options only trust_pickle applies
OPTIONS = option_names("select", "esd", "fit", "diagnostics", plus=("trust_pickle",))
# the models table: the summary means that the layers table shows too
COLUMNS = ["name", "group", "status", "layers", "failed",
           *[c for c in SUMMARY_METRICS if c in TABLE_COLUMNS], "seconds"]
# what the terminal shows without --columns (--columns all: every column of the models table)
BRIEF = ["name", "group", "status", "layers", "failed", "alpha", "alpha_weighted", "D", "seconds"]
# the correlation tables without --columns
BRIEF_CORRELATIONS = ["metric", "group", "n", "spearman_rho", "spearman_p", "kendall_tau",
                      "kendall_p", "r2"]


def arguments(p) -> None:
    p.add_argument("manifest", help="a .csv or .yaml file, one model per row")
    p.add_argument("--store", default="results.db",
                   help="a SQLite file (default: results.db) or a SQLAlchemy URL "
                        "(postgresql://user:password@host/db)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="an existing Dask scheduler (tcp://HOST:PORT); default: a LocalCluster")
    p.add_argument("--connect-timeout", type=real(0, above=True), default=10.0, metavar="SECONDS",
                   help="how long to wait for --scheduler (default: 10)")
    p.add_argument("--workers", type=whole(1), metavar="N",
                   help="LocalCluster worker processes (default: cores)")
    p.add_argument("--threads-per-worker", type=whole(1), default=1, metavar="N",
                   help="model tasks per worker process (default: 1)")
    p.add_argument("--blas-threads", type=whole(1), default=1, metavar="N",
                   help="BLAS threads per model task (default: 1)")
    p.add_argument("--force", action="store_true", help="recompute models already in the store")
    p.add_argument("--correlate", action="append", metavar="COLUMN",
                   help="Spearman, Kendall and R^2 of each summary metric against this quality "
                        "column, overall and per group (repeatable)")
    p.add_argument("--common-layers", action="store_true",
                   help="with --correlate: each model's means over the layers fitted in every "
                        "model of its group, so members are compared on one layer set")
    p.add_argument("--report", metavar="FILE.html",
                   help="an HTML page with the models, correlations and scatter plots")
    add_columns(p, ", ".join(BRIEF) + "; of the correlation tables: "
                   + ", ".join(BRIEF_CORRELATIONS))
    add_quiet(p, "no progress, no models table")


def run(args) -> int:
    import warnings

    from ..engine.options import make_options
    from ..util.console import ROW_STYLES, Progress, echo, print_table
    from ..zoo import quality_columns, read_manifest, run_zoo, write_zoo_report
    from ..zoo.correlate import LayerSetWarning, common_layer_models, layer_set_notes

    options = given_options(args, OPTIONS)
    trust_pickle = options.pop("trust_pickle", False)
    make_options(**options)  # a bad option is reported before the manifest is read
    manifest = read_manifest(args.manifest)
    # the manifest and every model it names are inputs: never overwritten by the store or report
    inputs = [args.manifest, *(p for p in manifest["path"] if isinstance(p, str) and p)]
    store = str(args.store).removeprefix("sqlite:///")
    if "://" not in store:  # a SQLite file
        check_not_input(store, "--store", inputs)
    if args.report and Path(args.report).resolve() == Path(store).resolve():
        raise InputError(f"--report {args.report}: is the results store; write elsewhere")
    if args.report:
        check_output(args.report, "--report", (".html", ".htm"), "the report is an .html file",
                     [*inputs, store])
    have = quality_columns(manifest)
    missing = [q for q in args.correlate or [] if q not in have]
    if missing:  # checked before any work starts
        raise InputError(f"--correlate {missing[0]}: no such quality column in the manifest "
                         f"(have: {', '.join(have) or 'none'})")
    empty = [q for q in args.correlate or [] if not manifest[q].notna().any()]
    if empty:
        raise InputError(f"--correlate {empty[0]}: the manifest's quality column has no number "
                         "(nothing to correlate)")
    with Progress("models", quiet=args.quiet) as progress:
        run = run_zoo(args.manifest, store=args.store, scheduler=args.scheduler,
                      workers=args.workers, threads_per_worker=args.threads_per_worker,
                      blas_threads=args.blas_threads, force=args.force,
                      trust_pickle=trust_pickle, progress=progress,
                      connect_timeout=args.connect_timeout, **options)
    models = run.models
    with warnings.catch_warnings():  # the layer-set notes are printed below, once
        warnings.simplefilter("ignore", LayerSetWarning)
        tables = {q: run.correlate(q, common_layers=args.common_layers)
                  for q in args.correlate or []}
    # the groups whose members were fitted on different layer sets: said with or without
    # --correlate, with the reasons counted
    layers = run.store.layer_table(run.key)
    notes = layer_set_notes(models, layers, common=bool(args.common_layers and tables))
    if args.report:  # its scatter plots show the means the correlations were taken on
        shown_models = common_layer_models(models, layers, lambda n: run.details(n)) \
            if args.common_layers else models
        write_zoo_report(shown_models, args.report, quality=args.correlate or [],
                         tables=tables, notes=notes)
    shown, *for_tables = pick_columns(args, [models, *tables.values()], BRIEF)
    if args.columns is None:
        for_tables = [[c for c in BRIEF_CORRELATIONS if c in t.columns] for t in tables.values()]
    if not args.quiet:
        print_table(int_columns(models, ("layers", "failed")), shown)
        for _, row in models[models["status"] == "failed"].iterrows():
            echo(f"failed: {row['name']}: {row['reason']}", style=ROW_STYLES["failed"])
    for (q, table), cols in zip(tables.items(), for_tables):
        echo()
        print_table(table, cols, title=f"summary metrics vs {q} (Spearman rho, Kendall tau, R^2; "
                                 "overall and per group)")
    for note in notes:
        echo(f"{'note' if args.common_layers and tables else 'warning'}: {note}")
    echo(f"{len(models)} models: {int((models['status'] == 'success').sum())} analysed, "
          f"{int((models['status'] == 'failed').sum())} failed ({run.computed} computed now, "
          f"{run.resumed} already in the store); store {run.store.shown}, key {run.key}")
    if args.report:
        echo(f"wrote {args.report}")
    return 0


COMMAND = Command(
    name="zoo", help="analyse every model of a manifest on Dask into a results store",
    description="Analyse many models (a CSV or YAML manifest: source, name, group, quality "
                "columns) as Dask tasks, keep the results in a SQLite file or a SQLAlchemy "
                "database, resume finished models, and correlate summary metrics with quality. "
                "The analysis options are those of `tailscope analyze`; --jobs is the layers "
                "analysed at once within each model task.",
    arguments=arguments, run=run, options=OPTIONS)
