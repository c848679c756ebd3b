"""analyze(): a model -> one row per weight matrix (WeightWatcher's columns) and a summary.

Flow: open_source -> plan each tensor from its shape (type, N, M, rf) -> filter (layers, size
limits) -> per layer, in model order: load, matrices, eigenvalues, power-law fit of the eigenvalues
above 1e-5, metrics -> Analysis. A layer that fails is a row with status 'failed' and a reason;
the run goes on.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .util.io import atomic_write
from .fit import fit_power_law, fit_truncated_power_law
from .sources import LayerPlan, LayerRef, Source, open_source, plan_layer
from .sources.derived import LowRankRef, derive
from .sources.layers import matrices
from .sources.split import expand
from .spectrum import (
    MPFitError,
    alpha_metrics,
    detx,
    eigenvalues_many,
    get_backend,
    lowrank_eigenvalues,
    mp_fit,
    norm_metrics,
    randomized_esd,
)
from .spectrum.vectors import SUMMARY_COLUMNS as VECTOR_COLUMNS
from .spectrum.vectors import eigenvectors, vector_summary

EVALS_THRESH = 1e-5  # eigenvalues at or below are dropped before the fit (WeightWatcher's)
OVER_TRAINED, UNDER_TRAINED = 2.0, 6.0
LAYER_TYPES = ("dense", "embedding", "conv1d", "conv2d", "recurrent")
SUMMARY_METRICS = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm",
                   "stable_rank", "D")
COLUMNS = ["layer_id", "name", "module", "layer_type", "slice_id", "N", "M", "Q", "rf",
           "num_evals", "alpha", "alpha_weighted", "log_alpha_norm", "D", "xmin", "xmax", "sigma",
           "num_pl_spikes", "lambda_max", "spectral_norm", "norm", "log_norm",
           "log_spectral_norm", "stable_rank", "matrix_rank", "rank_loss", "weak_rank_loss",
           "entropy", "sv_max", "sv_min", "num_fingers", "raw_alpha", "status", "warning",
           "reason", "dtype"]
# the random-matrix diagnostics' columns (WeightWatcher's names), present when asked for
MP_COLUMNS = ["num_spikes", "sigma_mp", "mp_softrank", "W_scale", "bulk_max", "bulk_min",
              "mp_reason"]
RAND_COLUMNS = ["max_rand_eval", "rand_num_spikes", "rand_sigma_mp", "rand_mp_softrank",
                "rand_W_scale", "rand_bulk_max", "rand_bulk_min", "rand_distance", "ww_softrank",
                "ww_maxdist", "rand_reason"]
DETX_COLUMNS = ["detX_num", "detX_val", "detX_val_unrescaled", "num_ERG_spikes", "ERG_gap"]
# optional diagnostics: inserted before "status" when asked for (see _optional_columns)
FITS = {"PL": "PL", "power_law": "PL", "TPL": "TPL", "truncated_power_law": "TPL",
        "E_TPL": "E_TPL"}
COMPARE_DEFAULT = ("truncated_power_law", "lognormal", "exponential")
COMPARE_TAGS = {"truncated_power_law": "TPL", "TPL": "TPL", "lognormal": "lognormal",
                "exponential": "exponential", "stretched_exponential": "stretched_exponential",
                "lognormal_positive": "lognormal_positive"}


@dataclass(frozen=True)
class Options:
    layers: Any = None
    min_evals: int = 10
    max_evals: int | None = 15000
    max_N: int | None = 50000
    conv2d_norm: bool = True
    pool: bool = True
    normalize: bool = False
    fit: str = "PL"
    xmax: Any = None
    fix_fingers: str | None = None
    xmin_max: float | None = None
    max_fingers: int = 10
    finger_thresh: float = 1.0
    tolerance: float = 1e-6
    method: str = "gram"
    device: str = "auto"
    jobs: int = 1
    compare: Any = False
    gof: int = 0
    seed: int | None = None
    vectors: bool = False
    mp_fit: bool = False
    randomize: bool = False
    detX: bool = False

    def compare_names(self) -> tuple[str, ...]:
        """The alternatives named by ``compare`` (True: TPL, lognormal, exponential)."""
        c = self.compare
        if c is None or c is False:
            return ()
        if c is True:
            return COMPARE_DEFAULT
        names = (c,) if isinstance(c, str) else tuple(c) if isinstance(c, (list, tuple)) else None
        if names is None or not names or any(n not in COMPARE_TAGS for n in names):
            raise ValueError(f"compare must be True or names among {sorted(COMPARE_TAGS)}; "
                             f"got {c!r}")
        return tuple("truncated_power_law" if n == "TPL" else n for n in names)
    split: bool = True
    heads: int | None = None

    def check(self) -> None:
        if self.seed is not None and not (isinstance(self.seed, (int, np.integer))
                                          and not isinstance(self.seed, bool) and self.seed >= 0):
            raise ValueError(f"seed must be None or an int >= 0; got {self.seed!r}")
        if self.fit not in FITS:
            raise ValueError(f"fit must be 'PL', 'TPL' or 'E_TPL'; got {self.fit!r}")
        if self.fix_fingers not in (None, False, "clip_xmax", "xmin_peak"):
            raise ValueError(f"fix_fingers must be None, 'clip_xmax' or 'xmin_peak'; "
                             f"got {self.fix_fingers!r}")
        if FITS[self.fit] != "PL" and self.fix_fingers == "clip_xmax":
            raise ValueError(f"fix_fingers='clip_xmax' refits a power law; it does not combine "
                             f"with fit={self.fit!r} (use fix_fingers='xmin_peak' or fit='E_TPL')")
        self.compare_names()
        if isinstance(self.gof, bool) or not isinstance(self.gof, (int, np.integer)) or self.gof < 0:
            raise ValueError(f"gof must be a number of bootstrap replicates >= 0; got {self.gof!r}")
        if not isinstance(self.vectors, (bool, np.bool_)):
            raise ValueError(f"vectors must be True or False; got {self.vectors!r}")
        if self.method not in ("gram", "svd"):
            raise ValueError(f"method must be 'gram' or 'svd'; got {self.method!r}")
        if self.min_evals is not None and self.min_evals < 0:
            raise ValueError(f"min_evals must be >= 0; got {self.min_evals}")
        if self.min_evals and self.max_evals and self.min_evals > self.max_evals:
            raise ValueError(f"min_evals={self.min_evals} > max_evals={self.max_evals}")
        if self.heads is not None and (isinstance(self.heads, bool) or int(self.heads) < 1):
            raise ValueError(f"heads must be a positive number of attention heads; got {self.heads}")
        if int(self.jobs) < 1:
            raise ValueError(f"jobs must be >= 1; got {self.jobs}")
        x = self.xmax
        if not (x is None or x in ("force", "max") or (isinstance(x, (int, np.integer))
                                                        and not isinstance(x, bool) and x < 0)
                or (isinstance(x, float) and x > 0)):
            raise ValueError("xmax must be None, 'force' (the largest eigenvalue), a negative int "
                             f"-k (drop the top k eigenvalues) or a positive number; got {x!r}")


# --- layer selection -------------------------------------------------------------------------
def _selector(layers) -> Callable[[LayerRef, LayerPlan], bool]:
    """WeightWatcher's ``layers=``: ids (all >= 0 keep, all < 0 skip), types, or name globs
    ('-glob' skips); keep-lists and skip-lists cannot be mixed."""
    if layers is None or (isinstance(layers, (list, tuple)) and not layers):
        return lambda ref, plan: True
    items = list(layers) if isinstance(layers, (list, tuple, set)) else [layers]
    keeps, skips = [], []
    for item in items:
        if isinstance(item, (bool, np.bool_)):
            raise ValueError(f"layers: {item!r} is not a layer id, type or name")
        if isinstance(item, (int, np.integer)):
            (skips if item < 0 else keeps).append(("id", abs(int(item))))
        elif isinstance(item, str) and item:
            neg = item.startswith("-")
            text = item[1:] if neg else item
            kind = "type" if text.lower() in LAYER_TYPES else "glob"
            (skips if neg else keeps).append((kind, text.lower() if kind == "type" else text))
        else:
            raise ValueError(f"layers: {item!r} is not a layer id, type or name")
    if keeps and skips:
        raise ValueError("layers: give either layers to keep or layers to skip ('-' or negative "
                         "ids), not both")

    def hit(ref: LayerRef, plan: LayerPlan, rules) -> bool:
        for kind, value in rules:
            if kind == "id" and ref.index == value:
                return True
            if kind == "type" and plan.layer_type == value:
                return True
            if kind == "glob" and (fnmatch.fnmatchcase(ref.name, value)
                                   or fnmatch.fnmatchcase(ref.module, value)):
                return True
        return False

    if keeps:
        return lambda ref, plan: hit(ref, plan, keeps)
    return lambda ref, plan: not hit(ref, plan, skips)


def _size_skip(plan: LayerPlan, o: Options) -> str:
    count = plan.num_evals if o.pool else plan.M
    if plan.M == 0:
        return f"an empty matrix ({plan.N} x 0)"
    if o.min_evals and count < o.min_evals:
        return f"{count} eigenvalues < min_evals={o.min_evals}"
    if o.max_evals and count > o.max_evals:
        return f"{count} eigenvalues > max_evals={o.max_evals}"
    if o.max_N and plan.N > o.max_N:
        return f"N={plan.N} > max_N={o.max_N}"
    return ""


# --- one layer -------------------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _base_row(ref: LayerRef, plan: LayerPlan) -> dict:
    return {"layer_id": ref.index, "name": ref.name, "module": ref.module,
            "layer_type": plan.layer_type, "N": plan.N, "M": plan.M,
            "Q": plan.N / plan.M if plan.M else math.nan, "rf": plan.rf, "dtype": ref.dtype,
            "warning": "", "reason": ""}


def _fit_row(evals: np.ndarray, o: Options, key: tuple = ()) -> dict:
    """The power-law (or truncated power-law) columns for one ESD (NaN and a reason when no fit
    exists), and the optional comparisons and bootstrap p-value."""
    data = evals[evals > EVALS_THRESH]
    xmax = o.xmax
    if isinstance(xmax, (int, np.integer)) and not isinstance(xmax, bool):
        k = -int(xmax)
        if k > data.size / 2:
            return {"status": "failed", "reason": f"xmax={xmax} drops more than half of the "
                                                  f"{data.size} eigenvalues"}
        data, xmax = data[: data.size - k], None
    elif xmax == "force":
        xmax = "max"
    if data.size < 2:
        return {"status": "failed",
                "reason": f"{data.size} eigenvalue(s) above {EVALS_THRESH:g}: nothing to fit"}
    kind = FITS[o.fit]
    if kind == "PL":
        fit = fit_power_law(data, xmax=xmax, fix_fingers=o.fix_fingers or None,
                            xmin_max=o.xmin_max, max_fingers=o.max_fingers,
                            finger_thresh=o.finger_thresh)
    else:
        peak = kind == "E_TPL" or o.fix_fingers == "xmin_peak"
        fit = fit_truncated_power_law(data, xmax=xmax, fix_fingers="xmin_peak" if peak else None,
                                      xmin_max=o.xmin_max)
    if not fit.ok:
        return {"status": "failed", "reason": f"{'power-law' if kind == 'PL' else kind} fit: "
                                              f"{fit.reason}"}
    row = {"alpha": fit.alpha, "D": fit.D, "xmin": fit.xmin,
           "xmax": fit.xmax if fit.xmax is not None else float(fit.data[-1]),
           "sigma": fit.sigma, "num_pl_spikes": int(np.count_nonzero(evals >= fit.xmin)),
           "status": "success", "reason": "", "_fit": fit}
    if kind != "PL":
        row["Lambda"] = fit.Lambda
    if o.fix_fingers == "clip_xmax":
        row.update(num_fingers=fit.num_fingers, raw_alpha=fit.raw_alpha)
    row["warning"] = ("over-trained" if fit.alpha < OVER_TRAINED else
                      "under-trained" if fit.alpha > UNDER_TRAINED else "")
    row.update(alpha_metrics(evals, fit.alpha))
    if o.compare_names() or o.gof:
        pl = fit if kind == "PL" else fit_power_law(data, xmax=xmax)
        row.update(_tests_row(pl, o, key))
    return row


def _tests_row(pl, o: Options, key: tuple) -> dict:
    """R_<model>, p_<model> (power law against each alternative on the power-law tail; R > 0
    favours the power law) and p_gof (CSN bootstrap, seeded per layer)."""
    row: dict = {}
    if not pl.ok:
        return row
    for name in o.compare_names():
        tag = COMPARE_TAGS[name]
        cmp = pl.compare(name)
        row[f"R_{tag}"], row[f"p_{tag}"] = cmp.R, cmp.p
    if o.gof:
        seed = None if o.seed is None else [int(o.seed), *(int(k) for k in key if k is not None)]
        row["p_gof"] = pl.goodness_of_fit(int(o.gof), seed=seed, n_jobs=1).p_value
    return row


def _optional_columns(o: Options) -> list[str]:
    cols = [f"{p}_{COMPARE_TAGS[n]}" for n in o.compare_names() for p in ("R", "p")]
    cols += ["p_gof"] if o.gof else []
    return cols + (list(VECTOR_COLUMNS) if o.vectors else [])


def _vector_rows(rows: list, mats: list[np.ndarray], plan: LayerPlan, o: Options) -> None:
    """Add the eigenvector localization columns to a layer's rows (tail: its num_pl_spikes
    largest eigenvalues; the eigenvectors come from the CPU, whatever the device)."""
    try:
        scale = _scale(plan, o)
        pairs = [eigenvectors(m) for m in mats]
    except Exception as exc:  # noqa: BLE001 - the fit stands; only the vector columns are missing
        for row, _ in rows:
            row["reason"] = (row["reason"] + "; " if row["reason"] else "") + \
                f"vectors: {_one_line(exc)}"
        return
    for row, _ in rows:
        if row.get("status") != "success":
            continue
        sid = row.get("slice_id")
        group = pairs if sid is None else [pairs[int(sid)]]
        evals = np.concatenate([ev * scale for ev, _ in group])
        row.update(vector_summary(evals, [v for _, v in group], n_tail=row["num_pl_spikes"]))


def _load_matrices(ref: LayerRef) -> list[np.ndarray]:
    w = ref.load()
    if w.dtype.kind not in "f":
        raise ValueError(f"a {w.dtype} tensor is not floating-point weights")
    return matrices(ref, w)


def _scale(plan: LayerPlan, o: Options) -> float:
    scale = 1.0
    if o.conv2d_norm and plan.layer_type == "conv2d":
        scale = 0.5 if o.pool else plan.rf / 2.0
    if o.normalize:
        scale /= plan.N
    return scale


def _failed_layer(ref: LayerRef, plan: LayerPlan, exc: BaseException) -> list:
    return [({**_base_row(ref, plan), "status": "failed", "reason": _one_line(exc)}, None)]


def _analyze_layer(ref: LayerRef, plan: LayerPlan, o: Options, backend
                   ) -> list[tuple[dict, np.ndarray | None]]:
    try:
        if isinstance(ref, LowRankRef):  # a LoRA update: its r eigenvalues from the factors
            slices = [lowrank_eigenvalues(*ref.load_factors())]
            mats = [ref.load()] if (o.randomize or o.vectors) else None  # both need the product
        else:
            mats = _load_matrices(ref)
            slices = eigenvalues_many(mats, backend, o.method)
    except Exception as exc:  # noqa: BLE001 - any failure becomes this layer's reason
        return _failed_layer(ref, plan, exc)
    rows = _layer_rows(ref, plan, o, slices, mats, backend)
    if o.vectors:
        _vector_rows(rows, mats, plan, o)
    return rows


def _layer_rows(ref: LayerRef, plan: LayerPlan, o: Options, slices: list[np.ndarray],
                mats: list[np.ndarray] | None = None, backend=None
                ) -> list[tuple[dict, np.ndarray | None]]:
    """Rows (one pooled, or one per slice) from a layer's unscaled eigenvalues."""
    base = _base_row(ref, plan)
    scale = _scale(plan, o)
    slices = [s * scale for s in slices]
    groups = [(None, slices)] if o.pool else [(i, [s]) for i, s in enumerate(slices)]
    # one generator per layer, from (seed, layer id): the same shuffles whatever the job order
    rng = np.random.default_rng([int(o.seed or 0), int(ref.index)]) if o.randomize else None
    out = []
    for slice_id, group in groups:
        evals = np.sort(np.concatenate(group)) if len(group) > 1 else group[0]
        row = dict(base, slice_id=slice_id)
        try:
            row.update(norm_metrics(evals, group, plan.N, o.tolerance))
            if not row["lambda_max"] > 0:
                row.update(status="failed", reason="an all-zero matrix: no spectrum to fit")
            else:
                row.update(_fit_row(evals, o, (ref.index, slice_id)))
        except Exception as exc:  # noqa: BLE001
            row.update(status="failed", reason=_one_line(exc))
        if row.get("lambda_max", 0) > 0:
            oriented = _ww_oriented(ref, plan, mats)
            group_mats = None if mats is None else \
                (oriented if slice_id is None else [oriented[slice_id]])
            row.update(_rmt_row(evals, plan, o, row, group_mats, scale, rng, backend))
        out.append((row, evals))
    return out


def _ww_oriented(ref: LayerRef, plan: LayerPlan, mats):
    """The matrices as WeightWatcher holds them (its shuffles permute them in row-major order):
    conv2d slices made tall (made wide in the Keras layout), other layers as stored."""
    if mats is None or plan.layer_type != "conv2d":
        return mats
    keras = ref.layout == "keras"
    return [w.T if (w.shape[1] < w.shape[0] if keras else w.shape[0] < w.shape[1]) else w
            for w in mats]


def _rmt_row(evals, plan: LayerPlan, o: Options, row: dict, mats, scale: float, rng,
             backend) -> dict:
    """The random-matrix diagnostics asked for (MP fit, randomized ESD, detX); each failure is
    NaN and a reason in its own column, never a number, and never stops the layer."""
    out: dict = {}
    if o.mp_fit:
        try:
            fit = mp_fit(evals, plan.N, plan.M)
            out.update(fit.as_row(), mp_reason="", _mp=fit)
        except MPFitError as exc:
            out["mp_reason"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - the layer's other columns stand
            out["mp_reason"] = _one_line(exc)
    if o.randomize:
        try:
            if mats is None:
                raise ValueError("the layer's matrices were not kept")
            rand = randomized_esd(
                mats, evals, plan.N, plan.M, rng, scale=scale,
                eigvals=lambda w: eigenvalues_many([w], backend, o.method)[0])
            out.update(rand.as_row(), rand_reason=rand.mp_reason and
                       f"randomized MP fit: {rand.mp_reason}", _rand=rand)
        except Exception as exc:  # noqa: BLE001 - the layer's other columns stand
            out["rand_reason"] = _one_line(exc)
    if o.detX:
        try:
            d = detx(evals)
        except Exception:  # noqa: BLE001 - NaN rather than a stopped layer
            d = {"detX_num": math.nan, "detX_val": math.nan, "detX_val_unrescaled": math.nan}
        pl = row.get("num_pl_spikes")
        out.update(d, num_ERG_spikes=d["detX_num"],
                   ERG_gap=d["detX_num"] - pl if pl is not None and pl == pl else math.nan)
    return out


_BATCH_BYTES = 512 * 1024 * 1024  # Gram matrices held at once on the device when batching


def _analyze_batch(batch, o: Options, backend) -> list:
    """Consecutive dense layers of one shape: one batched eigensolver call on the device."""
    if len(batch) == 1:
        return [_analyze_layer(*batch[0], o, backend)]
    loaded, results = [], [None] * len(batch)
    for i, (ref, plan) in enumerate(batch):
        try:
            loaded.append((i, _load_matrices(ref)))
        except Exception as exc:  # noqa: BLE001
            results[i] = _failed_layer(ref, plan, exc)
    try:
        evs = eigenvalues_many([m for _, mats in loaded for m in mats], backend, o.method)
    except Exception:  # noqa: BLE001 - e.g. NaN in one layer: redo them one by one
        for i, _ in loaded:
            results[i] = _analyze_layer(*batch[i], o, backend)
        return results
    for (i, mats), ev in zip(loaded, evs):
        results[i] = _layer_rows(*batch[i], o, [ev], mats, backend)
        if o.vectors:
            _vector_rows(results[i], mats, batch[i][1], o)
    return results


def _batches(todo, backend) -> list[list]:
    """Group consecutive 2-D layers of the same shape (only worth it on a torch device)."""
    if not backend.name.startswith("torch"):
        return [[item] for item in todo]
    groups: list[list] = []
    for ref, plan in todo:
        last = groups[-1] if groups else None
        if (last and plan.rf == 1 and last[0][1].rf == 1 and not isinstance(ref, LowRankRef)
                and not isinstance(last[0][0], LowRankRef) and last[0][0].shape == ref.shape
                and (len(last) + 1) * plan.M * plan.M * 8 <= _BATCH_BYTES):
            last.append((ref, plan))
        else:
            groups.append([(ref, plan)])
    return groups


# --- the result ------------------------------------------------------------------------------
@dataclass(frozen=True, repr=False, eq=False)
class Analysis:
    """The result of :func:`analyze`.

    ``details``: one row per analysed layer (per slice with ``pool=False``), in model order.
    ``skipped``: tensors not analysed, with the reason. ``source``: what was read.
    """

    details: pd.DataFrame
    skipped: pd.DataFrame
    source: str
    options: dict
    seconds: float
    _esds: dict = field(default_factory=dict, repr=False)
    _fits: dict = field(default_factory=dict, repr=False)
    _mps: dict = field(default_factory=dict, repr=False)
    _rands: dict = field(default_factory=dict, repr=False)

    def summary(self) -> dict:
        """Means over successful layers, and how many layers were analysed, failed, skipped."""
        d = self.details
        ok = d[d["status"] == "success"] if len(d) else d
        out: dict[str, Any] = {}
        for col in SUMMARY_METRICS + (("mp_softrank",) if "mp_softrank" in d else ()):
            out[col] = float(ok[col].mean()) if len(ok) else math.nan
        out.update({
            "layers": int(len(d)),
            "success": int(len(ok)),
            "failed": int((d["status"] == "failed").sum()) if len(d) else 0,
            "skipped": int(len(self.skipped)),
            "over_trained": int((ok["warning"] == "over-trained").sum()) if len(ok) else 0,
            "under_trained": int((ok["warning"] == "under-trained").sum()) if len(ok) else 0,
        })
        return out

    def _key(self, layer) -> tuple:
        if isinstance(layer, tuple):
            return layer
        d = self.details
        if isinstance(layer, (int, np.integer)):
            hits = d[d["layer_id"] == int(layer)]
        else:
            hits = d[(d["name"] == layer) | (d["module"] == layer)]
        if hits.empty:
            raise KeyError(f"no analysed layer {layer!r}")
        first = hits.iloc[0]
        sid = first.get("slice_id")
        return (int(first["layer_id"]), None if sid is None or pd.isna(sid) else int(sid))

    def esd(self, layer) -> np.ndarray:
        """The eigenvalues of one layer: its ``layer_id``, tensor name or module name.
        With ``pool=False`` pass ``(layer_id, slice_id)``."""
        key = self._key(layer)
        if key not in self._esds:
            raise KeyError(f"no eigenvalues for layer {layer!r} (it failed before its ESD)")
        return self._esds[key]

    def fit(self, layer):
        """The :class:`PowerLawFit` of one layer (a ``TruncatedPowerLawFit`` with ``fit='TPL'``;
        KeyError when that layer has no fit)."""
        key = self._key(layer)
        if key not in self._fits:
            raise KeyError(f"layer {layer!r} has no power-law fit")
        return self._fits[key]

    def mp_fit(self, layer):
        """The :class:`~tailscope.spectrum.mp.MPFit` of one layer (``mp_fit=True``; KeyError when
        that layer has none, e.g. no MP fit exists: see its ``mp_reason``)."""
        key = self._key(layer)
        if key not in self._mps:
            raise KeyError(f"layer {layer!r} has no MP fit (analyze with mp_fit=True)")
        return self._mps[key]

    def randomized(self, layer):
        """The :class:`~tailscope.spectrum.randomize.RandomizedESD` of one layer
        (``randomize=True``)."""
        key = self._key(layer)
        if key not in self._rands:
            raise KeyError(f"layer {layer!r} has no randomized ESD (analyze with randomize=True)")
        return self._rands[key]

    def random_esd(self, layer) -> np.ndarray:
        """The eigenvalues of one layer's element-shuffled matrices (all replicas, pooled), as
        scaled and fitted (``randomize=True``)."""
        return self.randomized(layer).evals

    # --- output ----------------------------------------------------------------------------
    def to_csv(self, path) -> Path:
        return atomic_write(path, lambda p: self.details.to_csv(p, index=False))

    def to_json(self, path) -> Path:
        return atomic_write(path, lambda p: self.details.to_json(
            p, orient="records", indent=1, double_precision=15))

    def to_parquet(self, path) -> Path:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError("writing parquet needs pyarrow: pip install 'tailscope[parquet]'"
                             ) from None
        return atomic_write(path, lambda p: self.details.to_parquet(p, index=False))

    def to_html(self, path, *, title: str | None = None, layer_figures: bool = True) -> Path:
        """A self-contained HTML report (summary, warnings, figures, sortable table)."""
        from .report import write_report

        return write_report(self, path, title=title, layer_figures=layer_figures)

    def save(self, path) -> Path:
        """Write ``details`` in the format named by the extension (.csv, .json, .parquet)."""
        suffix = Path(path).suffix.lower()
        writers = {".csv": self.to_csv, ".json": self.to_json, ".parquet": self.to_parquet}
        if suffix not in writers:
            raise ValueError(f"{path}: unknown output format; use .csv, .json or .parquet")
        return writers[suffix](path)

    def __repr__(self) -> str:
        s = self.summary()
        return (f"Analysis({self.source}: {s['layers']} layers, {s['success']} fitted, "
                f"{s['failed']} failed, {s['skipped']} skipped; mean alpha {s['alpha']:.3g})")

    def _repr_html_(self) -> str:
        return f"<p>{self!r}</p>" + self.details.to_html(index=False, max_rows=500)


# --- the entry points ------------------------------------------------------------------------
def _planned(src: Source, o: Options):
    """(ref, plan, reason) for every tensor, in model order; reason '' means it is analysed."""
    keep = _selector(o.layers)
    for ref in expand(src, split=o.split, heads=o.heads):
        plan = plan_layer(ref)
        reason = plan.skip or ("" if keep(ref, plan) else "not selected by layers=") or \
            _size_skip(plan, o)
        yield ref, plan, reason


def _plan(src: Source, o: Options) -> tuple[list[tuple[LayerRef, LayerPlan]], list[dict]]:
    todo, skipped = [], []
    for ref, plan, reason in _planned(src, o):
        if reason:
            skipped.append({"layer_id": ref.index, "name": ref.name, "layer_type": plan.layer_type,
                            "shape": "x".join(map(str, ref.shape)), "dtype": ref.dtype,
                            "reason": reason})
        else:
            todo.append((ref, plan))
    return todo, skipped


def _open(source, trust_pickle: bool, base_model, peft) -> Source:
    """The model, or its delta from ``base_model``, or its LoRA layers (``peft``)."""
    src = open_source(source, trust_pickle=trust_pickle)
    base = None if base_model is None else open_source(base_model, trust_pickle=trust_pickle)
    return derive(src, base=base, peft=peft)


def describe(source, *, base_model=None, peft=False, trust_pickle: bool = False,
             **options) -> pd.DataFrame:
    """List the layers of a model with their shapes and whether ``analyze`` would fit them,
    without reading any tensor (``base_model`` and ``peft`` as in :func:`analyze`)."""
    options.pop("ERG", None)  # the diagnostics' options are accepted and change nothing here
    o = Options(**options)
    o.check()
    src = _open(source, trust_pickle, base_model, peft)
    rows = [{"layer_id": ref.index, "name": ref.name, "layer_type": plan.layer_type,
             "shape": "x".join(map(str, ref.shape)), "dtype": ref.dtype, "N": plan.N,
             "M": plan.M, "rf": plan.rf, "num_evals": plan.num_evals,
             "analyze": not reason, "reason": reason}
            for ref, plan, reason in _planned(src, o)]
    return pd.DataFrame(rows, columns=["layer_id", "name", "layer_type", "shape", "dtype", "N",
                                       "M", "rf", "num_evals", "analyze", "reason"])


def analyze(source, *, base_model=None, peft=False, trust_pickle: bool = False,
            progress: Callable[[int, int, str], None] | None = None, scheduler=None,
            **options) -> Analysis:
    """Analyse every weight matrix of a model: ESD, power-law fit, WeightWatcher's metrics.

    Parameters
    ----------
    source : path, torch.nn.Module, state dict or array
        Anything :func:`tailscope.sources.open_source` reads.
    base_model : path, torch.nn.Module, state dict or array, optional
        Analyse the fine-tuning update W - W_base instead of W, layers matched by name (exact,
        then without prefixes such as 'model.' or 'base_model.model.', then a unique dotted
        suffix); any format, not necessarily the model's. A layer with no base counterpart or
        another shape is a failed row saying so. With ``peft='with_base'``: the base the LoRA
        updates are added to.
    peft : False, True, 'only' or 'with_base'
        For a LoRA adapter: True/'only' analyse one ``<module>.lora_BA`` layer per lora_A/lora_B
        pair, the update scale·B·A (scale = lora_alpha / r from adapter_config.json, else 1), from
        its r nonzero eigenvalues; 'with_base' analyses every base layer and, after each adapted
        one, its ``lora_BA`` and ``lora_W_plus_AB`` = W_base + scale·B·A.
    layers : list, optional
        Layer ids (all >= 0 keep; all < 0 skip), types ('dense', 'embedding', 'conv1d',
        'conv2d') or name globs ('-glob' skips), as WeightWatcher's ``layers``.
    min_evals, max_evals, max_N : int
        Skip layers with fewer / more eigenvalues (M * rf when pooled) or a larger N (10, 15000,
        50000 as in WeightWatcher).
    conv2d_norm : bool
        Scale conv2d eigenvalues by 1/2 when pooled, rf/2 per slice (WeightWatcher's default).
    pool : bool
        Pool a conv layer's slice ESDs into one row (default) or give one row per slice.
    normalize : bool
        Divide eigenvalues by N.
    fit : 'PL', 'TPL' or 'E_TPL'
        The power law (default); the truncated power law x^-alpha e^(-Lambda x), with xmin chosen
        by its own KS distance as WeightWatcher's ``fit='TPL'`` (adds ``Lambda``; ``sigma`` is
        NaN; alpha >= 1 and Lambda > 0 as in ``powerlaw``); or the truncated power law with
        ``fix_fingers='xmin_peak'`` (WeightWatcher's 'E_TPL').
    xmax : None, 'force', float or -k
        Upper truncation of the fit: none, the largest eigenvalue, a value, or drop the top k.
    fix_fingers, xmin_max, max_fingers, finger_thresh :
        WeightWatcher's finger fixes (see :func:`tailscope.fit_power_law`).
    compare : bool or tuple of str
        Likelihood-ratio tests of the power law against alternatives on its tail: True means
        ('TPL', 'lognormal', 'exponential'); also 'stretched_exponential', 'lognormal_positive'.
        Adds ``R_<name>`` (> 0 favours the power law) and ``p_<name>`` per alternative, with
        ``R_TPL, p_TPL`` for the truncated power law. With ``fit='TPL'`` they still use the
        power-law fit's tail.
    gof : int
        Bootstrap replicates for the goodness-of-fit p-value ``p_gof`` of the power law (CSN;
        0, the default, skips it; the power law is ruled out when p_gof <= 0.1).
    vectors : bool
        Eigenvector localization (symmetric eigensolver): WeightWatcher's ``bulk_mean_``,
        ``bulk_var_``, ``tail_mean_``, ``tail_var_`` of ``vec_entropy``, ``loc_ratio`` and
        ``part_ratio``, the tail being the ``num_pl_spikes`` largest eigenvalues (see
        :mod:`tailscope.spectrum.vectors`).
    method : 'gram' or 'svd'
        Eigenvalues from the float64 Gram matrix (default) or a full SVD.
    device : str
        'auto' (CUDA through torch when available, else numpy), 'cpu', 'cuda', 'cuda:N',
        'torch:cpu'.
    jobs : int
        Layers analysed at once (threads; BLAS threads are divided among them).
    mp_fit : bool
        Marchenko-Pastur fit of each ESD's bulk (:func:`tailscope.spectrum.mp.mp_fit`): columns
        num_spikes, sigma_mp, mp_softrank, W_scale, bulk_max, bulk_min and mp_reason (why a
        layer has no fit; its columns are then NaN).
    randomize : bool
        The ESD of each layer's element-shuffled matrices (correlation traps): max_rand_eval,
        rand_num_spikes, rand_sigma_mp, rand_mp_softrank, rand_W_scale, rand_bulk_max,
        rand_bulk_min, rand_distance, ww_softrank, ww_maxdist, rand_reason.
    seed : int, optional
        The shuffles' seed (each layer's generator is ``default_rng([seed, layer_id])``); None
        draws fresh entropy, recorded in ``Analysis.options['seed']``. Also makes ``p_gof``
        reproducible (layer i uses the seed ``[seed, layer_id, slice_id]``).
    detX : bool
        (alias ``ERG``) WeightWatcher's det X = 1 tail: detX_num, detX_val,
        detX_val_unrescaled (WeightWatcher's name for the *rescaled* value), num_ERG_spikes,
        ERG_gap = detX_num - num_pl_spikes.
    split : bool
        Analyse recurrent gate stacks (LSTM, GRU) gate by gate and fused attention
        ``in_proj_weight`` as q, k, v (default True); the fused tensor is listed as skipped.
    heads : int, optional
        Split q/k/v/o attention projections into this many per-head matrices.
    trust_pickle : bool
        Allow PyTorch pickles that need code execution (never by default).
    progress : callable(done, total, name), optional
        Called after each layer.
    scheduler : str or distributed.Client, optional
        Spread the layers over a Dask cluster (``tcp://host:8786`` or a client); each worker
        reads only its own tensors, so ``source`` must be a path every worker can read.

    Returns
    -------
    Analysis

    Raises
    ------
    ValueError
        For a bad option or a meaningless combination, naming the option (e.g. ``fit='TPL'``
        with ``fix_fingers='clip_xmax'``).
    """
    t0 = time.perf_counter()
    if options.pop("ERG", False):  # WeightWatcher 0.7.7's alias
        options["detX"] = True
    o = Options(**options)
    o.check()
    if o.randomize and o.seed is None:  # fresh entropy, recorded in Analysis.options
        o = replace(o, seed=int(np.random.SeedSequence().entropy))
    backend = get_backend(o.device)
    src = _open(source, trust_pickle, base_model, peft)
    todo, skipped = _plan(src, o)
    if scheduler is not None:  # the one hook into zoo: layers as Dask tasks
        from .zoo.distributed import run_layers

        results = run_layers(source, todo, o, scheduler, progress, trust_pickle)
    else:
        results = _run(todo, o, backend, progress)
    rows, esds, fits, mps, rands = [], {}, {}, {}, {}
    for row, evals in (item for layer in results for item in layer):
        fit = row.pop("_fit", None)
        mp, rand = row.pop("_mp", None), row.pop("_rand", None)
        rows.append(row)
        sid = row.get("slice_id")
        key = (row["layer_id"], None if sid is None else int(sid))
        if evals is not None:
            esds[key] = evals
        if fit is not None:
            fits[key] = fit
        if mp is not None:
            mps[key] = mp
        if rand is not None:
            rands[key] = rand
    columns = COLUMNS[:COLUMNS.index("status")] + (MP_COLUMNS if o.mp_fit else []) + \
        (RAND_COLUMNS if o.randomize else []) + (DETX_COLUMNS if o.detX else []) + \
        COLUMNS[COLUMNS.index("status"):]
    columns = list(COLUMNS)
    columns[columns.index("alpha") + 1:1] = ["Lambda"] if FITS[o.fit] != "PL" else []
    columns[columns.index("status"):columns.index("status")] = \
        (MP_COLUMNS if o.mp_fit else []) + (RAND_COLUMNS if o.randomize else []) + \
        (DETX_COLUMNS if o.detX else []) + _optional_columns(o)
    details = pd.DataFrame(rows, columns=columns)
    drop = [c for c in ("slice_id",) if o.pool] + \
        [c for c in ("num_fingers", "raw_alpha") if o.fix_fingers != "clip_xmax"]
    details = details.drop(columns=drop)
    skipped_df = pd.DataFrame(skipped, columns=["layer_id", "name", "layer_type", "shape",
                                                "dtype", "reason"])
    opts = {k: v for k, v in o.__dict__.items()}
    opts.update(peft=peft, base_model=None if base_model is None else
                str(base_model) if isinstance(base_model, (str, Path)) else
                type(base_model).__name__)
    return Analysis(details=details, skipped=skipped_df, source=src.describe(), options=opts,
                    seconds=time.perf_counter() - t0, _esds=esds, _fits=fits,
                    _mps=mps, _rands=rands)


def _run(todo, o: Options, backend, progress) -> list:
    total = len(todo)
    if o.jobs <= 1 or total <= 1:
        out: list = []
        for batch in _batches(todo, backend) if not o.vectors else [[t] for t in todo]:
            out.extend(_analyze_batch(batch, o, backend))
            if progress:
                progress(len(out), total, batch[-1][0].name)
        return out
    return _run_threads(todo, o, backend, progress)


def _run_threads(todo, o: Options, backend, progress) -> list:
    """Layers in parallel threads (numpy and LAPACK release the GIL), BLAS threads shared out."""
    from concurrent.futures import as_completed

    jobs = min(int(o.jobs), len(todo))
    results: list = [None] * len(todo)
    done = 0
    with _blas_limit(max(1, (os.cpu_count() or 1) // jobs)), \
            ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_analyze_layer, ref, plan, o, backend): i
                   for i, (ref, plan) in enumerate(todo)}
        for fut in as_completed(futures):
            i = futures[fut]
            results[i] = fut.result()
            done += 1
            if progress:
                progress(done, len(todo), todo[i][0].name)
    return results


def _blas_limit(n: int):
    """Limit BLAS threads while layers run in parallel (a no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")
