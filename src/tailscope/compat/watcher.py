"""The facade class: ``tailscope.compat.WeightWatcher`` (see the package docstring)."""


from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import pandas as pd

from ..analysis import Analysis, analyze, describe
from ..engine.columns import SUMMARY_METRICS
from ..engine.options import ALIASES
from ..engine.options import BY_NAME as OPTION_NAMES
from . import layers as wwl
from .extract import (
    extract_pytorch_bins,
    extract_pytorch_statedict_,
    read_pystatedict_config,
    write_pystatedict_config,
)
from .layers import DEFAULT_PARAMS, START_IDS
from .numbers import warn_differences, with_defaults

# WeightWatcher options that have no effect on the default analysis and may be passed as-is
_ACCEPTED_DEFAULTS = {"plot": False, "conv2d_fft": False, "fft": False, "deltas": False,
                      "intra": False, "channels": None, "stacked": False, "inverse": False,
                      "glorot_fix": False, "sparsify": True}


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
              "pl_package": _pl_package, "savefig": lambda v: {}}  # savefig: only with plot=True
# every tailscope option, by its own name, its aliases or WeightWatcher's name where that is the
# same (the options tailscope adds, e.g. seed, compare, gof, jobs, are accepted as extensions)
PASSED = frozenset(OPTION_NAMES) | frozenset(ALIASES)


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


def _ww_ids(d: pd.DataFrame, chosen: list, tensor_col: str) -> pd.DataFrame:
    """Rows in WeightWatcher's layer order with its layer_id, name, longname and layer_type (a
    tensor that is two of its layers, e.g. tied or wrapped, gives two rows)."""
    parts = []
    for e in chosen:
        rows = d[d[tensor_col] == e.tensor]
        if rows.empty:
            continue
        rows = rows.copy()
        rows["layer_id"], rows["name"] = e.layer_id, e.name
        rows["longname"], rows["layer_type"] = e.longname, e.the_type
        parts.append(rows)
    if not parts:
        return d.iloc[0:0].copy()
    return pd.concat(parts, ignore_index=True)


def _ww_frame(details: pd.DataFrame, chosen: list | None = None) -> pd.DataFrame:
    """tailscope's details with WeightWatcher's column names: name = module path, longname; with
    WeightWatcher's layers (``chosen``), its ids, names and types."""
    d = details.rename(columns={"name": "tensor_name"})
    d.insert(1, "name", d["module"])
    d.insert(2, "longname", d["module"])
    d["has_esd"] = d["status"] == "success"
    return d if chosen is None else _ww_ids(d, chosen, "tensor_name")


class WeightWatcher:
    """``weightwatcher.WeightWatcher`` with tailscope underneath."""

    def __init__(self, model: Any = None, framework: Any = None, base_model: Any = None,
                 log_level: Any = None):
        self.model = model
        self.base_model = base_model
        self.framework = wwl.infer_framework(model) if model is not None else None
        self.details: pd.DataFrame | None = None
        self.analysis: Analysis | None = None
        self.results = None  # WeightWatcher's attribute (never set there either)

    def _model(self, model):
        model = self.model if model is None else model
        if model is None:
            raise ValueError("no model: pass model= to WeightWatcher() or to this call")
        return model

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

    def _selected(self, layers, start_ids, kwargs) -> tuple[list | None, dict]:
        """(WeightWatcher's selected layers, None when ids are not mapped; tailscope options)."""
        kwargs = dict(kwargs)
        kwargs.pop("min_size", None), kwargs.pop("max_size", None)  # ignored, as there
        if start_ids is None or start_ids < 0:
            raise ValueError(f"start_ids={start_ids!r}: layer ids start at 0 or 1")
        opts = self._options(kwargs)
        table = [] if opts.get("peft") else self._layer_table(start_ids)
        if not table:
            if layers is not None and len(layers):
                opts["layers"] = layers
            return None, opts
        chosen = wwl.select(table, layers, min_evals=0, max_evals=0, max_N=0)
        opts["layers"] = sorted({wwl.tensor_glob(e.tensor) for e in chosen})
        return chosen, opts

    def analyze(self, model=None, layers=None, start_ids: int = 0, base_model=None,
                **kwargs) -> pd.DataFrame:
        self.set_model_(model, base_model)
        chosen, opts = self._selected(layers, start_ids, kwargs)
        if chosen is not None and not chosen:
            self.analysis, self.details = None, pd.DataFrame()
            return self.details
        self.analysis = analyze(self.model, **opts)
        self.details = _ww_frame(self.analysis.details, chosen)
        return self.details

    def describe(self, model=None, layers=None, start_ids: int = 0, base_model=None,
                 **kwargs) -> pd.DataFrame:
        self.set_model_(model, base_model)
        chosen, opts = self._selected(layers, start_ids, kwargs)
        if chosen is not None and not chosen:
            return pd.DataFrame()
        d = describe(self.model, **opts)
        d = d[d["analyze"]].copy()
        d.insert(1, "longname", d["name"].str.replace(r"\.weight$", "", regex=True))
        d = d.reset_index(drop=True)
        return d if chosen is None else _ww_ids(d, chosen, "name")

    def get_details(self) -> pd.DataFrame:
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
        """``(avg_dW, avg_db, details)`` as WeightWatcher's, layers matched by name."""
        if not pool or channels is not None:
            raise ValueError("distances: pool=False and channels are not supported")
        from ..edit import distances

        table = wwl.ww_layers(model_1, start_ids)[1]  # WeightWatcher's ids of model_1
        chosen = wwl.select(table, layers, min_evals=0, max_evals=0, max_N=0) if table else None
        if chosen is not None:
            layers = sorted({wwl.tensor_glob(e.tensor) for e in chosen})
        d = distances(model_1, model_2, method=method, layers=layers or None, split=False)
        details = d.details if chosen is None else _ww_ids(d.details, chosen, "name")
        return d.delta_W, d.delta_b, details

    # --- one layer, by WeightWatcher's id or name ---------------------------------------------
    def _entry(self, model, layer):
        """The framework layer ``layer`` (a WeightWatcher layer_id or name) of the model, among
        those ``describe()`` lists; None when there is none (WeightWatcher returns [])."""
        self.set_model_(model)
        if not isinstance(layer, (numbers.Integral, str)) or isinstance(layer, bool):
            raise ValueError(f"layer={layer!r}: give a layer_id or a layer name")
        table = self._layer_table()
        listed = wwl.select(table, None)
        if not any(e.layer_id == layer if isinstance(layer, numbers.Integral)
                   else e.name == layer for e in listed):
            return None
        hits = wwl.select(table, [layer], min_evals=0, max_evals=0, max_N=0)
        return hits[0] if hits else None

    def get_ESD(self, model=None, layer=None, random: bool = False, params=None,  # noqa: N802
                **kwargs) -> np.ndarray:
        """Eigenvalues of one layer (its WeightWatcher layer_id or name), read from the model as
        it is now; an empty array when there is no such layer (as WeightWatcher)."""
        if layer is None:
            raise ValueError("get_ESD needs layer= (a layer_id or a name)")
        self.set_model_(model)
        e = self._entry(None, layer)
        if e is None:
            if not self._layer_table():  # a format without WeightWatcher ids: tailscope's own
                a = analyze(self.model, **self._options(kwargs))
                return a.esd(layer)
            return np.array([])
        opts = self._options(kwargs)
        opts.update(layers=[wwl.tensor_glob(e.tensor)], min_evals=0, max_evals=0, max_N=0)
        if random:
            opts["randomize"] = True
        a = analyze(self.model, **opts)
        key = a.key(e.tensor)
        return a.random_esd(key) if random else a.esd(key)

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
        return wwl.iterate(self._layer_table(params.get(START_IDS, 0)), layers, params)

    def make_delta_layer_iterator(self, base_model, model=None, filters=None, params=None,
                                  Iterator_Class=None):  # noqa: N803
        """Layers of ``model`` with Wmats = W_model - W_base (WeightWatcher's delta iterator)."""
        params = {**DEFAULT_PARAMS, **(params or {})}
        model = self._model(model)
        start = params.get(START_IDS, 0)
        left = wwl.iterate(wwl.ww_layers(model, start)[1], filters, params)
        right = list(wwl.iterate(wwl.ww_layers(base_model, start)[1],
                                 filters, params))
        return wwl.delta_iterate(left, right)

    def replace_layer_weights(self, idx, framework_layer, W, B=None) -> None:
        """Write W (and B) back into the framework layer."""
        framework_layer.replace_layer_weights(W, B=B)

    # --- WeightWatcher's static helpers -------------------------------------------------------
    infer_framework = staticmethod(wwl.infer_framework)
    infer_model_file_format = staticmethod(wwl.infer_model_file_format)
    layer_type_from_str = staticmethod(wwl.layer_type_from_str)

    @staticmethod
    def valid_framework(framework) -> bool:
        return framework in wwl.FRAMEWORKS

    @staticmethod
    def valid_params(params: dict) -> bool:
        """WeightWatcher's check of a params dict (its keys): False when invalid."""
        return wwl.valid_params(params)

    extract_pytorch_statedict_ = staticmethod(extract_pytorch_statedict_)
    extract_pytorch_bins = staticmethod(extract_pytorch_bins)
    read_pystatedict_config = staticmethod(read_pystatedict_config)
    write_pystatedict_config = staticmethod(write_pystatedict_config)

    @staticmethod
    def read_keras_h5_file(model_dir):
        """The Keras model of the one ``*.h5`` file in ``model_dir`` (needs TensorFlow/Keras)."""
        return wwl.read_keras_h5_file(model_dir)
