"""One matrix -> eigenvalues and matrix-level metrics. Knows matrices, not files."""

from .esd import (
    all_eigenpairs,
    all_eigenvalues,
    eigenvalues,
    eigenvalues_many,
    get_backend,
    gram,
    gram_eigh,
    gram_smaller_side,
    lowrank_eigenvalues,
    sparse_gram,
    top_right_vectors,
    top_singular_values,
)
from .metrics import alpha_metrics, detx, ecs_self_consistent, matrix_rank, norm_metrics, spectrum_snr
from .mp import MPFit, MPFitError, mp_density, mp_edges, mp_fit, mp_gram_edges, mp_median
from .randomize import RandomizedESD, randomized_esd, shuffle_elements
from .windows import conv_window_eigenvalues, window_eigenvalues

__all__ = ["MPFit", "MPFitError", "RandomizedESD", "all_eigenpairs", "all_eigenvalues",
           "alpha_metrics", "conv_window_eigenvalues", "detx", "ecs_self_consistent", "eigenvalues",
           "eigenvalues_many",
           "get_backend", "gram",
           "gram_eigh", "gram_smaller_side", "lowrank_eigenvalues", "matrix_rank", "mp_density",
           "mp_edges", "mp_fit", "mp_gram_edges", "mp_median", "norm_metrics", "randomized_esd",
           "shuffle_elements", "spectrum_snr", "sparse_gram", "top_right_vectors", "top_singular_values",
           "window_eigenvalues"]
