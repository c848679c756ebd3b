"""An edited model: new weights in the source's layout, written back as safetensors."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..sources import LayerRef
from ..sources.safetensors import write_safetensors
from ..util.io import atomic_write

# Keras kernel axes -> torch's: Dense (in, out), Conv1D (k, in, out), Conv2D (kh, kw, in, out)
KERAS_TO_TORCH = {2: (1, 0), 3: (2, 1, 0), 4: (3, 2, 0, 1)}
DETAIL_COLUMNS = ["layer_id", "name", "layer_type", "N", "M", "rf", "method", "components",
                  "kept", "removed", "status", "reason"]


@dataclass(frozen=True, repr=False, eq=False)
class EditedModel:
    """New weights from :func:`smooth` or :func:`sharpen`.

    ``weights``: every tensor of the model, name -> numpy array, in model order and in the
    source's layout (edited ones are new arrays in the original dtype; bfloat16 arrives as
    float32; a tensor split for analysis -- gates, q/k/v, heads -- is joined back from its edited
    parts). ``details``: one row per considered layer: how many singular components each matrix
    (each slice of a conv layer) had, kept and removed, or why it was left as it was.
    ``layouts``: name -> the source's layout ('torch' or 'keras'), which ``save`` reads.
    """

    weights: dict[str, np.ndarray]
    details: pd.DataFrame
    source: str
    seconds: float
    layouts: dict[str, str] = field(default_factory=dict)

    def save(self, path) -> Path:
        """Write all tensors to a .safetensors file (atomically: a temporary file, then rename).

        Kernels of a Keras-layout source (``layouts[name] == 'keras'``: Dense (in, out), Conv1D
        (k, in, out), Conv2D (kh, kw, in, out)) are written in torch layout ((out, in),
        (out, in, k), (out, in, kh, kw)), so that the file reads back as the same layers; the
        header's ``__metadata__`` records each transposition ('tailscope.transposed': JSON
        name -> axes, ``np.transpose(saved, argsort(axes))`` gives the Keras array back).
        """
        path = Path(path)
        if path.suffix.lower() != ".safetensors":
            raise ValueError(f"{path}: write a .safetensors file")
        tensors, moved = {}, {}
        for name, w in self.weights.items():
            axes = KERAS_TO_TORCH.get(w.ndim) if self.layouts.get(name) == "keras" else None
            tensors[name] = np.transpose(w, axes) if axes else w
            if axes:
                moved[name] = list(axes)
        meta = {"tailscope.layout": "torch",
                "tailscope.transposed": json.dumps(moved)} if moved else None
        return atomic_write(path, lambda p: write_safetensors(p, tensors, meta))

    def to_state_dict(self) -> dict:
        """The weights as torch tensors (for ``module.load_state_dict``)."""
        from ..sources.torch import import_torch

        torch = import_torch()
        return {k: torch.from_numpy(np.array(v)) for k, v in self.weights.items()}

    def __repr__(self) -> str:
        d = self.details
        edited = int((d["status"] == "edited").sum()) if len(d) else 0
        return (f"EditedModel({self.source}: {len(self.weights)} tensors, {edited} of {len(d)} "
                "layers edited)")


def edited_model(weights: dict[str, np.ndarray], refs: list[LayerRef], rows: list[dict], src,
                 t0: float) -> EditedModel:
    """The result of a layer-by-layer edit: the source's own tensors (split parts rejoined),
    one detail row per layer, and each tensor's layout (so Keras kernels are saved right)."""
    return EditedModel(weights=rejoin(weights, refs),
                       details=pd.DataFrame(rows, columns=DETAIL_COLUMNS),
                       source=src.describe(), seconds=time.perf_counter() - t0,
                       layouts={r.name: r.layout for r in refs if not r.parent})


def rejoin(weights: dict[str, np.ndarray], refs: list[LayerRef]) -> dict[str, np.ndarray]:
    """The model's own tensors from ``weights`` that also hold split parts (gates, q/k/v,
    heads): each split tensor becomes its parts, edited or not, joined back along the axis they
    were cut from, and the parts go (the edited model has the source's tensors, no extra keys).
    Deepest splits first (heads of a q part, then q/k/v of ``in_proj_weight``)."""
    out = dict(weights)
    for ref in reversed(refs):
        if not ref.split_into or not all(p in out for p in ref.split_into):
            continue
        parts = [out.pop(p) for p in ref.split_into]
        axis = next((i for i, (a, b) in enumerate(zip(ref.shape, parts[0].shape)) if a != b), 0)
        joined = np.concatenate(parts, axis=axis)
        if joined.shape != tuple(ref.shape):
            raise ValueError(f"{ref.name}: its parts join to {joined.shape}, not {ref.shape}")
        out[ref.name] = joined.astype(out[ref.name].dtype, copy=False)
    return {r.name: out[r.name] for r in refs if r.name in out and not r.parent}


