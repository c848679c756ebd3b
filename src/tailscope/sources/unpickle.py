"""Reading the tensors of a ``torch.save`` pickle whose metadata names foreign classes, without
running any of its code.

A training checkpoint holds more than tensors: a Lightning ``.ckpt`` its hyper-parameters
(omegaconf containers, dataclasses, the user's own classes), a ``.pth.tar`` its scheduler object
or its config. ``torch.load(weights_only=True)`` refuses every such file. ``load_inert`` unpickles
it with a restricted unpickler instead: the globals in ``ALLOWED_GLOBALS`` (torch's tensor
rebuilders, its value classes and dtypes, ``OrderedDict``, numpy's array rebuilders: what torch's
``weights_only`` allows, less what only tensor subclasses need) are resolved; every other global
the pickle names -- a class, a function, ``os.system`` alike -- is replaced by an ``Inert``
stand-in that is never imported and never called: constructing it (REDUCE, NEWOBJ), setting its
state (BUILD), its items or list entries only records the data the pickle gives. BUILD on
anything but a stand-in, a tensor, an ``OrderedDict``, a numpy array or dtype is refused (a
pickle cannot set attributes of a class or function). ``module_state`` recovers the
parameters and buffers of a pickled ``torch.nn.Module`` from its stand-in's recorded state.

Tensors whose own reconstruction needs foreign code (tensor subclasses) do not come back: the
caller then says that the file needs ``trust_pickle=True``.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import pickle
import struct
import types
import warnings
from collections import Counter, OrderedDict
from pathlib import Path
from pickle import _Unpickler as PurePythonUnpickler  # the standard library's, in Python
from typing import Any

from .base import SourceError
from .containers import walk


class Inert:
    """A stand-in for a global a pickle names and that is not allowed: it records what the pickle
    gives it (``inert_args``, ``inert_state``, ``inert_items``, ``inert_list``) and does nothing
    else. ``inert_name`` is the ``module.name`` it stands for."""

    inert_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__.update(inert_args=args, inert_kwargs=kwargs, inert_state=None,
                            inert_items={}, inert_list=[])
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["inert_state"] = state

    def __setitem__(self, key, value):
        self.__dict__["inert_items"][key] = value

    def append(self, value):
        self.__dict__["inert_list"].append(value)

    def extend(self, values):
        self.__dict__["inert_list"].extend(values)

    def __repr__(self) -> str:
        return f"<inert {self.inert_name}>"


# The globals a torch.save pickle may name and that are resolved: torch's tensor and parameter
# rebuilders, its value classes, the containers, numpy's array rebuilders (the set torch's
# ``weights_only`` unpickler allows, less what only tensor subclasses need). Everything else is
# an ``Inert`` stand-in. Besides these, a torch dtype, layout, qscheme or memory format by name.
ALLOWED_GLOBALS: dict[str, tuple[str, ...]] = {
    "torch._utils": ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3",
                     "_rebuild_parameter", "_rebuild_parameter_with_state", "_rebuild_qtensor",
                     "_rebuild_sparse_tensor", "_rebuild_meta_tensor_no_storage",
                     "_rebuild_device_tensor_from_cpu_tensor",
                     "_rebuild_device_tensor_from_numpy"),
    "torch._tensor": ("_rebuild_from_type_v2",),
    "torch.serialization": ("_get_layout",),
    "torch": ("Size", "Tensor", "device"),
    "torch.nn.parameter": ("Parameter",),
    "collections": ("OrderedDict", "Counter"),
    "builtins": ("set", "frozenset", "complex", "bytearray"),
    "_codecs": ("encode",),
    "numpy": ("ndarray", "dtype"),
}


def _allowed_globals() -> dict[str, Any]:
    """``ALLOWED_GLOBALS`` resolved ('module.name' -> object), torch's dtypes and friends, and
    numpy's array rebuilders under both their numpy 1 and numpy 2 module names."""
    import numpy as np
    import torch

    allowed = {f"{mod}.{name}": getattr(importlib.import_module(mod), name)
               for mod, names in ALLOWED_GLOBALS.items() for name in names}
    values = (torch.dtype, torch.layout, torch.qscheme, torch.memory_format)
    for name in dir(torch):
        value = getattr(torch, name, None)
        if isinstance(value, values):
            allowed[f"torch.{name}"] = value
    rebuilders = {"_reconstruct": np.zeros(1).__reduce__()[0],  # what numpy pickles name
                  "scalar": np.float64(0).__reduce__()[0]}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        for name, func in rebuilders.items():
            allowed[f"{mod}.{name}"] = func
    for name in dir(np.dtypes):  # numpy 2 pickles a dtype's class (numpy.dtypes.Float64DType)
        value = getattr(np.dtypes, name)
        if isinstance(value, type) and issubclass(value, np.dtype):
            allowed[f"numpy.dtypes.{name}"] = value
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3"):
        allowed[f"torch._utils.{name}"] = _checked(allowed[f"torch._utils.{name}"])
    return allowed


def view_problem(size, stride, offset: int, storage_numel: int) -> str | None:
    """Why a tensor of ``size``/``stride`` at ``offset`` cannot be a view of a storage of
    ``storage_numel`` elements as a checkpoint holds one (None when it can): an index past the
    storage's end, or a view that repeats or reverses its storage (a zero or negative stride
    along a dimension of more than one element, or more elements than the storage holds)."""
    try:
        size, stride, offset = [int(s) for s in size], [int(s) for s in stride], int(offset)
    except (TypeError, ValueError):
        return "a tensor whose size, stride or offset is not a list of integers"
    if len(size) != len(stride) or any(n < 0 for n in size) or offset < 0:
        return f"a tensor of size {tuple(size)}, stride {tuple(stride)}, offset {offset}"
    numel = 1
    for n in size:
        numel *= n
    if numel == 0:
        return None
    shown = f"size {tuple(size)[:8]} from a storage of {storage_numel} elements"
    if any(n > 1 and st <= 0 for n, st in zip(size, stride)) or numel > storage_numel:
        return f"a view that repeats or reverses its storage ({shown}); refused as tampered"
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= storage_numel:
        return f"a view past the end of its storage ({shown}); refused as damaged or tampered"
    return None


def _storage_numel(storage, dtype=None) -> int:
    if dtype is not None:  # an untyped storage (_rebuild_tensor_v3): bytes
        return storage.nbytes() // dtype.itemsize
    with warnings.catch_warnings():  # TypedStorage is deprecated, still what torch passes
        warnings.simplefilter("ignore")
        return storage.nbytes() // storage.element_size()


def _checked(rebuild):
    """torch's tensor rebuilder, checking the view against its storage before building it."""

    def checked(storage, storage_offset, size, stride, *args, **kwargs):
        dtype = args[2] if rebuild.__name__ == "_rebuild_tensor_v3" and len(args) > 2 else None
        problem = view_problem(size, stride, storage_offset, _storage_numel(storage, dtype))
        if problem:
            raise SourceError(problem)
        return rebuild(storage, storage_offset, size, stride, *args, **kwargs)

    checked.__name__ = rebuild.__name__
    return checked


def _build_types() -> tuple[type, ...]:
    import numpy as np
    import torch

    # exact types, and (the last) numpy's dtypes, whose classes are per kind (Float64DType)
    return (torch.Tensor, torch.nn.Parameter, OrderedDict, Counter, np.ndarray, np.dtype)


class _InertUnpickler(PurePythonUnpickler):
    """Resolves allowed globals, stands every other one in by an ``Inert`` subclass. Built on
    the standard library's pure-Python unpickler, whose opcodes are methods: BUILD is vetted."""

    dispatch = dict(PurePythonUnpickler.dispatch)
    allowed: dict[str, Any] = {}
    build_types: tuple[type, ...] = ()
    replaced: dict[str, type] = {}
    limit: int | None = None

    def __init__(self, file, **kwargs):
        try:  # what is left of the file: no length field may ask for more
            here = file.tell()
            self.limit = file.seek(0, 2) - here
            file.seek(here)
        except (AttributeError, OSError, ValueError):
            self.limit = None
        if self.limit is not None:
            file = _Bounded(file, self.limit)
        super().__init__(file, **kwargs)

    def load_bytearray8(self):  # the standard library allocates the length before reading
        (size,) = struct.unpack("<Q", self.read(8))
        if self.limit is not None and size > self.limit:
            raise MemoryError(f"a length of {size} bytes in a pickle of {self.limit}")
        b = bytearray(size)
        self.readinto(b)
        self.append(b)

    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def find_class(self, module, name):
        if self.proto < 3 and self.fix_imports:  # Python 2 names, as pickle maps them
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        if full in self.allowed:
            return self.allowed[full]
        stand_in = self.replaced.get(full)
        if stand_in is None:
            stand_in = type(f"Inert[{full}]", (Inert,), {"inert_name": full})
            self.replaced[full] = stand_in
        return stand_in

    def load_build(self):
        inst = self.stack[-2]  # the state is on top of it
        if isinstance(inst, Inert):
            inst.__setstate__(self.stack.pop())
            return
        if type(inst) not in self.build_types and not isinstance(inst, self.build_types[-1]):
            raise pickle.UnpicklingError(f"refused to set the state of a {type(inst).__name__}")
        PurePythonUnpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build


class _Bounded:
    """A file whose reads may not ask for more than the file holds (a pickle's length field
    allocates what it declares before reading it): MemoryError instead."""

    def __init__(self, file, limit: int):
        self.file, self.limit = file, limit

    def read(self, n: int = -1) -> bytes:
        if n is not None and n > self.limit:
            raise MemoryError(f"a length of {n} bytes in a pickle of {self.limit}")
        return self.file.read(n)

    def readline(self) -> bytes:
        return self.file.readline()

    def readinto(self, buf) -> int:
        return self.file.readinto(buf)


def _pickle_module(replaced: dict[str, type]) -> types.ModuleType:
    """A module with ``Unpickler`` and ``load``, as ``torch.load(pickle_module=)`` wants."""
    unpickler = type("Unpickler", (_InertUnpickler,), {
        "allowed": _allowed_globals(), "build_types": _build_types(), "replaced": replaced})
    mod = types.ModuleType("tailscope_inert_pickle")
    mod.Unpickler = unpickler
    mod.load = lambda f, **kwargs: unpickler(f, **kwargs).load()
    mod.UnpicklingError = pickle.UnpicklingError
    return mod


def load_inert(path: Path, replaced: dict[str, type] | None = None
               ) -> tuple[Any, tuple[str, ...]]:
    """(the unpickled object, the globals replaced by stand-ins, sorted) of a ``torch.save`` file.

    Never imports a module the file names nor calls anything but torch's own tensor rebuilders
    (a view that does not fit its storage is a ``SourceError`` before it is built). Raises what
    ``torch.load`` raises on a damaged file, ``pickle.UnpicklingError`` on a refused opcode;
    ``replaced``, when given, is filled as it goes (what was replaced before a failure).
    """
    import torch

    replaced = {} if replaced is None else replaced
    obj = torch.load(str(path), map_location="cpu", weights_only=False,
                     pickle_module=_pickle_module(replaced))
    return obj, tuple(sorted(replaced))


def first_object(fp) -> Any:
    """The first object of a pickle stream, unpickled inertly (no global is imported or called;
    not even torch's rebuilders are allowed): what a legacy ``torch.save`` file starts with (its
    magic number), or whatever a bare pickle holds."""
    unpickler = type("Unpickler", (_InertUnpickler,), {
        "allowed": {}, "build_types": (OrderedDict, Counter), "replaced": {}})
    return unpickler(fp).load()


def _module_children(obj: Any):
    """A module stand-in's parameters, persistent buffers and child modules, in their order;
    None for anything else."""
    if not isinstance(obj, Inert) or not isinstance(obj.inert_state, dict):
        return None
    state = obj.inert_state
    if not isinstance(state.get("_parameters"), dict) or not isinstance(state.get("_modules"),
                                                                        dict):
        return None
    skip = state.get("_non_persistent_buffers_set") or set()
    buffers = state.get("_buffers") if isinstance(state.get("_buffers"), dict) else {}
    entries = [(k, _Leaf(v)) for k, v in state["_parameters"].items() if v is not None]
    entries += [(k, _Leaf(v)) for k, v in buffers.items() if v is not None and k not in skip]
    return entries + list(state["_modules"].items())


class _Leaf:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def module_state(obj: Any, prefix: str = "", where: str = "the checkpoint"
                 ) -> dict[str, Any] | None:
    """The state dict of a pickled ``torch.nn.Module`` that came back as a stand-in: its
    ``_parameters`` and persistent ``_buffers``, its ``_modules`` recursively, in their order
    (None when ``obj`` is not such a stand-in). Walked iteratively (``containers.walk``): a
    module shared by two parents is listed once, one inside itself, too deep or with too many
    tensors is a ``SourceError`` naming ``where``."""
    if _module_children(obj) is None:
        return None
    pairs = walk(obj, _module_children, lambda v: isinstance(v, _Leaf), where, prefix)
    return {name: leaf.value for name, leaf in pairs}
