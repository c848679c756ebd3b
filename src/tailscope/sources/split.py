"""Fused tensors -> the matrices they stack: derived ``LayerRef``s that slice their parent lazily.

- Recurrent gate stacks: PyTorch ``weight_ih_l0`` / ``weight_hh_l0`` (also ``w_ih`` / ``w_hh``,
  cells' ``weight_ih``), shape (G*H, in), split into G gate matrices (H, in): 'ifgo' for an LSTM
  (G = 4), 'rzn' for a GRU (G = 3). G and H come from the partner ``weight_hh``, shape (G*H, H)
  (``weight_hr`` gives H when the LSTM has projections). Sources that know their gates (ONNX:
  'iofc' / 'zrh'; Keras: 'ifco' / 'zrh', gates along the last axis) set ``LayerRef.gates``.
- Fused attention ``in_proj_weight`` (torch MultiheadAttention, (3E, E)): q, k, v.
- ``heads=N``: q/k/v projections split into N head matrices along their output axis, the output
  projection along its input axis (head_dim from the q projection of the same module, so grouped
  k/v heads split into their own number of heads).

The parent stays in the list with ``split_into`` set (reported as skipped, with its parts); the
parts follow it, and indices are renumbered in that order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from .base import LayerRef

LSTM_GATES, GRU_GATES = "ifgo", "rzn"  # PyTorch's documented orders
_TORCH_RNN = re.compile(r"^(?P<pre>.*?)(?P<w>weight|w)_(?P<kind>ih|hh)(?P<suf>(?:_l\d+)?(?:_reverse)?)$")
_Q = {"q_proj", "query", "q", "wq", "q_lin", "to_q", "q_proj_weight", "attn_q"}
_K = {"k_proj", "key", "k", "wk", "k_lin", "to_k", "k_proj_weight", "attn_k"}
_V = {"v_proj", "value", "v", "wv", "v_lin", "to_v", "v_proj_weight", "attn_v"}
_O = {"o_proj", "out_proj", "wo", "o", "out_lin", "attention_output", "attention.output.dense",
      "attn_output"}  # attn_*: llama.cpp's GGUF names


def _part(ref: LayerRef, label: str, axis: int, start: int, stop: int, **fields) -> LayerRef:
    shape = list(ref.shape)
    shape[axis] = stop - start
    index = (slice(None),) * axis + (slice(start, stop),)

    def load(parent=ref, ix=index):
        return parent.load()[ix]

    return replace(ref, name=f"{ref.name}[{label}]", shape=tuple(shape), loader=load,
                   parent=ref.name, split_into=(), gates="", **fields)


def _split_even(ref: LayerRef, labels: list[str], axis: int, **fields) -> list[LayerRef]:
    size = ref.shape[axis] // len(labels)
    return [_part(ref, lab, axis, k * size, (k + 1) * size, **fields) for k, lab in enumerate(labels)]


def _torch_gates(ref: LayerRef, by_name: dict[str, LayerRef]) -> str:
    """The gate order of a PyTorch-named recurrent weight, from its weight_hh partner's shape."""
    m = _TORCH_RNN.match(ref.name)
    if not m or len(ref.shape) != 2:
        return ""
    hh = by_name.get(f"{m['pre']}{m['w']}_hh{m['suf']}")
    hr = by_name.get(f"{m['pre']}{m['w']}_hr{m['suf']}")
    if hh is None or len(hh.shape) != 2:
        return ""
    hidden = hr.shape[1] if hr is not None and len(hr.shape) == 2 else hh.shape[1]
    if hidden == 0 or hh.shape[0] % hidden:
        return ""
    count = hh.shape[0] // hidden
    if count == 1 and ref.shape[0] == hidden:
        return "-"  # a plain RNN: recurrent, nothing to split
    gates = {4: LSTM_GATES, 3: GRU_GATES}.get(count, "")
    return gates if gates and ref.shape[0] == len(gates) * hidden else ""


def _gate_split(ref: LayerRef, gates: str) -> list[LayerRef]:
    axis = len(ref.shape) - 1 if ref.layout == "keras" else 0
    if ref.shape[axis] % len(gates):
        return []
    return _split_even(ref, list(gates), axis, role="recurrent")


def _attention_role(ref: LayerRef) -> str:
    """'q', 'k', 'v', 'o' for a 2-D attention projection recognised by its name, else ''."""
    name = re.sub(r"(:0)?$", "", ref.name)
    m = re.search(r"\[(q|k|v)\]$", name)
    if m and ref.parent.endswith("in_proj_weight"):
        return m[1]
    stem = re.sub(r"[./](weight|kernel)$", "", name)
    parts = re.split(r"[./]", stem)
    last, three = parts[-1], ".".join(parts[-3:])
    for role, names in (("q", _Q), ("k", _K), ("v", _V), ("o", _O)):
        if last in names or three in names:
            return role
    return ""


def _module_of(ref: LayerRef) -> str:
    name = ref.parent or ref.name
    return re.split(r"[./](in_proj_weight|q_proj|k_proj|v_proj|o_proj|out_proj|query|key|value|"
                    r"attention_output|output\.dense|q|k|v|o|wq|wk|wv|wo|attn_q|attn_k|attn_v|"
                    r"attn_output)\b", name)[0]


def _head_split(ref: LayerRef, role: str, heads: int, head_dim: int) -> list[LayerRef]:
    out_axis = 1 if ref.layout == "keras" else 0
    axis = 1 - out_axis if role == "o" else out_axis
    size = ref.shape[axis]
    if head_dim <= 0 or size % head_dim or size // head_dim < 2:
        return []
    n = size // head_dim
    return [_part(ref, f"h{h}", axis, h * head_dim, (h + 1) * head_dim) for h in range(n)]


def _expand_one(ref: LayerRef, by_name: dict[str, LayerRef], split: bool) -> list[LayerRef]:
    if not split or len(ref.shape) != 2 or not ref.is_float:
        return [ref]
    gates = ref.gates or _torch_gates(ref, by_name)
    if gates == "-":
        return [replace(ref, role="recurrent")]
    if gates:
        parts = _gate_split(ref, gates)
        if parts:
            return [replace(ref, role="recurrent", split_into=tuple(p.name for p in parts)), *parts]
        return [replace(ref, role="recurrent")]
    if ref.name.endswith("in_proj_weight") and ref.shape[0] == 3 * ref.shape[1]:
        parts = _split_even(ref, ["q", "k", "v"], 0)
        return [replace(ref, split_into=tuple(p.name for p in parts)), *parts]
    return [ref]


def expand(refs: Iterable[LayerRef], *, split: bool = True, heads: int | None = None
           ) -> list[LayerRef]:
    """The tensors of a source with fused tensors followed by the matrices they stack.

    Parameters
    ----------
    refs : iterable of LayerRef
        A source's tensors, in model order.
    split : bool
        Split recurrent gate stacks and fused attention ``in_proj_weight`` (default True).
    heads : int, optional
        Split q/k/v/o attention projections into this many head matrices.

    Returns
    -------
    list of LayerRef
        Parents keep their place (with ``split_into`` set), their parts follow; indices are
        renumbered in this order. Without ``split`` and ``heads`` the refs are returned as they are.
    """
    refs = list(refs)
    if not split and not heads:
        return refs
    by_name = {r.name: r for r in refs}
    out = [p for r in refs for p in _expand_one(r, by_name, split)]
    if heads:
        out = _expand_heads(out, int(heads))
    return [r if r.index == i else replace(r, index=i) for i, r in enumerate(out)]


def _expand_heads(refs: list[LayerRef], heads: int) -> list[LayerRef]:
    roles = {r.name: _attention_role(r) for r in refs
             if len(r.shape) == 2 and r.is_float and not r.split_into}
    q_dims = {}
    for r in refs:
        if roles.get(r.name) == "q":
            axis = 1 if r.layout == "keras" else 0
            q_dims.setdefault(_module_of(r), r.shape[axis] // heads if r.shape[axis] % heads == 0
                              else 0)
    out = []
    for r in refs:
        role = roles.get(r.name, "")
        if not role:
            out.append(r)
            continue
        axis = (0 if r.layout == "keras" else 1) if role == "o" else (1 if r.layout == "keras" else 0)
        dim = q_dims.get(_module_of(r)) or (r.shape[axis] // heads if r.shape[axis] % heads == 0
                                            else 0)
        parts = _head_split(r, role, heads, dim)
        if parts:
            out.extend([replace(r, split_into=tuple(p.name for p in parts)), *parts])
        else:
            out.append(r)
    return out
