"""``tailscope report``: analyse a model and write a self-contained HTML report."""

from __future__ import annotations

from .common import Command, InputError, add_quiet, add_source, check_output, given_options, option_names

OPTIONS = option_names("source", "select", "esd", "fit", "diagnostics")


def arguments(p) -> None:
    add_source(p)
    p.add_argument("-o", "--output", default="report.html",
                   help="the .html file to write (default: report.html)")
    p.add_argument("--no-layer-figures", action="store_true",
                   help="only the model-level figures and the table (faster for huge models)")
    add_quiet(p)


def run(args) -> int:
    from ..analysis import analyze
    from ..util.console import Progress

    options = given_options(args, OPTIONS)
    out = check_output(args.output, "-o", (".html", ".htm"), "the report is an .html file",
                       inputs=(args.source, options.get("base_model")))
    with Progress("layers", quiet=args.quiet) as progress:
        analysis = analyze(args.source, progress=progress, **options)
    comparison = None
    if options.get("base_model") is not None and not options.get("peft"):
        from ..edit.compare import compare_to_base

        others = {k: v for k, v in options.items() if k not in ("base_model", "peft")}
        comparison = compare_to_base(args.source, options["base_model"], **others)
    try:
        path = analysis.to_html(out, layer_figures=not args.no_layer_figures,
                                comparison=comparison)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc}") from None
    print(f"wrote {path}")
    return 0


COMMAND = Command(
    name="report", help="analyse a model and write a self-contained HTML report",
    description="Analyse a model as `tailscope analyze` does (the same options) and write one "
                "HTML file: the summary, warnings, figures and the sortable per-layer table. "
                "With --base, the analysis is of W - W_base and the report adds the per-layer "
                "comparison with the base: alpha before and after, delta alpha, correlation "
                "traps, intruder dimensions.",
    arguments=arguments, run=run, options=OPTIONS)
