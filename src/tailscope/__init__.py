"""tailscope: heavy-tailed spectral analysis of trained neural networks and data matrices.

Fits power laws to the eigenvalue spectra of weight matrices (Heavy-Tailed Self-Regularization),
with the ``powerlaw`` package's and WeightWatcher's numbers, much faster.
"""

from .analysis import Analysis, analyze, describe
from .fit import Comparison, GoodnessOfFit, PowerLawFit, TailFit, fit_power_law
from .sources import open_source

__version__ = "0.1.0"

__all__ = ["Analysis", "Comparison", "GoodnessOfFit", "PowerLawFit", "TailFit", "__version__",
           "analyze", "describe", "fit_power_law", "open_source"]
