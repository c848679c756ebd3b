"""Rank selection: the latent dimension K of a data matrix from where its power-law tail begins.

``select`` holds the rules (``select_rank``, the elbows, ``PowerLawSVD``, the scikit-learn
transformer whose ``n_components_`` is this K); ``corpus`` the inputs ``tailscope rank`` reads
(folders of texts, CSVs, matrices) and TF-IDF.
"""

from .corpus import load_input, tfidf
from .select import (
    RankSelection,
    gavish_donoho_rank,
    knee,
    localization_ratios,
    mp_edge_rank,
    select_rank,
    setol_ranks,
)

__all__ = ["PowerLawSVD", "RankSelection", "gavish_donoho_rank", "knee", "load_input",
           "localization_ratios", "mp_edge_rank", "select_rank", "setol_ranks", "tfidf"]


def __getattr__(name):
    if name == "PowerLawSVD":  # built on first use: it needs scikit-learn
        from . import select

        return select.PowerLawSVD
    raise AttributeError(name)
