"""Editing from spectra, on top of the engine's runner: SVD smoothing and sharpening
(``smooth``), correlation traps and their removal (``traps``), magnitude pruning with
AlphaPruning's allocation (``prune``), model distances (``distances``), and the edited model they
return (``model``). None edits its input: edits return an :class:`EditedModel` with new arrays.
"""

from .distances import Distances, distances
from .model import EditedModel
from .prune import allocate_sparsity, prune
from .smooth import sharpen, smooth
from .traps import remove_traps, traps

__all__ = ["Distances", "EditedModel", "allocate_sparsity", "distances", "prune",
           "remove_traps", "sharpen", "smooth", "traps"]
