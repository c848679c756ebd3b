"""Reading the tensors of a ``torch.save`` pickle whose metadata names foreign classes, without
running any of its code.

A training checkpoint holds more than tensors: a Lightning ``.ckpt`` its hyper-parameters
(omegaconf containers, dataclasses, the user's own classes), a ``.pth.tar`` its scheduler object
or its config. ``torch.load(weights_only=True)`` refuses every such file. ``load_inert`` unpickles
it with a restricted unpickler instead: the globals torch itself allows under ``weights_only``
(tensor rebuilders, storages, dtypes, ``OrderedDict``, ...) and numpy's array rebuilders are
resolved; every other global the pickle names -- a class, a function, ``os.system`` alike -- is
replaced by an ``Inert`` stand-in that is never imported and never called: constructing it
(REDUCE, NEWOBJ), setting its state (BUILD), its items or list entries only records the data the
pickle gives. BUILD on anything but a stand-in, a tensor, an ``OrderedDict`` or a numpy array is
refused (so a pickle cannot set attributes of a class or module). ``module_state`` recovers the
parameters and buffers of a pickled ``torch.nn.Module`` from its stand-in's recorded state.

Tensors whose own reconstruction needs foreign code (tensor subclasses) do not come back: the
caller then says that the file needs ``trust_pickle=True``.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import types
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any


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


def _allowed_globals() -> dict[str, Any]:
    """What torch's ``weights_only`` unpickler resolves, and numpy's array rebuilders."""
    from torch import _weights_only_unpickler as wo

    allowed = dict(wo._get_allowed_globals())
    import numpy as np

    rebuilders = {"_reconstruct": np.zeros(1).__reduce__()[0],  # what numpy pickles name
                  "scalar": np.float64(0).__reduce__()[0]}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        for name, func in rebuilders.items():
            allowed[f"{mod}.{name}"] = func
    allowed["numpy.ndarray"] = np.ndarray
    allowed["numpy.dtype"] = np.dtype
    return allowed


def _build_types() -> tuple[type, ...]:
    import numpy as np
    import torch

    # exact types, and (the last) numpy's dtypes, whose classes are per kind (Float64DType)
    return (torch.Tensor, torch.nn.Parameter, OrderedDict, Counter, np.ndarray, np.dtype)


class _InertUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcodes can be vetted
    """Resolves allowed globals, stands every other one in by an ``Inert`` subclass."""

    dispatch = dict(pickle._Unpickler.dispatch)
    allowed: dict[str, Any] = {}
    build_types: tuple[type, ...] = ()
    replaced: dict[str, type] = {}

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
        pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build


def _pickle_module(replaced: dict[str, type]) -> types.ModuleType:
    """A module with ``Unpickler`` and ``load``, as ``torch.load(pickle_module=)`` wants."""
    unpickler = type("Unpickler", (_InertUnpickler,), {
        "allowed": _allowed_globals(), "build_types": _build_types(), "replaced": replaced})
    mod = types.ModuleType("tailscope_inert_pickle")
    mod.Unpickler = unpickler
    mod.load = lambda f, **kwargs: unpickler(f, **kwargs).load()
    mod.UnpicklingError = pickle.UnpicklingError
    return mod


def load_inert(path: Path) -> tuple[Any, tuple[str, ...]]:
    """(the unpickled object, the globals replaced by stand-ins, sorted) of a ``torch.save`` file.

    Never imports a module the file names nor calls anything but torch's own tensor rebuilders.
    Raises what ``torch.load`` raises on a damaged file, ``pickle.UnpicklingError`` on a refused
    opcode.
    """
    import torch

    replaced: dict[str, type] = {}
    obj = torch.load(str(path), map_location="cpu", weights_only=False,
                     pickle_module=_pickle_module(replaced))
    return obj, tuple(sorted(replaced))


def module_state(obj: Any, prefix: str = "") -> dict[str, Any] | None:
    """The state dict of a pickled ``torch.nn.Module`` that came back as a stand-in: its
    ``_parameters`` and persistent ``_buffers``, its ``_modules`` recursively, in their order
    (None when ``obj`` is not such a stand-in)."""
    if not isinstance(obj, Inert) or not isinstance(obj.inert_state, dict):
        return None
    state = obj.inert_state
    if not isinstance(state.get("_parameters"), dict) or not isinstance(state.get("_modules"),
                                                                        dict):
        return None
    out: dict[str, Any] = {}
    skip = state.get("_non_persistent_buffers_set") or set()
    for key, value in state["_parameters"].items():
        if value is not None:
            out[f"{prefix}{key}"] = value
    for key, value in (state.get("_buffers") or {}).items():
        if value is not None and key not in skip:
            out[f"{prefix}{key}"] = value
    for key, child in state["_modules"].items():
        sub = module_state(child, f"{prefix}{key}.")
        if sub:
            out.update(sub)
    return out
