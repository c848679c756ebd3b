"""The file formats ``open_source`` reads: one ``Reader`` per format module, in ``READERS``.

Adding a format is one module exposing a ``READER`` (see ``base.Reader``) and one line here.
Everything that lists the formats is generated from ``READERS``: how a file is recognised, which
files of a folder are read, the messages naming the formats and patterns, and the suffixes that
make a name a file rather than a Hugging Face model id.

A file is recognised by its content: first the readers' exact signatures (magic bytes, zip
member names), in ``READERS`` order; a zip that no reader claims fails there; then the
one-byte guesses of ``heuristic`` readers; last a ``by_suffix`` reader takes a file with one of
its suffixes (a damaged ``.onnx`` gets the ONNX reader's message). A folder: a reader's
``open_folder`` (a sharded index) first, then the readers' patterns, in ``READERS`` order. A folder
is one model: several files of the chosen pattern are read together only when they are the
complete shards of one checkpoint ('model-00001-of-00002.safetensors', ...) or files that each
hold one tensor (a reader's ``tensor_patterns``: ``.npy``); several separate models (four ONNX
files side by side) are an error that names them and says to pass one file's path.
"""

from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import Path

from . import flax, gguf, keras, numpy, onnx, safetensors, tensorflow, tflite, torch
from .base import Probe, Reader, Source, SourceError, concat, natural_key

# In order of preference for a folder, and of recognition among exact signatures.
READERS: tuple[Reader, ...] = (safetensors.READER, torch.READER, numpy.READER, onnx.READER,
                               keras.READER, gguf.READER, tflite.READER,
                               flax.READER, tensorflow.READER)

# a name ending so is a file (or a table), not a model id
FILE_SUFFIXES: tuple[str, ...] = tuple(s for r in READERS for s in r.suffixes) + (".json", ".csv")


def _join(phrases: list[str], last: str) -> str:
    return phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} {last} {phrases[-1]}"


def _looked_for() -> list[str]:
    """The folder patterns, less those another pattern already covers ('model*.safetensors')."""
    patterns = [p for r in READERS for p in r.patterns]
    return [p for p in patterns if not any(q != p and fnmatch(p, q) for q in patterns)]


UNKNOWN = f"unknown format (not {_join([r.phrase for r in READERS], 'or')})"
UNKNOWN_ZIP = ("a zip archive that is neither "
               f"{_join([r.zip_phrase for r in READERS if r.zip_phrase], 'nor')}")
NO_WEIGHTS = f"no weights found in this folder (looked for {', '.join(_looked_for())})"


def recognise(path: Path) -> tuple[Reader, str]:
    """The reader of a file and the variant its bytes are (see the module docstring)."""
    probe = Probe(path)
    for r in READERS:
        if not r.heuristic:
            variant = r.recognise(probe)
            if variant:
                return r, variant
    if probe.is_zip:
        probe.members  # noqa: B018 - a damaged archive says so, not "neither"
        raise SourceError(f"{path}: {UNKNOWN_ZIP}")
    for r in READERS:
        if r.heuristic:
            variant = r.recognise(probe)
            if variant:
                return r, variant
    suffix = Path(path).suffix.lower()
    for r in READERS:
        if r.by_suffix and suffix in r.suffixes:
            return r, r.name
    raise SourceError(f"{path}: {UNKNOWN}")


def open_file(path: Path, trust_pickle: bool = False) -> Source:
    """A model file, in the format its content says."""
    r, variant = recognise(path)
    return r.open_file(path, variant, trust_pickle)


_SHARD = re.compile(r"^(?P<stem>.+)-(?P<i>\d+)-of-(?P<n>\d+)(?P<ext>\.[^-]+)$")
_NUMBERED = re.compile(r"^(?P<stem>.+)-(?P<i>\d+)(?P<ext>\.[^-.]+)$")


def _one_model(folder: Path, r: Reader, files: list[Path]) -> None:
    """Several files of a folder are one model only as the complete shards of one checkpoint
    ('<stem>-00001-of-00003<ext>' ... '-00003-of-00003', or '<stem>-00001<ext>', '<stem>-00002<ext>'
    ... with none missing, as WeightWatcher reads pytorch_model*.bin); else a SourceError naming them and how
    to choose one."""
    if len(files) == 1:
        return
    shards = [_SHARD.match(f.name) for f in files]
    if all(shards) and len({(m["stem"], int(m["n"]), m["ext"]) for m in shards}) == 1:
        count = int(shards[0]["n"])
        present = {int(m["i"]) for m in shards}
        missing = sorted(set(range(1, count + 1)) - present)
        if not missing and len(files) == count:
            return
        if missing:
            raise SourceError(f"{folder}: shard files of a {count}-shard checkpoint, but shard "
                              f"{', '.join(map(str, missing[:5]))} is missing")
    numbered = [_NUMBERED.match(f.name) for f in files]
    if all(numbered) and len({(m["stem"], m["ext"]) for m in numbered}) == 1:
        present = sorted(int(m["i"]) for m in numbered)
        if present in (list(range(1, len(files) + 1)), list(range(len(files)))):
            return  # '<stem>-00001<ext>', '<stem>-00002<ext>', ...: numbered parts, none missing
    names = ", ".join(f.name for f in files[:6]) + (f" and {len(files) - 6} more"
                                                   if len(files) > 6 else "")
    raise SourceError(f"{folder}: {len(files)} separate {r.name} models ({names}), not the shards "
                      f"of one; a folder is read as one model: pass one file's path, e.g. "
                      f"{folder / files[0].name}")


def open_folder(path: Path, trust_pickle: bool = False) -> Source:
    """A model folder: a sharded index, else the files of the first format with any, in order."""
    for r in READERS:
        if r.open_folder is not None:
            src = r.open_folder(path, trust_pickle)
            if src is not None:
                return src
    for r in READERS:
        for pattern in r.patterns:
            files = sorted((p for p in path.glob(pattern) if p.is_file()),
                           key=lambda p: natural_key(p.name))
            if not files:
                continue
            others = [p.name for o in READERS if o is not r for pt in o.patterns
                      for p in path.glob(pt)]
            note = f"chose {r.name} files" + (f"; ignored {', '.join(sorted(set(others)))}"
                                             if others else "")
            if not any(fnmatch(f.name, t) for f in files for t in r.tensor_patterns):
                _one_model(path, r, files)
            if r.open_files is not None:
                src = r.open_files(files)
            elif len(files) == 1:
                src = open_file(files[0], trust_pickle)
            else:
                src = concat([open_file(f, trust_pickle) for f in files])
            return Source(src.refs, src.format, src.files, note)
    raise SourceError(f"{path}: {NO_WEIGHTS}")
