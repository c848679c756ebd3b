"""numpy ``.npz`` archives (one tensor per member, file order) and single ``.npy`` arrays."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .base import Source, SourceError, numbered


def _npy_header(fp) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
    return shape, dtype


def open_numpy(path: Path, kind: str) -> Source:
    if kind == "npy":
        try:
            with open(path, "rb") as fp:
                shape, dtype = _npy_header(fp)
        except ValueError as exc:
            raise SourceError(f"{path}: corrupt .npy file ({exc})") from None
        if dtype.hasobject:
            raise SourceError(f"{path}: an .npy of Python objects (needs unpickling); "
                              "not a weight array")
        items = [(path.stem, shape, str(dtype),
                  lambda: np.load(path, mmap_mode="r", allow_pickle=False))]
        return Source(numbered(items, str(path)), "npy", (str(path),))
    items = []
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            try:
                with zf.open(member) as fp:
                    shape, dtype = _npy_header(fp)
            except ValueError as exc:
                raise SourceError(f"{path}: corrupt member {member} ({exc})") from None
            name = member[: -len(".npy")]

            def load(m=member):
                with np.load(path, allow_pickle=False) as npz:
                    return npz[m[: -len(".npy")]]
            items.append((name, shape, str(dtype), load))
    return Source(numbered(items, str(path)), "npz", (str(path),))


def open_array(a: np.ndarray) -> Source:
    return Source(numbered([("weight", a.shape, str(a.dtype), lambda: a)], "<memory>"),
                  "array", ("<memory>",))
