"""PyTorch checkpoints, TorchScript archives, in-memory modules and state dicts (torch optional).

Checkpoints are loaded with ``torch.load(..., weights_only=True)``: a pickle that needs arbitrary
code to load is refused unless the caller passes ``trust_pickle=True``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..util.errors import one_line
from ..util.optional import require
from .base import Probe, Reader, Source, SourceError, numbered

_NESTED_KEYS = ("state_dict", "model_state", "model_state_dict", "model", "module", "net",
                "weights", "params")


def import_torch():
    """torch, or a SourceError naming the extra that installs it."""
    return require("torch", "reading PyTorch files", error=SourceError)


def is_torch_object(x: Any) -> bool:
    """True for torch modules and tensors, without importing torch."""
    return any(c.__module__.split(".")[0] == "torch" for c in type(x).__mro__)


def _to_numpy(t) -> np.ndarray:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype.is_floating_point and t.dtype not in (_torch().float16, _torch().float32,
                                                     _torch().float64):
        t = t.float()  # bfloat16 and friends: no numpy dtype
    return t.numpy()


def _torch():
    import torch

    return torch


def _dtype_name(t) -> str:
    return str(t.dtype).replace("torch.", "")


def _flatten(obj: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    """(name, tensor) pairs of a possibly nested state dict, in insertion (model) order."""
    torch = _torch()
    out = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            out.append((name, value))
        elif isinstance(value, np.ndarray):
            out.append((name, value))
        elif isinstance(value, Mapping):
            out.extend(_flatten(value, f"{name}."))
    return out


def _unwrap(obj: Any) -> Mapping:
    """The state dict inside a checkpoint: the dict itself, or one under a usual key."""
    torch = _torch()
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if not isinstance(obj, Mapping):
        raise SourceError(f"the checkpoint holds a {type(obj).__name__}, not a state dict")
    if any(isinstance(v, (torch.Tensor, np.ndarray)) for v in obj.values()):
        return obj
    for key in _NESTED_KEYS:
        inner = obj.get(key)
        if isinstance(inner, torch.nn.Module):
            return inner.state_dict()
        if isinstance(inner, Mapping) and _flatten(inner):
            return inner
    if _flatten(obj):
        return obj
    raise SourceError("the checkpoint holds no tensors (looked at the top level and under "
                      f"{', '.join(_NESTED_KEYS)})")


def _items_from_mapping(state: Mapping) -> list:
    items = []
    for name, t in _flatten(state):
        if isinstance(t, np.ndarray):
            items.append((name, t.shape, str(t.dtype), (lambda a=t: a)))
        else:
            items.append((name, tuple(t.shape), _dtype_name(t), (lambda a=t: _to_numpy(a))))
    return items


def open_torch_object(x: Any) -> Source:
    """An in-memory torch.nn.Module or state dict (tensors or numpy arrays)."""
    if isinstance(x, Mapping) and not is_torch_object(x) and all(
            isinstance(v, np.ndarray) for v in x.values()) and x:
        items = [(k, v.shape, str(v.dtype), (lambda a=v: a)) for k, v in x.items()]
        return Source(numbered(items, "<memory>"), "state dict (numpy)", ("<memory>",))
    import_torch()
    state = _unwrap(x)
    kind = "torch.nn.Module" if is_torch_object(x) else "state dict"
    return Source(numbered(_items_from_mapping(state), "<memory>"), kind, ("<memory>",))


def open_torch_file(path: Path, kind: str, *, trust_pickle: bool = False) -> Source:
    torch = import_torch()
    if kind == "torchscript":
        try:
            with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript, still reads it
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise SourceError(f"{path}: cannot load the TorchScript archive: {one_line(exc)}") from None
        state = module.state_dict()
        return Source(numbered(_items_from_mapping(state), str(path)), "torchscript",
                      (str(path),))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:
        if not trust_pickle and ("weights_only" in str(exc) or "Unsupported global" in str(exc)):
            raise SourceError(
                f"{path}: this pickle needs code execution to load, which is refused by default "
                "(it could run anything). If you trust the file, pass trust_pickle=True "
                "(CLI: --trust-pickle)") from None
        raise SourceError(f"{path}: cannot load the PyTorch checkpoint: {one_line(exc)}") from None
    state = _unwrap(obj)
    return Source(numbered(_items_from_mapping(state), str(path)), "pytorch", (str(path),))


# --- the reader ---------------------------------------------------------------------------------
_PICKLE_PROTOCOLS = (b"\x02", b"\x03", b"\x04", b"\x05")


def _recognise(probe: Probe) -> str | None:
    """A TorchScript or torch.save zip archive, or a legacy (non-zip) torch.save pickle."""
    if probe.is_zip:
        names = probe.members
        if any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names):
            return "torchscript"
        return "torch" if any(n.endswith("data.pkl") for n in names) else None
    if probe.head[:1] == b"\x80" and probe.head[1:2] in _PICKLE_PROTOCOLS:
        return "torch"
    return None


def _open_file(path: Path, variant: str, trust_pickle: bool) -> Source:
    return open_torch_file(path, variant, trust_pickle=trust_pickle)


READER = Reader(
    name="torch", phrase="a PyTorch checkpoint or TorchScript archive", recognise=_recognise,
    open_file=_open_file,
    patterns=("pytorch_model*.bin", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.pth.tar"),
    suffixes=(".bin", ".pt", ".pth", ".ckpt", ".tar"), zip_phrase="a PyTorch checkpoint", requires="torch")
