"""Many models and big models: a manifest of models analysed as Dask tasks, a durable results
store (SQLite or any SQLAlchemy URL), and the correlation of summary metrics with model quality.

Dask, SQLAlchemy, psycopg and pyyaml are imported only when used (``pip install 'tailscope[zoo]'``).
"""

from ..engine.dask import SchedulerError
from .correlate import (
    bootstrap_intervals,
    correlate,
    group_seed,
    rank_correlations,
    scatter_figure,
    write_zoo_report,
)
from .manifest import ManifestError, quality_columns, read_manifest
from .run import ZooRun, analyze_model, options_key, run_zoo
from .store import Store, StoreError, open_store

__all__ = ["ManifestError", "SchedulerError", "Store", "StoreError", "ZooRun", "analyze_model",
           "bootstrap_intervals", "correlate", "group_seed", "open_store", "options_key",
           "quality_columns", "rank_correlations", "read_manifest", "run_zoo", "scatter_figure",
           "write_zoo_report"]
