"""GGUF files (llama.cpp and the local-LLM tools); the ``gguf`` package (the ``gguf`` extra)
dequantizes.

The header, metadata and tensor infos are parsed here with every declared size (string and array
lengths, counts, dimensions, offsets) checked against the bytes left in the file before anything
is read or allocated; a tensor's bytes must lie inside the data section, without overlapping
another tensor's. A tensor is read (not memory-mapped: a file cut short is a one-line error, not
a SIGBUS) only when its ``LayerRef`` is loaded, and dequantized with gguf's own ``dequantize``
(F32, F16, BF16, F64 and every quantized type gguf implements: Q8_0, Q4_0, Q4_K, Q6_K, ...), so
one tensor at a time is in memory.

GGUF lists dimensions innermost first (ggml's ``ne``): a llama.cpp matrix with ``ne = [in, out]``
is the (out, in) matrix PyTorch holds, and is given in that order. Names are llama.cpp's
(``token_embd.weight``, ``blk.0.attn_q.weight``, ``blk.0.ffn_up.weight``, ``output.weight``), in
file order; ``token_embd`` and ``position_embd`` are embeddings (``sources.layers`` reads 'embd'
as an embedding). A 3-D expert stack (``blk.N.ffn_up_exps.weight``, numpy shape
(experts, out, in)) is one matrix per expert, ``...ffn_up_exps.weight[e0]``, ``[e1]``, ...
A quantized tensor's dtype reads ``float32 (q4_k)``: the values analysed are the dequantized
float32 ones.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np

from ..util.errors import one_line
from ..util.optional import require
from .base import Probe, Reader, Source, SourceError, numbered, read_exact

_PLAIN = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
          "I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64"}
_READ_AS = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I8": np.int8,
            "I16": np.int16, "I32": np.int32, "I64": np.int64}  # others: raw bytes
_VERSIONS = (2, 3)
# GGUF metadata value types -> byte size (8: string, 9: array)
_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY, _UINT32 = 8, 9, 4
_MAX_DIMS = 8  # ggml has 4
_MAX_NESTING = 8
_DEFAULT_ALIGNMENT = 32


def import_gguf():
    """gguf, or a SourceError naming the extra that installs it."""
    return require("gguf", "reading GGUF files", error=SourceError)


class _Header:
    """A bounded reader of a GGUF file's header: every length is checked against the bytes left
    before it is read, skipped or looped over."""

    def __init__(self, f, size: int, path: Path):
        self.f, self.size, self.path, self.pos, self.order = f, size, path, 0, "<"

    def fail(self, why: str):
        raise SourceError(f"{self.path}: not a readable GGUF file, truncated or damaged? ({why})")

    def need(self, n: int, what: str) -> None:
        left = self.size - self.pos
        if n > left:
            self.fail(f"{what} needs {n} bytes, {left} left in the file")

    def take(self, n: int, what: str) -> bytes:
        self.need(n, what)
        raw = self.f.read(n)
        if len(raw) != n:
            self.fail(f"the file was cut short while its header was read ({what})")
        self.pos += n
        return raw

    def skip(self, n: int, what: str) -> None:
        self.need(n, what)
        self.pos += n
        self.f.seek(self.pos)

    def num(self, fmt: str, what: str):
        return struct.unpack(self.order + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str, keep: bool = True) -> str:
        n = self.num("Q", f"the length of {what}")
        if not keep:
            self.skip(n, what)
            return ""
        try:
            return self.take(n, what).decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{what} is not UTF-8")

    def value(self, vtype: int, what: str, depth: int = 0):
        """A metadata value: a scalar or string is returned, an array is skipped (None)."""
        if vtype in _SCALAR:
            fmt = {1: "B", 2: "H", 4: "I", 8: "Q"}[_SCALAR[vtype]]
            if vtype in (1, 3, 5, 11):
                fmt = fmt.lower()
            elif vtype in (6, 12):
                fmt = "f" if vtype == 6 else "d"
            return self.num(fmt, what)
        if vtype == _STRING:
            return self.string(what)
        if vtype != _ARRAY:
            self.fail(f"{what} has an unknown value type {vtype}")
        if depth >= _MAX_NESTING:
            self.fail(f"{what} nests arrays deeper than {_MAX_NESTING} levels")
        item = self.num("I", f"the item type of {what}")
        count = self.num("Q", f"the length of {what}")
        if item in _SCALAR:
            self.skip(count * _SCALAR[item], f"{what} ({count} items)")
        elif item in (_STRING, _ARRAY):
            least = 8 if item == _STRING else 12  # a length; an item type and a length
            self.need(count * least, f"{what} ({count} items)")
            for _ in range(count):
                if item == _STRING:
                    self.string(f"an item of {what}", keep=False)
                else:
                    self.value(_ARRAY, f"an item of {what}", depth + 1)
        else:
            self.fail(f"{what} has items of an unknown type {item}")
        return None


class _Tensor:
    __slots__ = ("name", "qtype", "ne", "offset", "nbytes")

    def __init__(self, name, qtype, ne, offset, nbytes):
        self.name, self.qtype, self.ne, self.offset, self.nbytes = name, qtype, ne, offset, nbytes


def _parse(path: Path) -> tuple[list[_Tensor], str, str]:
    """(tensors with absolute offsets, architecture, byte order) of a GGUF file, checked."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        h = _Header(f, size, path)
        if h.take(4, "the magic") != b"GGUF":
            h.fail("no GGUF magic")
        version = h.num("I", "the version")
        if version & 0xFFFF == 0:  # written on a big-endian machine
            h.order = ">"
            version = int.from_bytes(version.to_bytes(4, "little"), "big")
        if version not in _VERSIONS:
            h.fail(f"version {version}, not one of {_VERSIONS}")
        n_tensors = h.num("Q", "the tensor count")
        n_kv = h.num("Q", "the metadata count")
        h.need(n_kv * 13, f"{n_kv} metadata entries")  # key length, value type, a value
        arch, alignment = "", _DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            key = h.string("a metadata key")
            vtype = h.num("I", f"the type of metadata {key!r}")
            v = h.value(vtype, f"metadata {key!r}")
            if key == "general.architecture" and isinstance(v, str):
                arch = v
            elif key == "general.alignment":
                if vtype != _UINT32 or v == 0 or v & (v - 1):
                    h.fail(f"general.alignment {v!r} is not a power of two (uint32)")
                alignment = v
        h.need(n_tensors * 24, f"{n_tensors} tensor infos")  # name length, n_dims, type, offset
        infos = []
        names: set[str] = set()
        for _ in range(n_tensors):
            name = h.string("a tensor name")
            if name in names:
                h.fail(f"tensor {name!r} is listed twice")
            names.add(name)
            n_dims = h.num("I", f"the rank of tensor {name!r}")
            if n_dims > _MAX_DIMS:
                h.fail(f"tensor {name!r} has {n_dims} dimensions")
            ne = [h.num("Q", f"the dimensions of tensor {name!r}") for _ in range(n_dims)]
            raw_type = h.num("I", f"the type of tensor {name!r}")
            offset = h.num("Q", f"the offset of tensor {name!r}")
            infos.append((name, ne, raw_type, offset))
        data_start = h.pos + (-h.pos) % alignment
    data_size = size - data_start
    if infos and data_size < 0:
        raise SourceError(f"{path}: not a readable GGUF file, truncated or damaged? (no data "
                          "section after the tensor infos)")
    tensors = []
    for name, ne, raw_type, offset in infos:
        def bad(why: str, name=name):
            raise SourceError(f"{path}: tensor {name!r}: {why}; the GGUF file is damaged")
        try:
            qtype = GGMLQuantizationType(raw_type)
            block, type_size = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            bad(f"unknown ggml type {raw_type}")
        if ne and ne[0] % block:
            bad(f"a row of {ne[0]} values is not a whole number of {qtype.name} blocks of {block}")
        nbytes = math.prod(ne) // block * type_size
        if offset % alignment:
            bad(f"offset {offset} is not a multiple of the alignment {alignment}")
        if offset + nbytes > data_size:
            bad(f"{nbytes} bytes at offset {offset} lie outside the data section "
                f"({data_size} bytes)")
        tensors.append(_Tensor(name, qtype, ne, data_start + offset, nbytes))
    ranges = sorted((t.offset, t.offset + t.nbytes, t.name) for t in tensors if t.nbytes)
    for (_, end, a), (start, _, b) in zip(ranges, ranges[1:]):
        if start < end:
            raise SourceError(f"{path}: tensors {a!r} and {b!r} overlap in the data section; "
                              "the GGUF file is damaged")
    return tensors, arch, h.order


def _loader(path: Path, t: _Tensor, order: str, expert: int | None):
    def load() -> np.ndarray:
        from gguf.constants import GGML_QUANT_SIZES
        from gguf.quants import dequantize

        kind = t.qtype.name
        shape = tuple(reversed(t.ne))  # ne order -> numpy order
        offset, nbytes = t.offset, t.nbytes
        if expert is not None:
            nbytes //= shape[0]
            offset += expert * nbytes
            shape = shape[1:]
        raw = read_exact(path, offset, np.uint8, (nbytes,))
        if kind in _READ_AS:
            a = raw.view(np.dtype(_READ_AS[kind]).newbyteorder(order)).reshape(shape)
            return a if order == "<" else a.astype(a.dtype.newbyteorder("="))
        try:
            block, type_size = GGML_QUANT_SIZES[t.qtype]
            raw = raw.reshape(*shape[:-1], shape[-1] // block * type_size)
            with np.errstate(all="ignore"):  # NaN/Inf scales: reported by the analysis
                return dequantize(raw, t.qtype)
        except NotImplementedError:
            raise SourceError(f"{path}: tensor {t.name!r}: gguf cannot dequantize {kind}") from None
        except (ValueError, TypeError, IndexError) as exc:
            raise SourceError(f"{path}: tensor {t.name!r}: cannot dequantize {kind} "
                              f"({one_line(exc)})") from None
    return load


def open_gguf(path: Path) -> Source:
    """The tensors of a GGUF file (see the module docstring)."""
    import_gguf()
    path = Path(path)
    tensors, arch, order = _parse(path)
    items: list[tuple] = []
    for t in tensors:
        shape = tuple(reversed(t.ne))
        dtype = _PLAIN.get(t.qtype.name, f"float32 ({t.qtype.name.lower()})")
        if len(shape) == 3 and ("_exps" in t.name or "experts" in t.name):
            for e in range(shape[0]):
                items.append((f"{t.name}[e{e}]", shape[1:], dtype, _loader(path, t, order, e),
                              {"expert": e}))
            continue
        items.append((t.name, shape, dtype, _loader(path, t, order, None)))
    if not items:
        raise SourceError(f"{path}: a GGUF file with no tensors")
    return Source(numbered(items, str(path)), "gguf", (str(path),), arch)


# --- the reader ---------------------------------------------------------------------------------
def _recognise(probe: Probe) -> str | None:
    return "gguf" if probe.head.startswith(b"GGUF") else None


def _open_file(path: Path, variant: str, trust_pickle: bool) -> Source:
    return open_gguf(path)


READER = Reader(
    name="gguf", phrase="a GGUF file", recognise=_recognise, open_file=_open_file,
    patterns=("*.gguf",), suffixes=(".gguf",), by_suffix=True, requires="gguf")
