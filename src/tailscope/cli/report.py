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
    base = options.get("base_model")
    others = {k: v for k, v in options.items() if k not in ("base_model", "peft")}
    quant = _quantization(args.source, others) if base is not None and not options.get("peft") \
        else ""
    if quant:
        # a quantized checkpoint and its original: the report is of the dequantized model, and
        # its comparison the quantization damage (not the spectrum of W_q - W, the noise)
        from ..analysis import quantization_damage

        print(f"comparing a quantized model ({quant}) with its original {base}: the report is "
              "of the dequantized model, with the quantization damage per layer")
        with Progress("layers", quiet=args.quiet) as progress:
            analysis = analyze(args.source, progress=progress, **others)
        comparison = quantization_damage(args.source, base, **others)
    else:
        with Progress("layers", quiet=args.quiet) as progress:
            analysis = analyze(args.source, progress=progress, **options)
        comparison = None
    if base is not None and not options.get("peft") and not quant:
        from ..edit.compare import compare_to_base

        comparison = compare_to_base(args.source, base, **others)
    try:
        path = analysis.to_html(out, layer_figures=not args.no_layer_figures,
                                comparison=comparison)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc}") from None
    print(f"wrote {path}")
    return 0


def _quantization(source, options: dict) -> str:
    """How the source's weights were stored, '' for a float model ('fp8-e4m3 block 128x128',
    or several kinds joined), read from the listing without reading a tensor."""
    from ..analysis import describe

    kinds = [q for q in dict.fromkeys(describe(source, **options)["quant"]) if q]
    return ", ".join(kinds)


COMMAND = Command(
    name="report", help="analyse a model and write a self-contained HTML report",
    description="Analyse a model as `tailscope analyze` does (the same options) and write one "
                "HTML file: the summary, warnings, figures and the sortable per-layer table. "
                "With --base, the analysis is of W - W_base and the report adds the per-layer "
                "comparison with the base: alpha before and after, delta alpha, correlation "
                "traps, intruder dimensions. A quantized checkpoint with --base ORIGINAL: the "
                "analysis is of the dequantized model, and the comparison its quantization "
                "damage (alpha of the original and of the quantized model, delta alpha, "
                "||W_q - W||_F / ||W||_F per layer).",
    arguments=arguments, run=run, options=OPTIONS)
