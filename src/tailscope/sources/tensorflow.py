"""TensorFlow SavedModels and TF checkpoints, read through TensorFlow itself when it is installed
(the ``tf`` extra); without it, one line naming what to install.

Recognised by content and name, never mistaken for ONNX (both are protobufs):
- a SavedModel's ``saved_model.pb`` (a ``.pb`` whose first field is schema version 1); its
  weights are the checkpoint ``variables/variables`` beside it;
- a checkpoint's ``.index`` file (a table whose footer ends with TensorFlow's table magic) or one
  of its ``.data-NNNNN-of-NNNNN`` shards;
- a folder holding ``saved_model.pb`` or checkpoint ``.index`` files (the last one in numeric
  order, i.e. the latest step, when there are several).

Variables are read with ``tf.train.load_checkpoint``: names as stored, less the object graph's
``/.ATTRIBUTES/VARIABLE_VALUE`` suffix; optimizer slots, the object graph and non-float
bookkeeping are left out. Kernels are in Keras' layout (``layout='keras'``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..util.errors import one_line
from ..util.optional import require
from .base import Probe, Reader, Source, SourceError, natural_key, numbered

_TABLE_MAGIC = bytes.fromhex("57fb808b247547db")  # leveldb-style table footer, little-endian
_DATA = re.compile(r"^(?P<prefix>.+)\.data-\d{5}-of-\d{5}$")
_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_SKIP = ("_CHECKPOINTABLE_OBJECT_GRAPH", ".OPTIMIZER_SLOT", "optimizer/", "save_counter")


def _prefix(path: Path, variant: str) -> Path:
    """The checkpoint prefix (``.../variables/variables``, ``.../ckpt-3``) a file belongs to."""
    if variant == "savedmodel":
        prefix = path.parent / "variables" / "variables"
        if not Path(f"{prefix}.index").is_file():
            raise SourceError(f"{path}: a TensorFlow SavedModel without its variables/ folder "
                              "(its weights live in variables/variables.index and .data files)")
        return prefix
    if variant == "index":
        return path.with_suffix("")
    m = _DATA.match(path.name)
    return path.parent / m["prefix"] if m else path


def open_tensorflow(path: Path, variant: str) -> Source:
    """The variables of a SavedModel or checkpoint (see the module docstring)."""
    prefix = _prefix(Path(path), variant)
    kind = "TensorFlow SavedModel" if variant == "savedmodel" else "TensorFlow checkpoint"
    tf = require("tensorflow", f"{path}: a {kind}; reading it", error=SourceError)
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        shapes = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
    except Exception as exc:  # noqa: BLE001 - TensorFlow's own error types
        raise SourceError(f"{path}: cannot read the {kind}: {one_line(exc)}") from None
    items = []
    for name in sorted(shapes, key=natural_key):
        if any(s in name for s in _SKIP):
            continue
        dtype = getattr(dtypes.get(name), "name", str(dtypes.get(name)))
        items.append((name.removesuffix(_SUFFIX), tuple(shapes[name]), dtype,
                      lambda name=name: reader.get_tensor(name)))
    if not items:
        raise SourceError(f"{path}: a {kind} with no variables")
    return Source(numbered(items, str(path), layout="keras"), "tensorflow", (str(path),))


# --- the reader ---------------------------------------------------------------------------------
def _table_footer(path: Path) -> bool:
    try:
        size = os.path.getsize(path)
        if size < 48:
            return False
        with open(path, "rb") as f:
            f.seek(size - 8)
            return f.read(8) == _TABLE_MAGIC
    except OSError:
        return False


def _recognise(probe: Probe) -> str | None:
    name = probe.path.name
    if name.endswith(".pb") and probe.head.startswith(b"\x08\x01\x12"):
        return "savedmodel"
    if name.endswith(".index") and _table_footer(probe.path):
        return "index"
    if _DATA.match(name):
        return "data"
    return None


def _open_file(path: Path, variant: str, trust_pickle: bool) -> Source:
    if variant == "tensorflow":  # by suffix: a .pb / .index no signature matched
        raise SourceError(f"{path}: not a TensorFlow SavedModel or checkpoint index (nor any "
                          "other format tailscope reads), or a damaged one")
    return open_tensorflow(path, variant)


def _open_files(files: list[Path]) -> Source:
    """A folder's saved_model.pb, or its latest checkpoint."""
    path = files[-1]
    return open_tensorflow(path, "savedmodel" if path.name.endswith(".pb") else "index")


READER = Reader(
    name="tensorflow", phrase="a TensorFlow SavedModel or checkpoint", recognise=_recognise,
    open_file=_open_file, patterns=("saved_model.pb", "*.index"), suffixes=(".pb", ".index"),
    open_files=_open_files, by_suffix=True, requires="tensorflow")
