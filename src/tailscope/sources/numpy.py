"""numpy ``.npz`` archives (one tensor per member, file order) and single ``.npy`` arrays.

``read_array`` reads one matrix (a ``.npy``, or an ``.npz`` of a scipy sparse matrix or of one
array) for the commands that take data rather than a model. Nothing here unpickles, except an
``.npy`` of Python objects (a pickled dict of arrays) opened with ``trust_pickle=True``.
"""

from __future__ import annotations

import tokenize
import zipfile
from pathlib import Path

import numpy as np

from ..util.errors import one_line
from .base import Probe, Reader, Source, SourceError, numbered
from .containers import walk

_NPY_MAGIC = b"\x93NUMPY"


def _load_npy(path: Path) -> np.ndarray:
    """An .npy read (not memory-mapped: a file cut short while it is read is a one-line error,
    not a SIGBUS)."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, SyntaxError, tokenize.TokenError) as exc:
        raise SourceError(f"{path}: corrupt or truncated .npy file ({exc})") from None


def _npy_header(fp) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of an .npy header; ValueError for any damage (numpy's parser of the header
    dict can also raise SyntaxError, tokenize errors or EOFError) or a negative dimension."""
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
    except (SyntaxError, tokenize.TokenError, EOFError, TypeError) as exc:
        raise ValueError(f"a damaged header: {one_line(exc)}") from None
    if any(d < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    return shape, dtype


def _pickled_arrays(path: Path) -> Source:
    """A trusted .npy of Python objects: a dict of arrays (``np.save(path, {...})``), nested dicts
    named 'outer.inner', or an object array of arrays (named by position)."""
    try:
        obj = np.load(path, allow_pickle=True)
    except Exception as exc:  # noqa: BLE001 - the pickle's own failure, in one line
        raise SourceError(f"{path}: cannot unpickle the .npy ({one_line(exc)})") from None
    if obj.shape == ():
        obj = obj.item()

    def expand(value):
        if isinstance(value, dict):
            return ((k, v) for k, v in value.items())
        if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray)
                                                and value.dtype.hasobject):
            return enumerate(value)
        return None

    def is_leaf(value) -> bool:
        return isinstance(value, np.ndarray) and value.dtype.kind in "fiub"

    if is_leaf(obj):
        pairs = [(path.stem, obj)]
    else:  # each container once, bounded (containers.walk)
        pairs = walk(obj, expand, is_leaf, str(path))
    if not pairs:
        raise SourceError(f"{path}: an .npy of Python objects holding no numeric arrays")
    items = [(n, a.shape, str(a.dtype), (lambda a=a: a)) for n, a in pairs]
    return Source(numbered(items, str(path)), "npy (pickled)", (str(path),))


def open_numpy(path: Path, kind: str, trust_pickle: bool = False) -> Source:
    if kind == "npy":
        try:
            with open(path, "rb") as fp:
                shape, dtype = _npy_header(fp)
        except ValueError as exc:
            raise SourceError(f"{path}: corrupt .npy file ({exc})") from None
        if dtype.hasobject:
            if not trust_pickle:
                raise SourceError(
                    f"{path}: an .npy of Python objects (needs unpickling, which could run "
                    "anything); refused by default. If you trust the file, pass "
                    "trust_pickle=True (CLI: --trust-pickle)")
            return _pickled_arrays(path)
        items = [(path.stem, shape, str(dtype),
                  lambda: _load_npy(path))]
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


def read_array(path):
    """The matrix in a ``.npy`` file, or in an ``.npz`` holding a scipy sparse matrix (returned
    sparse, as ``scipy.sparse.load_npz`` gives it) or exactly one array. Never unpickles.

    Raises
    ------
    SourceError
        (a ValueError) with a one-line reason: no such file, not a .npy/.npz, an array of Python
        objects, an .npz of several arrays, a damaged file.
    """
    path = Path(path)
    try:
        probe = Probe(path)
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({one_line(exc)})") from None
    try:
        if probe.head.startswith(_NPY_MAGIC):
            return np.load(path, allow_pickle=False)
        if not probe.is_zip:
            raise SourceError(f"{path}: not a numpy .npy or .npz file")
        members = probe.members
        if "format.npy" in members:
            import scipy.sparse as sp

            try:
                return sp.load_npz(path)
            except (ValueError, KeyError, NotImplementedError):
                pass  # an .npz that merely has a member named 'format': read as arrays
        with np.load(path, allow_pickle=False) as npz:
            if len(npz.files) != 1:
                raise SourceError(f"{path}: an .npz with {len(npz.files)} arrays; expected a "
                                  "scipy sparse matrix or one array")
            return npz[npz.files[0]]
    except SourceError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise SourceError(f"{path}: an array of Python objects (needs unpickling); refused"
                              ) from None
        raise SourceError(f"{path}: a damaged numpy file ({one_line(exc)})") from None
    except (OSError, KeyError, EOFError, zipfile.BadZipFile, SyntaxError,
            tokenize.TokenError) as exc:
        raise SourceError(f"{path}: a damaged numpy file ({one_line(exc)})") from None


# --- the reader ---------------------------------------------------------------------------------
def _recognise(probe: Probe) -> str | None:
    """An .npy's magic, or a zip archive of .npy members only."""
    if probe.is_zip:
        names = probe.members
        return "npz" if names and all(n.endswith(".npy") for n in names) else None
    return "npy" if probe.head.startswith(_NPY_MAGIC) else None


def _open_file(path: Path, variant: str, trust_pickle: bool) -> Source:
    return open_numpy(path, variant, trust_pickle)


READER = Reader(
    name="numpy", phrase="a numpy .npy/.npz file", recognise=_recognise, open_file=_open_file,
    patterns=("*.npz", "*.npy"), suffixes=(".npz", ".npy"), zip_phrase="a numpy .npz",
    tensor_patterns=("*.npy",))
