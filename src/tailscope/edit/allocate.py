"""The one allocation core under every budgeted decision taken from the spectra: a metric vector
(one value per layer, read from an analysis), a budget, a rule and a cap.

``RULES`` declares the rules once; each published allocator is one of them on its own metric:

=========  ==========================================================  =========================
rule       what it does with the metric vector m and the budget         used by
=========  ==========================================================  =========================
linear     m mapped onto [1 - eps, 1 + eps], scaled so that the         ``allocate_sparsity``
           parameter-weighted mean equals the budget; layers past the   (AlphaPruning)
           cap held there and the rest scaled again
power      n_i = round(T m_i^beta / sum m^beta), then adjusted by one   ``allocate_experts``
           unit at a time (largest remainder) to sum exactly to T       (AlphaLoRA)
milp       one choice per layer from a cost table, minimising the       ``allocate_bits``
           total cost subject to a (weighted) budget: an exact integer  (AlphaQ)
           program (``scipy.optimize.milp``, zero optimality gap)
top        the top ``budget`` percent of layers by m within each group  ``select_trainable``
                                                                        (Spectrum)
=========  ==========================================================  =========================

``layer_frame`` and ``layer_metric`` read the metric vector from an analysis (or its ``details``
DataFrame) the same way for all of them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..engine.columns import BY_NAME as COLUMN_BY_NAME
from ..engine.diagnostics import GROUP_OPTION
from ..engine.options import BY_NAME as OPTION_BY_NAME
from ..sources.moe import stack_of

# a transformer block: the name up to its first numbered component after a named one
# ('encoder.layer.3', 'model.layers.3', 'transformer.h.3', 'h.3', 'blocks.3')
_BLOCK = re.compile(r"^((?:[^.]*[^.\d][^.]*\.)+\d+)\.")


def block_of(name: str) -> str | None:
    """The transformer block a layer belongs to: its name up to the first numbered component
    that follows a named one ('encoder.layer.3.attention.self.query.weight' -> 'encoder.layer.3',
    'model.layers.3.mlp.up_proj.weight' -> 'model.layers.3', 'h.3.attn.c_attn.weight' -> 'h.3');
    None for a layer outside any block ('embeddings.word_embeddings.weight', 'lm_head.weight',
    '0.weight' of a plain ``nn.Sequential``)."""
    m = _BLOCK.match(name)
    return m.group(1) if m else None


def metric_options(metric: str) -> dict:
    """The :func:`tailscope.analyze` options that add the column ``metric`` ({'hill': True} for
    'alpha_hill'); {} for a column every analysis has (or an unknown name)."""
    col = COLUMN_BY_NAME.get(metric)
    if col is None:
        return {}
    option = GROUP_OPTION.get(col.group)
    return {option: True} if option in OPTION_BY_NAME else {}


def needs(metric: str) -> str:
    """'; analyze with x=True' for a metric whose column needs an option ('' otherwise)."""
    need = metric_options(metric)
    return "; analyze with " + ", ".join(f"{k}=True" for k in need) if need else ""


def layer_frame(analysis) -> pd.DataFrame:
    """The ``details`` of an :class:`~tailscope.Analysis` (or the DataFrame itself), checked to
    hold one row per tensor with its name and shape. The experts of a fused Mixture-of-Experts
    stack are rows of their own, named by ``sources.moe`` ('tensor[e3]', 'tensor[e3.gate]'; see
    :func:`tensor_of`)."""
    details = analysis if isinstance(analysis, pd.DataFrame) else getattr(analysis, "details",
                                                                           None)
    if not isinstance(details, pd.DataFrame):
        raise ValueError("analysis must be a tailscope Analysis or its details DataFrame; got "
                         f"{type(analysis).__name__}")
    for col in ("name", "N", "M", "rf"):
        if col not in details.columns:
            raise ValueError(f"the analysis has no {col!r} column")
    if details["name"].duplicated().any():
        dup = details["name"][details["name"].duplicated()].iloc[0]
        raise ValueError(f"layer {dup!r} has several rows: allocate from a pooled analysis "
                         "(pool=True), one row per tensor")
    return details


def tensor_of(key: str) -> str:
    """The tensor an allocation's key names: the key itself, or for one expert of a fused
    stack ('tensor[e3.gate]') the stack."""
    return stack_of(key)


@dataclass(frozen=True)
class Metric:
    """The metric vector of an analysis: per layer its name, metric value (NaN where missing)
    and parameter count P = N * M * rf."""

    names: np.ndarray
    values: np.ndarray
    params: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        """Layers with a finite metric and a positive parameter count."""
        return np.isfinite(self.values) & np.isfinite(self.params) & (self.params > 0)


def layer_metric(analysis, metric: str) -> Metric:
    """The column ``metric`` of an analysis as a :class:`Metric` (a one-line ValueError naming the
    option that adds it when the analysis lacks it)."""
    details = layer_frame(analysis)
    if not isinstance(metric, str) or metric not in details.columns:
        raise ValueError(f"the analysis has no {metric!r} column{needs(str(metric))}")
    values = pd.to_numeric(details[metric], errors="coerce").to_numpy(dtype=np.float64)
    params = (details["N"].to_numpy(np.float64) * details["M"].to_numpy(np.float64)
              * details["rf"].to_numpy(np.float64))
    out = Metric(details["name"].astype(str).to_numpy(), values, params)
    if not out.ok.any():
        raise ValueError(f"no layer has a finite {metric}{needs(metric)}")
    return out


# --- the rules -----------------------------------------------------------------------------------
def linear_rule(m: np.ndarray, budget: float, *, params: np.ndarray, cap: float,
                eps: float) -> tuple[np.ndarray, int]:
    """AlphaPruning's ``ww_sparsity``: r = (m - min) / (max - min) * 2 eps + 1 - eps (all 1 when
    every m is equal), s = r c with sum(P s) = budget * sum(P); a layer that would pass ``cap`` is
    held there and c is solved again over the others. Returns (values, layers held at cap)."""
    lo, hi = m.min(), m.max()
    ratios = (np.full(m.size, 1.0) if hi == lo
              else (m - lo) / (hi - lo) * ((1 + eps) - (1 - eps)) + (1 - eps))
    total = budget * params.sum()
    capped = np.zeros(ratios.size, dtype=bool)
    while True:
        free = ~capped
        if not free.any():  # cap == budget: every layer at it
            return np.full(ratios.size, cap), int(capped.sum())
        c = (total - cap * params[capped].sum()) / (params[free] * ratios[free]).sum()
        out = np.where(capped, cap, ratios * c)
        over = free & (out > cap)
        if not over.any():
            return out, int(capped.sum())
        capped |= over


def power_rule(m: np.ndarray, budget: int, *, beta: float, floor: int = 1) -> np.ndarray:
    """AlphaLoRA's expert counts: w = m^beta / sum(m^beta), n = round(budget * w) (numpy's round
    half to even), then while sum(n) differs from the budget one unit is moved at a time: added
    to the layer with the largest budget * w - n (taken from the one with the smallest, never
    below ``floor``); ties go to the first layer."""
    w = m ** beta
    w = w / w.sum()
    ideal = budget * w
    n = np.maximum(np.round(ideal).astype(np.int64), floor)
    while n.sum() != budget:
        gap = ideal - n
        if n.sum() < budget:
            n[int(np.argmax(gap))] += 1
        else:
            room = np.where(n > floor, gap, np.inf)
            if not np.isfinite(room).any():
                raise ValueError(f"a budget of {budget} cannot give {m.size} layers at least "
                                 f"{floor} each")
            n[int(np.argmin(room))] -= 1
    return n


def milp_rule(cost: np.ndarray, budget: float, *, choices: np.ndarray,
              weights: np.ndarray) -> np.ndarray:
    """The exact minimum of sum_l cost[l, c_l] over one choice c_l per layer subject to
    sum_l weights[l] * choices[c_l] <= budget * sum(weights): a binary integer program solved by
    HiGHS (``scipy.optimize.milp``) with zero relative optimality gap. Returns the chosen index
    per layer.

    The costs are rescaled (the optimum does not change) so that their lower bound, the sum of
    each layer's cheapest choice, is 1e6: HiGHS' absolute gap (1e-6) is then 1e-12 of the
    objective. A solution that passes the budget by HiGHS' feasibility tolerance is solved again
    under a budget lowered by that excess, so the returned choice always meets the budget."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_array

    n, k = cost.shape
    if not np.all(np.isfinite(cost)) or (cost < 0).any():
        raise ValueError("the costs must be finite and non-negative")
    floor = float(cost.min(axis=1).sum())
    scale = 1e6 / floor if floor > 0 else 1e6 / (float(cost.max()) or 1.0)
    c = (cost * scale).ravel()
    rows = np.repeat(np.arange(n), k)
    one = coo_array((np.ones(n * k), (rows, np.arange(n * k))), shape=(n, n * k))
    share = weights / float(weights.sum())
    knap = np.outer(share, choices).ravel()[None, :]
    if choices.min() > budget:
        raise ValueError(f"no allocation meets the budget {budget}: the smallest choice is "
                         f"{choices.min():g}")
    limit = budget
    for _ in range(4):
        res = milp(c, integrality=np.ones(n * k), bounds=Bounds(0, 1),
                   constraints=[LinearConstraint(one, 1, 1),
                                LinearConstraint(knap, -np.inf, limit)],
                   options={"mip_rel_gap": 0.0, "presolve": True})
        if res.x is None:
            raise ValueError(f"no allocation meets the budget {budget} ({res.message})")
        pick = np.argmax(res.x.reshape(n, k), axis=1)
        used = float(np.sum(weights * choices[pick]) / weights.sum())
        if used <= budget * (1 + 1e-12):
            return pick
        limit -= (used - budget) + 1e-12
    raise ValueError(f"the solver did not meet the budget {budget} (mean {used})")


def top_rule(m: np.ndarray, budget: float, *, groups: np.ndarray) -> np.ndarray:
    """Spectrum's selection: within each group the int(len * budget / 100) layers of highest m
    (a stable sort by descending m, as Python's ``sorted(..., reverse=True)``). Returns a mask."""
    out = np.zeros(m.size, dtype=bool)
    for g in dict.fromkeys(groups.tolist()):
        idx = np.flatnonzero(groups == g)
        order = sorted(idx.tolist(), key=lambda i: m[i], reverse=True)
        out[order[:int(len(idx) * budget / 100)]] = True
    return out


@dataclass(frozen=True)
class Rule:
    """An allocation rule: its name, what it does, and the function that applies it."""

    name: str
    doc: str
    apply: Callable


RULES = {r.name: r for r in (
    Rule("linear", "metric mapped linearly, parameter-weighted mean = budget, capped",
         linear_rule),
    Rule("power", "counts proportional to metric^beta, summing exactly to the budget",
         power_rule),
    Rule("milp", "one choice per layer minimising a cost table under a (weighted) budget, exact",
         milp_rule),
    Rule("top", "the top budget% of layers by metric within each group", top_rule),
)}


def allocate(metric: np.ndarray, budget: float, rule: str, **params):
    """Apply the allocation rule ``rule`` (a key of ``RULES``) to the metric vector ``metric``
    (only layers with a finite metric: the callers drop the others) under ``budget``; the rule's
    own parameters (cap, eps, beta, choices, weights, groups) as keywords."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    return RULES[rule].apply(np.asarray(metric, dtype=np.float64), budget, **params)


def block_means(names: np.ndarray, values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Each layer's metric replaced by the mean over its block's layers that have one (a layer
    outside any block is its own block)."""
    keys = [block_of(n) or n for n in names]
    means = pd.Series(values[ok]).groupby(np.asarray(keys, dtype=object)[ok]).mean()
    return np.array([means.get(k, math.nan) for k in keys])


__all__ = ["RULES", "Metric", "Rule", "allocate", "block_means", "block_of", "layer_frame",
           "layer_metric", "linear_rule", "metric_options", "tensor_of", "milp_rule", "needs", "power_rule",
           "top_rule"]
