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
reorders LSTM gates that way) or by DequantizeLinear (the int8/int4 weights of a quantized
model: per tensor, per axis, or blocked as opset 21 defines it, ``dequantize_linear``). Such
values are folded here with numpy when the model is opened. A weight that exists and cannot be
read is still listed, so that it is a failed row with its reason, never a weight that vanishes:
a DequantizeLinear whose scale or zero point is not a constant or does not fit its weight, a
weight computed from constants by another op (a Mul, an Add), or an operand of a rank its op does
not take (a batched MatMul's 3-D constant).
Dense weights are given in PyTorch's (out, in) layout: a Gemm's B is transposed unless
``transB=1``, a MatMul's constant right operand is transposed. LSTM/GRU/RNN weights W
([dirs, G*H, in]) and R ([dirs, G*H, H]) give one matrix per direction, with the ONNX gate order
('iofc' for LSTM, 'zrh' for GRU) in ``LayerRef.gates``. Names are the initializers' names, or
``<node name>.<input>`` when the initializer is anonymous (``onnx::MatMul_123``) or computed.

External data (models over 2 GB) is read, not memory-mapped, from the files beside the model,
lazily, after its fields are checked: a location inside the model's folder (no ``..``, absolute
path or symlink out of it), a regular file (a FIFO or a folder is named as such), a whole
non-negative offset and length, non-negative dimensions, and the bytes there.
"""

from __future__ import annotations

import hashlib
import math
import stat
from pathlib import Path

import numpy as np

from ..util.errors import one_line, printable
from ..util.optional import require
from .base import (
    Probe,
    Reader,
    Source,
    SourceError,
    file_kind,
    numbered,
    read_exact,
    unique_namer,
)

_MOVES = {"Identity", "Cast", "Reshape", "Transpose", "Slice", "Concat", "Squeeze", "Unsqueeze",
          "DequantizeLinear"}
_RNN_GATES = {"LSTM": "iofc", "GRU": "zrh", "RNN": ""}
_MAX_FOLD_DEPTH = 32
_PACKED = ("int4", "uint4", "int2", "uint2", "float4_e2m1fn")


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
        self.roots: dict[str, set[str]] = {}
        self.initializers: list[str] = []  # in file order, subgraphs included
        self.sparse: dict[str, object] = {}  # sparse initializers, by name
        self._walk(model.graph)

    def _walk(self, graph) -> None:
        for t in graph.initializer:
            if t.name not in self.consts:
                self.initializers.append(t.name)
            self.consts.setdefault(t.name, self.checked(t))
        for sp in graph.sparse_initializer:  # listed, not read: a failed row with its reason
            self.sparse.setdefault(sp.values.name, sp)
        for node in graph.node:
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value" and node.output:
                        self.consts.setdefault(node.output[0], self.checked(a.t))
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

    def checked(self, t):
        """A constant whose dimensions are whole numbers >= 0 (the model is refused otherwise:
        a negative dimension would become a row with a negative size)."""
        if any(d < 0 for d in t.dims):
            raise SourceError(f"{self.path}: tensor {printable(t.name)!r} declares a negative "
                              f"dimension {list(t.dims)}; a damaged model")
        return t

    # --- reading one tensor ---------------------------------------------------------------------
    def dtype_name(self, t) -> str:
        try:
            return str(np.dtype(self.onnx.helper.tensor_dtype_to_np_dtype(t.data_type)))
        except Exception:  # noqa: BLE001 - float8 and friends: listed, reported per layer
            try:
                return self.onnx.TensorProto.DataType.Name(t.data_type).lower()
            except ValueError:  # a type ONNX does not define: listed, fails when read
                return f"data type {t.data_type}"

    def external(self, t) -> tuple[Path, int, int | None] | None:
        """(file, offset, length) of a tensor stored in an external data file, checked: a
        location inside the model's folder (symlinks resolved), a regular file, whole
        non-negative offset and length, the bytes there. None for a tensor stored inline."""
        if t.data_location != self.onnx.TensorProto.EXTERNAL:
            return None
        where = f"{self.path}: tensor {printable(t.name)!r}"
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        rel = Path(location)
        folder = self.path.parent.resolve()
        if not location or "\0" in location or rel.is_absolute() or ".." in rel.parts:
            raise SourceError(f"{where} points at external data {printable(location)!r} outside "
                              "the model's folder; refused")
        file = self.path.parent / rel
        try:
            real = file.resolve()
            st = file.stat()
        except FileNotFoundError:
            raise SourceError(f"{self.path}: the external data file {printable(location)} of "
                              f"tensor {printable(t.name)!r} is missing (it must sit beside the "
                              "model file)") from None
        except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long, no permission
            raise SourceError(f"{where}: its external data file {printable(location)} cannot "
                              f"be opened ({one_line(exc)})") from None
        if not real.is_relative_to(folder):
            raise SourceError(f"{where}: its external data file {printable(location)} is a link "
                              "to a file outside the model's folder; refused")
        if stat.S_ISDIR(st.st_mode):
            raise SourceError(f"{where}: its external data {printable(location)} is a folder, "
                              "not a file")
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"{where}: its external data {printable(location)} is not a "
                              f"regular file ({file_kind(file)})")
        offset = _whole(info.get("offset", "0"), "offset", where)
        length = _whole(info["length"], "length", where) if "length" in info else None
        need = self.nbytes(t)
        if length is not None and need is not None and length < need:
            raise SourceError(f"{where}: its external data length {length} is smaller than its "
                              f"{need} bytes of shape {list(t.dims)}")
        if offset + max(length or 0, need or 0) > st.st_size:
            raise SourceError(f"{self.path}: the external data file {printable(location)} is "
                              f"shorter than tensor {printable(t.name)!r} needs; it may be "
                              "truncated")
        return file, offset, length

    def nbytes(self, t) -> int | None:
        """The bytes of a tensor's values as stored (4-bit types packed two to a byte), None for
        a type numpy cannot hold."""
        n = math.prod(int(d) for d in t.dims)
        try:
            dtype = np.dtype(self.onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
        except Exception:  # noqa: BLE001 - an unknown data type: listed, fails when loaded
            return None
        return (n + 1) // 2 if dtype.name in _PACKED else n * dtype.itemsize

    def array(self, t) -> np.ndarray:
        ext = self.external(t)
        if ext is not None:
            file, offset, _ = ext
            try:
                dtype = np.dtype(self.onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
            except Exception:  # noqa: BLE001 - KeyError for a type ONNX does not define
                raise SourceError(f"{self.path}: tensor {printable(t.name)!r} has data type "
                                  f"{t.data_type}, which tailscope cannot read") from None
            shape = tuple(int(d) for d in t.dims)
            if dtype.kind == "V" or dtype.name in _PACKED or dtype.name == "bfloat16":
                # bf16, float8, 4-bit: onnx unpacks the bytes read, as it would inline data
                raw = read_exact(file, offset, np.uint8, (self.nbytes(t),)).tobytes()
                inline = self.onnx.TensorProto()
                inline.CopyFrom(t)
                inline.ClearField("external_data")
                inline.data_location = self.onnx.TensorProto.DEFAULT
                inline.raw_data = raw
                return self.inline(inline)
            if int(np.prod(shape)) == 0:
                return np.empty(shape, dtype=dtype)
            return read_exact(file, offset, dtype, shape)
        return self.inline(t)

    def inline(self, t) -> np.ndarray:
        try:
            a = self.onnx.numpy_helper.to_array(t)
        except Exception as exc:  # noqa: BLE001 - a damaged tensor: its values do not fit
            raise SourceError(f"{self.path}: tensor {printable(t.name)!r} cannot be read "
                              f"({one_line(exc)}); a damaged model") from None
        if a.dtype.name in _PACKED:  # ml_dtypes' packed integers: exact in int8 / uint8
            return a.astype(np.uint8 if a.dtype.name.startswith("u") else np.int8)
        if a.dtype.kind == "V" or a.dtype.name == "bfloat16":
            a = a.astype(np.float32)  # ml_dtypes' bfloat16, float8, float4: numpy has none
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
    def fold(self, name: str, depth: int = 0, why: list[str] | None = None) -> np.ndarray | None:
        """The value of ``name`` when it is a constant or moved from constants only, else None.

        A DequantizeLinear of a constant whose scale or zero point is not a constant or does not
        fit is a weight that cannot be computed: its reason is appended to ``why`` (and zeros of
        its shape stand in, so that the shape of what follows is known), or, without ``why``,
        raised as :class:`Unfit`."""
        if name in self.consts:
            return self.array(self.consts[name])
        node = self.producers.get(name)
        if node is None or node.op_type not in _MOVES or depth > _MAX_FOLD_DEPTH:
            return None
        if node.op_type == "DequantizeLinear":
            return self.dequantized(node, depth, why)
        ins = []
        for i in node.input:
            if not i:
                ins.append(None)
                continue
            v = self.fold(i, depth + 1, why)
            if v is None:
                return None
            ins.append(v)
        attrs = {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}
        try:
            return _apply(node.op_type, ins, attrs, self.onnx)
        except Exception:  # noqa: BLE001 - an op we cannot fold: not a weight we can read
            return None

    def dequantized(self, node, depth: int, why: list[str] | None) -> np.ndarray | None:
        """A DequantizeLinear node's output when its data input is a constant (else None: an
        activation), exactly as the ONNX operator defines it (per tensor, per axis, blocked)."""
        ins = list(node.input)
        q = self.fold(ins[0], depth + 1, why) if ins and ins[0] else None
        if q is None:
            return None
        attrs = {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}
        reason = ""
        scale = self.fold(ins[1], depth + 1, why) if len(ins) > 1 and ins[1] else None
        zero = self.fold(ins[2], depth + 1, why) if len(ins) > 2 and ins[2] else None
        if scale is None:
            reason = "its scale is not a constant of the graph"
        elif len(ins) > 2 and ins[2] and zero is None:
            reason = "its zero point is not a constant of the graph"
        else:
            try:
                w = dequantize_linear(q, scale, zero, axis=attrs.get("axis", 1),
                                      block_size=attrs.get("block_size", 0))
                out = attrs.get("output_dtype") or 0
                half = (out == self.onnx.TensorProto.FLOAT16 if out
                        else np.asarray(scale).dtype == np.float16)
                # the node's output is float16 when its scale is (or output_dtype says so)
                return w.astype(np.float16).astype(np.float32) if half else w
            except ValueError as exc:
                reason = str(exc)
        reason = f"DequantizeLinear {node.name or node.output[0]!r}: {reason}"
        if why is None:
            raise Unfit(reason)
        why.append(reason)
        return np.zeros(q.shape, np.float32)

    def data_root(self, name: str) -> str | None:
        """The constant that ``name`` moves or dequantizes (following the data input of each
        data-movement or DequantizeLinear node), else None: a weight even when its scale is
        not a constant."""
        for _ in range(_MAX_FOLD_DEPTH):
            if name in self.consts:
                return name
            node = self.producers.get(name)
            if node is None or node.op_type not in _MOVES or not node.input:
                return None
            name = node.input[0]
        return None

    def constant_roots(self, name: str) -> set[str]:
        """The constants that ``name`` is computed from when it depends on no graph input (a
        constant expression, whatever its ops), else the empty set."""
        if name not in self.roots:
            self.roots[name] = self.find_roots(name)
        return self.roots[name]

    def find_roots(self, name: str) -> set[str]:
        roots: set[str] = set()
        todo, seen = [(name, 0)], set()
        while todo:
            n, depth = todo.pop()
            if not n or n in seen:
                continue
            seen.add(n)
            if n in self.consts:
                roots.add(n)
                continue
            node = self.producers.get(n)
            if node is None or depth > _MAX_FOLD_DEPTH or not node.input:
                return set()  # a graph input (or an op of no inputs, e.g. RandomNormal)
            todo.extend((i, depth + 1) for i in node.input)
        return roots


class Unfit(SourceError):
    """A weight computed by DequantizeLinear from a constant, whose scale or zero point is not a
    constant or does not fit it: the weight exists and cannot be read (a failed row)."""


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
    raise ValueError(op)


def _per_axis(v, x: np.ndarray, axis: int, what: str) -> np.ndarray:
    """A per-tensor (one value) or per-axis (one value per slice along ``axis``) quantization
    parameter as a float32 array that broadcasts against ``x``."""
    v = np.asarray(v).astype(np.float32)
    if v.size == 1:
        return v.reshape(())
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis={axis} is outside a weight of {x.ndim} dimensions")
    axis %= x.ndim
    if v.ndim != 1 or v.size != x.shape[axis]:
        raise ValueError(f"a {what} of shape {v.shape} does not fit a weight of shape {x.shape}")
    shape = [1] * x.ndim
    shape[axis] = -1
    return v.reshape(shape)


def dequantize(q: np.ndarray, scale, zero=None, axis: int = 1) -> np.ndarray:
    """ONNX's linear dequantization, in float32: (q - zero) * scale, with a per-tensor scale and
    zero point or one per slice along ``axis`` (DequantizeLinear's, and the integer ops')."""
    q = np.asarray(q)
    s = _per_axis(scale, q, axis, "scale")
    z = np.float32(0) if zero is None or _no_zero(q) else _per_axis(zero, q, axis, "zero point")
    return (q.astype(np.float32) - z) * s


def dequantize_linear(q: np.ndarray, scale, zero=None, axis: int = 1,
                      block_size: int = 0) -> np.ndarray:
    """ONNX's DequantizeLinear (opsets 10-25) in float32: (q - zero) * scale with a per-tensor
    scale, one per slice along ``axis`` (a 1-D scale), or, with ``block_size`` > 0 (opset 21),
    one per block of ``block_size`` consecutive elements along ``axis`` (a scale of q's rank and
    shape, but ceil(q.shape[axis] / block_size) along ``axis``; the last block may be shorter).
    A float8 or float4 q has no zero point. Raises ValueError when the parameters do not fit q."""
    q, scale = np.asarray(q), np.asarray(scale)
    zero = None if zero is None else np.asarray(zero)
    if q.ndim == 0:
        raise ValueError("a scalar is not a weight")
    if not -q.ndim <= int(axis) < q.ndim:
        raise ValueError(f"axis={axis} is outside a weight of {q.ndim} dimensions")
    axis = int(axis) % q.ndim
    block_size = int(block_size or 0)
    if block_size < 0:
        raise ValueError(f"block_size={block_size} is negative")
    if scale.size == 0 or "float" not in scale.dtype.name:
        raise ValueError(f"a scale of {scale.size} values of type {scale.dtype} "
                         "(not floating-point)")
    if block_size == 0 or scale.size == 1:
        return dequantize(q, scale, zero, axis)
    blocks = -(-q.shape[axis] // block_size)
    want = q.shape[:axis] + (blocks,) + q.shape[axis + 1:]

    def expand(v: np.ndarray, what: str) -> np.ndarray:
        if v.shape != want:
            raise ValueError(f"a blocked {what} of shape {v.shape} does not fit a weight of shape "
                             f"{q.shape} in blocks of {block_size} along axis {axis} (needs "
                             f"{want})")
        return np.repeat(v.astype(np.float32), block_size, axis=axis).take(
            np.arange(q.shape[axis]), axis=axis)

    s = expand(scale, "scale")
    z = np.float32(0) if zero is None or _no_zero(q) else expand(zero, "zero point")
    return (q.astype(np.float32) - z) * s


def _no_zero(q: np.ndarray) -> bool:
    """float8 / float4 data: the zero point is not subtracted (the ONNX spec)."""
    return "float" in q.dtype.name


def _whole(value: str, what: str, where: str) -> int:
    """An external-data offset or length: a whole number >= 0 written in decimal."""
    text = str(value).strip()
    if not text.isdigit() or not text.isascii():
        raise SourceError(f"{where}: its external data {what} {printable(value)!r} is not a "
                          "whole number >= 0")
    return int(text)


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

    def refused(name: str, shape, dtype: str, reason: str, extra: dict | None = None) -> None:
        """A weight that exists and cannot be read: listed, so that it is a failed row with
        ``reason``, never a weight that vanishes."""
        name = unique(name)

        def load():
            raise SourceError(f"{path}: {name}: {reason}")
        items.append((name, tuple(shape), dtype, load, extra or {}))

    def unread(input_name: str, node, role: str, transpose: bool = False) -> None:
        """A weight input that is computed from constants by ops not folded here (a Mul, an
        Add, ...): listed as a failed row, under the shape of its largest constant."""
        roots = [r for r in m.constant_roots(input_name) - seen_consts if len(m.consts[r].dims) >= 2]
        if not roots:
            return
        big = max(roots, key=lambda r: math.prod(int(d) for d in m.consts[r].dims))
        seen_consts.add(big)  # the others (a scale, a bias) are rows of their own
        shape = tuple(int(d) for d in m.consts[big].dims)
        producer = m.producers.get(input_name)
        op = producer.op_type if producer is not None else "?"
        refused(f"{node_label(node)}.{role}", shape[::-1] if transpose else shape,
                m.dtype_name(m.consts[big]),
                f"computed from the constant {big!r} by a {op} node, which is not read here")

    def direct(input_name: str, node, role: str, transpose: bool, ndims: tuple[int, ...]):
        """A weight that is an initializer or Constant: read lazily."""
        t = m.consts[input_name]
        if len(t.dims) < 2 or input_name in seen_consts:
            return
        seen_consts.add(input_name)
        m.external(t)  # a missing external file fails now, in one line
        shape = tuple(int(d) for d in t.dims)
        name = f"{node_label(node)}.{role}" if _anonymous(input_name) else input_name
        if len(shape) not in ndims:
            refused(name, shape, m.dtype_name(t),
                    f"a {len(shape)}-D operand of {node.op_type}, not a weight matrix")
            return
        load = (lambda t=t: m.array(t).T) if transpose else (lambda t=t: m.array(t))
        items.append((unique(name), shape[::-1] if transpose else shape, m.dtype_name(t), load))

    def computed(input_name: str, role: str):
        """(shape, dtype, reasons) of a weight moved from constants (e.g. exporter-reordered LSTM
        gates, a dequantized weight), folded once now and again when loaded, so no folded copy is
        held; ``reasons`` says why it cannot be computed (a DequantizeLinear whose scale does not
        fit). None when it is not one or when the same values were already listed (e.g. both
        branches of an If)."""
        why: list[str] = []
        a = m.fold(input_name, why=why)
        if a is None:
            return None
        digest = hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16).digest()
        key = (role, a.shape, str(a.dtype), digest,
               tuple(why), tuple(sorted(m.constant_roots(input_name))) if why else ())
        if key in seen_folded:
            return None
        seen_folded.add(key)
        return a.shape, str(a.dtype), why

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
        found = computed(input_name, role)
        if found is None:
            unread(input_name, node, role, transpose)
            return
        shape, dtype, why = found
        if len(shape) < 2:
            return
        # a named initializer seen through Transpose/Cast keeps its name
        named = root is not None and not _anonymous(root)
        if named:
            seen_consts.add(root)
        name = root if named else f"{node_label(node)}.{role}"
        data = m.data_root(input_name)  # the weight's own values; its scales are listed apart
        if data is not None:
            seen_consts.add(data)
        if why or len(shape) not in ndims:
            refused(name, shape[::-1] if transpose else shape, "float32" if why else dtype,
                    "; ".join(why) or f"a {len(shape)}-D operand of {node.op_type}, "
                                      "not a weight matrix")
            return
        items.append((unique(name), shape[::-1] if transpose else shape, dtype,
                      folded_loader(input_name, transpose)))

    def recurrent(node) -> None:
        gates = _RNN_GATES[node.op_type]
        for k, role in ((1, "W"), (2, "R")):
            if len(node.input) <= k or not node.input[k]:
                continue
            name = node.input[k]
            extra = {"gates": gates, "role": "recurrent"}
            why: list[str] = []
            if name in m.consts:
                if name in seen_consts:
                    continue
                seen_consts.add(name)
                t = m.consts[name]
                m.external(t)
                shape, dtype = tuple(int(d) for d in t.dims), m.dtype_name(t)
            else:
                found = computed(name, role)
                if found is None:
                    unread(name, node, role)
                    continue
                t, (shape, dtype, why) = None, found
                data = m.data_root(name)
                if data is not None:
                    seen_consts.add(data)
            if len(shape) != 3 or why:
                if len(shape) >= 2:
                    refused(f"{node_label(node)}.{role}", shape, dtype,
                            "; ".join(why) or f"a {len(shape)}-D {node.op_type} weight "
                                              "(the operator's are 3-D)", extra)
                continue
            for d in range(shape[0]):
                suffix = "" if d == 0 else "_reverse"
                load = (lambda t=t, d=d: m.array(t)[d]) if t is not None else \
                    folded_loader(name, direction=d)
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
            try:
                a = m.fold(name)
            except Unfit:
                a = None
            shape, ok = (a.shape, True) if a is not None else ((), False)
        if not ok:
            unread(name, node, role, transpose)
            return
        if len(shape) < 2:
            return
        if root is not None:
            seen_consts.add(root)
        data = m.data_root(name)
        if data is not None:
            seen_consts.add(data)
        label = (root.removesuffix("_quantized") if root is not None and not _anonymous(root)
                 else f"{node_label(node)}.{role}")
        if len(shape) not in ndims:
            refused(label, shape, "float32",
                    f"a {len(shape)}-D operand of {node.op_type}, not a weight matrix")
            return

        def load() -> np.ndarray:
            if scale_name is None:
                raise SourceError(f"{path}: {label}: the scale of this {node.op_type} weight is "
                                  "not found in the graph (no Mul by a constant after it)")
            try:
                q, scale = m.fold(name), m.fold(scale_name)
                zero = m.fold(zero_name) if zero_name else None
                if q is None or scale is None or (zero_name and zero is None):
                    raise SourceError(f"{path}: {label}: cannot compute the quantized weight")
                w = dequantize(q, scale, zero, axis)
            except (ValueError, Unfit) as exc:
                if isinstance(exc, SourceError) and str(exc).startswith(str(path)):
                    raise
                raise SourceError(f"{path}: {label}: {exc}") from None
            return w.T if transpose else w

        items.append((unique(label), shape[::-1] if transpose else shape, "float32", load))

    def quantized_lstm(node) -> None:
        """com.microsoft DynamicQuantizeLSTM: W [dirs, in, 4H] and R [dirs, H, 4H] int8, scales
        and zero points per direction or per direction and column (inputs 8-11)."""
        ins = list(node.input)
        for k, role, sk, zk in ((1, "W", 8, 9), (2, "R", 10, 11)):
            name = ins[k] if len(ins) > k else ""
            if not name or name in seen_consts:
                continue
            if name not in m.consts:
                unread(name, node, role)
                continue
            t = m.consts[name]
            shape = tuple(int(d) for d in t.dims)
            seen_consts.add(name)
            if len(shape) != 3:
                if len(shape) >= 2:
                    refused(f"{node_label(node)}.{role}", shape, "float32",
                            f"a {len(shape)}-D DynamicQuantizeLSTM weight (its weights are 3-D)",
                            {"gates": "iofc", "role": "recurrent"})
                continue
            scale_name = ins[sk] if len(ins) > sk else ""
            zero_name = ins[zk] if len(ins) > zk else ""
            for d in range(shape[0]):
                label = f"{node_label(node)}.{role}" + ("" if d == 0 else "_reverse")

                def load(d=d, label=label, name=name, scale_name=scale_name,
                         zero_name=zero_name) -> np.ndarray:
                    try:
                        q = m.fold(name)
                        scale = m.fold(scale_name) if scale_name else None
                        zero = m.fold(zero_name) if zero_name else None
                    except Unfit as exc:
                        raise SourceError(f"{path}: {label}: {exc}") from None
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
            if m.data_root(ins[1]) is not None or m.constant_roots(ins[1]):
                weight(ins[1], node, "B", transpose=True)
            else:
                weight(ins[0], node, "A")
        elif op in ("Conv", "ConvTranspose") and len(ins) >= 2:
            weight(ins[1], node, "W", ndims=tuple(range(3, 9)))  # 5-D and up: skipped, listed
        elif op == "Gather" and ins and ins[0] in m.consts:
            t = m.consts[ins[0]]
            users = m.consumers.get(node.output[0], []) if node.output else []
            if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and \
                    len(users) == 1 and users[0].op_type == "DequantizeLinear" and \
                    len(users[0].input) > 1:
                # onnxruntime's quantized embedding: Gather(int table) -> DequantizeLinear
                dq = list(users[0].input)
                int_weight(node, 0, dq[1], dq[2] if len(dq) > 2 else "", 1, "embedding",
                           False, (2,))
            else:  # a float table is an embedding; another is listed (and skipped as such)
                weight(ins[0], node, "embedding")
        elif op == "Gather" and ins:
            weight(ins[0], node, "embedding")  # a table dequantized by DequantizeLinear (QDQ)
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
    if items:  # every other initializer is a row too (skipped: a bias, a scale, a constant)
        for name in m.initializers:
            if name not in seen_consts:
                seen_consts.add(name)
                t = m.consts[name]
                items.append((unique(name), tuple(int(d) for d in t.dims), m.dtype_name(t),
                              lambda t=t: m.array(t), {"role": "constant"}))
    for name, sp in m.sparse.items():
        shape = tuple(max(0, int(d)) for d in sp.dims)
        refused(name, shape, m.dtype_name(sp.values),
                "a sparse initializer (SparseTensorProto), which tailscope does not read")
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
