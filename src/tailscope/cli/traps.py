"""``tailscope traps``: the correlation traps of a model, one row per trap; optionally removed."""

from __future__ import annotations

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
    whole,
)

# --seed is the analysis' own flag (the seed of analyze --randomize): fresh when not given, printed
OPTIONS = option_names("source", "select", "esd", plus=("seed",), minus=("device", "tolerance"))


def _noise():
    from ..edit.traps import NOISE

    return NOISE


NOISE = Choices(_noise)
TABLE = ["layer_id", "name", "slice_id", "trap", "eigenvalue", "spike_threshold", "excess_tw",
         "left_ipr", "right_ipr", "row", "col", "entry", "variance_share", "layer_trap_burden"]


def arguments(p) -> None:
    add_source(p)
    add_scheduler(p)
    p.add_argument("--top-k", dest="top_k", type=whole(1), default=None, metavar="K",
                   help="the k of the singular vectors' top-k mass (default: 5)")
    p.add_argument("--out", metavar="FILE", help="write the trap table (.csv or .json), atomically")
    p.add_argument("--remove", action="store_true",
                   help="also write a copy of the model with each trap's rank-one component "
                        "replaced by Gaussian noise (needs -o)")
    add_choices(p, "--noise", choices=NOISE, default="rank1",
                help="with --remove: the replacement, rank-one noise along the trap's singular "
                     "vectors at the bulk's variance (rank1, the default) or dense noise "
                     "matched to the trap's entries (trunk, WeightWatcher's trunk)")
    p.add_argument("-o", "--output", metavar="FILE", help="with --remove: the .safetensors file")


def run(args) -> int:
    from ..edit.traps import remove_traps, traps
    from ..util.console import Progress, print_table
    from ..util.io import atomic_write

    options = given_options(args, OPTIONS)
    seed = options.pop("seed", None)
    if args.top_k is not None and args.top_k < 1:
        raise InputError(f"--top-k {args.top_k}: must be >= 1")
    if args.remove != bool(args.output):
        raise InputError("--remove and -o go together: --remove -o fixed.safetensors")
    out = None
    if args.output:
        out = check_output(args.output, "-o", (".safetensors",),
                           "the edited model is written as .safetensors",
                           inputs=(args.source, options.get("base_model")))
    if args.out:
        check_output(args.out, "--out", (".csv", ".json"), "use a .csv or .json file name",
                     inputs=(args.source, options.get("base_model")))
    with Progress("layers") as progress:
        top = {} if args.top_k is None else {"top_k": args.top_k}  # else traps' own default
        found = traps(args.source, seed=seed, progress=progress, **top,
                      scheduler=args.scheduler, **options)
    seed = found.options["seed"]  # the one drawn when --seed was not given: --remove uses it too
    table, layers = found.traps, found.layers
    print_table(table, TABLE)
    failed = layers[layers["status"] != "success"]
    if len(failed):
        print_table(failed, ["layer_id", "name", "slice_id", "reason"], title="failed layers")
    print(f"{len(table)} traps in {int((layers['num_traps'] > 0).sum())} of {len(layers)} layers "
          f"(seed {seed}; --seed {seed} repeats it)")
    if args.out:
        writer = (lambda p: table.to_csv(p, index=False)) if args.out.lower().endswith(".csv") \
            else (lambda p: table.to_json(p, orient="records", indent=1))
        try:
            atomic_write(args.out, writer)
        except OSError as exc:
            raise InputError(f"cannot write {args.out}: {exc}") from None
        print(f"wrote {args.out}")
    if out is not None:
        with Progress("layers") as progress:
            edited = remove_traps(args.source, seed=seed, noise=args.noise, progress=progress,
                                  scheduler=args.scheduler, **options)
        try:
            path = edited.save(out)
        except OSError as exc:
            raise InputError(f"cannot write {out}: {exc}") from None
        n = int((edited.details["status"] == "edited").sum())
        print(f"wrote {path} ({int(edited.details['removed'].sum())} traps removed in {n} layers)")
    return 0


COMMAND = Command(
    name="traps",
    help="list the correlation traps of a model (spikes of its shuffled ESD), optionally remove "
         "them",
    description="Each layer's elements are shuffled (seeded, as analyze --randomize) and the "
                "eigenvalues of the shuffled matrix above the Marchenko-Pastur bulk edge plus the "
                "Tracy-Widom width are traps: one row each, with its excess, the localization of "
                "its singular vectors, the entry of W it comes from and the share of the layer's "
                "variance it carries. --remove -o writes the model with each trap's rank-one "
                "component replaced by Gaussian noise.",
    arguments=arguments, run=run, options=OPTIONS)
