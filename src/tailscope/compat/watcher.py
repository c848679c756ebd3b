"""The facade class: ``tailscope.compat.WeightWatcher`` (see the package docstring)."""


from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..analysis import Analysis, analyze, describe
from ..engine.columns import SUMMARY_METRICS
from ..engine.options import ALIASES
from ..engine.options import BY_NAME as OPTION_NAMES
from .numbers import warn_differences, with_defaults

# WeightWatcher options that have no effect on the default analysis and may be passed as-is
_ACCEPTED_DEFAULTS = {"plot": False, "conv2d_fft": False, "fft": False, "deltas": False,
                      "intra": False, "channels": None, "stacked": False, "inverse": False,
                      "glorot_fix": False, "start_ids": 0, "min_size": None, "max_size": None,
                      "sparsify": True}


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


def _ww_frame(details: pd.DataFrame) -> pd.DataFrame:
    """tailscope's details with WeightWatcher's column names: name = module path, longname."""
    d = details.rename(columns={"name": "tensor_name"})
    d.insert(1, "name", d["module"])
    d.insert(2, "longname", d["module"])
    d["has_esd"] = d["status"] == "success"
    return d


class WeightWatcher:
    """``weightwatcher.WeightWatcher`` with tailscope underneath."""

    def __init__(self, model: Any = None, framework: Any = None, base_model: Any = None,
                 log_level: Any = None):
        self.model = model
        self.base_model = base_model
        self.details: pd.DataFrame | None = None
        self.analysis: Analysis | None = None

    def _model(self, model):
        model = self.model if model is None else model
        if model is None:
            raise ValueError("no model: pass model= to WeightWatcher() or to this call")
        return model

    def _options(self, kwargs: dict) -> dict:
        warn_differences(kwargs)
        opts = with_defaults(_translate(kwargs))
        if opts.get("base_model") is None:
            opts["base_model"] = self.base_model
        return opts

    def analyze(self, model=None, **kwargs) -> pd.DataFrame:
        self.analysis = analyze(self._model(model), **self._options(kwargs))
        self.details = _ww_frame(self.analysis.details)
        return self.details

    def describe(self, model=None, **kwargs) -> pd.DataFrame:
        d = describe(self._model(model), **self._options(kwargs))
        d = d[d["analyze"]].copy()
        d.insert(1, "longname", d["name"].str.replace(r"\.weight$", "", regex=True))
        return d.reset_index(drop=True)

    def get_details(self) -> pd.DataFrame:
        if self.details is None:
            raise ValueError("call analyze() first")
        return self.details

    def get_summary(self, details: pd.DataFrame | None = None) -> dict:
        """Means of WeightWatcher's summary metrics over successful layers."""
        d = self.get_details() if details is None else details
        ok = d[d["status"] == "success"]
        keys = tuple(k for k in SUMMARY_METRICS if k != "D") + \
            (("mp_softrank",) if "mp_softrank" in d else ())
        return {k: float(ok[k].mean()) if len(ok) else float("nan") for k in keys}

    def distances(self, model_1, model_2, method: str = "raw", layers=None, start_ids: int = 0,
                  pool: bool = True, channels=None) -> tuple:
        """``(avg_dW, avg_db, details)`` as WeightWatcher's, layers matched by name."""
        if start_ids or not pool or channels is not None:
            raise ValueError("distances: start_ids, pool=False and channels are not supported")
        from ..edit import distances

        d = distances(model_1, model_2, method=method, layers=layers or None)
        return d.delta_W, d.delta_b, d.details

    def get_ESD(self, model=None, layer=None, **kwargs) -> np.ndarray:  # noqa: N802
        """Eigenvalues of one layer (its layer_id or name), as analysed."""
        if layer is None:
            raise ValueError("get_ESD needs layer= (a layer_id or a name)")
        if self.analysis is None or model is not None:
            self.analysis = analyze(self._model(model), **self._options(kwargs))
            self.details = _ww_frame(self.analysis.details)
        return self.analysis.esd(layer)
