"""Many models and big models: a manifest of models analysed as Dask tasks, a durable results
store (SQLite or any SQLAlchemy URL), and the correlation of summary metrics with model quality.

Dask, SQLAlchemy, psycopg and pyyaml are imported only when used (``pip install 'tailscope[zoo]'``).
"""

from ..engine.dask import SchedulerError
from .correlate import (
    LayerSetWarning,
    bootstrap_intervals,
    common_layer_models,
    correlate,
    group_seed,
    layer_set_notes,
    rank_correlations,
    scatter_figure,
    spearman_exact_p,
    write_zoo_report,
)
from .manifest import ManifestError, quality_columns, read_manifest
from .run import ZooRun, analyze_model, options_key, run_zoo
from .store import Store, StoreError, open_store

__all__ = ["LayerSetWarning", "ManifestError", "SchedulerError", "Store", "StoreError", "ZooRun",
           "analyze_model", "bootstrap_intervals", "common_layer_models", "correlate",
           "group_seed", "layer_set_notes", "open_store", "options_key", "quality_columns",
           "rank_correlations", "read_manifest", "run_zoo", "scatter_figure",
           "spearman_exact_p", "write_zoo_report"]
