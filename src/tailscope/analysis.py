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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .fit import fit_power_law
from .sources import LayerPlan, LayerRef, Source, open_source, plan_layer
from .sources.layers import matrices
from .spectrum import alpha_metrics, eigenvalues_many, get_backend, norm_metrics

EVALS_THRESH = 1e-5  # eigenvalues at or below are dropped before the fit (WeightWatcher's)
OVER_TRAINED, UNDER_TRAINED = 2.0, 6.0
LAYER_TYPES = ("dense", "embedding", "conv1d", "conv2d")
SUMMARY_METRICS = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm",
                   "stable_rank", "D")
COLUMNS = ["layer_id", "name", "module", "layer_type", "slice_id", "N", "M", "Q", "rf",
           "num_evals", "alpha", "alpha_weighted", "log_alpha_norm", "D", "xmin", "xmax", "sigma",
           "num_pl_spikes", "lambda_max", "spectral_norm", "norm", "log_norm",
           "log_spectral_norm", "stable_rank", "matrix_rank", "rank_loss", "weak_rank_loss",
           "entropy", "sv_max", "sv_min", "num_fingers", "raw_alpha", "status", "warning",
           "reason", "dtype"]


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

    def check(self) -> None:
        if self.fit not in ("PL", "power_law"):
            raise ValueError(f"fit={self.fit!r}: this version fits the power law ('PL') only")
        if self.fix_fingers not in (None, False, "clip_xmax", "xmin_peak"):
            raise ValueError(f"fix_fingers must be None, 'clip_xmax' or 'xmin_peak'; "
                             f"got {self.fix_fingers!r}")
        if self.method not in ("gram", "svd"):
            raise ValueError(f"method must be 'gram' or 'svd'; got {self.method!r}")
        if self.min_evals is not None and self.min_evals < 0:
            raise ValueError(f"min_evals must be >= 0; got {self.min_evals}")
        if self.min_evals and self.max_evals and self.min_evals > self.max_evals:
            raise ValueError(f"min_evals={self.min_evals} > max_evals={self.max_evals}")
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


def _fit_row(evals: np.ndarray, o: Options) -> dict:
    """The power-law columns for one ESD (NaN and a reason when no fit exists)."""
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
    fit = fit_power_law(data, xmax=xmax, fix_fingers=o.fix_fingers or None, xmin_max=o.xmin_max,
                        max_fingers=o.max_fingers, finger_thresh=o.finger_thresh)
    if not fit.ok:
        return {"status": "failed", "reason": f"power-law fit: {fit.reason}"}
    row = {"alpha": fit.alpha, "D": fit.D, "xmin": fit.xmin,
           "xmax": fit.xmax if fit.xmax is not None else float(fit.data[-1]),
           "sigma": fit.sigma, "num_pl_spikes": int(np.count_nonzero(evals >= fit.xmin)),
           "status": "success", "reason": "", "_fit": fit}
    if o.fix_fingers == "clip_xmax":
        row.update(num_fingers=fit.num_fingers, raw_alpha=fit.raw_alpha)
    row["warning"] = ("over-trained" if fit.alpha < OVER_TRAINED else
                      "under-trained" if fit.alpha > UNDER_TRAINED else "")
    row.update(alpha_metrics(evals, fit.alpha))
    return row


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
        slices = eigenvalues_many(_load_matrices(ref), backend, o.method)
    except Exception as exc:  # noqa: BLE001 - any failure becomes this layer's reason
        return _failed_layer(ref, plan, exc)
    return _layer_rows(ref, plan, o, slices)


def _layer_rows(ref: LayerRef, plan: LayerPlan, o: Options, slices: list[np.ndarray]
                ) -> list[tuple[dict, np.ndarray | None]]:
    """Rows (one pooled, or one per slice) from a layer's unscaled eigenvalues."""
    base = _base_row(ref, plan)
    scale = _scale(plan, o)
    slices = [s * scale for s in slices]
    groups = [(None, slices)] if o.pool else [(i, [s]) for i, s in enumerate(slices)]
    out = []
    for slice_id, group in groups:
        evals = np.sort(np.concatenate(group)) if len(group) > 1 else group[0]
        row = dict(base, slice_id=slice_id)
        try:
            row.update(norm_metrics(evals, group, plan.N, o.tolerance))
            if not row["lambda_max"] > 0:
                row.update(status="failed", reason="an all-zero matrix: no spectrum to fit")
            else:
                row.update(_fit_row(evals, o))
        except Exception as exc:  # noqa: BLE001
            row.update(status="failed", reason=_one_line(exc))
        out.append((row, evals))
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
    for (i, _), ev in zip(loaded, evs):
        results[i] = _layer_rows(*batch[i], o, [ev])
    return results


def _batches(todo, backend) -> list[list]:
    """Group consecutive 2-D layers of the same shape (only worth it on a torch device)."""
    if not backend.name.startswith("torch"):
        return [[item] for item in todo]
    groups: list[list] = []
    for ref, plan in todo:
        last = groups[-1] if groups else None
        if (last and plan.rf == 1 and last[0][1].rf == 1 and last[0][0].shape == ref.shape
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

    def summary(self) -> dict:
        """Means over successful layers, and how many layers were analysed, failed, skipped."""
        d = self.details
        ok = d[d["status"] == "success"] if len(d) else d
        out: dict[str, Any] = {}
        for col in SUMMARY_METRICS:
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
        """The :class:`PowerLawFit` of one layer (KeyError when that layer has no fit)."""
        key = self._key(layer)
        if key not in self._fits:
            raise KeyError(f"layer {layer!r} has no power-law fit")
        return self._fits[key]

    # --- output ----------------------------------------------------------------------------
    def to_csv(self, path) -> Path:
        return _atomic_write(path, lambda p: self.details.to_csv(p, index=False))

    def to_json(self, path) -> Path:
        return _atomic_write(path, lambda p: self.details.to_json(
            p, orient="records", indent=1, double_precision=15))

    def to_parquet(self, path) -> Path:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError("writing parquet needs pyarrow: pip install 'tailscope[parquet]'"
                             ) from None
        return _atomic_write(path, lambda p: self.details.to_parquet(p, index=False))

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


def _atomic_write(path, write: Callable[[str], Any]) -> Path:
    """Write through a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    if not path.parent.exists():
        raise ValueError(f"{path}: the folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# --- the entry points ------------------------------------------------------------------------
def _planned(src: Source, o: Options):
    """(ref, plan, reason) for every tensor, in model order; reason '' means it is analysed."""
    keep = _selector(o.layers)
    for ref in src:
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


def describe(source, *, trust_pickle: bool = False, **options) -> pd.DataFrame:
    """List the layers of a model with their shapes and whether ``analyze`` would fit them,
    without reading any tensor."""
    o = Options(**options)
    o.check()
    src = open_source(source, trust_pickle=trust_pickle)
    rows = [{"layer_id": ref.index, "name": ref.name, "layer_type": plan.layer_type,
             "shape": "x".join(map(str, ref.shape)), "dtype": ref.dtype, "N": plan.N,
             "M": plan.M, "rf": plan.rf, "num_evals": plan.num_evals,
             "analyze": not reason, "reason": reason}
            for ref, plan, reason in _planned(src, o)]
    return pd.DataFrame(rows, columns=["layer_id", "name", "layer_type", "shape", "dtype", "N",
                                       "M", "rf", "num_evals", "analyze", "reason"])


def analyze(source, *, trust_pickle: bool = False,
            progress: Callable[[int, int, str], None] | None = None, scheduler=None,
            **options) -> Analysis:
    """Analyse every weight matrix of a model: ESD, power-law fit, WeightWatcher's metrics.

    Parameters
    ----------
    source : path, torch.nn.Module, state dict or array
        Anything :func:`tailscope.sources.open_source` reads.
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
    fit : 'PL'
        The power law (other fits arrive in later versions).
    xmax : None, 'force', float or -k
        Upper truncation of the fit: none, the largest eigenvalue, a value, or drop the top k.
    fix_fingers, xmin_max, max_fingers, finger_thresh :
        WeightWatcher's finger fixes (see :func:`tailscope.fit_power_law`).
    method : 'gram' or 'svd'
        Eigenvalues from the float64 Gram matrix (default) or a full SVD.
    device : str
        'auto' (CUDA through torch when available, else numpy), 'cpu', 'cuda', 'cuda:N',
        'torch:cpu'.
    jobs : int
        Layers analysed at once (threads; BLAS threads are divided among them).
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
    """
    t0 = time.perf_counter()
    o = Options(**options)
    o.check()
    backend = get_backend(o.device)
    src = open_source(source, trust_pickle=trust_pickle)
    todo, skipped = _plan(src, o)
    if scheduler is not None:  # the one hook into zoo: layers as Dask tasks
        from .zoo.distributed import run_layers

        results = run_layers(source, todo, o, scheduler, progress, trust_pickle)
    else:
        results = _run(todo, o, backend, progress)
    rows, esds, fits = [], {}, {}
    for row, evals in (item for layer in results for item in layer):
        fit = row.pop("_fit", None)
        rows.append(row)
        sid = row.get("slice_id")
        key = (row["layer_id"], None if sid is None else int(sid))
        if evals is not None:
            esds[key] = evals
        if fit is not None:
            fits[key] = fit
    details = pd.DataFrame(rows, columns=COLUMNS)
    drop = [c for c in ("slice_id",) if o.pool] + \
        [c for c in ("num_fingers", "raw_alpha") if o.fix_fingers != "clip_xmax"]
    details = details.drop(columns=drop)
    skipped_df = pd.DataFrame(skipped, columns=["layer_id", "name", "layer_type", "shape",
                                                "dtype", "reason"])
    opts = {k: v for k, v in o.__dict__.items()}
    return Analysis(details=details, skipped=skipped_df, source=src.describe(), options=opts,
                    seconds=time.perf_counter() - t0, _esds=esds, _fits=fits)


def _run(todo, o: Options, backend, progress) -> list:
    total = len(todo)
    if o.jobs <= 1 or total <= 1:
        out: list = []
        for batch in _batches(todo, backend):
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
