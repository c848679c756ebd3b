"""WeightWatcher's flat-file helpers: a state-dict file -> one ``.npy`` per weight and bias and a
``ww_config.json`` (``extract_pytorch_statedict_``, ``extract_pytorch_bins``); such a folder is then
a model (WeightWatcher's ``ww_flatfiles`` framework, see ``layers.flatfile_entries``).

Files are read through tailscope's readers (PyTorch pickles with ``weights_only=True``: nothing
is unpickled as code) and written atomically.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from ..engine.run import Recipe
from ..util.io import atomic_write
from .layers import (
    CONFIG_FILENAME,
    CONV2D,
    DENSE,
    NORM,
    PYTORCH,
    SAFETENSORS,
    UNKNOWN,
    infer_model_file_format,
)


def _type_as_str(shape: tuple) -> str:
    return {1: NORM, 2: DENSE, 4: CONV2D}.get(len(shape), UNKNOWN)


def _save(path: str, array: np.ndarray) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, array)
    atomic_write(path, write)


def _float32(a: np.ndarray) -> np.ndarray:
    """As WeightWatcher stores weights on the CPU: float32."""
    return np.asarray(a, dtype=np.float32)


def extract_pytorch_statedict_(weights_dir, model_name, state_dict_filename, start_id=0,
                               format=PYTORCH, save=None) -> dict:  # noqa: A002
    """WeightWatcher's ``extract_pytorch_statedict_``: {layer_id: layer_config} for the tensors of
    one ``.bin`` (keys containing 'weight', ids by their position among them) or ``.safetensors``
    file (every key, ids by position); each config has key, name (``<model_name>.<id>``),
    longname, weightfile, biasfile, type ('norm', 'dense', 'conv2d', 'unknown') and dims (JSON).
    A ``.bin``'s weights and biases (and a safetensors file's with ``save=True``) are written to
    ``weights_dir`` as ``<name>.weight.npy`` / ``<name>.bias.npy``."""
    filename = str(state_dict_filename)
    if not os.path.exists(filename):
        raise ValueError(f"{filename}: no such state-dict file")
    is_bin = format == PYTORCH and filename.endswith(".bin")
    is_st = format == SAFETENSORS and filename.endswith(".safetensors")
    if not (is_bin or is_st):
        raise ValueError(f"{filename}: format={format!r} needs a .bin ('pytorch') or "
                         "a .safetensors ('safetensors') file")
    refs = {r.name: r for r in Recipe(filename).open().refs}
    keys = [k for k in refs if "weight" in k.lower()] if is_bin else sorted(refs)
    write = is_bin or bool(save)
    config = {}
    for i, key in enumerate(keys):
        if "weight" not in key and "bias" not in key:
            continue
        layer_id = i + int(start_id)
        name = f"{model_name}.{layer_id}"
        W = _float32(refs[key].load())
        bias_key = re.sub("weight$", "bias", key)
        has_bias = is_bin and bias_key in refs and bias_key != key
        weightfile, biasfile = filename, (filename if has_bias else None)
        if write:
            weightfile, biasfile = f"{name}.weight.npy", None
            _save(os.path.join(weights_dir, weightfile), W)
            if has_bias:
                biasfile = f"{name}.bias.npy"
                _save(os.path.join(weights_dir, biasfile), _float32(refs[bias_key].load()))
        config[layer_id] = {"key": key, "name": name, "longname": re.sub(".weight$", "", key),
                            "weightfile": weightfile, "biasfile": biasfile,
                            "type": _type_as_str(W.shape), "dims": json.dumps(W.shape)}
    return config


def extract_pytorch_bins(model_dir=None, model_name=None, tmp_dir=None, format=None) -> dict:  # noqa: A002
    """WeightWatcher's ``extract_pytorch_bins``: every ``pytorch_model*.bin`` (or
    ``model*.safetensors``) of ``model_dir`` extracted into a new ``ww_*`` folder under
    ``tmp_dir`` (default: the system's temporary folder, $TMPDIR, else /tmp; WeightWatcher's is
    always /tmp); returns {framework, weights_dir, format, model_name, layers: {id: config}} and
    writes it as ``ww_config.json`` there. ``model_name`` defaults to config.json's model_type."""
    if model_dir is None or not os.path.isdir(model_dir):
        raise ValueError(f"extract_pytorch_bins: {model_dir!r} is not a folder")
    if format is None:
        format, _ = infer_model_file_format(model_dir)  # noqa: A001
    if format == PYTORCH:
        fileglob = f"{model_dir}/pytorch_model*bin"
    elif format == SAFETENSORS:
        fileglob = f"{model_dir}/model*safetensors"
    else:
        raise ValueError(f"{model_dir}: no pytorch_model*.bin or model*.safetensors files")
    if model_name is None:
        cfg_file = Path(model_dir) / "config.json"
        if not cfg_file.exists():
            raise ValueError(f"{model_dir}: no config.json to name the model; pass model_name=")
        model_name = json.loads(cfg_file.read_text()).get("model_type") or "UNK"
    weights_dir = tempfile.mkdtemp(dir=tmp_dir, prefix="ww_")
    config = {"framework": PYTORCH, "weights_dir": weights_dir, "format": format,
              "model_name": model_name, "layers": {}}
    start_id = 0
    for filename in sorted(glob.glob(fileglob)):
        layers = extract_pytorch_statedict_(weights_dir, model_name, filename, start_id,
                                            format=format)
        if layers:
            start_id = max(layers) + 1
        config["layers"].update(layers)
    text = json.dumps(config, ensure_ascii=False, indent=4)
    atomic_write(os.path.join(weights_dir, CONFIG_FILENAME),
                 lambda p: Path(p).write_text(text, encoding="utf-8"))
    return config


def read_pystatedict_config(model_dir) -> dict:
    """An extracted folder's ``ww_config.json``, its layer ids as ints (WeightWatcher's helper)."""
    config = json.loads((Path(model_dir) / CONFIG_FILENAME).read_text())
    config["layers"] = {int(k): v for k, v in config["layers"].items()}
    return config


def write_pystatedict_config(weights_dir, config) -> str:
    """Write ``config`` to ``<weights_dir>/ww.config`` (WeightWatcher's file name for it)."""
    filename = os.path.join(weights_dir, "ww.config")
    text = json.dumps(config)
    atomic_write(filename, lambda p: Path(p).write_text(text, encoding="utf-8"))
    return filename
