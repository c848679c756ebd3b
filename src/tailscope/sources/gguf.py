"""GGUF files (llama.cpp and the local-LLM tools) through the ``gguf`` package (the ``gguf`` extra).

The file is memory-mapped by ``gguf.GGUFReader``; a tensor is dequantized only when its
``LayerRef`` is loaded, with gguf's own ``dequantize`` (F32, F16, BF16, F64 and every quantized
type gguf implements: Q8_0, Q4_0, Q4_K, Q6_K, ...), so one tensor at a time is in memory.

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

from pathlib import Path

import numpy as np

from ..util.errors import one_line
from ..util.optional import require
from .base import Probe, Reader, Source, SourceError, numbered

_PLAIN = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
          "I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64"}


def import_gguf():
    """gguf, or a SourceError naming the extra that installs it."""
    return require("gguf", "reading GGUF files", error=SourceError)


def _loader(path: Path, t, qtype, expert: int | None):
    def load() -> np.ndarray:
        from gguf.quants import dequantize

        raw = t.data if expert is None else t.data[expert]
        kind = qtype.name
        try:
            if kind in ("F32", "F64") or kind.startswith("I"):
                return np.asarray(raw)  # a view of the memory map
            if kind == "F16":
                return np.asarray(raw, dtype=np.float16)
            with np.errstate(all="ignore"):  # NaN/Inf scales: reported by the analysis
                return dequantize(np.asarray(raw), qtype)
        except NotImplementedError:
            raise SourceError(f"{path}: tensor {t.name!r}: gguf cannot dequantize {kind}") from None
        except (ValueError, TypeError, IndexError) as exc:
            raise SourceError(f"{path}: tensor {t.name!r}: cannot dequantize {kind} "
                              f"({one_line(exc)})") from None
    return load


def open_gguf(path: Path) -> Source:
    """The tensors of a GGUF file (see the module docstring)."""
    gguf = import_gguf()
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as exc:  # noqa: BLE001 - gguf raises ValueError, struct errors, IndexError...
        raise SourceError(f"{path}: not a readable GGUF file, truncated or damaged? "
                          f"({one_line(exc)})") from None
    items: list[tuple] = []
    for t in reader.tensors:
        qtype = t.tensor_type
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # ne order -> numpy order
        dtype = _PLAIN.get(qtype.name, f"float32 ({qtype.name.lower()})")
        if len(shape) == 3 and ("_exps" in t.name or "experts" in t.name):
            for e in range(shape[0]):
                items.append((f"{t.name}[e{e}]", shape[1:], dtype, _loader(path, t, qtype, e)))
            continue
        items.append((t.name, shape, dtype, _loader(path, t, qtype, None)))
    if not items:
        raise SourceError(f"{path}: a GGUF file with no tensors")
    arch = ""
    field = reader.fields.get("general.architecture")
    if field is not None:
        try:
            arch = bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
        except (IndexError, TypeError, ValueError):
            arch = ""
    # the reader (and its memory map) lives as long as the loaders that hold its tensors
    return Source(numbered(items, str(path)), "gguf", (str(path),), arch)


# --- the reader ---------------------------------------------------------------------------------
def _recognise(probe: Probe) -> str | None:
    return "gguf" if probe.head.startswith(b"GGUF") else None


def _open_file(path: Path, variant: str, trust_pickle: bool) -> Source:
    return open_gguf(path)


READER = Reader(
    name="gguf", phrase="a GGUF file", recognise=_recognise, open_file=_open_file,
    patterns=("*.gguf",), suffixes=(".gguf",), by_suffix=True, requires="gguf")
