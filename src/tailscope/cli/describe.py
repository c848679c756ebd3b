"""``tailscope describe``: a model's layers and whether analyze would fit them, nothing computed."""

from __future__ import annotations

from .common import Command, add_columns, add_source, given_options, option_names, pick_columns

BRIEF = ("layer_id", "name", "shape", "analyze", "reason")

OPTIONS = option_names("source", "select")


def arguments(p) -> None:
    add_source(p)
    add_columns(p, ", ".join(BRIEF))


def run(args) -> int:
    from ..analysis import describe
    from ..engine.run import recipe
    from ..util.console import echo, print_table

    options = given_options(args, OPTIONS)
    source = {k: options.pop(k) for k in ("trust_pickle", "base_model", "peft") if k in options}
    src = recipe(args.source, feature="describe", **source).open()
    table = describe(src, **options)
    (cols,) = pick_columns(args, [table], BRIEF)
    echo(src.describe())
    print_table(table, cols)
    echo(f"{int(table['analyze'].sum())} of {len(table)} tensors would be analysed")
    return 0


COMMAND = Command(
    name="describe", help="list a model's layers without computing anything",
    description="Each tensor of a model (and each part of a split one) with its shape and "
                "whether `tailscope analyze` with the same selection options would fit it.",
    arguments=arguments, run=run, options=OPTIONS)
