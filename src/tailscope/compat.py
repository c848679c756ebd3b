"""A WeightWatcher-shaped facade over :mod:`tailscope.analysis`: switching is one import.

    from tailscope.compat import WeightWatcher      # was: from weightwatcher import WeightWatcher
    watcher = WeightWatcher(model=model)
    details = watcher.analyze()
    summary = watcher.get_summary()

Differences, on purpose: the summary averages successful layers only (WeightWatcher averages failed
fits in as alpha = -1); failed layers carry NaN, not -1, and no 'over-trained' warning;
``get_ESD`` returns the eigenvalues ``analyze`` used (WeightWatcher's skips ``conv2d_norm``, so its
conv2d ESDs are twice those it fits). ``base_model`` gives the update W - W_base of every layer
matched by name (WeightWatcher's substring match on the layer order silently analyses an unmatched
layer's own W); ``peft`` analyses LoRA updates as WeightWatcher does, ``'with_base'`` with the full
spectrum of W + BA (WeightWatcher keeps only its top r eigenvalues). Options tailscope does not
offer yet raise a ``ValueError`` instead of being silently ignored. ``mp_fit``, ``randomize`` and
``detX`` (alias ``ERG``, as in WeightWatcher 0.7.7) are passed on, with ``seed=`` for reproducible
shuffles (an extra option: WeightWatcher's shuffles cannot be seeded).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .analysis import Analysis, analyze, describe

# WeightWatcher options that have no effect on the default analysis and may be passed as-is
_ACCEPTED_DEFAULTS = {"plot": False, "ww2x": False,
                      "conv2d_fft": False, "fft": False, "deltas": False, "intra": False,
                      "channels": None, "stacked": False,
                      "svd_method": None, "pl_package": "ww", "inverse": False, "glorot_fix": False,
                      "savefig": None,
                      "start_ids": 0, "min_size": None, "max_size": None, "sparsify": True}
_PASSED = ("layers", "min_evals", "max_evals", "max_N", "conv2d_norm", "pool", "fit", "xmax",
           "fix_fingers", "xmin_max", "max_fingers", "finger_thresh", "tolerance", "normalize",
           "mp_fit", "randomize", "detX", "ERG", "seed", "vectors", "compare", "gof")


def _translate(kwargs: dict) -> dict:
    out = {}
    for key, value in kwargs.items():
        if key in _PASSED or key in ("base_model", "peft"):
            out[key] = value
        elif key == "ww2x" and value:
            out["pool"] = False
        elif key == "svd_method":
            if value not in (None, "fast", "accurate"):
                raise ValueError(f"svd_method={value!r}: use 'fast' or 'accurate'")
            if value == "accurate":
                out["method"] = "svd"
        elif key == "pl_package":  # one engine for every fit here (PL, TPL, E_TPL, xmin_peak)
            if value not in ("ww", "powerlaw"):
                raise ValueError(f"pl_package={value!r}: use 'ww' or 'powerlaw'")
        elif key == "savefig":
            continue  # only used with plot=True, which is refused below
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
        opts = _translate(kwargs)
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
        keys = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm",
                "stable_rank") + (("mp_softrank",) if "mp_softrank" in d else ())
        return {k: float(ok[k].mean()) if len(ok) else float("nan") for k in keys}

    def distances(self, model_1, model_2, method: str = "raw", layers=None, start_ids: int = 0,
                  pool: bool = True, channels=None) -> tuple:
        """``(avg_dW, avg_db, details)`` as WeightWatcher's, layers matched by name."""
        if start_ids or not pool or channels is not None:
            raise ValueError("distances: start_ids, pool=False and channels are not supported")
        from .edit import distances

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
