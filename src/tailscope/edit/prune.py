"""Alpha-guided pruning (AlphaPruning, Lu et al., NeurIPS 2024): per-layer sparsities from a
layer metric, and magnitude pruning to them.

``allocate_sparsity`` is the AlphaPruning repository's ``ww_sparsity`` (haiquanlu/AlphaPruning,
lib/prune.py): the metric of each layer (optionally averaged over its transformer block) is mapped
linearly onto [1 - eps, 1 + eps] (higher metric, pruned more) and the ratios are scaled so that the
parameter-weighted mean sparsity equals the target. ``prune`` zeroes the smallest |w| of each layer
to its sparsity and returns an :class:`~tailscope.edit.EditedModel`; the allocation is a plain
pandas Series, so it can equally drive Wanda or SparseGPT (which need activations) outside
tailscope.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..engine.options import make_options
from ..engine.run import Edit, Work, recipe, run
from ..util.errors import one_line
from .allocate import allocate, block_means, block_of, layer_metric, metric_options
from .model import EditedModel, edited_model

PRUNE_METHODS = ("magnitude",)
DETAIL_COLUMNS = ["layer_id", "name", "shape", "numel", "sparsity", "pruned", "zeros", "status",
                  "reason"]


def allocate_sparsity(analysis, target: float = 0.7, eps: float = 0.3,
                      metric: str = "alpha_hill", block_wise: bool = True, *,
                      blocks_only: bool = True, max_sparsity: float = 1.0) -> pd.Series:
    """Per-layer sparsities from a layer metric: AlphaPruning's ``ww_sparsity``.

    Parameters
    ----------
    analysis : Analysis or its ``details`` DataFrame
        One row per layer (a pooled analysis). A DataFrame (a subset of ``details``) allocates
        over those layers only.
    target : float in [0, 1]
        The parameter-weighted mean sparsity, sum(P_i s_i) / sum(P_i) with P_i = N * M * rf, the
        layer's weight count.
    eps : float in [0, 1)
        The metric's range is mapped linearly onto [1 - eps, 1 + eps] before scaling (eps < 1:
        at 1 the lowest layer could never be pruned and a high target could not be met).
    metric : str
        A numeric column of the analysis; higher values are pruned more. 'alpha_hill' (the
        default; needs ``analyze(hill=True)``) is the research code's PL_Alpha_Hill.
    block_wise : bool
        Replace each layer's metric by the mean over its transformer block (see
        :func:`block_of`; the reference's 'block_wise' mapping). A layer outside any block
        (embeddings, pooler, lm_head, the layers of a plain MLP) is its own block, so for a
        model without blocks block_wise=True is per layer.
    blocks_only : bool
        When some layers are in numbered blocks, allocate to those only, as the reference
        (which prunes the linear layers of ``model.layers``, never embeddings or lm_head): the
        others get NaN and stay dense. False: every layer with the metric is allocated. A model
        without blocks (a plain MLP) allocates to every layer either way.
    max_sparsity : float in [target, 1]
        No layer is pruned more: a layer the formula would give more is held there and the
        others are scaled again (1, the default, changes the reference only where it exceeds 1).

    Returns
    -------
    pandas.Series
        Sparsity per layer, indexed by the layer's tensor name (the analysis' ``name``), in the
        analysis' order. A layer whose metric is NaN (failed fit) or that ``blocks_only`` leaves
        out gets NaN and is not in the allocation (``prune`` leaves it unchanged). ``.attrs``
        holds the target, eps, metric, block_wise, blocks_only, max_sparsity and ``capped`` (how
        many layers were held at max_sparsity; at 1 such a layer loses every weight: typically a
        small layer with the highest alpha next to large ones, or a tiny classifier, which the
        reference leaves out as it leaves out lm_head; lower eps or max_sparsity then).

    Notes
    -----
    With m_i the (block-averaged) metric: r_i = (m_i - min m) / (max m - min m) * 2 eps + 1 - eps,
    s_i = r_i * target * sum P / sum(P r). This is the reference exactly while every s_i <= 1.
    The reference does not clip (its magnitude pruning then indexes past the end of the sorted
    weights); here a layer that would exceed ``max_sparsity`` is held there and the scale is
    solved again over the others, so the weighted mean stays the target. With eps < 1 no
    sparsity is negative. When every metric is equal (max = min; the reference divides 0 by 0)
    every layer gets the target.

    Examples
    --------
    >>> import pandas as pd
    >>> from tailscope import allocate_sparsity
    >>> d = pd.DataFrame({"name": ["a.weight", "b.weight"], "N": 100, "M": 100, "rf": 1,
    ...                   "alpha_hill": [2.0, 4.0]})
    >>> allocate_sparsity(d, target=0.5, eps=0.2).round(6).tolist()
    [0.4, 0.6]
    """
    if isinstance(target, bool) or not isinstance(target, (int, float)) \
            or not 0.0 <= target <= 1.0:
        raise ValueError(f"target must be a number in [0, 1]; got {target!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must be a number in [0, 1); got {eps!r}")
    if isinstance(max_sparsity, bool) or not isinstance(max_sparsity, (int, float)) \
            or not target <= max_sparsity <= 1.0:
        raise ValueError(f"max_sparsity must be a number in [target, 1] = [{target}, 1]; got "
                         f"{max_sparsity!r}")
    for flag, value in (("block_wise", block_wise), ("blocks_only", blocks_only)):
        if not isinstance(value, bool):
            raise ValueError(f"{flag} must be True or False; got {value!r}")
    vec = layer_metric(analysis, metric)
    names, values, params, ok = vec.names, vec.values, vec.params, vec.ok
    blocks = [block_of(n) for n in names]
    if blocks_only and any(b is not None for b in blocks):
        ok &= np.array([b is not None for b in blocks])
    if block_wise:
        values = block_means(names, values, ok)
    sparsity, capped = allocate(values[ok], float(target), "linear", params=params[ok],
                                cap=float(max_sparsity), eps=float(eps))
    out = np.full(len(names), math.nan)
    out[ok] = sparsity
    series = pd.Series(out, index=pd.Index(names, name="name"), name="sparsity")
    series.attrs.update(target=float(target), eps=float(eps), metric=metric,
                        block_wise=block_wise, blocks_only=blocks_only,
                        max_sparsity=float(max_sparsity), capped=capped)
    return series


# --- magnitude pruning -------------------------------------------------------------------------
def magnitude_mask(w: np.ndarray, k: int) -> np.ndarray:
    """The boolean mask of the k smallest |w| (flattened, C order); ties at the threshold are
    taken in index order, exactly as a stable argsort's first k. O(n): one partition."""
    a = np.abs(np.asarray(w)).ravel()
    mask = np.zeros(a.size, dtype=bool)
    if k <= 0:
        return mask.reshape(np.shape(w))
    if k >= a.size:
        return ~mask.reshape(np.shape(w))
    t = np.partition(a, k - 1)[k - 1]
    mask = a < t
    need = k - int(mask.sum())
    mask[np.flatnonzero(a == t)[:need]] = True
    return mask.reshape(np.shape(w))


def _count(sparsity: float, numel: int) -> int:
    """The number of weights a layer of ``numel`` loses: round(sparsity * numel)."""
    return int(min(numel, max(0, round(sparsity * numel))))


def _wanted(sparsity) -> dict[str, float] | float:
    if isinstance(sparsity, bool):
        raise ValueError(f"sparsity must be a number in [0, 1] or a mapping name -> sparsity; "
                         f"got {sparsity!r}")
    if isinstance(sparsity, (int, float, np.floating, np.integer)):
        s = float(sparsity)
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"sparsity must be in [0, 1]; got {sparsity!r}")
        return s
    if isinstance(sparsity, pd.Series):
        sparsity = sparsity.to_dict()
    if not isinstance(sparsity, Mapping):
        raise ValueError("sparsity must be a number in [0, 1] or a mapping name -> sparsity "
                         f"(allocate_sparsity's Series); got {type(sparsity).__name__}")
    out = {}
    for key, value in sparsity.items():
        name = str(key)
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"sparsity of {key!r} is not a number: {value!r}") from None
        if not (math.isnan(v) or 0.0 <= v <= 1.0):
            raise ValueError(f"sparsity of {key!r} must be in [0, 1]; got {value!r}")
        out[name] = v
    return out


def prune(source, sparsity, method: str = "magnitude", *, layers=None, base_model=None,
          peft=False, trust_pickle: bool = False, progress=None, scheduler=None,
          **options) -> EditedModel:
    """Magnitude pruning, layer by layer: the smallest ``|w|`` of each layer set to 0.

    Parameters
    ----------
    source : path, torch.nn.Module, state dict or array
        Anything :func:`tailscope.analyze` reads; it is never modified.
    sparsity : float or mapping
        A number in [0, 1]: every layer ``analyze`` would analyse (with ``**options``: layers,
        min_evals, ...) loses that fraction. A mapping tensor name (or module name) -> sparsity,
        such as :func:`allocate_sparsity`'s Series: those tensors only (NaN: left unchanged).
    method : 'magnitude'
        Wanda and SparseGPT need activations (calibration data), which tailscope does not have;
        pass the allocation's values to them as their per-layer ratios.
    base_model : path or model, optional
        Prune the fine-tune W - W_base: its smallest ``|W - W_base|`` go back to the base weights;
        the result is the fine-tuned model so edited (never the delta itself). The allocation
        then comes from ``analyze(..., base_model=...)``.
    peft, trust_pickle, progress, scheduler
        As :func:`tailscope.smooth` (``peft`` is refused; ``jobs=`` runs layers in threads).

    Returns
    -------
    EditedModel
        ``.weights`` (every tensor; pruned ones are new arrays in the original dtype, the others
        the arrays read), ``.details`` (per layer: numel, sparsity, pruned = round(sparsity *
        numel), zeros after pruning, status, reason), ``.save(path)``, ``.to_state_dict()``.

    Notes
    -----
    The pruned weights are exactly the round(s * numel) smallest ``|w|`` of the whole tensor (all
    slices of a conv kernel together); ties at the threshold go to the lower flat (C-order)
    index. A layer that cannot be pruned (not floating point, NaN weights) is left unchanged
    with its reason; the others are pruned. A tensor split for analysis (gates,
    q/k/v, heads) is pruned part by part, as the analysis' rows name them, and joined back.
    """
    if method != "magnitude":
        if isinstance(method, str) and method.lower() in ("wanda", "sparsegpt"):
            raise ValueError(f"method {method!r} needs activations (calibration data), which "
                             "tailscope does not have: pass allocate_sparsity's values to "
                             f"{method} as its per-layer ratios; tailscope prunes by magnitude")
        raise ValueError(f"method must be 'magnitude'; got {method!r}")
    o = make_options(layers=layers, **options)
    rec = recipe(source, base_model=base_model, peft=peft, trust_pickle=trust_pickle,
                 feature="prune", derived=("base_model",))
    wanted = _wanted(sparsity)
    select = None if isinstance(wanted, float) else Named(wanted)
    done = run(rec, Magnitude(wanted), o, scheduler=scheduler, progress=progress, select=select)
    return edited_model(done, DETAIL_COLUMNS)


@dataclass(frozen=True)
class Named:
    """The layers a sparsity mapping names (any tensor it names, whatever the plan says)."""

    sparsity: dict

    def __call__(self, ref, plan, reason: str) -> str:
        return "" if _key(ref, self.sparsity) is not None else \
            reason or "not in the sparsity mapping"

    def check(self, refs: list) -> None:
        """Every name of the mapping is a tensor of the model (a module name means its
        '.weight')."""
        known = {r.name for r in refs} | {r.module for r in refs if r.name.endswith(".weight")}
        for key in self.sparsity:
            if key not in known:
                raise ValueError(f"sparsity names {key!r}, which is not a tensor of the model")


def _key(ref, sparsity: dict) -> str | None:
    """The key of ``sparsity`` that names ``ref``: its tensor name, else its module name."""
    if ref.name in sparsity:
        return ref.name
    if ref.name.endswith(".weight") and ref.module in sparsity:
        return ref.module
    return None


@dataclass(frozen=True)
class Magnitude(Work):
    """The work of ``prune``: one layer's smallest |w| set to 0."""

    sparsity: object  # a float for every planned layer, or a dict name -> float
    feature = "prune"
    edits = True

    def layer(self, ref, plan, o, backend) -> Edit:
        s = self.sparsity if isinstance(self.sparsity, float) else \
            self.sparsity[_key(ref, self.sparsity)]
        w = np.asarray(ref.load())
        row = {"layer_id": ref.index, "name": ref.name, "shape": "x".join(map(str, w.shape)),
               "numel": int(w.size), "sparsity": s, "pruned": 0,
               "zeros": int(np.count_nonzero(w == 0)) if w.dtype.kind in "fiuc" else 0,
               "status": "unchanged", "reason": ""}
        new = None
        try:
            if math.isnan(s):
                row["reason"] = "no sparsity allocated (NaN): left dense"
            else:
                new = _prune_row(row, w, s)
        except Exception as exc:  # noqa: BLE001 - one bad layer is left as it was, with why
            row.update(status="failed", reason=one_line(exc))
        return Edit((row,), new)

    def failed(self, ref, plan, exc) -> Edit:
        s = self.sparsity if isinstance(self.sparsity, float) else \
            self.sparsity.get(_key(ref, self.sparsity), math.nan)
        return Edit(({"layer_id": ref.index, "name": ref.name,
                      "shape": "x".join(map(str, ref.shape)), "numel": math.prod(ref.shape),
                      "sparsity": s, "pruned": 0, "zeros": 0, "status": "failed",
                      "reason": one_line(exc)},))


def _prune_row(row: dict, w: np.ndarray, s: float) -> np.ndarray | None:
    """The pruned tensor (None: none of it pruned), recorded in ``row`` (raises on bad
    weights)."""
    if w.dtype.kind != "f":
        raise ValueError(f"a {w.dtype} tensor is not floating-point weights")
    if np.isnan(w).any():
        raise ValueError("the weights hold NaN")
    k = _count(s, w.size)
    if k:
        new = np.array(w, copy=True)
        new[magnitude_mask(w, k)] = 0
        row.update(pruned=k, zeros=int(np.count_nonzero(new == 0)), status="edited")
        return new
    row["reason"] = "sparsity rounds to 0 weights"
    return None


__all__ = ["PRUNE_METHODS", "allocate_sparsity", "block_of", "magnitude_mask", "metric_options",
           "prune"]
