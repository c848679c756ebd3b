"""``tailscope analyze``: every weight matrix of a model, then the model's summary."""

from __future__ import annotations

import sys

from .common import (
    Command,
    add_columns,
    add_quiet,
    add_scheduler,
    add_source,
    check_folder,
    check_output,
    given_options,
    option_names,
    pick_columns,
    print_analysis,
)

OPTIONS = option_names("source", "select", "esd", "fit", "diagnostics")
# the formats Analysis.save writes (tests/test_commands.py holds the two together)
OUT_FORMATS = (".csv", ".json", ".parquet")
_FORMATS = ", ".join(OUT_FORMATS[:-1]) + " or " + OUT_FORMATS[-1]


def arguments(p) -> None:
    add_source(p)
    p.add_argument("--out", metavar="FILE",
                   help=f"write the per-layer table ({_FORMATS}), atomically")
    p.add_argument("--plot", metavar="DIR", help="save each layer's figures to DIR")
    add_scheduler(p)
    add_columns(p, "layer_id, module, N, M, alpha, D, warning and the columns of the "
                   "diagnostics asked for")
    add_quiet(p, "no table, no progress bar")


def run(args) -> int:
    import pandas as pd

    from ..analysis import analyze
    from ..engine.columns import BY_NAME as COLUMN
    from ..util.console import Progress

    options = given_options(args, OPTIONS)
    pick_columns(args, [pd.DataFrame(columns=list(COLUMN))], ())  # a bad --columns: before work
    if args.out:
        check_output(args.out, "--out", OUT_FORMATS, f"use a {_FORMATS} file name",
                     inputs=(args.source, options.get("base_model")))
    if args.plot:
        check_folder(args.plot, "--plot", inputs=(args.source, options.get("base_model")))
    with Progress("layers", quiet=args.quiet) as progress:
        analysis = analyze(args.source, progress=progress, scheduler=args.scheduler, **options)
    if options.get("randomize") and options.get("seed") is None:  # so the run can be repeated
        print(f"randomize: seed {analysis.options['seed']} (--seed to repeat)", file=sys.stderr)
    if not args.quiet:
        print_analysis(analysis, args)
    if args.out:
        analysis.save(args.out)
        if not args.quiet:
            print(f"wrote {args.out}")
    if args.plot:
        from ..report.plots import layer_figures

        paths = layer_figures(analysis, args.plot)
        if not args.quiet:
            print(f"wrote {len(paths)} layer figures to {args.plot}")
    return 0


COMMAND = Command(
    name="analyze", help="analyse every weight matrix of a model",
    description="Per layer: the ESD of W^T W, its power-law fit (alpha, D, xmin) and "
                "WeightWatcher's metrics; then the model summary.",
    arguments=arguments, run=run, options=OPTIONS)
