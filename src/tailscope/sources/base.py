"""The vocabulary every reader shares: a lazy list of named tensors (``LayerRef``) in model order,
and the declaration a file format fills in to be read (``Reader``, looking at a ``Probe``).

Nothing here knows a file format (``registry`` lists the readers, ``opener`` dispatches to them),
nothing computes an eigenvalue, and a tensor is read only when ``LayerRef.load()`` is called.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from ..util.optional import EXTRAS


class SourceError(ValueError):
    """The input cannot be read as a model: a one-line, user-facing message."""


_WEIGHT_SUFFIX = re.compile(r"\.weight((?:\[[^\]]*\])*)$")


@dataclass(frozen=True)
class LayerRef:
    """One named tensor of a model, read lazily.

    ``index`` is its position among all tensors of the source in model order (stable whatever
    filter is applied), ``layout`` says how to read a tensor ('torch': out, in, kh, kw; 'keras':
    kh, kw, in, out). ``gates`` names the gate blocks of a stacked recurrent weight in order along
    its output axis (e.g. 'ifgo' for a PyTorch LSTM), when the source knows them. A derived
    matrix (a gate, q/k/v, a head) has its ``parent``'s name; a tensor that was split lists its
    parts in ``split_into``. ``role`` is 'recurrent' for recurrent weights, 'constant' for a graph's constant
    that no layer uses as its weight (listed, skipped). ``loader`` reads the
    tensor (``load()`` calls it; a derived ref passes its own).

    Checkpoints of today's LLMs (``finish.py``): ``expert`` is the expert's number for one
    matrix of a Mixture-of-Experts layer (None for a dense layer); ``quant`` says how the
    tensor was stored when it was dequantized ('' for plain floating point); ``role`` is also
    'conv' (a reader that knows the op or module says the 3-D tensor is a convolution's),
    'router' or 'shared_expert' (``moe.py``), or 'refused: <why>' (a source pass could not
    decode it: reported skipped for that reason); ``layout`` 'stack:<spec>' marks a fused expert
    stack split by ``moe.py``; ``part_loader(i)``,
    when a reader or dequantizer can, reads the sub-tensor ``[i]`` along the first axis alone
    (one expert of a fused stack without reading the others).
    """

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: str
    source: str
    loader: Callable[[], np.ndarray] = field(repr=False, compare=False)
    layout: str = "torch"
    gates: str = ""
    role: str = ""
    parent: str = ""
    split_into: tuple[str, ...] = ()
    expert: int | None = None
    quant: str = ""
    part_loader: Callable[[int], np.ndarray] | None = field(default=None, repr=False,
                                                            compare=False)

    def load(self) -> np.ndarray:
        """The tensor as a numpy array (bf16 arrives as float32)."""
        return self.loader()

    @property
    def module(self) -> str:
        """The name without a trailing '.weight' (WeightWatcher's layer name); a derived matrix
        keeps its part label ('attn.q_proj[h0]')."""
        return _WEIGHT_SUFFIX.sub(r"\1", self.name)

    @property
    def is_float(self) -> bool:
        return self.dtype.startswith(("float", "bfloat"))

    def materialized(self) -> LayerRef:
        """This ref with its tensor read now: picklable, so a planned layer can travel to a
        Dask worker. A tensor that cannot be read travels as its error, raised at ``load()``."""
        try:
            return replace(self, loader=Loaded(np.asarray(self.load())), part_loader=None)
        except Exception as exc:  # noqa: BLE001 - the layer's failure row says it
            return replace(self, part_loader=None, loader=Raising(str(exc).splitlines()[0] if str(exc) else
                                                type(exc).__name__))


class Loaded:
    """A loader returning arrays read beforehand (one array, or a tuple of them); picklable."""

    def __init__(self, *arrays):
        self.arrays = arrays

    def __call__(self):
        return self.arrays[0] if len(self.arrays) == 1 else self.arrays


class Raising:
    """A loader that raises the reason a tensor could not be read (a SourceError); picklable."""

    def __init__(self, reason: str):
        self.reason = reason

    def __call__(self):
        raise SourceError(self.reason)


@dataclass(frozen=True)
class Source(Sequence):
    """The tensors of one model, in model order, and what was read to get them; ``config``
    is the model's Hugging Face ``config.json`` (a dict) when one was found beside its files."""

    refs: tuple[LayerRef, ...]
    format: str
    files: tuple[str, ...]
    note: str = ""
    config: dict | None = field(default=None, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i):
        return self.refs[i]

    def __iter__(self) -> Iterator[LayerRef]:
        return iter(self.refs)

    def describe(self) -> str:
        where = ", ".join(Path(f).name for f in self.files[:3])
        more = f" and {len(self.files) - 3} more" if len(self.files) > 3 else ""
        return f"{self.format}: {where}{more}" + (f" ({self.note})" if self.note else "")


_NUM = re.compile(r"(\d+)")


def unique_namer():
    """A function giving each name once: a repeated one becomes ``name#2``, ``name#3``, ..."""
    used: set[str] = set()

    def unique(name: str) -> str:
        out, k = name, 2
        while out in used:
            out, k = f"{name}#{k}", k + 1
        used.add(out)
        return out

    return unique


def read_exact(path, offset: int, dtype, shape: tuple[int, ...]) -> np.ndarray:
    """``shape`` items of little-endian ``dtype`` at byte ``offset`` of ``path``, read (not
    memory-mapped: a file cut short while it is read is a one-line SourceError, never a SIGBUS
    that kills the process)."""
    dtype = np.dtype(dtype).newbyteorder("<")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            raw = f.read(nbytes)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) != nbytes:
        raise SourceError(f"{path}: the file was cut short while it was read ({nbytes} bytes "
                          f"needed at offset {offset}, {len(raw)} there)")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def file_kind(path: Path) -> str:
    """What a path that is neither a file nor a folder is: 'a pipe', 'a socket', ..."""
    mode = path.stat().st_mode
    for test, kind in ((stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a file"


def natural_key(name: str) -> tuple:
    """Sort key that puts 'layers.9' before 'layers.10'."""
    return tuple(int(part) if part.isdigit() else part for part in _NUM.split(name))


_HEAD = re.compile(r"^(?:output|score)\.|(?:^|\.)(?:lm_head|embed_out)\.")
_EMBEDDING = re.compile(r"^(?:[A-Za-z_]\w*\.){0,2}(?:embed_tokens|wte|wpe|tok_embeddings|"
                        r"word_embeddings|position_embeddings|token_type_embeddings|embed_in|"
                        r"embed_positions|embeddings|token_embd)\.")


# inside a numbered block, the parts the forward pass runs in this order, named alike across
# architectures (Llama/Qwen/Mistral/DeepSeek, Mixtral, GPT-2/GPT-J, Falcon, BLOOM, Gemma 2/3,
# Meta's Llama, OPT/BART/Whisper, CLIP); a part not named here (BERT's intermediate/output, T5's
# layer.0, OPT's final_layer_norm whose place depends on pre/post-norm) keeps name order after
# them; a part named ``<part>_...`` (``self_attn_layer_norm``) sorts with its part
_BLOCK_PARTS = {name: rank for rank, names in enumerate((
    ("input_layernorm", "ln_1", "attention_norm", "ln_attn", "layer_norm1"),
    ("self_attn", "self_attention", "attention", "attn"),
    ("encoder_attn", "crossattention", "cross_attn"),
    ("post_attention_layernorm", "ln_2", "ffn_norm", "pre_feedforward_layernorm", "ln_mlp",
     "layer_norm2"),
    ("mlp", "feed_forward", "block_sparse_moe", "ffn", "moe", "fc1", "fc2"),
    ("post_feedforward_layernorm",))) for name in names}
_FIRST_BLOCK = re.compile(r"\.\d+\.")


def _block_part(part: str) -> int:
    """The forward rank of a block's first name component (``len`` of the table: not known)."""
    rank = _BLOCK_PARTS.get(part)
    if rank is None:
        known = [k for k in _BLOCK_PARTS if part.startswith(k + "_")]
        rank = _BLOCK_PARTS[max(known, key=len)] if known else max(_BLOCK_PARTS.values()) + 1
    return rank


def model_order(name: str) -> tuple:
    """Sort key of a checkpoint whose files list tensors by name (safetensors, its sharded
    index): the input embeddings first, then numeric-aware name order, the output head
    (``lm_head``, ``embed_out``, ``output``, ``score``) last, as the forward pass runs
    (plain name order puts ``lm_head`` before ``model.embed_tokens`` and GPT-2's ``wte`` after
    its blocks). Inside a numbered block (the name's first ``.N.``), the parts run in forward
    order where their names say it (``_BLOCK_PARTS``: pre-attention norm, attention,
    cross-attention, pre-MLP norm, MLP / experts, post-MLP norm), then the other parts in name
    order; within a part, name order (``k_proj`` before ``q_proj``)."""
    rank = 2 if _HEAD.search(name) else 0 if (_EMBEDDING.search(name)
                                              and not _FIRST_BLOCK.search(name)) else 1
    m = _FIRST_BLOCK.search(name)
    if m is None:
        return (rank, natural_key(name))
    rest = name[m.end():]
    # natural_key alternates str, int, str...: the prefix ends on a str, the part rank is an
    # int and the rest starts on a str, so keys of any two names compare element by element
    return (rank, natural_key(name[:m.end()]) + (_block_part(rest.split(".", 1)[0]),)
            + natural_key(rest))


def numbered(items: list[tuple], source: str, layout: str = "torch") -> tuple[LayerRef, ...]:
    """LayerRefs with consecutive indices from (name, shape, dtype, loader[, extra]) in model
    order; ``extra`` is a dict of further LayerRef fields (gates, role)."""
    return tuple(LayerRef(name=it[0], index=i, shape=tuple(int(s) for s in it[1]), dtype=it[2],
                          source=source, loader=it[3], layout=layout,
                          **(it[4] if len(it) > 4 else {}))
                 for i, it in enumerate(items))


def concat(sources: Sequence[Source]) -> Source:
    """One source of several (e.g. a folder's files), tensors renumbered in order."""
    refs = [r for s in sources for r in s.refs]
    files = tuple(f for s in sources for f in s.files)
    seen: dict[str, str] = {}
    for r in refs:
        if r.name in seen and seen[r.name] != r.source:
            raise SourceError(f"tensor {r.name!r} is in both {Path(seen[r.name]).name} and "
                              f"{Path(r.source).name}: not parts of one model")
        seen.setdefault(r.name, r.source)
    return Source(tuple(replace(r, index=i) for i, r in enumerate(refs)), sources[0].format, files)


# --- what a file format declares ----------------------------------------------------------------
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class Probe:
    """What a reader recognises a file by: its first ``HEAD`` bytes, its path, and (read once,
    when first asked) the member names when it is a zip archive."""

    HEAD = 16

    def __init__(self, path: Path, head: bytes | None = None):
        self.path = Path(path)
        if head is None:
            with open(self.path, "rb") as f:
                head = f.read(self.HEAD)
        self.head = head

    @property
    def is_zip(self) -> bool:
        return self.head.startswith(ZIP_MAGIC)

    @cached_property
    def members(self) -> tuple[str, ...]:
        """The member names of a zip archive (() for any other file)."""
        if not self.is_zip:
            return ()
        import zipfile

        try:
            with zipfile.ZipFile(self.path) as zf:
                return tuple(zf.namelist())
        except zipfile.BadZipFile:
            raise SourceError(f"{self.path}: a damaged zip archive") from None


@dataclass(frozen=True)
class Reader:
    """One file format, as the registry needs it; each format module exposes one ``READER``.

    - ``name``: the format's name ('safetensors', 'torch', ...), also in a folder's note.
    - ``phrase``: how messages name a file of it ("an ONNX model").
    - ``recognise(probe)``: the variant of the format the bytes are (e.g. 'npz' / 'npy'), or None.
      ``heuristic`` readers guess from a byte or two: they are asked only after every other
      reader's exact signature failed.
    - ``open_file(path, variant, trust_pickle)``: the file's tensors.
    - ``patterns``: the folder globs it claims, in preference order; ``open_files(files)``
      opens all a pattern matched as one model (default: each file recognised and opened, then
      concatenated); ``open_folder(folder, trust_pickle)`` opens a folder it recognises by
      other means (a sharded index), else returns None.
    - ``suffixes``: the file suffixes it reads (a name ending so is a file, not a model id);
      ``by_suffix``: it also takes a file with one of them that no reader recognised, so that a
      damaged file gets this reader's message rather than "unknown format".
    - ``zip_phrase``: how to name its zip form, when it has one ("a numpy .npz").
    - ``requires``: the optional package it imports (a key of ``util.optional.EXTRAS``), or ''.
    - ``tensor_patterns``: those of its patterns whose files each hold one tensor, so that a
      folder of several is one model (numpy's ``*.npy``); several files of any other pattern
      are one model only as the shards of one checkpoint.
    """

    name: str
    phrase: str
    recognise: Callable[[Probe], str | None]
    open_file: Callable[[Path, str, bool], Source]
    patterns: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    open_files: Callable[[list[Path]], Source] | None = None
    open_folder: Callable[[Path, bool], Source | None] | None = None
    heuristic: bool = False
    by_suffix: bool = False
    zip_phrase: str = ""
    requires: str = ""
    tensor_patterns: tuple[str, ...] = ()

    @property
    def extra(self) -> str:
        """The tailscope extra that installs what it needs ('' when nothing)."""
        return EXTRAS[self.requires][1] if self.requires else ""
