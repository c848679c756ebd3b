"""safetensors files read with numpy alone, tensor by tensor (read, not memory-mapped).

The format is an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
shape and byte range, then the bytes. It is parsed here rather than with the ``safetensors``
package because that package's numpy API cannot return bfloat16 (numpy has no such dtype) and its
torch API needs torch. Every header entry is checked against the file before anything is read.
``write_safetensors`` writes the same layout, with the same dtype table.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np

from .base import Probe, Reader, Source, SourceError, model_order, natural_key, numbered, read_exact

# The one dtype table, for reading and writing: safetensors code -> the dtype name users see.
# bfloat16 has no numpy dtype: it is stored as uint16 and read as float32 (never written). The
# 8-bit floats (FP8 weights, e8m0 scales) are stored as uint8 and read as float32 through a
# 256-entry table (exactly: every 8-bit float is a float32); ``_WIDE`` lists the widened codes.
_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
          "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu",
          "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
          "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool"}
_WIDE = {"BF16": np.uint16, "F8_E4M3": np.uint8, "F8_E5M2": np.uint8, "F8_E8M0": np.uint8}
_DTYPES = {code: np.dtype(_WIDE.get(code, name)).type for code, name in _NAMES.items()}
_CODES = {name: code for code, name in _NAMES.items() if code not in _WIDE}
_MAX_HEADER = 100 * 1024 * 1024


def float8_table(name: str) -> np.ndarray:
    """The float32 value of each of the 256 bytes of an 8-bit float format (OCP FP8):
    'float8_e4m3fn' (bias 7, no infinities, S.1111.111 is NaN), 'float8_e5m2' (bias 15, IEEE-like)
    or 'float8_e8m0fnu' (the MX scale: 2**(e - 127), 0xFF is NaN)."""
    b = np.arange(256, dtype=np.int64)
    if name == "float8_e8m0fnu":
        out = np.ldexp(1.0, b - 127)
        out[255] = np.nan
        return out.astype(np.float32)
    ebits, mbits = {"float8_e4m3fn": (4, 3), "float8_e5m2": (5, 2)}[name]
    bias = (1 << (ebits - 1)) - 1
    sign = np.where(b >> 7, -1.0, 1.0)
    e = (b >> mbits) & ((1 << ebits) - 1)
    m = b & ((1 << mbits) - 1)
    normal = np.ldexp(1.0 + m / (1 << mbits), e - bias)
    sub = np.ldexp(m / (1 << mbits), 1 - bias)
    out = sign * np.where(e == 0, sub, normal)
    top = e == (1 << ebits) - 1
    if name == "float8_e5m2":
        out[top] = np.where(m[top] == 0, sign[top] * np.inf, np.nan)
    else:
        out[top & (m == (1 << mbits) - 1)] = np.nan
    return out.astype(np.float32)


def read_header(path: Path) -> tuple[int, dict]:
    """(offset of the data section, validated header) of a safetensors file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise SourceError(f"{path}: not a safetensors file (shorter than its 8-byte header)")
        (n,) = struct.unpack("<Q", raw)
        if n == 0 or n > _MAX_HEADER or 8 + n > size:
            raise SourceError(f"{path}: corrupt safetensors file (header length {n} does not fit "
                              f"a file of {size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SourceError(f"{path}: corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise SourceError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_size = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        what = _entry_problem(info)
        if what:
            raise SourceError(f"{path}: corrupt safetensors header entry for {name!r}: {what}")
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in _DTYPES:
            continue  # e.g. float8: listed, then reported as unsupported per tensor
        itemsize = np.dtype(_DTYPES[dtype]).itemsize
        count = math.prod(shape)
        if not (0 <= begin <= end <= data_size):
            raise SourceError(f"{path}: corrupt safetensors file: tensor {name!r} has byte range "
                              f"[{begin}, {end}) past the end of the data ({data_size} bytes); "
                              "the file may be truncated")
        if end - begin != count * itemsize:
            raise SourceError(f"{path}: corrupt safetensors file: tensor {name!r} has shape "
                              f"{tuple(shape)} ({count * itemsize} bytes) but {end - begin} bytes")
    return 8 + n, header


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _entry_problem(info) -> str:
    """What is wrong with the types of one header entry ('' when nothing): dtype a string, shape
    a list of whole numbers >= 0, data_offsets two whole numbers >= 0."""
    if not isinstance(info, dict):
        return "not a JSON object"
    for key in ("dtype", "shape", "data_offsets"):
        if key not in info:
            return f"no {key}"
    if not isinstance(info["dtype"], str):
        return f"dtype {info['dtype']!r} is not a string"
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or not all(_whole(s) for s in shape):
        return f"shape {shape!r} is not a list of whole numbers >= 0"
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_whole(o) for o in offsets):
        return f"data_offsets {offsets!r} are not two whole numbers >= 0"
    return ""


def _loader(path: Path, offset: int, dtype: str, shape: tuple[int, ...]):
    def load() -> np.ndarray:
        if dtype not in _DTYPES:
            raise SourceError(f"unsupported safetensors dtype {dtype}")
        count = math.prod(shape)
        if count == 0:
            return np.empty(shape, dtype=np.float32 if dtype in _WIDE else _DTYPES[dtype])
        mm = read_exact(path, offset, _DTYPES[dtype], shape)
        if dtype == "BF16":  # bfloat16 is the top half of a float32
            return (mm.astype(np.uint32) << 16).view(np.float32)
        if dtype in _WIDE:  # an 8-bit float: its value, from the table
            return float8_table(_NAMES[dtype])[mm]
        return mm
    return load


def _part_loader(path: Path, offset: int, dtype: str, shape: tuple[int, ...]):
    """Reads ``[i]`` along the first axis alone: that sub-tensor's bytes, nothing else."""
    inner = shape[1:]
    step = math.prod(inner) * (np.dtype(_DTYPES[dtype]).itemsize if dtype in _DTYPES else 0)

    def load_part(i: int) -> np.ndarray:
        if not 0 <= i < shape[0]:
            raise IndexError(f"part {i} of a tensor of {shape[0]}")
        return _loader(path, offset + i * step, dtype, inner)()
    return load_part


def _items(path: Path, names=None) -> list:
    base, header = read_header(path)
    out = []
    for name, info in header.items():
        if name == "__metadata__" or (names is not None and name not in names):
            continue
        shape = tuple(int(s) for s in info["shape"])
        begin = info["data_offsets"][0]
        dtype = info["dtype"]
        extra = {"part_loader": _part_loader(path, base + begin, dtype, shape)} \
            if len(shape) >= 3 and dtype in _DTYPES else {}
        out.append((name, shape, _NAMES.get(dtype, dtype.lower()),
                    _loader(path, base + begin, dtype, shape), extra))
    return out


def open_safetensors(files: list[Path]) -> Source:
    """One or more safetensors files; tensors in model order (``base.model_order``: embeddings
    first, then numeric-aware name order, the output head last), file by file."""
    items = []
    for path in files:
        items.extend(sorted(_items(Path(path)), key=lambda it: model_order(it[0])))
    if len(files) > 1:
        items.sort(key=lambda it: model_order(it[0]))
    return Source(numbered(items, str(files[0])), "safetensors", tuple(str(f) for f in files))


def open_sharded(index: Path) -> Source:
    """A sharded checkpoint: ``model.safetensors.index.json`` maps tensor names to shard files."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"{index}: not a valid safetensors index ({exc})") from None
    if not isinstance(weight_map, dict):
        raise SourceError(f"{index}: not a valid safetensors index (weight_map is not an object)")
    shards: dict[str, set] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard:
            raise SourceError(f"{index}: shard {shard!r} of {name!r} is not a file name")
        shards.setdefault(shard, set()).add(name)
    by_name = {}
    folder = index.parent.resolve()
    for shard, names in shards.items():
        path = index.parent / shard
        if Path(shard).is_absolute() or not path.resolve().is_relative_to(folder):
            raise SourceError(f"{index}: shard {shard!r} is outside the model's folder; "
                              "refused")
        if not path.exists():
            raise SourceError(f"{index}: shard {shard} is missing")
        for item in _items(path, names):
            by_name[item[0]] = item
    missing = set(weight_map) - set(by_name)
    if missing:
        raise SourceError(f"{index}: {len(missing)} tensors listed in the index are not in their "
                          f"shards (e.g. {sorted(missing)[0]!r})")
    items = [by_name[n] for n in sorted(by_name, key=model_order)]
    files = tuple(str(index.parent / s) for s in sorted(shards, key=natural_key))
    return Source(numbered(items, str(index)), "safetensors (sharded)", files,
                  f"{len(shards)} shards from {index.name}")


def write_safetensors(path, tensors: dict[str, np.ndarray],
                      metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` as a safetensors file: the 8-byte little-endian header length, the JSON
    header (padded with spaces so the data starts 8-byte aligned; ``metadata``, string to
    string, as its ``__metadata__``), then the bytes, little-endian.

    Raises ValueError naming the tensor whose dtype safetensors cannot hold (e.g. complex64).
    Not atomic: write to a temporary name and rename for that.
    """
    header: dict[str, dict] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    arrays = []
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        code = _CODES.get(a.dtype.name)
        if code is None:
            raise ValueError(f"{name}: cannot write {a.dtype} to safetensors")
        header[name] = {"dtype": code, "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for a in arrays:
            f.write(a.tobytes())


# --- the reader ---------------------------------------------------------------------------------
def _recognise(probe: Probe) -> str | None:
    """A JSON header right after the 8-byte length (a one-byte guess: asked after exact magics)."""
    return "safetensors" if len(probe.head) >= 9 and probe.head[8:9] == b"{" else None


def _open_file(path: Path, variant: str, trust_pickle: bool) -> Source:
    return open_safetensors([path])


def _open_folder(folder: Path, trust_pickle: bool) -> Source | None:
    index = folder / "model.safetensors.index.json"
    return open_sharded(index) if index.exists() else None


READER = Reader(
    name="safetensors", phrase="a safetensors file", recognise=_recognise, open_file=_open_file,
    patterns=("model*.safetensors", "*.safetensors"), suffixes=(".safetensors",),
    open_files=open_safetensors, open_folder=_open_folder, heuristic=True)
