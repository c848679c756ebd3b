"""SVD smoothing and sharpening: keep each weight matrix's top singular components (the power-law
tail, the detX count, a fraction, or the Marchenko-Pastur spikes), or remove the top components
that an element-shuffled copy of W shows as spikes (correlation traps). Truncations are exact and
deterministic: W is projected on (or off) its top singular vectors, the eigenvectors of its float64
Gram matrix (the same eigenvalues ``analyze`` fits); WeightWatcher's ``SVDSmoothing`` uses a
randomized truncated SVD.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ..engine.layer import layer_rows
from ..engine.options import make_options
from ..engine.plan import planned
from ..sources import LayerPlan, LayerRef, open_source
from ..sources.layers import matrices
from ..spectrum import MPFitError, detx, eigenvalues_many, gram_eigh, mp_fit, shuffle_elements
from ..util.errors import one_line
from ..util.rng import layer_rng
from .model import EditedModel, edited_model

SMOOTH_METHODS = ("pl", "detX", "svd", "mp")
_ALIASES = {"alpha_min": "pl", "lambda_min": "pl", "detx": "detX", "rmt": "mp"}


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


