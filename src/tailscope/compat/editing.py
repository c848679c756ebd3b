"""WeightWatcher's ``SVDSmoothing`` and ``SVDSharpness`` over :func:`tailscope.edit.smooth` and
:func:`tailscope.edit.sharpen`, with WeightWatcher's side effect: the model is edited in place.

WeightWatcher writes the new weights into the model's layers and returns ``self.model`` from
``SVDSmoothing`` and the ``model`` argument (None when it was not given) from ``SVDSharpness``.
The facade writes them back the same way into a ``torch.nn.Module`` or a state dict (the tensors
keep their identity, dtype and device); a model given as a file or folder is never overwritten:
the watcher then holds the edited weights as a state dict (name -> numpy array), which is what
both methods return and what the next ``get_ESD``/``analyze`` reads.
"""

from __future__ import annotations

import numpy as np

from ..edit import EditedModel, sharpen, smooth
from ..util.optional import require
from .frames import identify

# WeightWatcher's SVDSmoothing methods -> tailscope's smooth methods
SMOOTH_METHODS = {"svd": "svd", "detX": "detX", "alpha_min": "pl", "rmt": "mp"}


def smoothing_method(method) -> str:
    """tailscope's name for one of WeightWatcher's smoothing methods (a one-line ValueError
    otherwise; WeightWatcher's 'auto' is not offered)."""
    if method not in SMOOTH_METHODS:
        raise ValueError(f"SVDSmoothing method={method!r}: use one of "
                         f"{', '.join(map(repr, SMOOTH_METHODS))}")
    return SMOOTH_METHODS[method]


def _write(target, name: str, value: np.ndarray) -> bool:
    """Copy ``value`` into the tensor ``target[name]`` in place; False if there is none."""
    old = target.get(name) if isinstance(target, dict) else None
    if old is None:
        return False
    if isinstance(old, np.ndarray):
        old[...] = value.reshape(old.shape)
        return True
    torch = require("torch", "editing a PyTorch model in place")
    if isinstance(old, torch.Tensor):
        with torch.no_grad():
            old.copy_(torch.from_numpy(np.ascontiguousarray(value)).reshape(old.shape)
                      .to(dtype=old.dtype, device=old.device))
        return True
    return False


def apply_in_place(model, edited: EditedModel):
    """Write the edited layers of ``edited`` into ``model`` (a torch module or a state dict) and
    return it; for any other model return the edited weights as a state dict."""
    names = list(edited.details.loc[edited.details["status"] == "edited", "name"])
    target = None
    if isinstance(model, dict):
        target = model.get("state_dict", model) if isinstance(model.get("state_dict"),
                                                                  dict) else model
    elif hasattr(model, "state_dict") and hasattr(model, "parameters"):
        target = model.state_dict(keep_vars=True)
    if target is None or not all(_write(target, n, edited.weights[n]) for n in names):
        return dict(edited.weights)
    return model


def svd_smoothing(model, *, percent: float, method, layers, options: dict):
    """``SVDSmoothing``: the model with its layers smoothed (in place where it can be)."""
    edited = smooth(model, method=smoothing_method(method), percent=percent, layers=layers,
                    **options)
    return apply_in_place(model, edited), edited


def svd_sharpness(model, *, layers, options: dict):
    """``SVDSharpness``: the model with its correlation traps removed (in place where it can
    be)."""
    edited = sharpen(model, layers=layers, **options)
    return apply_in_place(model, edited), edited


def distances(model_1, model_2, *, method: str = "raw", chosen: list | None = None,
              **options) -> tuple:
    """WeightWatcher's ``distances``: ``(avg_dW, avg_db, details)``, details indexed by
    layer_id with its lead columns. Bias distances are 0.0 where WeightWatcher gives 0.0: a layer
    without biases, a conv or embedding layer (WeightWatcher reads the biases of dense layers
    only; :func:`tailscope.edit.distances` has them all), and every layer with 'euclidean' or
    'cka', which do not compare biases;
    an unmatched layer has NaN and its reason, and the means are over the layers that have one."""
    from ..edit import distances as layer_distances

    options.pop("base_model", None)
    d = layer_distances(model_1, model_2, method=method, **options)
    t = identify(d.details, chosen).drop(columns=["tensor_name"])
    dense = t["layer_type"] == "dense"  # WeightWatcher reads the biases of dense layers only
    t["delta_b"] = t["delta_b"].where(dense, 0.0).fillna(0.0) if d.method == "raw" else 0.0
    lead = ["method", "layer_id", "name", "delta_W", "delta_b", "M", "N"]
    t = t[lead + [c for c in t.columns if c not in lead]].set_index("layer_id")
    mean_w = t["delta_W"].dropna()
    avg_dw = float(mean_w.mean()) if len(mean_w) else float("nan")
    return avg_dw, float(t["delta_b"].mean()) if len(t) else float("nan"), t
