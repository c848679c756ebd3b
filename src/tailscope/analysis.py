"""The front door: ``analyze()`` (a model -> one row per weight matrix, WeightWatcher's columns,
and a summary), ``describe()`` (its layers, nothing computed) and their result, ``Analysis``.

The work is the engine's (``tailscope.engine``): options, planning, one layer at a time, runners
in threads or on Dask. A layer that fails is a row with status 'failed' and a reason; the run
goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .engine import options as opts
from .engine import run as runner
from .engine.layer import Analyze, RowResult
from .engine.result import (
    describe_frame,
    details_frame,
    experts_frame,
    mean_layers,
    skipped_frame,
    summarize,
)
from .util.io import atomic_write
from .util.optional import require


@dataclass(frozen=True, repr=False, eq=False)
class Analysis:
    """The result of :func:`tailscope.analyze`.

    ``details``: one row per analysed layer (per slice with ``pool=False``), in model order.
    ``skipped``: tensors not analysed, with the reason. ``source``: what was read. ``options``:
    the options it ran with (the drawn seed included). ``results``: per row key (layer_id,
    slice_id), the :class:`~tailscope.engine.layer.RowResult` it came from (ESD, fits); read it
    through :meth:`result`, :meth:`esd`, :meth:`fit`, :meth:`mp_fit`, :meth:`randomized`.
    Figures, the report, the editing tools and the zoo use these accessors.
    """

    details: pd.DataFrame
    skipped: pd.DataFrame
    source: str
    options: dict
    seconds: float
    results: Mapping[tuple, RowResult] = field(default_factory=dict, repr=False)

    def summary(self, *, experts: str = "each") -> dict:
        """Means of the summary metrics over successful layers, and how many layers were
        analysed, failed, skipped, over- and under-trained.

        In a Mixture-of-Experts model (``experts`` in the dict: how many rows are expert
        matrices), ``experts='each'`` (the default) counts every expert matrix as one layer, as
        WeightWatcher counts per-expert Linear modules: a projection of 128 experts weighs 128
        times a dense one. ``experts='layer'`` averages each projection's experts first (one row
        per group of :meth:`experts`), so it weighs as the one dense projection it replaces;
        ``layers`` and the other counts then count it once."""
        return summarize(self.details, len(self.skipped), experts)

    def experts(self, metric: str = "alpha") -> pd.DataFrame:
        """Per Mixture-of-Experts projection (the experts of one fused stack's gate, up or
        down, or of one per-expert name such as ``experts.*.w1.weight``): ``group`` (its name,
        ``*`` for the expert), ``first_layer_id``, ``experts``, ``fitted``, and the ``mean``,
        ``min``, ``max``, ``std`` (ddof 0) and ``spread`` (max - min) of ``metric`` over the
        fitted experts, with ``expert_min`` / ``expert_max``, the experts holding them. Empty
        for a model without experts."""
        return experts_frame(self.details, metric)

    def skip_counts(self) -> dict[str, int]:
        """How many tensors were skipped, by kind of reason (``min_evals``, ``max_evals``,
        ``max_N``, ``layers=``, not a weight matrix, ...; see ``skipped`` for each reason)."""
        from .engine.result import skip_counts

        return skip_counts(self.skipped["reason"]) if len(self.skipped) else {}

    def summary_layers(self) -> dict[str, int]:
        """Over how many layers each mean of :meth:`summary` was taken (the fitted layers where
        the metric is a number: e.g. ``alpha_farms`` over 12 of 14 when FARMS was undefined for
        two; each such layer says why in its ``reason``)."""
        return mean_layers(self.details)

    # --- one layer ---------------------------------------------------------------------------
    def keys(self) -> list[tuple[int, int | None]]:
        """The (layer_id, slice_id) of every row of ``details``, in order (slice_id None when
        pooled)."""
        d = self.details
        sids = d["slice_id"] if "slice_id" in d.columns else [None] * len(d)
        return [(int(i), None if s is None or s != s else int(s))
                for i, s in zip(d["layer_id"], sids)]

    def key(self, layer) -> tuple[int, int | None]:
        """The row key of ``layer``: a layer_id, a tensor name (else a module name), or
        (layer_id, slice_id); KeyError when no analysed row matches, or when the name is that of
        several layers (never one of them silently)."""
        if isinstance(layer, tuple):
            return layer
        d = self.details
        if isinstance(layer, (int, np.integer)):
            hits = d[d["layer_id"] == int(layer)]
        else:
            hits = d[d["name"] == layer]
            if hits.empty:
                hits = d[d["module"] == layer]
        if hits.empty:
            raise KeyError(f"no analysed layer {layer!r}")
        ids = hits["layer_id"].unique()
        if len(ids) > 1:
            raise KeyError(f"{layer!r} names {len(ids)} analysed layers (layer_id "
                           f"{', '.join(map(str, ids[:6]))}); pass the layer_id")
        first = hits.iloc[0]
        sid = first.get("slice_id")
        return (int(first["layer_id"]), None if sid is None or pd.isna(sid) else int(sid))

    def row(self, layer) -> pd.Series:
        """The ``details`` row of one layer (see :meth:`key` for how to name it)."""
        lid, sid = self.key(layer)
        d = self.details
        hits = d[d["layer_id"] == lid]
        if sid is not None:
            hits = hits[hits["slice_id"] == sid]
        if hits.empty:
            raise KeyError(f"no analysed layer {layer!r}")
        return hits.iloc[0]

    def result(self, layer) -> RowResult:
        """What one row was computed from: its ESD, fit, MP fit and randomized ESD."""
        key = self.key(layer)
        if key not in self.results:
            raise KeyError(f"no analysed layer {layer!r}")
        return self.results[key]

    def esd(self, layer) -> np.ndarray:
        """The eigenvalues of one layer: its ``layer_id``, tensor name or module name.
        With ``pool=False`` pass ``(layer_id, slice_id)``."""
        evals = self.result(layer).evals
        if evals is None:
            raise KeyError(f"no eigenvalues for layer {layer!r} (it failed before its ESD)")
        return evals

    def fit(self, layer):
        """The :class:`PowerLawFit` of one layer (a ``TruncatedPowerLawFit`` with ``fit='TPL'``;
        KeyError when that layer has no fit)."""
        fit = self._part(layer, "fit")
        if fit is None:
            raise KeyError(f"layer {layer!r} has no power-law fit")
        return fit

    def mp_fit(self, layer):
        """The :class:`~tailscope.spectrum.mp.MPFit` of one layer (``mp_fit=True``; KeyError when
        that layer has none, e.g. no MP fit exists: see its ``mp_reason``)."""
        mp = self._part(layer, "mp")
        if mp is None:
            raise KeyError(f"layer {layer!r} has no MP fit (analyze with mp_fit=True)")
        return mp

    def randomized(self, layer):
        """The :class:`~tailscope.spectrum.randomize.RandomizedESD` of one layer
        (``randomize=True``)."""
        rand = self._part(layer, "randomized")
        if rand is None:
            raise KeyError(f"layer {layer!r} has no randomized ESD (analyze with randomize=True)")
        return rand

    def random_esd(self, layer) -> np.ndarray:
        """The eigenvalues of one layer's element-shuffled matrices (all replicas, pooled), as
        scaled and fitted (``randomize=True``)."""
        return self.randomized(layer).evals

    def _part(self, layer, name: str):
        result = self.results.get(self.key(layer))  # an unknown or ambiguous name raises
        return None if result is None else getattr(result, name)

    # --- output ----------------------------------------------------------------------------
    def to_csv(self, path) -> Path:
        """Write ``details`` to a CSV file, atomically; returns its path."""
        return atomic_write(path, lambda p: self.details.to_csv(p, index=False))

    def to_json(self, path) -> Path:
        """Write ``details`` to a JSON file (one record per row), atomically; returns its path."""
        return atomic_write(path, lambda p: self.details.to_json(
            p, orient="records", indent=1, double_precision=15))

    def to_parquet(self, path) -> Path:
        """Write ``details`` to a Parquet file (the ``parquet`` extra), atomically; returns its
        path."""
        require("pyarrow", "writing parquet", error=ValueError)
        return atomic_write(path, lambda p: self.details.to_parquet(p, index=False))

    def to_html(self, path, *, title: str | None = None, layer_figures: bool = True,
                comparison=None) -> Path:
        """A self-contained HTML report (summary, warnings, figures, sortable table;
        ``comparison``: :func:`tailscope.compare_to_base`'s or
        :func:`tailscope.quantization_damage`'s table, as a section)."""
        from .report import write_report

        return write_report(self, path, title=title, layer_figures=layer_figures,
                            comparison=comparison)

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
        """In a notebook: the summary cards, the warnings, the alpha-per-layer figure and the
        per-layer table with the over- and under-trained rows marked."""
        from .report import notebook_html

        return notebook_html(self)

    # --- figures (a matplotlib Figure each; in a notebook shown once, as the cell's value) -----
    def plot(self, layer=None, *, path=None):
        """One layer's figure (ESD with xmin, tail PDF/CCDF against the fit, D and alpha against
        xmin; the MP bulk and the randomized ESD when analysed) or, without ``layer``, alpha per
        layer. Saved to ``path`` when given."""
        from .report import plots

        if layer is None:
            return plots.alpha_per_layer(self, path=path)
        return plots.layer_figure(self, layer, path=path)

    def plot_metric(self, column: str, *, path=None):
        """Any numeric column of ``details`` per layer, in model order."""
        from .report import plots

        if column not in self.details.columns:
            raise KeyError(f"no column {column!r} in details")
        return plots.metric_per_layer(self, column, path=path)

    def plot_histogram(self, *, path=None):
        """The histogram of the layers' alphas with the over- and under-trained edges."""
        from .report import plots

        return plots.alpha_histogram(self, path=path)


# --- the entry points ------------------------------------------------------------------------
def describe(source, *, base_model=None, peft=False, trust_pickle: bool = False,
             **options) -> pd.DataFrame:
    """List the layers of a model with their shapes and whether :func:`analyze` would fit them,
    without reading any tensor.

    Takes :func:`analyze`'s arguments; the options that choose layers (``layers``,
    ``min_evals``, ``max_evals``, ``max_N``, ``pool``, ``split``, ``heads``) change the list, the
    others are checked and change nothing here.

    Returns
    -------
    pandas.DataFrame
        One row per tensor (and per part of a split one): layer_id, name, layer_type, shape,
        dtype, N, M, rf, num_evals, analyze (bool) and the reason it is not analysed.
    """
    o = opts.make_options(**options)
    rec = runner.recipe(source, base_model=base_model, peft=peft, trust_pickle=trust_pickle,
                        feature="describe")
    return describe_frame(runner.describe(rec, o))


def analyze(source, *, base_model=None, peft=False, trust_pickle: bool = False,
            progress: Callable[[int, int, str], None] | None = None, scheduler=None,
            **options) -> Analysis:
    o = opts.make_options(**options)
    rec = runner.recipe(source, base_model=base_model, peft=peft, trust_pickle=trust_pickle)
    run = runner.run(rec, Analyze(), o, scheduler=scheduler, progress=progress,
                     seeded=bool(o.randomize or o.alpha_ci))
    o = run.options
    return Analysis(details=details_frame(run.outputs, o), skipped=skipped_frame(run.skipped),
                    source=run.source.describe(),
                    options={**o.as_dict(), "peft": peft, "base_model": rec.describe_base()},
                    seconds=run.seconds,
                    results={r.key: r for layer in run.outputs for r in layer.rows})


analyze.__doc__ = f"""Analyse every weight matrix of a model: ESD, power-law fit, WeightWatcher's metrics.

    Parameters
    ----------
    source : path, torch.nn.Module, state dict or array
        Anything :func:`tailscope.sources.open_source` reads.
{opts.docstring()}
    progress : callable(done, total, name), optional
        Called after each layer.
    scheduler : str or distributed.Client, optional
        Spread the layers over a Dask cluster (``tcp://host:8786`` or a client). A task carries
        the recipe (source, base model, adapter, split and head options) and the layer's place
        in the plan, and the worker plans the same layer itself from paths it can read; a model
        in memory (a module, a state dict, arrays) travels as its planned layers. The numbers
        are those of the local run.

    Returns
    -------
    Analysis

    Raises
    ------
    ValueError
        For a bad option or a meaningless combination, naming the option (e.g. ``fit='TPL'``
        with ``fix_fingers='clip_xmax'``).
    """


# --- quantization damage (issue 22) ------------------------------------------------------------
DAMAGE_COLUMNS = ("layer_id", "name", "base_name", "quant", "N", "M", "alpha_original",
                  "alpha_quantized", "delta_alpha", "rel_frobenius", "reason")


def quantization_damage(quantized, original, *, trust_pickle: bool = False,
                        **options) -> pd.DataFrame:
    """What quantization did to each layer: the quantized model's layers (dequantized as the
    reference libraries do, see docs/guide/quantized.md) paired by name with the original's.

    Not ``analyze(quantized, base_model=original)``: that analyses the spectrum of the
    difference W_q - W (the quantization noise), as ``base_model`` means for a fine-tune; this
    compares the two spectra and the weights.

    Parameters
    ----------
    quantized, original : path, module, state dict or arrays
        The quantized checkpoint and the model it was quantized from (any source
        :func:`analyze` reads; names are matched exactly, then without prefixes).
    **options
        :func:`analyze`'s options, used for both models (pooled layers only).

    Returns
    -------
    pandas.DataFrame
        One row per analysed layer of ``quantized``: layer_id, name, base_name (its match in
        ``original``), quant (what was stored), N, M, alpha_original, alpha_quantized,
        delta_alpha (quantized - original), rel_frobenius (||W_q - W||_F / ||W||_F, in float64)
        and the reason when a layer has no match or no fit.
    """
    from .sources.derived import NameIndex

    if options.get("pool", True) is False:
        raise ValueError("quantization_damage compares pooled layers; pool=False is not supported")
    q = analyze(quantized, trust_pickle=trust_pickle, **options)
    b = analyze(original, trust_pickle=trust_pickle, **options)
    qsrc = runner.recipe(quantized, trust_pickle=trust_pickle, feature="quantization_damage").open()
    bsrc = runner.recipe(original, trust_pickle=trust_pickle, feature="quantization_damage").open()
    qrefs = {r.name: r for r in qsrc}
    index = NameIndex(bsrc.refs)
    balpha = {n: a for n, a, s in zip(b.details["name"], b.details["alpha"], b.details["status"])
              if s == "success"}
    rows = []
    for _, row in q.details.iterrows():
        name = row["name"]
        out = {"layer_id": row["layer_id"], "name": name, "base_name": "",
               "quant": row.get("quant", ""), "N": row["N"], "M": row["M"],
               "alpha_original": np.nan, "alpha_quantized": np.nan, "delta_alpha": np.nan,
               "rel_frobenius": np.nan, "reason": row.get("reason", "") or ""}
        if row["status"] == "success":
            out["alpha_quantized"] = row["alpha"]
        match, why = index.find(name)
        if match is None:
            out["reason"] = why
            rows.append(out)
            continue
        out["base_name"] = match.name
        if match.name in balpha:
            out["alpha_original"] = balpha[match.name]
            out["delta_alpha"] = out["alpha_quantized"] - out["alpha_original"]
        try:
            out["rel_frobenius"] = _relative_error(qrefs[name].load(), match.load())
        except Exception as exc:  # noqa: BLE001 - the row says why
            out["reason"] = out["reason"] or (str(exc).splitlines()[0] or type(exc).__name__)
        rows.append(out)
    return pd.DataFrame(rows, columns=list(DAMAGE_COLUMNS))


def _relative_error(wq: np.ndarray, w: np.ndarray, rows: int = 4096) -> float:
    """||wq - w||_F / ||w||_F in float64, a block of rows at a time (memory: one block)."""
    wq, w = np.asarray(wq), np.asarray(w)
    if wq.shape != w.shape:
        raise ValueError(f"shapes differ: quantized {wq.shape}, original {w.shape}")
    a, b = wq.reshape(wq.shape[0], -1), w.reshape(w.shape[0], -1)
    num = den = 0.0
    for i in range(0, a.shape[0], rows):
        x, y = a[i:i + rows].astype(np.float64), b[i:i + rows].astype(np.float64)
        num += float(np.sum((x - y) ** 2))
        den += float(np.sum(y * y))
    return math.sqrt(num / den) if den > 0 else math.nan
