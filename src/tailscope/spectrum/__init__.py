"""One matrix -> eigenvalues and matrix-level metrics. Knows matrices, not files."""

from .esd import eigenvalues, eigenvalues_many, get_backend, gram, lowrank_eigenvalues
from .metrics import alpha_metrics, detx, matrix_rank, norm_metrics
from .mp import MPFit, MPFitError, mp_density, mp_fit
from .randomize import RandomizedESD, randomized_esd, shuffle_elements

__all__ = ["MPFit", "MPFitError", "RandomizedESD", "alpha_metrics", "detx", "eigenvalues",
           "eigenvalues_many", "get_backend", "gram", "lowrank_eigenvalues", "matrix_rank",
           "mp_density", "mp_fit", "norm_metrics", "randomized_esd", "shuffle_elements"]
