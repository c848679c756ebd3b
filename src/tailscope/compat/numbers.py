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

# WeightWatcher 0.7.7's defaults where they differ from tailscope's own
DEFAULTS = {"min_evals": 8, "small_n": True, "ww_fingers": True}


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


__all__ = ["DEFAULTS", "differences", "warn_differences", "with_defaults"]
