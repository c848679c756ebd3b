"""Keras weights read with h5py alone (the ``keras`` extra; no TensorFlow, no Keras).

Layouts:
- legacy HDF5 (``model.save('m.h5')``): ``model_weights/<layer>/<weight path>`` with the layer
  order in the ``layer_names`` attribute and each layer's ``weight_names`` (``dense/kernel:0``);
  ``save_weights('w.h5')`` files are the same without the ``model_weights`` group.
- Keras 3 ``.keras`` zip (``config.json`` + ``model.weights.h5``) and bare ``.weights.h5``:
  ``layers/<class>/vars/<i>`` groups whose ``name`` attribute is the layer's name; the layer
  order comes from ``config.json`` (else the file's order). Variables are named as Keras names
  them (kernel, recurrent_kernel, bias, embeddings, ...).
Optimizer state is never read. Kernels keep Keras' layout (``LayerRef.layout='keras'``): Dense
(in, out), Conv1D (k, in, out), Conv2D (kh, kw, in, out). MultiHeadAttention kernels
(E, heads, head_dim) and (heads, head_dim, E) are read as (E, heads*head_dim) and
(heads*head_dim, E). LSTM/GRU kernels (in, G*H) and recurrent kernels (H, G*H) stack their gates
along the last axis: 'ifco' (LSTM) and 'zrh' (GRU), in ``LayerRef.gates``.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from ..util.errors import one_line
from ..util.optional import require
from .base import Probe, Reader, Source, SourceError, numbered

KERAS_GATES = {4: "ifco", 3: "zrh"}
_MHA_PARTS = ("query", "key", "value", "attention_output")
_SUB_ORDER = {"forward_layer": 1, "backward_layer": 2,  # Keras' own order of a layer's parts
              "query_dense": 1, "key_dense": 2, "value_dense": 3, "output_dense": 4}


def import_h5py():
    """h5py, or a SourceError naming the extra that installs it."""
    return require("h5py", "reading Keras files", error=SourceError)


def _text(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values)]


def _legacy(root, prefix: str) -> list[tuple[str, object]]:
    """(name, dataset) pairs of a legacy HDF5 weights group, in layer order."""
    out = []
    for layer in _text(root.attrs["layer_names"]):
        group = root[layer]
        for wname in _text(group.attrs.get("weight_names", [])):
            ds = group.get(wname)
            if ds is None:
                raise SourceError(f"{prefix}: weight {wname!r} of layer {layer!r} is listed but "
                                  "not stored; the file is damaged")
            name = wname if wname.startswith(f"{layer}/") else f"{layer}/{wname}"
            out.append((name.removesuffix(":0"), ds))
    return out


def _var_names(path: str, n: int, cls: str) -> list[str]:
    """Keras' names of a ``vars`` group's variables, by the layer's kind."""
    if path.rstrip("/").endswith("cell") or cls in ("SimpleRNN", "LSTM", "GRU"):
        base = ["kernel", "recurrent_kernel", "bias"]
    elif cls == "Embedding":
        base = ["embeddings"]
    elif cls == "BatchNormalization":
        base = ["gamma", "beta", "moving_mean", "moving_variance"]
    elif cls in ("LayerNormalization", "RMSNormalization", "GroupNormalization"):
        base = ["gamma", "beta"]
    else:
        base = ["kernel", "bias"]
    return [base[i] if i < len(base) else str(i) for i in range(n)]


def _config_layers(config: dict | None) -> list[tuple[str, str]]:
    """(layer name, class name) of a model config, nested models flattened, in model order."""
    if not config:
        return []
    out = []
    for layer in config.get("config", {}).get("layers", []) or []:
        name = layer.get("config", {}).get("name") or layer.get("name")
        out.append((name, layer.get("class_name", "")))
    return out


def _path_names(group, rel: str) -> list[str]:
    """Keras' own names along a variables path: 'backward_layer/cell/vars' of a Bidirectional
    -> ['backward_lstm', 'lstm_cell'] (each group's ``vars`` carries its layer's name)."""
    names, node = [], group
    for part in rel.split("/")[:-1]:
        node = node[part]
        vars_ = node.get("vars")
        names.append(_text(vars_.attrs["name"])[0] if vars_ is not None and "name" in vars_.attrs
                     else part)
    return names


def _keras3(root, config: dict | None) -> list[tuple[str, object]]:
    """(name, dataset) pairs of a Keras 3 weights file, in model order when a config is given."""
    h5py = import_h5py()
    classes = dict(_config_layers(config))
    layers = root.get("layers")
    if layers is None:
        return []
    groups = []
    for key in layers:
        g = layers[key]
        vars_ = g.get("vars")
        lname = _text(vars_.attrs["name"])[0] if vars_ is not None and "name" in vars_.attrs \
            else key
        groups.append((lname, g))
    order = {name: i for i, name in enumerate(classes)}
    groups.sort(key=lambda item: order.get(item[0], len(order)))
    out, used = [], set()
    for lname, g in groups:
        cls = classes.get(lname, "")
        found = []

        def visit(rel, obj, found=found):
            if isinstance(obj, h5py.Group) and rel.split("/")[-1] == "vars" and rel != "vars":
                found.append((rel, obj))
        g.visititems(visit)
        found.sort(key=lambda item: _SUB_ORDER.get(item[0].split("/")[0], 0))
        if "vars" in g:
            found.insert(0, ("vars", g["vars"]))
        for rel, vars_ in found:
            keys = sorted(vars_.keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
            prefix = "/".join([lname, *_path_names(g, rel)])
            if prefix in used:
                prefix = f"{lname}/{rel[: -len('/vars')]}"
            used.add(prefix)
            names = _var_names(rel[: -len("vars")], len(keys), cls)
            for k, vname in zip(keys, names):
                if isinstance(vars_[k], h5py.Dataset):
                    out.append((f"{prefix}/{vname}", vars_[k]))
    return out


def _loader(ds, shape: tuple[int, ...] | None):
    def load() -> np.ndarray:
        a = ds[()]
        return a if shape is None else a.reshape(shape)
    return load


def _items(pairs: list[tuple[str, object]]) -> list[tuple]:
    """LayerRef items: MHA kernels flattened to 2-D, recurrent kernels given their gates."""
    shapes = {name: tuple(ds.shape) for name, ds in pairs}
    items = []
    for name, ds in pairs:
        shape = tuple(ds.shape)
        parts = name.split("/")
        last = parts[-1]
        extra: dict = {}
        new = None
        if last == "bias" and len(shape) > 1:  # GRU (2, 3H), MHA (heads, head_dim): biases
            new = (int(np.prod(shape)),)
        elif last == "kernel" and len(parts) > 1 and parts[-2] in _MHA_PARTS and len(shape) == 3:
            new = ((shape[0] * shape[1], shape[2]) if parts[-2] == "attention_output"
                   else (shape[0], shape[1] * shape[2]))
        elif last in ("kernel", "recurrent_kernel") and len(shape) == 2:
            rec = shapes.get("/".join(parts[:-1] + ["recurrent_kernel"]))
            if rec is not None and len(rec) == 2 and rec[0] and rec[1] % rec[0] == 0:
                gates = KERAS_GATES.get(rec[1] // rec[0], "")
                extra = {"role": "recurrent", "gates": gates}
        items.append((name, new or shape, str(ds.dtype), _loader(ds, new), extra))
    return items


def open_keras(path: Path, kind: str) -> Source:
    """A Keras ``.h5`` (legacy or Keras 3 weights) or ``.keras`` file (see the module docstring)."""
    h5py = import_h5py()
    config = None
    try:
        if kind == "keras":
            with zipfile.ZipFile(path) as zf:
                if "config.json" in zf.namelist():
                    config = json.loads(zf.read("config.json"))
                blob = zf.read("model.weights.h5")
            handle = h5py.File(io.BytesIO(blob), "r")
        else:
            handle = h5py.File(path, "r")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise SourceError(f"{path}: cannot read the Keras file ({one_line(exc)})") from None
    root = handle
    try:
        if "model_weights" in root and "layer_names" in root["model_weights"].attrs:
            pairs = _legacy(root["model_weights"], str(path))
            fmt = "keras (HDF5)"
        elif "layer_names" in root.attrs:
            pairs = _legacy(root, str(path))
            fmt = "keras (HDF5 weights)"
        elif "layers" in root:
            if config is None and "model_config" in root.attrs:
                config = json.loads(_text(root.attrs["model_config"])[0])
            pairs = _keras3(root, config)
            fmt = "keras" if kind == "keras" else "keras (weights.h5)"
        else:
            raise SourceError(f"{path}: an HDF5 file that is not a Keras model (no model_weights, "
                              "layer_names or layers group)")
    except SourceError:
        handle.close()
        raise
    except (KeyError, ValueError, OSError) as exc:
        handle.close()
        raise SourceError(f"{path}: a damaged Keras file ({one_line(exc)})") from None
    if not pairs:
        handle.close()
        raise SourceError(f"{path}: a Keras file with no weights")
    # the h5py handle stays open for the loaders; it closes when the Source is collected
    return Source(numbered(_items(pairs), str(path), layout="keras"), fmt, (str(path),))


# --- the reader ---------------------------------------------------------------------------------
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _recognise(probe: Probe) -> str | None:
    """A Keras 3 ``.keras`` zip (it holds model.weights.h5), or any HDF5 file."""
    if probe.is_zip:
        return "keras" if "model.weights.h5" in probe.members else None
    return "hdf5" if probe.head.startswith(_HDF5_MAGIC) else None


def _open_file(path: Path, variant: str, trust_pickle: bool) -> Source:
    return open_keras(path, variant)


READER = Reader(
    name="keras", phrase="a Keras .h5/.keras file", recognise=_recognise, open_file=_open_file,
    patterns=("*.keras", "*.h5", "*.hdf5"),
    suffixes=(".keras", ".h5", ".hdf5"), zip_phrase="a Keras .keras file",
    requires="h5py")
