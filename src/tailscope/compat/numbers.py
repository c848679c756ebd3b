"""The facade's numbers: the engine options that make ``tailscope.compat.WeightWatcher`` compute
what WeightWatcher 0.7.7 computes.

WeightWatcher 0.7.7 differs from 0.7.5.5 in two defaults the facade follows: ``min_evals=8``
(tailscope's own default stays 10) and its small-sample power-law fit for ESDs with fewer than 20
eigenvalues, which the facade runs as it is written to work (``small_n=True``: xmin minimises
J = D - 0.868 / sqrt(n)); WeightWatcher 0.7.7's constructor then re-chooses xmin by D alone, and
prints "SMALL N PL FIT" to stdout, neither of which the facade repeats (see the README's table).
"""

from __future__ import annotations

import warnings

# WeightWatcher 0.7.7's own defaults, declared once here (tests/test_compat.py holds them to the
# installed weightwatcher 0.7.7): the keyword defaults of its ``analyze`` (``describe`` takes a
# subset of them, with the same defaults) ...
ANALYZE = {"layers": (), "min_evals": 8, "max_evals": 15000, "min_size": None, "max_size": None,
           "max_N": 50000, "glorot_fix": False, "plot": False, "randomize": False,
           "savefig": "ww-img", "mp_fit": False, "conv2d_norm": True, "ww2x": False,
           "pool": True, "conv2d_fft": False, "fft": False, "deltas": False, "intra": False,
           "vectors": False, "channels": None, "stacked": False, "fix_fingers": False,
           "xmin_max": None, "max_fingers": 10, "finger_thresh": 1.0, "fit": "PL",
           "sparsify": True, "detX": False, "ERG": False, "svd_method": "fast",
           "tolerance": 1e-6, "start_ids": 0, "pl_package": "ww", "xmax": None,
           "base_model": None, "peft": False, "inverse": False}
# ... and the params dict its layer iterators and get_ESD read (``constants.DEFAULT_PARAMS``)
START_IDS = "layer_ids_start"  # the params key of start_ids
DEFAULT_PARAMS = {"glorot_fix": False, "normalize": False, "conv2d_norm": True, "randomize": True,
                  "savedir": "ww-img", "savefig": True, "rescale": True, "plot": False,
                  "deltaEs": False, "intra": False, "channels": None, "fft": False,
                  "conv2d_fft": False, "ww2x": False, "pool": True, "vectors": True,
                  "smooth": None, "stacked": False, "svd_method": "fast", "fix_fingers": None,
                  "fit": "power_law", "MAX_FINGERS": 10, "finger_thresh": 1.0, "sparsify": True,
                  "detX": True, "mp_fit": False, "min_evals": 8, "max_evals": 15000,
                  "max_N": 50000, "tolerance": 1e-6, START_IDS: 0, "add_biases": False,
                  "xmin_max": None, "pl_package": "ww", "xmax": None, "peft": False,
                  "inverse": False}

# WeightWatcher 0.7.7's defaults where they differ from tailscope's own
DEFAULTS = {"min_evals": ANALYZE["min_evals"], "small_n": True, "ww_fingers": True}


def with_defaults(options: dict) -> dict:
    """``options`` (already in tailscope's names) with WeightWatcher 0.7.7's defaults added where
    the caller gave none."""
    return {**DEFAULTS, **options}


def differences(kwargs: dict) -> list[str]:
    """What the facade computes differently from WeightWatcher 0.7.7 for these keywords
    (WeightWatcher's names), on purpose, one line each (see the README's table)."""
    out = []
    pl_package = kwargs.get("pl_package", "ww")
    if kwargs.get("xmax") == "force" and pl_package == "powerlaw":
        out.append("xmax='force': the power law truncated at the largest eigenvalue is fitted by "
                   "exact maximum likelihood; WeightWatcher with powerlaw 1.5 maximises the "
                   "untruncated likelihood, a biased alpha")
    fit = kwargs.get("fit", "PL")
    if pl_package == "ww" and (kwargs.get("fix_fingers") == "xmin_peak" or
                               fit in ("TPL", "truncated_power_law", "E_TPL")):
        out.append(f"{'fix_fingers=xmin_peak' if fit == 'PL' else f'fit={fit!r}'} runs with "
                   "pl_package='ww' (WeightWatcher fails that fit or refuses the options)")
    return out


def warn_differences(kwargs: dict) -> None:
    """One warning at the call for each deliberate difference from WeightWatcher 0.7.7."""
    for text in differences(kwargs):
        warnings.warn(f"tailscope.compat differs from WeightWatcher here: {text}", UserWarning,
                      stacklevel=4)


__all__ = ["ANALYZE", "DEFAULTS", "DEFAULT_PARAMS", "START_IDS", "differences", "warn_differences",
           "with_defaults"]
