"""Tensor -> weight matrices: what kind of layer a tensor is, and the matrices whose spectra count.

Decided from the shape alone, so ``describe`` never reads a tensor:
- 2-D: a dense layer (Linear, lm_head, GPT-2 Conv1D) or an embedding (name contains 'embed').
- 3-D (out, in, k): conv1d, k slices W[:, :, i] (Keras layout k, in, out: W[i, :, :]), only when it
  is a known convolution: the reader knows its op or module (``LayerRef.role == 'conv'``: a torch
  ``nn.Conv1d`` / ``ConvTranspose1d`` module's weight, an ONNX Conv's), its layout is Keras'
  (Keras, Flax and TensorFlow list only Dense, Conv and recurrent kernels; one whose name says
  'expert' excepted), or its name says so ('conv' in it: ``encoder.conv1.weight``,
  ``pos_conv_embed.conv.weight_v``). Any other 3-D tensor is refused with the reason, never
  guessed: a fused Mixture-of-Experts stack [E, a, b] has the same rank (``moe.py`` splits the
  stacks it knows into one matrix per expert before planning).
- A matrix of a Mixture-of-Experts layer: 'expert' (``LayerRef.expert`` set), 'router'
  (``role == 'router'``) or 'shared_expert' (``role == 'shared_expert'``); a router too small
  for ``min_evals`` is skipped with a reason saying it is a router.
- ``role == 'refused: <why>'`` (a stack ``moe.py`` could not decode): not analysed, for that
  reason.
- 4-D (out, in, kh, kw): conv2d, kh*kw slices W[:, :, i, j] (Keras layout kh, kw, in, out is
  sliced as W[i, j, :, :]).
- 5-D (out, in, kd, kh, kw): conv3d, kd*kh*kw slices W[:, :, i, j, l] (Keras layout kd, kh, kw,
  in, out: W[i, j, l, :, :]).
- A Keras depthwise kernel (``*depthwise_kernel*``: kh, kw, C, multiplier) is PyTorch's
  depthwise conv (C * multiplier, 1, kh, kw): kh*kw slices of (C * multiplier) x 1.
- Every convolution kernel, whatever its rank (``CONV_TYPES``), is its rf slices of out x in:
  the same weights stored as a Keras Conv1D (k, in, out), a PyTorch Conv1d (out, in, k), a
  Conv2d (out, in, k, 1) or an ONNX Conv give the same matrices, so the same numbers.
- A tensor of a quantized checkpoint that ``quantized.py`` could not dequantize is refused with
  its reason (``LayerRef.quant``).
- 0/1-D (biases, norms), integer tensors and ranks above 5 are not weight matrices, nor is a
  3-D, 4-D or 5-D tensor with one output channel (torch layout: first dimension 1; Keras: last): a ViT's
  ``class_token`` (1, 1, 768) and ``pos_embedding`` (1, 197, 768) are parameters, not kernels (a
  conv kernel's first dimension is its output channels, and with one of them every slice is a
  single row whose one eigenvalue is its squared norm). WeightWatcher does not analyse them.
- A recurrent weight (``LayerRef.role == 'recurrent'``: a gate stack or one gate) is 'recurrent';
  a graph's constant that no layer uses as its weight (``role == 'constant'``: ONNX) is skipped;
  a tensor split into parts (``LayerRef.split_into``, see ``split.py``) is listed, not analysed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import LayerRef
from .quantized import refusal

CONV_TYPES = ("conv1d", "conv2d", "conv3d")  # the layer types that are convolution kernels


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


def keras_depthwise(ref: LayerRef) -> bool:
    """A Keras DepthwiseConv2D kernel (kh, kw, C, multiplier): its output channel c * mult + m
    is W[:, :, c, m], as PyTorch's (C * mult, 1, kh, kw) depthwise kernel holds it."""
    return ref.layout == "keras" and len(ref.shape) == 4 and "depthwise" in ref.name.lower()


def plan_layer(ref: LayerRef) -> LayerPlan:
    shape = ref.shape
    ndim = len(shape)
    if ref.is_float and keras_depthwise(ref) and not ref.split_into:
        # the slices of PyTorch's depthwise kernel: (C * mult) x 1, one per kernel position
        return LayerPlan("conv2d", shape[2] * shape[3], 1, shape[0] * shape[1])
    if ndim < 2:
        return LayerPlan("vector", 0, 0, 0, "a 1-D tensor (bias, norm or buffer), not a matrix")
    if refusal(ref):
        return LayerPlan("other", 0, 0, 0, refusal(ref))
    if not ref.is_float:
        return LayerPlan("other", 0, 0, 0, f"{ref.dtype} values, not floating-point weights")
    if ref.role.startswith(REFUSED):
        return LayerPlan("other", 0, 0, 0, ref.role[len(REFUSED):])
    if ref.layout.startswith("stack:") and ref.split_into:
        parts = ref.split_into
        what = "gate and up matrices" if parts[0].endswith(".gate]") else "matrices"
        return LayerPlan("expert", 0, 0, 0, f"a stack of {shape[0]} experts, split into "
                         f"{len(parts)} expert {what} ({parts[0][len(ref.name):]}, ...), "
                         "analysed instead")
    if ref.role == "constant":
        return LayerPlan("other", 0, 0, 0, "a constant of the graph that no layer uses as its "
                                           "weight (a scale, a table, a mask)")
    if ndim == 2:
        rows, cols, rf = shape[0], shape[1], 1
        name = ref.name.lower()
        kind = "expert" if ref.expert is not None else ref.role if ref.role in MOE_ROLES else \
            "recurrent" if ref.role == "recurrent" else "embedding" if (
                "embed" in name or "embd" in name or name.endswith(("wte.weight", "wpe.weight"))) \
            else "dense"
    elif ndim in (3, 4, 5) and (shape[-1] if ref.layout == "keras" else shape[0]) == 1:
        return LayerPlan("other", 0, 0, 0,
                         f"a {ndim}-D tensor with one output channel "
                         f"({'x'.join(map(str, shape))}: a class token or position embedding, "
                         "or a conv whose slices are single rows), not a conv kernel")
    elif ndim == 3 and not known_conv(ref):
        return LayerPlan("other", 0, 0, 0, unknown_3d(ref))
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
    elif ndim == 5:
        if ref.layout == "keras":
            rows, cols, rf = shape[3], shape[4], shape[0] * shape[1] * shape[2]
        else:
            rows, cols, rf = shape[0], shape[1], shape[2] * shape[3] * shape[4]
        kind = "conv3d"
    else:
        return LayerPlan("other", 0, 0, 0, f"a {ndim}-D tensor, not a dense or conv weight")
    if ref.split_into:
        parts = ", ".join(p[len(ref.name):] for p in ref.split_into)
        return LayerPlan(kind, max(rows, cols), min(rows, cols), rf,
                         f"split into {len(ref.split_into)} matrices {parts}, analysed instead")
    return LayerPlan(kind, max(rows, cols), min(rows, cols), rf)


REFUSED = "refused: "  # LayerRef.role of a tensor refused by a source pass, then the reason
MOE_ROLES = ("router", "shared_expert")


def known_conv(ref: LayerRef) -> bool:
    """Whether a 3-D tensor is a known convolution (see the module docstring)."""
    name = ref.name.lower()
    if ref.layout == "keras":
        return "expert" not in name
    return ref.role == "conv" or "conv" in name


def unknown_3d(ref: LayerRef) -> str:
    """The reason a 3-D tensor that is not a known convolution is not analysed."""
    shape = "x".join(map(str, ref.shape))
    if "expert" in ref.name.lower() or "_exps" in ref.name:
        return (f"a 3-D expert tensor ({shape}) of a layout tailscope does not know; not "
                "guessed into matrices")
    return (f"a 3-D tensor ({shape}) that is neither a known convolution (no conv module, op or "
            "name) nor a Mixture-of-Experts stack of a known layout; not guessed into matrices")


def matrices(ref: LayerRef, w: np.ndarray) -> list[np.ndarray]:
    """The 2-D matrices of a loaded tensor (views where possible; dtype unchanged)."""
    if w.ndim == 2:
        return [w]
    if w.ndim == 3:
        if ref.layout == "keras":
            return [w[i, :, :] for i in range(w.shape[0])]
        return [w[:, :, i] for i in range(w.shape[2])]
    if w.ndim == 5:
        if ref.layout == "keras":
            return [w[i, j, k, :, :] for i in range(w.shape[0]) for j in range(w.shape[1])
                    for k in range(w.shape[2])]
        return [w[:, :, i, j, k] for i in range(w.shape[2]) for j in range(w.shape[3])
                for k in range(w.shape[4])]
    if keras_depthwise(ref):  # 1 x (C * mult), PyTorch's slice transposed as Keras' are
        return [w[i, j, :, :].reshape(1, -1) for i in range(w.shape[0])
                for j in range(w.shape[1])]
    if ref.layout == "keras":
        return [w[i, j, :, :] for i in range(w.shape[0]) for j in range(w.shape[1])]
    return [w[:, :, i, j] for i in range(w.shape[2]) for j in range(w.shape[3])]
