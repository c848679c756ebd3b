"""Flax / JAX checkpoints in ``flax.serialization``'s msgpack format (``to_bytes``,
``msgpack_serialize``; Hugging Face's ``flax_model.msgpack``), read with numpy alone: no JAX, no
Flax, no msgpack package.

The format is a msgpack map tree whose array leaves are msgpack ext values (code 1: an array, 3:
a numpy scalar) holding a msgpack triple (shape, dtype name, raw C-order bytes); arrays over
2**30 bytes are chunked into ``{'__msgpack_chunked_array__': True, 'shape': ..., 'chunks': ...}``
maps. The file is walked here once, with ordinary bounded reads, to find each array's shape, dtype
and byte range; an array is read (not memory-mapped: a file cut short is a one-line error, not a
SIGBUS) only when its ``LayerRef`` is loaded, after its byte range is checked against its shape.
Nothing is decoded into Python objects but keys and shapes, and no code is run.

Names are the tree's keys joined by '/' (``params/Dense_0/kernel``). When the tree has a
``params`` entry (a TrainState, ``{'params': ...}``) only that subtree is read: optimizer state
and batch statistics are not weights. Kernels keep Flax's layout, which is Keras' (``layout=
'keras'``): Dense (in, out), Conv (kh, kw, in, out); attention's DenseGeneral kernels
``query/key/value`` (features, heads, head_dim) and ``out`` (heads, head_dim, features) are read
as (features, heads*head_dim) and (heads*head_dim, features).
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np

from .base import Probe, Reader, Source, SourceError, numbered, read_exact

_MAX_DEPTH = 64
_DTYPES = {"float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8",
           "uint64", "uint32", "uint16", "uint8", "bool"}
_ATTENTION_IN = ("query", "key", "value")


class _Bin:
    """A byte range of the file (a msgpack bin or ext payload)."""

    __slots__ = ("start", "size")

    def __init__(self, start: int, size: int):
        self.start, self.size = start, size


class _Array:
    """An array leaf: shape, dtype and the byte range of its C-order data."""

    __slots__ = ("shape", "dtype", "data")

    def __init__(self, shape: tuple[int, ...], dtype: str, data: _Bin):
        self.shape, self.dtype, self.data = shape, dtype, data


class _Walker:
    """A msgpack parser over an open file that keeps byte ranges instead of reading them."""

    def __init__(self, f, size: int, path: Path):
        self.f, self.size, self.path = f, size, path
        self.keys: list[str] = []  # where the walk is, for the error message

    def read(self, pos: int, n: int) -> bytes:
        self.f.seek(pos)
        raw = self.f.read(n)
        if len(raw) != n:
            self.fail("the file was cut short while it was read")
        return raw

    def fail(self, why: str):
        at = f"at {'/'.join(self.keys)!r}: " if self.keys and not why.startswith("array ") else ""
        raise SourceError(f"{self.path}: not a readable Flax msgpack checkpoint, truncated or "
                          f"damaged? ({at}{why})")

    def take(self, pos: int, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if pos + size > self.size:
            self.fail("ends inside a value")
        return struct.unpack(fmt, self.read(pos, size))[0], pos + size

    def span(self, pos: int, size: int) -> tuple[_Bin, int]:
        if pos + size > self.size:
            self.fail("a value runs past the end of the file")
        return _Bin(pos, size), pos + size

    def value(self, pos: int, depth: int = 0):
        if depth > _MAX_DEPTH:
            self.fail(f"nested deeper than {_MAX_DEPTH} levels")
        b, pos = self.take(pos, ">B")
        if b <= 0x7F:
            return b, pos
        if b >= 0xE0:
            return b - 0x100, pos
        if 0x80 <= b <= 0x8F:
            return self.map(pos, b & 0x0F, depth)
        if 0x90 <= b <= 0x9F:
            return self.array(pos, b & 0x0F, depth)
        if 0xA0 <= b <= 0xBF:
            return self.text(pos, b & 0x1F)
        fixed = {0xC0: None, 0xC2: False, 0xC3: True}
        if b in fixed:
            return fixed[b], pos
        lengths = {0xC4: ">B", 0xC5: ">H", 0xC6: ">I"}
        if b in lengths:
            n, pos = self.take(pos, lengths[b])
            return self.span(pos, n)
        numbers = {0xCA: ">f", 0xCB: ">d", 0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
                   0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}
        if b in numbers:
            return self.take(pos, numbers[b])
        exts = {0xC7: ">B", 0xC8: ">H", 0xC9: ">I"}
        if b in exts or 0xD4 <= b <= 0xD8:
            if b in exts:
                n, pos = self.take(pos, exts[b])
            else:
                n = 1 << (b - 0xD4)
            code, pos = self.take(pos, ">b")
            payload, end = self.span(pos, n)
            return self.ext(code, payload, depth), end
        texts = {0xD9: ">B", 0xDA: ">H", 0xDB: ">I"}
        if b in texts:
            n, pos = self.take(pos, texts[b])
            return self.text(pos, n)
        if b in (0xDC, 0xDD):
            n, pos = self.take(pos, ">H" if b == 0xDC else ">I")
            return self.array(pos, n, depth)
        if b in (0xDE, 0xDF):
            n, pos = self.take(pos, ">H" if b == 0xDE else ">I")
            return self.map(pos, n, depth)
        self.fail(f"byte 0x{b:02x} is not msgpack")

    def text(self, pos: int, n: int):
        raw, end = self.span(pos, n)
        return self.read(raw.start, n).decode("utf-8", "replace"), end

    def array(self, pos: int, n: int, depth: int):
        out = []
        for _ in range(n):
            v, pos = self.value(pos, depth + 1)
            out.append(v)
        return out, pos

    def map(self, pos: int, n: int, depth: int):
        out = {}
        for _ in range(n):
            k, pos = self.value(pos, depth + 1)
            self.keys.append(str(k) if isinstance(k, (str, int)) else "?")
            v, pos = self.value(pos, depth + 1)
            if isinstance(k, _Bin):
                k = self.read(k.start, k.size).decode("utf-8", "replace")
            out[str(k)] = v
            self.keys.pop()
        return out, pos

    def ext(self, code: int, payload: _Bin, depth: int):
        if code not in (1, 3):  # 2: a Python complex number; others: not ours
            return None
        triple, end = self.value(payload.start, depth + 1)
        if end != payload.start + payload.size or not isinstance(triple, list) or len(triple) != 3:
            self.fail("an array leaf that is not (shape, dtype, bytes)")
        shape, dtype, data = triple
        if isinstance(dtype, _Bin):
            dtype = self.read(dtype.start, dtype.size).decode("ascii", "replace")
        if not isinstance(shape, list) or not all(_is_dim(s) for s in shape) \
                or not isinstance(data, _Bin):
            self.fail(f"an array leaf with a malformed shape {_shown(shape)} or data")
        return _Array(tuple(shape), str(dtype), data)


def _is_dim(s) -> bool:
    return isinstance(s, int) and not isinstance(s, bool) and s >= 0


def _shown(v) -> str:
    """A short printable form of a decoded value, for an error message."""
    text = repr(v.shape) if isinstance(v, _Array) else \
        f"<{v.size} bytes>" if isinstance(v, _Bin) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _np_dtype(dtype: str) -> np.dtype:
    return np.dtype(np.uint16 if dtype == "bfloat16" else dtype)


def _loader(path: Path, name: str, leaf, shape: tuple[int, ...]):
    def load() -> np.ndarray:
        parts = leaf if isinstance(leaf, list) else [leaf]
        arrays = []
        for a in parts:
            dt = _np_dtype(a.dtype)
            count = math.prod(a.shape)
            if a.data.size != count * dt.itemsize:
                raise SourceError(f"{path}: {name}: {a.data.size} bytes for {count} {a.dtype} "
                                  "values")
            arrays.append(read_exact(path, a.data.start, dt, a.shape))
        out = arrays[0] if len(arrays) == 1 else \
            np.concatenate([x.reshape(-1) for x in arrays]).reshape(shape)
        return (out.astype(np.uint32) << 16).view(np.float32) if parts[0].dtype == "bfloat16" \
            else out
    return load


def _numbered(table: dict, what: str, walker: _Walker) -> list:
    """The values of a map keyed '0', '1', ... (msgpack's form of a tuple), in order."""
    if not all(k.isdigit() and k.isascii() for k in table) or \
            sorted(int(k) for k in table) != list(range(len(table))):
        walker.fail(f"{what} keyed {_shown(list(table))}, not 0, 1, ...")
    return [table[str(i)] for i in range(len(table))]


def _unchunked(node: dict, walker: _Walker, name: str):
    """(shape, dtype, [chunks]) of a chunked array map."""
    shape = node.get("shape")
    chunks = node.get("chunks")
    what = f"array {name!r}: a chunked array"
    if not isinstance(shape, dict) or not isinstance(chunks, dict):
        walker.fail(f"{what} without shape or chunks")
    dims = tuple(_numbered(shape, f"{what} with a shape", walker))
    if not all(_is_dim(d) for d in dims):
        walker.fail(f"{what} with a malformed shape {_shown(dims)}")
    parts = _numbered(chunks, f"{what} with chunks", walker)
    if not parts or not all(isinstance(p, _Array) for p in parts):
        walker.fail(f"{what} with chunks that are not arrays")
    if len({p.dtype for p in parts}) != 1 or \
            sum(math.prod(p.shape) for p in parts) != math.prod(dims):
        walker.fail(f"{what} whose chunks do not add up to its shape {dims}")
    return dims, parts[0].dtype, parts


def open_flax(path: Path) -> Source:
    """The arrays of a Flax msgpack checkpoint (see the module docstring)."""
    try:
        with open(path, "rb") as f:
            walker = _Walker(f, os.fstat(f.fileno()).st_size, Path(path))
            tree, end = walker.value(0)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if end != walker.size:
        walker.fail(f"{walker.size - end} bytes after the checkpoint")
    if not isinstance(tree, dict):
        raise SourceError(f"{path}: a msgpack file that is not a Flax checkpoint (not a map)")
    note = ""
    if isinstance(tree.get("params"), dict):
        tree, note, prefix = tree["params"], "params only", "params/"
    else:
        prefix = ""
    items: list[tuple] = []

    def visit(node, name: str) -> None:
        if isinstance(node, dict):
            if node.get("__msgpack_chunked_array__") is True:
                dims, dtype, parts = _unchunked(node, walker, prefix + name)
                leaf(name, dims, dtype, parts)
                return
            for key, value in node.items():
                visit(value, f"{name}/{key}" if name else key)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{name}/{i}")
        elif isinstance(node, _Array):
            leaf(name, node.shape, node.dtype, node)

    def leaf(name: str, shape: tuple, dtype: str, data) -> None:
        if dtype not in _DTYPES:
            return
        parts = name.split("/")
        new = None
        if parts[-1] == "kernel" and len(parts) > 1 and len(shape) == 3:
            if parts[-2] in _ATTENTION_IN:
                new = (shape[0], shape[1] * shape[2])
            elif parts[-2] == "out":
                new = (shape[0] * shape[1], shape[2])
        read = _loader(Path(path), name, data, shape)
        items.append((prefix + name, new or shape, dtype,
                      read if new is None else (lambda read=read, new=new: read().reshape(new))))

    visit(tree, "")
    if not items:
        raise SourceError(f"{path}: a msgpack file with no arrays (not a Flax checkpoint?)")
    return Source(numbered(items, str(path), layout="keras"), "flax (msgpack)", (str(path),),
                  note)


# --- the reader ---------------------------------------------------------------------------------
_STR = set(range(0xA0, 0xC0)) | {0xD9, 0xDA}


def _recognise(probe: Probe) -> str | None:
    """A msgpack map whose first key is a string (a one-byte guess: asked after exact magics)."""
    h = probe.head
    if len(h) < 2:
        return None
    if 0x81 <= h[0] <= 0x8F:
        return "msgpack" if h[1] in _STR else None
    if h[0] in (0xDE, 0xDF) and len(h) > (3 if h[0] == 0xDE else 5):
        return "msgpack" if h[3 if h[0] == 0xDE else 5] in _STR else None
    return None


def _open_file(path: Path, variant: str, trust_pickle: bool) -> Source:
    return open_flax(path)


READER = Reader(
    name="flax", phrase="a Flax msgpack checkpoint", recognise=_recognise, open_file=_open_file,
    patterns=("flax_model*.msgpack", "*.msgpack"), suffixes=(".msgpack",), heuristic=True,
    by_suffix=True)
