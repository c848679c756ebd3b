"""Per-layer random generators: the same draws for a layer whatever the order layers run in."""

from __future__ import annotations

import numpy as np


def layer_seed(seed, *ids) -> list[int] | None:
    """The seed sequence ``[seed, *ids]`` of one layer (ids: layer_id, then slice_id if any;
    ``None`` ids are left out), or None when ``seed`` is None (fresh entropy)."""
    if seed is None:
        return None
    return [int(seed), *(int(i) for i in ids if i is not None)]


def layer_rng(seed, *ids) -> np.random.Generator:
    """``default_rng([seed, *ids])`` (seed None counts as 0): one generator per layer."""
    return np.random.default_rng(layer_seed(0 if seed is None else seed, *ids))
