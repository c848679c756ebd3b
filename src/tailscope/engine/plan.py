"""Planning: which tensors of a source are analysed, as what, and why the others are not.

Nothing here reads a tensor: the plan comes from names and shapes (``sources.plan_layer``), so
``describe`` is instant on any model.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator

from ..sources import LayerPlan, LayerRef, Source, plan_layer
from ..sources.split import expand
from .options import LAYER_TYPES, layer_rules


def selector(layers) -> Callable[[LayerRef, LayerPlan], bool]:
    """The ``layers=`` option as a predicate on (ref, plan): ids, types or name globs (keep), or
    the same with '-' / negative ids (skip)."""
    keeps, skips = layer_rules(layers)
    if not keeps and not skips:
        return lambda ref, plan: True

    def hit(ref: LayerRef, plan: LayerPlan, rules) -> bool:
        for kind, value in rules:
            if kind == "id" and ref.index == value:
                return True
            if kind == "type" and plan.layer_type == value:
                return True
            if kind == "glob" and (fnmatch.fnmatchcase(ref.name, value)
                                   or fnmatch.fnmatchcase(ref.module, value)):
                return True
        return False

    if keeps:
        return lambda ref, plan: hit(ref, plan, keeps)
    return lambda ref, plan: not hit(ref, plan, skips)


def size_skip(plan: LayerPlan, o) -> str:
    """Why a layer is too small or too large for the options ('' when it is not)."""
    count = plan.num_evals if o.pool else plan.M
    if plan.M == 0:
        return f"an empty matrix ({plan.N} x 0)"
    if o.min_evals and count < o.min_evals:
        if plan.layer_type == "router":  # never dropped silently: it is a router
            return (f"a router ({plan.M} experts x {plan.N}): {count} eigenvalues < "
                    f"min_evals={o.min_evals}, too few for a tail fit (lower min_evals to fit "
                    "it)")
        return f"{count} eigenvalues < min_evals={o.min_evals}"
    if o.max_evals and count > o.max_evals:
        return f"{count} eigenvalues > max_evals={o.max_evals}"
    if o.max_N and plan.N > o.max_N:
        return f"N={plan.N} > max_N={o.max_N}"
    return ""


UNSELECTED = "not selected by layers="  # the reason of a tensor layers= leaves out
def planned(src: Source, o) -> Iterator[tuple[LayerRef, LayerPlan, str]]:
    """(ref, plan, reason) for every tensor (and every part of a split one), in model order;
    reason '' means it is analysed.

    Raises
    ------
    ValueError
        When ``layers=`` is given and selects none of the model's weight matrices (a glob
        written with other names than the model's must not pass as an empty success).
    """
    keep = selector(o.layers)
    rows = []
    for ref in expand(src, split=o.split, heads=o.heads):
        plan = plan_layer(ref)
        reason = plan.skip or ("" if keep(ref, plan) else UNSELECTED) or size_skip(plan, o)
        rows.append((ref, plan, reason))
    if any(layer_rules(o.layers)) and not any(reason != UNSELECTED
                                              for ref, plan, reason in rows if not plan.skip):
        raise ValueError(_selects_nothing(o.layers, [ref for ref, plan, _ in rows
                                                     if not plan.skip]))
    yield from rows


def _selects_nothing(layers, weights: list[LayerRef]) -> str:
    given = list(layers) if isinstance(layers, (list, tuple, set)) else [layers]
    if not weights:
        return f"layers={given!r}: the model has no weight matrix to select"
    shown = ", ".join(repr(r.name) for r in weights[:3])
    return (f"layers={given!r} selects none of the model's {len(weights)} weight matrices "
            f"(ids {weights[0].index}-{weights[-1].index}, names like {shown}; globs match "
            f"tensor or module names; types: {', '.join(LAYER_TYPES)})")
