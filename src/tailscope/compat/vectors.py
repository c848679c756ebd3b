"""WeightWatcher's vector helpers on the facade: ``valid_vectors``, ``iterate_vectors`` and
``vector_metrics`` over :func:`tailscope.spectrum.vectors.vector_metrics`.

WeightWatcher's ``vector_metrics`` writes its discrete entropy into a misspelt column
('discete_entropy', leaving 'discrete_entropy' empty) and returns -1 for input it cannot read; the
facade fills 'discrete_entropy' and raises a one-line ``ValueError``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..spectrum import vectors as spectral

__all__ = ["iterate_vectors", "valid_vectors", "vector_metrics"]


def valid_vectors(vectors) -> bool:
    """WeightWatcher's test: a numpy array, or a list whose items are all numpy arrays."""
    if isinstance(vectors, np.ndarray):
        return True
    return isinstance(vectors, list) and all(isinstance(v, np.ndarray) for v in vectors)


def iterate_vectors(vectors):
    """The vectors one by one: the rows of a 2-D array, the items of a list, or the one vector."""
    if isinstance(vectors, np.ndarray) and vectors.ndim > 1:
        yield from (vectors[i, :] for i in range(vectors.shape[0]))
    elif isinstance(vectors, list):
        yield from vectors
    else:
        yield vectors


def vector_metrics(vectors) -> pd.DataFrame:
    """One row per vector: length, entropy, discrete_entropy, localization_ratio,
    participation_ratio (WeightWatcher's formulas)."""
    if not valid_vectors(vectors):
        raise ValueError("vectors must be a numpy array (one vector, or one per row) or a list "
                         "of numpy vectors")
    vecs = [np.asarray(v, dtype=np.float64).ravel() for v in iterate_vectors(vectors)]
    return spectral.vector_metrics(vecs)
