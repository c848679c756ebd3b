"""1-D heavy-tail statistics: power-law fits, other tail models, likelihood-ratio tests, bootstrap.

Knows arrays of positive numbers and nothing else (no matrices, no files).
"""

from .bootstrap import GoodnessOfFit, alpha_interval, goodness_of_fit
from .compare import Comparison, loglikelihood_ratio
from .distributions import MODELS, TailFit, fit_tail_model
from .hill import hill_alpha
from .powerlaw import PowerLawFit, fit_power_law
from .truncated import TruncatedPowerLawFit, fit_truncated_power_law

DISTRIBUTIONS = tuple(MODELS)

__all__ = [
    "DISTRIBUTIONS", "Comparison", "GoodnessOfFit", "PowerLawFit", "TailFit", "alpha_interval",
    "fit_power_law",
    "TruncatedPowerLawFit", "fit_tail_model", "fit_truncated_power_law", "goodness_of_fit",
    "hill_alpha", "loglikelihood_ratio",
]
