"""The per-layer columns, each declared once: name, group, dtype, whether the summary averages it,
whether tables show it.

``COLUMNS`` is in the order of ``Analysis.details``. A column's group says when it is present:
the core groups always, the others when the options ask for them (``GROUP_WHEN``: a diagnostic's
groups as ``engine.diagnostics.DIAGNOSTICS`` declares them, the fit's own here). ``details``,
``describe``'s table, the results store (typed columns and its JSON extras), the summary, the
terminal table and the report are all generated from here, so a new column is one line; a test
holds every consumer to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .diagnostics import DIAGNOSTICS, Diagnostic
from .options import COMPARE_TAGS, FITS

OVER_TRAINED, UNDER_TRAINED = 2.0, 6.0  # alpha below / above: the warnings (HT-SR)
# What the two thresholds are, and what the evidence says they mean: the one text the summary,
# the report and the notebook view show (docs/guide/comparability.md gives the sources).
WARNING_EVIDENCE = (
    f"alpha < {OVER_TRAINED:g} ('over-trained') and alpha > {UNDER_TRAINED:g} "
    "('under-trained') are HT-SR's conventions, as WeightWatcher labels them, not measurements "
    "of how well a model was trained. Evidence: within a series of one architecture at growing "
    "size, each trained well, smaller mean alphas went with better accuracy (Martin, Peng & "
    "Mahoney, Nature Communications 2021); across a hyperparameter sweep of 96 small networks, "
    "tailscope validate found that plain alpha does not predict test accuracy (Spearman -0.06, "
    "90% bootstrap interval [-0.25, +0.13]). Read a flagged layer as one to look at, not as a verdict.")


def flag_text(label: str, alpha: float) -> str:
    """What a flagged layer's ``warning`` says, in words the evidence supports: the measured
    alpha against the convention's threshold, and what HT-SR reads into it (a hypothesis)."""
    if label == "over-trained":
        return (f"alpha {alpha:.2f} < {OVER_TRAINED:g}: a very heavy tail; HT-SR's convention "
                "flags it as possibly over-trained or over-regularised")
    if label == "under-trained":
        return (f"alpha {alpha:.2f} > {UNDER_TRAINED:g}: a light tail, close to a random "
                "matrix's; HT-SR's convention flags it as possibly under-trained")
    return ""


@dataclass(frozen=True)
class Column:
    """One column of ``Analysis.details``.

    ``dtype``: 'int' (integer-valued; NaN where not computed), 'float' or 'text' (how the store
    types it). ``group``: when it is
    present (a key of ``GROUP_WHEN``). ``summary``: averaged over fitted layers in
    ``Analysis.summary()`` (and kept per model in the zoo's store). ``table``: shown in the
    terminal and report tables. ``stored``: a typed column of the store's ``layers`` table
    (False: kept in its JSON ``extras``).
    """

    name: str
    dtype: str
    group: str
    doc: str = ""
    summary: bool = False
    table: bool = False

    @property
    def stored(self) -> bool:
        return self.group in CORE_GROUPS


def _shown(diagnostic: Diagnostic, group: str) -> Callable:
    return lambda o: diagnostic.shows(o, group)


# when each group is present: CORE_GROUPS always, the groups of the selection and fit options
# (FIT_GROUPS) as those options say, each diagnostic's as DIAGNOSTICS declares
CORE_GROUPS = ("layer", "spectrum", "fit", "status")
FIT_GROUPS: dict[str, Callable] = {
    "slice": lambda o: not o.pool,
    "tpl": lambda o: FITS[o.fit] != "PL",
    "fingers": lambda o: o.fix_fingers == "clip_xmax",
}
GROUP_WHEN: dict[str, Callable] = {
    **{g: (lambda o: True) for g in CORE_GROUPS},
    **FIT_GROUPS,
    **{g: _shown(d, g) for d in DIAGNOSTICS for g in d.groups},
}


def _vector_columns() -> list[Column]:
    out = []
    for name in ("vec_entropy", "loc_ratio", "part_ratio"):
        for part in ("bulk", "tail"):
            for stat in ("mean", "var"):
                out.append(Column(f"{part}_{stat}_{name}", "float", "vectors",
                                  f"the {stat} of {name} over the {part}'s eigenvectors"))
    return out


def _compare_columns() -> list[Column]:
    out = []
    for tag in dict.fromkeys(COMPARE_TAGS.values()):
        out.append(Column(f"R_{tag}", "float", f"compare:{tag}",
                          f"log-likelihood ratio power law vs {tag} (> 0 favours the power law)"))
        out.append(Column(f"p_{tag}", "float", f"compare:{tag}", f"significance of R_{tag}"))
    return out


COLUMNS: tuple[Column, ...] = (
    Column("layer_id", "int", "layer", "the tensor's position in model order", table=True),
    Column("name", "text", "layer", "the tensor's name"),
    Column("module", "text", "layer", "the name without '.weight' (WeightWatcher's name)",
           table=True),
    Column("layer_type", "text", "layer", "dense, embedding, conv1d, conv2d, conv3d, recurrent, expert, "
           "router or shared_expert", table=True),
    Column("expert", "int", "layer", "the expert's number in its Mixture-of-Experts layer "
           "(missing for every other layer)"),
    Column("slice_id", "int", "slice", "the conv slice (pool=False)", table=True),
    Column("N", "int", "layer", "the larger side of the matrix", table=True),
    Column("M", "int", "layer", "the smaller side: the number of eigenvalues per slice",
           table=True),
    Column("Q", "float", "layer", "N / M"),
    Column("rf", "int", "layer", "the receptive field: conv slices pooled"),
    Column("num_evals", "int", "spectrum", "eigenvalues in the ESD", table=True),
    Column("alpha", "float", "fit", "the power-law exponent of the ESD's tail", summary=True,
           table=True),
    Column("Lambda", "float", "tpl", "the truncated power law's exponential cut-off"),
    Column("alpha_weighted", "float", "fit", "alpha * log10(lambda_max)", summary=True,
           table=True),
    Column("log_alpha_norm", "float", "fit", "log10 of sum(lambda^alpha)", summary=True,
           table=True),
    Column("D", "float", "fit", "the Kolmogorov-Smirnov distance of the fit", summary=True,
           table=True),
    Column("xmin", "float", "fit", "the start of the power-law tail", table=True),
    Column("xmax", "float", "fit", "the end of the fitted range"),
    Column("sigma", "float", "fit", "the standard error of alpha"),
    Column("num_pl_spikes", "int", "fit", "eigenvalues in the tail (>= xmin)", table=True),
    Column("lambda_max", "float", "spectrum", "the largest eigenvalue"),
    Column("spectral_norm", "float", "spectrum", "= lambda_max (WeightWatcher's name)"),
    Column("norm", "float", "spectrum", "the sum of the eigenvalues (squared Frobenius norm)"),
    Column("log_norm", "float", "spectrum", "log10(norm)", summary=True),
    Column("log_spectral_norm", "float", "spectrum", "log10(lambda_max)", summary=True,
           table=True),
    Column("stable_rank", "float", "spectrum", "norm / lambda_max", summary=True, table=True),
    Column("matrix_rank", "int", "spectrum", "singular values above numerical zero"),
    Column("rank_loss", "int", "spectrum", "singular values at numerical zero, over the slices"),
    Column("weak_rank_loss", "int", "spectrum", "eigenvalues below tolerance"),
    Column("entropy", "float", "spectrum", "the spectral entropy (WeightWatcher's)"),
    Column("sv_max", "float", "spectrum", "the largest singular value"),
    Column("sv_min", "float", "spectrum", "the smallest singular value"),
    Column("snr", "float", "spectrum", "Spectrum's signal-to-noise ratio of the singular values "
           "(MP edge from the IQR; spectrum.py)"),
    Column("weight_var", "float", "spectrum", "the variance of the weight entries (AlphaQ's Var(W))"),
    Column("num_fingers", "int", "fingers", "largest eigenvalues removed by clip_xmax"),
    Column("raw_alpha", "float", "fingers", "alpha before the finger fix"),
    Column("num_spikes", "int", "mp", "eigenvalues past the MP bulk edge + Tracy-Widom",
           table=True),
    Column("sigma_mp", "float", "mp", "the fitted MP sigma (ESD rescaled to mean 1)", table=True),
    Column("mp_softrank", "float", "mp", "bulk_max / lambda_max", summary=True, table=True),
    Column("W_scale", "float", "mp", "sqrt(n / sum(evals))"),
    Column("bulk_max", "float", "mp", "the MP bulk edge lambda+"),
    Column("bulk_min", "float", "mp", "the MP bulk edge lambda-"),
    Column("mp_reason", "text", "mp", "why the layer has no MP fit", table=True),
    Column("max_rand_eval", "float", "rand", "the largest eigenvalue of the shuffled matrices"),
    Column("rand_num_spikes", "int", "rand", "spikes of the shuffled ESD: correlation traps",
           table=True),
    Column("num_traps", "int", "rand", "= rand_num_spikes (WeightWatcher 0.7.7's name)"),
    Column("rand_sigma_mp", "float", "rand", "sigma_mp of the shuffled ESD"),
    Column("rand_mp_softrank", "float", "rand", "mp_softrank of the shuffled ESD"),
    Column("rand_W_scale", "float", "rand", "W_scale of the shuffled ESD"),
    Column("rand_bulk_max", "float", "rand", "bulk_max of the shuffled ESD"),
    Column("rand_bulk_min", "float", "rand", "bulk_min of the shuffled ESD"),
    Column("rand_distance", "float", "rand", "Jensen-Shannon distance real vs shuffled ESD",
           table=True),
    Column("ww_softrank", "float", "rand", "max shuffled eigenvalue / lambda_max"),
    Column("ww_maxdist", "float", "rand", "lambda_max - max shuffled eigenvalue"),
    Column("rand_reason", "text", "rand", "why the shuffled ESD has no MP fit"),
    Column("detX_num", "int", "detX", "the det X = 1 tail's size", table=True),
    Column("detX_val", "float", "detX", "its smallest eigenvalue"),
    Column("detX_val_unrescaled", "float", "detX", "the same, rescaled (WeightWatcher's name)"),
    Column("num_ERG_spikes", "int", "detX", "= detX_num (WeightWatcher 0.7.7)"),
    Column("ERG_gap", "float", "detX", "detX_num - num_pl_spikes"),
    *_compare_columns(),
    Column("p_gof", "float", "gof", "the CSN bootstrap p-value of the power law"),
    *_vector_columns(),
    Column("alpha_hill", "float", "hill", "Hill's alpha with xmin at the median eigenvalue "
           "(PL_Alpha_Hill)", summary=True, table=True),
    Column("alpha_farms", "float", "farms", "FARMS: Hill's alpha at the median of the pooled "
           "eigenvalues of fixed-aspect windows", summary=True, table=True),
    # alpha's uncertainty and the SETOL metrics (issue 13, part D)
    Column("alpha_ci_low", "float", "alpha_ci", "the bootstrap interval's lower end of alpha",
           summary=True, table=True),
    Column("alpha_ci_high", "float", "alpha_ci", "the bootstrap interval's upper end of alpha",
           summary=True, table=True),
    Column("delta_lambda_min", "float", "setol", "xmin - detX_val (SETOL; < 0: over-regularised)",
           summary=True, table=True),
    Column("alpha_minus_2", "float", "setol", "alpha - 2 (SETOL's ideal alpha is 2)",
           summary=True),
    Column("ecs_rank", "int", "setol", "floor((num_pl_spikes + detX_num) / 2)", table=True),
    Column("ecs_num_sc", "int", "setol", "the self-consistent trace-log ECS rank"),
    Column("ecs_rank_sc", "int", "setol", "floor((num_pl_spikes + ecs_num_sc) / 2)"),
    Column("status", "text", "status", "success or failed", table=True),
    Column("warning", "text", "status", "HT-SR's convention labels (WeightWatcher's): "
           "over-trained (alpha < 2) or under-trained (alpha > 6); see WARNING_EVIDENCE",
           table=True),
    Column("reason", "text", "status", "why a layer failed", table=True),
    Column("dtype", "text", "status", "the tensor's dtype"),
    Column("quant", "text", "status", "how a dequantized weight was stored ('fp8-e4m3 block "
           "128x128', 'gptq int4 g128', ...; '' for plain floating point)"),
)

BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
SUMMARY_METRICS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.summary and c.stored)
# the counts every summary has besides its means (Analysis.summary(), the store's models table)
SUMMARY_COUNTS = ("layers", "success", "failed", "skipped", "over_trained", "under_trained")
TABLE_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.table)
# the terminal table's default: the table columns a user reads first (about 95 characters wide
# with 40-character module names); the diagnostics asked for add theirs (brief_columns)
BRIEF_COLUMNS: tuple[str, ...] = ("layer_id", "module", "N", "M", "alpha", "D", "warning")
STORED_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.stored)

# describe(): a model's tensors and whether analyze would fit them
DESCRIBE_COLUMNS = ("layer_id", "name", "layer_type", "expert", "shape", "dtype", "quant", "N",
                    "M", "rf",
                    "num_evals", "analyze", "reason")
SKIPPED_COLUMNS = ("layer_id", "name", "layer_type", "shape", "dtype", "quant", "reason")


def columns_for(o) -> list[str]:
    """The columns of ``details`` for these options, in order."""
    return [c.name for c in COLUMNS if GROUP_WHEN[c.group](o)]


def brief_columns(present) -> list[str]:
    """The terminal table's default columns among ``present`` column names: ``BRIEF_COLUMNS``,
    then the table columns of the groups the options add (slices, MP fit, randomize, ...), in
    column order."""
    present = set(present)
    return [c.name for c in COLUMNS if c.name in present and (
        c.name in BRIEF_COLUMNS or (c.table and c.group not in CORE_GROUPS
                                    and not c.name.endswith("reason")))]


def summary_columns(present) -> list[str]:
    """The summary metrics among ``present`` column names, in column order."""
    present = set(present)
    return [c.name for c in COLUMNS if c.summary and c.name in present]


def verdict(alpha: float) -> str:
    """The warning of a fitted layer: 'over-trained' (alpha < 2), 'under-trained' (> 6) or ''."""
    return ("over-trained" if alpha < OVER_TRAINED else
            "under-trained" if alpha > UNDER_TRAINED else "")
