"""PyTorch checkpoints, TorchScript archives, in-memory modules and state dicts (torch optional).

Checkpoints are loaded with ``torch.load(..., weights_only=True)``; one whose metadata names
other classes (Lightning hyper-parameters, optimizer or scheduler objects, configs) is read
with those classes as inert stand-ins (``unpickle.load_inert``), running none of its code. A
pickle whose tensors themselves need code to load is refused unless the caller passes
``trust_pickle=True``. The model's tensors are found at the top level or under a usual key
('state_dict', 'model', ...; nested ones too), and a state dict found under a key loses the
prefix that only names its training wrapper ('model.', 'module.', '_orig_mod.').
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..util.errors import one_line
from ..util.optional import require
from .base import Probe, Reader, Source, SourceError, numbered
from .containers import MAX_DEPTH, MAX_TENSORS, contains_itself, too_deep, too_many, walk
from .unpickle import first_object, load_inert, module_state, view_problem

_NESTED_KEYS = ("state_dict", "model_state", "model_state_dict", "model", "module", "net",
                "weights", "params")
_WRAPPER_PREFIXES = ("model.", "module.", "_orig_mod.")


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


def _flatten(obj: Mapping, prefix: str = "", where: str = "the checkpoint"
             ) -> list[tuple[str, Any]]:
    """(name, tensor) pairs of a possibly nested state dict, in insertion (model) order; each
    nested dict walked once (``containers.walk``)."""
    torch = _torch()
    return walk(obj, lambda v: v.items() if isinstance(v, Mapping) else None,
                lambda v: isinstance(v, (torch.Tensor, np.ndarray)), where, prefix)


def _module_state_dict(module, where: str) -> Mapping:
    """``module.state_dict()``, once the module tree is known to be finite and small: a module
    inside its own children, a nesting deeper than ``MAX_DEPTH`` or more than ``MAX_TENSORS``
    tensors along all the paths ``state_dict`` would walk (shared submodules are walked once
    per parent) is a ``SourceError``. Iterative: nothing recurses before these checks."""

    def kids(m) -> list:  # as state_dict walks them: a child shared by two keys twice
        # torch's own child table, which state_dict walks (named_children drops repeats)
        return [(k, c) for k, c in vars(m).get("_modules", {}).items() if c is not None]

    total: dict[int, int] = {}  # id -> tensors along all paths below, once finished
    on_path: set[int] = set()
    stack = [(module, iter(kids(module)), "")]
    on_path.add(id(module))
    while stack:
        node, children, name = stack[-1]
        step = next(children, None)
        if step is None:
            stack.pop()
            on_path.discard(id(node))
            own = sum(1 for _ in node.parameters(recurse=False)) + sum(
                1 for _ in node.buffers(recurse=False))
            count = own + sum(total[id(c)] for _, c in kids(node))
            if count > MAX_TENSORS:
                raise too_many(where)
            total[id(node)] = count
            continue
        key, child = step
        path = f"{name}.{key}" if name else key
        if id(child) in on_path:
            raise contains_itself(where, path)
        if id(child) in total:
            continue
        if len(stack) >= MAX_DEPTH:
            raise too_deep(where, path)
        on_path.add(id(child))
        stack.append((child, iter(kids(child)), path))
    return module.state_dict()


def _as_state(value: Any, where: str = "the checkpoint") -> Mapping | None:
    """A mapping of tensors from a value: a module's state dict (also a pickled module that came
    back as a stand-in), a mapping itself, else None."""
    torch = _torch()
    if isinstance(value, torch.nn.Module):
        return _module_state_dict(value, where)
    state = module_state(value, where=where)
    if state:
        return state
    return value if isinstance(value, Mapping) else None


def _strip_wrapper(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Names without a prefix every one of them shares and that only says where the model sat
    in its training wrapper ('model.' of a Lightning module, 'module.' of DDP, '_orig_mod.' of
    torch.compile)."""
    while pairs:
        first = pairs[0][0].split(".", 1)[0] + "."
        if first not in _WRAPPER_PREFIXES or not all(
                n.startswith(first) and len(n) > len(first) for n, _ in pairs):
            return pairs
        pairs = [(n[len(first):], t) for n, t in pairs]
    return pairs


def _tensors(obj: Any, where: str = "the checkpoint") -> list[tuple[str, Any]]:
    """The model's (name, tensor) pairs inside a checkpoint: the state dict under a usual key,
    repeatedly, else the dict itself ({'model': {'state_dict': ...}}); a state dict found under a
    key has its wrapper prefix removed (see ``_strip_wrapper``). [] when there is none."""
    state = _as_state(obj, where)
    if state is None:
        return []
    nested = False
    seen = {id(state)}
    while True:
        for key in _NESTED_KEYS:
            inner = _as_state(state.get(key), where)
            if inner is not None and _flatten(inner, where=where):
                break
        else:
            break
        if id(inner) in seen:
            raise contains_itself(where, key)
        if len(seen) > MAX_DEPTH:
            raise too_deep(where, key)
        seen.add(id(inner))
        state, nested = inner, True
    pairs = _flatten(state, where=where)
    return _strip_wrapper(pairs) if nested else pairs


def _unwrap(obj: Any, where: str = "the checkpoint", replaced: tuple[str, ...] = ()
            ) -> list[tuple[str, Any]]:
    """``_tensors`` of a checkpoint, or a SourceError saying why there are none."""
    if _as_state(obj, where) is None and not replaced:
        raise SourceError(f"{where} is not a model checkpoint (a pickle of "
                          f"{_kind(obj)}, not a state dict)")
    pairs = _tensors(obj, where)
    if pairs:
        return pairs
    if replaced:
        shown = ", ".join(replaced[:4]) + (f" and {len(replaced) - 4} more"
                                           if len(replaced) > 4 else "")
        raise SourceError(
            f"{where}: no tensors outside objects that need code to load ({shown}); refused by "
            "default (it could run anything). If you trust the file, pass trust_pickle=True "
            "(CLI: --trust-pickle)")
    raise SourceError(f"{where} holds no tensors (looked at the top level and under "
                      f"{', '.join(_NESTED_KEYS)})")


def _kind(obj: Any) -> str:
    """A pickled object's type, as a user reads it (a stand-in's by the global it names)."""
    return getattr(obj, "inert_name", None) or type(obj).__name__


def _check_views(pairs: list[tuple[str, Any]], where: str) -> None:
    """Refuse a tensor that claims more than its storage holds (a zero-stride view claiming a
    50,000 x 15,000 layer from 16 floats) before anything is allocated for it."""
    torch = _torch()
    for name, t in pairs:
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.is_quantized \
                or t.device.type == "meta":
            continue
        problem = view_problem(t.shape, t.stride(), t.storage_offset(),
                               t.untyped_storage().nbytes() // t.element_size())
        if problem:
            raise SourceError(f"{where}: {name[:80]} is {problem}")


def _items_from_mapping(pairs: list[tuple[str, Any]], convs: frozenset = frozenset()) -> list:
    """(name, shape, dtype, loader, extra): a 3-D tensor or more reads ``[i]`` alone
    (``part_loader``); the weights of conv modules (``convs``) have ``role='conv'``."""
    items = []
    for name, t in pairs:
        extra: dict = {"role": "conv"} if name in convs else {}
        if isinstance(t, np.ndarray):
            if t.ndim >= 3:
                extra["part_loader"] = lambda i, a=t: a[i]
            items.append((name, t.shape, str(t.dtype), (lambda a=t: a), extra))
        else:
            if t.dim() >= 3:
                extra["part_loader"] = lambda i, a=t: _to_numpy(a[i])
            items.append((name, tuple(t.shape), _dtype_name(t), (lambda a=t: _to_numpy(a)),
                          extra))
    return items


def _conv_weights(module) -> frozenset:
    """The state-dict names of the weights of a module's convolutions (their type known)."""
    torch = _torch()
    kinds = (torch.nn.Conv1d, torch.nn.ConvTranspose1d, torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    return frozenset(f"{n}.weight" if n else "weight" for n, m in module.named_modules()
                     if isinstance(m, kinds))


_CONV_OPS = {"aten::conv1d", "aten::conv_transpose1d", "aten::conv2d", "aten::conv_transpose2d",
             "aten::_convolution", "aten::convolution"}


def _script_convs(module) -> frozenset:
    """The state-dict names of the tensors a TorchScript module's forward passes to a
    convolution op as its weight (its inlined graph: ``aten::conv1d(x, self.a.b.weight, ...)``),
    and of its ``Conv1d`` / ``Conv2d`` submodules' weights; empty when the graph cannot be read."""
    found = {f"{n}.weight" if n else "weight" for n, m in module.named_modules()
             if getattr(m, "original_name", "") in ("Conv1d", "ConvTranspose1d", "Conv2d",
                                                     "ConvTranspose2d")}

    def attr_path(value) -> str | None:
        names, node = [], value.node()
        while node.kind() == "prim::GetAttr":
            names.append(node.s("name"))
            node = node.input().node()
        return ".".join(reversed(names)) if node.kind() == "prim::Param" and names else None

    try:
        graph = module.inlined_graph  # held: its nodes live as long as it does
        blocks = [graph]
        while blocks:
            for node in blocks.pop().nodes():
                if node.kind() in _CONV_OPS:
                    inputs = list(node.inputs())
                    path = attr_path(inputs[1]) if len(inputs) > 1 else None
                    if path:
                        found.add(path)
                blocks.extend(node.blocks())
    except Exception:  # noqa: BLE001 - no graph to read: only the module types are known
        pass
    return frozenset(found)


def _config_of(module) -> dict | None:
    """A transformers model's ``config`` as its config.json dict (None for anything else)."""
    to_dict = getattr(getattr(module, "config", None), "to_dict", None)
    try:
        config = to_dict() if callable(to_dict) else None
    except Exception:  # noqa: BLE001 - not a transformers config after all
        return None
    return config if isinstance(config, dict) else None


def open_torch_object(x: Any) -> Source:
    """An in-memory torch.nn.Module or state dict (tensors or numpy arrays)."""
    if isinstance(x, Mapping) and not is_torch_object(x) and all(
            isinstance(v, np.ndarray) for v in x.values()) and x:
        items = [(k, v.shape, str(v.dtype), (lambda a=v: a)) for k, v in x.items()]
        return Source(numbered(items, "<memory>"), "state dict (numpy)", ("<memory>",))
    torch = import_torch()
    pairs = _unwrap(x, "the object")
    kind = "torch.nn.Module" if is_torch_object(x) else "state dict"
    module = isinstance(x, torch.nn.Module)
    convs = _conv_weights(x) if module else frozenset()
    return Source(numbered(_items_from_mapping(pairs, convs), "<memory>"), kind, ("<memory>",),
                  config=_config_of(x) if module else None)


def open_torch_file(path: Path, kind: str, *, trust_pickle: bool = False) -> Source:
    torch = import_torch()
    if kind == "torchscript":
        try:
            with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript, still reads it
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise SourceError(f"{path}: cannot load the TorchScript archive: {one_line(exc)}") from None
        pairs = list(module.state_dict().items())
        return Source(numbered(_items_from_mapping(pairs, _script_convs(module)), str(path)),
                      "torchscript",
                      (str(path),))
    _check_legacy(path)
    replaced: tuple[str, ...] = ()
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=not trust_pickle)
    except MemoryError:
        raise _too_large(path) from None
    except SourceError as exc:
        raise SourceError(f"{path}: {exc}") from None
    except Exception as exc:
        if trust_pickle or not ("weights_only" in str(exc) or "Unsupported global" in str(exc)):
            raise _failure(path, exc) from None
        obj, replaced = _load_inert(path)
    pairs = _unwrap(obj, str(path), replaced)
    _check_views(pairs, str(path))
    return Source(numbered(_items_from_mapping(pairs), str(path)), "pytorch", (str(path),))


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # what a legacy (non-zip) torch.save file starts with


def _check_legacy(path: Path) -> None:
    """A non-zip file must be a legacy torch.save pickle (its first object the magic number,
    unpickled inertly): a bare pickle of anything else is not a checkpoint, whatever trust is
    given (torch would run its payload and then fail)."""
    if zipfile.is_zipfile(path):
        return
    try:
        with open(path, "rb") as fp:
            first = first_object(fp)
    except MemoryError:
        raise _too_large(path) from None
    except OSError:
        raise  # the caller's one line for an OS error
    except Exception as exc:  # noqa: BLE001 - whatever the damage, in one line
        raise SourceError(f"{path} is damaged: {one_line(exc)}") from None
    if first != _LEGACY_MAGIC or type(first) is not int:
        raise SourceError(f"{path} is not a model checkpoint (a pickle of {_kind(first)})")


def _too_large(path: Path) -> SourceError:
    return SourceError(f"{path} declares a size larger than the file (a length field that "
                       "cannot be allocated); refused as damaged or tampered")


def _failure(path: Path, exc: BaseException) -> SourceError:
    """One line for a checkpoint that cannot load, for another reason than a refused global."""
    if isinstance(exc, MemoryError):
        return _too_large(path)
    text = one_line(exc)
    if isinstance(exc, (EOFError, zipfile.BadZipFile, pickle.UnpicklingError)) or any(
            w in text for w in ("PytorchStreamReader", "corrupt", "truncated", "EOF",
                                "invalid load key", "out of bounds", "unexpected")):
        return SourceError(f"{path} is damaged: {text}")
    return SourceError(f"{path}: cannot load the PyTorch checkpoint: {text}")


def _load_inert(path: Path) -> tuple[Any, tuple[str, ...]]:
    """A checkpoint whose metadata names foreign classes, read with them as inert stand-ins.
    The trust-pickle advice only when a refused global is what stopped it."""
    replaced: dict[str, type] = {}
    try:
        return load_inert(path, replaced)
    except MemoryError:
        raise _too_large(path) from None
    except SourceError as exc:
        raise SourceError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the tensors themselves need code, or it is damaged
        failure = _failure(path, exc)
        refused = "refused to set the state" in str(exc)
        if not refused and (" is damaged: " in str(failure) or not replaced):
            raise failure from None
        names = ", ".join(sorted(replaced)[:4]) or "none"
        raise SourceError(
            f"{path}: this pickle needs code execution to load its tensors ({one_line(exc)}; "
            f"globals it names: {names}), which is refused by default (it could run anything). "
            "If you trust the file, pass trust_pickle=True (CLI: --trust-pickle)") from None


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
