"""tailscope: heavy-tailed spectral analysis of trained neural networks and data matrices.

Fits power laws to the eigenvalue spectra of weight matrices (Heavy-Tailed Self-Regularization),
with the ``powerlaw`` package's and WeightWatcher's numbers, much faster.

The public names below are imported on first use, so ``import tailscope`` (and the command line)
starts fast and an optional dependency is only needed by what uses it.
"""

from __future__ import annotations

import importlib

from ._version import __version__  # noqa: F401 - in __all__

# public name -> the module that defines it
_EXPORTS = {
    "Analysis": "analysis", "analyze": "analysis", "describe": "analysis",
    "quantization_damage": "analysis",
    "Distances": "edit", "EditedModel": "edit", "distances": "edit", "sharpen": "edit",
    "smooth": "edit",
    "Comparison": "fit", "GoodnessOfFit": "fit", "PowerLawFit": "fit", "TailFit": "fit",
    "fit_power_law": "fit",
    "PowerLawSVD": "rank", "RankSelection": "rank", "select_rank": "rank",
    "open_source": "sources",
    "allocate_sparsity": "edit", "prune": "edit",
    "validate": "zoo.quality",
    "Monitor": "train", "layer_learning_rates": "train", "layer_weight_decays": "train",
    "remove_traps": "edit", "traps": "edit",
    "allocate_bits": "edit", "allocate_experts": "edit", "select_trainable": "edit",
    "intruders": "edit", "reduce_intruders": "edit", "compare_to_base": "edit",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tailscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
