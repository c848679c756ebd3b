"""Model editing from spectra: SVD smoothing, correlation-trap removal, and model distances.

``smooth`` keeps the top singular components of each weight matrix (the power-law tail, the detX
count, a fraction, or the Marchenko-Pastur spikes), ``sharpen`` removes the top singular components
that an element-shuffled copy of W shows as spikes (correlation traps), and ``distances`` compares
two models layer by layer. All three take what :func:`tailscope.analyze` takes, match layers the
same way, and never edit their input: ``smooth`` and ``sharpen`` return an :class:`EditedModel`
with new arrays. Truncations are exact and deterministic: W is projected on (or off) its top singular
vectors, the eigenvectors of its float64 Gram matrix (the same eigenvalues ``analyze`` fits);
WeightWatcher's ``SVDSmoothing`` uses a randomized truncated SVD.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .engine.layer import layer_rows
from .engine.options import make_options
from .engine.plan import planned
from .sources import LayerPlan, LayerRef, SourceError, open_source
from .sources.derived import NameIndex
from .sources.layers import matrices
from .sources.safetensors import write_safetensors
from .spectrum import MPFitError, detx, eigenvalues_many, gram_eigh, mp_fit, shuffle_elements
from .util.errors import one_line
from .util.io import atomic_write
from .util.rng import layer_rng

SMOOTH_METHODS = ("pl", "detX", "svd", "mp")
_ALIASES = {"alpha_min": "pl", "lambda_min": "pl", "detx": "detX", "rmt": "mp"}
# Keras kernel axes -> torch's: Dense (in, out), Conv1D (k, in, out), Conv2D (kh, kw, in, out)
KERAS_TO_TORCH = {2: (1, 0), 3: (2, 1, 0), 4: (3, 2, 0, 1)}
DETAIL_COLUMNS = ["layer_id", "name", "layer_type", "N", "M", "rf", "method", "components",
                  "kept", "removed", "status", "reason"]


@dataclass(frozen=True, repr=False, eq=False)
class EditedModel:
    """New weights from :func:`smooth` or :func:`sharpen`.

    ``weights``: every tensor of the model, name -> numpy array, in model order and in the
    source's layout (edited ones are new arrays in the original dtype; bfloat16 arrives as
    float32; a tensor split for analysis -- gates, q/k/v, heads -- is joined back from its edited
    parts). ``details``: one row per considered layer: how many singular components each matrix
    (each slice of a conv layer) had, kept and removed, or why it was left as it was.
    ``layouts``: name -> the source's layout ('torch' or 'keras'), which ``save`` reads.
    """

    weights: dict[str, np.ndarray]
    details: pd.DataFrame
    source: str
    seconds: float
    layouts: dict[str, str] = field(default_factory=dict)

    def save(self, path) -> Path:
        """Write all tensors to a .safetensors file (atomically: a temporary file, then rename).

        Kernels of a Keras-layout source (``layouts[name] == 'keras'``: Dense (in, out), Conv1D
        (k, in, out), Conv2D (kh, kw, in, out)) are written in torch layout ((out, in),
        (out, in, k), (out, in, kh, kw)), so that the file reads back as the same layers; the
        header's ``__metadata__`` records each transposition ('tailscope.transposed': JSON
        name -> axes, ``np.transpose(saved, argsort(axes))`` gives the Keras array back).
        """
        path = Path(path)
        if path.suffix.lower() != ".safetensors":
            raise ValueError(f"{path}: write a .safetensors file")
        tensors, moved = {}, {}
        for name, w in self.weights.items():
            axes = KERAS_TO_TORCH.get(w.ndim) if self.layouts.get(name) == "keras" else None
            tensors[name] = np.transpose(w, axes) if axes else w
            if axes:
                moved[name] = list(axes)
        meta = {"tailscope.layout": "torch",
                "tailscope.transposed": json.dumps(moved)} if moved else None
        return atomic_write(path, lambda p: write_safetensors(p, tensors, meta))

    def to_state_dict(self) -> dict:
        """The weights as torch tensors (for ``module.load_state_dict``)."""
        from .sources.torch import import_torch

        torch = import_torch()
        return {k: torch.from_numpy(np.array(v)) for k, v in self.weights.items()}

    def __repr__(self) -> str:
        d = self.details
        edited = int((d["status"] == "edited").sum()) if len(d) else 0
        return (f"EditedModel({self.source}: {len(self.weights)} tensors, {edited} of {len(d)} "
                "layers edited)")


# --- the truncation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Spectrum:
    """One matrix's eigen-decomposition of its float64 Gram matrix (the smaller side)."""

    evals: np.ndarray  # ascending: the ESD, as analyze computes it
    vecs: np.ndarray  # columns: right singular vectors (tall W) or left ones (wide W)
    wide: bool


def _spectrum(w: np.ndarray) -> _Spectrum:
    evals, vecs = gram_eigh(w)
    return _Spectrum(np.maximum(evals, 0.0), vecs, w.shape[0] < w.shape[1])


def _truncated(w: np.ndarray, sp: _Spectrum, k: int) -> np.ndarray:
    """Keep the top k singular components (k > 0) or remove the top -k (k < 0): W projected on
    (or off) its top singular vectors, P = V_k V_k^T, which is the truncated SVD exactly."""
    top = sp.vecs[:, sp.vecs.shape[1] - abs(k):]
    w = np.asarray(w, dtype=np.float64)
    part = (top @ (top.T @ w)) if sp.wide else ((w @ top) @ top.T)
    return part if k > 0 else w - part


def _per_slice(k: int, rf: int) -> int:
    """A layer's count spread over its rf slices: ceil(|k| / rf) each, as WeightWatcher keeps."""
    return int(math.copysign(math.ceil(abs(k) / rf), k)) if k else 0


def _edit_layer(ref: LayerRef, plan: LayerPlan, w: np.ndarray, count: Callable, method: str
                ) -> tuple[np.ndarray | None, dict]:
    """(new tensor or None, details row); ``count(slice_evals, mats) -> (k, reason)``."""
    row = {"layer_id": ref.index, "name": ref.name, "layer_type": plan.layer_type, "N": plan.N,
           "M": plan.M, "rf": plan.rf, "method": method, "components": plan.M}
    mats = matrices(ref, w)
    spectra = [_spectrum(m) for m in mats]
    k, reason = count([sp.evals for sp in spectra], mats)
    k_slice = _per_slice(k, plan.rf)
    k_slice = int(np.clip(k_slice, -plan.M, plan.M))
    if k_slice == 0:
        return None, {**row, "kept": plan.M, "removed": 0, "status": "unchanged",
                      "reason": reason or "no component to remove"}
    new = np.array(w, dtype=np.float64)
    for view, sp in zip(matrices(ref, new), spectra):
        view[...] = _truncated(view, sp, k_slice)
    kept = k_slice if k_slice > 0 else plan.M + k_slice
    row.update(kept=kept, removed=plan.M - kept, status="edited", reason="")
    return new.astype(w.dtype, copy=False), row


def _edit(source, count_for: Callable[[LayerRef, LayerPlan], Callable], method: str,
          trust_pickle: bool, options: dict, progress=None) -> EditedModel:
    t0 = time.perf_counter()
    o = make_options(**options)
    src = open_source(source, trust_pickle=trust_pickle)
    weights: dict[str, np.ndarray] = {}
    rows = []
    todo = list(planned(src, o))
    total = sum(1 for *_, skip in todo if not skip)
    refs = [ref for ref, *_ in todo]
    for ref, plan, skip in todo:
        w = np.asarray(ref.load())
        weights[ref.name] = w
        if skip:
            continue
        try:
            if w.dtype.kind != "f":
                raise ValueError(f"a {w.dtype} tensor is not floating-point weights")
            new, row = _edit_layer(ref, plan, w, count_for(ref, plan), method)
        except Exception as exc:  # noqa: BLE001 - one bad layer is left as it was, with why
            new, row = None, {"layer_id": ref.index, "name": ref.name,
                              "layer_type": plan.layer_type, "N": plan.N, "M": plan.M,
                              "rf": plan.rf, "method": method, "components": plan.M,
                              "kept": plan.M, "removed": 0, "status": "failed",
                              "reason": one_line(exc)}
        if new is not None:
            weights[ref.name] = new
        rows.append(row)
        if progress is not None:
            progress(len(rows), total, ref.name)
    return edited_model(weights, refs, rows, src, t0)


def edited_model(weights: dict[str, np.ndarray], refs: list[LayerRef], rows: list[dict], src,
                 t0: float) -> EditedModel:
    """The result of a layer-by-layer edit: the source's own tensors (split parts rejoined),
    one detail row per layer, and each tensor's layout (so Keras kernels are saved right)."""
    return EditedModel(weights=rejoin(weights, refs),
                       details=pd.DataFrame(rows, columns=DETAIL_COLUMNS),
                       source=src.describe(), seconds=time.perf_counter() - t0,
                       layouts={r.name: r.layout for r in refs if not r.parent})


def rejoin(weights: dict[str, np.ndarray], refs: list[LayerRef]) -> dict[str, np.ndarray]:
    """The model's own tensors from ``weights`` that also hold split parts (gates, q/k/v,
    heads): each split tensor becomes its parts, edited or not, joined back along the axis they
    were cut from, and the parts go (the edited model has the source's tensors, no extra keys).
    Deepest splits first (heads of a q part, then q/k/v of ``in_proj_weight``)."""
    out = dict(weights)
    for ref in reversed(refs):
        if not ref.split_into or not all(p in out for p in ref.split_into):
            continue
        parts = [out.pop(p) for p in ref.split_into]
        axis = next((i for i, (a, b) in enumerate(zip(ref.shape, parts[0].shape)) if a != b), 0)
        joined = np.concatenate(parts, axis=axis)
        if joined.shape != tuple(ref.shape):
            raise ValueError(f"{ref.name}: its parts join to {joined.shape}, not {ref.shape}")
        out[ref.name] = joined.astype(out[ref.name].dtype, copy=False)
    return {r.name: out[r.name] for r in refs if r.name in out and not r.parent}


# --- smoothing ---------------------------------------------------------------------------------
def _mp_spikes(evals: np.ndarray, N: int, M: int) -> tuple[int, str]:
    try:
        return int(mp_fit(evals, N, M).num_spikes), "no Marchenko-Pastur spike"
    except MPFitError as exc:
        return 0, f"no Marchenko-Pastur fit: {exc}"


def smooth(source, method: str = "pl", percent: float = 0.8, layers=None, *,
           trust_pickle: bool = False, progress=None, **options) -> EditedModel:
    """SVD smoothing: keep each weight matrix's top singular components, drop the rest.

    Parameters
    ----------
    source : path, torch.nn.Module, state dict or array
        Anything :func:`tailscope.analyze` reads; it is never modified.
    method : 'pl', 'detX', 'svd' or 'mp'
        How many components k a layer keeps: 'pl' the power-law tail (``num_pl_spikes`` of the
        fit, WeightWatcher's 'alpha_min'); 'detX' WeightWatcher's detX count; 'svd'
        ``int(percent * M * rf)`` (a negative ``percent`` removes that many top components
        instead); 'mp' the Marchenko-Pastur spikes. WeightWatcher's names 'alpha_min' and
        'rmt' are accepted.
    percent : float
        For ``method='svd'``, in [-1, 1].
    layers : list, optional
        As in :func:`tailscope.analyze`.
    trust_pickle : bool
        Allow PyTorch pickles that need code execution.
    progress : callable(done, total, name), optional
        Called after each layer, as :func:`tailscope.analyze`'s.
    **options
        The fit's options of :func:`tailscope.analyze` (min_evals, max_evals, max_N,
        fix_fingers, xmax, ...), used to choose layers and to fit for ``method='pl'``.

    Returns
    -------
    EditedModel
        ``.weights`` (name -> array), ``.details`` (per layer: components, kept, removed,
        status, reason), ``.save(path)``, ``.to_state_dict()``.

    Notes
    -----
    A conv layer's k is spread over its rf = kh * kw slices: each keeps ceil(k / rf) components,
    as in WeightWatcher. A layer whose count is 0 (or whose fit failed) is left as it was, with
    the reason in ``details``. Biases and other tensors are copied unchanged.
    """
    method = _ALIASES.get(method, method)
    if method not in SMOOTH_METHODS:
        raise ValueError(f"method must be one of {', '.join(SMOOTH_METHODS)}; got {method!r}")
    if method == "svd" and not (isinstance(percent, (int, float)) and -1 <= percent <= 1):
        raise ValueError(f"percent must be a number in [-1, 1]; got {percent!r}")
    o = make_options(layers=layers, **options)
    pooled = replace(o, pool=True)

    def count_for(ref: LayerRef, plan: LayerPlan):
        def count(slices, mats) -> tuple[int, str]:
            if method == "svd":
                return int(percent * plan.M * plan.rf), ""
            if method == "mp":
                evals = np.sort(np.concatenate(slices))
                return _mp_spikes(evals, plan.N, plan.M)
            first = layer_rows(ref, plan, pooled, slices).rows[0]
            row, evals = first.values, first.evals
            if method == "detX":
                num = detx(evals)["detX_num"]
                return (0, "no spectrum") if num != num else (int(num), "detX count is 0")
            if row["status"] != "success":
                return 0, f"no power-law fit: {row['reason']}"
            return int(row["num_pl_spikes"]), ""
        return count

    return _edit(source, count_for, method, trust_pickle, {**options, "layers": layers}, progress)


# --- correlation traps -------------------------------------------------------------------------
def sharpen(source, layers=None, *, seed: int = 0, trust_pickle: bool = False, progress=None,
            **options) -> EditedModel:
    """Remove correlation traps: the top singular components that survive shuffling.

    For each layer, the elements of each of its matrices are shuffled (seeded), the
    Marchenko-Pastur fit of the shuffled ESD counts its spikes k (a random matrix has none, so each
    is a trap: a few large entries that order cannot explain), and the top k singular components of
    the original W are removed (per conv slice ceil(k / rf)), as WeightWatcher's ``SVDSharpness``.

    Parameters
    ----------
    source : path, torch.nn.Module, state dict or array
        Anything :func:`tailscope.analyze` reads; it is never modified.
    layers : list, optional
        As in :func:`tailscope.analyze`.
    seed : int
        Seed of the shuffles (WeightWatcher's are unseeded).
    progress : callable(done, total, name), optional
        Called after each layer, as :func:`tailscope.analyze`'s.
    **options
        Layer selection options of :func:`tailscope.analyze` (min_evals, max_evals, max_N).

    Returns
    -------
    EditedModel
    """
    def count_for(ref: LayerRef, plan: LayerPlan):
        def count(slices, mats) -> tuple[int, str]:
            # one generator per layer, from (seed, layer id), as analyze(randomize=True) seeds
            rng = layer_rng(seed, ref.index)
            shuffled = [shuffle_elements(np.asarray(m, dtype=np.float64), rng) for m in mats]
            evals = np.sort(np.concatenate(eigenvalues_many(shuffled)))
            try:
                k = int(mp_fit(evals, plan.N, plan.M).num_spikes)
            except MPFitError as exc:
                return 0, f"no Marchenko-Pastur fit of the shuffled ESD: {exc}"
            return -k, "no correlation trap (no spike in the shuffled ESD)"
        return count

    return _edit(source, count_for, "sharpen", trust_pickle, {**options, "layers": layers},
                 progress)


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
        return float(np.linalg.norm((w1 - w2).ravel()))
    if w1.ndim == 2:
        pairs = [(w1, w2)]  # dense matrices as stored, as WeightWatcher
    else:  # conv slices, turned tall, as WeightWatcher's Wmats
        pairs = [(_tall(a), _tall(b)) for a, b in zip(matrices(ref, w1), matrices(ref, w2))]
    if method == "euclidean":
        return float(np.mean([np.linalg.norm(a - b) for a, b in pairs]))
    return float(np.mean([_cka(a, b) for a, b in pairs]))


def distances(a, b, method: str = "raw", layers=None, *, pool: bool = True,
              trust_pickle: bool = False, **options) -> Distances:
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
    src_a = open_source(a, trust_pickle=trust_pickle)
    src_b = open_source(b, trust_pickle=trust_pickle)
    index = NameIndex(src_b.refs)
    by_name = {r.name: r for r in src_a}
    rows = []
    for ref, plan, skip in planned(src_a, o):
        if skip:
            continue
        row = {"layer_id": ref.index, "name": ref.name, "layer_type": plan.layer_type,
               "N": plan.N, "M": plan.M, "rf": plan.rf, "delta_W": math.nan,
               "delta_b": math.nan, "reason": ""}
        try:
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
            row["delta_W"] = _layer_distance(method, ref, w1, w2)
            if method == "raw":
                row["delta_b"] = _bias_distance(ref, other, by_name, index)
            if not pool and w1.ndim > 2:
                rows += _slice_rows(row, method, ref, w1, w2)
                continue
        except Exception as exc:  # noqa: BLE001
            row["reason"] = one_line(exc)
        rows.append(row if pool else {**row, "slice_id": 0})
    columns = ["layer_id"] + ([] if pool else ["slice_id"]) + [
        "name", "layer_type", "N", "M", "rf", "delta_W", "delta_b", "reason"]
    df = pd.DataFrame(rows, columns=columns)
    df.insert(0, "method", method)

    def mean(col: str) -> float:
        vals = df[col].dropna()
        return float(vals.mean()) if len(vals) else math.nan

    return Distances(method=method, details=df, delta_W=mean("delta_W"),
                     delta_b=mean("delta_b"))


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
    return float(np.linalg.norm(diff))


__all__ = ["Distances", "EditedModel", "distances", "sharpen", "smooth"]
