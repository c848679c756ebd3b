"""``tailscope prune``: a copy of a model with the smallest weights of each layer set to zero,
to a uniform sparsity or to AlphaPruning's alpha-guided allocation."""

from __future__ import annotations

from .common import Command, InputError, add_scheduler, add_source, check_output, given_options, option_names

OPTIONS = option_names("source", "select", plus=("jobs",))


def _fraction(flag: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise InputError(f"{flag} {text!r}: not a number") from None
        if not 0.0 <= v <= 1.0:
            raise InputError(f"{flag} {text}: must be in [0, 1]")
        return v
    return parse


def arguments(p) -> None:
    add_source(p)
    add_scheduler(p)
    p.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    p.add_argument("--sparsity", required=True,
                   help="the fraction of each layer's weights set to zero, in [0, 1] (with "
                        "--alpha-allocation: the parameter-weighted mean over the layers)")
    p.add_argument("--alpha-allocation", action="store_true",
                   help="per-layer sparsities from the layers' metric (AlphaPruning): higher "
                        "metric, pruned more")
    p.add_argument("--eps", default="0.3",
                   help="with --alpha-allocation: the metric's range maps onto sparsity ratios "
                        "[1-eps, 1+eps] (default: 0.3)")
    p.add_argument("--metric", default="alpha_hill",
                   help="with --alpha-allocation: the per-layer column allocated from "
                        "(default: alpha_hill)")
    p.add_argument("--per-layer", action="store_true",
                   help="with --alpha-allocation: each layer's own metric, not its transformer "
                        "block's mean")
    p.add_argument("--max-sparsity", default="1",
                   help="with --alpha-allocation: no layer pruned more (default: 1)")
    p.add_argument("--all-layers", action="store_true",
                   help="with --alpha-allocation: also layers outside the numbered blocks "
                        "(embeddings, pooler, lm_head), which stay dense by default as in "
                        "AlphaPruning")


def run(args) -> int:
    from ..analysis import analyze
    from ..edit.prune import allocate_sparsity, metric_options, prune
    from ..util.console import Progress, print_table

    options = given_options(args, OPTIONS)
    out = check_output(args.output, "-o", (".safetensors",),
                       "the pruned model is written as .safetensors",
                       inputs=(args.source, options.get("base_model")))
    target = _fraction("--sparsity")(args.sparsity)
    eps = _fraction("--eps")(args.eps)
    cap = _fraction("--max-sparsity")(args.max_sparsity)
    if args.alpha_allocation:
        with Progress("layers") as progress:
            analysis = analyze(args.source, progress=progress, scheduler=args.scheduler,
                               **options, **metric_options(args.metric))
        sparsity = allocate_sparsity(analysis, target=target, eps=eps, metric=args.metric,
                                     block_wise=not args.per_layer,
                                     blocks_only=not args.all_layers, max_sparsity=cap)
    else:
        if args.per_layer or args.all_layers or args.metric != "alpha_hill" \
                or args.eps != "0.3" or args.max_sparsity != "1":
            raise InputError("--eps, --metric, --max-sparsity, --per-layer and --all-layers "
                             "need --alpha-allocation")
        sparsity = target
    with Progress("layers") as progress:
        edited = prune(args.source, sparsity, progress=progress, scheduler=args.scheduler,
                       **options)
    try:
        path = edited.save(out)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc}") from None
    print_table(edited.details, ["layer_id", "name", "shape", "sparsity", "pruned", "status",
                                 "reason"])
    d = edited.details
    n = int((d["status"] == "edited").sum())
    pruned, numel = int(d["pruned"].sum()), int(d["numel"].sum())
    share = pruned / numel if numel else 0.0
    print(f"wrote {path} ({n} of {len(d)} layers pruned; {pruned:,} of {numel:,} weights, "
          f"{share:.4f})")
    return 0


COMMAND = Command(
    name="prune",
    help="write a copy of a model with the smallest weights of each layer set to zero",
    description="Magnitude pruning: each layer loses round(sparsity * numel) of its smallest "
                "|w|. --alpha-allocation gives each layer its own sparsity from its metric "
                "(AlphaPruning's allocation: higher alpha, pruned more; the parameter-weighted "
                "mean is --sparsity). Biases and other tensors are copied unchanged. The "
                "selection options choose the layers as in `tailscope analyze`.",
    arguments=arguments, run=run, options=OPTIONS)
