"""WeightWatcher 0.7.7's layers: its ids, names, types and iterators, mapped onto tailscope's tensors.

WeightWatcher numbers *framework layers*, not tensors: every module of ``named_modules()`` for a
torch model (the root is 0, containers count), every ``*.weight`` key of a state dict (from 1), and
the ``*.weight`` keys of a safetensors / pytorch-bin folder in its own order (index.json file by
file, or each file's sorted keys). :func:`ww_layers` rebuilds that table for a model, each entry
with the tensor tailscope reads for it, so the facade can translate ``layers=`` filters into
tailscope tensor names and tailscope's rows back into WeightWatcher's ``layer_id``, ``name``,
``longname`` and ``layer_type``.

:class:`WWLayer` and :class:`FrameworkLayer` are the objects WeightWatcher's layer iterators yield
(the same attribute names), with weight replacement into the torch module or the state dict.
"""

from __future__ import annotations

import fnmatch
import glob
import importlib
import importlib.util
import json
import numbers
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..util.optional import require
from .numbers import DEFAULT_PARAMS, START_IDS

# WeightWatcher's LAYER_TYPE values and frameworks (its constants, as strings)
UNKNOWN, DENSE, CONV1D, CONV2D, EMBEDDING, NORM = ("unknown", "dense", "conv1d", "conv2d",
                                                    "embedding", "norm")
FLATTENED = "flattened"
LAYER_TYPES_SUPPORTED = (CONV2D, CONV1D, DENSE, EMBEDDING, NORM)
ANALYSED_TYPES = (DENSE, CONV1D, CONV2D, EMBEDDING)
PYTORCH, KERAS, ONNX, PYSTATEDICT, PYSTATEDICT_DIR = ("pytorch", "keras", "onnx", "pystatedict",
                                                      "pystatedict_dir")
WW_FLATFILES, KERAS_H5_FILE = "ww_flatfiles", "keras_h5_file"
FRAMEWORKS = (KERAS, PYTORCH, PYSTATEDICT, PYSTATEDICT_DIR, ONNX, WW_FLATFILES)
SAFETENSORS = "safetensors"
CONFIG_FILENAME = "ww_config.json"  # an extracted flat-file folder's config
CHANNELS_FIRST, CHANNELS_LAST = "first", "last"


# --- WeightWatcher's static helpers -------------------------------------------------------------
def infer_model_file_format(model_dir) -> tuple[str, str]:
    """(format, fileglob) of a folder, looked for in WeightWatcher's order: ``model*safetensors``,
    ``adapter_model*safetensors``, ``pytorch_model*bin``, ``adapter_model*bin``, ``*weight*npy``,
    ``*h5``;
    ('unknown', 'unknown') when none is there."""
    for pattern, fmt in (("model*safetensors", SAFETENSORS),
                         ("adapter_model*safetensors", SAFETENSORS),
                         ("pytorch_model*bin", PYTORCH), ("adapter_model*bin", PYTORCH),
                         ("*weight*npy", WW_FLATFILES), ("*h5", KERAS_H5_FILE)):
        fileglob = f"{model_dir}/{pattern}"
        if glob.glob(fileglob):
            return fmt, fileglob
    return UNKNOWN, UNKNOWN


def infer_framework(model) -> str:
    """WeightWatcher's framework name of a model: 'pytorch', 'keras', 'onnx', 'pystatedict' (any
    dict), 'pystatedict_dir' (a safetensors or pytorch-bin folder), 'ww_flatfiles',
    'keras_h5_file', else 'unknown'."""
    if model is None:
        return UNKNOWN
    mro = [str(c) for c in type(model).__mro__]
    for key, framework in (("torch", PYTORCH), ("keras", KERAS), ("onnx", ONNX)):
        if any(key in c for c in mro):
            return framework
    if any("OrderedDict" in c or "dict" in c for c in mro):
        return PYSTATEDICT
    if isinstance(model, (str, os.PathLike)) and os.path.isdir(model):
        fmt, _ = infer_model_file_format(model)
        if fmt in (PYTORCH, SAFETENSORS):
            return PYSTATEDICT_DIR
        if fmt in (WW_FLATFILES, KERAS_H5_FILE):
            return fmt
    return UNKNOWN


def layer_type_from_str(str_type) -> str:
    """WeightWatcher's LAYER_TYPE of a string: 'norm', 'dense', 'conv2d', 'conv1d', else
    'unknown' (as its own, 'embedding' is not recognised)."""
    return str_type if str_type in (NORM, DENSE, CONV2D, CONV1D) else UNKNOWN


def torch_layer_type(layer) -> str:
    """WeightWatcher's type of a torch module: by class, else by its type's text (module path
    included), Linear before Conv1d, Conv2d, Embedding and anything with 'norm'."""
    torch = require("torch", "reading PyTorch models")
    typestr = str(type(layer)).lower()
    if isinstance(layer, torch.nn.Linear) or "linear" in typestr:
        return DENSE
    if isinstance(layer, torch.nn.Conv1d) or "conv1d" in typestr:
        return CONV1D
    if isinstance(layer, torch.nn.Conv2d) or "conv2d" in typestr:
        return CONV2D
    if isinstance(layer, torch.nn.Embedding) or "embedding" in typestr:
        return EMBEDDING
    if "norm" in typestr:
        return NORM
    return UNKNOWN


def _array_type(shape: tuple) -> str:
    """A state-dict weight's type from its shape, as WeightWatcher decides it."""
    if len(shape) == 0 or shape[0] < 2:
        return UNKNOWN
    return DENSE if len(shape) == 2 else CONV2D if len(shape) == 4 else UNKNOWN


def matrix_sizes(shape: tuple, the_type: str) -> tuple[int, int, int]:
    """(N, M, rf) of a weight as WeightWatcher sizes it: N >= M; conv2d (out, in, kh, kw) has
    rf = kh*kw (WeightWatcher's alternating swap for kernels with an even number of slices is not
    copied: N is always the larger side)."""
    if not shape or the_type not in ANALYSED_TYPES:
        return 0, 0, 1
    if the_type == CONV2D and len(shape) == 4:
        return max(shape[0], shape[1]), min(shape[0], shape[1]), int(shape[2] * shape[3])
    return int(max(shape)), int(min(shape)), 1


def to_numpy(t) -> np.ndarray:
    """A weight as WeightWatcher hands it out on the CPU: float32 numpy."""
    if isinstance(t, np.ndarray):
        return t.astype(np.float32, copy=False) if t.dtype.kind == "f" else t
    return t.detach().cpu().float().numpy()


# --- the layer table ----------------------------------------------------------------------------
@dataclass
class LayerEntry:
    """One of WeightWatcher's framework layers: its id, names and type, and the tensors
    (tailscope's names) of its weight and bias, None when it has none."""

    layer_id: int
    name: str
    longname: str
    the_type: str
    framework: str
    tensor: str | None = None
    bias: str | None = None
    shape: tuple = ()
    layer: Any = field(default=None, repr=False)  # the torch module, or the state-dict key
    store: Any = field(default=None, repr=False)  # the state dict a statedict layer lives in

    @property
    def has_weights(self) -> bool:
        return self.tensor is not None

    @property
    def sizes(self) -> tuple[int, int, int]:
        return matrix_sizes(self.shape, self.the_type)

    @property
    def num_evals(self) -> int:
        N, M, rf = self.sizes
        return M * rf


def _torch_entries(model, start_id: int) -> list[LayerEntry]:
    names = {}
    for key, value in model.state_dict(keep_vars=True).items():
        names.setdefault(id(value), []).append(key)

    def tensor_name(param, preferred: str) -> str | None:
        keys = names.get(id(param), [])
        return preferred if preferred in keys else keys[0] if keys else None

    out = []
    for i, (longname, layer) in enumerate(model.named_modules()):
        layer_id = start_id + i
        if longname:
            name = longname.split(".")[-1]
        else:
            name = getattr(layer, "name", None) or re.sub(r"\(.*", "", str(layer))
            longname = name
        the_type = torch_layer_type(layer)
        entry = LayerEntry(layer_id, name, longname, the_type, PYTORCH, layer=layer)
        weight = getattr(layer, "weight", None)
        if the_type in ANALYSED_TYPES and weight is not None and hasattr(weight, "shape"):
            entry.tensor = tensor_name(weight, f"{longname}.weight")
            entry.shape = tuple(weight.shape)
            bias = getattr(layer, "bias", None)
            if the_type == DENSE and bias is not None and hasattr(bias, "shape"):
                entry.bias = tensor_name(bias, f"{longname}.bias")
        out.append(entry)
    return out


def _statedict_entries(keys: list[str], shapes: Mapping[str, tuple], start_id: int,
                       store=None) -> list[LayerEntry]:
    out = []
    layer_id = start_id
    for key in keys:
        if not key.endswith(".weight") or key not in shapes:
            continue
        stem = key[: -len(".weight")]
        shape = tuple(shapes[key])
        entry = LayerEntry(layer_id, stem, stem, _array_type(shape), PYSTATEDICT, tensor=key,
                           shape=shape, layer=stem, store=store)
        if f"{stem}.bias" in shapes:
            entry.bias = f"{stem}.bias"
        out.append(entry)
        layer_id += 1
    return out


def unwrap_statedict(model: Mapping) -> Mapping:
    """The state dict WeightWatcher reads: ``model['state_dict']`` when present (its issue 243)."""
    inner = model.get("state_dict") if hasattr(model, "get") else None
    return inner if isinstance(inner, Mapping) else model


def _shape(value) -> tuple | None:
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else None


class LazyTensors:
    """Read-only name -> array access to tensors read from files (loaded when asked for)."""

    def __init__(self, refs):
        self.refs = {r.name: r for r in refs}

    def __contains__(self, key) -> bool:
        return key in self.refs

    def __getitem__(self, key) -> np.ndarray:
        return self.refs[key].load()


def _file_refs(path: str) -> list:
    """The tensors of one file, in the order tailscope reads them."""
    from ..engine.run import Recipe

    return list(Recipe(path).open().refs)


def _dir_entries(model_dir: str, start_id: int) -> list[LayerEntry]:
    """A safetensors or pytorch-bin folder, numbered as WeightWatcher numbers it: the index.json
    order (or a layer_map file), else file by file in sorted order, each file's keys sorted
    (safetensors) or in stored order (bin); each later file starts at the previous start plus
    every layer counted so far (WeightWatcher's accumulation, gaps included)."""
    fmt, fileglob = infer_model_file_format(model_dir)
    pattern = "*model*safetensors" if fmt == SAFETENSORS else "*model*bin"
    files = sorted(glob.glob(f"{model_dir}/{pattern}"))
    per_file_refs = [_file_refs(f) for f in files]
    store = LazyTensors(r for refs in per_file_refs for r in refs)
    per_file = [[(r.name, tuple(r.shape)) for r in refs] for refs in per_file_refs]
    shapes = {k: s for keys in per_file for k, s in keys}
    layer_map: list[str] = []
    if fmt == SAFETENSORS:
        maps = glob.glob(fileglob.replace("safetensors", "layer_map"))
        index = glob.glob(fileglob.replace("safetensors", ".safetensors.index.json"))
        if len(maps) == 1:
            layer_map = [line.strip() for line in Path(maps[0]).read_text().splitlines()]
        elif len(index) == 1:
            weight_map = json.loads(Path(index[0]).read_text())["weight_map"]
            for file in np.unique(list(weight_map.values())):
                layer_map.extend(k for k, v in weight_map.items() if v == file)
    if layer_map:
        return _statedict_entries(layer_map, shapes, start_id, store=store)
    out: list[LayerEntry] = []
    current = start_id
    for keys in per_file:
        names = [k for k, _ in keys]
        current += len(out)
        out.extend(_statedict_entries(sorted(names) if fmt == SAFETENSORS else names,
                                      shapes, current, store=store))
    return out


def flatfile_entries(model_dir, start_id: int = 0) -> list[LayerEntry]:
    """The layers of an extracted folder, numbered as WeightWatcher numbers them: the config's
    ids plus ``start_id``; each entry's tensor is its weight file's stem (tailscope's name for
    it when reading the folder)."""
    config = json.loads((Path(model_dir) / CONFIG_FILENAME).read_text())
    out = []
    for key, lc in config["layers"].items():
        dims = tuple(json.loads(lc["dims"]))
        the_type = layer_type_from_str(lc["type"])
        if the_type == CONV2D and len(dims) != 4:
            the_type = UNKNOWN
        weightfile = os.path.basename(lc["weightfile"])
        tensor = weightfile[:-len(".npy")] if weightfile.endswith(".npy") else None
        bias = lc.get("biasfile")
        entry = LayerEntry(int(key) + int(start_id), lc["name"], lc["longname"], the_type,
                           WW_FLATFILES, tensor=tensor, shape=dims, layer=lc, store=str(model_dir),
                           bias=bias[:-len(".npy")] if bias else None)
        out.append(entry)
    return out


def start_id_for(framework: str, start_ids) -> int:
    """WeightWatcher's first layer id: ``start_ids`` when nonzero, else 1 for a state dict and 0
    for everything else (a folder included)."""
    if start_ids:
        return int(start_ids)
    return 1 if framework == PYSTATEDICT else 0


def ww_layers(model, start_ids: int = 0) -> tuple[str, list[LayerEntry]]:
    """(framework, WeightWatcher's framework layers of ``model`` in its order); no layers for a
    format WeightWatcher does not number (ONNX, Keras, numpy)."""
    framework = infer_framework(model)
    start = start_id_for(framework, start_ids)
    if framework == PYTORCH:
        return framework, _torch_entries(model, start)
    if framework == PYSTATEDICT:
        sd = unwrap_statedict(model)
        shapes = {k: s for k, v in sd.items() if (s := _shape(v)) is not None}
        return framework, _statedict_entries(list(sd.keys()), shapes, start, store=sd)
    if framework == PYSTATEDICT_DIR:
        return framework, _dir_entries(str(model), start)
    if framework == WW_FLATFILES:
        return framework, flatfile_entries(model, start)
    if isinstance(model, (str, os.PathLike)) and str(model).endswith(".safetensors") \
            and os.path.isfile(model):
        # a single file (WeightWatcher reads folders only): numbered as a folder of that file
        refs = _file_refs(str(model))
        shapes = {r.name: tuple(r.shape) for r in refs}
        return PYSTATEDICT_DIR, _statedict_entries(sorted(shapes), shapes, start,
                                                   store=LazyTensors(refs))
    return framework, []


# --- filters ------------------------------------------------------------------------------------
def parse_filters(filters) -> tuple[list[int], list[str], list[str]]:
    """WeightWatcher's ``layers=`` as (ids, types, names); ValueError for a list mixing positive
    and negative ids (WeightWatcher's invalid-params exception)."""
    if filters is None:
        filters = []
    elif isinstance(filters, np.ndarray):
        filters = filters.tolist()
    elif not isinstance(filters, (list, tuple)):
        filters = [filters]
    ids, types, names = [], [], []
    for f in filters:
        if isinstance(f, str) and f in LAYER_TYPES_SUPPORTED:
            types.append(f)
        elif isinstance(f, numbers.Integral) and not isinstance(f, bool):
            ids.append(int(f))
        elif isinstance(f, str):
            names.append(f)
        else:
            raise ValueError(f"layers: {f!r} is not a layer id, type or name")
    if ids and max(ids) > 0 and min(ids) < 0:
        raise ValueError(f"layers: ids must be all >= 0 (keep) or all < 0 (skip); got {ids}")
    negs = ["-" in n for n in names]
    if names and any(negs) and not all(negs):
        raise ValueError("layers: give either names to keep or names to skip ('-name'), not both")
    return ids, types, names


def skipped_by(entry: LayerEntry, ids, types, names) -> bool:
    """WeightWatcher's ``apply_filters``: types, then ids, then names, each (when given)
    deciding afresh, so the last kind given wins."""
    skipped = False
    if types:
        skipped = entry.the_type not in types
    if ids:
        if min(ids) >= 0:
            skipped = entry.layer_id not in ids
        else:
            skipped = -entry.layer_id in ids
    if names:
        if not any("-" in n for n in names):
            skipped = not any(name_hit(entry, n) for n in names)
        else:
            skipped = any(name_hit(entry, n[1:]) for n in names if n.startswith("-")) or \
                f"-{entry.name}" in names
    return skipped


def name_hit(entry: LayerEntry, name: str) -> bool:
    """WeightWatcher's exact name match; a name with glob characters (a tailscope extension)
    also matches the longname or the tensor name by fnmatch."""
    if entry.name == name:
        return True
    if not any(c in name for c in "*?["):
        return False
    return fnmatch.fnmatchcase(entry.longname, name) or (
        entry.tensor is not None and fnmatch.fnmatchcase(entry.tensor, name))


def supported(entry: LayerEntry, *, min_evals=DEFAULT_PARAMS["min_evals"],
              max_evals=DEFAULT_PARAMS["max_evals"], max_N=DEFAULT_PARAMS["max_N"],
              pool=DEFAULT_PARAMS["pool"]) -> bool:
    """WeightWatcher's ``layer_supported`` for an entry that passed the filters."""
    if not entry.has_weights or entry.the_type not in ANALYSED_TYPES:
        return False
    N, M, rf = entry.sizes
    count = M * rf if pool else M
    if min_evals and count < min_evals:
        return False
    if max_evals and count > max_evals:
        return False
    return not (max_N and N > max_N)


def select(entries: list[LayerEntry], filters, **sizes) -> list[LayerEntry]:
    """The entries WeightWatcher's layer iterator yields for ``layers=filters``."""
    ids, types, names = parse_filters(filters)
    return [e for e in entries if not skipped_by(e, ids, types, names) and supported(e, **sizes)]


def tensor_glob(name: str) -> str:
    """An fnmatch pattern matching exactly ``name``."""
    return re.sub(r"([*?\[])", r"[\1]", name)


# --- the iterator's objects ---------------------------------------------------------------------
class ShownAsWeightWatcher(type):
    """The layer classes print as WeightWatcher's (``str(type(layer))`` is
    ``<class 'weightwatcher.weightwatcher.WWLayer'>``), which its users' scripts and its own tests
    compare. Only the printed name: the classes live here, so ``isinstance``, pickling and
    ``__module__`` say tailscope."""

    def __repr__(cls) -> str:
        return f"<class 'weightwatcher.weightwatcher.{cls.__name__}'>"


class FrameworkLayer(metaclass=ShownAsWeightWatcher):
    """WeightWatcher's framework layer: ``layer`` (the torch module, or the state-dict key),
    ``layer_id``, ``name``, ``longname``, ``the_type``, ``framework``, ``channels``,
    ``has_bias``, ``plot_id``; ``get_weights_and_biases()`` and ``replace_layer_weights(W, B)``."""

    def __init__(self, entry: LayerEntry):
        self.entry = entry
        self.layer = entry.layer
        self.layer_id = entry.layer_id
        self.name = entry.name
        self.longname = entry.longname
        self.the_type = entry.the_type
        self.framework = entry.framework
        self.channels = CHANNELS_LAST
        self.skipped = False
        self.lazy = False
        self.plot_id = f"{entry.layer_id}"
        self.has_bias = entry.bias is not None

    def has_biases(self) -> bool:
        return self.has_bias

    def get_weights_and_biases(self):
        """(has_weights, weights, has_biases, biases) as numpy arrays."""
        e = self.entry
        if e.tensor is None:
            return False, None, False, None
        if e.framework == PYTORCH:
            w = to_numpy(self.layer.weight.data)
            b = to_numpy(self.layer.bias.data) if e.bias is not None else None
        elif e.framework == WW_FLATFILES:
            w = np.load(os.path.join(e.store, f"{e.tensor}.npy"))
            b = np.load(os.path.join(e.store, f"{e.bias}.npy")) if e.bias is not None else None
        else:
            w = to_numpy(e.store[e.tensor])
            b = to_numpy(e.store[e.bias]) if e.bias is not None else None
        return True, w, b is not None, b

    def replace_layer_weights(self, W, B=None) -> None:
        """Set new weights (and biases) into the torch module or the state dict."""
        torch = require("torch", "replacing PyTorch weights")
        e = self.entry
        if e.framework == PYTORCH:
            self.layer.weight.data = torch.from_numpy(np.asarray(W))
            if e.bias is not None and B is not None:
                self.layer.bias.data = torch.from_numpy(np.asarray(B))
        elif isinstance(e.store, Mapping):
            e.store[e.tensor] = torch.from_numpy(np.asarray(W))
            if e.bias is not None and B is not None:
                e.store[e.bias] = torch.from_numpy(np.asarray(B))
        else:
            raise ValueError(f"layer {e.longname!r} of a folder cannot be written back")


class PyTorchLayer(FrameworkLayer):
    """A layer of a torch module."""


class PyStateDictLayer(FrameworkLayer):
    """A layer of a state dict, or of a folder of state-dict or safetensors files."""


class WWFlatFile(FrameworkLayer):
    """A layer of a folder written by ``extract_pytorch_bins``."""


class KerasLayer(FrameworkLayer):
    """A layer of a Keras model."""


class ONNXLayer(FrameworkLayer):
    """A layer of an ONNX model."""


FRAMEWORK_LAYERS = {PYTORCH: PyTorchLayer, PYSTATEDICT: PyStateDictLayer,
                    PYSTATEDICT_DIR: PyStateDictLayer, WW_FLATFILES: WWFlatFile, KERAS: KerasLayer,
                    ONNX: ONNXLayer}


def framework_layer(entry: LayerEntry) -> FrameworkLayer:
    """The framework layer of ``entry``, of WeightWatcher's class for its framework."""
    return FRAMEWORK_LAYERS.get(entry.framework, FrameworkLayer)(entry)


class WWLayer(metaclass=ShownAsWeightWatcher):
    """The layer object WeightWatcher's iterators yield, with its attributes: ``layer_id``,
    ``name``, ``longname``, ``the_type``, ``framework``, ``channels``, ``plot_id``, ``skipped``,
    ``has_weights``/``weights``, ``has_biases``/``biases``, ``Wmats`` (the matrices analysed:
    the weight, or a conv2d's kh*kw slices each with N >= M rows), ``num_W``, ``N``, ``M``,
    ``rf``, ``num_components``, ``weight_dims``, ``num_params``, ``evals``, ``rand_evals``,
    ``framework_layer``; ``add_column``/``get_row`` and ``replace_layer_weights``."""

    def __init__(self, framework_layer: FrameworkLayer, params: Mapping | None = None):
        self.framework_layer = framework_layer
        self.params = dict(params or {})
        for attr in ("layer_id", "name", "longname", "the_type", "framework", "channels",
                     "plot_id", "skipped"):
            setattr(self, attr, getattr(framework_layer, attr))
        self.fft = False
        self.conv2d_count = 1
        self.w_norm = 1
        self.evals = None
        self.rand_evals = None
        self.columns: list[str] = []
        self.permute_ids: list = []
        has_w, w, has_b, b = framework_layer.get_weights_and_biases()
        self.has_weights, self.weights = has_w, w
        self.has_biases, self.biases = has_b, b
        self.N, self.M, self.rf = framework_layer.entry.sizes
        self.Wmats = self._wmats(w) if has_w else []
        self.num_W = len(self.Wmats)
        self.num_components = self.M * self.rf if self.the_type == CONV2D else self.M
        self.weight_dims = w.shape if has_w else 0
        self.num_params = int(np.prod(w.shape)) if has_w else 0

    def _wmats(self, w: np.ndarray) -> list[np.ndarray]:
        if self.the_type == CONV2D and w.ndim == 4:
            mats = [w[:, :, i, j] for i in range(w.shape[2]) for j in range(w.shape[3])]
            return [m.T if m.shape[0] < m.shape[1] else m for m in mats]
        if self.the_type in ANALYSED_TYPES:
            return [w]
        return []

    def add_column(self, name: str, value) -> None:
        self.columns.append(name)
        self.__dict__[name] = value

    def get_value(self, name: str):
        return self.__dict__[name]

    get_column = get_value

    def has_column(self, name: str) -> bool:
        return name in self.__dict__

    def get_row(self) -> dict:
        row = {"layer_id": self.layer_id, "name": self.name, "longname": self.longname,
               "layer_type": str(self.the_type), "N": self.N, "M": self.M, "rf": self.rf,
               "Q": self.N / self.M if self.M > 0 else -1}
        row.update({c: self.__dict__[c] for c in self.columns})
        return row

    def get_weights_and_biases(self):
        return self.framework_layer.get_weights_and_biases()

    def replace_layer_weights(self, W, B=None):
        return self.framework_layer.replace_layer_weights(W=W, B=B)

    def __str__(self) -> str:
        return f"WWLayer {self.layer_id}  {self.name} {self.the_type}  skipped {self.skipped}"

    def __repr__(self) -> str:
        return "WWLayer()"


def iterate(entries: list[LayerEntry], filters=None, params: Mapping | None = None
            ) -> Iterator[WWLayer]:
    """WeightWatcher's ``WWLayerIterator``: a :class:`WWLayer` per selected, supported entry;
    with ``params['pool']`` False its ``WW2xSliceIterator``: a layer per conv2d slice, each with
    a ``slice_id`` column."""
    params = dict(params or {})
    sizes = {k: params.get(k, DEFAULT_PARAMS[k]) for k in ("min_evals", "max_evals", "max_N",
                                                           "pool")}
    for e in select(entries, filters, **sizes):
        layer = WWLayer(framework_layer(e), params)
        if sizes["pool"]:
            yield layer
        elif layer.the_type == CONV2D:  # WeightWatcher's ww2x slices: one layer per slice
            for i, W in enumerate(layer.Wmats):
                part = WWLayer(framework_layer(e), params)
                part.Wmats, part.num_W, part.conv2d_count = [W], 1, len(layer.Wmats)
                part.add_column("slice_id", i)
                part.plot_id = f"{e.layer_id}:{i}"
                yield part
        else:
            layer.add_column("slice_id", 0)
            yield layer


def delta_iterate(left: list[WWLayer], right: list[WWLayer]) -> Iterator[WWLayer]:
    """WeightWatcher's ``WWDeltaLayerIterator``: walk the model's layers; while the next base
    layer's name contains this one's, Wmats (and biases) become model - base (a transposed base is
    matched, another shape gives zeros); an unmatched layer is yielded as it is."""
    it = iter(right)
    r = next(it, None)
    for layer in left:
        if r is not None and layer.name in r.name:
            if layer.has_weights:
                mats = []
                for wl, wr in zip(layer.Wmats, r.Wmats):
                    if wl.shape == wr.shape:
                        mats.append(wl - wr)
                    elif wl.shape == wr.T.shape:
                        mats.append(wl - wr.T)
                    else:
                        mats.append(np.zeros_like(wl))
                layer.Wmats = mats
            if layer.has_biases and r.has_biases:
                layer.biases = layer.biases - r.biases
            r = next(it, None)
        yield layer


# --- WeightWatcher's params ---------------------------------------------------------------------
def valid_params(params: Mapping) -> bool:
    """WeightWatcher's ``valid_params``: False for min_evals >= max_evals, max_N below either,
    an unknown svd_method, ww2x, conv2d_fft without pooling or with intra, unknown channels,
    mixed positive and negative layer ids, a savefig neither str nor bool, an unknown
    fix_fingers (or one with an int xmax, or max_fingers < 1), an unknown fit, E_TPL with
    clip_xmax, intra with randomize or vectors, start ids < 0, an unknown pl_package, an xmax
    other than None/False/'force'/nonzero int, 'force' or a non-PL fit with pl_package='ww'."""
    p = {**DEFAULT_PARAMS, **params}
    ok = True
    lo, hi, max_N = p["min_evals"], p["max_evals"], p["max_N"]
    if lo and hi and lo >= hi:
        ok = False
    elif hi and hi < -1:
        ok = False
    if max_N < hi or max_N < lo:
        ok = False
    if p["svd_method"] not in ("fast", "accurate") or p["ww2x"]:
        ok = False
    if (not p["pool"] and p["conv2d_fft"]) or (p["intra"] and p["conv2d_fft"]):
        ok = False
    ch = p["channels"]
    if isinstance(ch, str) and ch.lower() not in (CHANNELS_FIRST, CHANNELS_LAST):
        ok = False
    try:
        parse_filters(p.get("layers"))
    except ValueError:
        ok = False
    if not isinstance(p["savefig"], (str, bool)):
        ok = False
    ff, xmax = p["fix_fingers"], p["xmax"]
    if ff:
        if ff not in ("xmin_peak", "clip_xmax") or (isinstance(xmax, int)
                                                     and xmax not in (False, None)):
            ok = False
        if p["MAX_FINGERS"] is not None and p["MAX_FINGERS"] < 1:
            ok = False
    fit = p["fit"]
    if fit not in ("PL", "TPL", "E_TPL", "power_law", "truncated_power_law"):
        ok = False
    if fit == "E_TPL" and ff == "clip_xmax":
        ok = False
    if p["intra"] and (p["randomize"] or p["vectors"]):
        ok = False
    if p[START_IDS] < 0:
        ok = False
    if p["pl_package"] not in ("powerlaw", "ww"):
        ok = False
    if not isinstance(xmax, int) and xmax not in (False, None, "force"):
        ok = False
    elif isinstance(xmax, int) and not isinstance(xmax, bool) and xmax == 0:
        ok = False
    if p["pl_package"] == "ww" and (xmax == "force" or fit not in ("PL", "power_law")):
        ok = False
    return ok


def read_keras_h5_file(model_dir):
    """The Keras model of the one ``*.h5`` file in ``model_dir`` (WeightWatcher's helper; needs
    TensorFlow's Keras); ValueError unless exactly one is there."""
    files = glob.glob(f"{model_dir}/*.h5")
    if len(files) != 1:
        raise ValueError(f"{model_dir}: need exactly one Keras .h5 file, found {len(files)}")
    if importlib.util.find_spec("tensorflow") is None:  # not a tailscope extra
        raise ValueError("read_keras_h5_file builds a Keras model, which needs TensorFlow; "
                         "tailscope reads the .h5 weights without it: analyze(path)")
    tf = importlib.import_module("tensorflow")
    return tf.keras.models.load_model(files[0])
