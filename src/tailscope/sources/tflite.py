"""TensorFlow Lite flatbuffers (``.tflite``) through the ``tflite`` package (the flatbuffer
schema's generated reader; the ``tflite`` extra). No TensorFlow, no interpreter.

The flatbuffer is parsed from the file's bytes, read once when the model is opened and released
after; a weight is read (not memory-mapped: a file cut short is a one-line error, not a SIGBUS)
when its ``LayerRef`` is loaded, after its byte range is checked against its shape. Weights are the
constant inputs of FULLY_CONNECTED (weights, (out, in) as PyTorch holds them), CONV_2D and
TRANSPOSE_CONV (filters OHWI, given as PyTorch's (out, in, kh, kw)), DEPTHWISE_CONV_2D
((1, kh, kw, out) -> (out, 1, kh, kw)), BATCH_MATMUL (a constant right operand (K, N), given as
(N, K) unless adj_y), EMBEDDING_LOOKUP and GATHER tables (embeddings), and the gate matrices of
the (uni/bi-directional sequence) LSTM and RNN ops (each gate its own matrix, role 'recurrent').
A weight that a DEQUANTIZE op produces (float16 or int8 weights of a "weight-only" model) is read
from that op's constant input. A weight stored sparse (TFLite sparsity, which a DENSIFY op expands
when the model runs) is densified here the same way (``densify``), after its sparsity metadata
is checked against its shape and its stored values (indices in range, segments in order, a dense
size that the stored values can fill) before anything is allocated.

Integer weights with quantization parameters are dequantized as (q - zero point) * scale in
float32, per tensor or per channel along the tensor's ``quantized_dimension`` (before any layout
change); their dtype reads ``float32 (int8)``. An integer weight without a scale is listed with
its integer dtype and not analysed. Names are the tensors' names, in operator order, subgraph by
subgraph; a tensor used by several ops is listed once.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from ..util.errors import one_line
from ..util.optional import require
from .base import Probe, Reader, Source, SourceError, numbered, read_exact, unique_namer

# TFLite TensorType -> numpy dtype (the types a weight can have)
_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8",
          10: "float64", 15: "uint32", 16: "uint16"}
_BF16 = 18
# a sparse weight's dense size may be at most this many times its stored values (99.97% sparse)
_MAX_SPARSE_FILL = 4096
_FROM_CONST = ("DEQUANTIZE", "DENSIFY")
# builtin op -> (input index, role, layout change) of its weights
_CONV = "ohwi"
_OPS: dict[str, tuple[tuple[int, str, str], ...]] = {
    "FULLY_CONNECTED": ((1, "weights", ""),),
    "CONV_2D": ((1, "filter", _CONV),),
    "TRANSPOSE_CONV": ((1, "filter", _CONV),),
    "DEPTHWISE_CONV_2D": ((1, "filter", "depthwise"),),
    "BATCH_MATMUL": ((1, "rhs", "matmul"),),
    "EMBEDDING_LOOKUP": ((1, "embedding", ""),),
    "GATHER": ((0, "embedding", ""),),
    "RNN": ((1, "input_weights", "rec"), (2, "recurrent_weights", "rec")),
    "UNIDIRECTIONAL_SEQUENCE_RNN": ((1, "input_weights", "rec"), (2, "recurrent_weights", "rec")),
}
_LSTM_GATES = [(k, f"{kind}_to_{g}", "rec") for kind, base in (("input", 1), ("recurrent", 5))
               for k, g in zip(range(base, base + 4), ("input", "forget", "cell", "output"))]
_OPS["LSTM"] = _OPS["UNIDIRECTIONAL_SEQUENCE_LSTM"] = tuple(_LSTM_GATES)
_OPS["BIDIRECTIONAL_SEQUENCE_LSTM"] = tuple(_LSTM_GATES) + tuple(
    (k + 17, f"bw_{role}", lay) for k, role, lay in _LSTM_GATES)


def import_tflite():
    """tflite, or a SourceError naming the extra that installs it."""
    return require("tflite", "reading TFLite models", error=SourceError)


def _op_names(tflite) -> dict[int, str]:
    ops = tflite.BuiltinOperator
    return {getattr(ops, n): n for n in dir(ops) if n.isupper()}


class _File:
    """The model's flatbuffer over the file's bytes (read once, while the model is opened)."""

    def __init__(self, path: Path):
        tflite = import_tflite()
        self.path = path
        try:
            with open(path, "rb") as f:
                self.buf = f.read()
        except OSError as exc:
            raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
        self.base, self.size = np.frombuffer(self.buf, np.uint8), len(self.buf)
        self.model = tflite.Model.GetRootAs(self.buf, 0)

    def where(self, tensor) -> tuple[int, int] | None:
        """(file offset, size) of the tensor's constant bytes, or None when it is not a
        constant."""
        index = tensor.Buffer()
        if index <= 0 or index >= self.model.BuffersLength():
            return None
        b = self.model.Buffers(index)
        if b.Offset() > 1:  # models over 2 GB keep their buffers after the flatbuffer
            return int(b.Offset()), int(b.Size())
        if b.DataLength() == 0:
            return None
        data = b.DataAsNumpy()
        return int(data.ctypes.data - self.base.ctypes.data), int(data.size)


def _layout(a: np.ndarray, change: str) -> np.ndarray:
    if change == _CONV and a.ndim == 4:
        return a.transpose(0, 3, 1, 2)
    if change == "depthwise" and a.ndim == 4:
        return a.transpose(3, 0, 1, 2)
    if change == "matmul" and a.ndim == 2:
        return a.T
    return a


def _index_vector(tflite, kind: int, table) -> np.ndarray:
    """A SparseIndexVector union (Int32Vector, Uint16Vector, Uint8Vector) as int64 (a copy)."""
    cls = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}.get(kind)
    if cls is None or table is None:
        raise ValueError("a sparse dimension without its index vector")
    v = cls()
    v.Init(table.Bytes, table.Pos)
    return np.array(v.ValuesAsNumpy() if v.ValuesLength() else [], dtype=np.int64)


class Sparsity:
    """A tensor's TFLite SparsityParameters, copied out of the flatbuffer: ``order`` (the
    traversal order), ``block_map``, and per level (format: 0 DENSE, 1 SPARSE_CSR; dense size;
    segments; indices)."""

    def __init__(self, tflite, params):
        self.order = [int(d) for d in params.TraversalOrderAsNumpy()] \
            if params.TraversalOrderLength() else []
        self.block_map = [int(d) for d in params.BlockMapAsNumpy()] \
            if params.BlockMapLength() else []
        self.levels = []
        for level in range(params.DimMetadataLength()):
            meta = params.DimMetadata(level)
            if meta.Format() == 0:
                self.levels.append((0, int(meta.DenseSize()), None, None))
            else:
                self.levels.append((1, int(meta.DenseSize()),
                                    _index_vector(tflite, meta.ArraySegmentsType(),
                                                  meta.ArraySegments()),
                                    _index_vector(tflite, meta.ArrayIndicesType(),
                                                  meta.ArrayIndices())))


def _level_sizes(sp: Sparsity, shape: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """(traversal order, the size of each level), checked against ``shape``."""
    rank = len(shape)
    order = sp.order or list(range(rank))
    n = rank + len(sp.block_map)
    if len(sp.levels) != len(order) or len(order) != n or sorted(order) != list(range(n)):
        raise ValueError("sparsity metadata does not fit the tensor's shape")
    if any(not 0 <= d < rank for d in sp.block_map) or len(set(sp.block_map)) != len(sp.block_map):
        raise ValueError(f"a block map {sp.block_map} that does not fit the shape {shape}")
    block = {}
    for level, dim in enumerate(order):
        if dim >= rank:
            size = sp.levels[level][1]
            original = shape[sp.block_map[dim - rank]]
            if size <= 0 or original % size:
                raise ValueError(f"a block of {size} that does not divide a dimension of "
                                 f"{original}")
            block[sp.block_map[dim - rank]] = size
    sizes = []
    for level, dim in enumerate(order):
        size = shape[dim] // block.get(dim, 1) if dim < rank else sp.levels[level][1]
        fmt, dense = sp.levels[level][:2]
        if fmt == 0 and dense != size:
            raise ValueError(f"a dense level of {dense}, not the {size} of the shape {shape}")
        sizes.append(size)
    return order, sizes


def densify(sp: Sparsity, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The dense tensor of TFLite sparse ``values`` (its Sparsity: dimensions traversed in
    ``order``, each DENSE or SPARSE_CSR, blocked dimensions per ``block_map``), as TFLite's
    DENSIFY op builds it; level by level, vectorised. Every index, segment and size is checked
    against the shape and the stored values before an array is sized by it."""
    rank = len(shape)
    order, sizes = _level_sizes(sp, shape)
    if math.prod(shape) > _MAX_SPARSE_FILL * max(values.size, 1):
        raise ValueError(f"{values.size} stored values for a dense shape {shape}: not a sparse "
                         "weight tailscope densifies")
    # how many nodes a level may hold: the entries of the next sparse level's segments, or the
    # stored values when only dense levels follow
    limit = [values.size] * len(order)
    for level in range(len(order) - 2, -1, -1):
        nxt = sp.levels[level + 1]
        limit[level] = max(len(nxt[2]) - 1, 0) if nxt[0] != 0 else limit[level + 1]
    pos = np.zeros(1, dtype=np.int64)  # position in the compressed order, per element so far
    level_index: list[np.ndarray] = []
    for level in range(len(order)):
        fmt, _, segments, indices = sp.levels[level]
        if fmt == 0:  # DENSE
            n = sizes[level]
            if len(pos) * n > limit[level]:
                raise ValueError("a dense level larger than the values or segments stored")
            level_index = [np.repeat(ix, n) for ix in level_index]
            level_index.append(np.tile(np.arange(n, dtype=np.int64), len(pos)))
            pos = (pos[:, None] * n + np.arange(n, dtype=np.int64)).ravel()
        else:  # SPARSE_CSR
            if len(segments) < int(pos.max(initial=0)) + 2:
                raise ValueError("sparse segments shorter than the dimension before them")
            if (segments < 0).any() or (np.diff(segments) < 0).any() or \
                    int(segments[-1]) > len(indices):
                raise ValueError("sparse segments out of order or past their indices")
            if len(indices) and (indices.min() < 0 or indices.max() >= sizes[level]):
                raise ValueError(f"sparse indices outside a dimension of {sizes[level]}")
            starts, ends = segments[pos], segments[pos + 1]
            counts = ends - starts
            if int(counts.sum()) > limit[level]:
                raise ValueError("more sparse entries than the values or segments stored")
            new_pos = np.concatenate([np.arange(a, b, dtype=np.int64)
                                      for a, b in zip(starts, ends)]) if len(pos) else pos
            level_index = [np.repeat(ix, counts) for ix in level_index]
            level_index.append(indices[new_pos])
            pos = new_pos
    if pos.size and int(pos.max()) >= values.size:
        raise ValueError("sparse positions past the stored values")
    dense_index = [np.zeros(len(pos), dtype=np.int64) for _ in range(rank)]
    for level, dim in enumerate(order):
        if dim < rank:
            dense_index[dim] = dense_index[dim] + level_index[level]
    for level, dim in enumerate(order):
        if dim >= rank:  # a block dimension: original index = outer * block size + inner
            k = dim - rank
            dense_index[sp.block_map[k]] = dense_index[sp.block_map[k]] * sizes[level] + \
                level_index[level]
    out = np.zeros(shape, dtype=values.dtype)
    out[tuple(dense_index)] = values.ravel()[pos]
    return out


def _type_name(tflite, ttype: int) -> str:
    """A TFLite tensor type's name, lower case ('int4'), or 'type N' for one the schema lacks."""
    for k, v in vars(tflite.TensorType).items():
        if v == ttype and not k.startswith("_"):
            return k.lower()
    return f"type {ttype}"


def _layout_shape(shape: tuple[int, ...], change: str) -> tuple[int, ...]:
    """The shape ``_layout`` gives an array of ``shape``."""
    if change == _CONV and len(shape) == 4:
        return (shape[0], shape[3], shape[1], shape[2])
    if change == "depthwise" and len(shape) == 4:
        return (shape[3], shape[0], shape[1], shape[2])
    if change == "matmul" and len(shape) == 2:
        return shape[::-1]
    return shape


def _dequantized(path: Path, name: str, q: np.ndarray, scale, zero, axis: int) -> np.ndarray:
    s = np.asarray(scale, dtype=np.float32)
    z = np.zeros(1, np.float32) if zero is None or len(zero) == 0 else \
        np.asarray(zero).astype(np.float32)
    if s.size > 1 or z.size > 1:
        if not 0 <= axis < q.ndim or (s.size != q.shape[axis]) or z.size not in (1, s.size):
            raise SourceError(f"{path}: {name}: {s.size} scales do not fit a weight of shape "
                              f"{q.shape} (quantized dimension {axis})")
        shape = [1] * q.ndim
        shape[axis] = -1
        s = s.reshape(shape)
        z = z.reshape(shape) if z.size > 1 else z.reshape(())
    else:
        s, z = s.reshape(()), z.reshape(())
    return (q.astype(np.float32) - z) * s


def open_tflite(path: Path) -> Source:
    """The weight matrices of a TFLite model (see the module docstring)."""
    tflite = import_tflite()
    try:
        f = _File(Path(path))
        if not tflite.Model.ModelBufferHasIdentifier(f.buf, 0):
            raise ValueError("no TFL3 identifier")
        n_sub = f.model.SubgraphsLength()
        codes = [max(f.model.OperatorCodes(i).BuiltinCode(),
                     f.model.OperatorCodes(i).DeprecatedBuiltinCode())
                 for i in range(f.model.OperatorCodesLength())]
    except SourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - flatbuffers raises struct errors, IndexError...
        raise SourceError(f"{path}: not a readable TFLite model, truncated or damaged? "
                          f"({one_line(exc)})") from None
    names_of = _op_names(tflite)
    file_size = f.size  # the loaders hold this, not the file's bytes
    items: list[tuple] = []
    seen: set[tuple[int, int]] = set()
    unique = unique_namer()

    def listed(g, sub: int, t_index: int, role: str, change: str, op_label: str,
               producers: dict[int, object]) -> None:
        if t_index < 0 or (sub, t_index) in seen:
            return
        tensor, index = g.Tensors(t_index), t_index
        for _ in range(3):  # DEQUANTIZE / DENSIFY outputs: read the constant they start from
            if f.where(tensor) is not None:
                break
            prod = producers.get(index)
            if prod is None or names_of.get(codes[prod.OpcodeIndex()]) not in _FROM_CONST:
                return
            index = int(prod.Inputs(0))
            tensor = g.Tensors(index)
        else:
            return
        where = f.where(tensor)
        if where is None:
            return
        sparse, sparse_error = None, ""
        if tensor.Sparsity() is not None:
            try:
                sparse = Sparsity(tflite, tensor.Sparsity())
            except (ValueError, IndexError, TypeError, struct.error) as exc:
                sparse_error = one_line(exc)
        seen.add((sub, t_index))
        seen.add((sub, index))  # the constant behind a DEQUANTIZE / DENSIFY is this row too
        constant = role == "constant"
        shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        if len(shape) < 2 and not constant:
            return
        ttype = tensor.Type()
        stored = "bfloat16" if ttype == _BF16 else _TYPES.get(ttype)
        name = (tensor.Name() or b"").decode("utf-8", "replace") or f"{op_label}.{role}"
        if stored is None:  # a type not read here (int4, complex, string, ...): a failed row
            kind = _type_name(tflite, ttype)

            def unread(name=name, kind=kind):
                raise SourceError(f"{path}: {name}: {kind} values, which tailscope cannot read")
            items.append((unique(name), shape, kind, unread,
                          {"role": "constant"} if constant else {}))
            return
        q = tensor.Quantization()
        scale = np.array(q.ScaleAsNumpy()) if q is not None and q.ScaleLength() else None
        zero = np.array(q.ZeroPointAsNumpy()) if q is not None and q.ZeroPointLength() else None
        axis = q.QuantizedDimension() if q is not None else 0
        is_int = stored.startswith(("int", "uint"))
        if is_int and scale is None and role == "embedding":
            seen.discard((sub, t_index))  # listed below as a constant, not as an embedding
            seen.discard((sub, index))
            return  # a GATHER of integer constants (shapes, indices), not a table of weights
        dtype = f"float32 ({stored})" if is_int and scale is not None else stored
        if any(d < 0 for d in shape):
            raise SourceError(f"{path}: tensor {name!r} has a negative dimension {shape}; "
                              "the file is damaged")
        out_shape = _layout_shape(shape, change)
        np_dtype = np.uint16 if stored == "bfloat16" else np.dtype(stored)

        def load(where=where, sparse=sparse, sparse_error=sparse_error, shape=shape,
                 name=name) -> np.ndarray:
            start, size = where
            if start + size > file_size:
                raise SourceError(f"{path}: {name}: its buffer lies past the end of the file; "
                                  "the file may be truncated")
            count, itemsize = math.prod(shape), np.dtype(np_dtype).itemsize
            if sparse_error or (sparse is not None and size % itemsize):
                raise SourceError(f"{path}: {name}: damaged sparse weights "
                                  f"({sparse_error or f'{size} bytes of {stored} values'})")
            if sparse is not None:
                try:
                    a = densify(sparse, read_exact(path, start, np_dtype, (size // itemsize,)),
                                shape)
                except (ValueError, IndexError, TypeError) as exc:
                    raise SourceError(f"{path}: {name}: damaged sparse weights "
                                      f"({one_line(exc)})") from None
                return _finish(a, stored, is_int, scale, zero, axis, change, name)
            if size != count * itemsize:
                raise SourceError(f"{path}: {name}: its buffer holds {size} bytes, not the "
                                  f"{count} {stored} values of shape {shape}")
            return _finish(read_exact(path, start, np_dtype, shape), stored, is_int, scale, zero,
                           axis, change, name)

        def _finish(a, stored, is_int, scale, zero, axis, change, name) -> np.ndarray:
            if stored == "bfloat16":
                a = (a.astype(np.uint32) << 16).view(np.float32)
            elif is_int and scale is not None:
                a = _dequantized(path, name, a, scale, zero, axis)
            return _layout(a, change)

        extra = {"role": "recurrent"} if change == "rec" else \
            {"role": "constant"} if constant else {}
        items.append((unique(name), out_shape, dtype, load, extra))

    try:
        _walk(f, tflite, n_sub, codes, names_of, listed)
        if items:  # every other constant is a row too (skipped: a bias, a shape, a table)
            for sub in range(n_sub):
                g = f.model.Subgraphs(sub)
                for t_index in range(g.TensorsLength()):
                    if (sub, t_index) not in seen and f.where(g.Tensors(t_index)) is not None:
                        listed(g, sub, t_index, "constant", "", f"tensor_{t_index}", {})
    except SourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged flatbuffer fails where it is read
        raise SourceError(f"{path}: a damaged TFLite model ({one_line(exc)})") from None
    if not items:
        raise SourceError(f"{path}: a TFLite model with no constant weights of "
                          f"{', '.join(sorted(_OPS))}")
    return Source(numbered(items, str(path)), "tflite", (str(path),))


def _walk(f: _File, tflite, n_sub: int, codes: list[int], names_of: dict, listed) -> None:
    """Call ``listed`` for each weight input of each operator, in operator order."""
    for sub in range(n_sub):
        g = f.model.Subgraphs(sub)
        ops = [g.Operators(i) for i in range(g.OperatorsLength())]
        producers = {int(o): op for op in ops for o in
                     (op.OutputsAsNumpy() if op.OutputsLength() else [])}
        for i, op in enumerate(ops):
            opname = names_of.get(codes[op.OpcodeIndex()], "")
            spec = _OPS.get(opname)
            if not spec:
                continue
            ins = op.InputsAsNumpy() if op.InputsLength() else []
            change_of = {}
            if opname == "BATCH_MATMUL":
                opts = op.BuiltinOptions()
                if opts is not None:
                    bm = tflite.BatchMatMulOptions()
                    bm.Init(opts.Bytes, opts.Pos)
                    if bm.AdjY():
                        change_of[1] = ""
            for k, role, change in spec:
                if k < len(ins):
                    listed(g, sub, int(ins[k]), role, change_of.get(k, change),
                           f"{opname.lower()}_{i}", producers)


# --- the reader ---------------------------------------------------------------------------------
def _recognise(probe: Probe) -> str | None:
    return "tflite" if probe.head[4:8] == b"TFL3" else None


def _open_file(path: Path, variant: str, trust_pickle: bool) -> Source:
    return open_tflite(path)


READER = Reader(
    name="tflite", phrase="a TFLite model", recognise=_recognise, open_file=_open_file,
    patterns=("*.tflite",), suffixes=(".tflite",), by_suffix=True, requires="tflite")
