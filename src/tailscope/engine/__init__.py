"""The engine: the work of one layer and its result, for every entry point.

``options`` (every analysis option, declared once), ``columns`` (every per-layer column, declared
once), ``diagnostics`` (every diagnostic: its option, column groups and computation, declared
once), ``plan`` (which tensors are analysed, as what), ``layer`` (one layer -> ``LayerResult``),
``run`` and ``dask`` (runners: in this thread, in threads, on Dask), ``result`` (tables from
results). ``tailscope.analysis`` is the front door built on it. Import the modules themselves
(``from tailscope.engine.options import OPTIONS``): this package imports nothing up front, so the
command line can read the options without loading the numerical stack.
"""
