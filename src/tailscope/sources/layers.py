"""Tensor -> weight matrices: what kind of layer a tensor is, and the matrices whose spectra count.

Decided from the shape alone, so ``describe`` never reads a tensor:
- 2-D: a dense layer (Linear, lm_head, GPT-2 Conv1D) or an embedding (name contains 'embed').
- 3-D (out, in, k): conv1d, k slices W[:, :, i] (Keras layout k, in, out: W[i, :, :]).
- 4-D (out, in, kh, kw): conv2d, kh*kw slices W[:, :, i, j] (Keras layout kh, kw, in, out is
  sliced as W[i, j, :, :]).
- A tensor of a quantized checkpoint that ``quantized.py`` could not dequantize is refused with
  its reason (``LayerRef.quant``).
- 0/1-D (biases, norms), integer tensors and higher ranks are not weight matrices, nor is a 3-D
  or 4-D tensor with one output channel (torch layout: first dimension 1; Keras: last): a ViT's
  ``class_token`` (1, 1, 768) and ``pos_embedding`` (1, 197, 768) are parameters, not kernels (a
  conv kernel's first dimension is its output channels, and with one of them every slice is a
  single row whose one eigenvalue is its squared norm). WeightWatcher does not analyse them.
- A recurrent weight (``LayerRef.role == 'recurrent'``: a gate stack or one gate) is 'recurrent';
  a tensor split into parts (``LayerRef.split_into``, see ``split.py``) is listed, not analysed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import LayerRef
from .quantized import refusal


@dataclass(frozen=True)
class LayerPlan:
    """How a tensor is analysed: type, matrix sizes N >= M, rf slices; or why it is not."""

    layer_type: str
    N: int
    M: int
    rf: int
    skip: str = ""

    @property
    def num_evals(self) -> int:
        return self.M * self.rf


def plan_layer(ref: LayerRef) -> LayerPlan:
    shape = ref.shape
    ndim = len(shape)
    if ndim < 2:
        return LayerPlan("vector", 0, 0, 0, "a 1-D tensor (bias, norm or buffer), not a matrix")
    if refusal(ref):
        return LayerPlan("other", 0, 0, 0, refusal(ref))
    if not ref.is_float:
        return LayerPlan("other", 0, 0, 0, f"{ref.dtype} values, not floating-point weights")
    if ndim == 2:
        rows, cols, rf = shape[0], shape[1], 1
        name = ref.name.lower()
        kind = "recurrent" if ref.role == "recurrent" else "embedding" if (
            "embed" in name or "embd" in name or name.endswith(("wte.weight", "wpe.weight"))) else "dense"
    elif ndim in (3, 4) and (shape[-1] if ref.layout == "keras" else shape[0]) == 1:
        return LayerPlan("other", 0, 0, 0,
                         f"a {ndim}-D tensor with one output channel "
                         f"({'x'.join(map(str, shape))}: a class token or position embedding, "
                         "or a conv whose slices are single rows), not a conv kernel")
    elif ndim == 3:
        if ref.layout == "keras":
            rows, cols, rf = shape[1], shape[2], shape[0]
        else:
            rows, cols, rf = shape[0], shape[1], shape[2]
        kind = "conv1d"
    elif ndim == 4:
        if ref.layout == "keras":
            rows, cols, rf = shape[2], shape[3], shape[0] * shape[1]
        else:
            rows, cols, rf = shape[0], shape[1], shape[2] * shape[3]
        kind = "conv2d"
    else:
        return LayerPlan("other", 0, 0, 0, f"a {ndim}-D tensor, not a dense or conv weight")
    if ref.split_into:
        parts = ", ".join(p[len(ref.name):] for p in ref.split_into)
        return LayerPlan(kind, max(rows, cols), min(rows, cols), rf,
                         f"split into {len(ref.split_into)} matrices {parts}, analysed instead")
    return LayerPlan(kind, max(rows, cols), min(rows, cols), rf)


def matrices(ref: LayerRef, w: np.ndarray) -> list[np.ndarray]:
    """The 2-D matrices of a loaded tensor (views where possible; dtype unchanged)."""
    if w.ndim == 2:
        return [w]
    if w.ndim == 3:
        if ref.layout == "keras":
            return [w[i, :, :] for i in range(w.shape[0])]
        return [w[:, :, i] for i in range(w.shape[2])]
    if ref.layout == "keras":
        return [w[i, j, :, :] for i in range(w.shape[0]) for j in range(w.shape[1])]
    return [w[:, :, i, j] for i in range(w.shape[2]) for j in range(w.shape[3])]
