"""The diagnostics, each declared once: the option that turns it on, the column groups it fills,
and its computation.

``DIAGNOSTICS`` is in the order they are computed. The column groups present in ``details``
(``engine.columns.GROUP_WHEN``), the matrices a layer keeps after its eigensolve, its random
generator, the per-row computation in :mod:`tailscope.engine.layer` and the options a metric needs
(``GROUP_OPTION``) are all generated from here; a test holds the declaration to ``OPTIONS`` and
``COLUMNS``. Adding a diagnostic is one :class:`Diagnostic` here, its option and its columns.

Each ``compute`` reads a :class:`Row` (or, at the ``layer`` stage, a :class:`Layer`) and writes its
columns into the row's ``values``. A failure is NaN in its own columns and a reason (its column,
or a note in ``reason``), never a stopped layer. This module is read by ``engine.columns``, which
the command line imports: the numerical modules that load scipy or pandas (``fit``,
``estimators``, ``spectrum.vectors``) are imported when a diagnostic runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..spectrum import (
    MPFitError,
    detx,
    ecs_self_consistent,
    eigenvalues_many,
    mp_fit,
    randomized_esd,
)
from ..util.errors import first_line, one_line
from ..util.rng import layer_seed
from .options import COMPARE_TAGS

# when a stage's diagnostics run (engine.layer): on the power-law fit of a fitted row (its
# tests), on a row whose spectrum is not all zero, on every row, once per layer after its rows
STAGES = ("tests", "spectrum", "row", "layer")


@dataclass(eq=False)
class Row:
    """One row being computed: what a diagnostic reads, and where it writes.

    ``values``: the row's columns so far (a diagnostic adds its own). ``evals``: its ESD, scaled.
    ``fit``: the reported fit (at the ``tests`` stage: the power-law fit the tests run on; None
    when the fit failed). ``key``: (layer_id, slice_id), the seed of its bootstraps. ``mats``:
    the layer's matrices as loaded, ``oriented``: as WeightWatcher holds them (None when not
    kept). ``scale``: the factor on its eigenvalues. ``rng``: the layer's generator (None unless
    a diagnostic draws). ``mp``, ``randomized``: set by the MP fit and the randomized ESD.
    """

    values: dict
    evals: Any
    o: Any
    key: tuple = ()
    fit: Any = None
    ref: Any = None
    plan: Any = None
    mats: list | None = None
    oriented: list | None = None
    scale: float = 1.0
    rng: Any = None
    backend: Any = None
    mp: Any = None
    randomized: Any = None

    def matrices(self, oriented: bool = False) -> list:
        """The row's matrices (the layer's, or its slice's); ValueError when none were kept."""
        mats = self.oriented if oriented else self.mats
        if mats is None:
            raise ValueError("the layer's matrices were not kept")
        sid = self.values.get("slice_id")
        return mats if sid is None else [mats[int(sid)]]


@dataclass(eq=False)
class Layer:
    """One layer after its rows: ``rows`` (its :class:`~tailscope.engine.layer.RowResult`\\ s),
    ``mats`` (its matrices as loaded), ``plan``, ``o``, ``scale`` (the factor on its
    eigenvalues)."""

    rows: list
    mats: list | None
    plan: Any
    o: Any
    scale: float = 1.0


@dataclass(frozen=True)
class Diagnostic:
    """One diagnostic.

    ``name``: what it is called here. ``option``: the analysis option that turns it on (a name
    in ``OPTIONS``; on when its value is truthy). ``groups``: the column groups it fills (keys of
    ``GROUP_WHEN``). ``compute``: the computation, a function of a :class:`Row` (a
    :class:`Layer` at the ``layer`` stage) that writes its columns. ``stage``: when it runs (one
    of ``STAGES``). ``present``: (options, group) -> whether the group is in ``details``
    (default: the option is on). ``needs_matrices``: it reads the layer's matrices, which are
    then kept after the eigensolve. ``draws``: it draws from the layer's random generator.
    ``params``: the other options it reads.
    """

    name: str
    option: str
    groups: tuple[str, ...]
    compute: Callable[[Any], None]
    stage: str = "spectrum"
    present: Callable[[Any, str], bool] | None = None
    needs_matrices: bool = False
    draws: bool = False
    params: tuple[str, ...] = ()

    def on(self, o) -> bool:
        """Whether the options ask for it."""
        return bool(getattr(o, self.option))

    def shows(self, o, group: str) -> bool:
        """Whether its column group ``group`` is in ``details`` for these options."""
        return self.present(o, group) if self.present else self.on(o)


def add_reason(values: dict, *notes: str) -> None:
    """Append notes to a row's ``reason`` in place, '; '-joined after what it already says: a
    diagnostic that cannot be computed leaves NaN in its columns and says why here, and the rest
    of the row stands."""
    notes = tuple(n for n in notes if n)
    if notes:
        old = values.get("reason") or ""
        values["reason"] = "; ".join(((old,) if old else ()) + notes)


def _why(exc: Exception) -> str:
    """A ValueError's text (the estimators' own reasons); the type too for anything else."""
    return first_line(exc) if isinstance(exc, ValueError) else one_line(exc)


# --- the tests of the power-law fit ---------------------------------------------------------------
def compare_columns(r: Row) -> None:
    """R_<tag>, p_<tag>: the power law against each alternative on its tail (R > 0 favours the
    power law)."""
    for name in r.o.compare_names():
        tag = COMPARE_TAGS[name]
        cmp = r.fit.compare(name)
        r.values[f"R_{tag}"], r.values[f"p_{tag}"] = cmp.R, cmp.p


def gof_column(r: Row) -> None:
    """p_gof: the CSN bootstrap p-value of the power law, seeded per layer."""
    r.values["p_gof"] = r.fit.goodness_of_fit(int(r.o.gof), seed=layer_seed(r.o.seed, *r.key),
                                              n_jobs=1).p_value


def _compare_present(o, group: str) -> bool:
    return group.split(":", 1)[1] in o.compare_tags()


# --- random-matrix diagnostics --------------------------------------------------------------------
def mp_columns(r: Row) -> None:
    """The Marchenko-Pastur fit of the row's bulk; ``mp_reason`` says why there is none."""
    try:
        r.mp = mp_fit(r.evals, r.plan.N, r.plan.M)
        r.values.update(r.mp.as_row(), mp_reason="")
    except MPFitError as exc:
        r.values["mp_reason"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - the layer's other columns stand
        r.values["mp_reason"] = one_line(exc)


def randomized_columns(r: Row) -> None:
    """The ESD of the row's element-shuffled matrices (WeightWatcher's orientation), drawn from
    the layer's generator; ``rand_reason`` says why there is none."""
    o = r.o
    try:
        mats = r.matrices(oriented=True)
        rand = randomized_esd(
            mats, r.evals, r.plan.N, r.plan.M, r.rng, scale=r.scale,
            eigvals=lambda w: eigenvalues_many([w], r.backend, o.method)[0])
        r.values.update(rand.as_row(), rand_reason=rand.mp_reason and
                        f"randomized MP fit: {rand.mp_reason}")
        r.values["num_traps"] = r.values.get("rand_num_spikes", math.nan)
        r.randomized = rand
    except Exception as exc:  # noqa: BLE001 - the layer's other columns stand
        r.randomized = None
        r.values["rand_reason"] = one_line(exc)


def detx_columns(r: Row) -> None:
    """WeightWatcher's det X = 1 tail and ERG_gap (NaN when it cannot be computed)."""
    try:
        d = detx(r.evals)
    except Exception:  # noqa: BLE001 - NaN rather than a stopped layer
        d = {"detX_num": math.nan, "detX_val": math.nan, "detX_val_unrescaled": math.nan}
    pl = r.values.get("num_pl_spikes")
    r.values.update(d, num_ERG_spikes=d["detX_num"],
                    ERG_gap=d["detX_num"] - pl if pl is not None and pl == pl else math.nan)


# --- alpha's uncertainty and the SETOL metrics -----------------------------------------------------
def _fitted(r: Row) -> bool:
    return r.values.get("status") == "success" and r.fit is not None


def alpha_ci_columns(r: Row) -> None:
    """A bootstrap interval of the reported power-law alpha, seeded per layer (NaN without a
    power-law fit, and a note in ``reason``)."""
    from ..fit import alpha_interval  # scipy: loaded when computed

    o, fit = r.o, r.fit
    r.values.update(alpha_ci_low=math.nan, alpha_ci_high=math.nan)
    note = ""
    if _fitted(r) and not hasattr(fit, "Lambda"):
        try:
            lo, hi = alpha_interval(fit, int(o.alpha_ci), float(o.alpha_ci_level),
                                    seed=layer_seed(o.seed, *r.key))
            r.values.update(alpha_ci_low=lo, alpha_ci_high=hi)
        except Exception as exc:  # noqa: BLE001 - the fit stands
            note = f"alpha_ci: {one_line(exc)}"
    elif _fitted(r):
        note = "alpha_ci: the interval is of the power law's alpha (not with fit='TPL')"
    add_reason(r.values, note)


def setol_columns(r: Row) -> None:
    """SETOL's metrics; the det X = 1 tail is the row's own when ``detX`` computed it. A failed
    fit gives NaN in the columns that need it; a failed computation NaN and a note."""
    row, evals = r.values, r.evals
    notes = []
    ok = _fitted(r)
    alpha = row.get("alpha", math.nan) if ok else math.nan
    pl = row.get("num_pl_spikes", math.nan) if ok else math.nan
    try:
        d = row if "detX_val" in row else detx(evals)
    except Exception as exc:  # noqa: BLE001
        d = {"detX_num": math.nan, "detX_val": math.nan}
        notes.append(f"setol detX: {one_line(exc)}")
    num = d["detX_num"]
    try:
        ref = None if num != num else int(min(max(num, 1), np.count_nonzero(evals > 0)))
        sc = ecs_self_consistent(evals, reference_rank=ref)
    except Exception as exc:  # noqa: BLE001
        sc = math.nan
        notes.append(f"setol ECS: {one_line(exc)}")
    row.update(
        delta_lambda_min=row["xmin"] - d["detX_val"] if ok else math.nan,
        alpha_minus_2=alpha - 2.0,
        ecs_rank=(int(pl) + int(num)) // 2 if ok and num == num else math.nan,
        ecs_num_sc=sc,
        ecs_rank_sc=(int(pl) + int(sc)) // 2 if ok and sc == sc else math.nan)
    add_reason(row, *notes)


# --- the research code's estimators ---------------------------------------------------------------
def hill_column(r: Row) -> None:
    """``alpha_hill`` (:mod:`tailscope.engine.estimators`); NaN and a note when it cannot be."""
    from ..fit import hill_alpha  # scipy: loaded when computed
    from .estimators import numerical_zeros

    try:
        if r.evals is None:
            raise ValueError("no spectrum")
        r.values["alpha_hill"] = hill_alpha(numerical_zeros(r.evals))
    except Exception as exc:  # noqa: BLE001 - NaN and the reason, never a stopped layer
        r.values["alpha_hill"] = math.nan
        add_reason(r.values, f"alpha_hill: {_why(exc)}")


def farms_column(r: Row) -> None:
    """``alpha_farms`` of the row's matrices as loaded; NaN and a note when it cannot be."""
    from .estimators import farms_estimate  # scipy: loaded when computed

    try:
        alpha, note = farms_estimate(r.matrices(), r.plan.layer_type,
                                     keras=getattr(r.ref, "layout", "") == "keras")
        r.values["alpha_farms"] = alpha
        add_reason(r.values, note and f"alpha_farms: {note}")
    except Exception as exc:  # noqa: BLE001
        r.values["alpha_farms"] = math.nan
        add_reason(r.values, f"alpha_farms: {_why(exc)}")


# --- eigenvectors (once per layer) ----------------------------------------------------------------
def vector_columns(layer: Layer) -> None:
    """The eigenvector localization columns of a layer's fitted rows (tail: its num_pl_spikes
    largest eigenvalues; the eigenvectors come from the CPU, whatever the device)."""
    from ..spectrum.vectors import eigenvectors, vector_summary  # pandas: loaded when computed

    try:
        pairs = [eigenvectors(m) for m in layer.mats]
    except Exception as exc:  # noqa: BLE001 - the fit stands; only the vector columns are missing
        for r in layer.rows:
            add_reason(r.values, f"vectors: {one_line(exc)}")
        return
    for r in layer.rows:
        v = r.values
        if v.get("status") != "success":
            continue
        sid = v.get("slice_id")
        group = pairs if sid is None else [pairs[int(sid)]]
        evals = np.concatenate([ev * layer.scale for ev, _ in group])
        v.update(vector_summary(evals, [vec for _, vec in group], n_tail=v["num_pl_spikes"]))


# --- the declaration ------------------------------------------------------------------------------
DIAGNOSTICS: tuple[Diagnostic, ...] = (
    Diagnostic("compare", "compare",
               tuple(f"compare:{t}" for t in dict.fromkeys(COMPARE_TAGS.values())),
               compare_columns, stage="tests", present=_compare_present),
    Diagnostic("gof", "gof", ("gof",), gof_column, stage="tests", params=("seed",)),
    Diagnostic("mp", "mp_fit", ("mp",), mp_columns),
    Diagnostic("rand", "randomize", ("rand",), randomized_columns, needs_matrices=True,
               draws=True, params=("seed",)),
    Diagnostic("detX", "detX", ("detX",), detx_columns),
    Diagnostic("alpha_ci", "alpha_ci", ("alpha_ci",), alpha_ci_columns,
               params=("alpha_ci_level", "seed")),
    Diagnostic("setol", "setol", ("setol",), setol_columns),
    Diagnostic("hill", "hill", ("hill",), hill_column, stage="row"),
    Diagnostic("farms", "farms", ("farms",), farms_column, stage="row", needs_matrices=True),
    Diagnostic("vectors", "vectors", ("vectors",), vector_columns, stage="layer",
               needs_matrices=True),
)

BY_NAME: dict[str, Diagnostic] = {d.name: d for d in DIAGNOSTICS}
# column group -> the analysis option that adds it
GROUP_OPTION: dict[str, str] = {g: d.option for d in DIAGNOSTICS for g in d.groups}


def asked(o, stage: str) -> tuple[Diagnostic, ...]:
    """The diagnostics of ``stage`` the options ask for, in order."""
    return tuple(d for d in DIAGNOSTICS if d.stage == stage and d.on(o))


def needs_matrices(o) -> bool:
    """Whether a diagnostic asked for reads the layer's matrices (kept after the eigensolve)."""
    return any(d.needs_matrices and d.on(o) for d in DIAGNOSTICS)


def draws(o) -> bool:
    """Whether a diagnostic asked for draws from the layer's random generator."""
    return any(d.draws and d.on(o) for d in DIAGNOSTICS)
