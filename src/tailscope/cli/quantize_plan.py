"""``tailscope quantize-plan``: bits per layer from the spectra (AlphaQ's allocation), written
for the quantizer: llama.cpp's ``llama-quantize --tensor-type`` overrides, an llm-compressor
recipe (compressed-tensors config groups), or GPTQModel's per-module ``dynamic`` config."""

from __future__ import annotations

import json
import shlex

from .common import (
    Choices,
    Command,
    InputError,
    add_choices,
    add_scheduler,
    add_source,
    given_options,
    option_names,
    real,
)

OPTIONS = option_names("source", "select", plus=("jobs",))


def _formats():
    from ..edit.decisions import QUANTIZE_FORMATS

    return QUANTIZE_FORMATS


FORMATS = Choices(_formats)


def arguments(p) -> None:
    add_source(p)
    add_scheduler(p)
    p.add_argument("--budget", type=real(0, above=True), default=3.5,
                   help="the mean bits per parameter (default: 3.5)")
    p.add_argument("--bits", default="2,3,4",
                   help="the bit widths a layer may get, comma-separated (default: 2,3,4)")
    p.add_argument("--gamma", type=real(), default=10.0,
                   help="the sensitivity exponent: (median alpha / alpha)^gamma (default: 10)")
    p.add_argument("--metric", default="alpha_farms",
                   help="the alpha column allocated from (default: alpha_farms, FARMS-Hill)")
    p.add_argument("--per-layer-budget", action="store_true",
                   help="budget on the mean bits per layer (AlphaQ's constraint), not per "
                        "parameter")
    add_choices(p, "--format", choices=FORMATS, default="llama.cpp",
                help="what to write: llama.cpp (--tensor-type overrides), llm-compressor "
                     "(a YAML recipe) or gptqmodel (JSON) (default: llama.cpp)")
    p.add_argument("--arch", default=None,
                   help="with --format llama.cpp: the GGUF architecture whose tensor names to "
                        "use (default: llama; a GGUF source keeps its own names)")


def run(args) -> int:
    from ..analysis import analyze
    from ..edit.allocate import metric_options
    from ..edit.decisions import allocate_bits
    from ..util.console import Progress

    try:
        bits = tuple(int(b) for b in args.bits.split(","))
    except ValueError:
        raise InputError(f"--bits {args.bits!r}: whole numbers separated by commas") from None
    if args.arch is not None and args.format != "llama.cpp":
        raise InputError("--arch goes with --format llama.cpp")
    options = given_options(args, OPTIONS)
    with Progress("layers") as progress:
        analysis = analyze(args.source, progress=progress, scheduler=args.scheduler,
                           **options, **metric_options(args.metric))
    try:
        plan = allocate_bits(analysis, budget=args.budget, bits=bits, gamma=args.gamma,
                             metric=args.metric, weighted=not args.per_layer_budget)
        if args.format == "llama.cpp":
            lines = [f"--tensor-type {shlex.quote(o)}" for o in plan.to_llama_cpp(args.arch)]
            print(" \\\n".join(lines))
        elif args.format == "llm-compressor":
            import yaml

            print(yaml.safe_dump(plan.to_llm_compressor(), sort_keys=False), end="")
        else:
            print(json.dumps(plan.to_gptqmodel(), indent=2))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return 0


COMMAND = Command(
    name="quantize-plan",
    help="bits per layer from the spectra (AlphaQ), written for llama.cpp, llm-compressor or "
         "GPTQModel",
    description="Mixed-precision bits without calibration data (AlphaQ): each layer's "
                "sensitivity (median alpha / alpha)^gamma times the variance of its weights "
                "times 2^(-2b) is minimised exactly under the mean-bits budget. Writes "
                "llama-quantize --tensor-type overrides, an llm-compressor recipe (YAML) or "
                "GPTQModel's dynamic config (JSON) to standard output.",
    arguments=arguments, run=run, options=OPTIONS)
