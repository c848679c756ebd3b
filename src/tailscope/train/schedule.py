"""Layer-wise optimizer settings from the spectra: TempBalance learning rates and AlphaDecay
weight decays, as torch optimizer parameter groups.

Both research codes (YefanZhou/TempBalance ``tempbalance.py``, hed-ucas/AlphaDecay
``WeightDecayUnbalance.py``) do the same thing with a different knob:

1. the layers are the analysed weight matrices in model order; the first and the last are left
   out (``remove_first_layer``/``remove_last_layer``, both on by default); AlphaDecay also leaves
   out layers with fewer than 50 eigenvalues;
2. each remaining layer's metric (``PL_Alpha_Hill``, our ``alpha_hill``) is mapped linearly,
   ``np.interp(metric, [min, max], [low, high])`` (``tb_linear_map``): the layer with the smallest
   metric gets ``low``, the largest ``high``; when all metrics are equal every layer gets ``high``
   (that is what ``np.interp`` does with a zero-width range, and so what the research code does);
3. every parameter of such a layer's module (weight and bias) is one group with its value; a
   ``BatchNorm2d`` whose name with ``bn`` replaced by ``conv`` names a scheduled module follows it;
4. every other parameter (the first and last layers, norms, embeddings, layers whose fit failed)
   is one last group with the base value.

Each group also carries ``name`` (the module's name; ``None`` for the last group), ``follows``
(the scheduled module whose value it takes), ``metric``
(its metric value, NaN for the last group) and ``base_lr``/``base_weight_decay`` (the base value),
extra keys that torch keeps and :class:`tailscope.train.Monitor` reads to re-apply a schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# AlphaDecay's published defaults (its README and argparse: wd_min_ratio 0.6666, wd_max_ratio 3)
WD_MIN_RATIO = 0.6666
WD_MAX_RATIO = 3.0
MIN_EIGS = 50  # AlphaDecay's eigs_thresh


def tb_linear_map(scores, low: float, high: float) -> np.ndarray:
    """TempBalance's ``tb_linear_map``: ``np.interp(scores, [min, max], [low, high])``.

    The smallest score gets ``low``, the largest ``high``, linear between; all scores equal gives
    ``high`` for every one (``np.interp`` on a zero-width range)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s.copy()
    if not np.all(np.isfinite(s)):
        raise ValueError("tb_linear_map needs finite scores")
    return np.interp(s, [s.min(), s.max()], [float(low), float(high)])


def _check_positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def _analysis_and_module(source, module, metric: str, seed: int):
    """(Analysis, torch module) from a module, or from an Analysis plus its module."""
    from ..analysis import Analysis, analyze

    torch = _torch()
    if isinstance(source, Analysis):
        if module is None:
            raise ValueError("given an Analysis, pass the module it analysed too: module=model")
        analysis = source
    elif isinstance(source, torch.nn.Module):
        if module is not None and module is not source:
            raise ValueError("pass either a module, or an Analysis and module=, not two modules")
        module = source
        analysis = analyze(source, hill=True, seed=seed)
    else:
        raise ValueError("layer schedules need a torch.nn.Module or a tailscope Analysis, got "
                         f"{type(source).__name__}")
    if not isinstance(module, torch.nn.Module):
        raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if metric not in analysis.details.columns:
        raise ValueError(f"metric {metric!r} is not a column of this analysis "
                         "(analyze with hill=True for alpha_hill)")
    return analysis, module


def _torch():
    from ..util.optional import require

    return require("torch", "layer-wise training schedules")


def layer_metrics(analysis, module, metric: str = "alpha_hill", *, skip_first: bool = True,
                  skip_last: bool = True, min_eigs: int = 0) -> dict[str, float]:
    """The scheduled layers: module name -> metric value, in model order.

    The analysed layers (pooled rows) in model order, less the first and the last when asked (the
    first and last of the model's Linear/Conv modules, as the research code counts them),
    less layers with fewer than ``min_eigs`` eigenvalues and layers whose metric is not finite
    (a failed fit schedules nothing). Rows of one module (split q/k/v) are averaged."""
    d = analysis.details
    if "slice" in d.columns:
        d = d[d["slice"].isna()]
    d = d.sort_values("layer_id", kind="stable")
    names = [str(n) for n in d["name"]]
    modules = dict(module.named_modules())
    params = dict(module.named_parameters())
    layer_mod = []
    for n in names:
        owner = n.rsplit(".", 1)[0] if "." in n else ""
        layer_mod.append(owner if n in params and owner in modules else None)
    # first and last as the research code counts them: among the model's Linear/Conv layers
    # (and any other analysed module), even those too small for tailscope to analyse
    torch = _torch()
    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    analysed = {m for m in layer_mod if m is not None}
    order = [n for n, m in modules.items() if isinstance(m, kinds) or n in analysed]
    dropped = set()
    if skip_first and order:
        dropped.add(order[0])
    if skip_last and order:
        dropped.add(order[-1])
    keep = np.array([m not in dropped for m in layer_mod], dtype=bool)
    values = pd_numeric(d[metric])
    evals = pd_numeric(d["num_evals"]) if "num_evals" in d.columns else np.full(len(d), np.inf)
    out: dict[str, list[float]] = {}
    for k, (owner, v, ne) in enumerate(zip(layer_mod, values, evals)):
        if not keep[k] or owner is None or not np.isfinite(v) or ne < min_eigs:
            continue
        out.setdefault(owner, []).append(float(v))
    return {m: float(np.mean(v)) for m, v in out.items()}


def pd_numeric(col) -> np.ndarray:
    """A column as float64, non-numbers as NaN."""
    import pandas as pd

    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)


def param_groups(module, values: dict[str, float], metrics: dict[str, float], key: str,
                 base: float) -> list[dict]:
    """Torch parameter groups: one per scheduled module (and each BatchNorm2d that follows it by
    name, as TempBalance's ``batchnorm_type='name'``), in ``named_modules`` order, then one group
    of every other parameter with ``base``. Each parameter appears once."""
    torch = _torch()
    seen: set[int] = set()
    groups = []
    for name, m in module.named_modules():
        follow = None
        if name in values:
            follow = name
        elif isinstance(m, torch.nn.BatchNorm2d) and name.replace("bn", "conv") in values:
            follow = name.replace("bn", "conv")
        if follow is None:
            continue
        ps = [p for p in m.parameters() if id(p) not in seen]
        seen.update(id(p) for p in ps)
        if ps:
            groups.append({"params": ps, key: float(values[follow]), "name": name,
                           "follows": follow, "metric": metrics[follow], f"base_{key}": base})
    rest = [p for p in module.parameters() if id(p) not in seen]
    groups.append({"params": rest, key: base, "name": None, "follows": None, "metric": math.nan,
                   f"base_{key}": base})
    return groups


def learning_rate_values(metrics: dict[str, float], base_lr: float, lr_min_ratio: float,
                         lr_slope: float) -> dict[str, float]:
    """Module name -> TempBalance learning rate."""
    lr = tb_linear_map(list(metrics.values()), lr_min_ratio * base_lr,
                       (lr_min_ratio + lr_slope) * base_lr)
    return dict(zip(metrics, (float(v) for v in lr)))


def weight_decay_values(metrics: dict[str, float], base_weight_decay: float, wd_min_ratio: float,
                        wd_max_ratio: float) -> dict[str, float]:
    """Module name -> AlphaDecay weight decay."""
    wd = tb_linear_map(list(metrics.values()), wd_min_ratio * base_weight_decay,
                       wd_max_ratio * base_weight_decay)
    return dict(zip(metrics, (float(v) for v in wd)))


def layer_learning_rates(analysis_or_module, base_lr: float, lr_min_ratio: float = 0.5,
                         lr_slope: float = 1.0, metric: str = "alpha_hill", *, module=None,
                         skip_first: bool = True, skip_last: bool = True,
                         seed: int = 0) -> list[dict]:
    """TempBalance (Zhou et al., NeurIPS 2023) layer-wise learning rates as torch parameter groups.

    ``lr_i = interp(metric_i, [min, max], [lr_min_ratio * base_lr, (lr_min_ratio + lr_slope) *
    base_lr])``: a larger alpha (a less trained layer) learns faster. Given a module, it is
    analysed here (``hill=True``); given an Analysis, pass the module it analysed as ``module=``.
    ``skip_first``/``skip_last`` are TempBalance's ``remove_first_layer``/``remove_last_layer``.
    Returns ``[{'params', 'lr', 'name', 'metric', 'base_lr'}, ...]`` for ``torch.optim.*``; the
    last group holds every parameter not scheduled, at ``base_lr``.
    """
    base_lr = _check_positive("base_lr", base_lr)
    lr_min_ratio = _check_positive("lr_min_ratio", lr_min_ratio)
    lr_slope = _check_positive("lr_slope", lr_slope)
    analysis, module = _analysis_and_module(analysis_or_module, module, metric, seed)
    metrics = layer_metrics(analysis, module, metric, skip_first=skip_first, skip_last=skip_last)
    values = learning_rate_values(metrics, base_lr, lr_min_ratio, lr_slope)
    return param_groups(module, values, metrics, "lr", base_lr)


def layer_weight_decays(analysis_or_module, base_weight_decay: float,
                        wd_min_ratio: float = WD_MIN_RATIO, wd_max_ratio: float = WD_MAX_RATIO,
                        metric: str = "alpha_hill", *, module=None, skip_first: bool = True,
                        skip_last: bool = True, min_eigs: int = MIN_EIGS,
                        seed: int = 0) -> list[dict]:
    """AlphaDecay (NeurIPS 2025) layer-wise weight decays as torch parameter groups.

    ``wd_i = interp(metric_i, [min, max], [wd_min_ratio * wd, wd_max_ratio * wd])``: heavier
    tails (smaller alpha) are decayed less. As the reference code: first and last layers and
    layers with fewer than ``min_eigs`` (50) eigenvalues are not scheduled; defaults
    ``wd_min_ratio=0.6666``, ``wd_max_ratio=3`` (its README). Returns
    ``[{'params', 'weight_decay', 'name', 'metric', 'base_weight_decay'}, ...]``.
    """
    wd = _check_positive("base_weight_decay", base_weight_decay)
    lo = _check_positive("wd_min_ratio", wd_min_ratio)
    hi = _check_positive("wd_max_ratio", wd_max_ratio)
    if hi < lo:
        raise ValueError(f"wd_max_ratio ({hi:g}) must be >= wd_min_ratio ({lo:g})")
    analysis, module = _analysis_and_module(analysis_or_module, module, metric, seed)
    metrics = layer_metrics(analysis, module, metric, skip_first=skip_first, skip_last=skip_last,
                            min_eigs=int(min_eigs))
    values = weight_decay_values(metrics, wd, lo, hi)
    return param_groups(module, values, metrics, "weight_decay", wd)


def apply_values(optimizer, module, values: dict[str, float], key: str, base: float) -> int:
    """Re-apply a schedule to an optimizer built from these parameter groups: each group made for
    a module (``follows`` set) takes the new value of the module that owns its parameters in
    ``module`` (a BatchNorm2d follows its conv by name again), ``base`` when that module is no
    longer scheduled; the group of unscheduled parameters keeps ``base``. Groups are matched by
    their parameters, so ``module`` may wrap the model the groups were built from (a
    LightningModule's ``self.net``). Returns how many groups got a scheduled value; a ValueError
    when the optimizer has no such groups."""
    torch = _torch()
    groups: Sequence[dict] = optimizer.param_groups
    if not any("follows" in g for g in groups):
        raise ValueError("applying a layer-wise schedule needs an optimizer built from "
                         "tailscope.train.layer_learning_rates/layer_weight_decays groups")
    owner: dict[int, tuple[str, object]] = {}
    for name, m in module.named_modules():
        for p in m.parameters(recurse=False):
            owner.setdefault(id(p), (name, m))
    n = 0
    for g in groups:
        if "follows" not in g:
            continue
        value = base
        if g["follows"] is not None and g["params"]:
            name, m = owner.get(id(g["params"][0]), ("", None))
            follow = name
            if name not in values and isinstance(m, torch.nn.BatchNorm2d):
                follow = name.replace("bn", "conv")
            if follow in values:
                value = values[follow]
                n += 1
        g[key] = value
    return n
