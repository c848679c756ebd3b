"""Layer-by-layer distances between two models (raw, euclidean, WeightWatcher's CKA overlap)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..engine.options import make_options
from ..engine.run import Recipe, Work, identity, recipe, run
from ..sources import LayerPlan, LayerRef, SourceError
from ..sources.derived import NameIndex
from ..sources.layers import matrices
from ..util.errors import one_line

# --- distances ---------------------------------------------------------------------------------
DISTANCE_METHODS = ("raw", "euclidean", "cka")


@dataclass(frozen=True, repr=False, eq=False)
class Distances:
    """Per-layer distances between two models (``details``) and their means over the layers
    that have one (``delta_W``, ``delta_b``; NaN when none)."""

    method: str
    details: pd.DataFrame
    delta_W: float  # noqa: N815 - WeightWatcher's name
    delta_b: float

    def __iter__(self):  # unpacks like WeightWatcher's (avg_dW, avg_db, df)
        return iter((self.delta_W, self.delta_b, self.details))

    def __repr__(self) -> str:
        return (f"Distances({self.method}: {len(self.details)} layers, mean delta_W "
                f"{self.delta_W:.6g}, mean delta_b {self.delta_b:.6g})")


def _norm(x: np.ndarray) -> float:
    """||x||_F of a whole tensor, summed by numpy, not by a threaded BLAS dot: the same bits
    whatever the number of BLAS threads (a Dask worker has one)."""
    return math.sqrt(float(np.sum(np.square(x))))


def _tall(m: np.ndarray) -> np.ndarray:
    return m.T if m.shape[0] < m.shape[1] else m


def _cka(w1: np.ndarray, w2: np.ndarray) -> float:
    """WeightWatcher's uncentred overlap ||W1^T W2|| / sqrt(||W1^T W1|| ||W2 W2^T||) (Frobenius),
    the square root of linear CKA between the rows of W1 and W2.

    Each norm is taken through the smaller Gram matrix (||W W^T||_F = ||W^T W||_F, and
    ||W1^T W2||_F^2 = <W1 W1^T, W2 W2^T>), so a 25088 x 4096 layer needs 4096^2 products, not
    25088^2."""
    if w1.shape[0] >= w1.shape[1]:
        num = np.linalg.norm(w1.T @ w2)
    else:
        num = math.sqrt(max(float(np.sum((w1 @ w1.T) * (w2 @ w2.T))), 0.0))
    den = math.sqrt(np.linalg.norm(_small_gram(w1)) * np.linalg.norm(_small_gram(w2)))
    return float(num / den) if den > 0 else math.nan


def _small_gram(w: np.ndarray) -> np.ndarray:
    return w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T


def _layer_distance(method: str, ref: LayerRef, w1: np.ndarray, w2: np.ndarray) -> float:
    if method == "raw":
        return _norm(w1 - w2)
    if w1.ndim == 2:
        pairs = [(w1, w2)]  # dense matrices as stored, as WeightWatcher
    else:  # conv slices, turned tall, as WeightWatcher's Wmats
        pairs = [(_tall(a), _tall(b)) for a, b in zip(matrices(ref, w1), matrices(ref, w2))]
    if method == "euclidean":
        return float(np.mean([np.linalg.norm(a - b) for a, b in pairs]))
    return float(np.mean([_cka(a, b) for a, b in pairs]))


def distances(a, b, method: str = "raw", *, layers=None, pool: bool = True,
              base_model=None, peft=False, trust_pickle: bool = False, progress=None,
              scheduler=None, **options) -> Distances:
    """Layer-by-layer distances between two models with the same architecture.

    Parameters
    ----------
    a, b : path, torch.nn.Module, state dict or array
        The two models, in any formats; layers of ``a`` are matched in ``b`` by name as
        ``analyze(base_model=)`` matches them.
    method : 'raw', 'euclidean' or 'cka'
        'raw': ||T_a - T_b||_F of the whole tensors (and of the biases, ``delta_b``);
        'euclidean': the mean over a layer's matrices (conv slices) of ||W_a - W_b||_F;
        'cka': the mean of WeightWatcher's uncentred overlap
        ||W_a^T W_b||_F / sqrt(||W_a^T W_a||_F ||W_b W_b^T||_F) (1 for identical layers).
    layers : list, optional
        As in :func:`tailscope.analyze` (the layers analyze would fit, by default).
    pool : bool
        False: one row per conv slice (``slice_id``), as ``analyze(pool=False)``: 'euclidean'
        and 'cka' of that slice, 'raw' the whole tensor's distance on each of its slices (as
        WeightWatcher's ``distances(pool=False)``).
    base_model, peft
        Refused: the two models are compared as they are.
    progress, scheduler
        As :func:`tailscope.analyze` (``jobs=`` runs layers in threads).

    Returns
    -------
    Distances
        ``details`` (layer_id, name, layer_type, N, M, rf, delta_W, delta_b, reason) and the
        means ``delta_W``, ``delta_b``; unpacks as WeightWatcher's ``(avg_dW, avg_db, df)``.
        A layer without a counterpart (or with another shape) has NaN and its reason.
    """
    method = (method or "raw").lower()
    if method not in DISTANCE_METHODS:
        raise ValueError(f"method must be 'raw', 'euclidean' or 'cka'; got {method!r}")
    o = make_options(layers=layers, pool=pool, **options)
    rec = recipe(a, base_model=base_model, peft=peft, trust_pickle=trust_pickle,
                 feature="distances", derived=())
    other = Recipe(b, trust_pickle=bool(trust_pickle))
    other = other.resolved() if other.on_disk else other
    this = rec.resolved() if rec.on_disk else rec
    done = run(rec, Distance(method, this, other), o, scheduler=scheduler, progress=progress)
    rows = [row for out in done.outputs for row in out]
    columns = ["layer_id"] + ([] if pool else ["slice_id"]) + [
        "name", "layer_type", "N", "M", "rf", "delta_W", "delta_b", "reason"]
    df = pd.DataFrame(rows, columns=columns)
    df.insert(0, "method", method)

    def mean(col: str) -> float:
        vals = df[col].dropna()
        return float(vals.mean()) if len(vals) else math.nan

    return Distances(method=method, details=df, delta_W=mean("delta_W"),
                     delta_b=mean("delta_b"))


_INDEXES: dict = {}  # per process: a model's recipe (on disk) -> the name index of its tensors


def name_index(rec: Recipe) -> NameIndex:
    """The name index of a model's tensors (cached per process for models on disk)."""
    if not rec.on_disk:
        return NameIndex(rec.open().refs)
    if rec not in _INDEXES:
        if len(_INDEXES) >= 4:
            _INDEXES.pop(next(iter(_INDEXES)))
        _INDEXES[rec] = NameIndex(rec.open().refs)
    return _INDEXES[rec]


@dataclass(frozen=True)
class Distance(Work):
    """The work of ``distances``: one layer of model a against its counterpart in model b."""

    method: str
    this: Recipe
    other: Recipe
    feature = "distances"

    def layer(self, ref: LayerRef, plan: LayerPlan, o, backend) -> list[dict]:
        row = {**identity(ref, plan), "delta_W": math.nan, "delta_b": math.nan, "reason": ""}
        try:
            index = name_index(self.other)
            other, why = index.find(ref.name)
            if other is None:
                raise SourceError(why)
            w1 = np.asarray(ref.load(), dtype=np.float64)
            w2 = np.asarray(other.load(), dtype=np.float64)
            if w2.shape != w1.shape:
                if w1.ndim == 2 and w2.shape[::-1] == w1.shape and w1.shape[0] != w1.shape[1]:
                    w2 = w2.T
                else:
                    raise SourceError(f"shape {w1.shape} here but {w2.shape} in the other "
                                      f"model ({other.name!r})")
            row["delta_W"] = _layer_distance(self.method, ref, w1, w2)
            if self.method == "raw":
                row["delta_b"] = _bias_distance(ref, other, name_index(self.this).exact, index)
            if not o.pool and w1.ndim > 2:
                return _slice_rows(row, self.method, ref, w1, w2)
        except Exception as exc:  # noqa: BLE001
            row["reason"] = one_line(exc)
        return [row if o.pool else {**row, "slice_id": 0}]

    def failed(self, ref: LayerRef, plan: LayerPlan, exc: BaseException) -> list[dict]:
        row = {**identity(ref, plan), "delta_W": math.nan, "delta_b": math.nan,
               "reason": one_line(exc)}
        return [row]


def _slice_rows(row: dict, method: str, ref: LayerRef, w1: np.ndarray, w2: np.ndarray
                ) -> list[dict]:
    """One row per conv slice: the slice's own distance ('euclidean', 'cka'), or the whole
    tensor's ('raw')."""
    out = []
    for sid, (m1, m2) in enumerate(zip(matrices(ref, w1), matrices(ref, w2))):
        a, b = _tall(m1), _tall(m2)
        value = (row["delta_W"] if method == "raw" else
                 float(np.linalg.norm(a - b)) if method == "euclidean" else _cka(a, b))
        out.append({**row, "slice_id": sid, "delta_W": value})
    return out


def _bias_distance(ref: LayerRef, other: LayerRef, by_name: dict, index: NameIndex) -> float:
    """||b_a - b_b|| for the layer's bias ('<module>.bias'), NaN when either model lacks it."""
    if not ref.name.endswith(".weight"):
        return math.nan
    bias_a = by_name.get(ref.module + ".bias")
    bias_b, _ = index.find(other.module + ".bias") if other.name.endswith(".weight") else (None, "")
    if bias_a is None or bias_b is None or bias_a.shape != bias_b.shape:
        return math.nan
    diff = np.asarray(bias_a.load(), np.float64) - np.asarray(bias_b.load(), np.float64)
    return _norm(diff)


