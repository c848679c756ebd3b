"""An edited model: new weights in the source's layout, written back as safetensors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

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
    ``options``: the options it ran with (the seed of a random draw included).
    """

    weights: dict[str, np.ndarray]
    details: pd.DataFrame
    source: str
    seconds: float
    layouts: dict[str, str] = field(default_factory=dict)
    options: dict = field(default_factory=dict)

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


def edited_model(run, columns: list[str] = DETAIL_COLUMNS) -> EditedModel:
    """The result of an edit run by the runner: the model's tensors (edited ones in place, split
    parts joined), one detail row per layer, each tensor's layout (so Keras kernels are saved
    right) and the options it ran with (the drawn seed included)."""
    rows = [row for out in run.outputs for row in out.rows]
    return EditedModel(weights=run.weights, details=pd.DataFrame(rows, columns=columns),
                       source=run.source.describe(), seconds=run.seconds, layouts=run.layouts,
                       options=run.options.as_dict())
