"""ONNX models (the ``onnx`` package; no onnxruntime): the weights of Gemm, MatMul, Conv,
ConvTranspose, Gather (embeddings), LSTM, GRU and RNN nodes, in graph order, subgraphs included,
and of their quantized forms: MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv and
onnxruntime's DynamicQuantizeLSTM, whose integer weights are dequantized as
(q - zero point) * scale in float32, per tensor or per channel (the output axis). A QLinear op
names its weight scale; an Integer op's scale is the constant its output is multiplied by
(onnxruntime's dynamic quantization: Cast, then Mul by the input's scale times the weight's);
when none is found, that layer fails with a reason. onnxruntime's ``_quantized`` suffix is
dropped from a weight's name, so a quantized model's layers carry the float model's names.

A weight is an initializer or a ``Constant`` node, or a value computed from them by data-movement
nodes only (Identity, Cast, Reshape, Transpose, Slice, Concat, (Un)Squeeze; PyTorch's exporter
reorders LSTM gates that way) or by DequantizeLinear (the int8 weights of a quantized
model). Such values are folded here with numpy when the model is opened.
Dense weights are given in PyTorch's (out, in) layout: a Gemm's B is transposed unless
``transB=1``, a MatMul's constant right operand is transposed. LSTM/GRU/RNN weights W
([dirs, G*H, in]) and R ([dirs, G*H, H]) give one matrix per direction, with the ONNX gate order
('iofc' for LSTM, 'zrh' for GRU) in ``LayerRef.gates``. Names are the initializers' names, or
``<node name>.<input>`` when the initializer is anonymous (``onnx::MatMul_123``) or computed.

External data (models over 2 GB) is memory-mapped from the files beside the model, lazily.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..util.errors import one_line
from ..util.optional import require
from .base import Probe, Reader, Source, SourceError, numbered, read_exact, unique_namer

_MOVES = {"Identity", "Cast", "Reshape", "Transpose", "Slice", "Concat", "Squeeze", "Unsqueeze",
          "DequantizeLinear"}
_RNN_GATES = {"LSTM": "iofc", "GRU": "zrh", "RNN": ""}
_MAX_FOLD_DEPTH = 32


def import_onnx():
    """onnx, or a SourceError naming the extra that installs it."""
    return require("onnx", "reading ONNX models", error=SourceError)


class _Model:
    """The constants, producers and weight-consuming nodes of a model, subgraphs included."""

    def __init__(self, model, path: Path):
        onnx = import_onnx()
        self.onnx = onnx
        self.path = path
        self.consts: dict[str, object] = {}
        self.producers: dict[str, object] = {}
        self.consumers: dict[str, list] = {}
        self.nodes: list = []
        self._walk(model.graph)

    def _walk(self, graph) -> None:
        for t in graph.initializer:
            self.consts.setdefault(t.name, t)
        for node in graph.node:
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value" and node.output:
                        self.consts.setdefault(node.output[0], a.t)
                continue
            for out in node.output:
                self.producers.setdefault(out, node)
            for i in node.input:
                self.consumers.setdefault(i, []).append(node)
            self.nodes.append(node)
            for a in node.attribute:  # If / Loop / Scan bodies, in place
                if a.type == self.onnx.AttributeProto.GRAPH:
                    self._walk(a.g)
                for g in a.graphs:
                    self._walk(g)

    # --- reading one tensor ---------------------------------------------------------------------
    def dtype_name(self, t) -> str:
        try:
            return str(np.dtype(self.onnx.helper.tensor_dtype_to_np_dtype(t.data_type)))
        except Exception:  # noqa: BLE001 - float8 and friends: listed, reported per layer
            return self.onnx.TensorProto.DataType.Name(t.data_type).lower()

    def external(self, t) -> tuple[Path, int, int | None] | None:
        if t.data_location != self.onnx.TensorProto.EXTERNAL:
            return None
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        rel = Path(location)
        if not location or rel.is_absolute() or ".." in rel.parts:
            raise SourceError(f"{self.path}: tensor {t.name!r} points at external data "
                              f"{location!r} outside the model's folder; refused")
        file = self.path.parent / rel
        if not file.is_file():
            raise SourceError(f"{self.path}: the external data file {location} of tensor "
                              f"{t.name!r} is missing (it must sit beside the model file)")
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
        if offset + (length or 0) > os.path.getsize(file):
            raise SourceError(f"{self.path}: the external data file {location} is shorter than "
                              f"tensor {t.name!r} needs; it may be truncated")
        return file, offset, length

    def array(self, t) -> np.ndarray:
        ext = self.external(t)
        if ext is not None:
            file, offset, _ = ext
            dtype = np.dtype(self.onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
            bf16 = t.data_type == self.onnx.TensorProto.BFLOAT16
            shape = tuple(int(d) for d in t.dims)
            if int(np.prod(shape)) == 0:
                return np.empty(shape, dtype=np.float32 if bf16 else dtype)
            mm = read_exact(file, offset, np.uint16 if bf16 else dtype, shape)
            return (mm.astype(np.uint32) << 16).view(np.float32) if bf16 else mm
        a = self.onnx.numpy_helper.to_array(t)
        if a.dtype.kind == "V" or a.dtype.name == "bfloat16":
            a = a.astype(np.float32)  # ml_dtypes' bfloat16: numpy has no such dtype
        return a

    def pure_root(self, name: str) -> str | None:
        """The constant that ``name`` is, up to Identity / Cast / Transpose nodes, else None."""
        for _ in range(_MAX_FOLD_DEPTH):
            if name in self.consts:
                return name
            node = self.producers.get(name)
            if node is None or node.op_type not in ("Identity", "Cast", "Transpose"):
                return None
            name = node.input[0]
        return None

    def scale_after(self, out: str) -> str | None:
        """The constant weight scale that the integer output ``out`` of a MatMulInteger or
        ConvInteger is multiplied by downstream (onnxruntime's dynamic quantization: Cast, then
        Mul by the product of the input's and the weight's scales), else None."""
        name = out
        for _ in range(_MAX_FOLD_DEPTH):
            users = self.consumers.get(name, [])
            if len(users) != 1 or not users[0].output:
                return None
            node = users[0]
            if node.op_type in ("Cast", "Identity"):
                name = node.output[0]
                continue
            if node.op_type != "Mul" or len(node.input) != 2:
                return None
            other = node.input[1] if node.input[0] == name else node.input[0]
            if self.fold(other) is not None:
                return other
            prod = self.producers.get(other)
            if prod is not None and prod.op_type == "Mul":
                consts = [i for i in prod.input if self.fold(i) is not None]
                if len(consts) == 1:
                    return consts[0]
            return None
        return None

    # --- constant folding of data-movement chains -----------------------------------------------
    def fold(self, name: str, depth: int = 0) -> np.ndarray | None:
        """The value of ``name`` when it is a constant or moved from constants only, else None."""
        if name in self.consts:
            return self.array(self.consts[name])
        node = self.producers.get(name)
        if node is None or node.op_type not in _MOVES or depth > _MAX_FOLD_DEPTH:
            return None
        ins = []
        for i in node.input:
            if not i:
                ins.append(None)
                continue
            v = self.fold(i, depth + 1)
            if v is None:
                return None
            ins.append(v)
        attrs = {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}
        try:
            return _apply(node.op_type, ins, attrs, self.onnx)
        except Exception:  # noqa: BLE001 - an op we cannot fold: not a weight we can read
            return None


def _apply(op: str, ins: list, attrs: dict, onnx) -> np.ndarray:
    x = np.asarray(ins[0])
    if op == "Identity":
        return x
    if op == "Cast":
        return x.astype(onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))
    if op == "Transpose":
        return np.transpose(x, attrs.get("perm"))
    if op == "Reshape":
        shape = [int(s) for s in ins[1]]
        shape = [x.shape[i] if s == 0 and not attrs.get("allowzero") else s
                 for i, s in enumerate(shape)]
        return x.reshape(shape)
    if op == "Concat":
        return np.concatenate([np.asarray(v) for v in ins], axis=attrs["axis"])
    if op in ("Squeeze", "Unsqueeze"):
        axes = attrs.get("axes")
        if axes is None and len(ins) > 1 and ins[1] is not None:
            axes = [int(a) for a in ins[1]]
        if op == "Squeeze":
            return np.squeeze(x, axis=tuple(axes)) if axes is not None else np.squeeze(x)
        out = x
        ndim = x.ndim + len(axes)
        for a in sorted(a % ndim for a in axes):
            out = np.expand_dims(out, a)
        return out
    if op == "Slice":
        if "starts" in attrs:  # opset < 10
            starts, ends = attrs["starts"], attrs["ends"]
            axes, steps = attrs.get("axes"), None
        else:
            starts, ends = [int(v) for v in ins[1]], [int(v) for v in ins[2]]
            axes = [int(v) for v in ins[3]] if len(ins) > 3 and ins[3] is not None else None
            steps = [int(v) for v in ins[4]] if len(ins) > 4 and ins[4] is not None else None
        axes = list(range(len(starts))) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
        index = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts, ends, axes, steps):
            index[a] = slice(s, e, st)
        return x[tuple(index)]
    if op == "DequantizeLinear":  # int8/uint8 weights of a quantized model: (x - zero) * scale
        if attrs.get("block_size"):
            raise ValueError("blocked quantization")
        return dequantize(x, ins[1], ins[2] if len(ins) > 2 else None, attrs.get("axis", 1))
    raise ValueError(op)


def _per_axis(v, x: np.ndarray, axis: int, what: str) -> np.ndarray:
    """A per-tensor (one value) or per-axis (one value per slice along ``axis``) quantization
    parameter as a float32 array that broadcasts against ``x``."""
    v = np.asarray(v).astype(np.float32)
    if v.size == 1:
        return v.reshape(())
    axis %= x.ndim
    if v.size != x.shape[axis]:
        raise ValueError(f"a {what} of shape {v.shape} does not fit a weight of shape {x.shape}")
    shape = [1] * x.ndim
    shape[axis] = -1
    return v.reshape(shape)


def dequantize(q: np.ndarray, scale, zero=None, axis: int = 1) -> np.ndarray:
    """ONNX's linear dequantization, in float32: (q - zero) * scale, with a per-tensor scale and
    zero point or one per slice along ``axis`` (DequantizeLinear's, and the integer ops')."""
    q = np.asarray(q)
    s = _per_axis(scale, q, axis, "scale")
    z = np.float32(0) if zero is None else _per_axis(zero, q, axis, "zero point")
    return (q.astype(np.float32) - z) * s


def _input(ins: list[str], k: int) -> str:
    """A node's k-th input name, '' when absent."""
    return ins[k] if len(ins) > k else ""


def _anonymous(name: str) -> bool:
    return not name or name.startswith("onnx::")


def open_onnx(path: Path) -> Source:
    """The weight matrices of an ONNX model file (see the module docstring)."""
    onnx = import_onnx()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise SourceError(f"{path}: not a readable ONNX model, truncated or damaged? "
                          f"({one_line(exc)})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise SourceError(f"{path}: not an ONNX model (no graph), or a truncated one")
    m = _Model(model, Path(path))
    items: list[tuple] = []
    seen_consts: set[str] = set()
    seen_folded: set[tuple] = set()
    unique = unique_namer()

    def node_label(node) -> str:
        return node.name or f"{node.op_type}:{node.output[0] if node.output else ''}"

    def direct(input_name: str, node, role: str, transpose: bool, ndims: tuple[int, ...]):
        """A weight that is an initializer or Constant: read lazily."""
        t = m.consts[input_name]
        if len(t.dims) not in ndims or input_name in seen_consts:
            return
        seen_consts.add(input_name)
        m.external(t)  # a missing external file fails now, in one line
        shape = tuple(int(d) for d in t.dims)
        name = f"{node_label(node)}.{role}" if _anonymous(input_name) else input_name
        load = (lambda t=t: m.array(t).T) if transpose else (lambda t=t: m.array(t))
        items.append((unique(name), shape[::-1] if transpose else shape, m.dtype_name(t), load))

    def computed(input_name: str, role: str, ndims: tuple[int, ...]):
        """(shape, dtype) of a weight moved from constants (e.g. exporter-reordered LSTM gates),
        folded once now and again when loaded, so no folded copy is held; None when it is not one
        or when the same values were already listed (e.g. both branches of an If)."""
        a = m.fold(input_name)
        if a is None or a.ndim not in ndims:
            return None
        key = (role, a.shape, str(a.dtype), hashlib.blake2b(np.ascontiguousarray(a).tobytes(),
                                                            digest_size=16).digest())
        if key in seen_folded:
            return None
        seen_folded.add(key)
        return a.shape, str(a.dtype)

    def folded_loader(input_name: str, transpose: bool = False, direction: int | None = None):
        def load() -> np.ndarray:
            a = m.fold(input_name)
            if a is None:
                raise SourceError(f"{path}: cannot compute {input_name!r} any more")
            a = a if direction is None else a[direction]
            return a.T if transpose else a
        return load

    def weight(input_name: str, node, role: str, transpose: bool = False, ndims=(2,)):
        if not input_name:
            return
        if input_name in m.consts:
            direct(input_name, node, role, transpose, ndims)
            return
        root = m.pure_root(input_name)
        if root is not None and root in seen_consts:
            return
        found = computed(input_name, role, ndims)
        if found is not None:
            # a named initializer seen through Transpose/Cast keeps its name
            named = root is not None and not _anonymous(root)
            if named:
                seen_consts.add(root)
            shape, dtype = found
            items.append((unique(root if named else f"{node_label(node)}.{role}"),
                          shape[::-1] if transpose else shape, dtype,
                          folded_loader(input_name, transpose)))

    def recurrent(node) -> None:
        gates = _RNN_GATES[node.op_type]
        for k, role in ((1, "W"), (2, "R")):
            if len(node.input) <= k or not node.input[k]:
                continue
            name = node.input[k]
            if name in m.consts:
                if name in seen_consts:
                    continue
                seen_consts.add(name)
                t = m.consts[name]
                m.external(t)
                shape, dtype = tuple(int(d) for d in t.dims), m.dtype_name(t)
            else:
                found = computed(name, role, (3,))
                if found is None:
                    continue
                t, (shape, dtype) = None, found
            if len(shape) != 3:
                continue
            for d in range(shape[0]):
                suffix = "" if d == 0 else "_reverse"
                load = (lambda t=t, d=d: m.array(t)[d]) if t is not None else \
                    folded_loader(name, direction=d)
                extra = {"gates": gates, "role": "recurrent"}
                items.append((unique(f"{node_label(node)}.{role}{suffix}"), shape[1:], dtype, load,
                              extra))

    def int_weight(node, k: int, scale_name: str | None, zero_name: str, axis: int,
                   role: str, transpose: bool, ndims: tuple[int, ...]):
        """An integer weight (input ``k``) dequantized with its scale and zero point."""
        ins = list(node.input)
        name = ins[k] if len(ins) > k else ""
        if not name:
            return
        root = m.pure_root(name)
        if root is not None and root in seen_consts:
            return
        if name in m.consts:
            shape, ok = tuple(int(d) for d in m.consts[name].dims), True
            m.external(m.consts[name])
        else:
            a = m.fold(name)
            shape, ok = (a.shape, True) if a is not None else ((), False)
        if not ok or len(shape) not in ndims:
            return
        if root is not None:
            seen_consts.add(root)
        label = (root.removesuffix("_quantized") if root is not None and not _anonymous(root)
                 else f"{node_label(node)}.{role}")

        def load() -> np.ndarray:
            if scale_name is None:
                raise SourceError(f"{path}: {label}: the scale of this {node.op_type} weight is "
                                  "not found in the graph (no Mul by a constant after it)")
            q, scale = m.fold(name), m.fold(scale_name)
            zero = m.fold(zero_name) if zero_name else None
            if q is None or scale is None or (zero_name and zero is None):
                raise SourceError(f"{path}: {label}: cannot compute the quantized weight")
            try:
                w = dequantize(q, scale, zero, axis)
            except ValueError as exc:
                raise SourceError(f"{path}: {label}: {exc}") from None
            return w.T if transpose else w

        items.append((unique(label), shape[::-1] if transpose else shape, "float32", load))

    def quantized_lstm(node) -> None:
        """com.microsoft DynamicQuantizeLSTM: W [dirs, in, 4H] and R [dirs, H, 4H] int8, scales
        and zero points per direction or per direction and column (inputs 8-11)."""
        ins = list(node.input)
        for k, role, sk, zk in ((1, "W", 8, 9), (2, "R", 10, 11)):
            name = ins[k] if len(ins) > k else ""
            if not name or name in seen_consts or name not in m.consts:
                continue
            t = m.consts[name]
            shape = tuple(int(d) for d in t.dims)
            if len(shape) != 3:
                continue
            seen_consts.add(name)
            scale_name = ins[sk] if len(ins) > sk else ""
            zero_name = ins[zk] if len(ins) > zk else ""
            for d in range(shape[0]):
                label = f"{node_label(node)}.{role}" + ("" if d == 0 else "_reverse")

                def load(d=d, label=label, name=name, scale_name=scale_name,
                         zero_name=zero_name) -> np.ndarray:
                    q = m.fold(name)
                    scale = m.fold(scale_name) if scale_name else None
                    zero = m.fold(zero_name) if zero_name else None
                    if scale is None:
                        raise SourceError(f"{path}: {label}: no scale for this quantized weight")
                    scale = np.asarray(scale)
                    scale = scale[d] if scale.ndim and scale.shape[0] == q.shape[0] else scale
                    if zero is not None:
                        zero = np.asarray(zero)
                        zero = zero[d] if zero.ndim and zero.shape[0] == q.shape[0] else zero
                    try:
                        return dequantize(q[d], scale, zero, axis=1).T  # -> [4H, in]
                    except ValueError as exc:
                        raise SourceError(f"{path}: {label}: {exc}") from None
                items.append((unique(label), (shape[2], shape[1]), "float32", load,
                              {"gates": "iofc", "role": "recurrent"}))

    for node in m.nodes:
        op, ins = node.op_type, list(node.input)
        attrs = {a.name: a for a in node.attribute}
        if op == "Gemm" and len(ins) >= 2:
            trans_b = bool(attrs["transB"].i) if "transB" in attrs else False
            weight(ins[1], node, "B", transpose=not trans_b)
        elif op == "MatMul" and len(ins) == 2:
            if ins[1] in m.consts or m.producers.get(ins[1]) is not None and \
                    m.producers[ins[1]].op_type in _MOVES:
                weight(ins[1], node, "B", transpose=True)
            else:
                weight(ins[0], node, "A")
        elif op in ("Conv", "ConvTranspose") and len(ins) >= 2:
            weight(ins[1], node, "W", ndims=(3, 4, 5))
        elif op == "Gather" and ins and ins[0] in m.consts:
            t = m.consts[ins[0]]
            if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                               onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE):
                weight(ins[0], node, "embedding")
            elif t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and node.output:
                # onnxruntime's quantized embedding: Gather(int table) -> DequantizeLinear
                users = m.consumers.get(node.output[0], [])
                if len(users) == 1 and users[0].op_type == "DequantizeLinear" and \
                        len(users[0].input) > 1:
                    dq = list(users[0].input)
                    int_weight(node, 0, dq[1], dq[2] if len(dq) > 2 else "", 1, "embedding",
                               False, (2,))
        elif op in _RNN_GATES:
            recurrent(node)
        elif op == "MatMulInteger" and node.output:
            int_weight(node, 1, m.scale_after(node.output[0]), _input(ins, 3), 1, "B", True, (2,))
        elif op == "ConvInteger" and node.output:
            int_weight(node, 1, m.scale_after(node.output[0]), _input(ins, 3), 0, "W", False,
                       (3, 4))
        elif op == "QLinearMatMul" and len(ins) > 4:
            int_weight(node, 3, ins[4], _input(ins, 5), 1, "B", True, (2,))
        elif op == "QLinearConv" and len(ins) > 4:
            int_weight(node, 3, ins[4], _input(ins, 5), 0, "W", False, (3, 4))
        elif op == "DynamicQuantizeLSTM":
            quantized_lstm(node)
    if not items:
        raise SourceError(f"{path}: an ONNX model with no weights of Gemm, MatMul, Conv, Gather, "
                          "LSTM, GRU, RNN or their quantized forms (MatMulInteger, ConvInteger, "
                          "QLinearMatMul, QLinearConv, DynamicQuantizeLSTM)")
    return Source(numbered(items, str(path)), "onnx", (str(path),))


# --- the reader ---------------------------------------------------------------------------------
_ONNX_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2, 0xAA}


def _looks_like_onnx(head: bytes) -> bool:
    """A serialized ModelProto: field 1 (ir_version, a small varint), then another of its fields."""
    if len(head) < 3 or head[0] != 0x08:
        return False
    i, value, shift = 1, 0, 0
    while i < len(head) and head[i] & 0x80:
        value |= (head[i] & 0x7F) << shift
        i, shift = i + 1, shift + 7
    if i >= len(head) - 1:
        return False
    value |= head[i] << shift
    return 1 <= value <= 100 and head[i + 1] in _ONNX_TAGS


def _recognise(probe: Probe) -> str | None:
    return "onnx" if _looks_like_onnx(probe.head) else None


def _open_file(path: Path, variant: str, trust_pickle: bool) -> Source:
    return open_onnx(path)


# by_suffix: a damaged .onnx file gets the ONNX reader's message, not "unknown format"
READER = Reader(
    name="onnx", phrase="an ONNX model", recognise=_recognise, open_file=_open_file,
    patterns=("*.onnx",), suffixes=(".onnx",), heuristic=True, by_suffix=True, requires="onnx")
