"""What users have -> a ``Source``: a path (file or folder, in the format its content says), a
Hugging Face model id, an in-memory torch module or state dict, or an array.

The formats themselves are in ``registry``; this module only decides which kind of input it has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .base import Source, SourceError
from .hub import is_repo_id, open_hub
from .numpy import open_array
from .registry import open_file, open_folder
from .torch import is_torch_object, open_torch_object


def open_source(x: Any, *, trust_pickle: bool = False) -> Source:
    """Open a model as a lazy list of tensors.

    Accepts a path (safetensors file, sharded folder with ``model.safetensors.index.json``,
    Hugging Face-style folder, PyTorch ``.bin/.pt/.pth`` state dict or TorchScript archive, numpy
    ``.npz/.npy``, ONNX model, Keras ``.h5`` / ``.keras``), a Hugging Face model id
    ``owner/name`` (weights downloaded to the Hugging Face cache; needs the ``hub`` extra), an
    in-memory ``torch.nn.Module``, a state dict (mapping of names to tensors or
    arrays, also nested under 'state_dict' / 'model_state' / 'model'), or a single array.

    PyTorch pickles are loaded with ``weights_only=True``; one whose metadata names other
    classes (Lightning hyper-parameters, optimizer or scheduler objects) is read with those
    classes as inert stand-ins, running no code; one whose tensors need code to load is refused
    unless ``trust_pickle=True``. A folder is one model: one file, the complete shards of one
    checkpoint, or ``.npy`` tensors; a folder of separate models is an error naming them.
    """
    if isinstance(x, Source):
        return x
    if isinstance(x, (str, Path)):
        path = Path(x).expanduser()
        if not path.exists():
            if isinstance(x, str) and is_repo_id(x):
                return open_folder(open_hub(x), trust_pickle)
            raise SourceError(f"{path}: no such file or folder")
        if path.is_dir():
            return open_folder(path, trust_pickle)
        return open_file(path, trust_pickle)
    if is_torch_object(x) or isinstance(x, dict):
        return open_torch_object(x)
    if isinstance(x, np.ndarray):
        return open_array(x)
    raise SourceError(f"cannot read a model from a {type(x).__name__}; pass a path, a "
                      "torch.nn.Module, a state dict or an array")
