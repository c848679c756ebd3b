"""Quantized checkpoints -> floating-point tensors, dequantized as the reference libraries do.

Each quantized weight and its companions (scales, zero points, group indices, packed blocks) of
a checkpoint become one ``LayerRef`` whose ``load()`` returns the dequantized float32 matrix, in
the layout the model's forward pass uses it as a weight (out x in for a Linear; gpt-oss's expert
stacks as its bf16 checkpoints store them). ``quant`` says what was stored ('fp8-e4m3 block
128x128', 'gptq int4 g128', ...). No weight is read here: the formats are recognised from the
tensor names, dtypes and shapes and from ``quantization_config`` of the model's ``config.json``
(and two small metadata tensors that hold a shape: bitsandbytes' quant_state blob and
compressed-tensors' ``weight_shape``);
a tensor is dequantized only when its ``load()`` is called, with memory bounded by one matrix
(a fused expert stack: one expert through ``part_loader``).

The formats, and the reference each follows (docs/guide/quantized.md has the details):

- FP8 e4m3/e5m2 with ``weight_scale_inv`` (transformers' fine-grained FP8: DeepSeek-V3,
  Qwen3-FP8; per 128 x 128 block, a partial last block scaled by its own scale) or
  ``weight_scale`` (per tensor, per output channel, per group or per block: compressed-tensors'
  ``float-quantized``, FBGEMM FP8); ``input_scale`` and other activation scales are absorbed.
- MXFP4 (OCP MX, gpt-oss): ``*_blocks`` (two e2m1 values a byte, low nibble first) and
  ``*_scales`` (e8m0, one per 32 values), as transformers' ``convert_moe_packed_tensors``.
- GPTQ (``qweight``, ``qzeros``, ``scales``, ``g_idx``; 2/3/4/8 bits packed along the input
  axis; checkpoint_format 'gptq' stores zero - 1, 'gptq_v2' the zero) and AWQ (GEMM packing:
  4 bits along the output axis in the nibble order 0, 2, 4, 6, 1, 3, 5, 7).
- compressed-tensors ``pack-quantized`` (``weight_packed``, ``weight_shape``, ``weight_scale``,
  ``weight_zero_point``, ``weight_g_idx``), ``int-quantized``/``naive-quantized`` (int8
  ``weight``) and ``float-quantized`` (FP8 ``weight``).
- bitsandbytes nf4/fp4 (``weight.absmax``, ``weight.quant_map``, nested ``nested_absmax`` /
  ``nested_quant_map``, the ``quant_state.bitsandbytes__*`` blob) and int8 (``SCB``).

A quantization this module does not know (a ``quant_method`` it does not read, companions whose
weight is missing, shapes that do not agree) is a ``quant`` that starts 'unsupported' and says why;
``layers.plan_layer`` skips such a tensor with that reason, never analyses it as numbers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from .base import LayerRef, Source

SUPPORTED = ("fp8", "fbgemm_fp8", "mxfp4", "gptq", "awq", "compressed-tensors", "bitsandbytes")
UNSUPPORTED = "unsupported"

# e2m1 (FP4) values by nibble, as OCP MX and transformers' FP4_VALUES list them
E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                 -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], dtype=np.float32)
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # AWQ GEMM: nibble j of a word holds output column 8c + this
# names of activation/kv scales: absorbed with the weight they belong to (never weights)
_ACTIVATION = (".input_scale", ".output_scale", ".k_scale", ".v_scale", ".input_global_scale",
               ".input_zero_point", ".weight_global_scale")
# names of companions: a tensor named so whose weight is missing is refused, not analysed
_COMPANION = re.compile(r"(\.qweight|\.qzeros|\.scales|\.g_idx|_blocks|_scales|\.weight_scale"
                        r"|\.weight_scale_inv|\.weight_packed|\.weight_zero_point|\.weight_shape"
                        r"|_scale_inv|\.weight_g_idx|\.SCB|\.weight_format|\.absmax|\.quant_map"
                        r"|\.nested_absmax|\.nested_quant_map|\.quant_state\..*)$")


def quant_config(config: dict | None) -> dict | None:
    """The ``quantization_config`` (or compressed-tensors' older ``compression_config``) of a
    model's config.json, when it has one."""
    if not isinstance(config, dict):
        return None
    qc = config.get("quantization_config", config.get("compression_config"))
    return qc if isinstance(qc, dict) else None


def quant_method(config: dict | None) -> str:
    """The ``quant_method`` of a config ('' when none)."""
    qc = quant_config(config)
    return str(qc.get("quant_method", "")) if qc else ""


def refusal(ref: LayerRef) -> str:
    """Why a tensor of a quantized checkpoint is not analysed ('' when it can be)."""
    return ref.quant if ref.quant.startswith(UNSUPPORTED) else ""


@dataclass(frozen=True)
class _Found:
    """One quantized weight: the ref it becomes and the names it absorbs."""

    ref: LayerRef
    absorbs: tuple[str, ...]


# --- the bit-level readers -------------------------------------------------------------------------
def unpack_bits(words: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The ``count`` unsigned ``bits``-bit values packed along the last axis of int32 ``words``
    as one little-endian bit stream (value i at bit i * bits; a value may straddle two words, as
    GPTQ's 3-bit and compressed-tensors' packings do). uint8 result (bits <= 8)."""
    w = np.ascontiguousarray(words).view(np.uint32).astype(np.uint64)
    per = 32  # values per group of `bits` words
    nwords = w.shape[-1]
    groups = -(-nwords // bits)
    if groups * bits != nwords:
        w = np.concatenate([w, np.zeros((*w.shape[:-1], groups * bits - nwords), np.uint64)], -1)
    w = w.reshape(*w.shape[:-1], groups, bits)
    out = np.empty((*w.shape[:-2], groups, per), dtype=np.uint8)
    mask = (1 << bits) - 1
    for i in range(per):
        start = i * bits
        k, off = divmod(start, 32)
        v = w[..., k] >> np.uint64(off)
        if off + bits > 32 and k + 1 < bits:
            v = v | (w[..., k + 1] << np.uint64(32 - off))
        out[..., i] = v & np.uint64(mask)
    out = out.reshape(*out.shape[:-2], groups * per)
    if out.shape[-1] < count:
        raise ValueError(f"{nwords} packed words hold {out.shape[-1]} {bits}-bit values, "
                         f"not {count}")
    return out[..., :count]


def _fits(shape, want) -> bool:
    return tuple(shape) == tuple(want)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def expand_scale(scale: np.ndarray, shape: tuple[int, int], block: tuple[int, int] | None = None,
                 g_idx: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """A scale (or zero point) of a [rows, cols] weight broadcast to what multiplies it, and the
    scheme its shape says: 'tensor' (one value), 'channel' ([rows, 1]), 'group N' ([rows, G]:
    G groups of N consecutive columns, or the groups ``g_idx`` gives each column) or 'block RxC'
    ([ceil(rows / R), ceil(cols / C)]: a partial last block has its own scale). ValueError when
    the shapes do not agree."""
    rows, cols = shape
    s = np.asarray(scale)
    if s.size == 1:
        return s.reshape(1, 1), "tensor"
    if s.ndim == 1 and s.shape[0] == rows:
        s = s.reshape(rows, 1)
    if s.ndim != 2:
        raise ValueError(f"a scale of shape {tuple(scale.shape)} for a {rows}x{cols} weight")
    if s.shape == (rows, 1):
        return s, "channel"
    if s.shape[0] == rows and g_idx is not None:
        if g_idx.shape != (cols,) or g_idx.min() < 0 or g_idx.max() >= s.shape[1]:
            raise ValueError(f"g_idx of shape {g_idx.shape} does not index {s.shape[1]} groups")
        return s[:, g_idx], f"group {_ceil(cols, s.shape[1])} act-order"
    if s.shape[0] == rows and block is None and cols % s.shape[1] == 0:
        n = cols // s.shape[1]
        return np.repeat(s, n, axis=1), f"group {n}"
    br, bc = block if block is not None else (128, 128)
    if s.shape == (_ceil(rows, br), _ceil(cols, bc)):
        return np.repeat(np.repeat(s, br, axis=0)[:rows], bc, axis=1)[:, :cols], f"block {br}x{bc}"
    raise ValueError(f"a scale of shape {tuple(s.shape)} does not fit a {rows}x{cols} weight "
                     f"(per tensor, channel, group or {br}x{bc} block)")


def _block_of(qc: dict | None, args: dict | None = None) -> tuple[int, int] | None:
    for d in (args or {}, qc or {}):
        b = d.get("block_structure", d.get("weight_block_size"))
        if isinstance(b, (list, tuple)) and len(b) == 2 and all(isinstance(x, int) and x > 0
                                                                 for x in b):
            return int(b[0]), int(b[1])
    return None


# --- the formats -----------------------------------------------------------------------------------
def _new(ref: LayerRef, name: str, shape, quant: str, loader: Callable,
         part_loader: Callable | None = None) -> LayerRef:
    return replace(ref, name=name, shape=tuple(int(s) for s in shape), dtype="float32",
                   loader=loader, quant=quant, part_loader=part_loader)


def _fp8(ref, names, qc) -> _Found | None:
    """An FP8 (or int8) ``weight`` with ``weight_scale_inv`` / ``weight_scale`` [and zero point]."""
    if not ref.name.endswith(".weight") or len(ref.shape) != 2:
        return None
    base = ref.name[:-len(".weight")]
    scale = names.get(base + ".weight_scale_inv") or names.get(base + ".weight_scale")
    if scale is None or not (ref.dtype.startswith("float8") or ref.dtype == "int8"):
        return None
    zero = names.get(base + ".weight_zero_point")
    g_idx = names.get(base + ".weight_g_idx")
    args = _ct_weights(qc)
    block = _block_of(qc, args)
    kind = "fp8-" + ref.dtype[len("float8_"):].removesuffix("fn") if ref.dtype.startswith(
        "float8") else f"int{int(args.get('num_bits', 8))}"
    scheme = _scheme_from_shapes(scale.shape, ref.shape, block, g_idx is not None)
    if zero is not None and ref.dtype == "int8":
        scheme += " asym"

    def load():
        w = ref.load().astype(np.float32)
        s = scale.load().astype(np.float32)
        gi = None if g_idx is None else g_idx.load().astype(np.int64)
        se, _ = expand_scale(s, w.shape, block, gi)
        if zero is not None:
            w -= expand_scale(zero.load().astype(np.float32), w.shape, block, gi)[0]
        w *= se
        return w

    absorbs = tuple(n.name for n in (scale, zero, g_idx) if n is not None)
    return _Found(_new(ref, ref.name, ref.shape, f"{kind} {scheme}", load), absorbs)


def _fp8_fused(ref, names, qc) -> _Found | None:
    """A fused FP8 expert stack as transformers 5 saves it (``experts.gate_up_proj`` [E, out, in]
    with ``experts.gate_up_proj_scale_inv`` [E, ceil(out / 128), ceil(in / 128)]): each expert
    dequantized as a 2-D FP8 weight; ``part_loader(i)`` reads one."""
    if len(ref.shape) != 3 or not ref.dtype.startswith("float8"):
        return None
    scale = names.get(ref.name + "_scale_inv") or names.get(ref.name + "_scale")
    if scale is None or len(scale.shape) not in (1, 3) or scale.shape[0] != ref.shape[0]:
        return None
    block = _block_of(qc, _ct_weights(qc))
    kind = "fp8-" + ref.dtype[len("float8_"):].removesuffix("fn")
    sshape = (1, 1) if len(scale.shape) == 1 else scale.shape[1:]
    scheme = _scheme_from_shapes(sshape, ref.shape[1:], block, False)

    def one(w: np.ndarray, s: np.ndarray) -> np.ndarray:
        return w.astype(np.float32) * expand_scale(np.asarray(s, np.float32), w.shape, block)[0]

    def load():
        w, s = ref.load(), scale.load()
        return np.stack([one(w[i], s[i]) for i in range(w.shape[0])])

    def part(i: int):
        return one(_part(ref, i), _part(scale, i))

    return _Found(_new(ref, ref.name, ref.shape, f"{kind} {scheme}", load, part), (scale.name,))


def _scheme_from_shapes(sshape, wshape, block, act_order) -> str:
    try:
        return expand_scale(np.zeros(sshape, np.float32), tuple(wshape), block,
                            np.zeros(wshape[1], np.int64) if act_order else None)[1]
    except ValueError:
        return "unknown scale layout"


def _mxfp4(ref, names, qc) -> _Found | None:
    """gpt-oss's MXFP4 experts: ``X_blocks`` uint8 [..., R, G, 16] and ``X_scales`` [..., R, G]
    -> [..., G * 32, R] (transformers' convert_moe_packed_tensors: its transpose of the last two
    axes gives gpt-oss's [experts, in, out])."""
    if not ref.name.endswith("_blocks") or ref.dtype != "uint8" or len(ref.shape) != 4:
        return None  # gpt-oss stores experts only so; another MXFP4 layout is not guessed
    base = ref.name[:-len("_blocks")]
    scales = names.get(base + "_scales")
    if scales is None or tuple(scales.shape) != tuple(ref.shape[:-1]):
        return None
    *lead, rows, groups, nbytes = ref.shape
    cols = groups * nbytes * 2

    def convert(blocks: np.ndarray, sc: np.ndarray) -> np.ndarray:
        e = sc.astype(np.int32) - 127
        out = np.empty((*blocks.shape, 2), dtype=np.float32)
        out[..., 0] = E2M1[blocks & 0x0F]
        out[..., 1] = E2M1[blocks >> 4]
        out = np.ldexp(out.reshape(*blocks.shape[:-1], nbytes * 2), e[..., None])
        return np.swapaxes(out.reshape(*blocks.shape[:-2], cols), -1, -2)

    def load():
        return convert(ref.load(), scales.load())

    def part(i: int):
        return convert(_part(ref, i), _part(scales, i))

    return _Found(_new(ref, base, (*lead, cols, rows), f"mxfp4 e2m1 block {nbytes * 2}", load,
                       part), (scales.name,))


def _part(ref: LayerRef, i: int) -> np.ndarray:
    return ref.part_loader(i) if ref.part_loader is not None else ref.load()[i]


def _gptq_awq(ref, names, qc) -> _Found | None:
    """GPTQ or AWQ: ``qweight`` int32 with ``scales``, ``qzeros`` [and ``g_idx``]."""
    if not ref.name.endswith(".qweight") or len(ref.shape) != 2:
        return None
    base = ref.name[:-len(".qweight")]
    scales, qzeros = names.get(base + ".scales"), names.get(base + ".qzeros")
    g_idx = names.get(base + ".g_idx")
    if scales is None or len(scales.shape) != 2:
        return None
    qc = qc or {}
    method = str(qc.get("quant_method", "")).lower()
    bits = int(qc.get("bits", qc.get("w_bit", 4)))
    groups, out = scales.shape
    if method != "awq" and method != "gptq":
        method = "awq" if out == ref.shape[1] * 32 // bits and out != ref.shape[1] else "gptq"
    absorbs = tuple(n.name for n in (scales, qzeros, g_idx) if n is not None)
    if method == "awq":
        rows = ref.shape[0]
        version = str(qc.get("version", "gemm")).lower()
        if version not in ("gemm", "") or bits not in range(2, 9):
            return _Found(_refused(ref, base + ".weight",
                                   f"{UNSUPPORTED}: awq {version} at {bits} bits (AWQ GEMM at 2 "
                                   "to 8 bits is read)"), absorbs)
        if ref.shape[1] != _ceil(out * bits, 32) or qzeros is None:
            return None
        gs = rows // groups if groups and rows % groups == 0 else 0
        if not gs:
            return None

        def load():
            w = _awq_unpack(ref.load(), bits, out).astype(np.float32)  # [in, out]
            z = _awq_unpack(qzeros.load(), bits, out).astype(np.float32)
            s = scales.load().astype(np.float32)
            gi = np.arange(rows) // gs
            w -= z[gi]
            w *= s[gi]
            return np.ascontiguousarray(w.T)

        return _Found(_new(ref, base + ".weight", (out, rows), f"awq int{bits} g{gs}", load),
                      absorbs)
    # GPTQ: qweight [in * bits / 32, out], qzeros [groups, out * bits / 32], scales [groups, out]
    if ref.shape[1] != out or bits not in (2, 3, 4, 8):
        return None
    rows = ref.shape[0] * 32 // bits
    gs = int(qc.get("group_size", -1))
    gs = rows if gs <= 0 else gs
    sym = bool(qc.get("sym", True))
    v2 = str(qc.get("checkpoint_format", "gptq")).lower() == "gptq_v2"
    desc = " act-order" if qc.get("desc_act") else ""

    def load():
        q = unpack_bits(ref.load().T, bits, rows)  # [out, in]
        s = scales.load().astype(np.float32)  # [groups, out]
        gi = (g_idx.load().astype(np.int64) if g_idx is not None
              else np.arange(rows, dtype=np.int64) // gs)
        if gi.shape != (rows,) or gi.min() < 0 or gi.max() >= s.shape[0]:
            raise ValueError(f"{base}: g_idx does not index the {s.shape[0]} groups of "
                             f"{rows} inputs")
        if qzeros is not None:
            z = _gptq_zeros(qzeros.load(), bits, out, v2).astype(np.float32)  # [groups, out]
        else:
            z = np.full((s.shape[0], out), 1 << (bits - 1), np.float32)
        w = q.astype(np.float32)  # (q - zero) * scale, in place: one matrix and a temporary
        del q
        w -= z.T[:, gi]
        w *= s.T[:, gi]
        return w

    label = f"gptq int{bits} g{gs if gs != rows else -1}{desc}" + ("" if sym else " asym")
    return _Found(_new(ref, base + ".weight", (out, rows), label, load), absorbs)


def _gptq_zeros(words: np.ndarray, bits: int, count: int, v2: bool) -> np.ndarray:
    """GPTQ's zero points. checkpoint_format 'gptq' (v1) stores zero - 1, subtracted word by word
    at 2, 4 and 8 bits (0x11111111 at 4: a zero of 0 borrows from its neighbour, and adding the
    constant back word by word undoes it exactly) and value by value, modulo 2**bits, at 3 bits;
    gptqmodel's loader reverses it so, and so does this."""
    if v2:
        return unpack_bits(words, bits, count)
    if bits == 3:
        return (unpack_bits(words, bits, count) + 1) & 7
    one = sum(1 << k for k in range(0, 32, bits))
    fixed = (np.ascontiguousarray(words).view(np.uint32).astype(np.uint64) + one) & 0xFFFFFFFF
    return unpack_bits(fixed.astype(np.uint32).view(np.int32), bits, count)


def _awq_unpack(words: np.ndarray, bits: int, cols: int) -> np.ndarray:
    """AWQ GEMM's packing along the output axis: at 4 bits word c of a row holds columns
    8c + AWQ_ORDER[j] in nibble j; at other widths one little-endian bit stream (gptqmodel)."""
    if bits != 4:
        return unpack_bits(words, bits, cols)
    w = np.ascontiguousarray(words).view(np.uint32)
    out = np.empty((w.shape[0], w.shape[1], 8), dtype=np.uint8)
    for j, col in enumerate(AWQ_ORDER):
        out[:, :, col] = (w >> np.uint32(4 * j)) & 0xF
    return out.reshape(w.shape[0], -1)[:, :cols]


def _ct_weights(qc: dict | None) -> dict:
    """The weight arguments of a compressed-tensors config (its first config group's)."""
    groups = (qc or {}).get("config_groups")
    if isinstance(groups, dict):
        for g in groups.values():
            if isinstance(g, dict) and isinstance(g.get("weights"), dict):
                return g["weights"]
    return {}


def _packed(ref, names, qc) -> _Found | None:
    """compressed-tensors ``pack-quantized``: ``weight_packed`` int32 [out, ceil(in * bits / 32)]
    (values + 2**(bits - 1), one bit stream per row), ``weight_shape``, ``weight_scale``,
    ``weight_zero_point`` (packed along the output axis), ``weight_g_idx``."""
    if not ref.name.endswith(".weight_packed") or len(ref.shape) != 2:
        return None
    base = ref.name[:-len(".weight_packed")]
    scale = names.get(base + ".weight_scale")
    wshape = names.get(base + ".weight_shape")
    zero = names.get(base + ".weight_zero_point")
    g_idx = names.get(base + ".weight_g_idx")
    if scale is None:
        return None
    args = _ct_weights(qc)
    bits = int(args.get("num_bits", 4))
    absorbs = tuple(n.name for n in (scale, wshape, zero, g_idx) if n is not None)
    rows = ref.shape[0]
    cols = ref.shape[1] * 32 // bits  # at most; weight_shape (two numbers, read now) says exactly
    if wshape is not None:
        try:
            if math.prod(wshape.shape) > 8:
                raise ValueError(f"a weight_shape of {math.prod(wshape.shape)} values")
            shp = wshape.load().astype(np.int64).ravel()
        except Exception as exc:  # noqa: BLE001 - refused with the reason
            shp = np.array([-1, -1])
            why = str(exc).splitlines()[0]
        else:
            why = f"weight_shape {shp.tolist()}"
        if shp.size != 2 or shp[0] != rows or not 0 < shp[1] <= cols:
            return _Found(_refused(ref, base + ".weight",
                                   f"{UNSUPPORTED}: compressed-tensors {why} does not fit the "
                                   f"packed {rows}x{ref.shape[1]} words at {bits} bits"), absorbs)
        cols = int(shp[1])
    elif args.get("strategy") == "group" and args.get("group_size") and len(scale.shape) == 2:
        cols = min(cols, scale.shape[1] * int(args["group_size"]))
    block = _block_of(qc, args)
    scheme = _scheme_from_shapes(scale.shape, (rows, cols), block, g_idx is not None)

    def load():
        n_in = cols
        w = unpack_bits(ref.load(), bits, n_in).astype(np.float32)
        w -= np.float32(1 << (bits - 1))  # the signed values, exactly
        s = scale.load().astype(np.float32)
        gi = None if g_idx is None else g_idx.load().astype(np.int64)
        se, _ = expand_scale(s, (rows, n_in), block, gi)
        if zero is not None:
            zw = zero.load()
            z = (unpack_bits(zw.T, bits, rows).T.astype(np.float32) - (1 << (bits - 1))) \
                if zw.dtype == np.int32 and zw.shape[0] != rows else zw.astype(np.float32)
            w -= expand_scale(z, (rows, n_in), block, gi)[0]
        w *= se
        return w

    label = f"int{bits} packed {scheme}" + (" asym" if zero is not None else "")
    return _Found(_new(ref, base + ".weight", (rows, cols), label, load), absorbs)


def _bnb4(ref, names, qc) -> _Found | None:
    """bitsandbytes nf4/fp4: uint8 ``weight`` (two 4-bit codes a byte, high nibble first),
    ``weight.absmax`` per ``blocksize`` values (uint8 codes of a nested quantization when
    ``weight.nested_absmax`` is there), ``weight.quant_map`` and the JSON quant_state blob."""
    if not ref.name.endswith(".weight") or ref.dtype != "uint8":
        return None
    blob = next((names[n] for n in (ref.name + ".quant_state.bitsandbytes__nf4",
                                    ref.name + ".quant_state.bitsandbytes__fp4") if n in names),
                None)
    absmax, qmap = names.get(ref.name + ".absmax"), names.get(ref.name + ".quant_map")
    if blob is None or absmax is None or qmap is None:
        return None
    n_absmax, n_map = names.get(ref.name + ".nested_absmax"), names.get(ref.name + ".nested_quant_map")
    kind = blob.name.rsplit("__", 1)[1]
    absorbs = tuple(n.name for n in (blob, absmax, qmap, n_absmax, n_map) if n is not None)
    # the shape is in the blob: read it now (a few hundred bytes, never a weight)
    try:
        if math.prod(blob.shape) > 1 << 16:
            raise ValueError(f"{math.prod(blob.shape)} bytes, not a quant_state")
        state = json.loads(bytes(blob.load().astype(np.uint8)).decode("utf-8"))
        shape = tuple(int(s) for s in state["shape"])
        blocksize = int(state["blocksize"])
    except Exception as exc:  # noqa: BLE001 - refused with the reason
        return _Found(_refused(ref, ref.name, f"{UNSUPPORTED}: bitsandbytes {kind} quant_state "
                                              f"unreadable ({str(exc).splitlines()[0]})"), absorbs)
    count = math.prod(shape)
    nested = n_absmax is not None

    def load():
        packed = ref.load().astype(np.uint8).ravel()
        codes = np.empty(packed.size * 2, dtype=np.uint8)
        codes[0::2], codes[1::2] = packed >> 4, packed & 0x0F
        if codes.size < count:
            raise ValueError(f"{ref.name}: {packed.size} bytes hold fewer than {count} values")
        am = absmax.load()
        if nested:
            nb = int(state.get("nested_blocksize", 256))
            nam = n_absmax.load().astype(np.float32).ravel()
            code = n_map.load().astype(np.float32).ravel()
            am = code[am.astype(np.uint8).ravel()] * np.repeat(nam, nb)[:am.size]
            am = am + np.float32(state.get("nested_offset", 0.0))
        am = np.asarray(am, np.float32).ravel()
        qm = qmap.load().astype(np.float32).ravel()
        w = qm[codes[:count]] * np.repeat(am, blocksize)[:count]
        return w.reshape(shape)

    label = f"bnb {kind} b{blocksize}" + (" nested" if nested else "")
    return _Found(_new(ref, ref.name, shape, label, load), absorbs)


def _bnb8(ref, names, qc) -> _Found | None:
    """bitsandbytes LLM.int8(): int8 ``weight`` [out, in] and ``SCB`` [out]: w * SCB / 127 (as
    bitsandbytes computes it: times SCB, then times float32(1 / 127))."""
    if not ref.name.endswith(".weight") or ref.dtype != "int8" or len(ref.shape) != 2:
        return None
    base = ref.name[:-len(".weight")]
    scb = names.get(base + ".SCB")
    if scb is None or tuple(scb.shape) != (ref.shape[0],):
        return None
    fmt = names.get(base + ".weight_format")

    def load():
        w = ref.load().astype(np.float32) * scb.load().astype(np.float32)[:, None]
        return w * np.float32(7.874015718698502e-3)

    absorbs = tuple(n.name for n in (scb, fmt) if n is not None)
    return _Found(_new(ref, ref.name, ref.shape, "bnb int8 channel", load), absorbs)


_FORMATS = (_mxfp4, _gptq_awq, _packed, _bnb4, _bnb8, _fp8, _fp8_fused)


def _refused(ref: LayerRef, name: str, why: str) -> LayerRef:
    return replace(ref, name=name, quant=why, part_loader=None)


def dequantized(src: Source) -> Source:
    """``src`` with its quantized tensors and their companions replaced by one floating-point
    ``LayerRef`` each (``quant`` set); unchanged when nothing is quantized."""
    qc = quant_config(src.config)
    method = str(qc.get("quant_method", "")) if qc else ""
    names = {r.name: r for r in src.refs}
    found: dict[str, _Found] = {}
    absorbed: set[str] = set()
    for ref in src.refs:
        if ref.name in absorbed:
            continue
        for fmt in _FORMATS:
            hit = fmt(ref, names, qc)
            if hit is not None:
                found[ref.name] = hit
                absorbed.update(hit.absorbs)
                break
    if not found and not qc:
        return src  # a float model (a tensor named like a companion is its own business)
    # activation scales of a dequantized weight are absorbed with it
    bases = {f.ref.name.removesuffix(".weight") for f in found.values()}
    for r in src.refs:
        for suffix in _ACTIVATION:
            if r.name.endswith(suffix) and r.name[:-len(suffix)] in bases:
                absorbed.add(r.name)
    refs = []
    unknown = method and method not in SUPPORTED
    for r in src.refs:
        if r.name in absorbed and r.name not in found:
            continue
        if r.name in found:
            refs.append(found[r.name].ref)
        elif unknown and len(r.shape) >= 2 and (not r.is_float or not r.name.endswith("weight")):
            refs.append(replace(r, quant=f"{UNSUPPORTED}: quant_method {method!r} is not read "
                                         f"(read: {', '.join(SUPPORTED)})"))
        elif _COMPANION.search(r.name) and len(r.shape) >= 2:
            refs.append(replace(r, quant=f"{UNSUPPORTED}: a quantization companion"
                                         f"{f' ({method})' if method else ''} whose weight was "
                                         "not found or not understood"))
        elif method and not r.is_float and len(r.shape) >= 2:
            refs.append(replace(r, quant=f"{UNSUPPORTED}: a {r.dtype} tensor of a {method} "
                                         "checkpoint in no layout this reader knows"))
        else:
            refs.append(r)
    refs = [replace(r, index=i) for i, r in enumerate(refs)]
    n_deq = sum(1 for f in found.values() if not f.ref.quant.startswith(UNSUPPORTED))
    n_abs = len(absorbed - set(found))
    note = f"{n_deq} quantized weights dequantized ({method or 'recognised from the tensors'}); " \
           f"{n_abs} companion tensors (scales, zero points, indices) absorbed"
    return replace(src, refs=tuple(refs), note="; ".join(x for x in (src.note, note) if x))
