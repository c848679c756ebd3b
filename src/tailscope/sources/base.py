"""What users have -> a lazy list of named tensors (``LayerRef``), in model order.

``open_source`` detects the format from the content (magic bytes), never from the file name alone.
Nothing here computes an eigenvalue; a tensor is read only when ``LayerRef.load()`` is called.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np


class SourceError(ValueError):
    """The input cannot be read as a model: a one-line, user-facing message."""


_WEIGHT_SUFFIX = re.compile(r"\.weight((?:\[[^\]]*\])*)$")


@dataclass(frozen=True)
class LayerRef:
    """One named tensor of a model, read lazily.

    ``index`` is its position among all tensors of the source in model order (stable whatever
    filter is applied), ``layout`` says how to read a tensor ('torch': out, in, kh, kw; 'keras':
    kh, kw, in, out). ``gates`` names the gate blocks of a stacked recurrent weight in order along
    its output axis (e.g. 'ifgo' for a PyTorch LSTM), when the source knows them. A derived
    matrix (a gate, q/k/v, a head) has its ``parent``'s name; a tensor that was split lists its
    parts in ``split_into``. ``role`` is 'recurrent' for recurrent weights.
    """

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: str
    source: str
    _loader: Callable[[], np.ndarray] = field(repr=False, compare=False)
    layout: str = "torch"
    gates: str = ""
    role: str = ""
    parent: str = ""
    split_into: tuple[str, ...] = ()

    def load(self) -> np.ndarray:
        """The tensor as a numpy array (bf16 arrives as float32)."""
        return self._loader()

    @property
    def module(self) -> str:
        """The name without a trailing '.weight' (WeightWatcher's layer name); a derived matrix
        keeps its part label ('attn.q_proj[h0]')."""
        return _WEIGHT_SUFFIX.sub(r"\1", self.name)

    @property
    def is_float(self) -> bool:
        return self.dtype.startswith(("float", "bfloat"))


@dataclass(frozen=True)
class Source(Sequence):
    """The tensors of one model, in model order, and what was read to get them."""

    refs: tuple[LayerRef, ...]
    format: str
    files: tuple[str, ...]
    note: str = ""

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i):
        return self.refs[i]

    def __iter__(self) -> Iterator[LayerRef]:
        return iter(self.refs)

    def describe(self) -> str:
        where = ", ".join(Path(f).name for f in self.files[:3])
        more = f" and {len(self.files) - 3} more" if len(self.files) > 3 else ""
        return f"{self.format}: {where}{more}" + (f" ({self.note})" if self.note else "")


_NUM = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that puts 'layers.9' before 'layers.10'."""
    return tuple(int(part) if part.isdigit() else part for part in _NUM.split(name))


def numbered(items: list[tuple], source: str, layout: str = "torch") -> tuple[LayerRef, ...]:
    """LayerRefs with consecutive indices from (name, shape, dtype, loader[, extra]) in model
    order; ``extra`` is a dict of further LayerRef fields (gates, role)."""
    return tuple(LayerRef(name=it[0], index=i, shape=tuple(int(s) for s in it[1]), dtype=it[2],
                          source=source, _loader=it[3], layout=layout,
                          **(it[4] if len(it) > 4 else {}))
                 for i, it in enumerate(items))


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


def _sniff(path: Path) -> str:
    """The format of a file from its first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        import zipfile

        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            raise SourceError(f"{path}: a damaged zip archive") from None
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        if any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        if "model.weights.h5" in names:
            return "keras"
        raise SourceError(f"{path}: a zip archive that is neither a numpy .npz, a PyTorch "
                          "checkpoint nor a Keras .keras file")
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch"  # a legacy (non-zip) torch.save pickle
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if _looks_like_onnx(head) or path.suffix.lower() == ".onnx":
        return "onnx"  # the suffix too, so a damaged .onnx file gets the ONNX reader's message
    raise SourceError(f"{path}: unknown format (not safetensors, a PyTorch checkpoint, "
                      "TorchScript, ONNX, Keras, .npz or .npy)")


def _open_file(path: Path, trust_pickle: bool) -> Source:
    kind = _sniff(path)
    if kind == "safetensors":
        from .safetensors import open_safetensors

        return open_safetensors([path])
    if kind in ("npz", "npy"):
        from .numpy import open_numpy

        return open_numpy(path, kind)
    if kind == "onnx":
        from .onnx import open_onnx

        return open_onnx(path)
    if kind in ("hdf5", "keras"):
        from .keras import open_keras

        return open_keras(path, kind)
    from .torch import open_torch_file

    return open_torch_file(path, kind, trust_pickle=trust_pickle)


_WEIGHT_PATTERNS = (
    ("safetensors", ("model*.safetensors", "*.safetensors")),
    ("torch", ("pytorch_model*.bin", "*.bin", "*.pt", "*.pth")),
    ("numpy", ("*.npz", "*.npy")),
    ("onnx", ("*.onnx",)),
    ("keras", ("*.keras", "*.h5")),
)


def _open_folder(path: Path, trust_pickle: bool) -> Source:
    index = path / "model.safetensors.index.json"
    if index.exists():
        from .safetensors import open_sharded

        return open_sharded(index)
    for kind, patterns in _WEIGHT_PATTERNS:
        for pattern in patterns:
            files = sorted((p for p in path.glob(pattern) if p.is_file()),
                           key=lambda p: natural_key(p.name))
            if not files:
                continue
            others = [p.name for k, pats in _WEIGHT_PATTERNS if k != kind for pt in pats
                      for p in path.glob(pt)]
            note = f"chose {kind} files" + (f"; ignored {', '.join(sorted(set(others)))}"
                                           if others else "")
            if kind == "safetensors":
                from .safetensors import open_safetensors

                src = open_safetensors(files)
            elif len(files) == 1:
                src = _open_file(files[0], trust_pickle)
            else:
                src = _concat([_open_file(f, trust_pickle) for f in files])
            return Source(src.refs, src.format, src.files, note)
    raise SourceError(f"{path}: no weights found in this folder (looked for *.safetensors, "
                      "*.bin, *.pt, *.pth, *.npz, *.npy, *.onnx, *.keras, *.h5)")


def _concat(sources: list[Source]) -> Source:
    refs = [r for s in sources for r in s.refs]
    files = tuple(f for s in sources for f in s.files)
    return Source(tuple(replace(r, index=i) for i, r in enumerate(refs)), sources[0].format, files)


def open_source(x: Any, *, trust_pickle: bool = False) -> Source:
    """Open a model as a lazy list of tensors.

    Accepts a path (safetensors file, sharded folder with ``model.safetensors.index.json``,
    Hugging Face-style folder, PyTorch ``.bin/.pt/.pth`` state dict or TorchScript archive, numpy
    ``.npz/.npy``, ONNX model, Keras ``.h5`` / ``.keras``), a Hugging Face model id
    ``owner/name`` (weights downloaded to the Hugging Face cache; needs the ``hub`` extra), an
    in-memory ``torch.nn.Module``, a state dict (mapping of names to tensors or
    arrays, also nested under 'state_dict' / 'model_state' / 'model'), or a single array.

    PyTorch pickles are loaded with ``weights_only=True``; one that needs arbitrary code to load
    is refused unless ``trust_pickle=True``.
    """
    if isinstance(x, Source):
        return x
    if isinstance(x, (str, Path)):
        path = Path(x).expanduser()
        if not path.exists():
            from .hub import is_repo_id, open_hub

            if isinstance(x, str) and is_repo_id(x):
                return _open_folder(open_hub(x), trust_pickle)
            raise SourceError(f"{path}: no such file or folder")
        if path.is_dir():
            return _open_folder(path, trust_pickle)
        return _open_file(path, trust_pickle)
    from .torch import is_torch_object, open_torch_object

    if is_torch_object(x) or isinstance(x, dict):
        return open_torch_object(x)
    if isinstance(x, np.ndarray):
        from .numpy import open_array

        return open_array(x)
    raise SourceError(f"cannot read a model from a {type(x).__name__}; pass a path, a "
                      "torch.nn.Module, a state dict or an array")
