"""tailscope: heavy-tailed spectral analysis of trained neural networks and data matrices.

Fits power laws to eigenvalue spectra (Heavy-Tailed Self-Regularization) exactly as the
``powerlaw`` package does, only much faster.
"""

from .fit import Comparison, GoodnessOfFit, PowerLawFit, TailFit, fit_power_law

__version__ = "0.1.0"

__all__ = ["Comparison", "GoodnessOfFit", "PowerLawFit", "TailFit", "__version__", "fit_power_law"]
