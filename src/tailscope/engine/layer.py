"""One layer: its matrices -> eigenvalues -> the power-law fit and every asked-for diagnostic ->
a :class:`LayerResult`.

A layer gives one row (its slices' ESDs pooled) or one row per conv slice (``pool=False``). Each
row's columns are the layer's identity, the spectrum's norms, the fit, then the diagnostics the
options ask for, stage by stage, in the order :mod:`tailscope.engine.diagnostics` declares them;
each diagnostic's failure is NaN and a reason in its own columns, never a number, and never
stops the layer. A layer that fails before its ESD is one failed row with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..fit import fit_power_law, fit_truncated_power_law
from ..fit.fingers import ww_xmin_peak_range
from ..fit.tail import split_xmax
from ..sources import LayerPlan, LayerRef
from ..sources.derived import LowRankRef
from ..sources.layers import CONV_TYPES, matrices
from ..spectrum import alpha_metrics, eigenvalues_many, lowrank_eigenvalues, norm_metrics, spectrum_snr
from ..util.errors import one_line
from ..util.rng import layer_rng
from .columns import verdict
from .diagnostics import Layer, Row, asked, draws, needs_matrices
from .options import FITS
from .run import Work, identity

EVALS_THRESH = 1e-5  # eigenvalues at or below are dropped before the fit (WeightWatcher's)
BATCH_BYTES = 512 * 1024 * 1024  # Gram matrices held at once on the device when batching
HOST_BATCH_BYTES = 64 * 1024 * 1024  # expert matrices held at once when batched on numpy


@dataclass(frozen=True, eq=False)
class RowResult:
    """One row of ``Analysis.details`` and what it was computed from.

    ``values``: the row's columns. ``evals``: its ESD, as fitted (scaled; None when the layer
    failed before it). ``fit``: the :class:`~tailscope.fit.PowerLawFit` (a
    ``TruncatedPowerLawFit`` with ``fit='TPL'``), ``mp``: the
    :class:`~tailscope.spectrum.mp.MPFit`, ``randomized``: the
    :class:`~tailscope.spectrum.randomize.RandomizedESD` — each None when not computed.
    """

    values: dict
    evals: np.ndarray | None = None
    fit: Any = None
    mp: Any = None
    randomized: Any = None

    @property
    def key(self) -> tuple[int, int | None]:
        """(layer_id, slice_id), slice_id None for a pooled row."""
        sid = self.values.get("slice_id")
        return int(self.values["layer_id"]), None if sid is None else int(sid)


@dataclass(frozen=True, eq=False)
class LayerResult:
    """The rows of one layer (one pooled row, or one per slice), picklable."""

    rows: tuple[RowResult, ...]

    @classmethod
    def failed(cls, ref: LayerRef, plan: LayerPlan, exc: BaseException) -> LayerResult:
        """One failed row saying why (the layer could not be read or decomposed)."""
        return cls((RowResult({**base_row(ref, plan), "status": "failed",
                               "reason": one_line(exc)}),))


def base_row(ref: LayerRef, plan: LayerPlan) -> dict:
    """The columns every row of a layer has, whatever happens to it."""
    ident = identity(ref, plan)
    return {"layer_id": ident["layer_id"], "name": ident["name"], "module": ref.module,
            "layer_type": ident["layer_type"], "expert": ref.expert,
            **{k: ident[k] for k in ("N", "M")},
            "Q": plan.N / plan.M if plan.M else math.nan, "rf": ident["rf"], "dtype": ref.dtype,
            "quant": ref.quant, "warning": "", "reason": ""}


def layer_scale(plan: LayerPlan, o) -> float:
    """The factor applied to a layer's eigenvalues (conv2d_norm, normalize).

    ``conv2d_norm`` is WeightWatcher 0.7.7's conv2d convention (each slice's W times
    sqrt(rf / 2) per slice, sqrt(1 / 2) pooled) applied to every convolution kernel, whatever
    its rank or layout (``CONV_TYPES``: conv1d, conv2d, conv3d): the same weights as a Keras
    Conv1D, a PyTorch Conv1d or Conv2d (k x 1) or an ONNX Conv give the same eigenvalues.
    WeightWatcher itself defines it for conv2d only (its conv1d is one 3-D array, not slices).
    """
    scale = 1.0
    if o.conv2d_norm and plan.layer_type in CONV_TYPES:
        scale = 0.5 if o.pool else plan.rf / 2.0
    if o.normalize:
        scale /= plan.N
    return scale


def load_matrices(ref: LayerRef) -> list[np.ndarray]:
    """The layer's 2-D matrices (conv slices, views where possible)."""
    w = ref.load()
    if w.dtype.kind not in "f":
        raise ValueError(f"a {w.dtype} tensor is not floating-point weights")
    return matrices(ref, w)


# --- the fit and its tests ------------------------------------------------------------------------
def fit_cut(evals: np.ndarray) -> float:
    """The eigenvalues a fit keeps lie above this: WeightWatcher's 1e-5, or the round-off level
    lambda_max * L * eps where that is higher (a rank-1 W at |w| = 1e12 has round-off
    eigenvalues far above 1e-5: they are not a tail, and alpha must not depend on W's scale)."""
    if not evals.size:
        return EVALS_THRESH
    return max(EVALS_THRESH, float(np.max(evals)) * evals.size * np.finfo(np.float64).eps)


def fit_row(evals: np.ndarray, o, key: tuple = ()) -> tuple[dict, Any]:
    """The power-law (or truncated power-law) columns of one ESD and the fit (NaN columns and a
    reason when no fit exists), with the asked-for comparisons and bootstrap p-value."""
    cut = fit_cut(evals)
    try:
        data, xmax, dropped = split_xmax(evals[evals > cut], o.xmax, "eigenvalues")
    except ValueError as exc:  # -k drops more than half: no fit, and the reason
        return {"status": "failed", "reason": str(exc)}, None
    if data.size < 2:
        above = f"{cut:g}" if cut == EVALS_THRESH else f"the round-off level {cut:.3g}"
        return {"status": "failed",
                "reason": f"{data.size} eigenvalue(s) above {above}: nothing to fit"}, None
    kind = FITS[o.fit]
    max_fingers = o.max_fingers
    if o.ww_fingers and max_fingers < (evals.size - dropped) / 2:
        max_fingers = 10  # WeightWatcher's replacement (its test is inverted)
    if kind == "PL":
        fit = fit_power_law(data, xmax=xmax, fix_fingers=o.fix_fingers or None,
                            xmin_max=o.xmin_max, max_fingers=max_fingers,
                            finger_thresh=o.finger_thresh, small_n=bool(o.small_n),
                            ww_fingers=bool(o.ww_fingers))
    else:
        peak = kind == "E_TPL" or o.fix_fingers == "xmin_peak"
        if peak and o.ww_fingers:
            fit = fit_truncated_power_law(data, xmax=xmax,
                                          xmin=ww_xmin_peak_range(np.sort(data), o.xmin_max))
        else:
            fit = fit_truncated_power_law(data, xmax=xmax,
                                          fix_fingers="xmin_peak" if peak else None,
                                          xmin_max=o.xmin_max)
    if not fit.ok:
        return {"status": "failed", "reason": f"{'power-law' if kind == 'PL' else kind} fit: "
                                              f"{fit.reason}"}, None
    row = {"alpha": fit.alpha, "D": fit.D, "xmin": fit.xmin,
           "xmax": fit.xmax if fit.xmax is not None else float(fit.data[-1]),
           "sigma": fit.sigma, "num_pl_spikes": int(np.count_nonzero(evals >= fit.xmin)),
           "status": "success", "reason": ""}
    if kind != "PL":
        row["Lambda"] = fit.Lambda
    if o.fix_fingers == "clip_xmax":
        row.update(num_fingers=fit.num_fingers, raw_alpha=fit.raw_alpha)
    row["warning"] = verdict(fit.alpha)
    row.update(alpha_metrics(evals, fit.alpha))
    if asked(o, "tests"):
        pl = fit if kind == "PL" else fit_power_law(data, xmax=xmax)
        row.update(tests_row(pl, o, key))
    return row, fit


def tests_row(pl, o, key: tuple) -> dict:
    """The columns of the tests of the power law ``pl`` the options ask for (the ``tests``
    stage of ``DIAGNOSTICS``: comparisons, bootstrap p-value, seeded per layer)."""
    row: dict = {}
    if not pl.ok:
        return row
    r = Row(row, None, o, key, fit=pl)
    for d in asked(o, "tests"):
        d.compute(r)
    return row


# --- random-matrix diagnostics --------------------------------------------------------------------
def ww_oriented(ref: LayerRef, plan: LayerPlan, mats):
    """The matrices as WeightWatcher holds a PyTorch model's (its shuffles permute them in
    row-major order): conv slices made tall, other layers as PyTorch stores them (out x in).
    A Keras kernel (in x out) is first transposed to PyTorch's layout, so the same weights give
    the same shuffles, hence the same randomized columns, whatever the file format.
    (WeightWatcher holds a Keras conv slice wide instead: the transpose of this; a shuffle of
    either has the same distribution, and WeightWatcher's own shuffles are unseeded.)"""
    if mats is None:
        return mats
    if ref.layout == "keras":
        mats = [w.T for w in mats]
    if plan.layer_type not in CONV_TYPES:
        return mats
    return [w.T if w.shape[0] < w.shape[1] else w for w in mats]


def weight_var(mats: list[np.ndarray] | None, slice_id: int | None) -> float:
    """The population variance of the weight entries (AlphaQ's Var(W)): of every matrix of the
    layer (``slice_id`` None: the whole tensor), or of one conv slice; NaN without the matrices
    (a LoRA update analysed from its factors). Two passes in float64 over blocks of rows, so a
    large float16 tensor never gets a float64 copy."""
    if not mats:
        return math.nan
    chosen = mats if slice_id is None else [mats[slice_id]]
    count = sum(m.size for m in chosen)
    if count == 0:
        return math.nan

    def blocks():
        for m in chosen:
            m = np.asarray(m)
            step = max(1, (1 << 20) // max(1, m.shape[-1]))
            for i in range(0, m.shape[0], step):
                yield m[i:i + step].astype(np.float64)

    mean = sum(float(b.sum()) for b in blocks()) / count
    return sum(float(np.square(b - mean).sum()) for b in blocks()) / count


def layer_diagnostics(result: LayerResult, mats, plan: LayerPlan, o) -> None:
    """The ``layer`` stage of ``DIAGNOSTICS`` the options ask for (eigenvectors), on a layer's
    rows in place."""
    for d in asked(o, "layer"):
        d.compute(Layer(list(result.rows), mats, plan, o, layer_scale(plan, o)))


# --- a layer's rows -------------------------------------------------------------------------------
def layer_rows(ref: LayerRef, plan: LayerPlan, o, slices: list[np.ndarray],
               mats: list[np.ndarray] | None = None, backend=None) -> LayerResult:
    """A layer's rows (one pooled, or one per slice) from its unscaled eigenvalues (``slices``:
    one array per matrix), with the diagnostics that need only eigenvalues, plus those that need
    the matrices (``mats``) when given."""
    base = base_row(ref, plan)
    scale = layer_scale(plan, o)
    slices = [s * scale for s in slices]
    groups = [(None, slices)] if o.pool else [(i, [s]) for i, s in enumerate(slices)]
    # one generator per layer, from (seed, layer id): the same shuffles whatever the job order
    rng = layer_rng(o.seed, ref.index) if draws(o) else None
    oriented = ww_oriented(ref, plan, mats)
    spectrum, every = asked(o, "spectrum"), asked(o, "row")
    rows = []
    for slice_id, group in groups:
        evals = np.sort(np.concatenate(group)) if len(group) > 1 else group[0]
        values = dict(base, slice_id=slice_id)
        fit = None
        try:
            values.update(norm_metrics(evals, group, plan.N, o.tolerance))
            values["snr"] = spectrum_snr(np.sqrt(np.clip(evals / scale, 0, None)), plan.N,
                                         plan.M)
            values["weight_var"] = weight_var(mats, slice_id)
            if not values["lambda_max"] > 0:
                values.update(status="failed", reason="an all-zero matrix: no spectrum to fit")
            else:
                more, fit = fit_row(evals, o, (ref.index, slice_id))
                values.update(more)
        except Exception as exc:  # noqa: BLE001 - any failure is this row's reason
            values.update(status="failed", reason=one_line(exc))
        r = Row(values, evals, o, (ref.index, slice_id), fit=fit, ref=ref, plan=plan, mats=mats,
                oriented=oriented, scale=scale, rng=rng, backend=backend)
        for d in (spectrum if values.get("lambda_max", 0) > 0 else ()) + every:
            d.compute(r)
        rows.append(RowResult(values, evals, fit, r.mp, r.randomized))
    return LayerResult(tuple(rows))


def analyze_layer(ref: LayerRef, plan: LayerPlan, o, backend) -> LayerResult:
    """Read one layer, compute its eigenvalues on ``backend`` and analyse them."""
    try:
        if isinstance(ref, LowRankRef):  # a LoRA update: its r eigenvalues from the factors
            slices = [lowrank_eigenvalues(*ref.load_factors())]
            mats = [ref.load()] if needs_matrices(o) else None  # the product
        else:
            mats = load_matrices(ref)
            slices = eigenvalues_many(mats, backend, o.method)
    except Exception as exc:  # noqa: BLE001 - any failure becomes this layer's reason
        return LayerResult.failed(ref, plan, exc)
    result = layer_rows(ref, plan, o, slices, mats, backend)
    layer_diagnostics(result, mats, plan, o)
    return result


def analyze_batch(batch: list[tuple[LayerRef, LayerPlan]], o, backend) -> list[LayerResult]:
    """Consecutive dense layers of one shape: one batched eigensolver call on the device."""
    if len(batch) == 1:
        return [analyze_layer(*batch[0], o, backend)]
    loaded, results = [], [None] * len(batch)
    for i, (ref, plan) in enumerate(batch):
        try:
            loaded.append((i, load_matrices(ref)))
        except Exception as exc:  # noqa: BLE001
            results[i] = LayerResult.failed(ref, plan, exc)
    try:
        evs = eigenvalues_many([m for _, mats in loaded for m in mats], backend, o.method)
    except Exception:  # noqa: BLE001 - e.g. NaN in one layer: redo them one by one
        for i, _ in loaded:
            results[i] = analyze_layer(*batch[i], o, backend)
        return results
    for (i, mats), ev in zip(loaded, evs):
        results[i] = layer_rows(*batch[i], o, [ev], mats, backend)
        layer_diagnostics(results[i], mats, batch[i][1], o)
    return results


def batches(todo: list[tuple[LayerRef, LayerPlan]], backend) -> list[list]:
    """Group consecutive 2-D layers of the same shape: any on a torch device; on numpy, the
    experts of a Mixture-of-Experts layer (one stacked ``eigvalsh`` call for hundreds of small
    same-shape matrices, each matrix's eigenvalues those of its own solve)."""
    torch_device = backend.name.startswith("torch")
    groups: list[list] = []
    for ref, plan in todo:
        last = groups[-1] if groups else None
        if not torch_device and (ref.expert is None or (last and last[0][0].expert is None)):
            groups.append([(ref, plan)])
            continue
        if (last and plan.rf == 1 and last[0][1].rf == 1 and not isinstance(ref, LowRankRef)
                and not isinstance(last[0][0], LowRankRef) and last[0][0].shape == ref.shape
                and (len(last) + 1) * plan.M * plan.M * 8 <= BATCH_BYTES
                and (torch_device or (len(last) + 1) * plan.N * plan.M * 8 <= HOST_BATCH_BYTES)):
            last.append((ref, plan))
        else:
            groups.append([(ref, plan)])
    return groups


class Analyze(Work):
    """``analyze``'s work for the runner: one layer -> its :class:`LayerResult`; same-shape dense
    layers batched on a torch device."""

    feature = "analyze"

    def layer(self, ref: LayerRef, plan: LayerPlan, o, backend) -> LayerResult:
        return analyze_layer(ref, plan, o, backend)

    def failed(self, ref: LayerRef, plan: LayerPlan, exc: BaseException) -> LayerResult:
        return LayerResult.failed(ref, plan, exc)

    def groups(self, todo: list, o, backend) -> list[list]:
        return [[t] for t in todo] if o.vectors else batches(todo, backend)

    def batch(self, group: list, o, backend) -> list[LayerResult]:
        return analyze_batch(group, o, backend)
