"""Editing from spectra, on top of the engine's runner: SVD smoothing and sharpening
(``smooth``), correlation traps and their removal (``traps``), magnitude pruning with
AlphaPruning's allocation (``prune``), model distances (``distances``), and the edited model they
return (``model``). None edits its input: edits return an :class:`EditedModel` with new arrays.
"""

from .compare import compare_to_base
from .decisions import BitAllocation, Trainable, allocate_bits, allocate_experts, select_trainable
from .distances import Distances, distances
from .intruders import intruders, reduce_intruders
from .model import EditedModel
from .prune import allocate_sparsity, prune
from .smooth import sharpen, smooth
from .traps import remove_traps, traps

__all__ = ["BitAllocation", "Distances", "EditedModel", "Trainable", "allocate_bits",
           "allocate_experts", "allocate_sparsity", "compare_to_base", "distances", "intruders", "prune",
           "reduce_intruders", "remove_traps", "select_trainable", "sharpen", "smooth", "traps"]
