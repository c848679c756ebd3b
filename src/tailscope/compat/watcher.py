"""The facade class: ``tailscope.compat.WeightWatcher`` (see the package docstring)."""


from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
import pandas as pd

from ..analysis import Analysis, analyze, describe
from ..engine.columns import SUMMARY_METRICS
from ..engine.options import ALIASES
from ..engine.options import BY_NAME as OPTION_NAMES
from ..engine.result import details_frame
from . import derived, editing, figures, frames, vectors
from . import layers as wwl
from .extract import (
    extract_pytorch_bins,
    extract_pytorch_statedict_,
    read_pystatedict_config,
    write_pystatedict_config,
)
from .numbers import ANALYZE, DEFAULT_PARAMS, START_IDS, warn_differences, with_defaults

# WeightWatcher options that have no effect on the default analysis and may be passed as-is
_ACCEPTED_DEFAULTS = {k: ANALYZE[k] for k in ("fft", "channels", "inverse", "glorot_fix")}
# WeightWatcher options the facade itself acts on (figures), with their defaults
FACADE = {k: ANALYZE[k] for k in ("plot", "savefig", "deltas", "stacked", "intra", "sparsify",
                                  "conv2d_fft")}


def _svd_method(value) -> dict:
    if value not in (None, "fast", "accurate"):
        raise ValueError(f"svd_method={value!r}: use 'fast' or 'accurate'")
    return {"method": "svd"} if value == "accurate" else {}


def _pl_package(value) -> dict:  # one engine for every fit here (PL, TPL, E_TPL, xmin_peak)
    if value not in ("ww", "powerlaw"):
        raise ValueError(f"pl_package={value!r}: use 'ww' or 'powerlaw'")
    return {}


# WeightWatcher keywords that set a tailscope option under another name or another value
TRANSLATED = {"svd_method": _svd_method, "ww2x": lambda v: {"pool": False} if v else {},
              "pl_package": _pl_package}
# every tailscope option, by its own name, its aliases or WeightWatcher's name where that is the
# same (the options tailscope adds, e.g. seed, compare, gof, jobs, are accepted as extensions)
PASSED = frozenset(OPTION_NAMES) | frozenset(ALIASES)


def _facade_options(kwargs: dict) -> dict:
    """Pop the options the facade acts on (plot, savefig, deltas); checked as WeightWatcher's
    valid_params checks them (``savefig`` a str or a bool)."""
    out = {k: kwargs.pop(k, v) for k, v in FACADE.items()}
    if not figures.valid_savefig(out["savefig"]):
        raise ValueError(f"savefig={out['savefig']!r}: give a folder name or a bool")
    if out["conv2d_fft"] and (out["intra"] or kwargs.get("pool") is False):
        raise ValueError("conv2d_fft=True cannot be combined with intra=True or pool=False")
    if out["intra"] and (kwargs.get("randomize") or kwargs.get("vectors")):
        raise ValueError("intra=True cannot be combined with randomize=True or vectors=True")
    if out["intra"] and out["stacked"]:
        raise ValueError("intra=True and stacked=True cannot be combined")
    return out


def _FFT_SIZES(opts: dict) -> dict:  # noqa: N802
    """With conv2d_fft WeightWatcher applies neither min_evals nor max_evals (only max_N)."""
    return {"min_evals": 1, "max_evals": opts.get("max_N", ANALYZE["max_N"])}


def _translate(kwargs: dict) -> dict:
    out = {}
    for key, value in kwargs.items():
        if key in TRANSLATED:
            out.update(TRANSLATED[key](value))
        elif key in PASSED:
            out[key] = value
        elif key in _ACCEPTED_DEFAULTS:
            if value != _ACCEPTED_DEFAULTS[key]:
                raise ValueError(f"{key}={value!r} is not supported by tailscope.compat yet")
        else:
            raise ValueError(f"unknown WeightWatcher option {key}={value!r}")
    if out.get("fix_fingers") is False:
        out["fix_fingers"] = None
    return out


class WeightWatcher:
    """``weightwatcher.WeightWatcher`` with tailscope underneath."""

    def __init__(self, model: Any = None, framework: Any = None, base_model: Any = None,
                 log_level: Any = None):
        self.model = model
        self.base_model = base_model
        self.framework = wwl.infer_framework(model) if model is not None else None
        self.results = None  # WeightWatcher's attribute (never set there either)
        self.details: pd.DataFrame | None = None
        self.analysis: Analysis | None = None
        self._chosen = None  # WeightWatcher's layers of the last call (None: ids not mapped)
        self.figures: list = []  # the files the last analyze(plot=True) saved
        self.edited = None  # the EditedModel of the last SVDSmoothing / SVDSharpness

    def _model(self, model):
        """The model of this call; one passed here is remembered, as WeightWatcher's set_model_."""
        if model is not None:
            self.model = model
        if self.model is None:
            raise ValueError("no model: pass model= to WeightWatcher() or to this call")
        return self.model

    def set_model_(self, model, base_model=None) -> None:
        """Remember a model (and base model) passed to a call, as WeightWatcher does."""
        if model is not None:
            self.model = model
            if self.base_model is None:
                self.base_model = base_model
        self._model(None)
        self.framework = wwl.infer_framework(self.model)

    def _options(self, kwargs: dict) -> dict:
        warn_differences(kwargs)
        opts = with_defaults(_translate(kwargs))
        if opts.get("base_model") is None:
            opts["base_model"] = self.base_model
        opts.setdefault("split", False)  # WeightWatcher never splits fused tensors
        return opts

    def _layer_table(self, start_ids=0) -> list:
        """WeightWatcher's framework layers of the current model (empty when unknown)."""
        return wwl.ww_layers(self.model, start_ids)[1]

    def _selected(self, layers, start_ids, kwargs: dict) -> tuple[list | None, dict]:
        """(WeightWatcher's selected layers, None when its ids are not mapped for this input;
        ``kwargs`` with ``layers`` as the exact tensor names of those layers)."""
        kwargs = dict(kwargs)
        kwargs.pop("min_size", None), kwargs.pop("max_size", None)  # ignored, as there
        if start_ids is None or start_ids < 0:
            raise ValueError(f"start_ids={start_ids!r}: layer ids start at 0 or 1")
        table = [] if kwargs.get("peft") else self._layer_table(start_ids)
        if not table:
            if layers is not None and len(layers):
                kwargs["layers"] = list(layers)
            return None, kwargs
        chosen = wwl.select(table, layers, min_evals=0, max_evals=0, max_N=0)
        kwargs["layers"] = sorted({wwl.tensor_glob(e.tensor) for e in chosen})
        return chosen, kwargs

    def _analyze(self, model, kwargs: dict) -> pd.DataFrame:
        opts = self._options(kwargs)
        self.analysis = analyze(self._model(model), **opts)
        self.details = frames.analyze_frame(self.analysis.details, peft=opts.get("peft", False),
                                            chosen=self._chosen)
        return self.details

    def _derived(self, model, kwargs: dict, shown: dict, *, fit: bool):
        """stacked=True / intra=True: (the derived matrices' analysis or None, their rows)."""
        mode = "stacked" if shown["stacked"] else "intra"
        opts = self._options(kwargs)
        model = self._model(model)
        table = frames.describe_frame(describe(model, **{**opts, "pool": True}),
                                      peft=opts.get("peft", False), chosen=self._chosen)
        select = {k: opts[k] for k in derived.SELECTING if k in opts and k not in (
            "peft", "base_model")}
        mats = derived.layer_matrices(model, {**select, "pool": True},
                                      base_model=opts.get("base_model"),
                                      peft=opts.get("peft", False))
        if not mats:
            raise ValueError(f"{mode}=True: no layer to combine in this model")
        xs, ids = derived.derived_rows(mode, mats, table, sparsify=shown["sparsify"],
                                       seed=opts.get("seed"))
        if not fit:
            shapes = pd.DataFrame([{"N": max(x.shape), "M": min(x.shape)} for x in xs.values()])
            shapes["num_evals"] = shapes["M"]
            shapes["Q"] = shapes["N"] / shapes["M"]
            return None, frames.ww_order(derived.with_identity(shapes, ids))
        rest = {k: v for k, v in opts.items() if k not in derived.SELECTING}
        self.analysis = analyze(xs, min_evals=1, max_evals=10**9, max_N=10**9, **rest)
        self.details = frames.analyze_frame(derived.with_identity(self.analysis.details, ids))
        for col in ("layer_id", "name", "longname"):  # analyze_frame names rows by their tensor
            self.details[col] = [i[col] for i in ids]
        return self.analysis, self.details

    def _conv2d_fft(self, model, kwargs: dict) -> pd.DataFrame:
        """conv2d_fft=True: each conv2d layer's row from WeightWatcher's FFT ESD."""
        opts = self._options(kwargs)
        opts.update(_FFT_SIZES(opts))
        model = self._model(model)
        self.analysis = analyze(model, **opts)
        rest = {k: v for k, v in opts.items() if k not in ("peft", "base_model")}
        results, o = derived.conv2d_fft_layers(model, rest, base_model=opts.get("base_model"),
                                               peft=opts.get("peft", False))
        d = self.analysis.details.copy()
        if results:
            fft = details_frame(list(results.values()), o).set_index("layer_id")
            fft["num_evals"] = [len(r.rows[0].evals) if r.rows[0].evals is not None else 0
                                for r in results.values()]
            fft["rf"] = 1.0
            d["rf"] = d["rf"].astype(float)
            d = d.set_index("layer_id")
            d.loc[fft.index, fft.columns] = fft
            d = d.reset_index()[list(self.analysis.details.columns)]
        self.details = frames.analyze_frame(d, peft=opts.get("peft", False), chosen=self._chosen)
        return self.details

    def analyze(self, model=None, layers=None, start_ids: int = 0, base_model=None,
                **kwargs) -> pd.DataFrame:
        """WeightWatcher's ``analyze``: its details table, one row per layer, with its layer ids,
        names and columns (``layers``, ``start_ids``, ``base_model`` and its keywords as there)."""
        self.set_model_(model, base_model)
        model = None
        self._chosen, kwargs = self._selected(layers, start_ids, kwargs)
        if self._chosen is not None and not self._chosen:  # WeightWatcher: an empty table
            self.analysis, self.details, self.figures = None, pd.DataFrame(), []
            return self.details
        shown = _facade_options(kwargs)
        if shown["stacked"] or shown["intra"]:
            details = self._derived(model, kwargs, shown, fit=True)[1]
        elif shown["conv2d_fft"]:
            if shown["plot"]:
                raise ValueError("conv2d_fft=True: plot=True is not supported by "
                                 "tailscope.compat yet")
            details = self._conv2d_fft(model, kwargs)
        else:
            details = self._analyze(model, kwargs)
        self.figures = []
        if shown["plot"]:
            rows = frames.figure_rows(self.analysis.keys(), frames.analyze_frame(
                self.analysis.details, chosen=self._chosen, reorder=False))
            self.figures = figures.save_layer_figures(self.analysis, rows, shown["savefig"],
                                                      deltas=shown["deltas"])
            if kwargs.get("vectors") and not (shown["stacked"] or shown["intra"]):
                self.figures += self._vector_figures(rows, kwargs, shown["savefig"])
        return details

    def _vector_figures(self, rows, kwargs: dict, savefig) -> list:
        """vectors=True, plot=True: WeightWatcher's two eigenvector figures per row."""
        folder = figures.save_dir(savefig)
        if folder is None:
            return []
        opts = self._options(dict(kwargs))
        select = {k: opts[k] for k in derived.SELECTING if k in opts and k not in (
            "peft", "base_model")}
        mats = derived.layer_matrices(self.model, select, base_model=opts.get("base_model"),
                                      peft=opts.get("peft", False))
        index = {lid: i for i, lid in enumerate(dict.fromkeys(k[0] for k, _, _ in rows))}
        out = []
        for key, pid, title in rows:
            layer = mats[index[key[0]]]
            row = self.analysis.row(key)
            out += figures.save_vector_figures(
                layer if key[1] is None else [layer[key[1]]],
                row["xmin"] if row["status"] == "success" else None, pid, title, folder)
        return out

    def describe(self, model=None, layers=None, start_ids: int = 0, base_model=None,
                 **kwargs) -> pd.DataFrame:
        """WeightWatcher's ``describe``: the layers ``analyze`` would fit, nothing computed."""
        self.set_model_(model, base_model)
        model = None
        self._chosen, kwargs = self._selected(layers, start_ids, kwargs)
        if self._chosen is not None and not self._chosen:
            return pd.DataFrame()
        shown = _facade_options(kwargs)
        if shown["stacked"] or shown["intra"]:
            return self._derived(model, kwargs, shown, fit=False)[1]
        opts = self._options(kwargs)
        if shown["conv2d_fft"]:
            opts.update(_FFT_SIZES(opts))
        table = describe(self._model(model), **opts)
        d = frames.describe_frame(table, pool=opts.get("pool", True),
                                  peft=opts.get("peft", False), chosen=self._chosen)
        if shown["conv2d_fft"]:  # WeightWatcher's FFT ESD: min(kh, kw) * N * M values, rf 1
            conv = (d["layer_type"] == "conv2d").to_numpy()
            kernel = table.loc[table["analyze"], "shape"].str.split("x").to_list()
            side = np.array([min(int(k[2]), int(k[3])) if len(k) == 4 else 1 for k in kernel])
            d["num_evals"] = np.where(conv, side * d["N"] * d["M"], d["num_evals"])
            d["rf"] = 1.0
        return d

    def get_details(self) -> pd.DataFrame:
        """The table of the last ``analyze`` call."""
        if self.details is None:
            raise ValueError("call analyze() first")
        return self.details

    def get_summary(self, details: pd.DataFrame | None = None) -> dict:
        """Means of WeightWatcher's summary metrics over successful layers."""
        d = self.get_details() if details is None else details
        ok = d[d["status"] == "success"] if "status" in d else d
        keys = tuple(k for k in SUMMARY_METRICS if k != "D") + \
            (("mp_softrank",) if "mp_softrank" in d else ())
        return {k: float(ok[k].mean()) if len(ok) else float("nan") for k in keys if k in d}

    def distances(self, model_1, model_2, method: str = "raw", layers=None, start_ids: int = 0,
                  pool: bool = True, channels=None) -> tuple:
        """``(avg_dW, avg_db, details)`` as WeightWatcher's: layers by its ids of ``model_1``,
        matched by name in ``model_2``."""
        if channels is not None:
            raise ValueError("distances: channels= is not supported (tailscope reads each "
                             "framework's own layout)")
        if start_ids is None or start_ids < 0:
            raise ValueError(f"start_ids={start_ids!r}: layer ids start at 0 or 1")
        table = wwl.ww_layers(model_1, start_ids)[1]  # WeightWatcher's ids of model_1
        chosen = wwl.select(table, layers, min_evals=0, max_evals=0, max_N=0) if table else None
        if chosen is not None:
            layers = sorted({wwl.tensor_glob(e.tensor) for e in chosen})
        opts = self._options({"layers": list(layers or []) or None, "pool": pool})
        return editing.distances(model_1, model_2, method=method, chosen=chosen, **opts)

    # --- one layer, by WeightWatcher's id or name ---------------------------------------------
    def _entry(self, model, layer, start_ids: int = 0):
        """The framework layer ``layer`` (a WeightWatcher layer_id or name) of the model, among
        those ``describe()`` lists; None when there is none (WeightWatcher returns [])."""
        self.set_model_(model)
        if not isinstance(layer, (numbers.Integral, str)) or isinstance(layer, bool):
            raise ValueError(f"layer={layer!r}: give a layer_id or a layer name")
        table = self._layer_table(start_ids)
        listed = wwl.select(table, None)
        if not any(e.layer_id == layer if isinstance(layer, numbers.Integral)
                   else e.name == layer for e in listed):
            return None
        hits = wwl.select(table, [layer], min_evals=0, max_evals=0, max_N=0)
        return hits[0] if hits else None

    def get_ESD(self, model=None, layer=None, random: bool = False, params=None,  # noqa: N802
                **kwargs) -> np.ndarray:
        """Eigenvalues of one layer (its WeightWatcher layer_id or name), read from the model as
        it is now; ``random=True``: of its element-shuffled matrix; ``params``: a WeightWatcher
        params dict (its layer-selection and ESD keys are honoured). An empty array when there is
        no such layer, as WeightWatcher."""
        if layer is None:
            raise ValueError("get_ESD needs layer= (a layer_id or a name)")
        self.set_model_(model)
        opts = {**frames.esd_params(params), **kwargs}
        if random:
            opts["randomize"] = True
        e = self._entry(None, layer, opts.pop("start_ids", 0))
        if e is None:
            if self._layer_table():  # WeightWatcher logs an error and returns []
                warnings.warn(f"get_ESD: no layer {layer!r} among this model's analysable layers",
                              stacklevel=2)
                return np.array([])
            opts["layers"] = [layer]  # a format without WeightWatcher ids: tailscope's own
            a = analyze(self.model, **self._options(opts))
            keys = a.keys()
            if not keys:
                raise ValueError(f"get_ESD: no analysed layer {layer!r} in this model")
            return a.randomized(keys[0]).evals if random else a.esd(keys[0])
        opts = self._options(opts)
        opts.update(layers=[wwl.tensor_glob(e.tensor)], min_evals=0, max_evals=0, max_N=0)
        a = analyze(self.model, **opts)
        key = a.key(e.tensor)
        return a.randomized(key).evals if random else a.esd(key)

    def SVDSmoothing(self, model=None, percent=0.8, pool=True, layers=(),  # noqa: N802
                     method="detX", fit="PL", plot=False, start_ids=0, svd_method="fast"):
        """Keep each layer's top singular components (WeightWatcher's methods: 'detX' (its
        default), 'svd' (``percent`` of them; negative: remove the top ones), 'alpha_min',
        'rmt'); the model is edited in place and returned."""
        if not pool:
            raise ValueError("SVDSmoothing supports pool=True only (as WeightWatcher)")
        _svd_method(svd_method)  # checked; tailscope's truncation is exact either way
        self.set_model_(model)
        opts = self._options(self._selected(list(layers) or None, start_ids, {"fit": fit})[1])
        layers_ = opts.pop("layers", None)
        opts.pop("base_model", None)
        self.model, self.edited = editing.svd_smoothing(
            self._model(model), percent=percent, method=method, layers=layers_, options=opts)
        return self.model

    def SVDSharpness(self, model=None, pool=True, layers=(), plot=False,  # noqa: N802
                     start_ids=0):
        """Remove each layer's correlation traps; the model is edited in place. Returns the
        ``model`` argument (None when not given), as WeightWatcher."""
        if not pool:
            raise ValueError("SVDSharpness supports pool=True only (as WeightWatcher)")
        self.set_model_(model)
        opts = self._options(self._selected(list(layers) or None, start_ids, {})[1])
        layers_ = opts.pop("layers", None)
        opts.pop("base_model", None)
        self.model, self.edited = editing.svd_sharpness(self._model(model), layers=layers_,
                                                        options=opts)
        return None if model is None else self.model

    def analyze_vectors(self, model=None, layers=(), min_evals=8, max_evals=15000, plot=True,
                        savefig=figures.DEF_SAVE_DIR, channels=None):
        """The eigenvector metrics of each layer (``analyze(vectors=True)``'s columns, and with
        ``plot=True`` its ``vector_metrics`` and ``vector_histograms`` figures); returns None as
        WeightWatcher, the table is ``get_details()``."""
        self.analyze(model=model, layers=list(layers), min_evals=min_evals,
                     max_evals=max_evals, vectors=True, channels=channels, plot=plot,
                     savefig=savefig)

    valid_vectors = staticmethod(vectors.valid_vectors)

    def iterate_vectors(self, vectors):
        """The vectors one by one (rows of a 2-D array, items of a list, or the one vector)."""
        from .vectors import iterate_vectors

        return iterate_vectors(vectors)

    def vector_metrics(self, vectors=None, params=None) -> pd.DataFrame:
        """length, entropy, discrete_entropy, localization_ratio, participation_ratio per
        vector."""
        from .vectors import vector_metrics

        return vector_metrics(vectors)

    def get_Weights(self, model=None, layer=None, params=None) -> list:  # noqa: N802
        """The weight matrices WeightWatcher analyses for one layer (``Wmats``); [] when none."""
        e = self._entry(model, layer)
        return [] if e is None else wwl.WWLayer(wwl.framework_layer(e), params).Wmats

    def get_framework_layer(self, model=None, layer=None, params=None):
        """The framework's own layer object (the torch module; the key of a state dict)."""
        e = self._entry(model, layer)
        return [] if e is None else e.layer

    # --- WeightWatcher's iterators ------------------------------------------------------------
    def make_layer_iterator(self, model=None, layers=None, params=None, base_model=None):
        """WeightWatcher's layer iterator: a ``WWLayer`` for each selected, supported layer."""
        self.set_model_(model, base_model)
        params = {**DEFAULT_PARAMS, **(params or {})}
        if not self.valid_params(params):
            raise ValueError(f"params not valid: {params}")
        if base_model is not None:
            return self.make_delta_layer_iterator(base_model, model=self.model, filters=layers,
                                                  params=params)
        return wwl.iterate(self._layer_table(params[START_IDS]), layers, params)

    def make_delta_layer_iterator(self, base_model, model=None, filters=None, params=None,
                                  Iterator_Class=None):  # noqa: N803
        """Layers of ``model`` with Wmats = W_model - W_base (WeightWatcher's delta iterator)."""
        params = {**DEFAULT_PARAMS, **(params or {})}
        model = self._model(model)
        start = params[START_IDS]
        left = wwl.iterate(wwl.ww_layers(model, start)[1], filters, params)
        right = list(wwl.iterate(wwl.ww_layers(base_model, start)[1],
                                 filters, params))
        return wwl.delta_iterate(left, right)

    def apply_permute_W(self, ww_layer, params=None):  # noqa: N802
        """Shuffle the elements of each of the layer's ``Wmats``, reversibly (the permutations are
        kept in ``permute_ids``); seeded by ``params['seed']`` (default 0), where WeightWatcher's
        are drawn from the global unseeded state."""
        seed = (params or {}).get("seed", 0) or 0
        rng = np.random.default_rng([int(seed), int(getattr(ww_layer, "layer_id", 0) or 0)])
        mats, ids = [], []
        for W in ww_layer.Wmats:
            p = rng.permutation(W.size)
            mats.append(np.asarray(W).reshape(-1)[p].reshape(W.shape))
            ids.append(p)
        ww_layer.Wmats, ww_layer.permute_ids = mats, ids
        return ww_layer

    def apply_unpermute_W(self, ww_layer, params=None):  # noqa: N802
        """Undo :meth:`apply_permute_W`."""
        ids = getattr(ww_layer, "permute_ids", None)
        if not ids or len(ids) != len(ww_layer.Wmats):
            raise ValueError("apply_unpermute_W: the layer was not permuted by apply_permute_W")
        ww_layer.Wmats = [np.asarray(W).reshape(-1)[np.argsort(p)].reshape(W.shape)
                          for W, p in zip(ww_layer.Wmats, ids)]
        ww_layer.permute_ids = []
        return ww_layer

    def replace_layer_weights(self, idx, framework_layer, W, B=None) -> None:
        """Write W (and B) back into the framework layer."""
        framework_layer.replace_layer_weights(W, B=B)

    # --- WeightWatcher's static helpers -------------------------------------------------------
    infer_framework = staticmethod(wwl.infer_framework)
    infer_model_file_format = staticmethod(wwl.infer_model_file_format)
    layer_type_from_str = staticmethod(wwl.layer_type_from_str)

    @staticmethod
    def valid_framework(framework) -> bool:
        """Whether ``framework`` is one of WeightWatcher's framework names."""
        return framework in wwl.FRAMEWORKS

    @staticmethod
    def valid_params(params: dict) -> bool:
        """WeightWatcher's check of a params dict (its keys): False when invalid."""
        return wwl.valid_params(params)

    def normalize_params(self, params: dict) -> dict:
        """WeightWatcher 0.7.7's syntactic sugar, applied to ``params`` in place and returned:
        ``fit`` 'PL' -> 'power_law', 'TPL' -> 'truncated_power_law', 'E_TPL' ->
        'truncated_power_law' with ``fix_fingers='xmin_peak'``; ``channels`` 'first'/'last' kept
        as its CHANNELS names (the same strings). Like 0.7.7, ``params`` needs the keys 'fit' and
        'channels' (a KeyError otherwise)."""
        fit = params["fit"]
        if fit == "PL":
            params["fit"] = "power_law"
        elif fit == "TPL":
            params["fit"] = "truncated_power_law"
        elif fit == "E_TPL":
            params["fit"] = "truncated_power_law"
            params["fix_fingers"] = "xmin_peak"
        if params["channels"] in ("first", "last"):
            params["channels"] = str(params["channels"])
        return params

    extract_pytorch_statedict_ = staticmethod(extract_pytorch_statedict_)
    extract_pytorch_bins = staticmethod(extract_pytorch_bins)
    read_pystatedict_config = staticmethod(read_pystatedict_config)
    write_pystatedict_config = staticmethod(write_pystatedict_config)

    @staticmethod
    def read_keras_h5_file(model_dir):
        """The Keras model of the one ``*.h5`` file in ``model_dir`` (needs TensorFlow/Keras)."""
        return wwl.read_keras_h5_file(model_dir)
