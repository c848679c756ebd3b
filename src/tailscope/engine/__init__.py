"""The engine: the work of one layer, and the one loop over a model's layers under every feature.

``options`` (every analysis option, declared once), ``columns`` (every per-layer column, declared
once), ``diagnostics`` (every diagnostic: its option, column groups and computation, declared
once), ``plan`` (which tensors are analysed, as what), ``run`` (the runner: a feature's one-layer
``Work`` over a ``Recipe``'s planned layers, in this thread, in threads or on Dask), ``layer`` (one
layer -> ``LayerResult``: analyze's work), ``dask`` (a Dask client), ``result`` (tables from
results). ``tailscope.analysis`` is the front door built on it. Import the modules themselves
(``from tailscope.engine.options import OPTIONS``): this package imports nothing up front, so the
command line can read the options without loading the numerical stack.
"""
