"""The facade's numbers: the engine options that make ``tailscope.compat.WeightWatcher`` compute
what WeightWatcher 0.7.7 computes.

WeightWatcher 0.7.7 differs from 0.7.5.5 in two defaults the facade follows: ``min_evals=8``
(tailscope's own default stays 10) and its small-sample power-law fit for ESDs with fewer than 20
eigenvalues, which the facade runs as it is written to work (``small_n=True``: xmin minimises
J = D - 0.868 / sqrt(n)); WeightWatcher 0.7.7's constructor then re-chooses xmin by D alone, and
prints "SMALL N PL FIT" to stdout, neither of which the facade repeats (see the README's table).
"""

from __future__ import annotations

# WeightWatcher 0.7.7's defaults where they differ from tailscope's own
DEFAULTS = {"min_evals": 8, "small_n": True, "ww_fingers": True}


def with_defaults(options: dict) -> dict:
    """``options`` (already in tailscope's names) with WeightWatcher 0.7.7's defaults added where
    the caller gave none."""
    return {**DEFAULTS, **options}


__all__ = ["DEFAULTS", "with_defaults"]
