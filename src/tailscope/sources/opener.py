"""What users have -> a ``Source``: a path (file or folder, in the format its content says), a
Hugging Face model id, an in-memory torch module or state dict, or an array.

The formats themselves are in ``registry``; this module only decides which kind of input it has.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .base import Source, SourceError, file_kind
from .finish import finish
from .hub import is_repo_id, open_hub
from .numpy import open_array
from .registry import READERS, open_file, open_folder
from .torch import is_torch_object, open_torch_object

_STDIN_COPIES: list[str] = []


def _remove_stdin_copies() -> None:
    for name in _STDIN_COPIES:
        with contextlib.suppress(OSError):
            os.unlink(name)


def stdin_copy() -> Path:
    """The model piped into stdin ('-'), copied to a temporary file (readers seek; a pipe cannot)
    that is removed when the process ends."""
    if sys.stdin is None or sys.stdin.isatty():
        raise SourceError("-: reads a model from stdin, but stdin is a terminal; pipe a file in "
                          "(cat model.safetensors | tailscope analyze -)")
    fd, name = tempfile.mkstemp(prefix="tailscope-stdin-")
    if not _STDIN_COPIES:
        atexit.register(_remove_stdin_copies)
    _STDIN_COPIES.append(name)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
    if os.path.getsize(name) == 0:
        raise SourceError("-: nothing was piped into stdin")
    return Path(name)


def open_source(x: Any, *, trust_pickle: bool = False) -> Source:
    # the docstring is built below, its formats from the registry's readers
    if isinstance(x, Source):
        return x
    return finish(_opened(x, trust_pickle))


def _opened(x: Any, trust_pickle: bool) -> Source:
    """The reader's ``Source`` for ``x``, before ``finish``'s passes."""
    if isinstance(x, str) and x == "-":  # no config.json: the copy is in a temporary folder
        return replace(open_file(stdin_copy(), trust_pickle), config={})
    if isinstance(x, (str, Path)):
        path = Path(x).expanduser()
        try:
            exists = path.exists()
        except OSError as exc:  # a name too long, a loop of links...
            raise SourceError(f"{path}: {exc.strerror or exc}") from None
        if exists and not path.is_dir() and not path.is_file():
            raise SourceError(f"{path}: not a regular file ({file_kind(path)}); give a model "
                              "file, or '-' to read one from stdin")
        if not exists:
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


# the formats open_source's docstring lists, one line each
_FORMATS = "\n".join(f"    - {r.phrase} ({', '.join(r.suffixes)})" for r in READERS)
open_source.__doc__ = f"""Open a model as a lazy list of tensors.

    Accepts a path (``"-"``: a model piped into stdin) to a file in one of these formats,
    recognised from its content (``sources.registry.READERS``, in order):

{_FORMATS}

    or to a folder holding one model (a sharded checkpoint with its index, such as
    ``model.safetensors.index.json``, or a Hugging Face-style folder); a Hugging Face model id
    ``owner/name`` (weights downloaded to the Hugging Face cache; needs the ``hub`` extra); an
    in-memory ``torch.nn.Module``; a state dict (mapping of names to tensors or arrays, also
    nested under 'state_dict' / 'model_state' / 'model'); or a single array.

    PyTorch pickles are loaded with ``weights_only=True``; one whose metadata names other
    classes (Lightning hyper-parameters, optimizer or scheduler objects) is read with those
    classes as inert stand-ins, running no code; one whose tensors need code to load is refused
    unless ``trust_pickle=True``. A folder is one model: one file, the complete shards of one
    checkpoint, or ``.npy`` tensors; a folder of separate models is an error naming them.
    """
