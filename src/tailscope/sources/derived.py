"""Sources derived from other sources: fine-tune deltas W - W_base and LoRA updates B·A.

Every ref here is still lazy: ``load()`` reads one tensor pair (model and base, or lora_B and
lora_A) when asked, so a delta analysis streams like a plain one. Nothing here computes an
eigenvalue; a LoRA update is handed to the spectrum layer as its two factors
(:meth:`LowRankRef.load_factors`) so that its r nonzero eigenvalues are found without forming
the product.

Layers are matched by name: the exact name first, then the name with common wrapper prefixes
removed (``base_model.model.``, ``model.``, ``module.``, and PEFT's ``.base_layer``), then a
unique dotted suffix (``bert.encoder.x.weight`` <-> ``encoder.x.weight``). A layer with no base
counterpart, or one whose shape differs (a non-square 2-D weight stored transposed is
accepted, as WeightWatcher does), becomes a ref whose ``load()`` raises a :class:`SourceError`
with that reason, which the analysis reports as a failed row; the run goes on.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .base import LayerRef, Loaded, Raising, Source, SourceError

PEFT_MODES = (False, True, "only", "peft_only", "with_base")
_PREFIXES = ("base_model.model.", "base_model.", "model.", "module.", "_orig_mod.")
_LORA = re.compile(r"^(?P<module>.*)\.lora_(?P<emb>embedding_)?(?P<ab>[AB])"
                   r"(?P<adapter>\.(?!weight$)[^.]+)?(?:\.weight)?$")


@dataclass(frozen=True)
class LowRankRef(LayerRef):
    """A LoRA update scale·B·A: ``load()`` forms it, ``load_factors()`` gives (scale·B, A)."""

    _factors: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None
    rank: int = 0

    def load_factors(self) -> tuple[np.ndarray, np.ndarray]:
        return self._factors()

    def materialized(self) -> LowRankRef:
        """This ref with its factors read now (picklable; see :meth:`LayerRef.materialized`)."""
        try:
            b, a = self.load_factors()
        except Exception as exc:  # noqa: BLE001 - the layer's failure row says it
            return replace(self, loader=Raising(str(exc).splitlines()[0] if str(exc) else
                                                type(exc).__name__))
        return replace(self, loader=Product(b, a), _factors=Loaded(b, a))


class Product:
    """A loader returning the product of two arrays read beforehand; picklable."""

    def __init__(self, b: np.ndarray, a: np.ndarray):
        self.b, self.a = b, a

    def __call__(self) -> np.ndarray:
        return self.b @ self.a


def canonical(name: str) -> str:
    """A layer name without common wrapper prefixes and PEFT's '.base_layer' segment."""
    name = name.replace(".base_layer.", ".")
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if name.startswith(prefix) and len(name) > len(prefix):
                name, changed = name[len(prefix):], True
    return name


class NameIndex:
    """Finds a layer of a base model by name: exact, canonical, then a unique dotted suffix."""

    def __init__(self, refs):
        self.exact = {r.name: r for r in refs}
        self.canon: dict[str, list] = {}
        for r in refs:
            self.canon.setdefault(canonical(r.name), []).append(r)

    def find(self, name: str) -> tuple[LayerRef | None, str]:
        """(the matching ref, '') or (None, why there is none)."""
        if name in self.exact:
            return self.exact[name], ""
        key = canonical(name)
        hits = self.canon.get(key, [])
        if len(hits) == 1:
            return hits[0], ""
        if len(hits) > 1:
            return None, (f"{len(hits)} base layers match {name!r} once prefixes are removed "
                          f"({hits[0].name!r}, {hits[1].name!r})")
        hits = [refs[0] for k, refs in self.canon.items()
                if len(refs) == 1 and (k.endswith("." + key) or key.endswith("." + k))]
        if len(hits) == 1:
            return hits[0], ""
        if len(hits) > 1:
            return None, (f"{len(hits)} base layers end like {name!r} ({hits[0].name!r}, "
                          f"{hits[1].name!r}); rename to make the match unique")
        return None, f"no layer named {name!r} in the base model"


def _failing(reason: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        raise SourceError(reason)
    return load


def _float(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)
    if w.dtype.kind != "f":
        raise SourceError(f"a {w.dtype} tensor is not floating-point weights")
    return w if w.dtype in (np.float32, np.float64) else w.astype(np.float32)


def _aligned(base: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """The base tensor in the model's shape (a transposed non-square matrix is turned)."""
    if base.shape == shape:
        return base
    if base.ndim == 2 and len(shape) == 2 and base.shape[::-1] == shape:
        return base.T
    raise SourceError(f"shape {shape} here but {tuple(base.shape)} in the base model "
                      f"({name!r})")


def _shape_problem(ref: LayerRef, base: LayerRef) -> str:
    if base.shape == ref.shape or (len(ref.shape) == 2 and base.shape == ref.shape[::-1]
                                   and ref.shape[0] != ref.shape[1]):
        return ""
    return f"shape {ref.shape} here but {base.shape} in the base model ({base.name!r})"


def _delta_loader(ref: LayerRef, base: LayerRef) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        w = _float(ref.load())
        b = _aligned(_float(base.load()), tuple(w.shape), base.name)
        return np.subtract(w, b, dtype=np.result_type(w.dtype, b.dtype))
    return load


def delta_source(src: Source, base: Source) -> Source:
    """W - W_base for every tensor of ``src`` (model order), matched by name in ``base``.

    Tensors that are not weight matrices (1-D, integer) keep their own loader: the analysis
    skips them from their shape without reading them.
    """
    index = NameIndex(base.refs)
    items = []
    for ref in src:
        if len(ref.shape) < 2 or not ref.is_float:
            items.append((ref.name, ref.shape, ref.dtype, ref.load))
            continue
        match, why = index.find(ref.name)
        if match is not None:
            why = _shape_problem(ref, match) or ("" if match.is_float else
                                                 f"the base layer {match.name!r} is {match.dtype}")
        loader = _failing(why) if why else _delta_loader(ref, match)
        items.append((ref.name, ref.shape, ref.dtype, loader))
    refs = tuple(LayerRef(name=n, index=r.index, shape=tuple(s), dtype=d, source=r.source,
                          loader=fn, layout=r.layout, expert=r.expert, quant=r.quant)
                 for r, (n, s, d, fn) in zip(src.refs, items))
    return Source(refs, src.format, src.files,
                  _join(src.note, f"minus base model: {base.describe()}"))


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


# --- LoRA / PEFT ---------------------------------------------------------------------------------
@dataclass
class _Pair:
    module: str
    adapter: str
    embedding: bool
    a: LayerRef | None = None
    b: LayerRef | None = None


def lora_pairs(src: Source) -> tuple[list[_Pair], list[LayerRef]]:
    """The lora_A / lora_B pairs of a source (in the order of their A) and the other tensors."""
    pairs: dict[tuple[str, str], _Pair] = {}
    others = []
    for ref in src:
        m = _LORA.match(ref.name)
        if not m:
            others.append(ref)
            continue
        key = (m["module"], m["adapter"] or "")
        pair = pairs.setdefault(key, _Pair(m["module"], m["adapter"] or "", bool(m["emb"])))
        setattr(pair, m["ab"].lower(), ref)
    return list(pairs.values()), others


def adapter_config(src: Source) -> dict:
    """adapter_config.json next to the adapter file, or {} (in-memory modules have none)."""
    for f in src.files[:1]:
        if f.startswith("<"):
            continue
        path = Path(f).parent / "adapter_config.json"
        if path.exists():
            try:
                cfg = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise SourceError(f"{path}: not valid JSON ({exc})") from None
            return cfg if isinstance(cfg, dict) else {}
    return {}


def lora_scale(config: dict, module: str, rank: int) -> float:
    """PEFT's scaling of B·A: lora_alpha / r (or / sqrt(r) with use_rslora); 1 with no config."""
    alpha = config.get("lora_alpha")
    if alpha is None or rank <= 0:
        return 1.0
    for key, value in (config.get("alpha_pattern") or {}).items():
        if module == key or module.endswith("." + key) or re.fullmatch(key, module):
            alpha = value
            break
    return float(alpha) / (math.sqrt(rank) if config.get("use_rslora") else rank)


def _oriented(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, A) with B (out, r) and A (r, in), whatever the storage."""
    if a.ndim != 2 or b.ndim != 2:
        raise SourceError(f"LoRA factors of shapes {a.shape} and {b.shape}: only dense (2-D) "
                          "LoRA layers are supported")
    if a.shape[0] > a.shape[1]:  # A stored as (in, r), as WeightWatcher allows
        a = a.T
    if b.shape[1] != a.shape[0]:
        b = b.T
    if b.shape[1] != a.shape[0]:
        raise SourceError(f"lora_B {b.shape} and lora_A {a.shape} do not multiply")
    return b, a


def _product_shape(pair: _Pair) -> tuple[int, int]:
    a, b = pair.a.shape, pair.b.shape
    r = min(a)
    n_in = a[1] if a[0] == r else a[0]
    n_out = b[0] if b[1] == r else b[1]
    return (n_in, n_out) if pair.embedding else (n_out, n_in)


def _factors_loader(pair: _Pair, scale: float):
    def factors() -> tuple[np.ndarray, np.ndarray]:
        b, a = _oriented(_float(pair.a.load()), _float(pair.b.load()))
        return np.asarray(b, dtype=np.float64) * scale, np.asarray(a, dtype=np.float64)
    return factors


def _product_loader(pair: _Pair, factors):
    def load() -> np.ndarray:
        b, a = factors()
        ba = b @ a
        return ba.T if pair.embedding else ba  # lora_embedding stores the update transposed
    return load


def _merged_loader(base: LayerRef, product: Callable[[], np.ndarray]):
    def load() -> np.ndarray:
        ba = product()
        w = _aligned(_float(base.load()), tuple(ba.shape), base.name)
        return w + ba
    return load


def _renamed(name: str, ab: str, new: str) -> str:
    return re.sub(rf"lora_(embedding_)?{ab}(?=\.|$)", new, name, count=1)


def _check(pair: _Pair) -> str:
    if pair.a is None or pair.b is None:
        have, lacks = ("lora_A", "lora_B") if pair.a is not None else ("lora_B", "lora_A")
        return f"{have} of {pair.module!r} without its {lacks}"
    if len(pair.a.shape) != 2 or len(pair.b.shape) != 2:
        return (f"LoRA factors of shapes {pair.a.shape} and {pair.b.shape}: only dense (2-D) "
                "LoRA layers are supported")
    if not (pair.a.is_float and pair.b.is_float):
        return "LoRA factors that are not floating-point"
    r = min(pair.a.shape)
    if r not in pair.b.shape:
        return f"lora_B {pair.b.shape} and lora_A {pair.a.shape} do not multiply"
    return ""


def _product_ref(pair: _Pair, scale: float, index: int, source: str) -> LowRankRef:
    ref = pair.a if pair.a is not None else pair.b
    name = _renamed(ref.name, "A" if pair.a is not None else "B", "lora_BA")
    why = _check(pair)
    if why:
        return LowRankRef(name=name, index=index, shape=ref.shape, dtype=ref.dtype,
                          source=source, loader=_failing(why), _factors=_failing(why))
    factors = _factors_loader(pair, scale)
    return LowRankRef(name=name, index=index, shape=_product_shape(pair), dtype=pair.a.dtype,
                      source=source, loader=_product_loader(pair, factors), _factors=factors,
                      rank=min(pair.a.shape))


def peft_source(src: Source, peft, base: Source | None = None) -> Source:
    """The LoRA updates of an adapter as layers.

    ``peft`` True / 'only' / 'peft_only': one ``<module>.lora_BA`` layer per lora_A/lora_B pair
    (scale·B·A, scale = lora_alpha / r from adapter_config.json, else 1). 'with_base': every layer
    of the base model (``base``, or the non-LoRA tensors of ``src`` itself, as in an in-memory PEFT
    model) followed, for each adapted layer, by its ``lora_BA`` and its merged
    ``lora_W_plus_AB`` = W_base + scale·B·A.
    """
    if peft not in PEFT_MODES:
        raise ValueError(f"peft must be False, True, 'only' or 'with_base'; got {peft!r}")
    pairs, others = lora_pairs(src)
    if not pairs:
        raise SourceError(f"{src.describe()}: no LoRA layers (tensors named '*.lora_A*' and "
                          "'*.lora_B*') in this model")
    config = adapter_config(src)
    scales = [lora_scale(config, p.module, min(p.a.shape) if p.a is not None else 0)
              for p in pairs]
    note = _join(src.note, "LoRA updates" + (
        " scaled by lora_alpha/r from adapter_config.json" if config.get("lora_alpha") else
        " B·A (no adapter_config.json: unscaled)"))
    if peft != "with_base":
        refs = [_product_ref(p, s, (p.a or p.b).index, (p.a or p.b).source)
                for p, s in zip(pairs, scales)]
        return Source(tuple(refs), src.format, src.files, note)
    base_refs = list(base.refs) if base is not None else others
    index = NameIndex(base_refs)
    found = {}
    for i, pair in enumerate(pairs):
        match, _ = index.find(pair.module + ".weight")
        if match is None:
            match, _ = index.find(pair.module + ".base_layer.weight")
        found[i] = match
    if not any(m is not None for m in found.values()):
        where = "the base model" if base is not None else "this model (pass base_model=)"
        raise SourceError(f"peft='with_base': none of the {len(pairs)} LoRA layers has a base "
                          f"weight in {where}; e.g. {pairs[0].module + '.weight'!r}")
    by_base: dict[str, list[int]] = {}
    for i, m in found.items():
        if m is not None:
            by_base.setdefault(m.name, []).append(i)
    items: list = []

    def add_lora(i: int, base_ref: LayerRef | None) -> None:
        pair, scale = pairs[i], scales[i]
        prod = _product_ref(pair, scale, 0, pair.a.source if pair.a else pair.b.source)
        items.append((prod.name, prod.shape, prod.dtype, prod.load, prod))
        b_ref = pair.b if pair.b is not None else pair.a
        name = _renamed(b_ref.name, "B" if pair.b is not None else "A", "lora_W_plus_AB")
        why = _check(pair)
        if base_ref is None:
            why = why or f"no base weight for {pair.module!r} in the base model"
        elif not why and base_ref.shape not in (prod.shape, prod.shape[::-1]):
            why = (f"base weight {base_ref.name!r} has shape {base_ref.shape}, the LoRA update "
                   f"{prod.shape}")
        loader = _failing(why) if why else _merged_loader(base_ref, prod.load)
        items.append((name, prod.shape, prod.dtype, loader, None))  # merged: a plain layer

    for ref in base_refs:
        items.append((ref.name, ref.shape, ref.dtype, ref.load, ref))
        for i in by_base.get(ref.name, []):
            add_lora(i, ref)
    for i, m in found.items():
        if m is None:
            add_lora(i, None)
    refs = []
    for k, (name, shape, dtype, loader, like) in enumerate(items):
        if isinstance(like, LowRankRef):
            refs.append(LowRankRef(name=name, index=k, shape=tuple(shape), dtype=dtype,
                                   source=like.source, loader=loader, _factors=like.load_factors,
                                   rank=like.rank))
        else:
            refs.append(LayerRef(name=name, index=k, shape=tuple(shape), dtype=dtype,
                                 source=like.source if like else src.files[0], loader=loader,
                                 layout=like.layout if like else "torch"))
    return Source(tuple(refs), src.format, src.files,
                  _join(note, f"with base {base.describe()}" if base is not None else ""))


def derive(src: Source, *, base: Source | None = None, peft=False) -> Source:
    """The source an analysis runs on: ``src`` itself, its delta from ``base``, or its LoRA
    layers (see :func:`delta_source` and :func:`peft_source`)."""
    if peft not in PEFT_MODES:
        raise ValueError(f"peft must be False, True, 'only' or 'with_base'; got {peft!r}")
    if peft in (True, "only", "peft_only"):
        if base is not None:
            raise ValueError(f"peft={peft!r} analyses the adapter alone; base_model= is used "
                             "with peft='with_base' (or without peft, for W - W_base)")
        return peft_source(src, peft)
    if peft == "with_base":
        return peft_source(src, peft, base)
    if base is not None:
        return delta_source(src, base)
    return src
