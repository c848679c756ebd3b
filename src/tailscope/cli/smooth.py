"""``tailscope smooth``: a copy of a model with each weight matrix cut to its top components."""

from __future__ import annotations

import argparse

from .common import (
    Choices,
    Command,
    InputError,
    add_choices,
    add_scheduler,
    add_source,
    check_output,
    given_options,
    option_names,
    real,
)

OPTIONS = option_names("source", "select", "fit", plus=("jobs",))


def _methods():
    from ..edit.smooth import SMOOTH_METHODS

    return SMOOTH_METHODS


KEEP = Choices(_methods)


def arguments(p) -> None:
    add_source(p)
    add_scheduler(p)
    p.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    add_choices(p, "--keep", choices=KEEP, default="pl",
                help="the components each layer keeps: its power-law tail (pl, the default), "
                     "the detX count, a fraction (svd, see --percent) or the Marchenko-Pastur "
                     "spikes (mp)")
    # the old name of --keep, still accepted so scripts run (the analysis' --method is gram/svd)
    add_choices(p, "--method", dest="keep", choices=KEEP, default=argparse.SUPPRESS,
                help=argparse.SUPPRESS)
    p.add_argument("--percent", type=real(-1, 1), default=0.8,
                   help="for --keep svd: the fraction kept (negative: removed from the top; "
                        "default: 0.8)")


def run(args) -> int:
    from ..edit import smooth
    from ..util.console import Progress, print_table

    options = given_options(args, OPTIONS)
    out = check_output(args.output, "-o", (".safetensors",),
                       "the smoothed model is written as .safetensors",
                       inputs=(args.source, options.get("base_model")))
    with Progress("layers") as progress:
        edited = smooth(args.source, method=args.keep, percent=args.percent, progress=progress,
                        scheduler=args.scheduler, **options)
    try:
        path = edited.save(out)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc}") from None
    print_table(edited.details, ["layer_id", "name", "M", "rf", "kept", "removed", "status",
                                 "reason"])
    n = int((edited.details["status"] == "edited").sum())
    print(f"wrote {path} ({n} of {len(edited.details)} layers smoothed)")
    return 0


COMMAND = Command(
    name="smooth",
    help="write a copy of a model with each weight matrix truncated to its top singular "
         "components",
    description="SVD smoothing: keep the power-law tail (pl), the detX count, a fraction (svd "
                "--percent) or the Marchenko-Pastur spikes (mp) of each layer; biases and other "
                "tensors are copied. The selection and fit options choose the layers and the fit "
                "as in `tailscope analyze`.",
    arguments=arguments, run=run, options=OPTIONS)
