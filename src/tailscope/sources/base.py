"""What users have -> a lazy list of named tensors (``LayerRef``), in model order.

``open_source`` detects the format from the content (magic bytes), never from the file name alone.
Nothing here computes an eigenvalue; a tensor is read only when ``LayerRef.load()`` is called.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class SourceError(ValueError):
    """The input cannot be read as a model: a one-line, user-facing message."""


@dataclass(frozen=True)
class LayerRef:
    """One named tensor of a model, read lazily.

    ``index`` is its position among all tensors of the source in model order (stable whatever
    filter is applied), ``layout`` says how to read a 4-D tensor ('torch': out, in, kh, kw).
    """

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: str
    source: str
    _loader: Callable[[], np.ndarray] = field(repr=False, compare=False)
    layout: str = "torch"

    def load(self) -> np.ndarray:
        """The tensor as a numpy array (bf16 arrives as float32)."""
        return self._loader()

    @property
    def module(self) -> str:
        """The name without a trailing '.weight' (WeightWatcher's layer name)."""
        return self.name[: -len(".weight")] if self.name.endswith(".weight") else self.name

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


def numbered(items: list[tuple[str, tuple[int, ...], str, Callable[[], np.ndarray]]], source: str,
             layout: str = "torch") -> tuple[LayerRef, ...]:
    """LayerRefs with consecutive indices from (name, shape, dtype, loader) in model order."""
    return tuple(LayerRef(name=n, index=i, shape=tuple(int(s) for s in shape), dtype=d,
                          source=source, _loader=fn, layout=layout)
                 for i, (n, shape, d, fn) in enumerate(items))


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
        raise SourceError(f"{path}: a zip archive that is neither a numpy .npz nor a PyTorch "
                          "checkpoint")
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch"  # a legacy (non-zip) torch.save pickle
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head.startswith(b"\x89HDF"):
        raise SourceError(f"{path}: a Keras/HDF5 file; this version of tailscope reads "
                          "safetensors, PyTorch and numpy files")
    if path.suffix.lower() == ".onnx":
        raise SourceError(f"{path}: an ONNX model; this version of tailscope reads "
                          "safetensors, PyTorch and numpy files")
    raise SourceError(f"{path}: unknown format (not safetensors, a PyTorch checkpoint, "
                      "TorchScript, .npz or .npy)")


def _open_file(path: Path, trust_pickle: bool) -> Source:
    kind = _sniff(path)
    if kind == "safetensors":
        from .safetensors import open_safetensors

        return open_safetensors([path])
    if kind in ("npz", "npy"):
        from .numpy import open_numpy

        return open_numpy(path, kind)
    from .torch import open_torch_file

    return open_torch_file(path, kind, trust_pickle=trust_pickle)


_WEIGHT_PATTERNS = (
    ("safetensors", ("model*.safetensors", "*.safetensors")),
    ("torch", ("pytorch_model*.bin", "*.bin", "*.pt", "*.pth")),
    ("numpy", ("*.npz", "*.npy")),
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
                      "*.bin, *.pt, *.pth, *.npz, *.npy)")


def _concat(sources: list[Source]) -> Source:
    items = [(r.name, r.shape, r.dtype, r._loader) for s in sources for r in s.refs]
    files = tuple(f for s in sources for f in s.files)
    return Source(numbered(items, files[0]), sources[0].format, files)


def open_source(x: Any, *, trust_pickle: bool = False) -> Source:
    """Open a model as a lazy list of tensors.

    Accepts a path (safetensors file, sharded folder with ``model.safetensors.index.json``,
    Hugging Face-style folder, PyTorch ``.bin/.pt/.pth`` state dict or TorchScript archive, numpy
    ``.npz/.npy``), an in-memory ``torch.nn.Module``, a state dict (mapping of names to tensors or
    arrays, also nested under 'state_dict' / 'model_state' / 'model'), or a single array.

    PyTorch pickles are loaded with ``weights_only=True``; one that needs arbitrary code to load
    is refused unless ``trust_pickle=True``.
    """
    if isinstance(x, Source):
        return x
    if isinstance(x, (str, Path)):
        path = Path(x).expanduser()
        if not path.exists():
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
