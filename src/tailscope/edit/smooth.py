"""SVD smoothing and sharpening: keep each weight matrix's top singular components (the power-law
tail, the detX count, a fraction, or the Marchenko-Pastur spikes), or remove the top components
that an element-shuffled copy of W shows as spikes (correlation traps). Truncations are exact and
deterministic: W is projected on (or off) its top singular vectors, the eigenvectors of its float64
Gram matrix (the same eigenvalues ``analyze`` fits); WeightWatcher's ``SVDSmoothing`` uses a
randomized truncated SVD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from ..engine.layer import layer_rows
from ..engine.options import make_options
from ..engine.run import Edit, Work, identity, recipe, run
from ..sources import LayerPlan, LayerRef
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


def edit_layer(ref: LayerRef, plan: LayerPlan, count, method: str) -> Edit:
    """One layer truncated to the count ``count(ref, plan, slice_evals, mats) -> (k, reason)``
    gives (k > 0 kept, k < 0 removed, per conv slice ceil(|k| / rf))."""
    row = {**identity(ref, plan), "method": method, "components": plan.M}
    w = np.asarray(ref.load())
    if w.dtype.kind != "f":
        raise ValueError(f"a {w.dtype} tensor is not floating-point weights")
    mats = matrices(ref, w)
    spectra = [_spectrum(m) for m in mats]
    k, reason = count(ref, plan, [sp.evals for sp in spectra], mats)
    k_slice = _per_slice(k, plan.rf)
    k_slice = int(np.clip(k_slice, -plan.M, plan.M))
    if k_slice == 0:
        return Edit(({**row, "kept": plan.M, "removed": 0, "status": "unchanged",
                      "reason": reason or "no component to remove"},))
    new = np.array(w, dtype=np.float64)
    for view, sp in zip(matrices(ref, new), spectra):
        view[...] = _truncated(view, sp, k_slice)
    kept = k_slice if k_slice > 0 else plan.M + k_slice
    row.update(kept=kept, removed=plan.M - kept, status="edited", reason="")
    return Edit((row,), new.astype(w.dtype, copy=False))


def failed_edit(ref: LayerRef, plan: LayerPlan, method: str, exc: BaseException) -> Edit:
    """A layer left as it was, with why."""
    return Edit(({**identity(ref, plan), "method": method, "components": plan.M,
                  "kept": plan.M, "removed": 0, "status": "failed", "reason": one_line(exc)},))


@dataclass(frozen=True)
class Truncation(Work):
    """The work of ``smooth`` and ``sharpen``: each layer truncated to its count."""

    method: str
    percent: float = 0.8
    feature: str = "smooth"
    edits = True

    def layer(self, ref: LayerRef, plan: LayerPlan, o, backend) -> Edit:
        return edit_layer(ref, plan, partial(self.count, o), self.method)

    def failed(self, ref: LayerRef, plan: LayerPlan, exc: BaseException) -> Edit:
        return failed_edit(ref, plan, self.method, exc)

    def count(self, o, ref: LayerRef, plan: LayerPlan, slices, mats) -> tuple[int, str]:
        method = self.method
        if method == "sharpen":
            # one generator per layer, from (seed, layer id), as analyze(randomize=True) seeds
            rng = layer_rng(o.seed, ref.index)
            shuffled = [shuffle_elements(np.asarray(m, dtype=np.float64), rng) for m in mats]
            evals = np.sort(np.concatenate(eigenvalues_many(shuffled)))
            try:
                k = int(mp_fit(evals, plan.N, plan.M).num_spikes)
            except MPFitError as exc:
                return 0, f"no Marchenko-Pastur fit of the shuffled ESD: {exc}"
            return -k, "no correlation trap (no spike in the shuffled ESD)"
        if method == "svd":
            return int(self.percent * plan.M * plan.rf), ""
        if method == "mp":
            evals = np.sort(np.concatenate(slices))
            return _mp_spikes(evals, plan.N, plan.M)
        first = layer_rows(ref, plan, replace(o, pool=True), slices).rows[0]
        row, evals = first.values, first.evals
        if method == "detX":
            num = detx(evals)["detX_num"]
            return (0, "no spectrum") if num != num else (int(num), "detX count is 0")
        if row["status"] != "success":
            return 0, f"no power-law fit: {row['reason']}"
        return int(row["num_pl_spikes"]), ""


# --- smoothing ---------------------------------------------------------------------------------
def _mp_spikes(evals: np.ndarray, N: int, M: int) -> tuple[int, str]:
    try:
        return int(mp_fit(evals, N, M).num_spikes), "no Marchenko-Pastur spike"
    except MPFitError as exc:
        return 0, f"no Marchenko-Pastur fit: {exc}"


def smooth(source, method: str = "pl", percent: float = 0.8, *, layers=None,
           base_model=None, peft=False, trust_pickle: bool = False, progress=None,
           scheduler=None, **options) -> EditedModel:
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
    base_model : path or model, optional
        Smooth the fine-tune W - W_base and write back W_base + smoothed delta (the fine-tuned
        weights, edited; never the delta itself).
    peft : False
        Refused: a LoRA update B·A cannot be written back as its factors (merge it first).
    trust_pickle : bool
        Allow PyTorch pickles that need code execution.
    progress : callable(done, total, name), optional
        Called after each layer, as :func:`tailscope.analyze`'s.
    scheduler : str or distributed.Client, optional
        Run the layers on Dask, as :func:`tailscope.analyze`; ``jobs=`` runs them in threads.
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
    rec = recipe(source, base_model=base_model, peft=peft,
                 trust_pickle=trust_pickle, feature="smooth", derived=("base_model",))
    work = Truncation(method, float(percent))
    return edited_model(run(rec, work, o, scheduler=scheduler, progress=progress))


# --- correlation traps -------------------------------------------------------------------------
def sharpen(source, *, layers=None, seed: int | None = None, base_model=None, peft=False,
            trust_pickle: bool = False, progress=None, scheduler=None, **options) -> EditedModel:
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
    seed : int, optional
        Seed of the shuffles, as :func:`tailscope.analyze`'s: layer i shuffles with
        ``default_rng([seed, layer_id])``; None draws fresh entropy, recorded in
        ``EditedModel.options['seed']`` (WeightWatcher's shuffles are unseeded).
    base_model, peft, trust_pickle, progress, scheduler
        As :func:`smooth`.
    **options
        Layer selection options of :func:`tailscope.analyze` (min_evals, max_evals, max_N).

    Returns
    -------
    EditedModel
    """
    o = make_options(layers=layers, seed=seed, **options)
    rec = recipe(source, base_model=base_model, peft=peft,
                 trust_pickle=trust_pickle, feature="sharpen", derived=("base_model",))
    work = Truncation("sharpen", feature="sharpen")
    return edited_model(run(rec, work, o, scheduler=scheduler, progress=progress, seeded=True))
