"""The engine: the work of one layer and its result, for every entry point.

``options`` (every analysis option, declared once), ``columns`` (every per-layer column, declared
once), ``plan`` (which tensors are analysed, as what), ``layer`` (one layer -> ``LayerResult``),
``run`` and ``dask`` (runners: in this thread, in threads, on Dask), ``result`` (tables from
results). ``tailscope.analysis`` is the front door built on it.
"""

from .columns import COLUMNS, Column
from .layer import LayerResult, RowResult, analyze_layer
from .options import OPTIONS, Option, Options, make_options

__all__ = ["COLUMNS", "OPTIONS", "Column", "LayerResult", "Option", "Options", "RowResult",
           "analyze_layer", "make_options"]
