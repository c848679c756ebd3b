"""tailscope: heavy-tailed spectral analysis of trained neural networks and data matrices.

Fits power laws to the eigenvalue spectra of weight matrices (Heavy-Tailed Self-Regularization),
with the ``powerlaw`` package's and WeightWatcher's numbers, much faster.
"""

from .analysis import Analysis, analyze, describe
from .edit import Distances, EditedModel, distances, sharpen, smooth
from .fit import Comparison, GoodnessOfFit, PowerLawFit, TailFit, fit_power_law
from .rank import RankSelection, select_rank
from .sources import open_source


def __getattr__(name):  # PowerLawSVD needs scikit-learn: imported on first use only
    if name == "PowerLawSVD":
        from .rank import PowerLawSVD

        return PowerLawSVD
    raise AttributeError(name)

__version__ = "0.1.0"

__all__ = ["Analysis", "Comparison", "Distances", "EditedModel", "GoodnessOfFit", "PowerLawFit",
           "PowerLawSVD", "RankSelection", "TailFit", "__version__", "analyze", "describe",
           "distances", "fit_power_law", "open_source", "select_rank", "sharpen", "smooth"]
