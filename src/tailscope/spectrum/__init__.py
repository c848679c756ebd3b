"""One matrix -> eigenvalues and matrix-level metrics. Knows matrices, not files."""

from .esd import eigenvalues, eigenvalues_many, get_backend, gram, lowrank_eigenvalues
from .metrics import alpha_metrics, matrix_rank, norm_metrics

__all__ = ["alpha_metrics", "eigenvalues", "eigenvalues_many", "get_backend", "gram",
           "lowrank_eigenvalues",
           "matrix_rank", "norm_metrics"]
